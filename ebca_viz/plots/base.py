r"""The figure every plot returns, text sizes, array helpers and layout helpers shared by :mod:`ebca_viz.plots`.
"""
from __future__ import annotations

import io
import textwrap
from pathlib import Path
from typing import Optional

import numpy as np
from matplotlib.figure import Figure
from ..errors import InvalidSetting


class ExplainerFigure(Figure):
    """A plain matplotlib Figure with an Agg canvas that Jupyter displays as PNG.

    Layout is the plotting function's (``tight_layout``, or :func:`readable`, which
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
    close_figure(fig)
    return path


def close_figure(fig) -> None:
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


def short_layer(name: str) -> str:
    """``down_blocks.1.attentions.0.transformer_blocks.0.attn2.processor`` -> ``down1.0``."""
    parts = name.split(".")
    try:
        if parts[0] == "mid_block":
            return f"mid.{parts[2]}"
        return f"{parts[0].replace('_blocks', '')}{parts[1]}.{parts[3]}"
    except IndexError:
        return name


def layer_ticks(ax, layer_names, L):
    ax.set_xticks(range(L))
    if layer_names is not None:
        ax.set_xticklabels([f"{i} {short_layer(n)}" for i, n in enumerate(layer_names)], rotation=50, fontsize=FS)
    ax.set_xlabel("cross-attention layer (execution order)")


def panel_grid(n: int, ncols: Optional[int], panel: tuple):
    """``n`` axes in rows of ``ncols`` (default: one row), each ``panel = (w, h)`` inches (a 2-column layout
    is 9 inches wide). Surplus grid cells are switched off; the first of them is kept as ``fig._ebca_spare``
    (a place for the legends), else that attribute is None. Returns ``(axes list, fig)``."""
    ncols = n if not ncols else max(1, min(int(ncols), n))
    rows = -(-n // ncols)
    w = panel[0] * ncols if ncols == n else 9.0
    fig = new_figure(figsize=(w, panel[1] * rows))
    grid = np.atleast_1d(fig.subplots(rows, ncols)).ravel()
    for ax in grid[n:]:
        ax.axis("off")
    fig._ebca_spare = grid[n] if len(grid) > n else None
    return list(grid[:n]), fig


def legends_to_spare(fig, axes) -> bool:
    """Move the legends of ``axes`` into ``fig._ebca_spare`` (stacked, 10 pt); False when there is no spare."""
    spare = getattr(fig, "_ebca_spare", None)
    if spare is None:
        return False
    items = []
    for ax in axes:
        leg = ax.get_legend()
        if leg is None:
            continue
        h, l = ax.get_legend_handles_labels()
        l = [textwrap.fill(x, 40) for x in l]  # the free cell is ~4 inches wide
        items.append((h, l, leg.get_title().get_text()))
        leg.remove()
    y = 1.0
    for h, l, t in items:
        lg = spare.legend(h, l, loc="upper left", bbox_to_anchor=(0.0, y), fontsize=FS_TITLE, title=t or None,
                          frameon=False)
        spare.add_artist(lg)
        y -= 0.09 * (sum(x.count("\n") + 1 for x in l) + 1.5)
    return True


def readable(fig, min_pt: float = 10.0, max_width: float = 9.0, legend_loc=None):
    """Make a figure readable at its displayed size: every text (titles, labels, ticks, legends,
    colourbar labels, annotations) at least ``min_pt`` points, the figure at most ``max_width``
    inches wide (narrowed, never enlarged), axes titles wider than their axes wrapped onto more
    lines, legends moved to ``legend_loc`` when given (``"best"``, ``"below"`` the axes, or one
    location per legend in axes order, None keeping that one where it is); then laid out again.
    Returns ``fig``."""
    import textwrap
    import warnings

    from matplotlib.text import Text

    if min_pt <= 0 or max_width <= 0:
        raise InvalidSetting(f"min_pt and max_width must be positive, got {min_pt}, {max_width}")
    for t in fig.findobj(Text):
        if t.get_text() and t.get_fontsize() < min_pt:
            t.set_fontsize(min_pt)
    w, h = fig.get_size_inches()
    if w > max_width:
        fig.set_size_inches(max_width, h)
    if legend_loc is not None:
        legs = [ax.get_legend() for ax in fig.axes if ax.get_legend() is not None]
        locs = [legend_loc] * len(legs) if isinstance(legend_loc, str) else list(legend_loc)
        if len(locs) != len(legs):
            raise InvalidSetting(f"legend_loc: give one location or one per legend ({len(legs)}), got {legend_loc!r}")
        for leg, loc in zip(legs, locs):
            if loc == "below":  # under the axes (below the tick and axis labels), two columns
                ax = leg.axes
                h, l = ax.get_legend_handles_labels()
                leg.remove()
                ax.legend(h, l, loc="upper center", bbox_to_anchor=(0.5, -1.0), ncol=2, fontsize=min_pt,
                          frameon=False)
            elif loc is not None:
                leg.set_loc(loc)

    rect = getattr(fig, "_ebca_rect", None)
    if rect is None and fig._suptitle is not None and fig._suptitle.get_text():  # keep room for the suptitle
        n = fig._suptitle.get_text().count("\n") + 1
        rect = (0, 0, 1, 1 - (0.1 + 0.2 * n) / fig.get_figheight())

    def layout():
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                fig.tight_layout(rect=rect)
        except Exception:  # a layout that tight_layout cannot handle keeps its own
            pass

    layout()
    renderer = fig.canvas.get_renderer()
    wrapped = False
    for ax in fig.axes:
        for t in (ax.title, ax._left_title, ax._right_title):
            text = t.get_text()
            if not text:
                continue
            tw, aw = t.get_window_extent(renderer).width, ax.get_window_extent(renderer).width
            if tw > 1.02 * aw and aw > 0:
                lines = text.split("\n")
                longest = max(len(x) for x in lines)
                width = max(12, int(longest * aw / tw * 0.95))
                t.set_text("\n".join(textwrap.fill(x, width) for x in lines))
                wrapped = True
    if wrapped:
        layout()
    return fig


def add_colorbar(fig, label: str, vmin: float = 0.0, vmax: float = 1.0, cmap: str = "magma", width: float = 0.025):
    """A colourbar on the right of ``fig`` for maps drawn with ``cmap`` from ``vmin`` to ``vmax``
    (for grids whose plotting function has none): the axes make room, the bar spans the middle.
    Returns ``fig``."""
    import matplotlib as mpl

    if not vmax > vmin:
        raise InvalidSetting(f"vmax must exceed vmin, got {vmin}, {vmax}")
    right = 1 - width - 0.11
    fig.subplots_adjust(right=right)
    cax = fig.add_axes([right + 0.02, 0.2, width, 0.6])
    fig.colorbar(mpl.cm.ScalarMappable(mpl.colors.Normalize(vmin, vmax), cmap=cmap), cax=cax, label=label)
    return fig


#: x-axis label of every per-step figure read from a trace
TRACE_STEP_LABEL = "recorded UNet call (0 = noisiest)"


__all__ = ['ExplainerFigure', 'FS', 'FS_TITLE', 'MAX_WIDTH_IN', 'wrap_titles', 'new_figure', 'figure_png', 'save_figure', 'to_numpy', 'image_array', 'resize_map', 'stack_maps', 'readable', 'add_colorbar', 'short_layer', 'close_figure', 'layer_ticks', 'panel_grid', 'legends_to_spare', 'TRACE_STEP_LABEL']
