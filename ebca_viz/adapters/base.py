r"""The architecture seam: one adapter per denoiser family knows what the rest of ebca_viz asks about a
denoiser -- where its attention layers are and what kind each is, how one call's arguments read, the
token grid of the image, which text positions hold which tokenizer's tokens, and how CFG is laid out.

::

    adapter_for(pipe or denoiser) -> DenoiserAdapter      (unet.py, pixart.py, sd3.py, flux.py)
      .family            "unet" | "pixart" | "sd3" | "flux"
      .model             pipe.unet or pipe.transformer (the module the one denoiser hook sits on)
      .layers()          [LayerInfo(key, kind, index)], execution order; kind in
                         "self" | "cross" | "joint" (SD3 / Flux double-stream) | "single" (Flux single-stream)
      .text_layers()     the layers whose queries see text keys (cross, joint, single)
      .parse_call(a, kw) {"sample", "timestep", "context" (B2, N, D) text states, "extras": {...}}
      .latent_hw(parts)  (h, w) of the grid of the denoiser's output per pixel channel vector
      .latent_grid(sample, parts)  (h, w) image-token grid after patchify (non-square allowed)
      .text_segments(pipe, n_text) [TextSegment(name, start, length, tokenizer_attr)]
      .cfg_layout(pipe)  {"cfg": bool, "style": "batch" | "none" | "separate" | "distilled"}

Joint attention (SD3 / Flux double-stream) concatenates text and image tokens in one softmax; Flux's
single-stream blocks see one sequence ``[text (N); image (P)]``. What a trace keeps of them is the
image-query x text-key block (``P x N`` per head), never the ``(P+N)^2`` matrix.
"""
from __future__ import annotations

import math
import sys
from dataclasses import dataclass
from typing import Optional

import torch

from ..errors import EbcaVizTypeError

KINDS = ("self", "cross", "joint", "single")
TEXT_KINDS = ("cross", "joint", "single")


@dataclass(frozen=True)
class LayerInfo:
    key: str  # diffusers processor key, e.g. "transformer_blocks.0.attn2.processor"
    kind: str  # "self" | "cross" | "joint" | "single"
    index: int  # execution order among all attention layers


@dataclass(frozen=True)
class TextSegment:
    name: str  # "clip" | "clip_2" | "t5"
    start: int  # first position of this segment in the text sequence the layer sees
    length: int
    tokenizer_attr: str  # pipeline attribute of the tokenizer that names these positions


def module_of(model: torch.nn.Module, key: str) -> torch.nn.Module:
    """The ``Attention`` module behind a processor key."""
    return model.get_submodule(key[: -len(".processor")] if key.endswith(".processor") else key)


def block_of_key(key: str) -> str:
    """The block module path of a processor key: ``"transformer_blocks.3.attn.processor"`` -> ``"transformer_blocks.3"``."""
    parts = key.split(".")
    return ".".join(parts[:2])


def _arg(args: tuple, kwargs: dict, names: tuple, name: str):
    i = names.index(name)
    return args[i] if len(args) > i else kwargs.get(name)


def pipeline_local(pipe, name: str, depth: int = 40):
    """A local variable of the pipeline's ``__call__`` frame that is running now (None when not found).

    Diffusers' PixArt and Flux pipelines keep their CFG decision in a local (``do_classifier_free_guidance``,
    ``do_true_cfg``) instead of a property; the adapters read it from the frame, the pipeline's own value."""
    if pipe is None:
        return None
    f = sys._getframe(1)
    for _ in range(depth):
        if f is None:
            return None
        if f.f_code.co_name == "__call__" and f.f_locals.get("self") is pipe:
            return f.f_locals.get(name)
        f = f.f_back
    return None


