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

How it plugs into a pipeline: :class:`SEGController` is a *method* of the UNet's one
:class:`~ebca_viz.denoiser_hook.DenoiserHook`, like a diffusers guider: ``before_call``
appends the blurred branch to the batch (published convention; ``call.add_branch``), the
:class:`SEGSelfAttnProcessor` (the per-layer stage) blurs the queries of the rows the
controller marks, and ``combine`` owns the formula: it computes :func:`seg_combine` from the
branches and hands back ``call.guided(eps)`` (both CFG halves equal to it, so the pipeline's
own CFG line returns it unchanged). With the paper's convention and CFG the unconditional half
is blurred in place and the pipeline's CFG line *is* the formula: ``combine`` returns the rows
as they are. Nothing of the pipeline is modified.
"""
from __future__ import annotations

import contextlib
from typing import Iterator, Optional

import torch
import torch.nn.functional as F

from .attn_io import qkv_heads, tokens_in, tokens_out
from .guards import FiniteGuard, guidance_text
from .hints import Target
from .attach import Installation, block_of, grid_hw, resolve_target, self_attention_keys
from .config import SEGConfig, config_from
from .errors import InvalidSetting, StateError
from .energy import blur_token_grid, gaussian_blur_2d, kernel_size_for, merge_heads, split_heads  # noqa: F401 (re-exported)
from .denoiser_hook import SEG, DenoiserHook, Participant, SelfAttnEvent, branch_difference, install, notify


def blur_queries(q: torch.Tensor, grid: tuple, sigma: float, infinite: bool) -> torch.Tensor:
    """``q (b, H, P, d)`` -> blurred ``(b, H, P, d)`` over the ``grid = (h, w)`` (square grids only)."""
    h, w = grid
    if h != w:
        raise InvalidSetting(
            f"SEG blurs square grids only (as the published code); this layer's grid is {h}x{w}: "
            "use square height == width"
        )
    return blur_token_grid(q, h, w, sigma, infinite)


def seg_combine(eps_u, eps_c, eps_blur, guidance_scale: float, seg_scale: float, convention="published"):
    """Guided noise prediction from the branches. ``eps_u`` may be None (no CFG).

    With ``convention='paper'`` and CFG, ``eps_blur`` is the *blurred unconditional* prediction.
    """
    if eps_u is None:
        return eps_c + seg_scale * (eps_c - eps_blur)
    if convention == "paper":
        return eps_blur + guidance_scale * (eps_c - eps_blur)
    return eps_u + guidance_scale * (eps_c - eps_u) + seg_scale * (eps_c - eps_blur)


class SEGController(Participant):
    """State of one SEG installation: which UNet rows are the blurred branch in the current call.

    A guidance method of the denoiser hook (:mod:`ebca_viz.denoiser_hook`): ``before_call`` marks
    (and, published convention, appends) the blurred rows; ``combine`` applies :func:`seg_combine`;
    ``guidance_terms`` names what its term adds (read by a trace's guidance maps).
    """

    role, kind, title = "method", SEG, "SEG"
    adds_branch = True  # the blurred branch (published convention)
    cfg_bare_unet = False

    def __init__(self, config: SEGConfig, pipe, unet, keys: list):
        self.config = config
        self.pipe = pipe
        self.unet = unet
        self.keys = keys
        self.emits = {"on_seg_attention": list(keys)}
        self.blur_rows: Optional[slice] = None
        self.latent_hw = None
        self.observers: list = []
        self.installation: Optional[Installation] = None
        self._expanded = None  # (cfg_on, b) while a call has an appended branch

    @property
    def cfg_setting(self):
        return self.config.cfg

    def remove(self):
        if self.installation is not None:
            self.installation.remove()

    def _guidance_scale(self) -> float:
        g = getattr(self.pipe, "guidance_scale", None) if self.pipe is not None else None
        if g is None:
            raise InvalidSetting("SEG with CFG on a bare UNet needs the pipeline's guidance_scale; use a pipeline")
        return float(g)

    def before_call(self, call) -> None:
        """Mark the rows to blur: the unconditional half in place (paper, CFG), else a copy of the
        conditional rows appended as the branch ``"blur"``."""
        self.blur_rows, self._expanded = None, None
        cfg, b2 = call.cfg, call.batch
        self.latent_hw = call.latent_hw
        h, w = self.latent_hw
        if h != w:
            raise InvalidSetting(f"SEG needs square latents (height == width), got {h}x{w} latents")
        if cfg and b2 % 2:
            raise InvalidSetting(f"cfg=True needs an even UNet batch [uncond; cond], got {b2}")
        if self.config.convention == "paper" and cfg:
            self.blur_rows = slice(0, b2 // 2)  # blur the unconditional branch in place
            return
        self.blur_rows = call.add_branch("blur", "cond")
        self._expanded = (cfg, b2 - call.n_uncond)

    def combine(self, call, eps: torch.Tensor):
        """The guided prediction for the caller's rows (module docstring); None: the rows as they are."""
        if self._expanded is None:
            return None
        u, c, blur = call.rows["uncond"], call.rows["cond"], call.branches["blur"]
        if call.n_uncond:
            eps_hat = seg_combine(eps[u], eps[c], eps[blur], self._guidance_scale(), self.config.scale)
        else:
            eps_hat = seg_combine(None, eps[c], eps[blur], 1.0, self.config.scale)
        return call.guided(eps_hat)

    def guidance_terms(self, call, eps: torch.Tensor) -> dict:
        """``{"seg": (s, eps_c - eps_blur)}``: the published term ``s (eps_c - eps_blur)`` as a scale and
        a difference ``(B, C, h, w)``, from the UNet's rows; {} where SEG has no term of its own."""
        d = branch_difference(call, eps, "blur", self._expanded)
        return {} if d is None else {"seg": (float(self.config.scale), d)}

    def after_call(self, call, output) -> None:
        self.blur_rows, self._expanded = None, None


class SEGSelfAttnProcessor:
    """Self-attention (``AttnProcessor2_0`` math) whose queries are Gaussian-blurred on the rows
    the :class:`SEGController` marks as the smoothed branch."""

    kind = SEG

    def __init__(self, controller: SEGController, name: str):
        self.ctl = controller
        self.name = name

    def __call__(self, attn, hidden_states, encoder_hidden_states=None, attention_mask=None, temb=None, *args, **kw):
        if encoder_hidden_states is not None:
            raise InvalidSetting(f"{self.name}: SEG applies to self-attention layers only; "
                                 "fix: install it on self-attention layers, as apply_seg does")
        t = tokens_in(attn, hidden_states, temb, attention_mask)
        x, attention_mask, P = t.x, t.mask, t.x.shape[1]
        q, k, v = qkv_heads(attn, x)
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
            raise InvalidSetting(
                f"layers: {spec!r} is neither 'down', 'mid', 'up' nor a self-attention processor key "
                f"(e.g. {all_keys[0] if all_keys else 'none available'})"
            )
    if not chosen:
        raise InvalidSetting(f"layers {list(layers)} select no self-attention layer of this UNet")
    return list(dict.fromkeys(chosen))


def apply_seg(target: Target, config: Optional[SEGConfig] = None, **kwargs) -> SEGController:
    """Install SEG on a pipeline (or a bare UNet with ``cfg=False``); returns the controller."""
    config = config_from(SEGConfig, config, kwargs)
    config.validate()
    from .seg_dit import apply_seg_dit, dit_adapter

    adapter = dit_adapter(target)
    if adapter is not None:  # PixArt, SD3, Flux: the image-token queries of the chosen blocks (seg_dit.py)
        return apply_seg_dit(adapter, config)
    pipe, unet = resolve_target(target)
    keys = seg_layer_keys(unet, config.layers)
    ctl = SEGController(config, pipe, unet, keys)
    why = DenoiserHook.refusal(unet, ctl)
    if why:
        raise StateError(why)
    from .attach import custom_processors

    custom = custom_processors(unet, keys)
    if custom:  # refused, like the trace does for cross-attention: the image would not be your processor's
        k, cls = next(iter(custom.items()))
        raise InvalidSetting(
            f"SEG: {len(custom)} self-attention layers run a custom processor ({cls} on {k}); SEG would replace "
            "it, so the guided image would not be the one your processor makes. Apply SEG to a UNet with "
            "diffusers' processors (unet.set_default_attn_processor()), or choose other layers with "
            "SEGConfig(layers=[...]) (self-attention keys without a custom processor)")
    cfg = config
    guard = FiniteGuard("SEG", lambda: f"scale={cfg.scale:g}, sigma={cfg.sigma:g}, {guidance_text(pipe)}, dtype={unet.dtype}")
    ctl.installation = install(unet, {k: SEGSelfAttnProcessor(ctl, k) for k in keys}, [ctl], pipe, guard)
    return ctl


@contextlib.contextmanager
def smoothed_energy_guidance(target: Target, config: Optional[SEGConfig] = None,
                             **kwargs) -> Iterator[SEGController]:
    """``with smoothed_energy_guidance(pipe, SEGConfig(scale=3.0, sigma=10.0)): pipe(prompt)``"""
    ctl = apply_seg(target, config, **kwargs)
    try:
        yield ctl
    finally:
        ctl.remove()
