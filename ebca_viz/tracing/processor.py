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

import torch

from ..attach import grid_hw
from ..attn_io import attend, context_qkv_heads, joint_out, qkv_heads, queries, tokens_in, tokens_out
from ..denoiser_hook import TRACE, CrossAttnEvent
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
            raise InvalidSetting(f"{self.name}: RecordingCrossAttnProcessor was called without a context (self-attention?); fix: use it on cross-attention layers (attn2) only")
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


# ---------------------------------------------------------------------------------------------------
# joint attention (SD3 / Flux double-stream) and Flux's single-stream attention
# ---------------------------------------------------------------------------------------------------
def _attention_with_lse(q, k, v, mask=None):
    """``(out, lse)`` of ``softmax(beta q k^T (+ mask)) v`` with ``beta = d^-1/2``, ``q, k, v (B, H, S, d)``;
    ``lse (B, H, S)`` = the log of each query's softmax normaliser over *all* keys.

    The output is ``F.scaled_dot_product_attention``'s (on the CPU the very kernel it dispatches to, which
    also returns ``lse``); elsewhere the lse is computed per block of queries (never the whole matrix)."""
    import torch.nn.functional as F

    if mask is None and q.device.type == "cpu" and q.dtype in (torch.float32, torch.float64, torch.bfloat16, torch.float16):
        try:
            out, lse = torch.ops.aten._scaled_dot_product_flash_attention_for_cpu(q, k, v)
            return out, lse
        except (RuntimeError, AttributeError, NotImplementedError):
            pass
    out = F.scaled_dot_product_attention(q, k, v, attn_mask=mask)
    scale = q.shape[-1] ** -0.5
    S = k.shape[-2]
    chunk = max(1, int(2**24 // max(1, q.shape[0] * q.shape[1] * S)))  # <= 16M scores (64 MB fp32) at a time
    lse = torch.empty(q.shape[:-1], dtype=torch.float32, device=q.device)
    kt = k.float().transpose(-1, -2)
    for i in range(0, q.shape[-2], chunk):
        s = torch.matmul(q[..., i:i + chunk, :].float(), kt) * scale
        if mask is not None:
            m = mask[..., i:i + chunk, :] if mask.shape[-2] > 1 else mask
            s = s + (m.float() if m.dtype != torch.bool else torch.zeros_like(s).masked_fill(~m, float("-inf")))
        lse[..., i:i + chunk] = s.logsumexp(-1)
    return out, lse


def _text_block(q_img, k_txt, lse_img):
    """Image-query x text-key block of the full softmax: ``S = beta q k_t^T`` and ``exp(S - lse)``
    (``(B, H, P, N)`` each; the rows sum to the share of attention on text, at most 1)."""
    s = torch.matmul(q_img.float(), k_txt.float().transpose(-1, -2)).mul_(q_img.shape[-1] ** -0.5)
    return s, torch.sub(s, lse_img.float().unsqueeze(-1)).exp_()


class RecordingJointAttnProcessor:
    """Diffusers' joint attention, recomputed with the text block of its softmax kept for a trace.

    ``layout``: ``"sd3"`` (``JointAttnProcessor2_0``: sequence ``[image; text]``), ``"flux"``
    (``FluxAttnProcessor`` on a double-stream block: ``[text; image]``, rotary embeddings) or ``"single"``
    (``FluxAttnProcessor`` on a single-stream block: one sequence ``[text (N); image (P)]``, ``N`` from the
    sink's ``n_text``). The output is diffusers' to float tolerance (``tests/test_dit_trace.py``). The block
    ``(q_img, k_txt, S, probs)`` waits in :attr:`pending` for the recorder's block hook, which sends the
    event once the block's text stream is known."""

    kind = TRACE

    def __init__(self, sink, name: str, layer: int, layout: str):
        self.sink, self.name, self.layer, self.layout = sink, name, layer, layout
        self.pending = None

    def _keep(self, q_img, k_txt, lse_img):
        sink = self.sink
        if sink is None or not sink.wants_events:
            return
        s, probs = _text_block(q_img, k_txt, lse_img)
        self.pending = (q_img, k_txt, s, probs)

    def __call__(self, attn, hidden_states, encoder_hidden_states=None, attention_mask=None, image_rotary_emb=None):
        # named parameters only: diffusers' attention modules pass the keyword arguments a processor's signature names
        if self.layout == "sd3":
            return self._sd3(attn, hidden_states, encoder_hidden_states)
        return self._flux(attn, hidden_states, encoder_hidden_states, attention_mask, image_rotary_emb)

    def _sd3(self, attn, hidden_states, encoder_hidden_states):
        residual = hidden_states
        b = hidden_states.shape[0]
        q, k, v = qkv_heads(attn, hidden_states)
        d = k.shape[-1]
        P = q.shape[2]
        if encoder_hidden_states is not None:
            eq, ek, ev = context_qkv_heads(attn, encoder_hidden_states)
            q, k, v = torch.cat([q, eq], dim=2), torch.cat([k, ek], dim=2), torch.cat([v, ev], dim=2)
        out, lse = _attention_with_lse(q, k, v)
        if encoder_hidden_states is not None:
            self._keep(q[:, :, :P], k[:, :, P:], lse[:, :, :P])
        hs = out.transpose(1, 2).reshape(b, -1, attn.heads * d).to(q.dtype)
        return joint_out(attn, hs, residual.shape[1], encoder_hidden_states is not None)

    def _flux(self, attn, hidden_states, encoder_hidden_states, attention_mask, image_rotary_emb):
        from diffusers.models.embeddings import apply_rotary_emb
        from diffusers.models.transformers.transformer_flux import _get_qkv_projections

        q, k, v, eq, ek, ev = _get_qkv_projections(attn, hidden_states, encoder_hidden_states)
        q, k, v = (x.unflatten(-1, (-1, attn.head_dim)) for x in (q, k, v))
        q, k = attn.norm_q(q), attn.norm_k(k)
        N = 0
        if attn.added_kv_proj_dim is not None and encoder_hidden_states is not None:
            eq, ek, ev = (x.unflatten(-1, (-1, attn.head_dim)) for x in (eq, ek, ev))
            eq, ek = attn.norm_added_q(eq), attn.norm_added_k(ek)
            q, k, v = torch.cat([eq, q], dim=1), torch.cat([ek, k], dim=1), torch.cat([ev, v], dim=1)
            N = encoder_hidden_states.shape[1]
        elif self.layout == "single":
            N = int(getattr(self.sink, "n_text", 0) or 0) if self.sink is not None else 0
        if image_rotary_emb is not None:
            q = apply_rotary_emb(q, image_rotary_emb, sequence_dim=1)
            k = apply_rotary_emb(k, image_rotary_emb, sequence_dim=1)
        qh, kh, vh = (x.permute(0, 2, 1, 3) for x in (q, k, v))  # (B, H, S, d), as diffusers' native backend
        out, lse = _attention_with_lse(qh, kh, vh, attention_mask)
        if N:
            self._keep(qh[:, :, N:], kh[:, :, :N], lse[:, :, N:])
        hs = out.permute(0, 2, 1, 3).flatten(2, 3).to(q.dtype)
        if encoder_hidden_states is not None:
            ehs, hs = hs.split_with_sizes([encoder_hidden_states.shape[1], hs.shape[1] - encoder_hidden_states.shape[1]], dim=1)
            hs = attn.to_out[1](attn.to_out[0](hs.contiguous()))
            ehs = attn.to_add_out(ehs.contiguous())
            return hs, ehs
        return hs

