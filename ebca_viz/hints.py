"""Type aliases of the public API (what a parameter accepts), so signatures say it once.

``Target``: a diffusers pipeline (``pipe.unet`` or ``pipe.transformer``) or the denoiser itself
(``UNet2DConditionModel``, ``PixArtTransformer2DModel``, ``SD3Transformer2DModel``, ``FluxTransformer2DModel``).
"""
from __future__ import annotations

import os
from typing import Sequence, Union

import torch

Target = Union["object", torch.nn.Module]  # a DiffusionPipeline (not imported here: diffusers loads lazily) or a denoiser
PathLike = Union[str, os.PathLike]
LayerSpec = Union[None, str, int, Sequence[Union[str, int]]]  # processor keys, indices, or "down"/"mid"/"up"/"cross"/...
StepSpec = Union[None, int, slice, range, tuple, Sequence[int]]  # step indices, a slice/range, or a (start, stop) window
TokenSpec = Union[None, int, str, Sequence[Union[int, str]]]  # positions or words

__all__ = ["Target", "PathLike", "LayerSpec", "StepSpec", "TokenSpec"]
