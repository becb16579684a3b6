"""Procedural shapes world: 1-2 non-overlapping filled shapes on a black background.

Every scene is drawn from a ``numpy.random.Generator`` so that the same seed gives the same
pixels, captions and ground truth. Images are ``(H, W, 3) uint8`` (default ``H = W = 32``);
shapes are anti-aliased by 4x4 supersampling. Shapes are axis aligned: a disc, a square and an
upright isosceles triangle (apex at the top), each inscribed in a square box of side ``size``.

Captions and token positions (shipped offline CLIP tokenizer; every word is one token, 0 is
start-of-text)::

    "a red circle"                    1=a 2=red 3=circle 4=<eot>
    "a red circle and a blue square"  1=a 2=red 3=circle 4=and 5=a 6=blue 7=square 8=<eot>

so in a two-object caption the colour tokens are at 2 and 6 and the shape tokens at 3 and 7
(:data:`TOKEN_POSITIONS`). The order of the objects in the caption is random and unrelated to
where they are in the picture. Two objects in one scene always have different colours.
"""
from __future__ import annotations

import itertools
from dataclasses import dataclass, field

import numpy as np
from ..errors import InvalidSetting

SHAPES = ("circle", "square", "triangle")
COLOURS = {  # RGB, saturated and far apart so that nearest-palette detection is unambiguous
    "red": (230, 40, 40),
    "green": (40, 200, 60),
    "blue": (50, 90, 240),
    "yellow": (235, 215, 30),
}
BACKGROUND = (0, 0, 0)
IMAGE_SIZE = 32
SIZE_RANGE = (9, 14)  # side of the object's square box, pixels at 32x32 (scaled with image size)
SUPERSAMPLE = 4
GAP = 2.0  # minimum distance in pixels between the boxes of two objects

TOKEN_POSITIONS = {
    1: {"colour": [2], "shape": [3]},
    2: {"colour": [2, 6], "shape": [3, 7]},
}


@dataclass(frozen=True)
class ObjectSpec:
    """One object to draw: ``(cx, cy)`` centre and ``size`` (box side), in pixels."""

    shape: str
    colour: str
    cx: float
    cy: float
    size: float

    @property
    def box(self) -> tuple:
        h = self.size / 2
        return (self.cx - h, self.cy - h, self.cx + h, self.cy + h)


@dataclass
class ObjectGT:
    """Ground truth of a drawn object: ``mask (H, W) bool`` (coverage >= 0.5) and its ``bbox``
    ``(x0, y0, x1, y1)`` in pixels, exclusive upper ends."""

    shape: str
    colour: str
    bbox: tuple
    mask: np.ndarray = field(repr=False)

    @property
    def area(self) -> int:
        return int(self.mask.sum())


@dataclass
class Scene:
    """``image (H, W, 3) uint8``, the caption and one :class:`ObjectGT` per object in caption order."""

    image: np.ndarray = field(repr=False)
    caption: str
    objects: list


def caption_for(pairs) -> str:
    """``[("red", "circle"), ("blue", "square")]`` -> ``"a red circle and a blue square"``."""
    return " and ".join(f"a {c} {s}" for c, s in pairs)


def coverage(spec: ObjectSpec, size: int = IMAGE_SIZE, ss: int = SUPERSAMPLE) -> np.ndarray:
    """Fraction of each pixel covered by the object, ``(size, size) float32`` in [0, 1]."""
    n = size * ss
    c = (np.arange(n, dtype=np.float32) + 0.5) / ss  # sub-pixel centres in pixel units
    y, x = np.meshgrid(c, c, indexing="ij")
    x0, y0, x1, y1 = spec.box
    if spec.shape == "circle":
        r = spec.size / 2
        inside = (x - spec.cx) ** 2 + (y - spec.cy) ** 2 <= r * r
    elif spec.shape == "square":
        inside = (x >= x0) & (x <= x1) & (y >= y0) & (y <= y1)
    elif spec.shape == "triangle":  # apex (cx, y0), base from (x0, y1) to (x1, y1)
        t = (y - y0) / max(y1 - y0, 1e-6)  # 0 at apex, 1 at base
        half = t * spec.size / 2
        inside = (y >= y0) & (y <= y1) & (np.abs(x - spec.cx) <= half)
    else:
        raise InvalidSetting(f"unknown shape {spec.shape!r}; one of {SHAPES}")
    return inside.reshape(size, ss, size, ss).mean(axis=(1, 3)).astype(np.float32)


