r"""Smoothed Energy Guidance (SEG, Hong 2024) on an unmodified diffusers UNet.

Self-attention energy ``E = sum_cols -lse(Q K^T)``. Blurring the attention logits
with a Gaussian ``G`` over the spatial grid equals blurring the queries first,
``(G Q) K^T = G (Q K^T)``, so the ``HW x HW`` matrix is never formed::

    q_blur = G_sigma * q      (2-D Gaussian over the (h, w) grid, per channel, reflect padding)
    sigma -> inf:  q_blur = mean over the grid

Guidance (``s`` = SEG scale, ``w`` = CFG scale):

* published code, CFG:  ``eps = eps_u + w (eps_c - eps_u) + s (eps_c - eps_blur)``  (extra branch)
* paper, CFG:           ``eps = eps_ublur + w (eps_c - eps_ublur)``  (the unconditional branch is blurred)
* no CFG (both):        ``eps = eps_c + s (eps_c - eps_blur) = eps_blur + (s+1)(eps_c - eps_blur)``

How it plugs into a pipeline: a forward pre-hook on the UNet appends the blurred
branch to the batch (published convention), the :class:`SEGSelfAttnProcessor`
blurs the queries of the rows the controller marks, and a forward hook folds the
extra branch back so the pipeline's own CFG arithmetic yields the formula above
(``eps_c' = eps_c + (s/w)(eps_c - eps_blur)``). Nothing of the pipeline is modified.
"""
from __future__ import annotations

import contextlib
import math
from typing import Optional

import torch
import torch.nn.functional as F

from .attn_io import tokens_in, tokens_out
from .guards import FiniteGuard, guidance_text
from .attach import Installation, block_of, grid_hw, resolve_target, self_attention_keys, unet_call_parts
from .config import SEGConfig, config_from
from .energy import merge_heads, split_heads
from .events import EBCA, SEG, SelfAttnEvent, installed, notify, read_cfg


def kernel_size_for(sigma: float) -> int:
    """Published rule: ``ceil(6 sigma) + 1``, made odd."""
    c = math.ceil(6 * sigma)
    return c + 1 - c % 2


def gaussian_blur_2d(x: torch.Tensor, kernel_size: int, sigma: float) -> torch.Tensor:
    """Separable-equivalent 2-D Gaussian blur of ``x (B, C, h, w)`` with reflect padding.

    The kernel is capped by the grid as in the published code: ``min(k, w - (w % 2 - 1))``
    (``w`` = last dim), so a kernel never needs more padding than reflection allows.
    """
    width = x.shape[-1]
    kernel_size = min(kernel_size, width - (width % 2 - 1))
    half = (kernel_size - 1) * 0.5
    t = torch.linspace(-half, half, steps=kernel_size)
    pdf = torch.exp(-0.5 * (t / sigma).pow(2))
    k1 = (pdf / pdf.sum()).to(device=x.device, dtype=x.dtype)
    k2 = torch.outer(k1, k1).expand(x.shape[-3], 1, kernel_size, kernel_size)
    p = kernel_size // 2
    x = F.pad(x, [p, p, p, p], mode="reflect")
    return F.conv2d(x, k2, groups=x.shape[-3])


def blur_queries(q: torch.Tensor, grid: tuple, sigma: float, infinite: bool) -> torch.Tensor:
    """``q (b, H, P, d)`` -> blurred ``(b, H, P, d)`` over the ``grid = (h, w)`` (square grids only)."""
    b, heads, P, d = q.shape
    h, w = grid
    if h != w:
        raise ValueError(
            f"SEG blurs square grids only (as the published code); this layer's grid is {h}x{w}: "
            "use square height == width"
        )
    x = q.permute(0, 1, 3, 2).reshape(b, heads * d, h, w)
    if infinite:
        x = x.mean(dim=(-2, -1), keepdim=True).expand_as(x)
    else:
        x = gaussian_blur_2d(x, kernel_size_for(sigma), sigma)
    return x.reshape(b, heads, d, P).permute(0, 1, 3, 2)


