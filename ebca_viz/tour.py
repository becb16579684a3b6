r"""The tour's demo pair, chosen by a rule a reader can check (notebook 00).

Rule (:func:`choose_demo_seed`): sample a two-object prompt on seeds ``0 .. n-1`` plainly and with EBCU
(the same initial latents per seed, :func:`ebca_viz.sampling.sample`); the detector
(:func:`ebca_viz.shapes.detect.score_pair`) judges every image. The demo is the **first seed, in
order, where vanilla misses or garbles a requested object and EBCU gets both right with nothing extra**
("EBCU fixes": an image that adds an object to get both is not shown as a fix);
when no seed qualifies, the first seed, and the choice says so. Beside it the choice carries how
often EBCU fixes and how often it breaks (vanilla right, EBCU wrong) over all the seeds, so the demo
is never read as typical.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Optional, Sequence

import numpy as np

from . import claims
from .errors import InvalidSetting


@dataclass
class DemoChoice:
    """The seed the rule picked and what all the seeds showed.

    ``seeds``; ``vanilla`` / ``ebcu`` the detector category per seed (``"both_present"``, ``"swapped"``,
    ``"missing"``, ``"wrong_binding"``); ``found`` the detected objects per seed, as text;
    ``images_vanilla`` / ``images_ebcu`` ``(n, H, W, 3) uint8``; ``index`` of the chosen seed;
    ``fixed`` whether EBCU fixes it (False: no seed qualified, the first seed is shown)."""

    seed: int
    index: int
    fixed: bool
    seeds: list
    vanilla: list
    ebcu: list
    found_vanilla: list
    found_ebcu: list
    images_vanilla: np.ndarray
    images_ebcu: np.ndarray

    @property
    def fixes(self) -> claims.Rate:
        """Seeds where vanilla is wrong and EBCU gets both objects right."""
        return claims.rate([v != "both_present" and e == "both_present" for v, e in zip(self.vanilla, self.ebcu)])

    @property
    def breaks(self) -> claims.Rate:
        """Seeds where vanilla gets both objects right and EBCU does not."""
        return claims.rate([v == "both_present" and e != "both_present" for v, e in zip(self.vanilla, self.ebcu)])

    def rule(self) -> str:
        """The sentence that says how the seed was chosen."""
        n = len(self.seeds)
        if self.fixed:
            return (f"seed {self.seed}: the first of seeds {self.seeds[0]}-{self.seeds[-1]} where the detector says vanilla "
                    f"gets the prompt wrong ({self.vanilla[self.index].replace('_', ' ')}) and EBCU gets both objects right, "
                    f"with nothing extra")
        return (f"seed {self.seed}: no seed of the {n} has vanilla wrong and EBCU right with nothing extra, "
                f"so this is simply the first seed")


def verdict_text(category: str, found: str) -> str:
    """``"both right"`` / ``"swapped"`` / ... with the detected objects: a figure title."""
    name = {"both_present": "both right", "wrong_binding": "wrong colour/shape"}.get(category, category)
    return f"{name}: {found}"


def sample_seeds(pipe, request: Sequence, seeds=range(16), steps: int = 25, guidance: float = 3.0,
                 config=None) -> np.ndarray:
    """``(n, H, W, 3) uint8``: the prompt of ``request`` on ``seeds`` (fixed initial noise per seed),
    plainly (``config=None``) or under an :class:`~ebca_viz.EBCAConfig`; one batched run."""
    from .shapes import world
    from .sampling import sample

    seeds = [int(s) for s in seeds]
    if not seeds:
        raise InvalidSetting("seeds is empty: pass e.g. range(16)")
    prompt = world.caption_for([tuple(x) for x in request])
    return sample(pipe, [prompt] * len(seeds), seeds, steps=steps, guidance=guidance, method=config)


def choose_demo_seed(pipe, request: Sequence, config, seeds=range(16), steps: int = 25,
                     guidance: float = 3.0, vanilla_images: Optional[np.ndarray] = None) -> DemoChoice:
    """Apply the module's rule to the prompt ``request = ((colour, shape), (colour, shape))`` with EBCU
    ``config`` (an :class:`~ebca_viz.EBCAConfig`) on ``seeds``. Two batched sampling runs, or one when
    ``vanilla_images`` (:func:`sample_seeds` of the same seeds and settings) are given."""
    from .shapes import world
    from .sampling import sample
    from .shapes.detect import detect, score_pair

    seeds = [int(s) for s in seeds]
    if not seeds:
        raise InvalidSetting("seeds is empty: pass e.g. range(16)")
    req = tuple(tuple(x) for x in request)
    if len(req) != 2 or any(len(x) != 2 for x in req):
        raise InvalidSetting(f"request must be two (colour, shape) pairs, got {request!r}")
    prompt = world.caption_for(list(req))
    if vanilla_images is None:
        van = sample(pipe, [prompt] * len(seeds), seeds, steps=steps, guidance=guidance)
    else:
        van = np.asarray(vanilla_images)
        if van.ndim != 4 or len(van) != len(seeds):
            raise InvalidSetting(f"vanilla_images must be (len(seeds) = {len(seeds)}, H, W, 3) images of these seeds, "
                             f"got shape {van.shape}")
    eb = sample(pipe, [prompt] * len(seeds), seeds, steps=steps, guidance=guidance, method=config)

    def judge(ims):
        found = [detect(im) for im in ims]
        scores = [score_pair(req, f) for f in found]
        text = ["; ".join(f"{d.colour} {d.shape}" for d in f) or "nothing detected" for f in found]
        return [c["category"] for c in scores], text, [bool(c.get("extra")) for c in scores]

    cv, tv, _ = judge(van)
    ce, te, extra = judge(eb)
    hits = [i for i in range(len(seeds)) if cv[i] != "both_present" and ce[i] == "both_present" and not extra[i]]
    i = hits[0] if hits else 0
    return DemoChoice(seeds[i], i, bool(hits), seeds, cv, ce, tv, te, van, eb)


__all__ = ["DemoChoice", "sample_seeds", "choose_demo_seed", "verdict_text"]
