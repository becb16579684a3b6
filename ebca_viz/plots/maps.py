r"""Attention maps: token x row grids over an image, and their animation over steps.
"""
from __future__ import annotations

from pathlib import Path
from typing import Optional, Sequence

import numpy as np

from ..tokens import trace_prompt_positions, trace_tokens
from .base import (FS, FS_TITLE, MAX_WIDTH_IN, TRACE_STEP_LABEL, ExplainerFigure, close_figure, image_array, new_figure,
                   short_layer, stack_maps, to_numpy)
from ..errors import InvalidSetting


def plot_attention_maps(maps, tokens: Optional[Sequence[str]] = None, image=None, row_labels=None,
                        token_indices: Optional[Sequence[int]] = None, normalize: str = "map",
                        overlay_alpha: float = 0.55, cmap: str = "magma", title: Optional[str] = None,
                        cell: float = 1.35, fontsize: float = FS, colorbar="shared",
                        colorbar_label: Optional[str] = None) -> ExplainerFigure:
    """Grid of cross-attention maps: one row per layer (or step), one column per token.

    Args:
        maps: ``(R, N, h, w)`` (rows = layers or steps), ``(N, h, w)`` (one row), or a list of ``R``
            arrays ``(N, h_r, w_r)`` with different grids (resized to the largest); values are
            attention probabilities (softmax over tokens), typically averaged over heads.
        tokens: ``N`` column labels (see :func:`token_labels`).
        image: optional image drawn under every map (first column shows it alone).
        row_labels: ``R`` labels (e.g. ``"layer 3"``, ``"step 10"``).
        token_indices: which token columns to show (default: all ``N``).
        normalize: colour range ``"map"`` (each map from its own min to max), ``"row"`` (shared per
            row), ``"none"`` (from 0 to each map's max) or ``"all"`` (one range for the whole grid:
            rows compare directly).
        fontsize: labels and titles (points).
        colorbar: ``"shared"`` (default) one colour bar for the grid, labelled with what the colours mean
            under ``normalize``; ``True`` one bar per row (``normalize="row"`` or ``"all"``: the row shares
            its range; otherwise the bar is the row's last map's); ``False`` none.
        colorbar_label: the bars' label (default: says what ``normalize`` does).
    """
    if isinstance(maps, (list, tuple)):
        a = stack_maps(maps)
    else:
        a = to_numpy(maps)
    if a.ndim == 3:
        a = a[None]
    if a.ndim != 4:
        raise InvalidSetting(f"maps must be (R, N, h, w), (N, h, w) or a list of (N, h, w); got shape {a.shape}")
    R, N = a.shape[:2]
    cols = list(range(N)) if token_indices is None else list(token_indices)
    for c in cols:
        if not 0 <= c < N:
            raise InvalidSetting.of("token_indices", c, f"pass token positions between 0 and {N - 1}",
                                     why=f"out of range for {N} tokens")
    if row_labels is not None and len(row_labels) != R:
        raise InvalidSetting.of("row_labels", row_labels, f"pass {R} labels (one per row of maps) or row_labels=None",
                                 why=f"{len(row_labels)} entries for {R} rows of maps")
    if normalize not in ("map", "row", "none", "all"):
        raise InvalidSetting("normalize must be 'map', 'row', 'none' or 'all'")
    img = image_array(image) if image is not None else None
    if img is not None:
        a = stack_maps(list(a), size=img.shape[:2])
    ncol = len(cols) + (1 if img is not None else 0)
    fig = new_figure(figsize=(cell * ncol + 0.9 + (0.9 if colorbar else 0), cell * R + (0.5 if title else 0.15)),
                     layout="constrained" if colorbar else None)
    axes = np.atleast_2d(fig.subplots(R, ncol, squeeze=False))
    gmin, gmax = (a[:, cols].min(), a[:, cols].max()) if len(cols) else (0.0, 1.0)
    for r in range(R):
        row = a[r, cols]
        rmax = row.max() if row.size else 1.0
        rmin = row.min() if row.size else 0.0
        for j in range(ncol):
            ax = axes[r, j]
            ax.set_xticks([])
            ax.set_yticks([])
            if img is not None and j == 0:
                ax.imshow(img)
                if r == 0:
                    ax.set_title("image", fontsize=fontsize)
            else:
                c = cols[j - (1 if img is not None else 0)]
                m = a[r, c]
                vmin, vmax = {"map": (m.min(), m.max()), "row": (rmin, rmax), "none": (0.0, None),
                              "all": (gmin, gmax)}[normalize]
                if vmax is not None and vmax <= vmin:
                    vmax = vmin + 1e-12
                if img is not None:  # grey image under the map, so the map's colours read
                    ax.imshow(img.mean(-1), cmap="gray", vmin=0, vmax=1)
                    shown = ax.imshow(m, cmap=cmap, alpha=overlay_alpha, vmin=vmin, vmax=vmax)
                else:
                    shown = ax.imshow(m, cmap=cmap, vmin=vmin, vmax=vmax)
                if r == 0:
                    ax.set_title(tokens[c] if tokens is not None and c < len(tokens) else f"token {c}",
                                 fontsize=fontsize)
            if j == 0:
                ax.set_ylabel(row_labels[r] if row_labels is not None else f"row {r}", fontsize=fontsize)
        if colorbar is True and len(cols):
            cb = fig.colorbar(shown, ax=list(axes[r]), fraction=0.03, pad=0.02)
            cb.ax.tick_params(labelsize=fontsize)
            cb.set_label(colorbar_label or "attention probability", fontsize=fontsize)
    if title:
        fig.suptitle(title, fontsize=max(FS_TITLE, fontsize))
    if colorbar == "shared" and len(cols):
        from matplotlib.cm import ScalarMappable
        from matplotlib.colors import Normalize

        top = float(a[:, cols].max()) if normalize in ("none", "all") and a.size else 1.0
        label = colorbar_label or {"map": "attention (each map: its min = 0, its max = 1)",
                                   "row": "attention (each row: its min = 0, its max = 1)",
                                   "none": "attention (each map: 0 to its max)",
                                   "all": "attention probability"}[normalize]
        cb = fig.colorbar(ScalarMappable(Normalize(0.0, top), cmap), ax=axes.ravel().tolist(),
                          shrink=min(0.9, 2.5 / max(R, 1) + 0.3), aspect=25, pad=0.02)
        cb.set_label(label, fontsize=fontsize)
        cb.ax.tick_params(labelsize=fontsize)
    if colorbar:  # constrained layout places the bars
        return fig
    fig.tight_layout(pad=0.3, rect=(0, 0, 1, 1 - 0.35 / fig.get_figheight()) if title else None)
    return fig


