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

Slider ranges come from the model's regime (:class:`ControlRanges`); a value typed beyond a slider
is refused with a message, never clamped. The prompt's tokens are chips with their indices
(clicking one toggles it in ``token_indices``). Next to the vanilla and the energy image: the
shapes-world detector's verdict per image (:func:`detector_verdict`), the difference image
(:func:`difference_image`) and the posterior energy per layer of both runs
(:func:`plot_layer_energies`).

Stable CSS classes for browser tests: ``ebca-panel``, ``ebca-sample`` (button),
``ebca-progress``, ``ebca-status``, ``ebca-error``, ``ebca-notice`` (refused values),
``ebca-results`` (+ ``ebca-stale`` while running / after an error / after a change),
``ebca-stale-label``, ``ebca-run-caption``, ``ebca-image-vanilla``, ``ebca-image-energy``,
``ebca-image-diff``, ``ebca-verdict-vanilla`` / ``-energy``, ``ebca-layer-energy``, ``ebca-plot``,
``ebca-maps``, ``ebca-chip`` / ``ebca-chip-<i>``, ``ebca-token-summary``, ``ebca-method``, and
``ebca-seed`` / ``ebca-gamma-attn`` / ``ebca-edit0-alpha`` / ... on the numeric controls.
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
    seg_layers: tuple = ("mid",)  # blurred self-attention blocks (the regime's: shapes world every layer)

    @classmethod
    def for_model(cls, model: str, **overrides) -> "PanelSettings":
        """Settings in the model's own regime (:func:`ebca_viz.shapes.regime.regime_for`): CFG, gammas
        and SEG settings; ``overrides`` win."""
        from .shapes.regime import regime_for

        r = regime_for(model)
        kw = dict(steps=r.steps, guidance_scale=r.guidance, gamma_attn=r.gamma_attn, gamma_norm=r.gamma_norm,
                  seg_sigma=r.seg_sigma, seg_scale=r.seg_scale, seg_layers=tuple(r.seg_layers))
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
        return SEGConfig(scale=self.seg_scale, sigma=self.seg_sigma, layers=list(self.seg_layers)).validate()


def _nice_ceil(x: float) -> float:
    """The smallest of 1, 2, 5 x 10^k that is >= x (x > 0)."""
    k = math.floor(math.log10(x))
    for m in (1.0, 2.0, 5.0, 10.0):
        v = m * 10.0 ** k
        if v >= x * (1 - 1e-9):
            return float(f"{v:.12g}")
    return float(f"{10.0 ** (k + 1):.12g}")


def _decimals(step: float) -> int:
    return max(0, -math.floor(math.log10(step) + 1e-9))


@dataclass(frozen=True)
class ControlRange:
    """One numeric control: ``lo <= value <= hi`` in steps of ``step``; ``log``: a log10 slider."""

    name: str
    lo: float
    hi: float
    step: float
    integer: bool = False
    log: bool = False

    @property
    def decimals(self) -> int:
        return 0 if self.integer else _decimals(self.step)

    def fmt(self, v) -> str:
        return f"{int(v)}" if self.integer else f"{v:.{self.decimals}f}"

    def refuse(self, v, model: str) -> Optional[str]:
        """None when ``v`` is accepted, else a message naming the control, the range and the fix."""
        try:
            x = float(v)
        except (TypeError, ValueError):
            return f"{self.name}: {v!r} is not a number; type a number in [{self.fmt(self.lo)}, {self.fmt(self.hi)}]"
        if not math.isfinite(x):
            return f"{self.name}: {v!r} is not a finite number; type a number in [{self.fmt(self.lo)}, {self.fmt(self.hi)}]"
        if self.integer and x != int(x):
            return f"{self.name}: {v!r} is not a whole number"
        if x < self.lo - 1e-12 or x > self.hi + 1e-12:
            return (f"{self.name} = {v:g} refused: outside this panel's range [{self.fmt(self.lo)}, {self.fmt(self.hi)}] "
                    f"for {model} (kept {{kept}}). Use sample_comparison(pipe, PanelSettings(...)) for other values.")
        return None


