r"""Control panel: vanilla vs energy-based sampling from the same seed, side by side.

The sampling logic is a plain function, :func:`sample_comparison` (no widgets involved, tested
directly); :class:`EnergyPanel` only wires ipywidgets controls to it::

    from ebca_viz.widgets import EnergyPanel
    EnergyPanel(model="tiny").show()          # or: display(panel.widget)

Two methods:

* ``"ebca"``: EBCU on the main prompt (``gamma_attn``, ``gamma_norm``, token up-weights) and EBCQ
  editorial prompts (``O = (O + sum_s sigma_s alpha_s O_s) / (1 + sum_s sigma_s alpha_s)``),
* ``"seg"``: smoothed energy guidance (Gaussian blur ``sigma`` of the self-attention queries,
  scale ``s``).

Both runs are recorded with :func:`ebca_viz.trace` (maps, energies, context norms, SEG energies);
the vanilla image is diffusers' own attention. The last vanilla result is cached per ``(model, prompt, seed, steps, guidance)``.
Sampling runs on the GPU when one is visible, else on the CPU. Errors go to the panel's error
area; processors and hooks are always restored (the installations are context managers).

Stable CSS classes for browser tests: ``ebca-panel``, ``ebca-sample`` (button),
``ebca-progress``, ``ebca-status``, ``ebca-error``, ``ebca-image-vanilla``, ``ebca-image-energy``,
``ebca-plot``, ``ebca-maps``, and ``ebca-seed`` / ``ebca-gamma-attn`` / ... on the controls.
"""
from __future__ import annotations

import contextlib
import html
import math
import time
from collections import OrderedDict
from dataclasses import dataclass, field, replace
from typing import Callable, Optional

import torch

from .config import EBCAConfig, Edit, SEGConfig
from .ebca import energy_attention, find_controller
from .seg import smoothed_energy_guidance

METHODS = ("ebca", "seg")
DEFAULT_PROMPT = "a red circle and a blue square"


# ---------------------------------------------------------------------------------------------
# settings
# ---------------------------------------------------------------------------------------------
@dataclass
class EditSpec:
    """One EBCQ editorial prompt as the panel holds it (see :class:`ebca_viz.Edit`)."""

    prompt: str = ""
    alpha: float = 1.0
    direction: int = 1  # +1 conjunction, -1 negation
    start: float = 0.2
    gamma_attn: float = 0.0
    gamma_norm: float = 0.0

    def to_edit(self) -> Edit:
        return Edit(prompt=self.prompt, alpha=self.alpha, direction=self.direction, start=self.start,
                    gamma_attn=self.gamma_attn, gamma_norm=self.gamma_norm)


@dataclass
class PanelSettings:
    """Everything one comparison needs. ``token_weights`` is ``"5:2.5, 3:1.5"`` (index:weight,
    0 = start-of-text) or a dict ``{5: 2.5}``; ``seg_sigma = inf`` blurs to the spatial mean."""

    prompt: str = DEFAULT_PROMPT
    seed: int = 0
    steps: int = 25
    guidance_scale: float = 7.5
    method: str = "ebca"
    gamma_attn: float = 0.01
    gamma_norm: float = 0.02
    token_weights: object = ""
    edits: list = field(default_factory=list)  # EditSpec
    seg_sigma: float = 10.0
    seg_scale: float = 3.0

    @classmethod
    def for_model(cls, model: str, **overrides) -> "PanelSettings":
        """Settings in the model's own regime (:func:`ebca_viz.shapes.regime.regime_for`): CFG, gammas
        and SEG settings; ``overrides`` win."""
        from .shapes.regime import regime_for

        r = regime_for(model)
        kw = dict(steps=r.steps, guidance_scale=r.guidance, gamma_attn=r.gamma_attn, gamma_norm=r.gamma_norm,
                  seg_sigma=r.seg_sigma, seg_scale=r.seg_scale)
        kw.update(overrides)
        return cls(**kw)

    def check(self) -> "PanelSettings":
        if not isinstance(self.prompt, str) or not self.prompt.strip():
            raise ValueError("prompt is empty: type a prompt")
        for nm in ("seed", "steps"):
            v = getattr(self, nm)
            if isinstance(v, bool) or not isinstance(v, int):
                raise TypeError(f"{nm} must be an integer, got {v!r}")
        if self.seed < 0:
            raise ValueError(f"seed must be >= 0, got {self.seed}")
        if not 1 <= self.steps <= 1000:
            raise ValueError(f"steps must be between 1 and 1000, got {self.steps}")
        if self.method not in METHODS:
            raise ValueError(f"method must be one of {METHODS}, got {self.method!r}")
        if not isinstance(self.guidance_scale, (int, float)) or not math.isfinite(self.guidance_scale):
            raise ValueError(f"guidance_scale must be a finite number, got {self.guidance_scale!r}")
        return self

    def ebca_config(self) -> EBCAConfig:
        ti, tw = parse_token_weights(self.token_weights)
        edits = [e.to_edit() for e in self.edits if e.prompt.strip()]
        cfg = EBCAConfig(gamma_attn=self.gamma_attn, gamma_norm=self.gamma_norm,
                         token_indices=ti or None, token_upweight=tw or None, edits=edits)
        cfg.validate().check_denominators(self.steps, self.steps)  # a zero EBCQ denominator: say so now
        return cfg

    def seg_config(self) -> SEGConfig:
        return SEGConfig(scale=self.seg_scale, sigma=self.seg_sigma).validate()


