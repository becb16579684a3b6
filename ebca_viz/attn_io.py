r"""The parts every ebca_viz attention processor shares with diffusers' ``AttnProcessor2_0``.

A processor is ``tokens_in`` -> its own attention -> ``tokens_out``; cross-attention
processors that need the scores (EBCA, the recorder) attend with :func:`attend`::

    x (B, C, h, w) | (B, P, C)  --tokens_in-->  x (B2, P, C)        (spatial/group norm applied)
    q = split_heads(to_q x)                                         (B2, H, P, d)
    K, V = split_heads(to_k c), split_heads(to_v c)                 (B2, H, N, d)
    S = beta Q K^T (+ mask);  O = to_out(softmax_j(S) V)            (B2, H, P, N), (B2, P, C)
    out  --tokens_out-->  (B, C, h, w) | (B, P, C)   (+ residual, / rescale_output_factor)
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

import torch

from .energy import attention_scores, merge_heads, split_heads


@dataclass
class TokensIn:
    x: torch.Tensor  # (B2, P, C) after spatial_norm / group_norm
    residual: torch.Tensor  # the layer's input as given
    shape4: Optional[tuple]  # (b, ch, h, w) when the input was 4-d
    mask: Optional[torch.Tensor]  # (B2, H, P|1, N) additive, or None


def tokens_in(attn, hidden_states, temb=None, attention_mask=None, n_keys: Optional[int] = None) -> TokensIn:
    """Flatten the layer input to tokens, apply the layer's norms and shape the attention mask
    for ``n_keys`` keys (default: self-attention, ``P``)."""
    residual = hidden_states
    if attn.spatial_norm is not None:
        hidden_states = attn.spatial_norm(hidden_states, temb)
    shape4 = None
    if hidden_states.ndim == 4:
        shape4 = tuple(hidden_states.shape)
        b, ch, hh, ww = shape4
        hidden_states = hidden_states.view(b, ch, hh * ww).transpose(1, 2)
    b2, p, _ = hidden_states.shape
    if attention_mask is not None:
        attention_mask = attn.prepare_attention_mask(attention_mask, p if n_keys is None else n_keys, b2)
        attention_mask = attention_mask.view(b2, attn.heads, -1, attention_mask.shape[-1])
    if attn.group_norm is not None:
        hidden_states = attn.group_norm(hidden_states.transpose(1, 2)).transpose(1, 2)
    return TokensIn(hidden_states, residual, shape4, attention_mask)


def tokens_out(attn, out: torch.Tensor, t: TokensIn) -> torch.Tensor:
    """``(B2, P, C)`` attention output -> the layer's output (shape, residual, rescale)."""
    out = out.to(t.residual.dtype)
    if t.shape4 is not None:
        b, ch, hh, ww = t.shape4
        out = out.transpose(-1, -2).reshape(b, ch, hh, ww)
    if attn.residual_connection:
        out = out + t.residual
    return out / attn.rescale_output_factor


def _heads(attn, proj, norm, x: torch.Tensor) -> torch.Tensor:
    """``proj(x)`` split into heads, then the layer's per-head norm and upcasting."""
    h = split_heads(proj(x), attn.heads)
    if norm is not None:
        h = norm(h)
    return h.float() if attn.upcast_attention else h


def queries(attn, x: torch.Tensor) -> torch.Tensor:
    """``(B2, P, C) -> (B2, H, P, d)`` with ``norm_q`` and upcasting as the layer does them."""
    return _heads(attn, attn.to_q, attn.norm_q, x)


def _normed_context(attn, ctx: torch.Tensor) -> torch.Tensor:
    return attn.norm_encoder_hidden_states(ctx) if attn.norm_cross else ctx


def _keys(attn, c: torch.Tensor) -> torch.Tensor:
    return _heads(attn, attn.to_k, attn.norm_k, c)


def layer_keys(attn, ctx: torch.Tensor) -> torch.Tensor:
    """Keys of a context as the layer forms them: ``(B, N, D) -> (B, H, N, d)``."""
    return _keys(attn, _normed_context(attn, ctx))


def attend(attn, q: torch.Tensor, ctx: torch.Tensor, mask: Optional[torch.Tensor] = None):
    """Cross-attention with explicit scores: ``q (B2,H,P,d)``, ``ctx (B2,N,D)`` ->
    ``(out (B2,P,C) after to_out, k (B2,H,N,d), scores (B2,H,P,N), probs (B2,H,P,N))``."""
    c = _normed_context(attn, ctx)
    k, v = _keys(attn, c), split_heads(attn.to_v(c), attn.heads)
    s = attention_scores(q, k, attn.scale)
    if mask is not None:
        s = s + mask
    if attn.upcast_softmax:
        s = s.float()
    probs = s.softmax(dim=-1).to(v.dtype)
    out = attn.to_out[1](attn.to_out[0](merge_heads(torch.matmul(probs, v))))
    return out, k, s, probs


def qkv_heads(attn, x: torch.Tensor) -> tuple:
    """``(q, k, v)``, each ``(B, heads, P, d)``, of one attention call on ``x (B, P, C)``: the layer's own
    projections split into heads, with its q/k norms when it has them (SD3.5, Flux). Every processor that
    attends over ``x`` itself (self- and joint attention) starts here."""
    return _split_qkv(attn, x, (attn.to_q, attn.to_k, attn.to_v), attn.norm_q, attn.norm_k)


def context_qkv_heads(attn, c: torch.Tensor) -> tuple:
    """``(q, k, v)``, each ``(B, heads, N, d)``, of the text stream ``c (B, N, C)`` in a joint (SD3 / Flux
    double-stream) block: the ``add_*_proj`` projections with the ``norm_added_*`` norms when present."""
    return _split_qkv(attn, c, (attn.add_q_proj, attn.add_k_proj, attn.add_v_proj), attn.norm_added_q, attn.norm_added_k)



def _split_qkv(attn, x: torch.Tensor, projs: tuple, norm_q, norm_k) -> tuple:
    """The three projections of ``x`` split into heads, the q/k norms applied when present (no upcasting:
    these processors attend with diffusers' SDPA, which does not upcast either)."""
    q, k, v = (split_heads(proj(x), attn.heads) for proj in projs)
    if norm_q is not None:
        q = norm_q(q)
    if norm_k is not None:
        k = norm_k(k)
    return q, k, v

def joint_out(attn, out: torch.Tensor, n_image: int, has_context: bool):
    """Joint attention's epilogue (SD3 ``JointAttnProcessor2_0``): ``out (B, P+N, C)`` -> the image stream through
    ``to_out`` and, with a text stream, ``(image, text)`` with the text through ``to_add_out`` (unless
    ``context_pre_only``)."""
    if has_context:
        out, ctx = out[:, :n_image], out[:, n_image:]
        if not attn.context_pre_only:
            ctx = attn.to_add_out(ctx)
    out = attn.to_out[1](attn.to_out[0](out))
    return (out, ctx) if has_context else out