def seg_combine(eps_u, eps_c, eps_blur, guidance_scale: float, seg_scale: float, convention="published"):
    """Guided noise prediction from the branches. ``eps_u`` may be None (no CFG).

    With ``convention='paper'`` and CFG, ``eps_blur`` is the *blurred unconditional* prediction.
    """
    if eps_u is None:
        return eps_c + seg_scale * (eps_c - eps_blur)
    if convention == "paper":
        return eps_blur + guidance_scale * (eps_c - eps_blur)
    return eps_u + guidance_scale * (eps_c - eps_u) + seg_scale * (eps_c - eps_blur)


class SEGController:
    """State of one SEG installation: which UNet rows are the blurred branch in the current call."""

    def __init__(self, config: SEGConfig, pipe, unet, keys: list):
        self.config = config
        self.pipe = pipe
        self.unet = unet
        self.keys = keys
        self.blur_rows: Optional[slice] = None
        self.latent_hw = None
        self.observers: list = []
        self.installation: Optional[Installation] = None
        self._expanded = None  # (cfg_on, b) while a call has an appended branch
        self.last_branches: dict = {}

    def remove(self):
        if self.installation is not None:
            self.installation.remove()

    def _guidance_scale(self) -> float:
        g = getattr(self.pipe, "guidance_scale", None) if self.pipe is not None else None
        if g is None:
            raise ValueError("SEG with CFG on a bare UNet needs the pipeline's guidance_scale; use a pipeline")
        return float(g)

    def _pre(self, module, args, kwargs):
        sample, t, ehs = unet_call_parts(args, kwargs)
        cfg = read_cfg(self.pipe, self.config.cfg, bare_unet=False)
        self.latent_hw = tuple(sample.shape[-2:])
        h, w = self.latent_hw
        if h != w:
            raise ValueError(f"SEG needs square latents (height == width), got {h}x{w} latents")
        b2 = sample.shape[0]
        if cfg and b2 % 2:
            raise ValueError(f"cfg=True needs an even UNet batch [uncond; cond], got {b2}")
        if self.config.convention == "paper" and cfg:
            self.blur_rows = slice(0, b2 // 2)  # blur the unconditional branch in place
            self._expanded = None
            return None
        b = b2 // 2 if cfg else b2
        cond = slice(b2 - b, b2)

        def grow(x):
            if torch.is_tensor(x) and x.ndim > 0 and x.shape[0] == b2:
                return torch.cat([x, x[cond]])
            return x

        args = tuple(grow(a) for a in args)
        kwargs = {k: grow(v) for k, v in kwargs.items()}
        if isinstance(kwargs.get("added_cond_kwargs"), dict):
            kwargs["added_cond_kwargs"] = {k: grow(v) for k, v in kwargs["added_cond_kwargs"].items()}
        self.blur_rows = slice(b2, b2 + b)
        self._expanded = (cfg, b)
        return args, kwargs

    def _post(self, module, args, kwargs, output):
        exp, self._expanded = self._expanded, None
        self.blur_rows = None
        if exp is None or output is None:
            return None
        cfg, b = exp
        tup = not hasattr(output, "sample")
        eps = output[0] if tup else output.sample
        main, eps_b = eps[:-b], eps[-b:]
        eps_c = main[-b:]
        s = self.config.scale
        self.last_branches = {"eps_cond": eps_c.detach(), "eps_blur": eps_b.detach()}
        if cfg:
            w = self._guidance_scale()
            new_c = eps_c + (s / w) * (eps_c - eps_b)
            new = torch.cat([main[:-b], new_c])
        else:
            new = eps_c + s * (eps_c - eps_b)
        if tup:
            return (new,) + tuple(output[1:])
        output.sample = new
        return output


class SEGSelfAttnProcessor:
    """Self-attention (``AttnProcessor2_0`` math) whose queries are Gaussian-blurred on the rows
    the :class:`SEGController` marks as the smoothed branch."""

    kind = SEG

    def __init__(self, controller: SEGController, name: str):
        self.ctl = controller
        self.name = name

    def __call__(self, attn, hidden_states, encoder_hidden_states=None, attention_mask=None, temb=None, *args, **kw):
        if encoder_hidden_states is not None:
            raise ValueError(f"{self.name}: SEG applies to self-attention layers only")
        t = tokens_in(attn, hidden_states, temb, attention_mask)
        x, attention_mask, P = t.x, t.mask, t.x.shape[1]
        q = split_heads(attn.to_q(x), attn.heads)
        k = split_heads(attn.to_k(x), attn.heads)
        v = split_heads(attn.to_v(x), attn.heads)
        if attn.norm_q is not None:
            q = attn.norm_q(q)
        if attn.norm_k is not None:
            k = attn.norm_k(k)
        rows = self.ctl.blur_rows
        if rows is not None:
            cfg = self.ctl.config
            grid = grid_hw(P, self.ctl.latent_hw)
            unblurred = q[rows]
            qb = blur_queries(unblurred, grid, cfg.sigma, cfg.infinite)
            q = torch.cat([q[: rows.start], qb, q[rows.stop :]])
            if self.ctl.observers:
                ev = SelfAttnEvent(name=self.name, attn=attn, query=q, key=k, rows=rows, grid=grid,
                                   unblurred_query=unblurred)
                notify(self.ctl.observers, "on_seg_attention", ev)
        out = F.scaled_dot_product_attention(q, k, v, attn_mask=attention_mask, dropout_p=0.0, is_causal=False)
        out = merge_heads(out).to(q.dtype)
        return tokens_out(attn, attn.to_out[1](attn.to_out[0](out)), t)


def seg_layer_keys(unet, layers) -> list:
    """Self-attention processor keys selected by block names and/or explicit keys."""
    all_keys = self_attention_keys(unet)
    chosen = []
    for spec in layers:
        if spec in ("down", "mid", "up"):
            chosen += [k for k in all_keys if block_of(k) == spec]
        elif spec in all_keys:
            chosen.append(spec)
        else:
            raise ValueError(
                f"layers: {spec!r} is neither 'down', 'mid', 'up' nor a self-attention processor key "
                f"(e.g. {all_keys[0] if all_keys else 'none available'})"
            )
    if not chosen:
        raise ValueError(f"layers {list(layers)} select no self-attention layer of this UNet")
    return list(dict.fromkeys(chosen))


def apply_seg(target, config: Optional[SEGConfig] = None, **kwargs) -> SEGController:
    """Install SEG on a pipeline (or a bare UNet with ``cfg=False``); returns the controller."""
    config = config_from(SEGConfig, config, kwargs)
    config.validate()
    pipe, unet = resolve_target(target)
    keys = seg_layer_keys(unet, config.layers)
    if installed(unet, SEG) is not None:
        raise RuntimeError("SEG is already installed on this UNet; leave the other `with` first")
    if installed(unet, EBCA) is not None:
        raise RuntimeError("EBCA is installed on this UNet; EBCA and SEG in the same run are not supported")
    from .attach import custom_processors

    custom = custom_processors(unet, keys)
    if custom:
        import warnings

        k, cls = next(iter(custom.items()))
        warnings.warn(f"SEG replaces {len(custom)} custom self-attention processors ({cls} on {k}) while it is "
                      "installed; they are put back when it leaves", UserWarning, stacklevel=3)
    ctl = SEGController(config, pipe, unet, keys)
    ctl.installation = Installation.install(unet, {k: SEGSelfAttnProcessor(ctl, k) for k in keys}, ctl._pre, ctl._post)
    cfg = config
    ctl.installation.add_guard(FiniteGuard("SEG", lambda: f"scale={cfg.scale:g}, sigma={cfg.sigma:g}, "
                                                          f"{guidance_text(pipe)}, dtype={unet.dtype}"), pipe)
    return ctl


@contextlib.contextmanager
def smoothed_energy_guidance(target, config: Optional[SEGConfig] = None, **kwargs):
    """``with smoothed_energy_guidance(pipe, SEGConfig(scale=3.0, sigma=10.0)): pipe(prompt)``"""
    ctl = apply_seg(target, config, **kwargs)
    try:
        yield ctl
    finally:
        ctl.remove()