def plot_token_maps(maps, tokens=None, image=None, title=None, **kw) -> ExplainerFigure:
    """One row of maps ``(N, h, w)`` (e.g. averaged over layers and steps), optionally over ``image``."""
    a = to_numpy(maps) if not isinstance(maps, (list, tuple)) else stack_maps([maps])[0]
    if a.ndim != 3:
        raise InvalidSetting(f"maps must be (N, h, w), got shape {a.shape}")
    return plot_attention_maps(a[None], tokens=tokens, image=image, row_labels=[""], title=title, **kw)


def animate_maps(maps, tokens: Optional[Sequence[str]] = None, token_indices=None, step_labels=None,
                 interval: int = 250, cmap: str = "magma", cell: float = 1.6, title: Optional[str] = None,
                 max_frames: Optional[int] = None):
    """Animation of the attention maps over sampling steps (one panel per token).

    Args:
        maps: ``(S, N, h, w)``: per step the map of each token (e.g. averaged over layers).
        max_frames: keep at most this many evenly spaced steps (first and last included).
    Returns:
        a :class:`matplotlib.animation.FuncAnimation`; in a notebook show ``HTML(anim.to_jshtml())``,
        on disk :func:`save_animation` (GIF via Pillow). Its figure is ``anim._fig``.
    """
    from matplotlib.animation import FuncAnimation

    a = to_numpy(maps)
    if a.ndim != 4:
        raise InvalidSetting(f"maps must be (S, N, h, w), got shape {a.shape}")
    S, N = a.shape[:2]
    labels = list(step_labels) if step_labels is not None else [f"step {i} / {S - 1}" for i in range(S)]
    if max_frames is not None and S > max_frames >= 2:
        keep = sorted({int(round(x)) for x in np.linspace(0, S - 1, max_frames)})
        a, labels, S = a[keep], [labels[i] for i in keep], len(keep)
    cols = list(range(N)) if token_indices is None else list(token_indices)
    fig = new_figure(figsize=(cell * len(cols) + 0.3, cell + 0.55))
    axes = np.atleast_1d(fig.subplots(1, len(cols), squeeze=False)[0])
    ims = []
    for ax, c in zip(axes, cols):
        ax.set_xticks([])
        ax.set_yticks([])
        ax.set_title(tokens[c] if tokens is not None and c < len(tokens) else f"token {c}", fontsize=FS)
        ims.append(ax.imshow(a[0, c], cmap=cmap, vmin=0, vmax=max(a[:, c].max(), 1e-12)))
    label = fig.suptitle("", fontsize=FS)

    def frame(i):
        for im, c in zip(ims, cols):
            im.set_data(a[i, c])
        label.set_text(f"{title + ': ' if title else ''}{labels[i]}")
        return ims + [label]

    frame(0)
    fig.tight_layout(pad=0.3)
    return FuncAnimation(fig, frame, frames=S, interval=interval, blit=False)


