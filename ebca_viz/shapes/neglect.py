"""The neglect world: the shapes world's renderer and vocabulary, with held-out object pairs.

Same scenes, captions and token positions as :mod:`.world` (32x32, 1-2 objects, 3 shapes x 4
colours, "a red circle and a blue triangle"); only the *training distribution* differs, so that
the failure real text-to-image models show on unusual combinations, **catastrophic neglect**
(one of the two requested objects never appears), is common:

* two-object scenes are **rare** in training (``--p-two`` 0.1 in :mod:`.train`, shapes world 0.5);
* the **report pairs never co-occur** in training: a two-object training scene never holds a
  triangle next to a circle or a square (:data:`HOLDOUTS` ``"triangle-pairs"``). Triangles are
  seen alone and beside other triangles, circles beside squares, so every word and every object
  is well known; only the combination asked for is new, as "a cat and a frog" is to SD.

Splits of the two-object prompts (:func:`two_object_prompts`):

* ``"report"``: the 48 held-out prompts (circle/triangle and square/triangle, different colours),
  i.e. :func:`.world.two_object_prompts` ``"report"``; reported on seeds ``0+``, tuned (CFG, EBCU
  settings) on the same prompts with seeds ``100000+`` (disjoint seeds, never the report seeds);
* ``"seen"``: the 24 circle/square prompts, which *do* co-occur in training: the in-distribution
  control that shows the held-out pairs, not two-object prompts as such, fail.
"""
from __future__ import annotations

from . import world

# name -> unordered shape pairs a two-object training scene may not contain
HOLDOUTS = {
    "none": frozenset(),
    "triangle-pairs": frozenset({frozenset({"circle", "triangle"}), frozenset({"square", "triangle"})}),
}


def check_holdout(name: str) -> frozenset:
    """The held-out shape pairs of ``name``; a clear error for an unknown name."""
    if name not in HOLDOUTS:
        raise ValueError(f"holdout must be one of {sorted(HOLDOUTS)}, got {name!r}")
    return HOLDOUTS[name]


def is_held_out(pairs, holdout: str = "triangle-pairs") -> bool:
    """True when the scene content ``[(colour, shape), ...]`` holds two objects whose shape pair
    is held out (never drawn in a training scene)."""
    if len(pairs) < 2:
        return False
    held = check_holdout(holdout)
    return frozenset(s for _, s in pairs) in held


def training_pairs(rng, p_two: float, holdout: str = "triangle-pairs") -> list:
    """Like :func:`.world.random_pairs` (``P(two objects) = p_two``), but a two-object draw whose
    shape pair is held out is redrawn (shapes only, same colours), so the colours and the number
    of objects keep their distribution."""
    pairs = world.random_pairs(rng, p_two)
    while is_held_out(pairs, holdout):
        pairs = [(c, world.SHAPES[int(rng.integers(len(world.SHAPES)))]) for c, _ in pairs]
    return pairs


def two_object_prompts(split: str = "report") -> list:
    """``"report"`` (48 held-out prompts), ``"seen"`` (24 circle/square prompts) or ``"all"`` (72)."""
    if split == "report":
        return world.two_object_prompts("report")
    if split == "seen":
        return world.two_object_prompts("tune")
    if split == "all":
        return world.two_object_prompts("all")
    raise ValueError(f"split must be 'report', 'seen' or 'all', got {split!r}")
