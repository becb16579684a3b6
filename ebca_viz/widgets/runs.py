"""Run state: one vanilla-vs-method comparison (:func:`sample_comparison`, no widgets involved), its
result (:class:`Comparison`, :class:`RunResult`) and the vanilla cache."""
from __future__ import annotations

from ..shapes.regime import DETECTOR_WORLDS  # noqa: E402

import time
from collections import OrderedDict
from dataclasses import dataclass, replace
from typing import Callable, Optional

import torch

from .controls import PanelSettings
from ..errors import InvalidSetting

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
        from ..plots import compare_images

        return compare_images({"vanilla": self.vanilla.image, self.label: self.energy.image}, diff=True)

    def energy_figure(self):
        """EBCA: posterior energy entering/leaving every layer (descent) vs vanilla (dashed); SEG: the
        self-attention energy of the blurred vs the unblurred branch per step."""
        from ..plots import plot_trace_energies, plot_trace_seg

        if self.settings.method == "ebca":
            return plot_trace_energies(self.energy.trace, reference=self.vanilla.trace,
                                       title="posterior energy of the context (dashed: vanilla)")
        return plot_trace_seg(self.energy.trace, title=f"SEG (sigma {self.settings.seg_sigma:g}): self-attention energy")

    def maps_figure(self):
        """Attention maps of the prompt's words (mean over steps and layers): vanilla row, energy row."""
        from ..plots import plot_attention_maps
        from ..tokens import trace_prompt_positions, trace_tokens

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


def _run(pipe, settings: PanelSettings, method, on_step) -> RunResult:
    """One traced run of the panel: :func:`ebca_viz.sampling.sample` of ``settings.prompt`` from
    ``settings.seed`` with ``method`` (None = vanilla, an EBCAConfig or a SEGConfig) installed."""
    from PIL import Image

    from ..sampling import sample

    # what the panel draws: maps and energies (and SEG's energies); no context norms (cheaper)
    quantities = ("maps", "energies", "seg") if settings.method == "seg" else ("maps", "energies")
    t0 = time.perf_counter()
    images, traces = sample(pipe, [settings.prompt], [settings.seed], method=method, steps=settings.steps,
                            guidance=settings.guidance_scale, trace=quantities, on_step=on_step)
    return RunResult(Image.fromarray(images[0]), traces[0], time.perf_counter() - t0)


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
        vanilla = _run(pipe, s, None, progress(0))
        if cache is not None:
            cache.put(key, vanilla)
    energy = _run(pipe, s, ebca_cfg if s.method == "ebca" else seg_cfg, progress(0 if cached else s.steps))
    return Comparison(s, name, vanilla, energy, cached, device)


# -- success rate over seeds ---------------------------------------------------------------------
#: detector categories that count as a success (two objects: both present; one object: correct)
SUCCESS_CATEGORIES = ("both_present", "correct")


class RateUnavailable(InvalidSetting):
    """The success rate cannot be computed for this model / prompt / settings (the message says why
    and what to change); the panel shows it instead of a traceback."""


class _Cancelled(Exception):
    pass


@dataclass
class SuccessRate:
    """Result of :func:`success_rate`: per-seed detector categories of the vanilla and the method run.

    ``vanilla[i]`` / ``method[i]`` are the categories of ``seeds[i]`` (``both_present``, ``swapped``,
    ``missing``, ``wrong_binding``, ``unsure`` for two objects; ``correct`` / ``wrong`` / ``unsure``
    for one). Only the seeds finished before a cancel are listed (``n_done`` of ``n_requested``)."""

    settings: PanelSettings
    model: str
    n_requested: int
    seeds: list
    vanilla: list
    method: list
    cancelled: bool = False
    seconds: float = 0.0

    @property
    def n_done(self) -> int:
        return len(self.seeds)

    @staticmethod
    def successes(categories) -> list:
        """0/1 per seed: the category is one of :data:`SUCCESS_CATEGORIES` (``unsure`` is a failure)."""
        return [int(c in SUCCESS_CATEGORIES) for c in categories]

    def rate(self, which: str = "method"):
        """:class:`ebca_viz.claims.Rate` (Wilson 95 % interval) of ``"method"`` or ``"vanilla"``; None
        when no seed finished."""
        from ..claims import rate

        cats = {"method": self.method, "vanilla": self.vanilla}[which]
        return rate(self.successes(cats)) if cats else None

    @property
    def diff(self):
        """Paired difference method minus vanilla (same seeds), :func:`ebca_viz.claims.paired_diff`
        (mean of ``s_method,i - s_vanilla,i`` with its t 95 % interval); None when no seed finished."""
        from ..claims import paired_diff

        return paired_diff(self.successes(self.method), self.successes(self.vanilla)) if self.seeds else None

    def unsure(self, which: str = "method") -> int:
        return sum(c == "unsure" for c in {"method": self.method, "vanilla": self.vanilla}[which])

    def summary(self, label: str = "method") -> str:
        """Plain-text lines: both rates, the paired difference, n and the unsure counts."""
        if not self.seeds:
            return "no seed finished" + (" (cancelled)" if self.cancelled else "")
        rv, rm, d = self.rate("vanilla"), self.rate("method"), self.diff
        lines = [f"{label}: {rm}", f"vanilla: {rv}",
                 f"paired difference ({label} - vanilla, same seeds): {100 * d.value:+.1f} points "
                 f"(95 % CI {100 * d.lo:+.1f} to {100 * d.hi:+.1f})",
                 f"n = {self.n_done} seeds ({self.seeds[0]}..{self.seeds[-1]})"
                 + (f" of {self.n_requested} (cancelled)" if self.cancelled else "")
                 + f"; unsure verdicts: {label} {self.unsure('method')}, vanilla {self.unsure('vanilla')}"]
        return "\n".join(lines)


