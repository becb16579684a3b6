r"""Single EBCU updates: where they descend (per step x layer), repeated updates of one layer,
and the step-size sweep against the first-order prediction.
"""
from __future__ import annotations

from typing import Mapping, Optional, Sequence

import numpy as np

from .. import claims
from .base import FS, FS_TITLE, layer_ticks, legends_to_spare, new_figure, panel_grid, short_layer, to_numpy
from ..errors import InvalidSetting



def _sweep_arrays(gammas, changes, first_order, run_gamma):
    """The step-size sweep's inputs as arrays ``(g (G,), changes (S, L, B, G), first_order (S, L, B))``,
    checked: shapes agree and ``run_gamma`` (the run's ``gamma_attn``) is positive."""
    g = to_numpy(gammas).ravel()
    ch, fo = to_numpy(changes), to_numpy(first_order)
    if ch.ndim != 4 or ch.shape[-1] != g.size:
        raise InvalidSetting(f"changes must be (S, L, B, G) with G = len(gammas) = {g.size}, got shape {ch.shape}")
    if fo.shape != ch.shape[:3]:
        raise InvalidSetting(f"first_order must be (S, L, B) = {ch.shape[:3]}, got shape {fo.shape}")
    if not run_gamma or run_gamma <= 0:
        raise InvalidSetting(f"run_gamma must be the run's positive gamma_attn, got {run_gamma!r}")
    return g, ch, fo