@dataclass(frozen=True)
class ControlRanges:
    """Slider ranges in the model's own regime (:mod:`ebca_viz.shapes.regime`), so that the regime's
    documented defaults sit well inside them (shapes world: gammas 0.3; Stable Diffusion: 0.01 / 0.02).

    * gammas (also the edits' gammas): ``0 .. nice(3 x max(gamma_attn, gamma_norm))`` in 1/1000 of that;
    * token up-weight: ``0 .. max(5, 2 x upweight)``; edit alpha: ``0 .. 2 x max(alpha, negation alpha)``
      rounded up to 0.5;
    * CFG: ``1 .. max(15, 2 x guidance)``; SEG scale ``0 .. max(10, 3 x scale)``; SEG sigma (log)
      ``0.1 .. max(100, 10 x sigma)``; steps ``1 .. max(100, 2 x steps)``; seed ``0 .. 9999``.
    """

    model: str
    seed: ControlRange
    steps: ControlRange
    guidance_scale: ControlRange
    gamma_attn: ControlRange
    gamma_norm: ControlRange
    upweight: ControlRange
    edit_alpha: ControlRange
    edit_start: ControlRange
    edit_gamma: ControlRange
    seg_scale: ControlRange
    seg_sigma: ControlRange

    @classmethod
    def for_model(cls, model: str) -> "ControlRanges":
        from .shapes.regime import regime_for

        r = regime_for(model)
        g = _nice_ceil(3 * max(r.gamma_attn, r.gamma_norm))
        gs = float(f"{g / 1000:.3g}")
        a = math.ceil(2 * max(r.edit_alpha, r.negation_alpha) * 2) / 2
        return cls(
            model=model,
            seed=ControlRange("seed", 0, 9999, 1, integer=True),
            steps=ControlRange("steps", 1, max(100, 2 * r.steps), 1, integer=True),
            guidance_scale=ControlRange("guidance (CFG)", 1.0, float(max(15.0, 2 * r.guidance)), 0.5),
            gamma_attn=ControlRange("gamma_attn", 0.0, g, gs),
            gamma_norm=ControlRange("gamma_norm", 0.0, g, gs),
            upweight=ControlRange("up-weight", 0.0, float(max(5.0, 2 * r.upweight)), 0.05),
            edit_alpha=ControlRange("alpha", 0.0, float(max(1.0, a)), 0.05),
            edit_start=ControlRange("start", 0.0, 1.0, 0.05),
            edit_gamma=ControlRange("edit gamma", 0.0, g, gs),
            seg_scale=ControlRange("SEG scale", 0.0, float(max(10.0, 3 * r.seg_scale)), 0.1),
            seg_sigma=ControlRange("SEG sigma", 0.1, float(max(100.0, 10 * r.seg_sigma)), 0.05, log=True),
        )

    def check(self, s: "PanelSettings") -> None:
        """Refuse settings outside the ranges (what the panel would have to clamp)."""
        vals = dict(seed=s.seed, steps=s.steps, guidance_scale=s.guidance_scale, gamma_attn=s.gamma_attn,
                    gamma_norm=s.gamma_norm, seg_scale=s.seg_scale)
        if math.isfinite(s.seg_sigma):
            vals["seg_sigma"] = s.seg_sigma
        for k, v in vals.items():
            msg = getattr(self, k).refuse(v, self.model)
            if msg:
                raise ValueError(msg.replace(" (kept {kept})", ""))


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


# ---------------------------------------------------------------------------------------------
# what the panel shows next to the images (data in, figure / dict out; no widgets)
# ---------------------------------------------------------------------------------------------
def detector_verdict(image, prompt: str) -> Optional[dict]:
    """The shapes-world detector (:mod:`ebca_viz.shapes.detect`) on one image, judged against a
    shapes-world prompt (``"a red circle and a blue square"``); None for any other prompt.

    Returns ``objects`` (what was found, largest first), ``requests`` (per requested object:
    ``present``, ``colour_ok``, ``shape_ok`` and the detected object it was matched to),
    ``correct`` (every requested object present) and ``category`` (one object: ``correct`` /
    ``wrong`` / ``unsure``; two: :data:`ebca_viz.shapes.detect.PAIR_VERDICTS`)."""
    from .eval.detector import parse_shapes_prompt

    req = parse_shapes_prompt(prompt)
    if req is None:
        return None
    import numpy as np

    from .shapes import detect

    found = detect.detect(np.asarray(image.convert("RGB")))
    keys = [d.key for d in found]
    used: set = set()
    requests = []
    for c, sh in req:
        j = next((j for j, k in enumerate(keys) if k == (c, sh) and j not in used), None)
        if j is None:  # the closest object: the right shape (wrong colour), else the right colour
            j = next((j for j, k in enumerate(keys) if k[1] == sh and j not in used), None)
        if j is None:
            j = next((j for j, k in enumerate(keys) if k[0] == c and j not in used), None)
        if j is not None:
            used.add(j)
        got = None if j is None else keys[j]
        requests.append(dict(request=f"{c} {sh}", matched=None if got is None else f"{got[0]} {got[1]}",
                             colour_ok=got is not None and got[0] == c, shape_ok=got is not None and got[1] == sh,
                             present=got == (c, sh)))
    if len(req) == 1:
        category = detect.score_single(req[0], found)["category"]  # correct / wrong / unsure
    else:
        category = detect.score_pair(tuple(req), found)["category"]
    return dict(objects=[f"{c} {s}" for c, s in keys], requests=requests,
                correct=all(r["present"] for r in requests), category=category)


def verdict_html(v: Optional[dict]) -> str:
    """A verdict of :func:`detector_verdict` as a few lines of HTML (for the panel)."""
    if v is None:
        return "<span style='color:#666'>detector: only for shapes-world prompts like 'a red circle and a blue square'</span>"
    ok, bad = "<b style='color:#1b7f3b'>&#10003;</b>", "<b style='color:#b00020'>&#10007;</b>"
    n = len(v["objects"])
    lines = [f"detector: {n} object{'s' if n != 1 else ''}"
             + (": " + ", ".join(html.escape(o) for o in v["objects"][:4]) + (" ..." if n > 4 else "") if n else "")]
    for r in v["requests"]:
        if r["present"]:
            lines.append(f"{ok} {html.escape(r['request'])}")
        elif r["matched"] is None:
            lines.append(f"{bad} {html.escape(r['request'])}: missing")
        else:
            lines.append(f"{bad} {html.escape(r['request'])}: got {html.escape(r['matched'])} "
                         f"(colour {ok if r['colour_ok'] else bad} shape {ok if r['shape_ok'] else bad})")
    lines.append(f"verdict: <b>{html.escape(v['category'].replace('_', ' '))}</b>")
    return "<div style='line-height:1.35'>" + "<br>".join(lines) + "</div>"


