r"""Smoothed Energy Guidance sampling, with and without CFG, on SD 1.x/2.x and SDXL pipelines.

Self-attention queries of the chosen layers (default: the mid block) are blurred over the
spatial grid with a Gaussian of width ``sigma`` (``sigma > 9999``: the spatial mean) in an extra
branch; the published guidance (SEG-SDXL ``pipeline_seg.py``)::

    with CFG:    eps = eps_u + w (eps_c - eps_u) + s (eps_c - eps_blur)
    without:     eps = eps_c + s (eps_c - eps_blur)          (guidance_scale <= 1)

``convention="paper"`` blurs the unconditional branch instead when CFG is on. The latent grid
must be square (the published blur reshapes queries to ``(h, w)`` with ``h == w``).
"""
from __future__ import annotations

import math
import time
from typing import Optional, Sequence

from ..config import SEGConfig
from ..seg import smoothed_energy_guidance
from .common import TaskResult, check_prompt, check_size, check_steps, make_generator, restored


def seg_sample(pipe, prompt: str = "", *, seg_scale: float = 3.0, sigma: float = 9999999.0,
               layers: Sequence[str] = ("mid",), convention: str = "published", guidance_scale: float = 5.0,
               seed: int = 0, num_inference_steps: int = 50, negative_prompt: Optional[str] = None,
               height: Optional[int] = None, width: Optional[int] = None, observers=None,
               **pipe_kwargs) -> TaskResult:
    """Sample with SEG. ``guidance_scale <= 1`` switches CFG off (then only SEG guides).

    Args:
        seg_scale: ``s`` (published default 3.0); sigma: blur width (``math.inf`` or > 9999: spatial mean).
        layers: ``"down"``, ``"mid"``, ``"up"`` and/or processor keys.
        observers: objects with ``on_seg_attention(event)`` (an :class:`~ebca_viz.denoiser_hook.SelfAttnEvent`).
    """
    check_prompt(prompt)
    check_steps(num_inference_steps)
    h, w = check_size(pipe, height, width, square=True)
    cfg = SEGConfig(scale=seg_scale, sigma=sigma, layers=list(layers), convention=convention).validate()
    gen = make_generator(seed, pipe.device)
    t0 = time.perf_counter()
    with restored(pipe), smoothed_energy_guidance(pipe, cfg) as ctl:
        if observers is not None:
            ctl.observers.extend(observers if isinstance(observers, (list, tuple)) else [observers])
        out = pipe(prompt, negative_prompt=negative_prompt, num_inference_steps=num_inference_steps,
                   guidance_scale=guidance_scale, height=h, width=w, generator=gen, **pipe_kwargs)
        info = {"self_attention_layers": list(ctl.keys), "cfg": bool(pipe.do_classifier_free_guidance),
                "convention": convention, "infinite_blur": cfg.infinite}
    info["seconds"] = round(time.perf_counter() - t0, 3)
    settings = dict(prompt=prompt, negative_prompt=negative_prompt, seg_scale=seg_scale,
                    sigma=sigma if math.isfinite(sigma) else "inf", layers=list(layers), convention=convention,
                    guidance_scale=guidance_scale, num_inference_steps=num_inference_steps, height=h, width=w,
                    pipeline=type(pipe).__name__)
    return TaskResult("seg", list(out.images), settings, seed, info)
