r"""Attention maps: token x row grids over an image, and their animation over steps.
"""
from __future__ import annotations

from pathlib import Path
from typing import Optional, Sequence

import numpy as np

from .base import FS, FS_TITLE, ExplainerFigure, close_figure, image_array, new_figure, stack_maps, to_numpy


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
        raise ValueError(f"maps must be (R, N, h, w), (N, h, w) or a list of (N, h, w); got shape {a.shape}")
    R, N = a.shape[:2]
    cols = list(range(N)) if token_indices is None else list(token_indices)
    for c in cols:
        if not 0 <= c < N:
            raise ValueError(f"token_indices: {c} out of range for {N} tokens")
    if row_labels is not None and len(row_labels) != R:
        raise ValueError(f"row_labels has {len(row_labels)} entries for {R} rows of maps")
    if normalize not in ("map", "row", "none", "all"):
        raise ValueError("normalize must be 'map', 'row', 'none' or 'all'")
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
        raise ValueError(f"maps must be (N, h, w), got shape {a.shape}")
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
        raise ValueError(f"maps must be (S, N, h, w), got shape {a.shape}")
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


__all__ = ['plot_attention_maps', 'plot_token_maps', 'animate_maps', 'save_animation', 'show_animation']
