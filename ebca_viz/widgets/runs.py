"""Run state: one vanilla-vs-method comparison (:func:`sample_comparison`, no widgets involved), its
result (:class:`Comparison`, :class:`RunResult`) and the vanilla cache."""
from __future__ import annotations

import contextlib
import time
from collections import OrderedDict
from dataclasses import dataclass, replace
from typing import Callable, Optional

import torch

from ..ebca import energy_attention
from ..seg import smoothed_energy_guidance
from .controls import PanelSettings

@dataclass
class RunResult:
    image: object  # PIL image
    trace: object  # ebca_viz.Trace of the run (maps, energies, context norms; SEG energies)
    seconds: float


@dataclass
class Comparison:
    """Vanilla vs energy-based result of :func:`sample_comparison`; both runs come with their trace."""

    settings: PanelSettings
    model: str
    vanilla: RunResult
    energy: RunResult
    vanilla_cached: bool
    device: str

    @property
    def label(self) -> str:
        return "EBCA" if self.settings.method == "ebca" else "SEG"

    def images_figure(self):
        from ..viz import compare_images

        return compare_images({"vanilla": self.vanilla.image, self.label: self.energy.image}, diff=True)

    def energy_figure(self):
        """EBCA: posterior energy entering/leaving every layer (descent) vs vanilla (dashed); SEG: the
        self-attention energy of the blurred vs the unblurred branch per step."""
        from ..viz import plot_trace_energies, plot_trace_seg

        if self.settings.method == "ebca":
            return plot_trace_energies(self.energy.trace, reference=self.vanilla.trace,
                                       title="posterior energy of the context (dashed: vanilla)")
        return plot_trace_seg(self.energy.trace, title=f"SEG (sigma {self.settings.seg_sigma:g}): self-attention energy")

    def maps_figure(self):
        """Attention maps of the prompt's words (mean over steps and layers): vanilla row, energy row."""
        from ..viz import plot_attention_maps, trace_prompt_positions, trace_tokens

        tv, te = self.vanilla.trace, self.energy.trace
        m = torch.stack([tv.maps(aggregate="mean"), te.maps(aggregate="mean")])
        return plot_attention_maps(m, tokens=trace_tokens(te), row_labels=["vanilla", self.label],
                                   token_indices=trace_prompt_positions(te, include_sot=True),
                                   title="cross-attention per token (mean over steps and layers)")


class VanillaCache:
    """The last vanilla results, keyed by ``(model, prompt, seed, steps, guidance_scale)``."""

    def __init__(self, maxsize: int = 8):
        self.maxsize = maxsize
        self.data: OrderedDict = OrderedDict()
        self.hits = 0
        self.misses = 0

    @staticmethod
    def key(model: str, s: PanelSettings) -> tuple:
        return (model, s.prompt, s.seed, s.steps, float(s.guidance_scale))

    def get(self, key):
        if key in self.data:
            self.hits += 1
            self.data.move_to_end(key)
            return self.data[key]
        self.misses += 1
        return None

    def put(self, key, value) -> None:
        self.data[key] = value
        self.data.move_to_end(key)
        while len(self.data) > self.maxsize:
            self.data.popitem(last=False)

    def __len__(self):
        return len(self.data)


def _model_name(pipe, model: Optional[str]) -> str:
    if model:
        return model
    return getattr(pipe, "name_or_path", None) or getattr(getattr(pipe, "config", None), "_name_or_path", None) or f"pipe@{id(pipe):x}"


def _run(pipe, settings: PanelSettings, install, on_step) -> RunResult:
    from ..tracing import trace

    g = torch.Generator(device="cpu").manual_seed(settings.seed)

    def cb(p, i, t, kw):
        if on_step is not None:
            on_step(i + 1, settings.steps)
        return kw

    # what the panel draws: maps and energies (and SEG's energies); no context norms (cheaper)
    quantities = ("maps", "energies", "seg") if settings.method == "seg" else ("maps", "energies")
    t0 = time.perf_counter()
    with trace(pipe, quantities=quantities) as tr, install():
        with torch.no_grad():
            out = pipe(settings.prompt, num_inference_steps=settings.steps, guidance_scale=settings.guidance_scale,
                       generator=g, callback_on_step_end=cb)
    return RunResult(out.images[0], tr, time.perf_counter() - t0)


def sample_comparison(pipe, settings: Optional[PanelSettings] = None, model: Optional[str] = None,
                      cache: Optional[VanillaCache] = None, on_step: Optional[Callable[[int, int], None]] = None,
                      **overrides) -> Comparison:
    """Sample ``settings.prompt`` vanilla and with the chosen energy method from the same seed.

    Args:
        pipe: a diffusers Stable Diffusion pipeline (already on its device).
        settings: :class:`PanelSettings`; keyword ``overrides`` replace fields (``seed=3``).
        model: name used in the cache key (default: the pipeline's path).
        cache: a :class:`VanillaCache`; a hit skips the vanilla run.
        on_step: ``on_step(done, total)`` after every sampling step of every run (progress bar).

    Everything is validated before the first UNet call; processors and hooks are restored on exit,
    also when sampling raises.
    """
    s = replace(settings or PanelSettings(), **overrides).check()
    ebca_cfg = s.ebca_config() if s.method == "ebca" else None
    seg_cfg = s.seg_config() if s.method == "seg" else None
    name = _model_name(pipe, model)
    device = str(getattr(pipe, "device", "cpu"))
    key = VanillaCache.key(name, s)
    vanilla = cache.get(key) if cache is not None else None
    cached = vanilla is not None
    total = s.steps * (1 if cached else 2)

    def progress(offset):
        return None if on_step is None else (lambda i, n: on_step(offset + i, total))

    if not cached:
        vanilla = _run(pipe, s, contextlib.nullcontext, progress(0))
        if cache is not None:
            cache.put(key, vanilla)
    p2 = progress(0 if cached else s.steps)
    if s.method == "ebca":
        energy = _run(pipe, s, lambda: energy_attention(pipe, ebca_cfg), p2)
    else:
        energy = _run(pipe, s, lambda: smoothed_energy_guidance(pipe, seg_cfg), p2)
    return Comparison(s, name, vanilla, energy, cached, device)