def difference_image(a, b, size: int = 200):
    """``(PIL image, mean, max)``: ``|b - a|`` (mean over colour channels, in /255) as an inferno
    heat map scaled to its own maximum, upscaled (nearest) to ``size`` pixels wide."""
    import numpy as np
    from matplotlib import colormaps
    from PIL import Image

    from .viz import upscale

    x = np.asarray(a.convert("RGB"), np.float32)
    y = np.asarray(b.convert("RGB"), np.float32)
    if x.shape != y.shape:
        raise ValueError(f"the two images differ in size: {x.shape} vs {y.shape}")
    d = np.abs(y - x).mean(-1)
    top = float(d.max())
    rgb = (colormaps["inferno"](d / max(top, 1.0))[..., :3] * 255).astype(np.uint8)
    return upscale(Image.fromarray(rgb), size), float(d.mean()), top


def plot_layer_energies(vanilla_trace, energy_trace, label: str = "EBCA", kind: str = "posterior",
                        updates: bool = True):
    """Posterior energy ``E(K;Q) + E(K)`` of the (conditional) context per cross-attention layer, mean
    over the sampling steps: vanilla (what each layer received; nothing is updated) and the
    energy run entering and leaving each layer (EBCU's descent is the drop from one to the other;
    ``updates=False``, e.g. SEG: one curve for the energy run)."""
    from .viz import _short_layer, new_figure, to_numpy

    v = to_numpy(vanilla_trace.energies(kind, "before")).mean(0)
    eb = to_numpy(energy_trace.energies(kind, "before")).mean(0)
    ea = to_numpy(energy_trace.energies(kind, "after")).mean(0)
    x = list(range(len(v)))
    fig = new_figure(figsize=(6.2, 2.5))
    ax = fig.subplots()
    ax.plot(x, v, "o--", color="gray", ms=4, lw=1.2, label="vanilla")
    if updates:
        ax.plot(x, eb, "o-", color="C0", ms=4, lw=1.5, label=f"{label}: entering the layer")
        ax.plot(x, ea, "v-", color="C1", ms=4, lw=1.5, label=f"{label}: leaving the layer")
    else:  # SEG leaves the text context alone: one curve (its queries, hence E(K;Q), still differ)
        ax.plot(x, eb, "o-", color="C0", ms=4, lw=1.5, label=label)
    ax.set_xticks(x)
    ax.set_xticklabels([_short_layer(k) for k in energy_trace.layers], fontsize=7)
    ax.set_xlabel("cross-attention layer (execution order)", fontsize=8)
    ax.set_ylabel("E(K;Q)+E(K)" if kind == "posterior" else kind, fontsize=8)
    ax.tick_params(labelsize=7)
    ax.set_title(f"posterior energy per layer, mean over {energy_trace.energies(kind).shape[0]} steps", fontsize=9)
    ax.legend(fontsize=7, loc="best")
    fig.tight_layout()
    return fig


# ---------------------------------------------------------------------------------------------
# the panel
# ---------------------------------------------------------------------------------------------
IMAGE_PX = 200  # width of the three images on screen
PANEL_CSS = """<style>
.ebca-results.ebca-stale img { opacity: 0.35; filter: grayscale(100%); }
.ebca-stale-label { background: #fff3cd; color: #664d03; border: 1px solid #e0c060; padding: 2px 8px; }
.ebca-notice { color: #664d03; }
.ebca-chip button, button.ebca-chip { min-width: 0; padding: 0 8px; }
</style>"""


def _png(img, size: int = IMAGE_PX) -> bytes:
    import io

    from .viz import upscale

    buf = io.BytesIO()
    upscale(img, size).save(buf, format="PNG")
    return buf.getvalue()


def placeholder_png(width: int, height: int, text: str) -> bytes:
    """A light-grey PNG with ``text`` in it: what the panel shows where there is no result yet
    (an ``<img>`` without data would show the browser's broken-image icon)."""
    import io

    from PIL import Image, ImageDraw, ImageFont

    im = Image.new("RGB", (width, height), (238, 238, 238))
    d = ImageDraw.Draw(im)
    try:
        font = ImageFont.load_default(size=14)
    except TypeError:  # Pillow < 10.1
        font = ImageFont.load_default()
    y = height // 2 - 9 * len(text.split("\n"))
    for line in text.split("\n"):
        w = d.textlength(line, font=font)
        d.text(((width - w) / 2, y), line, fill=(110, 110, 110), font=font)
        y += 18
    d.rectangle([0, 0, width - 1, height - 1], outline=(200, 200, 200))
    buf = io.BytesIO()
    im.save(buf, format="PNG")
    return buf.getvalue()


