r"""The recording cross-attention processor a trace installs when no EBCA controller is present.

It computes exactly diffusers' attention (``AttnProcessor`` math, explicit scores, since
the recorder needs the probabilities)::

    S = beta Q K^T  (+ mask)          (B2, H, P, N)
    O = to_out(softmax_j(S) V)        (B2, P, C)

and hands a :class:`~ebca_viz.ebca.CrossAttnEvent` to its trace with ``context_in is
context_out`` (nothing is updated). It is a different class from
:class:`~ebca_viz.EnergyCrossAttnProcessor` on purpose: ```find_controller`` does not see
it, so ``energy_attention`` / ``smoothed_energy_guidance`` can be installed on top of it
(they save it and put it back when they leave). After its trace has ended it is inert:
plain attention, no events.
"""
from __future__ import annotations

from ..attach import grid_hw
from ..attn_io import attend, queries, tokens_in, tokens_out
from ..events import TRACE, CrossAttnEvent
from ..errors import InvalidSetting


class RecordingCrossAttnProcessor:
    """Plain cross-attention that reports every call to ``sink.on_cross_attention(event)``."""

    kind = TRACE

    def __init__(self, sink, name: str, layer: int):
        self.sink = sink  # the Trace
        self.name = name
        self.layer = layer

    def __call__(self, attn, hidden_states, encoder_hidden_states=None, attention_mask=None, temb=None, *args, **kw):
        if encoder_hidden_states is None:
            raise InvalidSetting(f"{self.name}: RecordingCrossAttnProcessor was called without a context (self-attention?)")
        t = tokens_in(attn, hidden_states, temb, attention_mask, n_keys=encoder_hidden_states.shape[1])
        ctx = encoder_hidden_states
        q = queries(attn, t.x)
        out, k, s, probs = attend(attn, q, ctx, t.mask)
        P = t.x.shape[1]

        sink = self.sink
        if sink is not None and sink.wants_events:
            sink.on_cross_attention(
                CrossAttnEvent(
                    name=self.name, layer=self.layer, step=sink.step, attn=attn, query=q, key=k, scores=s,
                    probs=probs, context_in=ctx, context_out=ctx, grid=grid_hw(P, sink.latent_hw),
                    n_uncond=sink.record.n_uncond, controller=None,
                )
            )

        return tokens_out(attn, out, t)
