"""Deterministic detector for shapes-world images, and the scoring of prompts against it.

Pipeline for one image ``(H, W, 3) uint8`` (or float in [0, 1]):

1. foreground: pixels whose brightest channel is ``>= fg_threshold`` (background is black);
2. colour: nearest palette colour (:data:`.world.COLOURS`) after normalising each pixel by its
   brightest channel (so anti-aliased, darker edge pixels keep their hue); pixels farther than
   ``colour_threshold`` from every palette hue are ``"unknown"`` and belong to no object;
3. objects: 8-connected components of each colour's mask with at least ``min_area`` pixels
   (scaled with ``(H / 32) ** 2``);
4. core: the component's pixels at least 0.4 x as bright as its 90th-percentile brightness
   (~ coverage >= 0.5, which undoes the halo of a blurry edge); its area must be ``>= min_area``;
5. shape: the ideal silhouette (ellipse, rectangle, upright triangle) inscribed in the core's
   bounding box with the highest IoU against the core.

:func:`score_single` and :func:`score_pair` turn detections into the benchmark's categories.
"""
from __future__ import annotations

from collections import deque
from dataclasses import dataclass

import numpy as np

from .world import COLOURS, IMAGE_SIZE

FG_THRESHOLD = 90
COLOUR_THRESHOLD = 0.35
MIN_AREA = 12
CORE_FRACTION = 0.4

_NAMES = list(COLOURS)
_HUES = np.array([np.array(COLOURS[c], np.float32) / max(COLOURS[c]) for c in _NAMES])  # (C, 3)


@dataclass
class Detection:
    """One detected object: ``bbox (x0, y0, x1, y1)`` exclusive ends, ``area`` pixels."""

    colour: str
    shape: str
    bbox: tuple
    area: int
    fill: float

    @property
    def key(self) -> tuple:
        return (self.colour, self.shape)


def _as_uint8(image) -> np.ndarray:
    a = np.asarray(image)
    if a.dtype != np.uint8:
        a = np.clip(np.rint(a.astype(np.float32) * 255.0), 0, 255).astype(np.uint8)
    if a.ndim != 3 or a.shape[-1] != 3:
        raise ValueError(f"expected an (H, W, 3) image, got shape {a.shape}")
    return a


def colour_labels(image, fg_threshold: int = FG_THRESHOLD, colour_threshold: float = COLOUR_THRESHOLD) -> np.ndarray:
    """``(H, W) int`` label map: -1 background, -2 unknown colour, else an index into ``COLOURS``."""
    a = _as_uint8(image).astype(np.float32)
    mx = a.max(-1)
    hue = a / np.maximum(mx, 1.0)[..., None]  # (H, W, 3), brightest channel = 1
    d = np.linalg.norm(hue[:, :, None, :] - _HUES[None, None], axis=-1)  # (H, W, C)
    lab = d.argmin(-1)
    lab = np.where(d.min(-1) <= colour_threshold, lab, -2)
    return np.where(mx >= fg_threshold, lab, -1)


def components(mask: np.ndarray) -> list:
    """8-connected components of a boolean ``(H, W)`` mask -> list of ``(ys, xs)`` index arrays."""
    h, w = mask.shape
    seen = np.zeros_like(mask, dtype=bool)
    out = []
    for y0, x0 in zip(*np.nonzero(mask)):
        if seen[y0, x0]:
            continue
        q = deque([(y0, x0)])
        seen[y0, x0] = True
        ys, xs = [], []
        while q:
            y, x = q.popleft()
            ys.append(y)
            xs.append(x)
            for dy in (-1, 0, 1):
                for dx in (-1, 0, 1):
                    yy, xx = y + dy, x + dx
                    if 0 <= yy < h and 0 <= xx < w and mask[yy, xx] and not seen[yy, xx]:
                        seen[yy, xx] = True
                        q.append((yy, xx))
        out.append((np.array(ys), np.array(xs)))
    return out


def _template(kind: str, h: int, w: int, ss: int = 4) -> np.ndarray:
    """Ideal ``(h, w) bool`` silhouette filling an ``h x w`` box: ellipse, rectangle or upright triangle."""
    y = (np.arange(h * ss, dtype=np.float32) + 0.5) / ss
    x = (np.arange(w * ss, dtype=np.float32) + 0.5) / ss
    y, x = np.meshgrid(y, x, indexing="ij")
    if kind == "circle":
        inside = ((x - w / 2) / (w / 2)) ** 2 + ((y - h / 2) / (h / 2)) ** 2 <= 1.0
    elif kind == "square":
        inside = np.ones_like(x, dtype=bool)
    else:
        inside = np.abs(x - w / 2) <= (y / h) * w / 2
    return inside.reshape(h, ss, w, ss).mean(axis=(1, 3)) >= 0.5


SHAPE_KINDS = ("circle", "square", "triangle")


def classify_shape(mask: np.ndarray) -> tuple:
    """Shape of one object's boolean mask -> ``(shape, fill_ratio)``: the ideal silhouette
    (ellipse / rectangle / upright triangle inscribed in the mask's bounding box) with the highest
    IoU wins. ``fill_ratio = area / bbox area`` is returned for diagnostics."""
    ys, xs = np.nonzero(mask)
    crop = mask[ys.min():ys.max() + 1, xs.min():xs.max() + 1]
    h, w = crop.shape
    fill = float(crop.sum()) / float(h * w)
    ious = []
    for kind in SHAPE_KINDS:
        t = _template(kind, h, w)
        ious.append((t & crop).sum() / max((t | crop).sum(), 1))
    return SHAPE_KINDS[int(np.argmax(ious))], fill


