"""The panel's widgets and their arrangement (:class:`PanelLayout`, a base of
:class:`ebca_viz.widgets.EnergyPanel`): controls, token chips, result area, CSS."""
from __future__ import annotations

import html
import math

from ..config import MIN_EBCQ_DENOMINATOR
from .controls import (METHODS, EditDefaults, EditSpec, NumberControl, edit_denominator, parse_token_weights,
                       safe_alpha)
from .rendering import IMAGE_PX, placeholder_png

#: displayed width of the three images in presentation mode (nearest-neighbour: ``image-rendering: pixelated``)
PRESENT_PX = 288
_IMGS = ("vanilla", "energy", "diff")


def _sel(scope: str) -> str:
    return ", ".join(f"{scope} img.ebca-image-{k}" for k in _IMGS)


# Rows wrap (flex-wrap) and widths are max-widths, so that nothing scrolls sideways inside the panel in a
# narrow output area (1280 px window with the file browser open at 150 % zoom: ~450 px).
# Presentation mode (class ebca-present on the panel): images PRESENT_PX wide, text >= 16 px, the
# controls marked ebca-expert hidden.
PANEL_CSS = f"""<style>
.ebca-panel {{ max-width: 100%; box-sizing: border-box; }}
.ebca-panel .widget-box, .ebca-panel .widget-hbox, .ebca-panel .widget-vbox {{ max-width: 100%; }}
.ebca-panel img {{ max-width: calc(100% - 4px) !important; height: auto; }}  /* 2 px margins */
{_sel('.ebca-panel')} {{ image-rendering: pixelated; }}
.ebca-results.ebca-stale img {{ opacity: 0.35; filter: grayscale(100%); }}
.ebca-stale-label {{ background: #fff3cd; color: #664d03; border: 1px solid #e0c060; padding: 2px 8px; }}
.ebca-notice {{ color: #664d03; }}
.ebca-chip button, button.ebca-chip {{ min-width: 0; padding: 0 8px; }}
.ebca-panel .ebca-col {{ max-width: 100%; }}
.ebca-present .ebca-expert {{ display: none !important; }}
.ebca-present, .ebca-present * {{ font-size: 16px !important; line-height: 1.35 !important; }}
.ebca-present .widget-label {{ width: auto !important; min-width: 56px; padding-right: 6px; }}
.ebca-present .ebca-col {{ width: {PRESENT_PX + 12}px !important; }}
{_sel('.ebca-present')} {{ width: {PRESENT_PX}px !important; }}
.ebca-present .widget-button, .ebca-present .widget-toggle-button {{ height: auto; min-height: 32px; }}
</style>"""