class NumberControl:
    """A slider (no readout) with a text box: typed values outside the slider's range are refused
    with a message in the panel (and the old value kept), never clamped silently.

    ``value`` reads the slider; setting ``value`` (or the text box) goes through the same check."""

    def __init__(self, rng: ControlRange, value, css: str, on_refuse: Callable[[str], None], model: str,
                 label_width: str = "104px", slider_width: str = "150px", text_width: str = "78px"):
        import ipywidgets as W

        self.rng, self.model, self._on_refuse = rng, model, on_refuse
        msg = rng.refuse(value, model)
        if msg:
            raise ValueError(msg.replace(" (kept {kept})", "") + " (initial settings)")
        kw = dict(readout=False, continuous_update=True, layout=W.Layout(width=slider_width))
        if rng.log:
            self.slider = W.FloatLogSlider(value=value, base=10, min=math.log10(rng.lo), max=math.log10(rng.hi),
                                           step=rng.step, **kw)
        elif rng.integer:
            self.slider = W.IntSlider(value=int(value), min=int(rng.lo), max=int(rng.hi), step=int(rng.step), **kw)
        else:
            self.slider = W.FloatSlider(value=value, min=rng.lo, max=rng.hi, step=rng.step, **kw)
        T = W.IntText if rng.integer else W.FloatText
        self.text = T(value=self._round(value), layout=W.Layout(width=text_width))
        self.text.add_class("ebca-number-text")
        self.label = W.Label(rng.name, layout=W.Layout(width=label_width))
        self.label.add_class("ebca-number-label")
        self.box = W.HBox([self.label, self.slider, self.text], layout=W.Layout(margin="0 8px 0 0"))
        self.box.add_class(css)
        self.slider.observe(self._from_slider, names="value")
        self.text.observe(self._from_text, names="value")

    def _round(self, v):
        return int(v) if self.rng.integer else round(float(v), self.rng.decimals + 2)

    def _from_slider(self, ch) -> None:
        if self.text.value != self._round(ch["new"]):
            self.text.value = self._round(ch["new"])

    def _from_text(self, ch) -> None:
        v = ch["new"]
        msg = self.rng.refuse(v, self.model)
        if msg:
            self.text.value = self._round(self.slider.value)  # the old value stays, visibly
            self._on_refuse(msg.format(kept=self.rng.fmt(self.slider.value)))
            return
        if self.slider.value != v:
            self.slider.value = v

    @property
    def value(self):
        return self.slider.value

    @value.setter
    def value(self, v) -> None:
        self.text.value = v  # the same check as typing

    def observe(self, fn, names="value"):
        self.slider.observe(fn, names=names)