def detect(image, min_area: int | None = None, fg_threshold: int = FG_THRESHOLD,
           colour_threshold: float = COLOUR_THRESHOLD) -> list:
    """Objects in one image, largest first -> list of :class:`Detection`."""
    a = _as_uint8(image)
    if min_area is None:
        min_area = max(4, round(MIN_AREA * (a.shape[0] / IMAGE_SIZE) ** 2))
    lab = colour_labels(a, fg_threshold, colour_threshold)
    found = []
    for ci, name in enumerate(_NAMES):
        for ys, xs in components(lab == ci):
            if len(ys) < min_area:
                continue
            m = np.zeros(lab.shape, bool)
            bright = a[ys, xs].max(-1).astype(np.float32)
            core = bright >= CORE_FRACTION * np.percentile(bright, 90)  # ~ coverage >= 0.5
            m[ys[core], xs[core]] = True
            if m.sum() < min_area:
                continue
            ys, xs = np.nonzero(m)
            shape, fill = classify_shape(m)
            found.append(Detection(name, shape, (int(xs.min()), int(ys.min()), int(xs.max()) + 1, int(ys.max()) + 1),
                                   int(len(ys)), fill))
    return sorted(found, key=lambda d: -d.area)


# ---- scoring ------------------------------------------------------------------------------------

def score_single(request: tuple, found: list) -> dict:
    """One-object prompt ``(colour, shape)``: judged on the largest detected object.

    ``colour_ok``, ``shape_ok``, ``correct`` (both), ``exact`` (correct and nothing else detected).
    """
    c, s = request
    top = found[0] if found else None
    colour_ok = top is not None and top.colour == c
    shape_ok = top is not None and top.shape == s
    return dict(colour_ok=colour_ok, shape_ok=shape_ok, correct=colour_ok and shape_ok,
                exact=colour_ok and shape_ok and len(found) == 1, n_objects=len(found))


PAIR_CATEGORIES = ("both_present", "swapped", "missing", "wrong_binding")


def score_pair(request: tuple, found: list) -> dict:
    """Two-object prompt ``((c1, s1), (c2, s2))`` -> exactly one category of :data:`PAIR_CATEGORIES`
    (checked in this order) plus non-exclusive flags:

    * ``both_present``: both requested (colour, shape) objects are detected (extras allowed);
    * ``swapped``: not the above, but ``(c1, s2)`` and ``(c2, s1)`` are both detected;
    * ``missing``: fewer than two objects detected (an object is missing outright);
    * ``wrong_binding``: two or more objects, but neither the requested nor the swapped pair
      (a colour leaked onto the other object, a wrong shape, ...).

    flags: ``first_present`` / ``second_present`` (the exact object), ``extra`` (more than two
    objects), ``shapes_present`` (both shapes, any colour), ``colours_present`` (both colours).
    """
    (c1, s1), (c2, s2) = request
    keys = [d.key for d in found]
    first, second = (c1, s1) in keys, (c2, s2) in keys
    if first and second and ((c1, s1) != (c2, s2) or keys.count((c1, s1)) >= 2):
        cat = "both_present"
    elif (c1, s2) in keys and (c2, s1) in keys:
        cat = "swapped"
    elif len(found) < 2:
        cat = "missing"
    else:
        cat = "wrong_binding"
    shapes = [d.shape for d in found]
    cols = [d.colour for d in found]
    return dict(category=cat, first_present=first, second_present=second, extra=len(found) > 2,
                shapes_present=s1 in shapes and s2 in shapes, colours_present=c1 in cols and c2 in cols,
                n_objects=len(found))


def verify(n: int = 1000, seed: int = 12345, size: int = IMAGE_SIZE, p_two: float = 0.5) -> dict:
    """Detector vs generator ground truth on ``n`` clean renders.

    Returns ``scene_accuracy`` (detected multiset of (colour, shape) == ground truth),
    ``object_recall`` / ``object_precision`` (per object, with bbox IoU >= 0.5), the two-object
    categories of the ground-truth captions and the confusions.
    """
    from .world import generate

    scenes = generate(n, seed, size, p_two)
    ok = tp = n_gt = n_det = 0
    cats: dict = {k: 0 for k in PAIR_CATEGORIES}
    errors = []
    for sc in scenes:
        found = detect(sc.image)
        gt = sorted((o.colour, o.shape) for o in sc.objects)
        det = sorted(d.key for d in found)
        ok += gt == det
        if gt != det and len(errors) < 20:
            errors.append(dict(caption=sc.caption, detected=det, fills=[round(d.fill, 3) for d in found]))
        n_gt += len(sc.objects)
        n_det += len(found)
        used = set()
        for o in sc.objects:
            for j, d in enumerate(found):
                if j not in used and d.key == (o.colour, o.shape) and _iou(d.bbox, o.bbox) >= 0.5:
                    used.add(j)
                    tp += 1
                    break
        if len(sc.objects) == 2:
            cats[score_pair(tuple((o.colour, o.shape) for o in sc.objects), found)["category"]] += 1
    return dict(n=n, scene_accuracy=ok / n, object_recall=tp / max(n_gt, 1), object_precision=tp / max(n_det, 1),
                pair_categories=cats, errors=errors)


def _iou(a, b) -> float:
    ix = max(0, min(a[2], b[2]) - max(a[0], b[0]))
    iy = max(0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = ix * iy
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return inter / union if union > 0 else 0.0
