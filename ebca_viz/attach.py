"""Finding a pipeline's UNet and its attention layers; installing and restoring processors.

Everything goes through diffusers' own extension points: ``unet.attn_processors``
/ ``unet.set_attn_processor`` and PyTorch module hooks on the one UNet instance.
Nothing is patched on a class.

Layer names are diffusers' processor keys, e.g.
``down_blocks.0.attentions.0.transformer_blocks.0.attn2.processor``.
"""
from __future__ import annotations

import math
from typing import Iterable, Optional

import torch
from .errors import InvalidSetting, UnsupportedModel

from .adapters.unet import unet_exec_order


_COMPILED = ("{what} is a torch.compile'd module: install on the uncompiled UNet (pipe.unet = pipe.unet._orig_mod), "
             "and compile inside the `with` if you want speed (processors and hooks must exist before compiling)")


def resolve_target(target) -> tuple[Optional[object], torch.nn.Module]:
    """``(pipeline or None, unet)`` for a diffusers pipeline or a bare ``UNet2DConditionModel``."""
    from diffusers import UNet2DConditionModel

    if isinstance(getattr(target, "_orig_mod", None), UNet2DConditionModel):
        raise UnsupportedModel(_COMPILED.format(what="the UNet"))
    if isinstance(target, UNet2DConditionModel):
        return None, target
    unet = getattr(target, "unet", None)
    if isinstance(getattr(unet, "_orig_mod", None), UNet2DConditionModel):
        raise UnsupportedModel(_COMPILED.format(what="pipe.unet"))
    if unet is None:
        kind = type(target).__name__
        if getattr(target, "transformer", None) is not None:
            raise UnsupportedModel(
                f"unsupported architecture: {kind} is a transformer (DiT/MMDiT) pipeline; ebca_viz works on "
                "UNet2DConditionModel-based pipelines (Stable Diffusion 1.x, 2.x, XL); "
                "fix: pass such a pipeline or its .unet"
            )
        raise UnsupportedModel(
            f"pipe must be a diffusers Stable Diffusion pipeline (with .unet) or a UNet2DConditionModel, got {kind}"
        )
    if not isinstance(unet, UNet2DConditionModel):
        raise UnsupportedModel(
            f"unsupported architecture: pipe.unet is a {type(unet).__name__}; ebca_viz needs a "
            "UNet2DConditionModel (Stable Diffusion 1.x, 2.x, XL)"
        )
    return target, unet


def resolve_denoiser(target):
    """``(pipeline or None, denoiser, adapter)`` for any pipeline or denoiser an adapter knows (UNet, PixArt,
    SD3, Flux: :mod:`ebca_viz.adapters`); an unknown denoiser is refused naming its class and the supported ones.
    (:func:`resolve_target` stays UNet-only for the methods that have no DiT path yet.)"""
    from .adapters import adapter_for

    ad = adapter_for(target)
    return ad.pipe, ad.model, ad


def module_of(unet: torch.nn.Module, key: str) -> torch.nn.Module:
    """The ``Attention`` module behind a processor key."""
    return unet.get_submodule(key[: -len(".processor")] if key.endswith(".processor") else key)


def cross_attention_keys(unet) -> list[str]:
    """Processor keys of every cross-attention layer, in execution order (down, mid, up)."""
    keys = [k for k in unet.attn_processors if getattr(module_of(unet, k), "is_cross_attention", False)]
    return sorted(keys, key=_exec_order)


def self_attention_keys(unet) -> list[str]:
    keys = [k for k in unet.attn_processors if not getattr(module_of(unet, k), "is_cross_attention", False)]
    return sorted(keys, key=_exec_order)


_exec_order = unet_exec_order  # the UNet adapter's execution order (down, mid, up)


def block_of(key: str) -> str:
    """``'down' | 'mid' | 'up'`` for a processor key."""
    return key.split(".")[0].split("_")[0]


def grid_hw(num_pixels: int, latent_hw: Optional[tuple[int, int]]) -> tuple[int, int]:
    """Spatial grid ``(h, w)`` of a layer with ``num_pixels`` queries given the latent size.

    UNet downsampling halves with ceil: the grid is ``(ceil(H/f), ceil(W/f))`` for a power of two f.
    """
    if latent_hw is not None:
        H, W = latent_hw
        f = 1
        while f <= max(H, W):
            h, w = -(-H // f), -(-W // f)
            if h * w == num_pixels:
                return h, w
            f *= 2
    s = math.isqrt(num_pixels)
    if s * s == num_pixels:
        return s, s
    raise InvalidSetting.of("num_pixels", num_pixels,
                            "pass latent_hw, the latent's (H, W), so the layer grid can be found",
                            why="not a square number and latent_hw does not give the layer's grid")


class Installation:
    """Processors swapped in and hook handles (anything with ``.remove()``) on one UNet, undone exactly
    once by :meth:`remove` (handles in reverse order, then the processors). Built all-or-nothing by
    :func:`ebca_viz.denoiser_hook.install`."""

    def __init__(self, unet):
        self.unet = unet
        self.saved = dict(unet.attn_processors)
        self.handles: list = []
        self.removed = False

    def set_processors(self, replacements: dict) -> None:
        procs = dict(self.saved)
        procs.update(replacements)
        self.unet.set_attn_processor(procs)

    def add_hooks(self, handles: Iterable) -> None:
        self.handles.extend(handles)

    def remove(self) -> None:
        if self.removed:
            return
        self.removed = True
        for h in reversed(self.handles):
            h.remove()
        self.unet.set_attn_processor(self.saved)


def is_custom_processor(p) -> bool:
    """True for an attention processor that is neither diffusers' own nor ebca_viz's (a user's)."""
    mod = type(p).__module__ or ""
    return not (mod.startswith("diffusers.") or mod.startswith("ebca_viz."))


def custom_processors(unet, keys) -> dict:
    procs = unet.attn_processors
    return {k: type(procs[k]).__name__ for k in keys if is_custom_processor(procs[k])}


def unet_call_parts(args: tuple, kwargs: dict):
    """``(sample, timestep, encoder_hidden_states)`` of a ``UNet2DConditionModel.forward`` call."""
    names = ("sample", "timestep", "encoder_hidden_states")
    out = []
    for i, n in enumerate(names):
        out.append(args[i] if len(args) > i else kwargs.get(n))
    return tuple(out)
