"""Shapes-world detector metrics, when :mod:`ebca_viz.shapes.detect` is importable.

A shapes-world prompt ``"a red circle and a blue square"`` is parsed into requests
``[("red", "circle"), ("blue", "square")]``; the detector's objects are scored with
``score_single`` (one object) or ``score_pair`` (two). Any other prompt, or a copy of the
package without the detector, gives ``None`` (the metric is simply absent from the results).
"""
from __future__ import annotations

from typing import Optional


def _detect_module():
    try:
        from ..shapes import detect, world
    except ImportError:
        return None, None
    if not hasattr(detect, "detect"):
        return None, None
    return detect, world


def available() -> bool:
    return _detect_module()[0] is not None


def parse_shapes_prompt(prompt: str) -> Optional[list]:
    """``"a red circle and a blue square"`` -> ``[("red", "circle"), ("blue", "square")]`` or None."""
    _, world = _detect_module()
    if world is None:
        return None
    out = []
    for part in prompt.strip().lower().split(" and "):
        w = part.split()
        if len(w) != 3 or w[0] not in ("a", "an") or w[1] not in world.COLOURS or w[2] not in world.SHAPES:
            return None
        out.append((w[1], w[2]))
    return out if 1 <= len(out) <= 2 else None


def detector_scores(image, prompt: str) -> Optional[dict]:
    """Detector scores of one image for a shapes-world prompt, else None."""
    detect, _ = _detect_module()
    req = parse_shapes_prompt(prompt) if detect is not None else None
    if req is None:
        return None
    import numpy as np

    from ..sampling import score

    s = score([np.asarray(image.convert("RGB"))], [req])[0]
    return {k: (v if isinstance(v, (str, int, float)) else bool(v)) for k, v in s.items()}