def parse_token_weights(spec) -> tuple[list, list]:
    """``"5:2.5, 3:1.5"`` or ``{5: 2.5}`` -> ``([5, 3], [2.5, 1.5])``; ``""``/None -> ``([], [])``."""
    if spec is None or spec == "":
        return [], []
    if isinstance(spec, dict):
        items = list(spec.items())
    elif isinstance(spec, str):
        items = []
        for part in spec.replace(";", ",").split(","):
            part = part.strip()
            if not part:
                continue
            if ":" not in part:
                raise ValueError(f"token weights: {part!r} is not index:weight (e.g. '5:2.5')")
            i, w = part.split(":", 1)
            try:
                items.append((int(i), float(w)))
            except ValueError:
                raise ValueError(f"token weights: {part!r} is not index:weight (e.g. '5:2.5')") from None
    else:
        raise TypeError(f"token weights must be a string like '5:2.5' or a dict, got {type(spec).__name__}")
    return [int(i) for i, _ in items], [float(w) for _, w in items]


# ---------------------------------------------------------------------------------------------
# the sampling function behind the panel
# ---------------------------------------------------------------------------------------------
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
        from .viz import compare_images

        return compare_images({"vanilla": self.vanilla.image, self.label: self.energy.image}, diff=True)

    def energy_figure(self):
        """EBCA: posterior energy entering/leaving every layer (descent) vs vanilla (dashed); SEG: the
        self-attention energy of the blurred vs the unblurred branch per step."""
        from .viz import plot_trace_energies, plot_trace_seg

        if self.settings.method == "ebca":
            return plot_trace_energies(self.energy.trace, reference=self.vanilla.trace,
                                       title="posterior energy of the context (dashed: vanilla)")
        return plot_trace_seg(self.energy.trace, title=f"SEG (sigma {self.settings.seg_sigma:g}): self-attention energy")

    def maps_figure(self):
        """Attention maps of the prompt's words (mean over steps and layers): vanilla row, energy row."""
        from .viz import plot_attention_maps, trace_prompt_positions, trace_tokens

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
    from .tracing import trace

    g = torch.Generator(device="cpu").manual_seed(settings.seed)

    def cb(p, i, t, kw):
        if on_step is not None:
            on_step(i + 1, settings.steps)
        return kw

    t0 = time.perf_counter()
    with trace(pipe) as tr, install():
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


# ---------------------------------------------------------------------------------------------
# the panel
# ---------------------------------------------------------------------------------------------
def _png(img, size: int = 256) -> bytes:
    import io

    from .viz import upscale

    buf = io.BytesIO()
    upscale(img, size).save(buf, format="PNG")
    return buf.getvalue()


