"""Runs side by side and a success rate: :class:`RunHistory` (the last runs, no widgets),
:func:`compare_energy_figure` and :func:`rate_figure` (figures, no widgets), and
:class:`HistoryView`, the panel's strip of thumbnails, compare area and success-rate box.

CSS hooks: ``ebca-history`` (the strip), ``ebca-history-item-<i>`` (i = position, 0 = oldest kept
run), ``ebca-history-compare-<i>`` (its button), ``ebca-compare`` (the compare area), ``ebca-rate``
(button), ``ebca-rate-n``, ``ebca-rate-progress``, ``ebca-rate-cancel``, ``ebca-rate-result``.
"""
from __future__ import annotations

from ..shapes.regime import DETECTOR_WORLDS  # noqa: E402

import html
import math
import threading
from collections import deque
from typing import Optional

from .controls import PanelSettings, parse_token_weights
from .runs import Comparison, RateUnavailable, SuccessRate, success_rate
from ..errors import InvalidSetting, InvalidType, NotFound

THUMB_PX = 80  # thumbnails in the strip
COMPARE_PX = 128  # images in the compare area
COLOURS = ("#1f77b4", "#d62728")  # run A, run B


class RunHistory:
    """The last ``maxlen`` runs (a bounded deque of :class:`Comparison`), oldest first, each with
    its run number (1, 2, ... in the order added); ``select(i)`` marks position ``i`` as the run to
    compare with the current (newest) one."""

    def __init__(self, maxlen: int = 6):
        if isinstance(maxlen, bool) or not isinstance(maxlen, int) or maxlen < 1:
            raise InvalidSetting(f"maxlen must be an integer >= 1, got {maxlen!r}")
        self.maxlen = maxlen
        self._runs: deque = deque(maxlen=maxlen)  # (number, Comparison)
        self.added = 0
        self.selected: Optional[int] = None  # run number of the selected run

    def add(self, comparison: Comparison) -> int:
        """Keep ``comparison`` (the oldest one drops out beyond ``maxlen``); returns its run number."""
        if not isinstance(comparison, Comparison):
            raise InvalidType.of("comparison", comparison, "pass the Comparison a panel run returns",
                                why="RunHistory holds Comparison objects")
        self.added += 1
        self._runs.append((self.added, comparison))
        if self.selected is not None and self.selected not in self.numbers():
            self.selected = None
        return self.added

    def items(self) -> list:
        """The kept comparisons, oldest first."""
        return [c for _, c in self._runs]

    def numbers(self) -> list:
        """Their run numbers, oldest first."""
        return [k for k, _ in self._runs]

    def current(self) -> Optional[Comparison]:
        return self._runs[-1][1] if self._runs else None

    def select(self, i: int) -> Comparison:
        """Select position ``i`` (0 = oldest kept, -1 = newest); returns that comparison."""
        if not self._runs:
            raise NotFound("no run kept yet: press Sample")
        if not -len(self._runs) <= i < len(self._runs):
            raise NotFound(f"run position {i} out of range: {len(self._runs)} runs kept")
        k, c = self._runs[i]
        self.selected = k
        return c

    def __len__(self) -> int:
        return len(self._runs)


def short_caption(s: PanelSettings) -> str:
    """One short line of a run's settings: ``"seed 3 EBCA g 0.3/0.3 +'blue' a0.5"``."""
    out = [f"seed {s.seed}"]
    if s.method == "ebca":
        out.append(f"EBCA \u03b3 {s.gamma_attn:g}/{s.gamma_norm:g}")
        ti, tw = parse_token_weights(s.token_weights)
        out += [f"tok{i}\u00d7{w:g}" for i, w in zip(ti, tw)]
        out += [f"{'+' if e.direction > 0 else 'not'} '{e.prompt}' \u03b1{e.alpha:g}" for e in s.edits if e.prompt.strip()]
    else:
        out.append(f"SEG \u03c3 {'inf' if not math.isfinite(s.seg_sigma) else f'{s.seg_sigma:.3g}'} s{s.seg_scale:g}")
    return " ".join(out)


