r"""What notebooks need besides figures: pick a model, sample under a trace, read one layer.

* :func:`fast_mode` / :func:`pick` -- ``EBCA_VIZ_FAST=1`` (CI) makes notebooks and panels use fewer
  steps and samples: ``steps = pick(25, 4)``;
* :func:`load_model` -- ``(pipe, name)``: the shipped shapes-world model offline, ``"sd15"`` & co. with weights;
* :func:`sample_traced` -- the one "sample a prompt from a seed under a trace" helper (optionally
  with EBCA or SEG installed): ``(image, trace, seconds)``;
* :func:`capture_attention` -- the tensors one cross-attention layer saw at one step.

The figures themselves are in :mod:`ebca_viz.viz`; they take what these return.
"""
from __future__ import annotations

import contextlib
import os
import time
from dataclasses import dataclass
from typing import Any, Optional, Sequence

import torch

FAST_ENV = "EBCA_VIZ_FAST"


def default_model() -> str:
    """``"shapes-world"`` when its weights ship with this copy, else ``"tiny"``."""
    try:
        from .models.shapes_world import weights_available
    except ImportError:
        return "tiny"
    return "shapes-world" if weights_available() else "tiny"


def fast_mode() -> bool:
    """True when the environment variable ``EBCA_VIZ_FAST`` is set to a true value (``1``, ``true``,
    ``yes``): notebooks and panels then use fewer steps and samples (CI runs them this way)."""
    return os.environ.get(FAST_ENV, "").strip().lower() in ("1", "true", "yes", "on")


def pick(full, fast):
    """``fast`` in fast mode (:func:`fast_mode`), else ``full``: ``steps = pick(25, 4)``."""
    return fast if fast_mode() else full


def default_device() -> str:
    """``"cuda"`` when a GPU is visible, else ``"cpu"``."""
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"


def load_model(name: str = "shapes-world", device: Optional[str] = None, verbose: bool = True):
    """``(pipe, name)`` for the notebooks: ``"shapes-world"`` (or ``"auto"``) falls back to the random
    ``"tiny"`` model when the shapes-world weights are not in this copy
    (:func:`default_model`); any other name goes to
    :func:`ebca_viz.models.load_pipeline` (``"sd15"`` needs its weights on disk). GPU when visible."""
    # quiet transformers' import-time notices (e.g. "requires torchvision") unless the user chose a level
    os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
    from .models import load_pipeline

    if name in ("auto", "shapes-world"):
        name = default_model()
        if name != "shapes-world" and verbose:
            print("shapes-world weights are not in this copy: using the random-weight 'tiny' model "
                  "(every code path runs, the pictures are noise)")
    device = device or default_device()
    pipe = load_pipeline(name, device=device)
    pipe.set_progress_bar_config(disable=True)
    if verbose:
        print(f"model {name!r} on {device}: UNet with {len(_cross_keys(pipe))} cross-attention layers")
    return pipe, name


def _cross_keys(pipe):
    from .attach import cross_attention_keys

    return cross_attention_keys(pipe.unet)


def capture_attention(pipe, prompt: str, step: int = 0, layer: int = 0, seed: int = 0, num_inference_steps: int = 4,
                      guidance_scale: float = 7.5) -> dict:
    """What one cross-attention layer saw at one sampling step of a plain run (conditional half, image 0).

    Returns a dict: ``q (1, H, P, d)``, ``k (1, H, N, d)``, ``context (1, N, D)``, ``w_k (H d, D)``
    (``attn.to_k.weight``), ``scale`` (beta), ``heads``, ``grid (h, w)``, ``name``; all fp32, detached.
    """
    from .config import EBCAConfig
    from .ebca import energy_attention

    got = {}

    class _Grab:
        def on_cross_attention(self, ev):
            if ev.step == step and ev.layer == layer and not got:
                n = ev.n_uncond
                got.update(q=ev.query[n:n + 1].detach().float().clone(), k=ev.key[n:n + 1].detach().float().clone(),
                           context=ev.context_in[n:n + 1].detach().float().clone(),
                           w_k=ev.attn.to_k.weight.detach().float().clone(), scale=float(ev.attn.scale),
                           heads=int(ev.attn.heads), grid=tuple(ev.grid), name=ev.name)

    g = torch.Generator("cpu").manual_seed(seed)
    with energy_attention(pipe, EBCAConfig()) as ctl, torch.no_grad():
        ctl.observers.append(_Grab())
        pipe(prompt, num_inference_steps=max(num_inference_steps, step + 1), guidance_scale=guidance_scale, generator=g)
    if not got:
        raise ValueError(f"layer {layer} / step {step} was not reached (the UNet has {len(_cross_keys(pipe))} layers)")
    return got


@dataclass
class Sampled:
    """One traced sampling run: the image, the :class:`~ebca_viz.tracing.Trace`, wall seconds."""

    image: Any
    trace: Any
    seconds: float

    def __iter__(self):  # image, tr, seconds = sample_traced(...)
        return iter((self.image, self.trace, self.seconds))


def sample_traced(pipe, prompt: str, seed: int = 0, steps: int = 25, guidance_scale: float = 7.5, ebca=None,
                  seg=None, quantities: Optional[Sequence[str]] = None, observers: Sequence = (),
                  **pipe_kwargs) -> Sampled:
    """Sample ``prompt`` from ``seed`` (CPU generator) while :func:`ebca_viz.trace` records.

    ``ebca``: an :class:`~ebca_viz.EBCAConfig` to sample with energy attention (its controller gets
    ``observers``); ``seg``: an :class:`~ebca_viz.SEGConfig` for smoothed energy guidance; neither:
    vanilla. ``quantities`` as in :func:`ebca_viz.trace`; other keywords go to the pipeline call.
    """
    from .ebca import energy_attention
    from .seg import smoothed_energy_guidance
    from .tracing import trace

    if ebca is not None and seg is not None:
        raise ValueError("sample_traced: pass ebca= or seg=, not both (EBCA and SEG in one run are not supported)")
    if observers and ebca is None:
        raise ValueError("sample_traced: observers= subscribe to the EBCA controller; pass ebca= as well")
    g = torch.Generator("cpu").manual_seed(seed)
    t0 = time.perf_counter()
    with trace(pipe, quantities=quantities) as tr, contextlib.ExitStack() as stack:
        if ebca is not None:
            ctl = stack.enter_context(energy_attention(pipe, ebca))
            ctl.observers.extend(observers)
        elif seg is not None:
            stack.enter_context(smoothed_energy_guidance(pipe, seg))
        image = pipe(prompt, num_inference_steps=steps, guidance_scale=guidance_scale, generator=g,
                     **pipe_kwargs).images[0]
    return Sampled(image, tr, time.perf_counter() - t0)


__all__ = ["FAST_ENV", "fast_mode", "pick", "default_device", "default_model", "load_model", "Sampled",
           "sample_traced", "capture_attention"]
