r"""Figures that explain energy-based cross-attention: maps, energies, contexts, SEG, comparisons.

Every plotting function takes plain tensors / arrays (``torch.Tensor`` or ``numpy``; the
dimensions are named in each docstring) or, where said, a trace, and returns a
:class:`matplotlib.figure.Figure`. Figures are built **without pyplot** (``Figure()`` on an Agg
canvas), so nothing leaks into pyplot's global state: no figure stays open, no backend is
switched, and a notebook shows exactly the figures a cell returns or ``display()``\ s.
Jupyter renders them through :meth:`ExplainerFigure._repr_png_`.

Dimension names used below:

* ``S`` sampling steps (0 = noisiest), ``L`` cross-attention layers (execution order),
* ``N`` tokens (0 = start-of-text), ``h, w`` a layer's latent grid, ``D`` context dimension,
* ``R`` rows of a grid (layers or steps, whatever the caller stacked).

Nothing here loads a model or samples: that is :mod:`ebca_viz.notebook` (``load_model``,
``sample_traced``, ``capture_attention``, ``fast_mode`` / ``pick``), whose names this module still
answers for (``viz.pick``, ``viz.load_model``, ...) by re-export.
"""
from __future__ import annotations

import io
import math
import textwrap
from pathlib import Path
from typing import Mapping, Optional, Sequence

import numpy as np
from matplotlib.figure import Figure

from .events import prompt_token_labels
from .events import token_labels as event_token_labels

# ---------------------------------------------------------------------------------------------
# figure plumbing (no pyplot)
# ---------------------------------------------------------------------------------------------
class ExplainerFigure(Figure):
    """A plain matplotlib Figure with an Agg canvas that Jupyter displays as PNG.

    Layout is the plotting function's (``tight_layout``, or :func:`ebca_viz.energy_plots.readable`, which
    also wraps titles to their axes); :func:`wrap_titles` wraps titles before a layout."""

    def __init__(self, *a, **kw):
        super().__init__(*a, **kw)
        from matplotlib.backends.backend_agg import FigureCanvasAgg

        FigureCanvasAgg(self)

    def _repr_png_(self):
        return figure_png(self)


#: text sizes (points) of every figure here: at the default 100 dpi and at most :data:`MAX_WIDTH_IN` wide,
#: JupyterLab shows them unshrunk, so no text is under 9 pt at its displayed size
FS = 10
FS_TITLE = 11
#: the widest figure (inches) that fits JupyterLab's output area (850 px at 100 dpi) without shrinking
MAX_WIDTH_IN = 8.5


def wrap_titles(fig) -> None:
    """Wrap every axes title to the width of its axes (about 0.55 em per character)."""
    for ax in fig.axes:
        for t in (ax.title, ax._left_title, ax._right_title):
            text = t.get_text()
            if not text:
                continue
            width_pt = ax.get_position().width * fig.get_figwidth() * 72
            chars = max(8, int(width_pt / (0.55 * float(t.get_fontsize()))))
            lines = [textwrap.fill(line, chars) for line in text.split("\n")]
            t.set_text("\n".join(lines))


def new_figure(figsize=(6, 4), **kw) -> ExplainerFigure:
    """A figure outside pyplot (nothing to close, nothing global). A figure asked wider than
    :data:`MAX_WIDTH_IN` is scaled down to it (both sides), so its text is not shrunk on screen."""
    w, h = figsize
    if w > MAX_WIDTH_IN:
        w, h = MAX_WIDTH_IN, h * MAX_WIDTH_IN / w
    return ExplainerFigure(figsize=(w, h), **kw)


def figure_png(fig: Figure, dpi: int = 90) -> bytes:
    """PNG bytes of a figure (used by the widget panel and Jupyter)."""
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=dpi, bbox_inches="tight")
    return buf.getvalue()


