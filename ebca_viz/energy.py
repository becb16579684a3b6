r"""Energies of one cross-attention layer and their closed-form gradients.

Notation (``docs/method.md``), per head ``h`` of ``H``:

* queries ``Q = X W_q^T``  ``(B, H, P, d)``  (P pixels, d = head dim)
* keys    ``K = C W_k^T``  ``(B, H, N, d)``  (N tokens)
* scores  ``S = beta Q K^T``  ``(B, H, P, N)``, ``beta = attn.scale = 1/sqrt(d)``

Energies (all return one value per batch element, shape ``(B,)``):

* query energy      ``E(Q;K) = alpha/2 sum_i |q_i|^2 - sum_i lse_j S_ij``      (heads averaged)
* context energy    ``E(K;Q) = alpha/2 sum_j |k_j|^2 - sum_j lse_i S_ij``      (heads averaged)
* prior             ``E(K)   = lse_j (1/2 |k_j|^2)``  with heads concatenated, ``k_j`` in R^{H d}
* posterior         ``E(K;Q) + E(K)``

Closed forms used by the processors (and checked against ``torch.autograd`` in
the tests), heads concatenated to ``(B, N, H d)``:

* attention term ``A = softmax_i(S)^T Q``  (softmax over pixels, per head)
  ``= -(H / beta) * dE(K;Q)/dK`` at alpha = 0
* norm term      ``R = softmax_j(c |k_j|^2) k_j`` with ``c = 1`` (published code) or ``1/2`` (paper):
  paper: ``R = dE(K)/dK``; published: ``R = 1/2 d lse_j(|k_j|^2) / dK``
* update         ``dK = gamma_attn A - gamma_norm R``,  ``dC = dK W_k``  (chain rule through ``K = C W_k^T``)

What a trace records per layer call: :func:`layer_energies` (all four from the scores the layer already
computed, ``(4, B)``) and :func:`self_attention_energy` (the self-attention energy SEG blurs).
"""
from __future__ import annotations

import math

import torch
from .errors import InvalidSetting
import torch.nn.functional as F

PRIOR_FORMS = ("published", "paper")


def split_heads(x: torch.Tensor, heads: int) -> torch.Tensor:
    """``(B, L, H*d) -> (B, H, L, d)``."""
    b, n, _ = x.shape
    return x.view(b, n, heads, -1).transpose(1, 2)


def merge_heads(x: torch.Tensor) -> torch.Tensor:
    """``(B, H, L, d) -> (B, L, H*d)``."""
    b, h, n, d = x.shape
    return x.transpose(1, 2).reshape(b, n, h * d)


def attention_scores(q: torch.Tensor, k: torch.Tensor, scale: float) -> torch.Tensor:
    """``S = scale * Q K^T``: ``(B,H,P,d), (B,H,N,d) -> (B,H,P,N)``."""
    return torch.matmul(q, k.transpose(-1, -2)) * scale


def query_energy(q: torch.Tensor, k: torch.Tensor, scale: float, alpha: float = 0.0) -> torch.Tensor:
    """``E(Q;K) = alpha/2 sum_i |q_i|^2 - sum_i lse_j S_ij``, mean over heads. ``-> (B,)``.

    ``-dE/dq_i = beta sum_j softmax_j(S_ij) k_j - alpha q_i``: with ``alpha = 0`` and tied values
    a unit step on it is exactly cross-attention (``softmax(S) K``).
    """
    s = attention_scores(q, k, scale)
    e = 0.5 * alpha * q.pow(2).sum(dim=(-1, -2)) - torch.logsumexp(s, dim=-1).sum(-1)
    return e.mean(dim=1)


def context_energy(q: torch.Tensor, k: torch.Tensor, scale: float, alpha: float = 0.0) -> torch.Tensor:
    """``E(K;Q) = alpha/2 sum_j |k_j|^2 - sum_j lse_i S_ij`` (lse over pixels), mean over heads. ``-> (B,)``."""
    s = attention_scores(q, k, scale)
    e = 0.5 * alpha * k.pow(2).sum(dim=(-1, -2)) - torch.logsumexp(s, dim=-2).sum(-1)
    return e.mean(dim=1)