def plot_descent_map(change, layer_names: Optional[Sequence[str]] = None, steps: Optional[Sequence[int]] = None,
                     title: str = "did each update lower E(K;Q) + E(K)?", ncols: Optional[int] = None):
    """Where the updates lowered the posterior energy.

    Args:
        change: ``(S, L)`` or ``(S, L, B)`` ``after - before`` of the posterior per update (NaN: no update).

    Panels: heatmap of the share of images whose update lowered the energy at each (step, layer)
    (with one image: 1 lowered / 0 raised), the per-layer rate with its Wilson 95 % interval, and
    the per-step rate.
    """
    c = to_numpy(change)
    if c.ndim == 2:
        c = c[..., None]
    if c.ndim != 3:
        raise InvalidSetting(f"change must be (S, L) or (S, L, B), got shape {c.shape}")
    S, L, _ = c.shape
    ok = np.isfinite(c)
    low = np.where(ok, c < 0, np.nan)
    cnt = ok.sum(2)
    frac = np.where(cnt > 0, np.nansum(low, 2) / np.maximum(cnt, 1), np.nan)  # NaN: no update there
    if ncols is not None and ncols < 3:  # heatmap on top, the two rate panels below: fits 9 inches
        fig = new_figure(figsize=(9, 8.6))
        gs = fig.add_gridspec(2, 2, height_ratios=[1.1, 1])
        slots = [gs[0, :], gs[1, 0], gs[1, 1]]
    else:
        fig = new_figure(figsize=(11, 4.4))
        gs = fig.add_gridspec(1, 3, width_ratios=[1.3, 1.1, 0.9])
        slots = [gs[0], gs[1], gs[2]]
    ax = fig.add_subplot(slots[0])
    im = ax.imshow(frac, aspect="auto", cmap="RdYlGn", vmin=0, vmax=1, interpolation="nearest")
    fig.colorbar(im, ax=ax, fraction=0.05, label="share of images: energy lowered")
    layer_ticks(ax, layer_names, L)
    ax.set_ylabel("sampling step")
    if steps is not None:
        ax.set_yticks(range(S)[:: max(1, S // 10)])
        ax.set_yticklabels([str(s) for s in list(steps)[:: max(1, S // 10)]])
    ax.set_title("per step and layer", fontsize=FS_TITLE)
    ax = fig.add_subplot(slots[1])
    rates = [claims.rate(c[:, i][ok[:, i]] < 0) if ok[:, i].any() else None for i in range(L)]
    for i, r in enumerate(rates):
        if r is None:
            continue
        ax.bar(i, r.p, color="C2" if r.p >= 0.5 else "C3", alpha=0.8)
        ax.errorbar(i, r.p, yerr=[[max(0.0, r.p - r.lo)], [max(0.0, r.hi - r.p)]], color="k", capsize=3)
        ax.text(i, min(r.hi + 0.03, 1.04), f"{r.p:.0%}", ha="center", fontsize=FS)
    tot = claims.rate(c[ok] < 0)
    ax.axhline(tot.p, color="k", lw=0.8, ls="--")
    ax.set_ylim(0, 1.12)
    layer_ticks(ax, layer_names, L)
    ax.set_ylabel("updates that lowered the energy")
    ax.set_title(f"per layer (95 % interval); dashed: all layers\n{tot}", fontsize=FS)
    ax = fig.add_subplot(slots[2])
    ps = [claims.rate(c[s][ok[s]] < 0) for s in range(S) if ok[s].any()]
    xs = [s for s in range(S) if ok[s].any()]
    ax.plot(xs, [r.p for r in ps], "o-", ms=3, color="C2")
    ax.fill_between(xs, [r.lo for r in ps], [r.hi for r in ps], color="C2", alpha=0.25, label="95 % interval")
    ax.set_ylim(0, 1.05)
    ax.set_xlabel("sampling step (0 = noisiest)")
    ax.set_ylabel("updates that lowered the energy")
    ax.set_title("per step", fontsize=FS_TITLE)
    ax.legend(fontsize=FS)
    fig.suptitle(title, fontsize=FS_TITLE)
    fig.tight_layout()
    return fig


def plot_step_size(gammas, changes, first_order, run_gamma: float, layer_names: Optional[Sequence[str]] = None,
                   marks: Optional[Mapping[str, float]] = None, examples: Optional[Mapping[str, tuple]] = None,
                   kind_label: str = "E(K;Q) + E(K)", ncols: Optional[int] = None):
    """Energy change of one layer's update as a function of its step size (inputs held fixed).

    Args:
        gammas: ``(G,)`` the swept gamma_attn (both gammas scaled together).
        changes: ``(S, L, B, G)`` ``E(C_in + (g / run_gamma) dC) - E(C_in)``.
        first_order: ``(S, L, B)`` first-order change ``<dE/dC, dC>`` of the run's update (at ``run_gamma``);
            the prediction at ``g`` is ``(g / run_gamma) * first_order``.
        run_gamma: the gamma_attn the run used.
        marks: ``{label: gamma}`` vertical lines (the notebooks' settings).
        examples: ``{label: (step, layer, image)}`` single updates for the left panel (default: the
            update with the largest first-order drop whose run step raised the energy, and the one
            with the largest that lowered it).

    Panels: (one update) ``dE(g) / |slope|`` against ``g`` with the first-order tangent ``-g``: it
    follows the tangent at small ``g``, bends up (curvature) and crosses zero where the step starts
    to raise the energy; (all updates) actual / first-order change, median and quartiles per layer:
    1 while the linearisation holds, below 0 where the step overshoots; (rate) share of updates that
    lowered the energy with its Wilson 95 % interval, against ``g``.
    """
    g, ch, fo = _sweep_arrays(gammas, changes, first_order, run_gamma)
    S, L, B, G = ch.shape
    slope = fo / run_gamma  # dE/dgamma at 0
    (a1, a2, a3), fig = panel_grid(3, ncols, (5.0, 4.3))
    i_run = int(np.argmin(np.abs(g - run_gamma)))
    if examples is None:
        examples = {}
        run = ch[..., i_run]
        for label, sel in (("lowered at the run's gamma", run < 0), ("raised at the run's gamma", run > 0)):
            if sel.any():  # the update with the median slope among these
                flat = np.flatnonzero(sel & np.isfinite(fo))
                pick = flat[np.argsort(fo.ravel()[flat])[len(flat) // 2]]
                examples[label] = tuple(int(v) for v in np.unravel_index(pick, fo.shape))
    gmax = 1.6 * run_gamma
    keep = g <= gmax
    lo = 0.0
    for j, (label, (s, l, b)) in enumerate(examples.items()):
        sl = abs(slope[s, l, b])
        name = short_layer(layer_names[l]) if layer_names is not None else str(l)
        y = ch[s, l, b, keep] / sl
        lo = min(lo, float(np.nanmin(y)))
        a1.plot(np.r_[0, g[keep]], np.r_[0, y], "o-", ms=3, color=f"C{j + 2}",
                label=f"{label}: step {s}, layer {l} {name}, image {b}")
    t_end = min(gmax, 2.5 * max(-lo, 1e-3 * run_gamma))
    a1.plot([0, t_end], [0, -t_end], "--", color="gray", label="first order: -gamma |dE/dgamma at 0|")
    a1.axhline(0, color="k", lw=0.6)
    a1.set_xlabel("gamma_attn (gamma_norm scaled alike)")
    a1.set_ylabel("energy change / |dE/dgamma at 0|")
    a1.set_title("one update: first order, then overshoot", fontsize=FS_TITLE)
    with np.errstate(divide="ignore", invalid="ignore"):
        ratio = ch / (slope[..., None] * g)
    for l in range(L):
        rl = ratio[:, l].reshape(-1, G)
        rl = rl[np.isfinite(rl).all(1)]
        if not rl.size:
            continue
        med = np.median(rl, 0)
        q1, q3 = np.percentile(rl, 25, 0), np.percentile(rl, 75, 0)
        name = short_layer(layer_names[l]) if layer_names is not None else str(l)
        a2.plot(g, med, "-", color=f"C{l % 10}", lw=1.5, label=f"{l} {name}")
        a2.fill_between(g, q1, q3, color=f"C{l % 10}", alpha=0.12)
    a2.axhline(1, color="gray", ls="--", lw=0.8)
    a2.axhline(0, color="k", lw=0.8)
    a2.set_xscale("log")
    a2.set_ylim(-2, 1.3)
    a2.set_xlabel("gamma_attn (log)")
    a2.set_ylabel("actual / first-order change")
    a2.set_title("all updates: median (quartiles) per layer", fontsize=FS_TITLE)
    a2.legend(fontsize=FS, ncol=2, loc="lower left")
    flat = ch.reshape(-1, G)
    flat = flat[np.isfinite(flat).all(1)]
    rs = [claims.rate(flat[:, i] < 0) for i in range(G)]
    a3.plot(g, [r.p for r in rs], "o-", color="C2", ms=4, label=f"all layers (n = {rs[0].n})")
    a3.fill_between(g, [r.lo for r in rs], [r.hi for r in rs], color="C2", alpha=0.3)
    for l in range(L):
        fl = ch[:, l].reshape(-1, G)
        fl = fl[np.isfinite(fl).all(1)]
        if fl.size:
            a3.plot(g, (fl < 0).mean(0), "-", color=f"C{l % 10}", lw=0.8, alpha=0.6)
    a3.set_xscale("log")
    a3.set_ylim(0, 1.05)
    a3.set_xlabel("gamma_attn (log)")
    a3.set_ylabel(f"updates that lowered {kind_label}")
    a3.set_title(f"share lowered (thin: per layer); at the run's {run_gamma:g}: {rs[i_run].p:.0%}", fontsize=FS_TITLE)
    for j, (label, val) in enumerate((marks or {}).items()):
        for ax in (a1, a2, a3):
            if ax is a1 and val > gmax:
                continue
            ax.axvline(val, color=("k", "m", "c")[j % 3], ls=(":", "-.", "--")[j % 3], lw=1.4,
                       label=label if ax is not a2 else None)
    a1.legend(fontsize=FS)
    a3.legend(fontsize=FS, loc="lower left")
    if getattr(fig, "_ebca_spare", None) is not None:  # 2 x 2 layout: the legends go to the free cell
        a1.get_legend().set_title("top-left panel")
        a3.get_legend().set_title("bottom panel")
        legends_to_spare(fig, [a1, a3])
    fig.tight_layout()
    return fig


def plot_repeated_updates(curves: Mapping[str, Sequence[float]], title: str = "one layer, repeated updates",
                          ylabel: str = "E(K;Q) + E(K)"):
    """Energy along repeated updates of one layer's context: ``curves = {label: (n + 1,) energies}``
    (:func:`ebca_viz.energy_steps.repeated_updates`), one line each; update 0 is the prompt's context.
    The first update's drop is marked on each curve."""
    if not curves:
        raise InvalidSetting("curves is empty: pass {label: energies along the updates}")
    fig = new_figure(figsize=(7.5, 4.2))
    ax = fig.subplots()
    for j, (label, e) in enumerate(curves.items()):
        e = to_numpy(e).ravel()
        if e.size < 2:
            raise InvalidSetting(f"curve {label!r} needs at least 2 energies (before and after one update), got {e.size}")
        ax.plot(np.arange(e.size), e, "o-", ms=3.5, color=f"C{j}", label=label)
        ax.annotate("", xy=(1, e[1]), xytext=(0, e[0]), arrowprops=dict(arrowstyle="->", color=f"C{j}", lw=2))
    ax.set_xlabel("update number (0 = the prompt's own context)", fontsize=11)
    ax.set_ylabel(ylabel, fontsize=11)
    ax.set_title(title, fontsize=11)
    ax.tick_params(labelsize=10)
    ax.legend(fontsize=FS_TITLE)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    return fig


def plot_gamma_sweep(gammas, changes, first_order, run_gamma: float, level: float = 0.95,
                     chosen: Optional[float] = None, marks: Optional[Mapping[str, float]] = None):
    """Step size for a student: how much one update lowers the energy, and how often, against gamma.

    Args:
        gammas: ``(G,)`` swept gamma_attn (gamma_norm scaled alike).
        changes: ``(S, L, B, G)`` energy change ``E(C_in + (g / run_gamma) dC) - E(C_in)`` of every
            recorded update (:attr:`ebca_viz.energy_steps.UpdateRecord.sweep` ``["posterior"]``).
        first_order: ``(S, L, B)`` the first-order change at ``run_gamma`` (to scale each update).
        level: the share of descending updates the rule asks for (horizontal line).
        chosen: the gamma the rule picked (vertical line), ``marks``: ``{label: gamma}`` more lines.

    Left: energy drop ``-(change)`` of each update divided by its first-order drop at ``g``
    (``1`` = the full predicted drop, ``0`` = no gain, below ``0`` = the update went uphill): median and
    quartiles over all updates. Right: share of updates with a drop ``> 0``, Wilson 95 % band.
    """
    g, ch, fo = _sweep_arrays(gammas, changes, first_order, run_gamma)
    flat = ch.reshape(-1, g.size)
    pred = (fo.reshape(-1, 1) / run_gamma) * g  # first-order change at each gamma (negative)
    ok = np.isfinite(flat).all(1) & np.isfinite(pred).all(1) & (pred[:, 0] < 0)
    rel = flat[ok] / pred[ok]  # (actual drop) / (predicted drop): both changes are negative when downhill
    rates = [claims.rate(flat[np.isfinite(flat).all(1)][:, i] < 0) for i in range(g.size)]
    fig = new_figure(figsize=(9, 4.2))
    a1, a2 = fig.subplots(1, 2)
    med, q1, q3 = np.median(rel, 0), np.percentile(rel, 25, 0), np.percentile(rel, 75, 0)
    a1.plot(g, med, "o-", color="k", ms=4, label="median update")
    a1.fill_between(g, q1, q3, color="gray", alpha=0.3, label="middle half of updates")
    a1.axhline(1, color="C0", ls="--", lw=1, label="drop a tiny step predicts")
    a1.axhline(0, color="C3", lw=1.2, label="no drop: above = downhill")
    a1.set_xscale("log")
    a1.set_ylim(-1.5, 1.3)
    a1.set_xlabel("step size gamma (log scale)", fontsize=11)
    a1.set_ylabel("energy drop / predicted drop", fontsize=11)
    a1.set_title("how much of the predicted drop one update gets", fontsize=11)
    a1.legend(fontsize=FS_TITLE, loc="lower left")
    p = np.array([r.p for r in rates])
    a2.plot(g, 100 * p, "o-", color="C2", ms=4, label=f"all updates (n = {rates[0].n} per gamma)")
    a2.fill_between(g, [100 * r.lo for r in rates], [100 * r.hi for r in rates], color="C2", alpha=0.3)
    a2.axhline(100 * level, color="k", ls=":", lw=1.2, label=f"{100 * level:g} %")
    a2.set_xscale("log")
    a2.set_ylim(0, 105)
    a2.set_xlabel("step size gamma (log scale)", fontsize=11)
    a2.set_ylabel("% of updates that went downhill", fontsize=11)
    a2.set_title("how often one update goes downhill", fontsize=11)
    lines = dict(marks or {})
    if chosen is not None:
        lines = {f"largest gamma with >= {100 * level:g} %: {chosen:g}": chosen, **lines}
    for j, (label, val) in enumerate(lines.items()):
        for ax in (a1, a2):
            ax.axvline(val, color=("m", "k", "c")[j % 3], ls=("-.", "--", ":")[j % 3], lw=1.5,
                       label=label if ax is a2 else None)
    a2.legend(fontsize=FS_TITLE, loc="lower left")
    for ax in (a1, a2):
        ax.tick_params(labelsize=10)
        ax.grid(alpha=0.3)
    fig.tight_layout()
    return fig


__all__ = ['plot_descent_map', 'plot_step_size', 'plot_repeated_updates', 'plot_gamma_sweep']