class EnergyPanel:
    """ipywidgets panel around :func:`sample_comparison`.

    Args:
        pipe: a pipeline, or None to load ``model`` on first use (GPU when available, else CPU).
        model: a name for :func:`ebca_viz.models.load_pipeline` (``"auto"``: shapes-world if shipped,
            else tiny); it also picks the slider ranges (:meth:`ControlRanges.for_model`).
        settings: initial :class:`PanelSettings` (default: the model's regime, steps ``pick(25, 4)``);
            a value outside the ranges is refused (ValueError).
        n_edits: how many editorial prompt rows to offer.

    Layout (fits a default JupyterLab notebook, ~860 px): prompt, the prompt's tokens as chips
    (click one to up-weight it), seed / steps / CFG, one method selector, the method's settings,
    Sample + progress + status, then the result: vanilla | energy | difference image, each with the
    detector's verdict on shapes world, the posterior energy per layer of both runs, and (on
    demand) the energy per step and the attention maps. While a run is in progress, after an
    error, or once a setting changed, the previous result is greyed out and labelled *stale*.
    Warnings raised while sampling are collected under "notes" in the panel instead of the
    notebook's output area.
    """

    def __init__(self, pipe=None, model: str = "auto", settings: Optional[PanelSettings] = None,
                 device: Optional[str] = None, n_edits: int = 2, cache: Optional[VanillaCache] = None):
        from .viz import default_device, pick

        if model == "auto":
            from .demo import default_model

            model = default_model()
        self.model = model
        self.device = device or (str(pipe.device) if pipe is not None and hasattr(pipe, "device") else default_device())
        self.pipe = pipe
        self.cache = cache or VanillaCache()
        self.ranges = ControlRanges.for_model(model)
        from .shapes.regime import regime_for

        self.regime = regime_for(model)
        self.settings = settings or PanelSettings.for_model(model, steps=pick(25, 4))
        self.n_edits = n_edits
        self.last: Optional[Comparison] = None
        self.last_error: Optional[BaseException] = None
        self.runs = 0
        self.notes: list = []  # warnings caught while sampling (shown in the panel)
        self.progress_updates = 0  # progress-bar updates of the last run
        self.state = "empty"  # "empty" | "running" | "fresh" | "stale"
        self._running = False
        self.token_weights: dict = {}
        self._building = True
        self._build()
        self._building = False

    # -- widgets --------------------------------------------------------------------------------
    def _build(self) -> None:
        import ipywidgets as W

        s, R = self.settings, self.ranges

        def cls(w, c):
            w.add_class(c)
            return w

        def num(rng, value, css, **kw):
            return NumberControl(rng, value, css, self._refuse, self.model, **kw)

        self.notice = cls(W.HTML(value=""), "ebca-notice")
        self.w_prompt = cls(W.Text(value=s.prompt, continuous_update=False, layout=W.Layout(width="600px")), "ebca-prompt")
        self.w_seed = num(R.seed, s.seed, "ebca-seed")
        self.w_steps = num(R.steps, s.steps, "ebca-steps")
        self.w_cfg = num(R.guidance_scale, s.guidance_scale, "ebca-cfg")
        self.w_method = cls(W.ToggleButtons(options=[("EBCA (EBCU + EBCQ)", "ebca"), ("SEG", "seg")], value=s.method,
                                            style={"button_width": "auto"}), "ebca-method")
        self.w_ga = num(R.gamma_attn, s.gamma_attn, "ebca-gamma-attn")
        self.w_gn = num(R.gamma_norm, s.gamma_norm, "ebca-gamma-norm")
        ti, tw = parse_token_weights(s.token_weights)
        self.token_weights = dict(zip(ti, tw))
        self.w_upweight = num(R.upweight, tw[0] if tw else self.regime.upweight, "ebca-upweight")
        self.chip_box = cls(W.HBox(layout=W.Layout(flex_flow="row wrap", width="760px")), "ebca-chips")
        self.token_summary = cls(W.HTML(value=""), "ebca-token-summary")
        self.w_edits = []
        rows = []
        for i in range(self.n_edits):
            e = s.edits[i] if i < len(s.edits) else EditSpec()
            ws = dict(
                prompt=W.Text(value=e.prompt, placeholder=f"edit prompt {i + 1} (empty: off)", layout=W.Layout(width="300px")),
                direction=W.ToggleButtons(options=[("and (+)", 1), ("not (-)", -1)], value=e.direction,
                                          style={"button_width": "72px"}),
            )
            for k, w in ws.items():
                w.add_class(f"ebca-edit{i}-{k}")
            ws["alpha"] = num(R.edit_alpha, e.alpha, f"ebca-edit{i}-alpha", label_width="44px", slider_width="110px")
            ws["start"] = num(R.edit_start, e.start, f"ebca-edit{i}-start", label_width="40px", slider_width="100px")
            ws["gamma"] = num(R.edit_gamma, e.gamma_attn, f"ebca-edit{i}-gamma", label_width="80px", slider_width="100px")
            self.w_edits.append(ws)
            rows.append(W.VBox([
                W.HBox([W.Label(f"edit {i + 1}", layout=W.Layout(width="60px")), ws["prompt"], ws["direction"]]),
                W.HBox([W.Label("", layout=W.Layout(width="60px")), ws["alpha"].box, ws["start"].box, ws["gamma"].box]),
            ], layout=W.Layout(margin="0 0 4px 0")))
        self.w_sigma = num(R.seg_sigma, min(s.seg_sigma, R.seg_sigma.hi) if math.isfinite(s.seg_sigma) else R.seg_sigma.hi,
                           "ebca-seg-sigma")
        self.w_sigma_inf = cls(W.Checkbox(value=not math.isfinite(s.seg_sigma), description="sigma = inf (spatial mean)",
                                          indent=False, layout=W.Layout(width="auto")), "ebca-seg-inf")
        self.w_seg_scale = num(R.seg_scale, s.seg_scale, "ebca-seg-scale")
        self.w_sigma.slider.disabled = self.w_sigma.text.disabled = self.w_sigma_inf.value
        self.w_sigma_inf.observe(lambda ch: [setattr(w, "disabled", ch["new"]) for w in (self.w_sigma.slider, self.w_sigma.text)],
                                 names="value")
        self.button = cls(W.Button(description="Sample", button_style="primary", icon="play",
                                   tooltip="sample vanilla and energy-based from the same seed"), "ebca-sample")
        self.progress = cls(W.IntProgress(value=0, min=0, max=1, bar_style="info", layout=W.Layout(width="180px")),
                            "ebca-progress")
        self.status = cls(W.HTML(value=f"<i>model {html.escape(self.model)} on {self.device}: press Sample</i>"), "ebca-status")
        self.error = cls(W.HTML(value=""), "ebca-error")
        self.notes_box = cls(W.HTML(value=""), "ebca-notes")

        # the result
        ph = lambda t: placeholder_png(IMAGE_PX, IMAGE_PX, t)  # noqa: E731
        img = lambda c, t: cls(W.Image(value=ph(t), format="png", layout=W.Layout(width=f"{IMAGE_PX}px")), c)  # noqa: E731
        self.img_vanilla = img("ebca-image-vanilla", "vanilla\n\npress Sample")
        self.img_energy = img("ebca-image-energy", "energy\n\npress Sample")
        self.img_diff = img("ebca-image-diff", "difference\n\npress Sample")
        self.lbl_vanilla = W.HTML("<b>vanilla</b>")
        self.lbl_energy = W.HTML("<b>energy</b>")
        self.lbl_diff = W.HTML("<b>|energy - vanilla|</b>")
        col = lambda: W.Layout(width=f"{IMAGE_PX + 20}px")  # noqa: E731
        self.verdict_vanilla = cls(W.HTML(value="", layout=col()), "ebca-verdict-vanilla")
        self.verdict_energy = cls(W.HTML(value="", layout=col()), "ebca-verdict-energy")
        self.diff_caption = cls(W.HTML(value="", layout=col()), "ebca-diff-caption")
        self.img_layers = cls(W.Image(value=placeholder_png(560, 225, "posterior energy per layer: press Sample"),
                                      format="png", layout=W.Layout(width="560px")), "ebca-layer-energy")
        self.img_plot = cls(W.Image(value=placeholder_png(560, 60, "open to draw after a run"), format="png",
                                    layout=W.Layout(max_width="820px")), "ebca-plot")
        self.img_maps = cls(W.Image(value=placeholder_png(560, 60, "open to draw after a run"), format="png",
                                    layout=W.Layout(max_width="820px")), "ebca-maps")
        self.more = cls(W.Accordion(children=[self.img_plot, self.img_maps], selected_index=None), "ebca-more")
        self.more.set_title(0, "energy per step (descent)")
        self.more.set_title(1, "attention maps per token")
        self.more.observe(lambda ch: self._draw_more(), names="selected_index")
        self.stale_label = cls(W.HTML(value="", layout=W.Layout(display="none")), "ebca-stale-label")
        self.run_caption = cls(W.HTML(value=""), "ebca-run-caption")
        self.results = cls(W.VBox([
            self.stale_label,
            self.run_caption,
            W.HBox([W.VBox([self.lbl_vanilla, self.img_vanilla, self.verdict_vanilla], layout=col()),
                    W.VBox([self.lbl_energy, self.img_energy, self.verdict_energy], layout=col()),
                    W.VBox([self.lbl_diff, self.img_diff, self.diff_caption], layout=col())]),
            self.img_layers,
            self.more,
        ]), "ebca-results")
        self.button.on_click(lambda _b: self.sample())

        ebca_box = W.VBox([
            W.HBox([self.w_ga.box, self.w_gn.box]),
            W.HTML("<b>token up-weights</b>: click a word of the prompt (its index is what <code>token_indices</code> "
                   "holds; 0 = start-of-text)"),
            self.chip_box,
            W.HBox([self.w_upweight.box, self.token_summary]),
            W.HTML("<b>EBCQ editorial prompts</b>"),
            *rows])
        seg_box = W.VBox([W.HBox([self.w_sigma.box, self.w_sigma_inf]), self.w_seg_scale.box])
        self.method_stack = W.Stack(children=[ebca_box, seg_box], selected_index=METHODS.index(s.method))
        self.w_method.observe(lambda ch: setattr(self.method_stack, "selected_index", METHODS.index(ch["new"])),
                              names="value")
        self.w_prompt.observe(lambda ch: self._rebuild_chips(), names="value")
        self.w_upweight.observe(self._on_upweight)
        self._rebuild_chips()
        # any setting changed after a run: the result on screen is no longer this setting's
        for w in (self.w_prompt, self.w_method, self.w_sigma_inf):
            w.observe(self._settings_changed, names="value")
        for c in (self.w_seed, self.w_steps, self.w_cfg, self.w_ga, self.w_gn, self.w_upweight, self.w_sigma, self.w_seg_scale):
            c.observe(self._settings_changed)
        for ws in self.w_edits:
            for k, w in ws.items():
                w.observe(self._settings_changed, names="value")
        self.widget = W.VBox([
            W.HTML(PANEL_CSS),
            W.HBox([W.Label("prompt", layout=W.Layout(width="104px")), self.w_prompt]),
            W.HBox([self.w_seed.box, self.w_steps.box]),
            W.HBox([self.w_cfg.box, W.Label("method", layout=W.Layout(width="56px")), self.w_method]),
            self.method_stack,
            self.notice,
            W.HBox([self.button, self.progress, self.status], layout=W.Layout(align_items="center")),
            self.error,
            self.results,
            self.notes_box,
        ], layout=W.Layout(max_width="860px"))
        self.widget.add_class("ebca-panel")

    # -- tokens ---------------------------------------------------------------------------------
    def _tokenizer(self):
        if self.pipe is not None and getattr(self.pipe, "tokenizer", None) is not None:
            return self.pipe.tokenizer
        if self.regime.name in ("shapes-world", "tiny"):  # these ship their tokenizer
            from .models.tokenizer import load_tokenizer

            return load_tokenizer()
        return None

    def prompt_tokens(self) -> list:
        """The prompt's tokens as the text encoder sees them: ``["<sot>", "a", "red", ..., "<eot>"]``
        (position = the index ``token_indices`` uses); [] before the tokenizer is known."""
        from .viz import token_labels

        tok = self._tokenizer()
        return [] if tok is None else token_labels(tok, self.w_prompt.value, with_index=False)

    def _chip_text(self, i: int, word: str) -> str:
        w = self.token_weights.get(i)
        return f"{i} {word}" + ("" if w is None else f"  x{w:g}")

    def _rebuild_chips(self) -> None:
        import ipywidgets as W

        words = self.prompt_tokens()
        self.chips = []
        if not words:
            self.chip_box.children = [W.HTML("<i>the prompt's tokens and their indices appear once the model is "
                                             "loaded (press Sample)</i>")]
            self._update_token_summary()
            return
        last = len(words) - 1
        gone = sorted(i for i in self.token_weights if not 1 <= i < last)
        for i in gone:
            del self.token_weights[i]
        if gone and not self._building:
            self._refuse(f"token {', '.join(map(str, gone))} is no longer a word of the prompt: its up-weight was removed")
        for i, word in enumerate(words):
            special = i == 0 or i == last
            b = W.ToggleButton(value=i in self.token_weights, description=self._chip_text(i, word),
                               disabled=special, button_style="info" if i in self.token_weights else "",
                               tooltip=("start/end of text: not a word, cannot be up-weighted" if special
                                        else f"token_indices {i}: click to up-weight '{word}'"),
                               layout=W.Layout(width="auto", margin="1px 3px"))
            b.add_class("ebca-chip")
            b.add_class(f"ebca-chip-{i}")
            b.observe(lambda ch, i=i, word=word: self._on_chip(i, word, ch["new"]), names="value")
            self.chips.append(b)
        self.chip_box.children = self.chips
        self._update_token_summary()

    def _on_chip(self, i: int, word: str, on: bool) -> None:
        if on:
            self.token_weights[i] = float(self.w_upweight.value)
        else:
            self.token_weights.pop(i, None)
        c = self.chips[i]
        c.description = self._chip_text(i, word)
        c.button_style = "info" if on else ""
        self._update_token_summary()
        self._settings_changed(None)

    def _on_upweight(self, ch) -> None:
        words = self.prompt_tokens()
        for i in list(self.token_weights):
            self.token_weights[i] = float(ch["new"])
            if i < len(self.chips):
                self.chips[i].description = self._chip_text(i, words[i])
        self._update_token_summary()

    def _update_token_summary(self) -> None:
        if not self.token_weights:
            self.token_summary.value = "<span style='color:#666'>no token up-weighted</span>"
            return
        ti = sorted(self.token_weights)
        self.token_summary.value = (f"<code>token_indices={ti}, token_upweight="
                                    f"{[round(self.token_weights[i], 3) for i in ti]}</code>")

    # -- state ----------------------------------------------------------------------------------
    def _refuse(self, msg: str) -> None:
        self.notice.value = f"<div>&#9888; {html.escape(msg)}</div>"

    def _set_state(self, state: str, why: str = "") -> None:
        self.state = state
        if state in ("stale", "running") and self.last is not None:
            self.results.add_class("ebca-stale")
            self.stale_label.value = f"<b>stale</b>: {html.escape(why)}"
            self.stale_label.layout.display = None
        else:
            self.results.remove_class("ebca-stale")
            self.stale_label.value = ""
            self.stale_label.layout.display = "none"

    def _settings_changed(self, _ch) -> None:
        if self._building or self._running or self.last is None:
            return
        self._set_state("stale", f"a setting changed since run {self.runs}: press Sample")

    def read_settings(self) -> PanelSettings:
        """The controls' current values as :class:`PanelSettings`."""
        edits = [EditSpec(prompt=w["prompt"].value, alpha=w["alpha"].value, direction=w["direction"].value,
                          start=w["start"].value, gamma_attn=w["gamma"].value, gamma_norm=w["gamma"].value)
                 for w in self.w_edits]
        return PanelSettings(
            prompt=self.w_prompt.value, seed=int(self.w_seed.value), steps=int(self.w_steps.value),
            guidance_scale=float(self.w_cfg.value), method=self.w_method.value, gamma_attn=float(self.w_ga.value),
            gamma_norm=float(self.w_gn.value), token_weights=dict(sorted(self.token_weights.items())), edits=edits,
            seg_sigma=math.inf if self.w_sigma_inf.value else float(self.w_sigma.value),
            seg_scale=float(self.w_seg_scale.value), seg_layers=self.settings.seg_layers,
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
        self.progress_updates += 1

    def _ensure_pipe(self):
        if self.pipe is None:
            from .models import load_pipeline

            self.status.value = f"<i>loading {html.escape(self.model)} on {self.device} ...</i>"
            self.pipe = load_pipeline(self.model, device=self.device)
            self.pipe.set_progress_bar_config(disable=True)
            self._rebuild_chips()
        return self.pipe

    @staticmethod
    def describe(s: PanelSettings) -> str:
        """The settings a run used, in one line (shown with the result)."""
        out = [f"seed {s.seed}", f"{s.steps} steps", f"CFG {s.guidance_scale:g}"]
        if s.method == "ebca":
            out.append(f"EBCA gamma_attn {s.gamma_attn:g}, gamma_norm {s.gamma_norm:g}")
            ti, tw = parse_token_weights(s.token_weights)
            if ti:
                out.append("up-weights " + ", ".join(f"{i}x{w:g}" for i, w in zip(ti, tw)))
            for e in s.edits:
                if e.prompt.strip():
                    out.append(f"{'AND' if e.direction > 0 else 'NOT'} '{e.prompt}' (alpha {e.alpha:g}, start {e.start:g})")
        else:
            out.append(f"SEG sigma {'inf' if not math.isfinite(s.seg_sigma) else f'{s.seg_sigma:.3g}'}, scale {s.seg_scale:g}")
        return "; ".join(out)

    def sample(self) -> Optional[Comparison]:
        """What the button does: read the controls, run :func:`sample_comparison`, show the images,
        the verdicts and the plots. Any error is shown in the panel (and kept in ``last_error``),
        never raised; warnings go to the panel's notes, not the notebook's output area."""
        import warnings

        self.error.value = ""
        self.notice.value = ""
        self.last_error = None
        self.button.disabled = True
        self.progress.value = 0
        self.progress.bar_style = "info"
        self.progress_updates = 0
        self._running = True
        self._set_state("running", f"run {self.runs + 1} in progress; this is run {self.runs}")
        if self.last is None:  # nothing to grey out yet: the placeholders say what is happening
            self._placeholders("sampling ...")
        pipe = self.pipe
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            try:
                s = self.read_settings().check()
                self.ranges.check(s)
                pipe = self._ensure_pipe()
                self.status.value = f"<i>sampling {s.steps} steps ({s.method}) on {self.device} ...</i>"
                pbar = getattr(pipe, "_progress_bar_config", None)
                pipe.set_progress_bar_config(disable=True)  # no tqdm bars in the cell's output
                try:
                    res = sample_comparison(pipe, s, model=self.model, cache=self.cache, on_step=self._on_step)
                finally:
                    if pbar is not None:
                        pipe._progress_bar_config = pbar
                self._show(res)
                self.runs += 1
                self.last = res
                self.progress.bar_style = "success"
                self._set_state("fresh")
                self.status.value = (  # last: "run N:" in the status means the result is complete
                    f"run {self.runs}: vanilla {'(cached)' if res.vanilla_cached else f'{res.vanilla.seconds:.1f}s'}, "
                    f"{s.method} {res.energy.seconds:.1f}s on {res.device}")
                return res
            except Exception as e:  # shown in the panel, never a dead kernel
                self.last_error = e
                self.progress.bar_style = "danger"
                self.error.value = (f"<div style='color:#b00020'><b>Error</b>: {html.escape(type(e).__name__)}: "
                                    f"{html.escape(str(e))}</div>")
                self.status.value = "<i>failed: see the error below</i>"
                self._set_state("stale", f"the last run failed; this is run {self.runs}")
                if self.last is None:
                    self._placeholders("failed:\nsee the error above")
                return None
            finally:
                self._running = False
                self.button.disabled = False
                if pipe is not None:  # belt and braces: nothing of ours stays installed
                    ctl = find_controller(pipe.unet)
                    if ctl is not None:
                        ctl.remove()
                self.notes = [f"{w.category.__name__}: {w.message}" for w in caught]
                self.notes_box.value = "" if not self.notes else (
                    f"<details><summary style='color:#666'>notes ({len(self.notes)})</summary><pre style='font-size:11px'>"
                    + html.escape("\n".join(self.notes)) + "</pre></details>")

    def _placeholders(self, text: str) -> None:
        for w, name in ((self.img_vanilla, "vanilla"), (self.img_energy, "energy"), (self.img_diff, "difference")):
            w.value = placeholder_png(IMAGE_PX, IMAGE_PX, f"{name}\n\n{text}")

    def _show(self, res: Comparison) -> None:
        s = res.settings
        v, e = res.vanilla.image, res.energy.image
        self.img_vanilla.value = _png(v)
        self.img_energy.value = _png(e)
        self.lbl_energy.value = f"<b>{res.label}</b>"
        self.lbl_diff.value = f"<b>|{res.label} - vanilla|</b>"
        d, mean, top = difference_image(v, e, IMAGE_PX)
        self.img_diff.value = _png(d)
        self.diff_caption.value = f"mean {mean:.1f}/255 per pixel<br>brightest pixel: {top:.0f}/255"
        if self.regime.name == "shapes-world":
            self.verdict_vanilla.value = verdict_html(detector_verdict(v, s.prompt))
            self.verdict_energy.value = verdict_html(detector_verdict(e, s.prompt))
        elif self.regime.name == "tiny":  # random weights draw noise: a verdict on it would mean nothing
            self.verdict_vanilla.value = self.verdict_energy.value = \
                "<span style='color:#666'>detector: not run (the random-weight 'tiny' test model draws noise)</span>"
        else:
            self.verdict_vanilla.value = self.verdict_energy.value = \
                "<span style='color:#666'>detector: shapes world only</span>"
        from .viz import figure_png

        self.img_layers.value = figure_png(plot_layer_energies(res.vanilla.trace, res.energy.trace, res.label,
                                                               updates=s.method == "ebca"))
        self.run_caption.value = f"<b>run {self.runs + 1}</b>: {html.escape(self.describe(s), quote=False)}"
        self._drawn_more = {}
        self._draw_more(res)

    def _draw_more(self, res: Optional[Comparison] = None) -> None:
        """Draw the accordion's open figure for the current result (once per result)."""
        from .viz import figure_png

        res = res or self.last
        i = self.more.selected_index
        if res is None or i is None or i in getattr(self, "_drawn_more", {}):
            return
        fig = res.energy_figure() if i == 0 else res.maps_figure()
        (self.img_plot if i == 0 else self.img_maps).value = figure_png(fig)
        self._drawn_more[i] = True


__all__ = ["PanelSettings", "EditSpec", "parse_token_weights", "Comparison", "RunResult", "VanillaCache",
           "sample_comparison", "EnergyPanel", "METHODS", "ControlRange", "ControlRanges", "NumberControl",
           "detector_verdict", "verdict_html", "difference_image", "plot_layer_energies", "placeholder_png"]
