"""Denoiser adapters: the one place that knows a denoiser family (see :mod:`ebca_viz.adapters.base`).

``adapter_for(pipe_or_denoiser)`` -> the family's :class:`~ebca_viz.adapters.base.DenoiserAdapter`:

============================  =========================  ===========  =======================================
diffusers class               adapter                    family       text positions
============================  =========================  ===========  =======================================
UNet2DConditionModel          unet.UNetAdapter           ``unet``     CLIP (SDXL: two CLIPs, same positions)
PixArtTransformer2DModel      pixart.PixArtAdapter       ``pixart``   T5 (``tokenizer``)
SD3Transformer2DModel         sd3.SD3Adapter             ``sd3``      CLIP 77 (``tokenizer``) + T5 (``tokenizer_3``)
FluxTransformer2DModel        flux.FluxAdapter           ``flux``     T5 (``tokenizer_2``); CLIP pooled only
============================  =========================  ===========  =======================================
"""
from __future__ import annotations

from ..errors import InvalidType, UnsupportedModel
from .base import KINDS, TEXT_KINDS, DenoiserAdapter, LayerInfo, TextSegment, module_of, pipeline_local
from .flux import FluxAdapter
from .pixart import PixArtAdapter
from .sd3 import SD3Adapter
from .unet import UNetAdapter

ADAPTERS = (UNetAdapter, PixArtAdapter, SD3Adapter, FluxAdapter)
SUPPORTED = tuple(a.model_class for a in ADAPTERS)

_COMPILED = ("{what} is a torch.compile'd module: install on the uncompiled model ({what} = {what}._orig_mod), "
             "and compile inside the `with` if you want speed (processors and hooks must exist before compiling)")


def _adapter_class(model):
    import diffusers

    for a in ADAPTERS:
        cls = getattr(diffusers, a.model_class, None)
        if cls is not None and isinstance(model, cls):
            return a
    return None


def denoiser_of(target):
    """``(pipeline or None, denoiser module)`` of a pipeline (``.unet`` or ``.transformer``) or a bare denoiser."""
    import torch

    if isinstance(target, torch.nn.Module):
        if _adapter_class(getattr(target, "_orig_mod", None)) is not None:
            raise UnsupportedModel(_COMPILED.format(what="the denoiser"))
        return None, target
    for attr in ("unet", "transformer"):
        m = getattr(target, attr, None)
        if m is not None:
            if _adapter_class(getattr(m, "_orig_mod", None)) is not None:
                raise UnsupportedModel(_COMPILED.format(what=f"pipe.{attr}"))
            return target, m
    raise InvalidType(f"pipe must be a diffusers pipeline (with .unet or .transformer) or a denoiser model "
                           f"({', '.join(SUPPORTED)}), got {type(target).__name__}")


def adapter_for(target) -> DenoiserAdapter:
    """The adapter of a pipeline or a bare denoiser; a denoiser no adapter knows -> :class:`~ebca_viz.errors.UnsupportedModel`
    naming its class and the supported ones."""
    pipe, model = denoiser_of(target)
    cls = _adapter_class(model)
    if cls is None:
        where = f"{type(pipe).__name__}'s denoiser is a " if pipe is not None else "the denoiser is a "
        raise UnsupportedModel(f"unsupported architecture: {where}{type(model).__name__}; ebca_viz has adapters for "
                               f"{', '.join(SUPPORTED)} (Stable Diffusion 1.x/2.x/XL, PixArt-Alpha/Sigma, SD3/3.5, "
                               "FLUX.1); fix: load a pipeline of one of these families")
    return cls(model, pipe)


__all__ = ["adapter_for", "denoiser_of", "DenoiserAdapter", "LayerInfo", "TextSegment", "ADAPTERS", "SUPPORTED",
           "KINDS", "TEXT_KINDS", "UNetAdapter", "PixArtAdapter", "SD3Adapter", "FluxAdapter", "module_of",
           "pipeline_local"]