def save_figure(fig: Figure, path, dpi: int = 90, palette: bool = False) -> Path:
    """Write ``fig`` to ``path`` (format from the suffix) and release it; returns the path.

    ``palette=True`` (PNG only) stores 256 adaptive colours instead of RGBA: several times
    smaller for image-heavy figures, which is what the README gallery wants.
    Figures made here are not registered with pyplot; a pyplot figure passed in is closed.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    if palette and path.suffix.lower() == ".png":
        import io

        from PIL import Image

        buf = io.BytesIO()
        fig.savefig(buf, format="png", dpi=dpi, bbox_inches="tight")
        buf.seek(0)
        Image.open(buf).convert("RGB").quantize(256).save(path, optimize=True)
    else:
        fig.savefig(path, dpi=dpi, bbox_inches="tight")
    _close(fig)
    return path


def _close(fig) -> None:
    import sys

    plt = sys.modules.get("matplotlib.pyplot")
    if plt is not None:  # a pyplot figure: unregister it (a no-op for figures made here)
        plt.close(fig)


def to_numpy(x) -> np.ndarray:
    """Tensor / array / nested list -> float numpy array (detached, on CPU)."""
    if hasattr(x, "detach"):
        x = x.detach().float().cpu().numpy()
    return np.asarray(x, dtype=np.float64)


def image_array(img) -> np.ndarray:
    """PIL image, ``(H, W, 3)`` array in [0, 1] or [0, 255], or ``(3, H, W)`` / ``(1, 3, H, W)`` tensor
    in [-1, 1] or [0, 1] -> ``(H, W, 3)`` float array in [0, 1]."""
    if hasattr(img, "convert") and hasattr(img, "size"):  # PIL
        return np.asarray(img.convert("RGB"), dtype=np.float64) / 255.0
    a = to_numpy(img)
    if a.ndim == 4:
        a = a[0]
    if a.ndim == 3 and a.shape[0] in (1, 3) and a.shape[-1] not in (1, 3):
        a = np.moveaxis(a, 0, -1)
    if a.ndim == 2:
        a = np.repeat(a[..., None], 3, axis=-1)
    if a.shape[-1] == 1:
        a = np.repeat(a, 3, axis=-1)
    if a.min() < -1e-6:
        a = (a + 1.0) / 2.0
    elif a.max() > 1.0 + 1e-6:
        a = a / 255.0
    return np.clip(a, 0.0, 1.0)


def resize_map(m, size) -> np.ndarray:
    """Bilinear resize of one map ``(h, w)`` (or a stack ``(..., h, w)``) to ``size = (H, W)``."""
    import torch
    import torch.nn.functional as F

    a = torch.as_tensor(to_numpy(m), dtype=torch.float32)
    lead = a.shape[:-2]
    a = a.reshape(-1, 1, *a.shape[-2:])
    if tuple(a.shape[-2:]) != tuple(size):
        a = F.interpolate(a, size=tuple(size), mode="bilinear", align_corners=False)
    return a.reshape(*lead, *size).numpy().astype(np.float64)


def stack_maps(maps, size=None) -> np.ndarray:
    """A list of maps with different grids (one per layer, each ``(N, h_l, w_l)``) -> one array
    ``(R, N, H, W)`` at the largest grid (or ``size``)."""
    arrs = [to_numpy(m) for m in maps]
    if size is None:
        size = max((a.shape[-2:] for a in arrs), key=lambda s: s[0] * s[1])
    return np.stack([resize_map(a, size) for a in arrs])


def token_labels(tokenizer_or_pipe, prompt: str, n: Optional[int] = None, with_index: bool = True) -> list:
    """Readable labels of a prompt's token positions: ``["0 <sot>", "1 a", "2 red", ..., "k <eot>"]``
    (:func:`ebca_viz.events.prompt_token_labels`; ``n`` pads with ``<pad>`` / truncates)."""
    return prompt_token_labels(tokenizer_or_pipe, prompt, n=n, with_index=with_index)


def prompt_token_indices(tokenizer_or_pipe, prompt: str) -> list:
    """Positions of the prompt's words (excluding start/end-of-text): ``[1, ..., k]``."""
    tok = getattr(tokenizer_or_pipe, "tokenizer", tokenizer_or_pipe)
    return list(range(1, len(tok(prompt).input_ids) - 1))


# ---------------------------------------------------------------------------------------------
# attention maps
# ---------------------------------------------------------------------------------------------
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
    _close(anim._fig)
    return path