def save_animation(anim, path, fps: int = 4, dpi: int = 80) -> Path:
    """Write an animation as a GIF with Pillow (no ffmpeg needed); returns the path."""
    from matplotlib.animation import PillowWriter

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    anim.save(str(path), writer=PillowWriter(fps=fps), dpi=dpi)
    close_figure(anim._fig)
    return path


def show_animation(anim):
    """``IPython.display.HTML`` of an animation (``to_jshtml``), the figure released afterwards."""
    from IPython.display import HTML

    html = anim.to_jshtml()
    close_figure(anim._fig)
    return HTML(html)


# -- read from a recording (ebca_viz.trace) ----------------------------------------

def _trace_layer_labels(tr) -> list:
    return [f"L{i} {short_layer(k)}" for i, k in enumerate(tr.layers)]


def plot_trace_maps(tr, by: str = "layer", token=None, image=None, **kw) -> ExplainerFigure:
    """Attention-map grid from a trace: ``by="layer"`` (rows = layers, mean over steps), ``"step"``
    (rows = steps, mean over layers) or ``"mean"`` (one row). ``token``: positions/words (default:
    the prompt's words). Other keywords go to :func:`plot_attention_maps`."""
    if by not in ("layer", "step", "mean"):
        raise InvalidSetting("by must be 'layer', 'step' or 'mean'")
    idx = tr.token_index(token) if token is not None else trace_prompt_positions(tr)
    m = tr.maps(aggregate=by)
    if by == "mean":
        m, rows = m[None], ["mean"]
    elif by == "layer":
        rows = _trace_layer_labels(tr)
    else:
        rows = [f"step {s}" for s in tr.steps]
    kw.setdefault("title", f"cross-attention maps by {by}")
    return plot_attention_maps(m, tokens=trace_tokens(tr), image=image, row_labels=rows, token_indices=idx, **kw)


def animate_trace(tr, token=None, **kw):
    """:func:`animate_maps` of a trace's per-step maps (mean over layers), the prompt's words by default."""
    idx = tr.token_index(token) if token is not None else trace_prompt_positions(tr)
    return animate_maps(tr.maps(aggregate="step"), tokens=trace_tokens(tr), token_indices=idx,
                        step_labels=[f"step {s}" for s in tr.steps], **kw)


#: what each guidance map measures (colour-bar label of :func:`plot_guidance`)
GUIDANCE_UNITS = {
    "cfg": "CFG: w \u00b7 \u2016\u03b5_c \u2212 \u03b5_u\u2016\u2082 per latent pixel",
    "seg": "SEG: s \u00b7 \u2016\u03b5_c \u2212 \u03b5_blur\u2016\u2082 per latent pixel",
}


