r"""The recording cross-attention processor a trace installs when no EBCA controller is present.

It computes exactly diffusers' attention (``AttnProcessor`` math, explicit scores, since
the recorder needs the probabilities)::

    S = beta Q K^T  (+ mask)          (B2, H, P, N)
    O = to_out(softmax_j(S) V)        (B2, P, C)

and hands a :class:`~ebca_viz.ebca.CrossAttnEvent` to its trace with ``context_in is
context_out`` (nothing is updated). It is a different class from
:class:`~ebca_viz.EnergyCrossAttnProcessor` on purpose: ``find_controller`` does not see
it, so ``energy_attention`` / ``smoothed_energy_guidance`` can be installed on top of it
(they save it and put it back when they leave). After its trace has ended it is inert:
plain attention, no events.
"""
from __future__ import annotations

import torch

from .attach import grid_hw
from .ebca import CrossAttnEvent
from .energy import attention_scores, merge_heads, split_heads


def layer_keys(attn, ctx: torch.Tensor) -> torch.Tensor:
    """Keys of a context as the layer forms them: ``(B, N, D) -> (B, H, N, d)``."""
    c = attn.norm_encoder_hidden_states(ctx) if attn.norm_cross else ctx
    k = split_heads(attn.to_k(c), attn.heads)
    if attn.norm_k is not None:
        k = attn.norm_k(k)
    if attn.upcast_attention:
        k = k.float()
    return k


class RecordingCrossAttnProcessor:
    """Plain cross-attention that reports every call to ``sink.on_cross_attention(event)``."""

    def __init__(self, sink, name: str, layer: int):
        self.sink = sink  # the Trace
        self.name = name
        self.layer = layer

    def __call__(self, attn, hidden_states, encoder_hidden_states=None, attention_mask=None, temb=None, *args, **kw):
        if encoder_hidden_states is None:
            raise ValueError(f"{self.name}: RecordingCrossAttnProcessor was called without a context (self-attention?)")
        residual = hidden_states
        if attn.spatial_norm is not None:
            hidden_states = attn.spatial_norm(hidden_states, temb)
        input_ndim = hidden_states.ndim
        if input_ndim == 4:
            b, ch, hh, ww = hidden_states.shape
            hidden_states = hidden_states.view(b, ch, hh * ww).transpose(1, 2)
        b2, P, _ = hidden_states.shape
        ctx = encoder_hidden_states
        if attention_mask is not None:
            attention_mask = attn.prepare_attention_mask(attention_mask, ctx.shape[1], b2)
            attention_mask = attention_mask.view(b2, attn.heads, -1, attention_mask.shape[-1])
        if attn.group_norm is not None:
            hidden_states = attn.group_norm(hidden_states.transpose(1, 2)).transpose(1, 2)
        q = split_heads(attn.to_q(hidden_states), attn.heads)
        if attn.norm_q is not None:
            q = attn.norm_q(q)
        if attn.upcast_attention:
            q = q.float()
        c = attn.norm_encoder_hidden_states(ctx) if attn.norm_cross else ctx
        k = split_heads(attn.to_k(c), attn.heads)
        v = split_heads(attn.to_v(c), attn.heads)
        if attn.norm_k is not None:
            k = attn.norm_k(k)
        if attn.upcast_attention:
            k = k.float()
        s = attention_scores(q, k, attn.scale)
        if attention_mask is not None:
            s = s + attention_mask
        if attn.upcast_softmax:
            s = s.float()
        probs = s.softmax(dim=-1).to(v.dtype)
        out = attn.to_out[1](attn.to_out[0](merge_heads(torch.matmul(probs, v))))

        sink = self.sink
        if sink is not None and sink.wants_events:
            sink.on_cross_attention(
                CrossAttnEvent(
                    name=self.name, layer=self.layer, step=sink.step, attn=attn, query=q, key=k, scores=s,
                    probs=probs, context_in=ctx, context_out=ctx, grid=grid_hw(P, sink.latent_hw),
                    n_uncond=sink.n_uncond, controller=None,
                )
            )

        hidden_states = out.to(residual.dtype)
        if input_ndim == 4:
            hidden_states = hidden_states.transpose(-1, -2).reshape(b, ch, hh, ww)
        if attn.residual_connection:
            hidden_states = hidden_states + residual
        return hidden_states / attn.rescale_output_factor