class EnergyPanel:
    """ipywidgets panel around :func:`sample_comparison`.

    Args:
        pipe: a pipeline, or None to load ``model`` on first use (GPU when available, else CPU).
        model: a name for :func:`ebca_viz.models.load_pipeline` (``"auto"``: shapes-world if shipped,
            else tiny).
        settings: initial :class:`PanelSettings` (steps default to ``pick(25, 4)``).
        n_edits: how many editorial prompt rows to offer.
    """

    def __init__(self, pipe=None, model: str = "auto", settings: Optional[PanelSettings] = None,
                 device: Optional[str] = None, n_edits: int = 2, cache: Optional[VanillaCache] = None):
        from .viz import default_device, pick

        if model == "auto":
            from .demo import default_model

            model = default_model()
        self.model = model
        self.device = device or default_device()
        self.pipe = pipe
        self.cache = cache or VanillaCache()
        self.settings = settings or PanelSettings.for_model(model, steps=pick(25, 4))
        self.n_edits = n_edits
        self.last: Optional[Comparison] = None
        self.last_error: Optional[BaseException] = None
        self.runs = 0
        self._build()

    # -- widgets --------------------------------------------------------------------------------
    def _build(self) -> None:
        import ipywidgets as W

        s = self.settings
        lay = W.Layout(width="340px")
        st = {"description_width": "110px"}

        def cls(w, c):
            w.add_class(c)
            return w

        self.w_prompt = cls(W.Text(value=s.prompt, description="prompt", layout=W.Layout(width="560px"), style=st), "ebca-prompt")
        self.w_seed = cls(W.IntSlider(value=s.seed, min=0, max=1000, description="seed", layout=lay, style=st), "ebca-seed")
        self.w_steps = cls(W.IntSlider(value=s.steps, min=1, max=100, description="steps", layout=lay, style=st), "ebca-steps")
        self.w_cfg = cls(W.FloatSlider(value=s.guidance_scale, min=1.0, max=15.0, step=0.5, description="guidance (CFG)",
                                       layout=lay, style=st), "ebca-cfg")
        self.w_method = cls(W.ToggleButtons(options=[("EBCA (EBCU + EBCQ)", "ebca"), ("SEG", "seg")], value=s.method,
                                            description="method", style=st), "ebca-method")
        g_max = max(0.1, 2 * s.gamma_attn, 2 * s.gamma_norm)  # the regime's gammas sit mid-range
        self.w_ga = cls(W.FloatSlider(value=s.gamma_attn, min=0.0, max=g_max, step=0.001, readout_format=".3f",
                                      description="gamma_attn", layout=lay, style=st), "ebca-gamma-attn")
        self.w_gn = cls(W.FloatSlider(value=s.gamma_norm, min=0.0, max=g_max, step=0.001, readout_format=".3f",
                                      description="gamma_norm", layout=lay, style=st), "ebca-gamma-norm")
        tw = s.token_weights if isinstance(s.token_weights, str) else ", ".join(f"{i}:{w}" for i, w in s.token_weights.items())
        self.w_tokens = cls(W.Text(value=tw, placeholder="index:weight, e.g. 5:2.5", description="token up-weights",
                                   layout=lay, style=st), "ebca-token-weights")
        self.w_edits = []
        rows = []
        for i in range(self.n_edits):
            e = s.edits[i] if i < len(s.edits) else EditSpec()
            ws = dict(
                prompt=W.Text(value=e.prompt, placeholder=f"edit prompt {i + 1} (empty: off)", layout=W.Layout(width="260px")),
                alpha=W.FloatSlider(value=e.alpha, min=0.0, max=2.0, step=0.05, description="alpha", layout=W.Layout(width="220px")),
                direction=W.Dropdown(options=[("+ (and)", 1), ("- (not)", -1)], value=e.direction, layout=W.Layout(width="90px")),
                start=W.FloatSlider(value=e.start, min=0.0, max=1.0, step=0.05, description="start", layout=W.Layout(width="220px")),
                gamma=W.FloatText(value=e.gamma_attn, description="gamma", layout=W.Layout(width="150px"), step=1e-4),
            )
            for k, w in ws.items():
                w.add_class(f"ebca-edit{i}-{k}")
            self.w_edits.append(ws)
            rows.append(W.HBox(list(ws.values())))
        self.w_sigma = cls(W.FloatLogSlider(value=min(s.seg_sigma, 100.0), base=10, min=-0.5, max=2.0, step=0.05,
                                            description="SEG sigma", layout=lay, style=st), "ebca-seg-sigma")
        self.w_sigma_inf = cls(W.Checkbox(value=not math.isfinite(s.seg_sigma) or s.seg_sigma > 9999,
                                          description="sigma = inf (mean)"), "ebca-seg-inf")
        self.w_seg_scale = cls(W.FloatSlider(value=s.seg_scale, min=0.0, max=10.0, step=0.1, description="SEG scale",
                                             layout=lay, style=st), "ebca-seg-scale")
        self.button = cls(W.Button(description="Sample", button_style="primary", icon="play",
                                   tooltip="sample vanilla and energy-based from the same seed"), "ebca-sample")
        self.progress = cls(W.IntProgress(value=0, min=0, max=1, description="progress", bar_style="info"), "ebca-progress")
        self.status = cls(W.HTML(value=f"<i>model {html.escape(self.model)} on {self.device}: press Sample</i>"), "ebca-status")
        self.error = cls(W.HTML(value=""), "ebca-error")
        self.img_vanilla = cls(W.Image(format="png", layout=W.Layout(width="256px")), "ebca-image-vanilla")
        self.img_energy = cls(W.Image(format="png", layout=W.Layout(width="256px")), "ebca-image-energy")
        self.img_plot = cls(W.Image(format="png", layout=W.Layout(max_width="900px")), "ebca-plot")
        self.img_maps = cls(W.Image(format="png", layout=W.Layout(max_width="900px")), "ebca-maps")
        self.lbl_vanilla = W.HTML("<b>vanilla</b>")
        self.lbl_energy = W.HTML("<b>energy</b>")
        self.button.on_click(lambda _b: self.sample())

        ebca_box = W.VBox([W.HBox([self.w_ga, self.w_gn]), self.w_tokens, W.HTML("<b>EBCQ editorial prompts</b>"), *rows])
        seg_box = W.VBox([W.HBox([self.w_sigma, self.w_sigma_inf]), self.w_seg_scale])
        self.method_tabs = W.Tab(children=[ebca_box, seg_box])
        self.method_tabs.set_title(0, "EBCA")
        self.method_tabs.set_title(1, "SEG")
        self.method_tabs.selected_index = METHODS.index(s.method)
        self.w_method.observe(lambda ch: setattr(self.method_tabs, "selected_index", METHODS.index(ch["new"])), names="value")
        self.widget = W.VBox([
            self.w_prompt,
            W.HBox([self.w_seed, self.w_steps, self.w_cfg]),
            self.w_method,
            self.method_tabs,
            W.HBox([self.button, self.progress, self.status]),
            self.error,
            W.HBox([W.VBox([self.lbl_vanilla, self.img_vanilla]), W.VBox([self.lbl_energy, self.img_energy])]),
            self.img_plot,
            self.img_maps,
        ])
        self.widget.add_class("ebca-panel")

    def read_settings(self) -> PanelSettings:
        """The controls' current values as :class:`PanelSettings`."""
        edits = [EditSpec(prompt=w["prompt"].value, alpha=w["alpha"].value, direction=w["direction"].value,
                          start=w["start"].value, gamma_attn=w["gamma"].value, gamma_norm=w["gamma"].value)
                 for w in self.w_edits]
        return PanelSettings(
            prompt=self.w_prompt.value, seed=self.w_seed.value, steps=self.w_steps.value,
            guidance_scale=self.w_cfg.value, method=self.w_method.value, gamma_attn=self.w_ga.value,
            gamma_norm=self.w_gn.value, token_weights=self.w_tokens.value, edits=edits,
            seg_sigma=math.inf if self.w_sigma_inf.value else self.w_sigma.value, seg_scale=self.w_seg_scale.value,
        )

    def show(self):
        from IPython.display import display

        display(self.widget)
        return self

    def _ipython_display_(self):
        from IPython.display import display

        display(self.widget)

    # -- actions --------------------------------------------------------------------------------
    def _on_step(self, done: int, total: int) -> None:
        self.progress.max = max(total, 1)
        self.progress.value = min(done, total)

    def _ensure_pipe(self):
        if self.pipe is None:
            from .models import load_pipeline

            self.status.value = f"<i>loading {html.escape(self.model)} on {self.device} ...</i>"
            self.pipe = load_pipeline(self.model, device=self.device)
            self.pipe.set_progress_bar_config(disable=True)
        return self.pipe

    def sample(self) -> Optional[Comparison]:
        """What the button does: read the controls, run :func:`sample_comparison`, show the images
        and plots. Any error is shown in the panel (and kept in ``last_error``), never raised."""
        from .viz import figure_png

        self.error.value = ""
        self.last_error = None
        self.button.disabled = True
        self.progress.value = 0
        self.progress.bar_style = "info"
        try:
            s = self.read_settings().check()
            pipe = self._ensure_pipe()
            self.status.value = f"<i>sampling {s.steps} steps ({s.method}) on {self.device} ...</i>"
            res = sample_comparison(pipe, s, model=self.model, cache=self.cache, on_step=self._on_step)
            self.img_vanilla.value = _png(res.vanilla.image)
            self.img_energy.value = _png(res.energy.image)
            self.lbl_energy.value = f"<b>{'EBCA' if s.method == 'ebca' else 'SEG'}</b>"
            self.img_plot.value = figure_png(res.energy_figure())
            maps = res.maps_figure()
            if maps is not None:
                self.img_maps.value = figure_png(maps)
            self.runs += 1
            self.last = res
            self.progress.bar_style = "success"
            self.status.value = (
                f"run {self.runs}: vanilla {'(cached)' if res.vanilla_cached else f'{res.vanilla.seconds:.1f}s'}, "
                f"{s.method} {res.energy.seconds:.1f}s on {res.device}")
            return res
        except Exception as e:  # shown in the panel, never a dead kernel
            self.last_error = e
            self.progress.bar_style = "danger"
            self.error.value = (f"<div style='color:#b00020'><b>Error</b>: {html.escape(type(e).__name__)}: "
                                f"{html.escape(str(e))}</div>")
            self.status.value = "<i>failed: see the error above</i>"
            return None
        finally:
            self.button.disabled = False
            if self.pipe is not None:  # belt and braces: nothing of ours stays installed
                ctl = find_controller(self.pipe.unet)
                if ctl is not None:
                    ctl.remove()


__all__ = ["PanelSettings", "EditSpec", "parse_token_weights", "Comparison",
           "RunResult", "VanillaCache", "sample_comparison", "EnergyPanel", "METHODS"]
