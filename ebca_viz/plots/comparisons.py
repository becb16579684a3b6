r"""Images side by side (with their difference) and image grids.
"""
from __future__ import annotations

import math
import textwrap
from typing import Mapping, Optional, Sequence

import numpy as np

from .base import FS, FS_TITLE, ExplainerFigure, image_array, new_figure, resize_map
from ..errors import InvalidSetting


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
        raise InvalidSetting("compare_images needs at least one image")
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


__all__ = ['compare_images', 'image_grid']