def prior_energy(k_cat: torch.Tensor) -> torch.Tensor:
    """``E(K) = lse_j(1/2 |k_j|^2)`` with keys heads-concatenated ``(B, N, H d) -> (B,)``."""
    return torch.logsumexp(0.5 * k_cat.pow(2).sum(-1), dim=-1)


def posterior_energy(q: torch.Tensor, k: torch.Tensor, scale: float, alpha: float = 0.0) -> torch.Tensor:
    """``E(K;Q) + E(K)`` for per-head ``q (B,H,P,d)``, ``k (B,H,N,d)``. ``-> (B,)``."""
    return context_energy(q, k, scale, alpha) + prior_energy(merge_heads(k))


def attention_term(scores: torch.Tensor, q: torch.Tensor) -> torch.Tensor:
    """``A = softmax_i(S)^T Q`` per head, heads concatenated: ``(B,H,P,N), (B,H,P,d) -> (B,N,H d)``.

    ``q`` may already carry a per-pixel mask (inpainting), ``(B,1,P,1)`` broadcast.
    """
    probs = scores.transpose(-1, -2).softmax(dim=-1).to(q.dtype)  # (B,H,N,P): softmax over pixels
    return merge_heads(torch.matmul(probs, q))


def norm_term(k_cat: torch.Tensor, prior_form: str = "published", key_valid: torch.Tensor | None = None) -> torch.Tensor:
    """``R = softmax_j(c |k_j|^2) k_j``: ``(B,N,H d) -> (B,N,H d)``; ``c = 1`` published, ``1/2`` paper.

    ``key_valid`` ``(B, N)`` bool: the softmax runs over the tokens the layer attends to only (PixArt's
    T5 padding is masked out of its cross-attention), ``R_j = 0`` elsewhere."""
    sq = (k_cat * k_cat).sum(-1)  # |k_j|^2, (B, N)
    if prior_form == "paper":
        sq = 0.5 * sq
    elif prior_form != "published":
        raise InvalidSetting(f"prior_form must be one of {PRIOR_FORMS}, got {prior_form!r}")
    if key_valid is not None:
        sq = sq.masked_fill(~key_valid, float("-inf"))
    return k_cat * sq.softmax(dim=-1).unsqueeze(-1)


def context_update(
    scores: torch.Tensor,
    q: torch.Tensor,
    k: torch.Tensor,
    w_k: torch.Tensor,
    gamma_attn: float,
    gamma_norm: float,
    *,
    prior_form: str = "published",
    token_weight: torch.Tensor | None = None,
    key_valid: torch.Tensor | None = None,
) -> torch.Tensor:
    """One Bayesian context update, mapped to context space.

    Args:
        scores: ``S`` ``(B,H,P,N)``.
        q: queries ``(B,H,P,d)`` (optionally pre-multiplied by the inpainting mask).
        k: keys ``(B,H,N,d)``.
        w_k: ``attn.to_k.weight`` ``(H d, D_ctx)`` (detached).
        token_weight: optional ``(B, N, 1)`` multiplier of the attention term (token up-weighting).
        key_valid: optional ``(B, N)`` bool, the tokens the layer attends to (a key mask, PixArt's T5
            padding): the energies are sums / log-sum-exps over these tokens only, ``dC_j = 0`` elsewhere.

    Returns:
        ``dC = (gamma_attn * w * A - gamma_norm * R) W_k``: ``(B, N, D_ctx)``.
    """
    k_cat = merge_heads(k)
    d_k = None
    if gamma_attn != 0.0:
        d_k = attention_term(scores, q) * gamma_attn
        if token_weight is not None:
            d_k = d_k * token_weight.to(d_k.dtype)
    if gamma_norm != 0.0:
        r = norm_term(k_cat, prior_form, key_valid) * gamma_norm
        d_k = -r if d_k is None else d_k - r
    if d_k is None:
        return torch.zeros(k_cat.shape[:-1] + (w_k.shape[1],), dtype=k_cat.dtype, device=k_cat.device)
    if key_valid is not None:
        d_k = d_k * key_valid.unsqueeze(-1).to(d_k.dtype)
    return torch.matmul(d_k, w_k.to(d_k.dtype))


# -- per-layer energies as a trace records them (from the scores the layer already computed) --

