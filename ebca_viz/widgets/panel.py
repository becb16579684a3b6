"""The panel: :class:`EnergyPanel` wires the controls (:mod:`.layout`) to :func:`.runs.sample_comparison`
and shows the result (:mod:`.rendering`, :mod:`.verdicts`)."""
from __future__ import annotations

from ..shapes.regime import DETECTOR_WORLDS  # noqa: E402

import html
import math
from typing import Optional

from ..ebca import find_controller
from . import runs
from .controls import ControlRanges, EditSpec, PanelSettings, parse_token_weights
from .layout import PanelLayout
from .rendering import (IMAGE_PX, _png, difference_image, format_diff, layer_energy_png, placeholder_png,
                        plot_layer_energies)
from .runs import Comparison, VanillaCache
from .verdicts import detector_verdict, verdict_html

class EnergyPanel(PanelLayout):
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
        from ..util import default_device, pick

        if model == "auto":
            from ..demo import default_model

            model = default_model()
        self.model = model
        self.device = device or (str(pipe.device) if pipe is not None and hasattr(pipe, "device") else default_device())
        self.pipe = pipe
        self.cache = cache or VanillaCache()
        self.ranges = ControlRanges.for_model(model)
        from ..shapes.regime import regime_for

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
            from ..models import load_pipeline

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

        if self.history_view.rate_running:  # one pipeline, one run at a time
            self._refuse("a success rate is running: wait for it or press cancel")
            return None
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
                    res = runs.sample_comparison(pipe, s, model=self.model, cache=self.cache, on_step=self._on_step)
                finally:
                    if pbar is not None:
                        pipe._progress_bar_config = pbar
                self._show(res)
                self.runs += 1
                self.last = res
                self.history_view.add(res)
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
        d, mean, top = difference_image(v, e, IMAGE_PX)  # fixed scale 0..64/255 with its colourbar
        self.img_diff.value = _png(d)
        self.diff_caption.value = (f"<span class='ebca-diff-stats'>{format_diff(mean, top)}</span>" if top > 0 else
                                   "<span class='ebca-diff-stats'>identical images (max 0/255)</span>")
        if self.regime.name in DETECTOR_WORLDS:
            self.verdict_vanilla.value = verdict_html(detector_verdict(v, s.prompt))
            self.verdict_energy.value = verdict_html(detector_verdict(e, s.prompt))
        elif self.regime.name == "tiny":  # random weights draw noise: a verdict on it would mean nothing
            self.verdict_vanilla.value = self.verdict_energy.value = \
                "<span style='color:#666'>detector: not run (the random-weight 'tiny' test model draws noise)</span>"
        else:
            self.verdict_vanilla.value = self.verdict_energy.value = \
                "<span style='color:#666'>detector: shapes world only</span>"
        self.img_layers.value = layer_energy_png(plot_layer_energies(
            res.vanilla.trace, res.energy.trace, res.label, updates=s.method == "ebca",
            gammas=(s.gamma_attn, s.gamma_norm)))
        self.run_caption.value = f"<b>run {self.runs + 1}</b>: {html.escape(self.describe(s), quote=False)}"
        self._drawn_more = {}
        self._draw_more(res)

    def _draw_more(self, res: Optional[Comparison] = None) -> None:
        """Draw the accordion's open figure for the current result (once per result)."""
        from ..plots import figure_png

        res = res or self.last
        i = self.more.selected_index
        if res is None or i is None or i in getattr(self, "_drawn_more", {}):
            return
        fig = res.energy_figure() if i == 0 else res.maps_figure()
        (self.img_plot if i == 0 else self.img_maps).value = figure_png(fig)
        self._drawn_more[i] = True
