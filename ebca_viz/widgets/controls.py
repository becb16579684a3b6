"""The panel's settings and controls: :class:`PanelSettings` (one comparison), :class:`EditSpec` (one EBCQ
editorial prompt), the slider ranges in the loaded model's regime (:class:`ControlRanges`), the token
weights parser and :class:`NumberControl` (slider + text box that refuses, never clamps)."""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Callable, Optional

from ..config import MIN_EBCQ_DENOMINATOR, EBCAConfig, Edit, SEGConfig
from ..errors import InvalidSetting, InvalidType

METHODS = ("ebca", "seg")
DEFAULT_PROMPT = "a red circle and a blue square"
#: the shapes worlds' negation (alpha, start) in the panel: chosen by ``benchmarks/panel_negation.py``
#: (``docs/panel_negation.json`` results.chosen) with its written rule on fresh tuning seeds (130000+) and
#: the panel's own sampling, EBCU on at the regime's gammas: the blue square of "a red circle and a blue
#: square" gone on 97 % of those seeds, the rest of the scene kept on 53 %. (The EBCQ benchmark's choice,
#: 0.15 from step 0, was made with EBCQ alone; with EBCU on it leaves the square in most images.)
SHAPES_NEGATION = (0.6, 0.4)


@dataclass(frozen=True)
class EditDefaults:
    """Where an EBCQ edit row starts, per direction: ``(alpha, start)`` for "and" (+1) and "not" (-1).

    "and": the regime's ``(edit_alpha, edit_start)``; "not": the shapes worlds (and ``tiny``)
    :data:`SHAPES_NEGATION`, real SD the paper's ``(negation_alpha, edit_start)`` = (0.65, 0.2). Every
    default keeps the EBCQ denominator ``1 + sigma * alpha`` of a single edit >= 0.05."""

    conj: tuple
    neg: tuple

    @classmethod
    def for_model(cls, model: str) -> "EditDefaults":
        from ..shapes.regime import regime_for

        r = regime_for(model)
        neg = SHAPES_NEGATION if r.name in ("shapes-world", "neglect-world", "tiny") else (r.negation_alpha, r.edit_start)
        return cls(conj=(float(r.edit_alpha), float(r.edit_start)), neg=(float(neg[0]), float(neg[1])))

    def of(self, direction: int) -> tuple:
        return self.neg if direction < 0 else self.conj

@dataclass
class EditSpec:
    """One EBCQ editorial prompt as the panel holds it (see :class:`ebca_viz.Edit`)."""

    prompt: str = ""
    alpha: float = 1.0
    direction: int = 1  # +1 conjunction, -1 negation
    start: float = 0.2
    gamma_attn: float = 0.0
    gamma_norm: float = 0.0

    @classmethod
    def for_model(cls, model: str, direction: int = 1, prompt: str = "") -> "EditSpec":
        """An edit row at the model's defaults for ``direction`` (:class:`EditDefaults`)."""
        alpha, start = EditDefaults.for_model(model).of(direction)
        return cls(prompt=prompt, alpha=alpha, direction=direction, start=start)

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
        from ..shapes.regime import regime_for

        r = regime_for(model)
        kw = dict(steps=r.steps, guidance_scale=r.guidance, gamma_attn=r.gamma_attn, gamma_norm=r.gamma_norm,
                  seg_sigma=r.seg_sigma, seg_scale=r.seg_scale, seg_layers=tuple(r.seg_layers))
        kw.update(overrides)
        return cls(**kw)

    def check(self) -> "PanelSettings":
        if not isinstance(self.prompt, str) or not self.prompt.strip():
            raise InvalidSetting("prompt is empty: type a prompt")
        for nm in ("seed", "steps"):
            v = getattr(self, nm)
            if isinstance(v, bool) or not isinstance(v, int):
                raise InvalidType(f"{nm} must be an integer, got {v!r}")
        if self.seed < 0:
            raise InvalidSetting(f"seed must be >= 0, got {self.seed}")
        if not 1 <= self.steps <= 1000:
            raise InvalidSetting(f"steps must be between 1 and 1000, got {self.steps}")
        if self.method not in METHODS:
            raise InvalidSetting(f"method must be one of {METHODS}, got {self.method!r}")
        if not isinstance(self.guidance_scale, (int, float)) or not math.isfinite(self.guidance_scale):
            raise InvalidSetting(f"guidance_scale must be a finite number, got {self.guidance_scale!r}")
        return self

    def ebca_config(self) -> EBCAConfig:
        ti, tw = parse_token_weights(self.token_weights)
        edits = [e.to_edit() for e in self.edits if e.prompt.strip()]
        cfg = EBCAConfig(gamma_attn=self.gamma_attn, gamma_norm=self.gamma_norm,
                         token_indices=ti or None, token_upweight=tw or None, edits=edits)
        den = edit_denominator(self.edits)
        if den < MIN_EBCQ_DENOMINATOR:  # zero or negative: the composition divides by ~0 or flips sign
            raise InvalidSetting(f"edits: the EBCQ denominator 1 + sum(direction * alpha) = {den:.3g} must be >= "
                             f"{MIN_EBCQ_DENOMINATOR}; lower a 'not' edit's alpha (or raise an 'and' edit's)")
        cfg.validate().check_denominators(self.steps, self.steps)  # a zero EBCQ denominator: say so now
        return cfg

    def seg_config(self) -> SEGConfig:
        return SEGConfig(scale=self.seg_scale, sigma=self.seg_sigma, layers=list(self.seg_layers)).validate()