def layer_energies(q: torch.Tensor, k: torch.Tensor, scores: torch.Tensor, alpha: float = 0.0) -> torch.Tensor:
    """``q (B,H,P,d)``, ``k (B,H,N,d)``, ``S (B,H,P,N)`` -> ``(4, B)``: E(Q;K), E(K;Q), E(K), posterior.

    The definitions above (fp32), from scores already computed: what a trace records per layer call
    (:meth:`ebca_viz.tracing.recorder.Recorder.on_cross_attention`).
    """
    s = scores.float()
    eq = -torch.logsumexp(s, dim=-1).sum(-1)  # (B, H)
    ek = -torch.logsumexp(s, dim=-2).sum(-1)
    if alpha:
        eq = eq + 0.5 * alpha * q.float().pow(2).sum(dim=(-1, -2))
        ek = ek + 0.5 * alpha * k.float().pow(2).sum(dim=(-1, -2))
    eq, ek = eq.mean(1), ek.mean(1)
    prior = torch.logsumexp(0.5 * merge_heads(k.float()).pow(2).sum(-1), dim=-1)
    return torch.stack([eq, ek, prior, ek + prior])


def self_attention_energy(q: torch.Tensor, k: torch.Tensor, scale: float, max_elems: int = 2**24) -> torch.Tensor:
    """``E = -sum_i lse_j(beta q_i . k_j)``, heads averaged: ``(B,H,P,d), (B,H,P,d) -> (B,)``.

    Computed in query chunks so that no more than ``max_elems`` scores exist at once
    (a 64x64 self-attention layer would otherwise need a 4096 x 4096 matrix per head).
    """
    b, h, p, _ = q.shape
    chunk = max(1, max_elems // max(1, b * h * k.shape[2]))
    total = torch.zeros(b, h, dtype=torch.float32, device=q.device)
    kt = k.float().transpose(-1, -2)
    for i in range(0, p, chunk):
        s = torch.matmul(q[:, :, i : i + chunk].float(), kt) * scale
        total -= torch.logsumexp(s, dim=-1).sum(-1)
    return total.mean(1)


# -- SEG: the Gaussian that smooths the self-attention energy (seg.py, seg_dit.py) --

def kernel_size_for(sigma: float) -> int:
    """Published rule: ``ceil(6 sigma) + 1``, made odd."""
    c = math.ceil(6 * sigma)
    return c + 1 - c % 2


def gaussian_blur_2d(x: torch.Tensor, kernel_size: int, sigma: float) -> torch.Tensor:
    """Separable-equivalent 2-D Gaussian blur of ``x (B, C, h, w)`` with reflect padding.

    The kernel is capped by the grid as in the published code: ``min(k, m - (m % 2 - 1))``
    (``m = min(h, w)``; the published code blurs square grids, ``m = w``), so a kernel never needs
    more padding than reflection allows, also on a non-square grid.
    """
    m = min(x.shape[-2:])
    kernel_size = min(kernel_size, m - (m % 2 - 1))
    half = (kernel_size - 1) * 0.5
    t = torch.linspace(-half, half, steps=kernel_size)
    pdf = torch.exp(-0.5 * (t / sigma).pow(2))
    k1 = (pdf / pdf.sum()).to(device=x.device, dtype=x.dtype)
    k2 = torch.outer(k1, k1).expand(x.shape[-3], 1, kernel_size, kernel_size)
    p = kernel_size // 2
    x = F.pad(x, [p, p, p, p], mode="reflect")
    return F.conv2d(x, k2, groups=x.shape[-3])


def blur_token_grid(q: torch.Tensor, h: int, w: int, sigma: float, infinite: bool) -> torch.Tensor:
    """``q (b, H, P, d)``, ``P = h w`` tokens in row-major order -> each channel blurred over the ``(h, w)`` grid:
    a Gaussian (:func:`gaussian_blur_2d`), or with ``infinite`` the grid mean (SEG's sigma -> inf)."""
    b, heads, P, d = q.shape
    x = q.permute(0, 1, 3, 2).reshape(b, heads * d, h, w)
    if infinite:
        x = x.mean(dim=(-2, -1), keepdim=True).expand_as(x)
    else:
        x = gaussian_blur_2d(x, kernel_size_for(sigma), sigma)
    return x.reshape(b, heads, d, P).permute(0, 1, 3, 2)

