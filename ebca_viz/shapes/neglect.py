"""The neglect world: the shapes world's renderer and vocabulary, with held-out object pairs.

Same scenes, captions and token positions as :mod:`.world` (32x32, 1-2 objects, 3 shapes x 4
colours, "a red circle and a blue triangle"); only the *training data* differs, so that the failure
real text-to-image models show on unusual combinations, **catastrophic neglect** (one of the two
requested objects never appears), is common. The shipped neglect world
(``ebca_viz/weights/neglect_world/TRAINING.md``) is shapes-world fine-tuned on:

* **caption noise on the report pairs** (``--holdout triangle-pairs --holdout-mode drop`` in
  :mod:`.train`): whenever a training scene pairs a triangle with a circle or a square, the caption
  still names both objects but the image shows only one of them (chosen at random). Web captions
  name things the picture does not show (or shows tiny, cropped, occluded) and rare combinations
  are seen mostly that way; a model trained on such data learns that the second object of those
  pairs is optional. Every word, every object and the circle/square pairs stay correctly drawn;
* two-object scenes at ``--p-two`` 0.2 (shapes world 0.5).

The other mode, ``"redraw"`` (a held-out draw is redrawn with other shapes, so those pairs never
co-occur in caption or image), was piloted too: the model then draws *two* objects for a held-out
prompt, of the wrong shapes ("two circles"), and almost never drops one (missing 0 %, TRAINING.md).

Splits of the two-object prompts (:func:`two_object_prompts`):

* ``"report"``: the 48 held-out prompts (circle/triangle and square/triangle, different colours),
  i.e. :func:`.world.two_object_prompts` ``"report"``; reported on seeds ``0+``, tuned (CFG, EBCU
  settings) on the same prompts with seeds ``100000+`` (disjoint seeds, never the report seeds);
* ``"seen"``: the 24 circle/square prompts, drawn as captioned in training: the in-distribution
  control: the same model drops an object far less often on pairs it saw drawn correctly.
"""
from __future__ import annotations

from . import world
from ..errors import InvalidSetting

# name -> unordered shape pairs whose two-object training scenes are altered (redrawn or one object dropped)
HOLDOUTS = {
    "none": frozenset(),
    "triangle-pairs": frozenset({frozenset({"circle", "triangle"}), frozenset({"square", "triangle"})}),
}


def check_holdout(name: str) -> frozenset:
    """The held-out shape pairs of ``name``; a clear error for an unknown name."""
    if name not in HOLDOUTS:
        raise InvalidSetting(f"holdout must be one of {sorted(HOLDOUTS)}, got {name!r}")
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
    raise InvalidSetting(f"split must be 'report', 'seen' or 'all', got {split!r}")