def edit_denominator(edits) -> float:
    """The smallest EBCQ denominator ``1 + sum_s sigma_s alpha_s`` the edits can reach: every edit with a
    prompt counted as active (they all are at the last steps whatever their start)."""
    return 1.0 + sum(float(e.direction) * float(e.alpha) for e in edits if e.prompt.strip())


def safe_alpha(edits, i: int, step: float = 0.05) -> Optional[float]:
    """None when the denominator of ``edits`` is >= ``MIN_EBCQ_DENOMINATOR`` (or edit ``i`` is off), else the
    alpha of edit ``i`` nearest to its own (on the ``step`` grid, >= 0) that makes it so: the largest
    for a negation, the smallest for a conjunction; None also when no alpha of edit ``i`` can."""
    e = edits[i]
    if not e.prompt.strip() or edit_denominator(edits) >= MIN_EBCQ_DENOMINATOR:
        return None
    others = edit_denominator([x for j, x in enumerate(edits) if j != i])  # 1 + the other edits
    dec = _decimals(step) + 2
    if e.direction < 0:  # others - a >= MIN  ->  a <= others - MIN
        n = math.floor((others - MIN_EBCQ_DENOMINATOR) / step + 1e-6)
        while n > 0 and others - round(n * step, dec) < MIN_EBCQ_DENOMINATOR:
            n -= 1
        a = round(n * step, dec)
        return a if n >= 0 and others - a >= MIN_EBCQ_DENOMINATOR else None
    n = max(0, math.ceil((MIN_EBCQ_DENOMINATOR - others) / step - 1e-6))  # others + a >= MIN
    while others + round(n * step, dec) < MIN_EBCQ_DENOMINATOR:
        n += 1
    return round(n * step, dec)


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
        from ..shapes.regime import regime_for

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
                raise InvalidSetting(msg.replace(" (kept {kept})", ""))


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
                raise InvalidSetting(f"token weights: {part!r} is not index:weight (e.g. '5:2.5')")
            i, w = part.split(":", 1)
            try:
                items.append((int(i), float(w)))
            except ValueError:
                raise InvalidSetting(f"token weights: {part!r} is not index:weight (e.g. '5:2.5')") from None
    else:
        raise InvalidType(f"token weights must be a string like '5:2.5' or a dict, got {type(spec).__name__}")
    return [int(i) for i, _ in items], [float(w) for _, w in items]


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
            raise InvalidSetting(msg.replace(" (kept {kept})", "") + " (initial settings)")
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