def compare_energy_figure(a: Comparison, b: Comparison, labels=("A", "B")):
    """Posterior energy ``E(K;Q) + E(K)`` per cross-attention layer (mean over steps) of two runs in
    two colours: entering each layer (solid, circles) and leaving it (dashed, triangles; EBCA only,
    SEG does not update the context). Fonts :data:`ebca_viz.plots.FS` (10 pt at the PNG's own size)."""
    from ..plots import FS, FS_TITLE, new_figure, to_numpy
    from ..plots import short_layer as _short_layer

    fig = new_figure(figsize=(7.0, 3.0))
    ax = fig.subplots()
    for c, lab, col in ((a, labels[0], COLOURS[0]), (b, labels[1], COLOURS[1])):
        tr = c.energy.trace
        eb = to_numpy(tr.energies("posterior", "before")).mean(0)
        x = list(range(len(eb)))
        ax.plot(x, eb, "o-", color=col, ms=4, lw=1.6, label=f"{lab} ({c.label}): entering")
        if c.settings.method == "ebca":
            ea = to_numpy(tr.energies("posterior", "after")).mean(0)
            ax.plot(x, ea, "v--", color=col, ms=4, lw=1.2, label=f"{lab} ({c.label}): leaving")
    layers = a.energy.trace.layers if len(a.energy.trace.layers) >= len(b.energy.trace.layers) else b.energy.trace.layers
    ax.set_xticks(range(len(layers)))
    ax.set_xticklabels([_short_layer(k) for k in layers], fontsize=FS, rotation=45, ha="right")
    ax.tick_params(labelsize=FS)
    ax.set_xlabel("cross-attention layer (execution order)", fontsize=FS)
    ax.set_ylabel("E(K;Q)+E(K)", fontsize=FS)
    ax.set_title("posterior energy per layer, two runs (mean over steps)", fontsize=FS_TITLE)
    ax.legend(fontsize=FS, loc="center left", bbox_to_anchor=(1.01, 0.5))
    fig.tight_layout()
    return fig


def rate_figure(r: SuccessRate, label: str = "method"):
    """Bar chart of the two success rates (in %) with Wilson 95 % whiskers; text at :data:`FS`."""
    from ..plots import FS, FS_TITLE, new_figure

    fig = new_figure(figsize=(4.2, 2.8))
    ax = fig.subplots()
    for x, (which, name, col) in enumerate((("vanilla", "vanilla", "gray"), ("method", label, COLOURS[0]))):
        rt = r.rate(which)
        ax.bar(x, 100 * rt.p, color=col, width=0.6)
        ax.errorbar(x, 100 * rt.p, yerr=[[100 * (rt.p - rt.lo)], [100 * (rt.hi - rt.p)]], color="k", capsize=6, lw=1.5)
        ax.text(x, 100 * rt.hi + 3, f"{rt.k}/{rt.n}", ha="center", fontsize=FS)
    ax.set_xticks([0, 1])
    ax.set_xticklabels(["vanilla", label], fontsize=FS)
    ax.set_ylim(0, 115)
    ax.set_ylabel("success (%)", fontsize=FS)
    ax.tick_params(labelsize=FS)
    ax.set_title(f"success rate, n = {r.n_done} seeds (95 % CI)", fontsize=FS_TITLE)
    fig.tight_layout()
    return fig