def plot_guidance(tr, kind: str = "cfg", steps=4, image: int = 0, sample=None, factor: Optional[int] = None,
                  title: Optional[str] = None) -> ExplainerFigure:
    r"""Where guidance acts (:meth:`ebca_viz.Trace.guidance`): the map of what the guidance term added to
    the noise prediction at a few recorded steps, and its mean over pixels at every step.

    Top row: ``sample`` (if given), then the ``(h, w)`` maps of ``kind`` (``"cfg"``: ``w ||eps_c - eps_u||_2``,
    ``"seg"``: ``s ||eps_c - eps_blur||_2``, L2 over the latent channels) nearest-neighbour upscaled by
    ``factor`` to image pixels, on one shared colour scale from 0 (the colour bar, in noise-prediction
    units). Bottom: the mean magnitude over pixels per recorded step, for every kind the trace holds
    (the chosen one solid, the shown steps marked). Text is :data:`FS` / :data:`FS_TITLE` pt on a
    :data:`MAX_WIDTH_IN` wide figure (never shrunk in JupyterLab's output area).

    Args:
        tr: a trace recorded with ``"guidance"`` in its quantities (the default).
        kind: ``"cfg"`` or ``"seg"``.
        steps: how many recorded steps to map (evenly spaced, first and last included), or a list of
            values of :attr:`ebca_viz.Trace.steps`.
        image: which image of the batch.
        sample: the sampled image (PIL or ``(H, W[, 3])`` array), shown first for reference.
        factor: image pixels per latent pixel; default ``sample`` width / latent width, else 8 (SD's VAE).
    """
    g = to_numpy(tr.guidance(kind, image=image)).astype(np.float64)  # (S, h, w); raises if kind never acted
    S, h, w = g.shape
    rec = list(tr.steps)
    if isinstance(steps, int) and not isinstance(steps, bool):
        if steps < 1:
            raise InvalidSetting(f"steps must be a positive number of steps or a list of recorded steps, got {steps}")
        idx = sorted(set(np.linspace(0, S - 1, min(steps, S)).round().astype(int).tolist()))
    else:
        idx = []
        for st in steps:
            if st not in rec:
                raise InvalidSetting(f"steps: step {st!r} was not recorded; fix: pass steps from the recorded {rec}")
            idx.append(rec.index(st))
    img = None if sample is None else image_array(sample)
    if factor is None:
        factor = max(1, img.shape[1] // w) if img is not None else 8
    if isinstance(factor, bool) or not isinstance(factor, int) or factor < 1:
        raise InvalidSetting(f"factor must be a positive int (image pixels per latent pixel), got {factor!r}")
    shown = [np.kron(g[i], np.ones((factor, factor))) for i in idx]  # nearest-neighbour upscale
    finite = np.concatenate([m[np.isfinite(m)] for m in shown]) if shown else np.zeros(0)
    vmax = float(finite.max()) if finite.size and finite.max() > 0 else 1.0
    n = len(idx) + (img is not None)
    fig = new_figure(figsize=(MAX_WIDTH_IN, 5.2))
    gs = fig.add_gridspec(2, n, height_ratios=[1.1, 1])
    top = []
    if img is not None:
        ax = fig.add_subplot(gs[0, 0])
        ax.imshow(img, interpolation="nearest")
        ax.set_title("sample", fontsize=FS)
        top.append(ax)
    ts = tr.step_timesteps
    im = None
    for i, m in zip(idx, shown):
        ax = fig.add_subplot(gs[0, len(top)])
        im = ax.imshow(m, cmap="magma", vmin=0.0, vmax=vmax, interpolation="nearest")
        ax.set_title(f"step {rec[i]} (t={ts[i]:.0f})", fontsize=FS)
        top.append(ax)
    for ax in top:
        ax.set_xticks([])
        ax.set_yticks([])
    cb = fig.colorbar(im, ax=top, aspect=12, pad=0.02)
    cb.set_label(GUIDANCE_UNITS[kind].split(": ")[1].replace(" per latent pixel", ""), fontsize=FS)
    cb.ax.tick_params(labelsize=FS)
    ax = fig.add_subplot(gs[1, :])
    x = np.asarray(rec)
    for k in tr.guidance_kinds:
        gk = to_numpy(tr.guidance(k, image=image)).astype(np.float64).reshape(S, -1)
        mean = np.array([np.nan if not np.isfinite(r).any() else np.nanmean(r) for r in gk])
        style = dict(lw=2.0, color="C0") if k == kind else dict(lw=1.2, ls="--", color="C1")
        ax.plot(x, mean, label=k.upper(), **style)
        if k == kind:
            ax.plot(x[idx], mean[idx], "o", color="C0", ms=5, label="steps mapped above")
    ax.set_xlabel(TRACE_STEP_LABEL, fontsize=FS)
    ax.set_ylabel("mean over pixels\n(colour-bar units)", fontsize=FS)
    ax.tick_params(labelsize=FS)
    ax.set_ylim(bottom=0)
    ax.legend(fontsize=FS, loc="best")
    fig.suptitle(title or f"where guidance acts: {GUIDANCE_UNITS[kind]}", fontsize=FS_TITLE)
    return fig



__all__ = ['plot_attention_maps', 'plot_token_maps', 'animate_maps', 'save_animation', 'show_animation', 'plot_trace_maps', 'animate_trace', 'GUIDANCE_UNITS', 'plot_guidance']