class DenoiserAdapter:
    """Base adapter: a denoiser ``model`` (and the pipeline ``pipe`` it came with, or None)."""

    family = "?"
    model_class = None  # name of the diffusers class this adapter knows
    call_args: tuple = ()  # positional names of model.forward
    context_arg = "encoder_hidden_states"

    def __init__(self, model: torch.nn.Module, pipe=None):
        self.model = model
        self.pipe = pipe

    # -- layers ----------------------------------------------------------------------------------
    def layer_kind(self, key: str, attn) -> Optional[str]:
        raise NotImplementedError

    def exec_order(self, key: str):
        nums = [int(p) for p in key.split(".") if p.isdigit()]
        return (0, nums, key)

    def layers(self) -> list[LayerInfo]:
        """Every attention layer with its kind, in execution order."""
        out = []
        keys = sorted(self.model.attn_processors, key=self.exec_order)
        for k in keys:
            kind = self.layer_kind(k, module_of(self.model, k))
            if kind is not None:
                out.append(LayerInfo(k, kind, len(out)))
        return out

    def text_layers(self) -> list[LayerInfo]:
        """The layers whose queries see text keys (cross, joint, single), execution order."""
        return [li for li in self.layers() if li.kind in TEXT_KINDS]

    def kinds(self) -> dict:
        return {li.key: li.kind for li in self.layers()}

    # -- one call --------------------------------------------------------------------------------
    def parse_call(self, args: tuple, kwargs: dict) -> dict:
        """``{"sample", "timestep", "context", "extras"}`` of one ``model.forward`` call."""
        names = self.call_args
        parts = {n: _arg(args, kwargs, names, n) for n in names}
        sample = parts.pop(names[0])
        return {"sample": sample, "timestep": parts.pop("timestep", None), "context": parts.pop(self.context_arg, None),
                "extras": parts}

    def latent_hw(self, parts: dict) -> Optional[tuple]:
        """``(h, w)`` of the denoiser's output grid (the guidance maps' grid)."""
        s = parts.get("sample")
        return tuple(int(x) for x in s.shape[-2:]) if torch.is_tensor(s) and s.ndim == 4 else None

    def latent_grid(self, sample, parts: Optional[dict] = None) -> Optional[tuple]:
        """``(h, w)`` of the image tokens after patchify."""
        raise NotImplementedError

    def layer_grid(self, key: str, latent_hw: tuple) -> tuple:
        """Grid of one layer's image queries for a call whose output grid is ``latent_hw``."""
        p = getattr(self.model.config, "patch_size", 1) or 1
        return (-(-latent_hw[0] // p), -(-latent_hw[1] // p))

    def eps_grid(self, eps: torch.Tensor, parts: dict) -> Optional[torch.Tensor]:
        """The denoiser output as ``(B, C, h, w)`` on :meth:`latent_hw` (None when it cannot be)."""
        return eps if torch.is_tensor(eps) and eps.ndim == 4 else None

    # -- text --------------------------------------------------------------------------------------
    def text_segments(self, pipe=None, n_text: Optional[int] = None) -> list[TextSegment]:
        raise NotImplementedError

    def text_encoder_for(self, pipe, tokenizer_attr: str):
        """The pipeline's text encoder behind a tokenizer attribute (``tokenizer_2`` -> ``text_encoder_2``)."""
        return getattr(pipe, tokenizer_attr.replace("tokenizer", "text_encoder"), None) if pipe is not None else None

    # -- CFG ---------------------------------------------------------------------------------------
    def cfg_layout(self, pipe=None) -> dict:
        """``{"cfg": bool, "style": ...}``: ``"batch"`` = ``[uncond; cond]`` rows in one call, ``"none"``,
        ``"separate"`` = cond and uncond in two calls (Flux true CFG), ``"distilled"`` = guidance as an input."""
        pipe = pipe if pipe is not None else self.pipe
        cfg = getattr(pipe, "do_classifier_free_guidance", None) if pipe is not None else None
        if cfg is None:
            cfg = pipeline_local(pipe, "do_classifier_free_guidance")
        return {"cfg": bool(cfg), "style": "batch" if cfg else "none"}

    def call_role(self, parts: dict, previous_t: Optional[float]) -> str:
        """``"cond"`` (or a ``[uncond; cond]`` batch) or ``"uncond"`` for the second call of a separate-CFG pair."""
        return "cond"

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.family}: {type(self.model).__name__}>"


def isqrt_grid(p: int) -> tuple:
    s = math.isqrt(p)
    if s * s != p:
        raise EbcaVizTypeError(f"cannot infer the token grid of {p} image tokens (not square); pass img_ids")
    return s, s