class HistoryView:
    """The panel's history strip, compare area and success-rate box (``widget``); ``panel`` is the
    :class:`~ebca_viz.widgets.EnergyPanel` (its ``button``, ``last``, ``describe``, ``regime``...)."""

    def __init__(self, panel, maxlen: int = 6):
        import ipywidgets as W

        self.panel = panel
        self.history = RunHistory(maxlen)
        self.strip = W.HBox(layout=W.Layout(flex_flow="row wrap"))
        self.strip.add_class("ebca-history")
        self.compare = W.VBox(layout=W.Layout(display="none"))
        self.compare.add_class("ebca-compare")
        self.rate_button = W.Button(description="success rate", icon="bar-chart",
                                    tooltip="sample N seeds with these settings and vanilla; detector verdicts")
        self.rate_button.add_class("ebca-rate")
        self.rate_n = W.IntText(value=16, description="N seeds", layout=W.Layout(width="150px"))
        self.rate_n.add_class("ebca-rate-n")
        self.rate_progress = W.IntProgress(value=0, min=0, max=1, layout=W.Layout(width="160px"))
        self.rate_progress.add_class("ebca-rate-progress")
        self.rate_cancel = W.Button(description="cancel", disabled=True, layout=W.Layout(width="80px"))
        self.rate_cancel.add_class("ebca-rate-cancel")
        self.rate_result = W.HTML(value="")
        self.rate_result.add_class("ebca-rate-result")
        from .rendering import placeholder_png

        self.rate_plot = W.Image(value=placeholder_png(300, 40, "success rate: press the button"), format="png",
                                 layout=W.Layout(display="none"))
        self.rate_button.on_click(lambda _b: self.start_rate())
        self.rate_cancel.on_click(lambda _b: self._stop.set())
        self._stop = threading.Event()
        self.thread: Optional[threading.Thread] = None
        self.last_rate: Optional[SuccessRate] = None
        self.widget = W.VBox([
            W.HTML("<b>last runs</b> (click <i>compare</i> to set one beside the current run)"),
            self.strip, self.compare,
            W.HBox([self.rate_button, self.rate_n, self.rate_progress, self.rate_cancel],
                   layout=W.Layout(align_items="center", flex_flow="row wrap")),
            self.rate_result, self.rate_plot])
        self._draw_strip()

    @property
    def rate_running(self) -> bool:
        return self.thread is not None and self.thread.is_alive()

    # -- history ------------------------------------------------------------------------------
    def add(self, res: Comparison) -> None:
        self.history.add(res)
        self._draw_strip()
        if self.compare.layout.display != "none" and self.history.selected is not None:
            self.show_compare(self.history.numbers().index(self.history.selected))

    def _draw_strip(self) -> None:
        import ipywidgets as W

        from .rendering import _png

        if not len(self.history):
            self.strip.children = [W.HTML("<i style='color:#666'>no run yet</i>")]
            return
        items, cur = [], len(self.history) - 1
        for i, (k, c) in enumerate(zip(self.history.numbers(), self.history.items())):
            b = W.Button(description="current" if i == cur else f"compare #{k}", disabled=i == cur,
                         layout=W.Layout(width=f"{THUMB_PX + 30}px"))
            b.add_class(f"ebca-history-compare-{i}")
            b.on_click(lambda _b, i=i: self.show_compare(i))
            cap = W.HTML(f"<div style='font-size:12px;line-height:1.2'><b>#{k}</b> "
                         f"{html.escape(short_caption(c.settings))}</div>", layout=W.Layout(width=f"{THUMB_PX + 30}px"))
            box = W.VBox([W.Image(value=_png(c.energy.image, THUMB_PX), format="png",
                                  layout=W.Layout(width=f"{THUMB_PX}px")), cap, b],
                         layout=W.Layout(width=f"{THUMB_PX + 34}px", margin="0 6px 4px 0"))
            box.add_class(f"ebca-history-item-{i}")
            items.append(box)
        self.strip.children = items

    def _column(self, k: int, c: Comparison, col: str, show_vanilla: bool):
        import ipywidgets as W

        from .rendering import _png
        from .verdicts import detector_verdict, verdict_html

        verdicts = self.panel.regime.name in DETECTOR_WORLDS
        img = lambda im: W.Image(value=_png(im, COMPARE_PX), format="png", layout=W.Layout(width=f"{COMPARE_PX}px"))  # noqa: E731
        kids = [W.HTML(f"<b style='color:{col}'>run #{k}</b>: {html.escape(self.panel.describe(c.settings))}"),
                W.HTML(f"<b>{c.label}</b>"), img(c.energy.image)]
        if verdicts:
            kids.append(W.HTML(verdict_html(detector_verdict(c.energy.image, c.settings.prompt))))
        if show_vanilla:
            kids += [W.HTML("<b>vanilla</b>"), img(c.vanilla.image)]
            if verdicts:
                kids.append(W.HTML(verdict_html(detector_verdict(c.vanilla.image, c.settings.prompt))))
        return W.VBox(kids, layout=W.Layout(width="400px", margin="0 8px 0 0"))

    def show_compare(self, i: int) -> None:
        """Show the run at position ``i`` beside the current (newest) run."""
        import ipywidgets as W

        from ..plots import figure_png
        from .runs import VanillaCache

        a = self.history.select(i)
        b = self.history.current()
        ka, kb = self.history.selected, self.history.numbers()[-1]
        same_vanilla = VanillaCache.key(a.model, a.settings) == VanillaCache.key(b.model, b.settings)
        note = ("" if not same_vanilla else
                "<br><span style='color:#666'>same prompt, seed, steps and CFG: one vanilla image for both</span>")
        if self.panel.describe(a.settings) == self.panel.describe(b.settings) and a.settings.prompt == b.settings.prompt:
            note += "<br><span style='color:#666'>same settings: the two runs coincide (red drawn over blue)</span>"
        fig = compare_energy_figure(a, b, labels=(f"#{ka}", f"#{kb}"))
        self.compare.children = [
            W.HTML(f"<b>run #{ka} vs the current run #{kb}</b>{note}"),
            W.HBox([self._column(ka, a, COLOURS[0], True), self._column(kb, b, COLOURS[1], not same_vanilla)],
                   layout=W.Layout(flex_flow="row wrap")),
            W.Image(value=figure_png(fig), format="png", layout=W.Layout(max_width="100%")),
            W.HTML("<span style='color:#666'>notice: where the two runs' energies part, and whether each "
                   "run's leaving curve lies below its entering one (descent)</span>"),
        ]
        self.compare.layout.display = None

    # -- success rate -------------------------------------------------------------------------
    def _message(self, text: str, colour: str = "#664d03") -> None:
        self.rate_result.value = f"<div style='color:{colour}'>{html.escape(text)}</div>"
        self.rate_plot.layout.display = "none"

    def start_rate(self, wait: bool = False) -> None:
        """What the button does: check the settings, then run :func:`success_rate` in a thread (so
        the cancel click reaches the kernel); ``wait=True`` joins it (tests)."""
        p = self.panel
        if self.rate_running or p._running:
            return self._message("a run is in progress: wait for it to finish")
        if p.regime.name not in DETECTOR_WORLDS:
            return self._message(f"the success rate needs the shapes-world detector; model {p.model!r} has none "
                                 "(use EnergyPanel(model='shapes-world'))")
        n = int(self.rate_n.value)
        if n < 1:
            return self._message(f"N seeds must be at least 1, got {n}")
        try:
            s = p.read_settings().check()
            p.ranges.check(s)
        except Exception as e:
            return self._message(f"{type(e).__name__}: {e}", "#b00020")
        self._stop.clear()
        p.button.disabled = True
        self.rate_button.disabled = True
        self.rate_cancel.disabled = False
        self.rate_progress.value, self.rate_progress.bar_style = 0, "info"
        self._message(f"sampling {n} seeds (vanilla and {s.method}) from seed {s.seed} ...", "#444")
        self.thread = threading.Thread(target=self._rate_worker, args=(s, n), daemon=True)
        self.thread.start()
        if wait:
            self.thread.join()

    def _on_progress(self, done: int, total: int) -> None:
        self.rate_progress.max = max(total, 1)
        self.rate_progress.value = min(done, total)

    def _rate_worker(self, s: PanelSettings, n: int) -> None:
        from ..ebca import find_controller
        from ..plots import figure_png

        p = self.panel
        try:
            pipe = p._ensure_pipe()
            pipe.set_progress_bar_config(disable=True)
            p.cache.maxsize = max(p.cache.maxsize, n + 8)  # the rate's vanilla runs stay cached
            r = success_rate(pipe, s, n, model=p.model, cache=p.cache, on_progress=self._on_progress,
                             should_stop=self._stop.is_set)
            self.last_rate = r
            label = "EBCA" if s.method == "ebca" else "SEG"
            self.rate_progress.bar_style = "warning" if r.cancelled else "success"
            self.rate_result.value = ("<pre style='font-size:13px;white-space:pre-wrap'>"
                                      + html.escape(r.summary(label)) + "</pre>")
            if r.n_done:
                self.rate_plot.value = figure_png(rate_figure(r, label))
                self.rate_plot.layout.display = None
        except RateUnavailable as e:
            self.rate_progress.bar_style = "danger"
            self._message(str(e))
        except Exception as e:  # shown in the panel, never a traceback
            self.rate_progress.bar_style = "danger"
            self._message(f"{type(e).__name__}: {e}", "#b00020")
        finally:
            if p.pipe is not None and find_controller(p.pipe.unet) is not None:
                find_controller(p.pipe.unet).remove()
            self.rate_cancel.disabled = True
            self.rate_button.disabled = False
            p.button.disabled = False
