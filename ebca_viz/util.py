r"""Small helpers with no better home: fast mode for notebooks and CI, the default device, display upscaling."""
from __future__ import annotations

import os

FAST_ENV = "EBCA_VIZ_FAST"

def fast_mode() -> bool:
    """True when the environment variable ``EBCA_VIZ_FAST`` is set to a true value (``1``, ``true``,
    ``yes``): notebooks and panels then use fewer steps and samples (CI runs them this way)."""
    return os.environ.get(FAST_ENV, "").strip().lower() in ("1", "true", "yes", "on")


def pick(full, fast):
    """``fast`` in fast mode (:func:`fast_mode`), else ``full``: ``steps = pick(25, 4)``."""
    return fast if fast_mode() else full


def default_device() -> str:
    """``"cuda"`` when a GPU is visible, else ``"cpu"``."""
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"


def upscale(img, size: int = 256):
    """Nearest-neighbour upscale of a small PIL image to ``size`` pixels wide (for display)."""
    from PIL import Image

    if img.width >= size:
        return img
    return img.resize((size, size * img.height // img.width), Image.NEAREST)


__all__ = ["FAST_ENV", "fast_mode", "pick", "default_device", "upscale"]