def render(specs, size: int = IMAGE_SIZE) -> tuple:
    """Draw objects on the background. Returns ``image (size, size, 3) uint8`` and the list of
    :class:`ObjectGT` (same order as ``specs``)."""
    img = np.zeros((size, size, 3), np.float32) + np.array(BACKGROUND, np.float32)
    gts = []
    for s in specs:
        a = coverage(s, size)[..., None]
        img = img * (1 - a) + a * np.array(COLOURS[s.colour], np.float32)
        m = a[..., 0] >= 0.5
        ys, xs = np.nonzero(m)
        bbox = (int(xs.min()), int(ys.min()), int(xs.max()) + 1, int(ys.max()) + 1) if len(xs) else (0, 0, 0, 0)
        gts.append(ObjectGT(s.shape, s.colour, bbox, m))
    return np.clip(np.rint(img), 0, 255).astype(np.uint8), gts


def _boxes_apart(a, b, gap) -> bool:
    return a[2] + gap <= b[0] or b[2] + gap <= a[0] or a[3] + gap <= b[1] or b[3] + gap <= a[1]


def layout(rng: np.random.Generator, pairs, size: int = IMAGE_SIZE, tries: int = 200) -> list:
    """Random non-overlapping placement of ``pairs`` ``[(colour, shape), ...]`` -> ``[ObjectSpec]``."""
    k = size / IMAGE_SIZE
    lo, hi = SIZE_RANGE[0] * k, SIZE_RANGE[1] * k
    for _ in range(tries):
        specs = []
        for colour, shape in pairs:
            s = float(rng.uniform(lo, hi))
            cx = float(rng.uniform(1 + s / 2, size - 1 - s / 2))
            cy = float(rng.uniform(1 + s / 2, size - 1 - s / 2))
            specs.append(ObjectSpec(shape, colour, cx, cy, s))
        if all(_boxes_apart(a.box, b.box, GAP * k) for a, b in itertools.combinations(specs, 2)):
            return specs
        hi = max(lo, hi * 0.97)  # crowded: shrink and try again
    raise InvalidSetting(f"layout: could not place pairs={pairs} without overlap in size={size} ({size}x{size} px) after "
                         f"tries={tries}; fix: a larger size, fewer pairs or more tries")


def random_pairs(rng: np.random.Generator, p_two: float = 0.5) -> list:
    """1 or 2 ``(colour, shape)`` pairs; two objects always have different colours."""
    cols = list(COLOURS)
    n = 2 if rng.random() < p_two else 1
    cidx = rng.choice(len(cols), size=n, replace=False)
    return [(cols[int(c)], SHAPES[int(rng.integers(len(SHAPES)))]) for c in cidx]


def make_scene(rng: np.random.Generator, pairs=None, size: int = IMAGE_SIZE, p_two: float = 0.5) -> Scene:
    """One scene; ``pairs`` fixes the content (caption order), else :func:`random_pairs`."""
    pairs = list(pairs) if pairs is not None else random_pairs(rng, p_two)
    img, gts = render(layout(rng, pairs, size), size)
    return Scene(img, caption_for(pairs), gts)


def generate(n: int, seed: int = 0, size: int = IMAGE_SIZE, p_two: float = 0.5) -> list:
    """``n`` scenes, deterministic from ``seed``."""
    rng = np.random.default_rng(seed)
    return [make_scene(rng, size=size, p_two=p_two) for _ in range(n)]


def to_tensor(images):
    """``(B, H, W, 3) uint8`` (array or list) -> ``torch.float32 (B, 3, H, W)`` in [-1, 1]."""
    import torch

    x = torch.from_numpy(np.ascontiguousarray(np.stack(list(images))))
    return x.permute(0, 3, 1, 2).float().div(127.5).sub(1.0)


def from_tensor(x):
    """``(B, 3, H, W)`` in [-1, 1] (a VAE decode) -> ``(B, H, W, 3) uint8`` (the inverse of :func:`to_tensor`)."""
    return ((x.float().clamp(-1, 1) + 1) * 127.5).round().byte().permute(0, 2, 3, 1).cpu().numpy()


def single_prompts() -> list:
    """All 12 single-object ``(colour, shape)`` combinations."""
    return [(c, s) for c in COLOURS for s in SHAPES]


def two_object_prompts(split: str = "all") -> list:
    """Two-object prompts ``((c1, s1), (c2, s2))`` with different colours AND different shapes
    (so that a colour swap is well defined): 4*3*3*2 = 72 ordered combinations.

    ``split="tune"`` (24) and ``"report"`` (48) are disjoint: a prompt is in ``tune`` iff its
    unordered shape pair is {circle, square}; ``report`` holds the {circle, triangle} and
    {square, triangle} prompts. Gammas are tuned on ``tune`` and reported on ``report``.
    """
    out = []
    for c1, c2 in itertools.permutations(COLOURS, 2):
        for s1, s2 in itertools.permutations(SHAPES, 2):
            out.append(((c1, s1), (c2, s2)))
    if split == "all":
        return out
    tune = [p for p in out if {p[0][1], p[1][1]} == {"circle", "square"}]
    if split == "tune":
        return tune
    if split == "report":
        return [p for p in out if p not in tune]
    raise InvalidSetting(f"split must be 'all', 'tune' or 'report', got {split!r}")