# ---------------------------------------------------------------------------------------------
# energies
# ---------------------------------------------------------------------------------------------
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
        raise ValueError(f"before must be (S, L), got shape {b.shape}")
    S, L = b.shape
    a = None if after is None else to_numpy(after).reshape(S, L)
    ref = None if reference is None else to_numpy(reference).reshape(-1, L)
    if steps_to_show is None:
        steps_to_show = sorted({0, S // 2, S - 1})
    if relative is None:
        relative = ref is not None and ref.shape == b.shape
    if relative:
        if ref is None or ref.shape != b.shape:
            raise ValueError("relative=True needs a reference of the same shape (S, L) as before")
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
        ax1.set_xticklabels([_short_layer(n) for n in layer_names], rotation=60, fontsize=FS)
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
        ax.set_xticklabels([_short_layer(n) for n in layer_names], rotation=60, fontsize=FS)
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
        raise ValueError(f"gradients differ in size: {g1.size} vs {g2.size}")
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


# ---------------------------------------------------------------------------------------------
# contexts
# ---------------------------------------------------------------------------------------------
def pca_2d(x) -> np.ndarray:
    """Project points ``(..., D)`` onto their two principal components -> ``(..., 2)``."""
    a = to_numpy(x)
    flat = a.reshape(-1, a.shape[-1])
    c = flat - flat.mean(0, keepdims=True)
    _, _, vt = np.linalg.svd(c, full_matrices=False)
    return (c @ vt[:2].T).reshape(*a.shape[:-1], 2)


def plot_context_trajectories(contexts=None, tokens: Optional[Sequence[str]] = None, token_indices=None,
                              norms=None, drift=None, title: Optional[str] = None,
                              relative: bool = True) -> ExplainerFigure:
    """How the context vectors move through the layers.

    Args:
        contexts: ``(L+1, N, D)``: the prompt embedding (row 0) then the context leaving each layer
            (one step, conditional half). Gives all three panels.
        norms: ``(L+1, N)`` per-token norms ``|c_j|`` (used when ``contexts`` is None).
        drift: ``(L+1, N)`` per-token distance from the prompt embedding ``|c_j - c_j^0|``.
        token_indices: which tokens to draw (default: all ``N``, at most 12).

        relative: project the displacements ``c_j^l - c_j^0`` (every path starts at the origin, the
            PCA shows how the tokens move) instead of the positions (dominated by token identity).

    Panels: norm per token over layers; drift from the prompt embedding; 2-D PCA projection of
    every token's path (circle = prompt embedding, arrow head = last layer).
    """
    if contexts is not None:
        c = to_numpy(contexts)
        if c.ndim != 3:
            raise ValueError(f"contexts must be (L+1, N, D), got shape {c.shape}")
        norms = np.linalg.norm(c, axis=-1)
        drift = np.linalg.norm(c - c[:1], axis=-1)
    elif norms is None:
        raise ValueError("give contexts (L+1, N, D) or norms (L+1, N)")
    else:
        c = None
        norms = to_numpy(norms)
        drift = None if drift is None else to_numpy(drift)
    N = norms.shape[1]
    idx = list(range(min(N, 12))) if token_indices is None else list(token_indices)
    panels = 1 + (drift is not None) + (c is not None)
    fig = new_figure(figsize=(4.2 * panels, 3.6))
    axes = np.atleast_1d(fig.subplots(1, panels))
    lab = lambda j: tokens[j] if tokens is not None and j < len(tokens) else f"token {j}"  # noqa: E731
    x = np.arange(norms.shape[0])
    for k, j in enumerate(idx):
        axes[0].plot(x, norms[:, j], "-", color=f"C{k % 10}", label=lab(j))
    axes[0].set_xlabel("layer (0 = prompt embedding)")
    axes[0].set_ylabel("|c_j|")
    axes[0].set_title("context norm per token")
    axes[0].legend(fontsize=FS, ncol=2)
    p = 1
    if drift is not None:
        for k, j in enumerate(idx):
            axes[p].plot(x, drift[:, j], "-", color=f"C{k % 10}")
        axes[p].set_xlabel("layer (0 = prompt embedding)")
        axes[p].set_ylabel("|c_j - c_j^0|")
        axes[p].set_title("drift from the prompt embedding")
        p += 1
    if c is not None:
        sel = c[:, idx]
        pts = pca_2d(sel - sel[:1] if relative else sel)  # (L+1, n, 2)
        if relative:
            pts = pts - pts[:1]
        ax = axes[p]
        for k in range(len(idx)):
            col = f"C{k % 10}"
            ax.plot(pts[:, k, 0], pts[:, k, 1], "-", color=col, lw=1)
            ax.plot(pts[0, k, 0], pts[0, k, 1], "o", color=col, ms=4)
            if len(pts) > 1:
                ax.annotate("", xy=pts[-1, k], xytext=pts[-2, k],
                            arrowprops=dict(arrowstyle="->", color=col, lw=1.2))
        ax.set_xlabel("PC 1")
        ax.set_ylabel("PC 2")
        ax.set_title("token paths (PCA of c - c^0)" if relative else "token paths (PCA)")
    if title:
        fig.suptitle(title, fontsize=FS_TITLE)
    fig.tight_layout()
    return fig


# ---------------------------------------------------------------------------------------------
# SEG
# ---------------------------------------------------------------------------------------------
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
        raise ValueError(f"energies must have one value per sigma ({s.size}), got shape {e.shape}")
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


# ---------------------------------------------------------------------------------------------
# images
# ---------------------------------------------------------------------------------------------
def compare_images(images, titles: Optional[Sequence[str]] = None, size: float = 2.6,
                   diff: bool = False, title: Optional[str] = None,
                   diff_title: Optional[str] = None) -> ExplainerFigure:
    """Side by side images (before / after, vanilla / energy, ...).

    Args:
        images: a list of images or a mapping ``title -> image`` (PIL, ``(H, W, 3)`` arrays, tensors).
        diff: add a panel with ``|last - first|`` (mean over colour channels).
        diff_title: words for that panel's title (default ``"|last - first|"``), e.g.
            ``"how much EBCU changed each pixel"``; the mean per pixel is appended.
    """
    if isinstance(images, Mapping):
        titles = list(images.keys()) if titles is None else titles
        images = list(images.values())
    arrs = [image_array(im) for im in images]
    if not arrs:
        raise ValueError("compare_images needs at least one image")
    n = len(arrs) + (1 if diff and len(arrs) > 1 else 0)
    fig = new_figure(figsize=(size * n, size + (0.5 if title else 0.3)))
    axes = np.atleast_1d(fig.subplots(1, n))
    width = max(12, int(size * 9))  # characters that fit above one panel at fontsize 9
    for i, a in enumerate(arrs):
        axes[i].imshow(a, interpolation="nearest")
        t = titles[i] if titles is not None and i < len(titles) else ""
        axes[i].set_title("\n".join(textwrap.fill(line, width) for line in str(t).split("\n")), fontsize=FS)
    if n > len(arrs):
        d = np.abs(arrs[-1] - resize_map(np.moveaxis(arrs[0], -1, 0), arrs[-1].shape[:2]).transpose(1, 2, 0))
        im = axes[-1].imshow(255 * d.mean(-1), cmap="inferno", vmin=0)  # grey levels of 255, like the title
        head = diff_title or "pixels that changed (last vs first)"
        axes[-1].set_title(textwrap.fill(f"{head}, mean {255 * d.mean():.1f}/255 per pixel", width), fontsize=FS)
        fig.colorbar(im, ax=axes[-1], fraction=0.046)
    for ax in axes:
        ax.set_xticks([])
        ax.set_yticks([])
    if title:
        fig.suptitle(title, fontsize=FS_TITLE)
    fig.tight_layout()
    return fig


def image_grid(images, ncols: int = 4, titles=None, size: float = 1.8, title=None) -> ExplainerFigure:
    """Many images in a grid (e.g. benchmark samples)."""
    arrs = [image_array(im) for im in images]
    n = max(1, len(arrs))
    ncols = min(ncols, n)
    nrows = math.ceil(n / ncols)
    fig = new_figure(figsize=(size * ncols, size * nrows + (0.4 if title else 0.1)))
    axes = np.atleast_2d(fig.subplots(nrows, ncols, squeeze=False))
    for i, ax in enumerate(axes.ravel()):
        ax.set_xticks([])
        ax.set_yticks([])
        if i < len(arrs):
            ax.imshow(arrs[i], interpolation="nearest")
            if titles is not None and i < len(titles):
                ax.set_title(titles[i], fontsize=FS)
        else:
            ax.axis("off")
    if title:
        fig.suptitle(title, fontsize=FS_TITLE)
    fig.tight_layout(pad=0.3)
    return fig


def upscale(img, size: int = 256):
    """Nearest-neighbour upscale of a small PIL image to ``size`` pixels wide (for display)."""
    from PIL import Image

    if img.width >= size:
        return img
    return img.resize((size, size * img.height // img.width), Image.NEAREST)


# ---------------------------------------------------------------------------------------------
# traces (ebca_viz.trace): the same figures, read from a recording
# ---------------------------------------------------------------------------------------------
# a trace's step axis counts the UNet calls it recorded (PNDM, SD 1.5's default, makes one more than
# num_inference_steps; a steps= filter keeps fewer)
TRACE_STEP_LABEL = "recorded UNet call (0 = noisiest)"


def trace_tokens(tr) -> list:
    """``"i word"`` labels of a trace's token positions (``<sot>``, ``<eot>`` for the special tokens)."""
    toks = tr.tokens
    if toks is None:
        n = tr.maps(aggregate="mean").shape[0] if "maps" in tr.quantities else 0
        return [f"{i}" for i in range(n)]
    return event_token_labels(toks)


def trace_prompt_positions(tr, include_sot: bool = False, include_eot: bool = False) -> list:
    """Positions of the prompt's words in a trace (up to the first end-of-text)."""
    toks = tr.tokens
    if toks is None:
        raise ValueError("this trace has no token labels (bare UNet?): pass token positions explicitly")
    end = toks.index("<|endoftext|>", 1) if "<|endoftext|>" in toks[1:] else len(toks)
    idx = list(range(0 if include_sot else 1, end))
    if include_eot and end < len(toks):
        idx.append(end)
    return idx


def _trace_layer_labels(tr) -> list:
    return [f"L{i} {_short_layer(k)}" for i, k in enumerate(tr.layers)]


def plot_trace_maps(tr, by: str = "layer", token=None, image=None, **kw) -> ExplainerFigure:
    """Attention-map grid from a trace: ``by="layer"`` (rows = layers, mean over steps), ``"step"``
    (rows = steps, mean over layers) or ``"mean"`` (one row). ``token``: positions/words (default:
    the prompt's words). Other keywords go to :func:`plot_attention_maps`."""
    if by not in ("layer", "step", "mean"):
        raise ValueError("by must be 'layer', 'step' or 'mean'")
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


def plot_trace_energies(tr, reference=None, kind: str = "posterior", **kw) -> ExplainerFigure:
    """:func:`plot_energy_curves` of a trace: energy ``kind`` entering (``before``) and leaving
    (``after``) every layer; ``reference``: a vanilla trace of the same run (dashed)."""
    b, a = tr.energies(kind, "before"), tr.energies(kind, "after")
    ref = None if reference is None else reference.energies(kind, "before")
    labels = {"posterior": "E(K;Q) + E(K)", "context": "E(K;Q)", "prior": "E(K)", "query": "E(Q;K)"}
    kw.setdefault("energy_label", labels.get(kind, kind))
    kw.setdefault("step_label", TRACE_STEP_LABEL)
    return plot_energy_curves(b, a, reference=ref, layer_names=tr.layers, **kw)


def trace_context_path(tr, step: int = -1, image: int = 0):
    """``(L+1, N, D)``: the prompt embedding of ``step`` then the context after every layer
    (needs ``quantities`` with ``"contexts"``)."""
    i = tr.steps.index(tr.steps[step]) if step < 0 else tr.steps.index(step)
    c = tr.contexts(image=image)[i].float()
    p = tr.prompt_embeds(image=image)[i].float()
    return np.concatenate([to_numpy(p)[None], to_numpy(c)])


def plot_trace_contexts(tr, step: int = -1, token=None, **kw) -> ExplainerFigure:
    """:func:`plot_context_trajectories` of one recorded step: with ``"contexts"`` recorded all three
    panels (norms, drift, PCA paths); else norms and drift from ``"context_norms"``."""
    idx = tr.token_index(token) if token is not None else trace_prompt_positions(tr, include_sot=False)
    toks = trace_tokens(tr)
    labels = [toks[i] for i in idx]
    if "contexts" in tr.quantities:
        c = trace_context_path(tr, step)[:, idx]
        return plot_context_trajectories(c, tokens=labels, **kw)
    i = step if step < 0 else tr.steps.index(step)
    nb = to_numpy(tr.context_norms("before"))[i]  # (L, N)
    na = to_numpy(tr.context_norms("after"))[i]
    d = to_numpy(tr.drift())[i]
    norms = np.concatenate([nb[:1], na])[:, idx]
    drift = np.concatenate([np.zeros_like(d[:1]), d])[:, idx]
    return plot_context_trajectories(norms=norms, drift=drift, tokens=labels, **kw)


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
            raise ValueError(f"steps must be a positive number of steps or a list of recorded steps, got {steps}")
        idx = sorted(set(np.linspace(0, S - 1, min(steps, S)).round().astype(int).tolist()))
    else:
        idx = []
        for st in steps:
            if st not in rec:
                raise ValueError(f"steps: step {st!r} was not recorded; recorded steps are {rec}")
            idx.append(rec.index(st))
    img = None if sample is None else image_array(sample)
    if factor is None:
        factor = max(1, img.shape[1] // w) if img is not None else 8
    if isinstance(factor, bool) or not isinstance(factor, int) or factor < 1:
        raise ValueError(f"factor must be a positive int (image pixels per latent pixel), got {factor!r}")
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


def animate_trace(tr, token=None, **kw):
    """:func:`animate_maps` of a trace's per-step maps (mean over layers), the prompt's words by default."""
    idx = tr.token_index(token) if token is not None else trace_prompt_positions(tr)
    return animate_maps(tr.maps(aggregate="step"), tokens=trace_tokens(tr), token_indices=idx,
                        step_labels=[f"step {s}" for s in tr.steps], **kw)


# ---------------------------------------------------------------------------------------------
# notebook helpers
# ---------------------------------------------------------------------------------------------
def show_animation(anim):
    """``IPython.display.HTML`` of an animation (``to_jshtml``), the figure released afterwards."""
    from IPython.display import HTML

    html = anim.to_jshtml()
    _close(anim._fig)
    return HTML(html)


def _short_layer(name: str) -> str:
    """``down_blocks.1.attentions.0.transformer_blocks.0.attn2.processor`` -> ``down1.0``."""
    parts = name.split(".")
    try:
        if parts[0] == "mid_block":
            return f"mid.{parts[2]}"
        return f"{parts[0].replace('_blocks', '')}{parts[1]}.{parts[3]}"
    except IndexError:
        return name


# notebook helpers that used to live here (they load models and sample): re-exported, imported lazily
_NOTEBOOK_NAMES = ("fast_mode", "pick", "default_device", "load_model", "capture_attention", "FAST_ENV")


def __getattr__(name):
    if name in _NOTEBOOK_NAMES:
        from . import notebook

        return getattr(notebook, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = [
    "ExplainerFigure", "new_figure", "figure_png", "save_figure",
    "to_numpy", "image_array", "resize_map", "stack_maps", "token_labels", "prompt_token_indices",
    "plot_attention_maps", "plot_token_maps", "animate_maps", "save_animation", "plot_energy_curves",
    "plot_energy_heatmap", "plot_descent", "plot_gradient_check", "pca_2d", "plot_context_trajectories",
    "plot_seg_energy", "compare_images", "image_grid", "upscale", "trace_tokens", "trace_prompt_positions",
    "plot_trace_maps", "plot_trace_energies", "trace_context_path", "plot_trace_contexts", "plot_trace_seg",
    "plot_guidance", "GUIDANCE_UNITS", "animate_trace", "show_animation",
]