class PanelLayout:
    """Builds the widgets of :class:`~ebca_viz.widgets.EnergyPanel`; the panel adds behaviour."""

    # -- widgets --------------------------------------------------------------------------------
    def _build(self) -> None:
        import ipywidgets as W

        s, R = self.settings, self.ranges

        def cls(w, c):
            w.add_class(c)
            return w

        def num(rng, value, css, **kw):
            return NumberControl(rng, value, css, self._refuse, self.model, **kw)

        def row(children, **kw):  # a row that wraps instead of scrolling sideways
            kw = dict(dict(flex_flow="row wrap", align_items="center", max_width="100%"), **kw)
            return W.HBox(children, layout=W.Layout(**kw))

        def expert(w):
            return cls(w, "ebca-expert")

        self.edit_defaults = EditDefaults.for_model(self.model)
        self._edit_guard = False

        self.notice = cls(W.HTML(value=""), "ebca-notice")
        self.w_prompt = cls(W.Text(value=s.prompt, continuous_update=False,
                                          layout=W.Layout(flex="1 1 260px", max_width="600px", min_width="0")), "ebca-prompt")
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
        self.chip_box = cls(W.HBox(layout=W.Layout(flex_flow="row wrap", max_width="100%")), "ebca-chips")
        self.token_summary = cls(W.HTML(value=""), "ebca-token-summary")
        self.w_edits = []
        rows = []
        for i in range(self.n_edits):
            e = s.edits[i] if i < len(s.edits) else EditSpec.for_model(self.model)
            ws = dict(
                prompt=W.Text(value=e.prompt, placeholder=f"edit prompt {i + 1} (empty: off)",
                              layout=W.Layout(flex="1 1 200px", max_width="300px", min_width="0")),
                direction=W.ToggleButtons(options=[("and (+)", 1), ("not (-)", -1)], value=e.direction,
                                          style={"button_width": "auto"}),
            )
            for k, w in ws.items():
                w.add_class(f"ebca-edit{i}-{k}")
            ws["alpha"] = num(R.edit_alpha, e.alpha, f"ebca-edit{i}-alpha", label_width="44px", slider_width="110px")
            ws["start"] = num(R.edit_start, e.start, f"ebca-edit{i}-start", label_width="40px", slider_width="100px")
            ws["gamma"] = num(R.edit_gamma, e.gamma_attn, f"ebca-edit{i}-gamma", label_width="80px", slider_width="100px")
            self.w_edits.append(ws)
            expert(ws["start"].box), expert(ws["gamma"].box)
            for k in ("direction", "alpha", "prompt"):
                (ws[k] if k != "alpha" else ws[k].slider).observe(lambda ch, i=i, k=k: self._on_edit(i, k, ch), names="value")
            rows.append(W.VBox([
                row([W.Label(f"edit {i + 1}", layout=W.Layout(width="60px")), ws["prompt"], ws["direction"]]),
                row([ws["alpha"].box, ws["start"].box, ws["gamma"].box], margin="0 0 0 60px"),
            ], layout=W.Layout(margin="0 0 4px 0", max_width="100%")))
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
        self.status = cls(W.HTML(value=f"<i>model {html.escape(self.model)} on {self.device}: press Sample</i>",
                                 layout=W.Layout(flex="1 1 200px", min_width="0")), "ebca-status")
        self.error = cls(W.HTML(value=""), "ebca-error")
        self.notes_box = expert(cls(W.HTML(value=""), "ebca-notes"))
        self.w_present = cls(W.ToggleButton(value=False, description="present", icon="expand",
                                            tooltip="presentation mode: large images and text, expert controls hidden",
                                            layout=W.Layout(width="auto")), "ebca-present-toggle")
        self.w_present.observe(lambda ch: self.set_present(ch["new"]), names="value")

        # the result
        ph = lambda t: placeholder_png(IMAGE_PX, IMAGE_PX, t)  # noqa: E731
        img = lambda c, t: cls(W.Image(value=ph(t), format="png", layout=W.Layout(width=f"{IMAGE_PX}px")), c)  # noqa: E731
        self.img_vanilla = img("ebca-image-vanilla", "vanilla\n\npress Sample")
        self.img_energy = img("ebca-image-energy", "energy\n\npress Sample")
        self.img_diff = img("ebca-image-diff", "difference\n\npress Sample")
        self.lbl_vanilla = W.HTML("<b>vanilla</b>")
        self.lbl_energy = W.HTML("<b>energy</b>")
        self.lbl_diff = W.HTML("<b>|energy - vanilla|</b>")
        col = lambda: W.Layout(width=f"{IMAGE_PX + 20}px", max_width="100%")  # noqa: E731
        self.verdict_vanilla = cls(W.HTML(value=""), "ebca-verdict-vanilla")
        self.verdict_energy = cls(W.HTML(value=""), "ebca-verdict-energy")
        self.diff_caption = cls(W.HTML(value=""), "ebca-diff-caption")
        self.img_layers = cls(W.Image(value=placeholder_png(560, 225, "posterior energy per layer: press Sample"),
                                      format="png", layout=W.Layout(width="560px")), "ebca-layer-energy")
        self.img_plot = cls(W.Image(value=placeholder_png(560, 60, "open to draw after a run"), format="png",
                                    layout=W.Layout()), "ebca-plot")
        self.img_maps = cls(W.Image(value=placeholder_png(560, 60, "open to draw after a run"), format="png",
                                    layout=W.Layout()), "ebca-maps")
        self.more = cls(W.Accordion(children=[self.img_plot, self.img_maps], selected_index=None), "ebca-more")
        self.more.set_title(0, "energy per step (descent)")
        self.more.set_title(1, "attention maps per token")
        self.more.observe(lambda ch: self._draw_more(), names="selected_index")
        self.stale_label = cls(W.HTML(value="", layout=W.Layout(display="none")), "ebca-stale-label")
        self.run_caption = cls(W.HTML(value=""), "ebca-run-caption")
        self.results = cls(W.VBox([
            self.stale_label,
            self.run_caption,
            row([cls(W.VBox([self.lbl_vanilla, self.img_vanilla, self.verdict_vanilla], layout=col()), "ebca-col"),
                 cls(W.VBox([self.lbl_energy, self.img_energy, self.verdict_energy], layout=col()), "ebca-col"),
                 cls(W.VBox([self.lbl_diff, self.img_diff, self.diff_caption], layout=col()), "ebca-col")],
                align_items="flex-start"),
            self.img_layers,
            self.more,
        ]), "ebca-results")
        self.button.on_click(lambda _b: self.sample())

        expert(self.w_gn.box), expert(self.token_summary)
        ebca_box = W.VBox([
            row([self.w_ga.box, self.w_gn.box]),
            W.HTML("<b>token up-weights</b>: click a word of the prompt<span class='ebca-expert'> (its index is what "
                   "<code>token_indices</code> holds; 0 = start-of-text)</span>"),
            self.chip_box,
            row([self.w_upweight.box, self.token_summary]),
            W.HTML("<b>EBCQ editorial prompts</b>"),
            *rows], layout=W.Layout(max_width="100%"))
        seg_box = W.VBox([expert(row([self.w_sigma.box, self.w_sigma_inf])), self.w_seg_scale.box],
                         layout=W.Layout(max_width="100%"))
        self.method_stack = W.Stack(children=[ebca_box, seg_box], selected_index=METHODS.index(s.method),
                                    layout=W.Layout(max_width="100%"))
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
        from .history import HistoryView  # the last runs, compare area, success rate

        self.history_view = HistoryView(self)
        expert(self.w_steps.box), expert(self.w_cfg.box)
        self.widget = W.VBox([
            W.HTML(PANEL_CSS),
            row([W.Label("prompt", layout=W.Layout(width="104px")), self.w_prompt]),
            row([self.w_seed.box, self.w_steps.box, self.w_cfg.box]),
            row([W.Label("method", layout=W.Layout(width="104px")), self.w_method]),
            self.method_stack,
            self.notice,
            row([self.button, self.progress, self.w_present, self.status]),
            self.error,
            self.results,
            self.history_view.widget,
            self.notes_box,
        ], layout=W.Layout(max_width="100%"))
        self.widget.add_class("ebca-panel")
        for i in range(self.n_edits):  # initial settings whose edits divide by ~0: clamped, with a message
            self._check_denominator(i)

    # -- presentation mode ----------------------------------------------------------------------
    def set_present(self, on: bool) -> None:
        """Presentation mode: the class ``ebca-present`` on the panel (CSS: images ``PRESENT_PX`` wide,
        nearest-neighbour; text 16 px; the ``ebca-expert`` controls hidden); off restores."""
        (self.widget.add_class if on else self.widget.remove_class)("ebca-present")
        if self.w_present.value != bool(on):
            self.w_present.value = bool(on)

    # -- EBCQ edit rows -------------------------------------------------------------------------
    def _edit_specs(self) -> list:
        return [EditSpec(prompt=w["prompt"].value, alpha=float(w["alpha"].value), direction=w["direction"].value,
                         start=float(w["start"].value)) for w in self.w_edits]

    def _on_edit(self, i: int, what: str, ch) -> None:
        """A direction switched while alpha (start) is still the old direction's default takes the new
        direction's default (:class:`EditDefaults`); then the denominator is checked (:meth:`_check_denominator`)."""
        if self._edit_guard:
            return
        self._edit_guard = True
        try:
            ws = self.w_edits[i]
            if what == "direction":
                old, new = self.edit_defaults.of(ch["old"]), self.edit_defaults.of(ch["new"])
                for k, o, n in (("alpha", old[0], new[0]), ("start", old[1], new[1])):
                    if abs(float(ws[k].value) - o) < 1e-9:
                        ws[k].value = n
            self._check_denominator(i)
        finally:
            self._edit_guard = False

    def _check_denominator(self, i: int) -> None:
        """EBCQ divides by ``1 + sum_s sigma_s alpha_s``: if the edits bring it under ``MIN_EBCQ_DENOMINATOR``,
        edit ``i``'s alpha is set to the nearest safe value (largest for "not") with a message in the notice area."""
        specs = self._edit_specs()
        den = edit_denominator(specs)
        if den >= MIN_EBCQ_DENOMINATOR or not specs[i].prompt.strip():
            return
        a = safe_alpha(specs, i, self.ranges.edit_alpha.step)
        how = "not" if specs[i].direction < 0 else "and"
        why = (f"edit {i + 1} ('{how}', alpha {specs[i].alpha:g}) makes the EBCQ denominator 1 + sum(direction x alpha) "
               f"= {den:.3g}, under {MIN_EBCQ_DENOMINATOR} (a division by ~0)")
        if a is None or a > self.ranges.edit_alpha.hi:
            self._refuse(f"{why}: refused; lower the other edits' 'not' alpha")
            return
        self.w_edits[i]["alpha"].value = a
        self._refuse(f"{why}: alpha set to {a:g}, the {'largest' if how == 'not' else 'smallest'} safe value")

    # -- tokens ---------------------------------------------------------------------------------
    def _tokenizer(self):
        if self.pipe is not None and getattr(self.pipe, "tokenizer", None) is not None:
            return self.pipe.tokenizer
        if self.regime.name in ("shapes-world", "neglect-world", "tiny"):  # these ship their tokenizer
            from ..models.tokenizer import load_tokenizer

            return load_tokenizer()
        return None

    def prompt_tokens(self) -> list:
        """The prompt's tokens as the text encoder sees them: ``["<sot>", "a", "red", ..., "<eot>"]``
        (position = the index ``token_indices`` uses); [] before the tokenizer is known."""
        from ..tokens import token_labels

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
