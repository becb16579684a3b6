r"""Energies through the layer cascade and over steps: curves, heat maps, the three terms of EBCU,
descent curves, gradient checks and SEG's blur sweep.
"""
from __future__ import annotations

from typing import Mapping, Optional, Sequence

import numpy as np

from .. import claims
from .base import FS, FS_TITLE, TRACE_STEP_LABEL, ExplainerFigure, image_array, layer_ticks, legends_to_spare, new_figure, panel_grid, short_layer, to_numpy
from ..errors import InvalidSetting


def plot_energy_curves(before, after=None, reference=None, layer_names: Optional[Sequence[str]] = None,
                       steps_to_show: Optional[Sequence[int]] = None, energy_label: str = "E(K;Q) + E(K)",
                       title: Optional[str] = None, relative: Optional[bool] = None,
                       step_label: str = "sampling step (0 = noisiest)") -> ExplainerFigure:
    """Energy per layer and per step, with the descent each update produces.

    Args:
        before: ``(S, L)`` energy of the (conditional) context entering each layer at each step.
        after: ``(S, L)`` energy of the context leaving each layer (after its update); optional.
        reference: ``(S, L)`` the same quantity without the update (vanilla, the prompt's own
            context); optional, drawn dashed.
        steps_to_show: which steps get a curve over layers (default: first, middle, last).
        relative: plot ``before - reference`` and ``after - reference`` on the left (default: when a
            reference is given). Each layer has its own ``W_k``, so absolute energies jump between
            layers; relative to vanilla the descent and its cascade over layers are visible.
        step_label: the x label of the right panel (what the rows of ``before`` count).

    Left: energy over layers for a few steps; with ``after`` every layer is a short segment from
    ``before`` to ``after`` (a saw-tooth: each update goes down, the next layer's keys start
    elsewhere). Right: energy decrease ``before - after`` per step (mean over layers), or the mean
    energy per step when ``after`` is not given.
    """
    b = to_numpy(before)
    if b.ndim == 1:
        b = b[None]
    if b.ndim != 2:
        raise InvalidSetting(f"before must be (S, L), got shape {b.shape}")
    S, L = b.shape
    a = None if after is None else to_numpy(after).reshape(S, L)
    ref = None if reference is None else to_numpy(reference).reshape(-1, L)
    if steps_to_show is None:
        steps_to_show = sorted({0, S // 2, S - 1})
    if relative is None:
        relative = ref is not None and ref.shape == b.shape
    if relative:
        if ref is None or ref.shape != b.shape:
            raise InvalidSetting("relative=True needs a reference of the same shape (S, L) as before")
        b_show, a_show = b - ref, (None if a is None else a - ref)
    else:
        b_show, a_show = b, a
    fig = new_figure(figsize=(11, 3.8))
    ax1, ax2 = fig.subplots(1, 2)
    x = np.arange(L)
    for k, s in enumerate(steps_to_show):
        col = f"C{k}"
        if a_show is None:
            ax1.plot(x, b_show[s], "o-", color=col, ms=3, label=f"step {s}")
        else:
            xs = np.stack([x - 0.3, x + 0.3], 1).ravel()
            ys = np.stack([b_show[s], a_show[s]], 1).ravel()
            for l in range(L):
                ax1.plot(xs[2 * l:2 * l + 2], ys[2 * l:2 * l + 2], "-", color=col, lw=2)
            ax1.plot(x - 0.3, b_show[s], "o", color=col, ms=3, label=f"step {s}: entering -> leaving")
        if ref is not None and s < ref.shape[0] and not relative:
            ax1.plot(x, ref[s], "--", color=col, lw=1, alpha=0.8, label=f"step {s}: vanilla")
    if relative:
        ax1.axhline(0, color="gray", lw=0.8, ls="--", label="vanilla (prompt context)")
    ax1.set_xlabel("cross-attention layer (execution order)")
    ax1.set_ylabel(f"{energy_label} - vanilla" if relative else energy_label)
    ax1.set_title("energy across layers" + (", relative to vanilla" if relative else ""))
    if layer_names is not None:
        ax1.set_xticks(x)
        ax1.set_xticklabels([short_layer(n) for n in layer_names], rotation=60, fontsize=FS)
    ax1.legend(fontsize=FS)
    if a is not None:
        drop = b - a
        ax2.bar(np.arange(S), drop.mean(1), color="C1", alpha=0.8, label="mean over layers")
        ax2.plot(np.arange(S), drop.min(1), "v", color="C3", ms=4, label="smallest (layer)")
        ax2.axhline(0, color="gray", lw=0.8)
        ax2.set_ylabel("E_entering - E_leaving (> 0: descent)")
        ax2.set_title(f"energy decrease per update ({(drop > 0).mean():.0%} of updates descend)")
        ax2.legend(fontsize=FS)
    else:
        ax2.plot(np.arange(S), b.mean(1), "o-", color="C1", label="mean over layers")
        if ref is not None:
            ax2.plot(np.arange(ref.shape[0]), ref.mean(1), "--", color="gray", label="vanilla")
        ax2.set_ylabel(energy_label)
        ax2.set_title("energy per step")
        ax2.legend(fontsize=FS)
    ax2.set_xlabel(step_label)
    if title:
        fig.suptitle(title, fontsize=FS_TITLE)
    fig.tight_layout()
    return fig


def plot_energy_heatmap(values, layer_names=None, title: str = "energy", cmap: str = "viridis",
                        center: bool = False) -> ExplainerFigure:
    """``values (S, L)`` as an image: steps down, layers across (e.g. the per-update decrease)."""
    v = to_numpy(values)
    fig = new_figure(figsize=(6.5, 3.6))
    ax = fig.subplots()
    kw = {}
    if center:
        m = np.abs(v).max() or 1.0
        kw = dict(vmin=-m, vmax=m)
        cmap = "RdBu_r"
    im = ax.imshow(v, aspect="auto", cmap=cmap, **kw)
    fig.colorbar(im, ax=ax)
    ax.set_xlabel("cross-attention layer")
    ax.set_ylabel("sampling step")
    if layer_names is not None:
        ax.set_xticks(range(len(layer_names)))
        ax.set_xticklabels([short_layer(n) for n in layer_names], rotation=60, fontsize=FS)
    ax.set_title(title)
    fig.tight_layout()
    return fig


def plot_descent(values, xlabel: str = "iteration", ylabel: str = "energy", labels=None,
                 title: str = "energy descent") -> ExplainerFigure:
    """Plain curves ``values (K,)`` or ``(C, K)`` (``C`` curves of ``K`` points), e.g. ``E`` along
    repeated gradient steps."""
    v = to_numpy(values)
    if v.ndim == 1:
        v = v[None]
    fig = new_figure(figsize=(5.5, 3.4))
    ax = fig.subplots()
    for i, row in enumerate(v):
        ax.plot(np.arange(len(row)), row, "o-", ms=3, label=labels[i] if labels else None)
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.set_title(title)
    if labels:
        ax.legend(fontsize=FS)
    fig.tight_layout()
    return fig


def plot_gradient_check(autograd, closed_form, title: str = "closed form vs torch.autograd") -> ExplainerFigure:
    """Scatter of two gradients of the same shape (any dims, flattened) with the identity line and
    the max abs / relative error in the title."""
    def _f64(x):  # keep float64 inputs in float64: to_numpy's float32 would round a 1e-15 difference to 0
        return np.asarray(x.detach().cpu().double() if hasattr(x, "detach") else x, dtype=np.float64).ravel()

    g1, g2 = _f64(autograd), _f64(closed_form)
    if g1.shape != g2.shape:
        raise InvalidSetting.of("closed_form", closed_form, f"pass two gradients of the same shape (autograd has {g1.size} "
                                 "values)", why=f"gradients differ in size: {g1.size} vs {g2.size}")
    err = np.abs(g1 - g2).max()
    rel = err / (np.abs(g1).max() + 1e-30)
    wide = str(getattr(autograd, "dtype", "")).endswith("float64")  # torch.float64 or numpy float64
    eps = np.finfo(np.float64 if wide else np.float32).eps
    fig = new_figure(figsize=(4.2, 4))
    ax = fig.subplots()
    ax.scatter(g1, g2, s=4, alpha=0.6)
    lo, hi = min(g1.min(), g2.min()), max(g1.max(), g2.max())
    ax.plot([lo, hi], [lo, hi], color="gray", lw=0.8)
    ax.set_xlabel("torch.autograd")
    ax.set_ylabel("closed form")
    note = "equal to float precision" if rel <= 100 * eps else f"relative {rel:.1e}"
    ax.set_title(f"{title}\nmax |diff| {err:.1e}: {note}", fontsize=FS)
    fig.tight_layout()
    return fig


def plot_seg_energy(sigmas, energies, reference=None, labels=None, images=None,
                    title: str = "self-attention energy vs blur") -> ExplainerFigure:
    """SEG: energy of the blurred self-attention as the Gaussian width grows.

    Args:
        sigmas: ``(K,)`` blur widths (``inf`` allowed: drawn at the right edge, labelled inf).
        energies: ``(K,)`` or ``(C, K)`` energies of the blurred branch (one curve per layer / step).
        reference: scalar or ``(C,)`` energy of the unblurred branch (``sigma = 0``), dashed.
        images: optional ``K`` images sampled with those sigmas, shown in a strip below.
    """
    s = np.asarray([float(v) for v in to_numpy(sigmas).ravel()])
    e = to_numpy(energies)
    if e.ndim == 1:
        e = e[None]
    if e.shape[-1] != s.size:
        raise InvalidSetting(f"energies must have one value per sigma ({s.size}), got shape {e.shape}")
    finite = np.isfinite(s)
    xs = s.copy()
    inf_x = (s[finite].max() * 2 if finite.any() else 1.0)
    xs[~finite] = inf_x
    K = s.size
    fig = new_figure(figsize=(max(5.5, 1.2 * K), 3.6 + (1.6 if images is not None else 0)))
    if images is not None:
        gs = fig.add_gridspec(2, K, height_ratios=[2.2, 1])
        ax = fig.add_subplot(gs[0, :])
        for i, im in enumerate(images):
            a = fig.add_subplot(gs[1, i])
            a.imshow(image_array(im))
            a.set_xticks([])
            a.set_yticks([])
            a.set_xlabel(f"sigma {_fmt_sigma(s[i])}", fontsize=FS)
    else:
        ax = fig.subplots()
    for i, row in enumerate(e):
        ax.plot(xs, row, "o-", color=f"C{i % 10}", label=labels[i] if labels else None)
    if reference is not None:
        ref = np.atleast_1d(to_numpy(reference))
        for i, r in enumerate(ref):
            ax.axhline(r, ls="--", lw=0.9, color=f"C{i % 10}", alpha=0.7)
    positive = xs[xs > 0]
    if positive.size and positive.max() / positive.min() > 20:
        ax.set_xscale("log")
    ax.set_xticks(xs)
    ax.set_xticklabels([_fmt_sigma(v) for v in s], fontsize=FS)
    ax.set_xlabel("blur sigma (latent pixels; inf = spatial mean)")
    ax.set_ylabel("energy  sum -lse(Q K^T)")
    ax.set_title(title + (" (dashed: unblurred)" if reference is not None else ""), fontsize=FS)
    if labels:
        ax.legend(fontsize=FS)
    fig.tight_layout()
    return fig


def _fmt_sigma(v: float) -> str:
    return "inf" if not np.isfinite(v) or v > 9999 else f"{v:g}"


KINDS = ("context", "prior", "posterior")

LABELS = {"context": "E(K;Q)", "prior": "E(K)", "posterior": "E(K;Q) + E(K)"}

COLORS = {"context": "C0", "prior": "C1", "posterior": "k"}

def _terms(d, name: str) -> dict:
    if not isinstance(d, Mapping) or any(k not in d for k in KINDS):
        raise InvalidSetting(f"{name} must be a dict with keys {KINDS} (arrays (S, L) or (S, L, B)), got "
                         f"{type(d).__name__}{'' if not isinstance(d, Mapping) else ' with keys ' + str(list(d))}")
    out = {}
    for k in KINDS:
        a = to_numpy(d[k])
        if a.ndim == 2:
            a = a[..., None]
        if a.ndim != 3:
            raise InvalidSetting(f"{name}[{k!r}] must be (S, L) or (S, L, B), got shape {a.shape}")
        out[k] = a
    shapes = {v.shape for v in out.values()}
    if len(shapes) != 1:
        raise InvalidSetting(f"{name}: the three terms differ in shape: {sorted(shapes)}; fix: pass context, prior "
                           "and posterior from the same trace (one (S, L) or (S, L, B) shape)")
    return out


def trace_energy_terms(tr, when: str = "before") -> dict:
    """``{kind: (S, L, B)}`` energies of a trace (all recorded images), ``when`` ``"before"``/``"after"``."""
    return {k: np.moveaxis(to_numpy(tr.energies(k, when, image=None)), 0, -1) for k in KINDS}


def update_counts(before, after) -> dict:
    """``{"context_fell", "prior_rose", "posterior_fell"}`` :class:`~ebca_viz.claims.Rate` over updates."""
    b, a = _terms(before, "before"), _terms(after, "after")
    ch = {k: (a[k] - b[k]).ravel() for k in KINDS}
    ok = np.isfinite(ch["posterior"])
    return {"context_fell": claims.rate(ch["context"][ok] < 0), "prior_rose": claims.rate(ch["prior"][ok] > 0),
            "posterior_fell": claims.rate(ch["posterior"][ok] < 0)}


def plot_energy_terms(before, after, reference=None, layer_names: Optional[Sequence[str]] = None,
                      title: Optional[str] = None, ncols: Optional[int] = None):
    """E(K;Q), E(K) and their sum, separately, through the layer cascade and over sampling steps.

    Args:
        before, after: ``{kind: (S, L[, B])}`` energies of the context entering / leaving each layer.
        reference: same shape, the prompt's own context seen by the same layer (or a vanilla run);
            optional: adds the cascade panel.
        ncols: panels per row (default: all in one row); ``ncols=2`` fits a 9-inch page.

    Panels: (cascade, with ``reference``) mean over steps and images of ``entering - reference``
    (dot) and ``leaving - reference`` (end of the segment) per layer: what the updates of all layers
    so far did to this layer's energies; (per layer) mean change ``after - before`` of each term made
    by the layer's own update, with the share of updates that lowered the sum; (per step) the same
    change, mean over layers and images. E(K) can rise while the sum falls: see the module docstring.
    """
    b, a = _terms(before, "before"), _terms(after, "after")
    if b["posterior"].shape != a["posterior"].shape:
        raise InvalidSetting(f"after: before and after differ in shape: {b['posterior'].shape} vs "
                           f"{a['posterior'].shape}; fix: pass two traces with the same steps, layers and images")
    r = None if reference is None else _terms(reference, "reference")
    if r is not None and r["posterior"].shape != b["posterior"].shape:
        raise InvalidSetting(f"reference must have the shape of before {b['posterior'].shape}, got {r['posterior'].shape}")
    S, L, _ = b["posterior"].shape
    n_ax = 3 if r is not None else 2
    axes, fig = panel_grid(n_ax, ncols, (5.2, 4.2))
    axes_all = list(axes)
    x = np.arange(L)
    cnt = update_counts(b, a)
    if r is not None:
        ax = axes.pop(0)
        for k in KINDS:
            eb, ea = np.nanmean(b[k] - r[k], (0, 2)), np.nanmean(a[k] - r[k], (0, 2))
            lw = 2.4 if k == "posterior" else 1.6
            for i in range(L):
                ax.plot([i - 0.25, i + 0.25], [eb[i], ea[i]], "-", color=COLORS[k], lw=lw)
            ax.plot(x - 0.25, eb, "o", color=COLORS[k], ms=4, label=f"{LABELS[k]}: entering -> leaving")
        ax.axhline(0, color="gray", lw=0.8, ls="--")
        layer_ticks(ax, layer_names, L)
        ax.set_ylabel("energy - prompt context's (same layer)")
        ax.set_title("through the cascade: change vs the prompt context", fontsize=FS_TITLE)
        ax.legend(fontsize=FS)
    ax = axes.pop(0)
    w = 0.27
    for j, k in enumerate(KINDS):
        ch = a[k] - b[k]
        ax.bar(x + (j - 1) * w, np.nanmean(ch, (0, 2)), w, color=COLORS[k], alpha=0.85 if k != "posterior" else 0.7,
               label=LABELS[k])
    ax.axhline(0, color="gray", lw=0.8)
    fell = (a["posterior"] - b["posterior"]) < 0
    ymax = ax.get_ylim()[1]
    for i in range(L):
        ok = np.isfinite(a["posterior"][:, i] - b["posterior"][:, i])
        if ok.any():
            ax.text(i, ymax, f"{fell[:, i][ok].mean():.0%}", ha="center", va="bottom", fontsize=FS)
    layer_ticks(ax, layer_names, L)
    ax.set_ylabel("change by its own update (after - before)")
    ax.set_title("per layer (mean)\n% = updates that lowered the sum", fontsize=FS_TITLE, pad=14)
    ax.legend(fontsize=FS)
    ax = axes.pop(0)
    for k in KINDS:
        ax.plot(np.arange(S), np.nanmean(a[k] - b[k], (1, 2)), "o-", ms=3, color=COLORS[k],
                lw=2.4 if k == "posterior" else 1.4, label=LABELS[k])
    ax.axhline(0, color="gray", lw=0.8)
    ax.set_xlabel("sampling step (0 = noisiest)")
    ax.set_ylabel("change per update, mean over layers")
    ax.set_title("per sampling step", fontsize=FS_TITLE)
    ax.legend(fontsize=FS)
    sep = "\n" if getattr(fig, "_ebca_spare", None) is not None else ", "
    sup = (f"E(K;Q) fell in {cnt['context_fell']}{sep}E(K) rose in {cnt['prior_rose']},\n"
           f"E(K;Q)+E(K) fell in {cnt['posterior_fell']} of the updates")
    head = (title + ":" + ("\n" if sep == "\n" else " ")) if title else ""
    fig.suptitle(head + sup, fontsize=FS if sep == ", " else 10)
    if sep == "\n":  # 2 x 2 layout: the cascade legend (same colours as the other panels) goes to the free cell
        for ax in fig.axes:
            if ax is not fig._ebca_spare and ax is not axes_all[0] and ax.get_legend() is not None:
                ax.get_legend().remove()
        legends_to_spare(fig, [axes_all[0]])
        n_lines = (head + sup).count("\n") + 1
        fig._ebca_rect = (0, 0, 1, 1 - (0.05 + 0.18 * n_lines) / fig.get_figheight())
    else:
        fig._ebca_rect = (0, 0, 1, 0.92)  # readable() keeps the room of the suptitle
    fig.tight_layout(rect=fig._ebca_rect)
    return fig


# -- read from a recording (ebca_viz.trace) ----------------------------------------

def plot_trace_energies(tr, reference=None, kind: str = "posterior", **kw) -> ExplainerFigure:
    """:func:`plot_energy_curves` of a trace: energy ``kind`` entering (``before``) and leaving
    (``after``) every layer; ``reference``: a vanilla trace of the same run (dashed)."""
    b, a = tr.energies(kind, "before"), tr.energies(kind, "after")
    ref = None if reference is None else reference.energies(kind, "before")
    labels = {"posterior": "E(K;Q) + E(K)", "context": "E(K;Q)", "prior": "E(K)", "query": "E(Q;K)"}
    kw.setdefault("energy_label", labels.get(kind, kind))
    kw.setdefault("step_label", TRACE_STEP_LABEL)
    return plot_energy_curves(b, a, reference=ref, layer_names=tr.layers, **kw)


def plot_trace_seg(tr, title: str = "SEG: self-attention energy per step") -> ExplainerFigure:
    """Blurred vs reference (unblurred) self-attention energy per step, mean over SEG layers."""
    bl = to_numpy(tr.seg_energies("blurred")).mean(-1)
    ref = to_numpy(tr.seg_energies("reference")).mean(-1)
    fig = new_figure(figsize=(6, 3.4))
    ax = fig.subplots()
    ax.plot(np.arange(len(bl)), bl, "o-", ms=3, label="blurred branch")
    ax.plot(np.arange(len(ref)), ref, "s--", ms=3, label="reference (unblurred)")
    ax.set_xlabel(TRACE_STEP_LABEL)
    ax.set_ylabel("sum -lse(Q K^T)")
    ax.set_title(title, fontsize=FS)
    ax.legend(fontsize=FS)
    fig.tight_layout()
    return fig



__all__ = ['plot_energy_curves', 'plot_energy_heatmap', 'plot_descent', 'plot_gradient_check', 'plot_seg_energy', 'KINDS', 'LABELS', 'COLORS', 'trace_energy_terms', 'update_counts', 'plot_energy_terms', 'plot_trace_energies', 'plot_trace_seg']