def success_rate(pipe, settings: PanelSettings, n: int = 16, model: Optional[str] = None,
                 cache: Optional[VanillaCache] = None,
                 on_progress: Optional[Callable[[int, int], None]] = None,
                 should_stop: Optional[Callable[[], bool]] = None) -> SuccessRate:
    """Sample seeds ``settings.seed, settings.seed + 1, ..., + n - 1`` vanilla and with the settings'
    method (:func:`sample_comparison`, vanilla from ``cache`` when there) and judge every image
    with the shapes-world detector (:func:`ebca_viz.widgets.verdicts.detector_verdict`).

    Success of one image: the detector's category for the prompt's requested objects is
    ``both_present`` (two-object prompt) or ``correct`` (one object); ``unsure`` (a decision within
    the detector's margin) is *not* a success and is counted separately. Rates are
    ``k / n`` with Wilson 95 % intervals; the paired difference is the mean over seeds of
    ``s_method - s_vanilla`` with its t interval (:func:`ebca_viz.claims.paired_diff`).

    EBCQ negation edits are refused (:class:`RateUnavailable`): "the negated object is absent"
    is a second criterion this detector verdict does not state. Conjunction edits are allowed;
    success is still judged on the main prompt's objects.

    Args:
        pipe: the shapes-world pipeline; ``model`` must name it (``"shapes-world"``): the detector
            exists for that world only (any other model raises :class:`RateUnavailable`).
        n: number of seeds (>= 1).
        on_progress: ``on_progress(done_steps, total_steps)`` over all seeds (progress bar).
        should_stop: called between seeds and between sampling steps; True cancels: the seed in
            progress is dropped and the result holds the finished seeds (``cancelled=True``).
    """
    from ..eval.detector import parse_shapes_prompt
    from ..shapes.regime import regime_for
    from .verdicts import detector_verdict

    name = _model_name(pipe, model)
    if regime_for(name).name not in DETECTOR_WORLDS:
        raise RateUnavailable(f"the success rate needs the shapes-world detector; model {name!r} has none "
                              "(load model='shapes-world')")
    if isinstance(n, bool) or not isinstance(n, int) or n < 1:
        raise RateUnavailable(f"n (number of seeds) must be an integer >= 1, got {n!r}")
    s = settings.check()
    if parse_shapes_prompt(s.prompt) is None:
        raise RateUnavailable(f"the detector judges shapes-world prompts like 'a red circle and a blue square'; "
                              f"got prompt={s.prompt!r}; fix: write the prompt in that form")
    if s.method == "ebca" and any(e.prompt.strip() and e.direction < 0 for e in s.edits):
        raise RateUnavailable("the success rate is not defined for EBCQ negation edits (the detector judges the "
                              "main prompt's objects only): clear the 'not' edit prompt or switch it to 'and'")
    stop = should_stop or (lambda: False)
    per_seed = s.steps * 2
    total = n * per_seed
    out = SuccessRate(s, name, n, [], [], [])
    t0 = time.perf_counter()
    for k in range(n):
        if stop():
            out.cancelled = True
            break
        seed = s.seed + k

        def step(done, tot, k=k):
            if stop():
                raise _Cancelled  # internal invariant: control flow (cancel button)
            if on_progress is not None:  # a cached vanilla counts as done
                on_progress(k * per_seed + per_seed - tot + done, total)

        try:
            res = sample_comparison(pipe, s, model=name, cache=cache, on_step=step, seed=seed)
        except _Cancelled:
            out.cancelled = True
            break
        out.seeds.append(seed)
        out.vanilla.append(detector_verdict(res.vanilla.image, s.prompt)["category"])
        out.method.append(detector_verdict(res.energy.image, s.prompt)["category"])
        if on_progress is not None:
            on_progress((k + 1) * per_seed, total)
    out.seconds = time.perf_counter() - t0
    return out
