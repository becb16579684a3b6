r"""EBCQ on the shapes world, measured: conjunction, negation and synthetic editing over many seeds.

Every edit is compared with the unedited sample **of the same seed** (same initial latents). The
layer output with editorial prompts ``s`` is

    O = (O_prompt + sum_s sigma_s alpha_s O_s) / (1 + sum_s sigma_s alpha_s),   sigma = +1 (and), -1 (not)

and ``start`` switches the edits on at step ``floor(T * start)`` (synthetic editing: the layout forms
first). The detector (:mod:`ebca_viz.shapes.detect`) judges each image; a *predicate* maps its
detections to True/False ("a blue square is there", "the largest object is a circle"), and each
predicate becomes a :class:`~ebca_viz.claims.Rate` for the edited and the unedited images plus their
paired difference. For edits that should keep the layout, :attr:`EditResult.shift` is the distance
(pixels) between the largest object's centre before and after.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable, Optional, Sequence

import numpy as np

from .. import claims
from ..shapes.detect import detect

TUNE_SEED, REPORT_SEED = 100_000, 0


# ---- predicates on a list of detections (largest first) ------------------------------------------
def has(colour: str, shape: str) -> Callable:
    return lambda dets: any(d.key == (colour, shape) for d in dets)


def top_is(colour: Optional[str] = None, shape: Optional[str] = None) -> Callable:
    """The largest object has this colour and/or shape."""
    return lambda dets: bool(dets) and (colour is None or dets[0].colour == colour) and \
        (shape is None or dets[0].shape == shape)


def not_(pred: Callable) -> Callable:
    return lambda dets: not pred(dets)


def verdict(dets) -> str:
    return "; ".join(f"{d.colour} {d.shape}" for d in dets) or "nothing"


@dataclass
class EditResult:
    """One edit setting over ``n`` seeds, against the unedited samples of the same seeds."""

    name: str
    prompt: str
    settings: dict
    images: np.ndarray  # (n, H, W, 3) uint8, edited
    base: np.ndarray  # (n, H, W, 3) uint8, same seeds without edits
    detections: list
    base_detections: list
    rates: dict = field(default_factory=dict)  # predicate name -> Rate (edited)
    base_rates: dict = field(default_factory=dict)  # predicate name -> Rate (unedited)
    paired: dict = field(default_factory=dict)  # predicate name -> Mean of edited - unedited (same seed)
    change: Optional[claims.Mean] = None  # mean |edited - unedited| per image, in [0, 255]
    shift: Optional[claims.Mean] = None  # px, largest object's centre, where both images have one

    @property
    def n(self) -> int:
        return len(self.images)

    def summary(self, unedited: bool = False) -> str:
        """``"name: predicate rate; ..."`` (or the unedited rates)."""
        rates = self.base_rates if unedited else self.rates
        return ("unedited" if unedited else self.name) + ": " + "; ".join(f"{k} {v}" for k, v in rates.items())

    def row(self) -> dict:
        out = dict(setting=self.name, n=self.n, **{k: v.to_json() for k, v in self.rates.items()})
        out.update({f"{k} (unedited)": v.to_json() for k, v in self.base_rates.items()})
        out["change"] = self.change.to_json()
        if self.shift is not None:
            out["shift_px"] = self.shift.to_json()
        return out


def _centre(d) -> np.ndarray:
    x0, y0, x1, y1 = d.bbox
    return np.array([(x0 + x1) / 2, (y0 + y1) / 2])


def measure(pipe, prompt: str, edits: Sequence, predicates: dict, n: int = 32, seed_base: int = REPORT_SEED,
            steps: int = 25, guidance: float = 3.0, name: Optional[str] = None, base=None) -> EditResult:
    """Sample ``prompt`` on seeds ``seed_base .. seed_base+n-1`` with ``edits`` (a list of
    :class:`~ebca_viz.Edit`) and without (or reuse ``base = (images, detections)`` of the same seeds)."""
    from ..config import EBCAConfig
    from ..shapes.benchmark import sample

    if n < 2:
        raise ValueError(f"n must be >= 2 seeds, got {n}")
    if not predicates:
        raise ValueError("predicates is empty: name at least one, e.g. {'blue square': has('blue', 'square')}")
    seeds = list(range(seed_base, seed_base + n))
    cfg = EBCAConfig(edits=list(edits))
    cfg.validate().check_denominators(steps, steps + 1)  # a bad alpha fails before sampling
    if base is None:
        b_ims = sample(pipe, [prompt] * n, seeds, steps=steps, guidance=guidance)
        b_det = [detect(im) for im in b_ims]
    else:
        b_ims, b_det = base
    ims = sample(pipe, [prompt] * n, seeds, steps=steps, guidance=guidance, config=cfg)
    dets = [detect(im) for im in ims]
    r = EditResult(name or prompt, prompt, dict(edits=[_edit_json(e) for e in edits], steps=steps, guidance=guidance,
                                                 seed_base=seed_base), ims, b_ims, dets, b_det)
    for k, f in predicates.items():
        e = np.array([bool(f(d)) for d in dets])
        b = np.array([bool(f(d)) for d in b_det])
        r.rates[k], r.base_rates[k], r.paired[k] = claims.rate(e), claims.rate(b), claims.paired_diff(e, b)
    r.change = claims.mean(np.abs(ims.astype(np.float32) - b_ims.astype(np.float32)).mean(axis=(1, 2, 3)))
    sh = [float(np.linalg.norm(_centre(d[0]) - _centre(b[0]))) for d, b in zip(dets, b_det) if d and b]
    r.shift = claims.mean(sh) if len(sh) >= 2 else None
    return r


def _edit_json(e) -> dict:
    return dict(prompt=e.prompt, alpha=e.alpha, direction=e.direction, start=e.start)


# ---- the three experiments of notebooks 03 / 04 -------------------------------------------------------
CONJ_PROMPT, CONJ_EDIT = "a red circle", "a blue circle"
NEG_PROMPT, NEG_EDIT = "a red circle and a blue square", "a blue square"
SYN_PROMPT, SYN_TARGET, SYN_SOURCE = "a red circle", "a blue circle", "a red circle"

CONJ_PREDICATES = {"red circle": has("red", "circle"), "blue circle": has("blue", "circle"),
                   "largest is a circle": top_is(shape="circle"), "largest is not red": not_(top_is("red"))}
NEG_PREDICATES = {"blue square": has("blue", "square"), "red circle": has("red", "circle")}
SYN_PREDICATES = {"blue circle": top_is("blue", "circle"), "still a circle": top_is(shape="circle"),
                  "red circle": has("red", "circle")}


def conjunction(pipe, alpha: float, **kw) -> EditResult:
    from ..config import Edit

    return measure(pipe, CONJ_PROMPT, [Edit(prompt=CONJ_EDIT, alpha=alpha, direction=+1)], CONJ_PREDICATES,
                   name=f"+ '{CONJ_EDIT}' x {alpha:g}", **kw)


def negation(pipe, alpha: float, **kw) -> EditResult:
    from ..config import Edit

    return measure(pipe, NEG_PROMPT, [Edit(prompt=NEG_EDIT, alpha=alpha, direction=-1)], NEG_PREDICATES,
                   name=f"- '{NEG_EDIT}' x {alpha:g}", **kw)


def synthetic_edit(pipe, start: float, alpha: float = 1.5, neg_alpha: float = 0.5, **kw) -> EditResult:
    """``+ 'a blue circle' x alpha`` and ``- 'a red circle' x neg_alpha`` (the published real-edit form),
    both from ``start``."""
    from ..config import Edit

    edits = [Edit(prompt=SYN_TARGET, alpha=alpha, direction=+1, start=start)]
    if neg_alpha:
        edits.append(Edit(prompt=SYN_SOURCE, alpha=neg_alpha, direction=-1, start=start))
    return measure(pipe, SYN_PROMPT, edits, SYN_PREDICATES,
                   name=f"start {start:g}: +blue x {alpha:g}, -red x {neg_alpha:g}", **kw)


# ---- sweeps (tuning seeds) ---------------------------------------------------------------------------
def series(experiment: Callable, pipe, values: Sequence[float], **kw) -> list:
    """``[experiment(pipe, v, base=..., **kw) for v in values]`` with the unedited samples of the same
    seeds drawn once (by the first run) and reused by the others."""
    if not values:
        raise ValueError("values is empty")
    first = experiment(pipe, values[0], **kw)
    return [first] + [experiment(pipe, v, base=(first.base, first.base_detections), **kw) for v in values[1:]]


def sweep_alpha(pipe, alphas=(0.3, 0.6, 0.9), conj_alphas=(0.5, 1.0, 2.0), n: int = 32, steps: int = 25,
                guidance: float = 3.0) -> dict:
    """Negation: the alpha that removes the blue square while keeping the red circle most often;
    conjunction: the rates per alpha (the colour leaves red, the shape stays). Tuning seeds."""
    kw = dict(n=n, seed_base=TUNE_SEED, steps=steps, guidance=guidance)
    neg = series(negation, pipe, alphas, **kw)
    conj = series(conjunction, pipe, conj_alphas, **kw)
    best = max(neg, key=lambda r: r.rates["red circle"].p - r.rates["blue square"].p)
    return {"rows": [r.row() for r in neg + conj],
            "chosen": {"negation_alpha": float(best.settings["edits"][0]["alpha"])},
            "criterion": "negation: P(red circle kept) - P(blue square left); conjunction: reported per alpha"}


def sweep_start(pipe, starts=(0.0, 0.2, 0.4, 0.6), n: int = 32, steps: int = 25, guidance: float = 3.0) -> dict:
    """Synthetic editing: the latest start (best preservation) whose edit still works in >= 70 % of seeds."""
    kw = dict(n=n, seed_base=TUNE_SEED, steps=steps, guidance=guidance)
    res = series(synthetic_edit, pipe, starts, **kw)
    ok = [r for r in res if r.rates["blue circle"].p >= 0.7] or res
    best = max(ok, key=lambda r: (r.settings["edits"][0]["start"]))
    return {"rows": [r.row() for r in res], "chosen": {"edit_start": float(best.settings["edits"][0]["start"])},
            "criterion": "the latest start with the edit (largest object a blue circle) in >= 70 % of seeds"}


# ---- figures ---------------------------------------------------------------------------------------
def plot_pairs(result: EditResult, k: int = 6, size: float = 1.4, title: Optional[str] = None):
    """Unedited / edited / |difference| for the first ``k`` seeds, the detector's verdict in each title."""
    from ..viz import new_figure

    k = min(k, result.n)
    fig = new_figure(figsize=(size * k, size * 3 + 0.7))
    axes = np.atleast_2d(fig.subplots(3, k))
    for c in range(k):
        d = np.abs(result.images[c].astype(np.float32) - result.base[c].astype(np.float32)).mean(-1)
        for r, (im, t) in enumerate(((result.base[c], verdict(result.base_detections[c]).replace("; ", "\n")),
                                     (result.images[c], verdict(result.detections[c]).replace("; ", "\n")),
                                     (d, f"|diff| {d.mean():.1f}"))):
            ax = axes[r, c]
            ax.imshow(im, interpolation="nearest", **({"cmap": "inferno", "vmin": 0, "vmax": 255} if r == 2 else {}))
            ax.set_xticks([]); ax.set_yticks([])
            ax.set_title(t, fontsize=6)
        axes[0, c].set_ylabel("unedited" if c == 0 else "", fontsize=7)
    axes[0, 0].set_ylabel("unedited", fontsize=7)
    axes[1, 0].set_ylabel("edited", fontsize=7)
    axes[2, 0].set_ylabel("|difference|", fontsize=7)
    fig.suptitle(title or f'"{result.prompt}"  {result.name}  (same seeds)', fontsize=9)
    fig.tight_layout()
    return fig


def plot_rates(results: Sequence[EditResult], xs: Sequence[float], predicates: Sequence[str], xlabel: str,
               title: str = "", base: bool = True):
    """Rate of each predicate (95 % interval band) against the swept setting; dashed: unedited."""
    from ..viz import new_figure

    fig = new_figure(figsize=(6.4, 3.2))
    ax = fig.subplots()
    for i, k in enumerate(predicates):
        p = np.array([r.rates[k].p for r in results])
        lo = np.array([r.rates[k].lo for r in results])
        hi = np.array([r.rates[k].hi for r in results])
        line, = ax.plot(xs, 100 * p, "o-", label=k)
        ax.fill_between(xs, 100 * lo, 100 * hi, alpha=0.15, color=line.get_color())
        if base:
            ax.axhline(100 * results[0].base_rates[k].p, ls="--", lw=0.8, color=line.get_color())
    ax.set_xlabel(xlabel)
    ax.set_ylabel(f"% of {results[0].n} seeds (95 % CI)")
    ax.set_ylim(-3, 103)
    ax.set_title(title + "  (dashed: unedited, same seeds)", fontsize=9)
    ax.legend(fontsize=7)
    fig.tight_layout()
    return fig


__all__ = ["EditResult", "measure", "has", "top_is", "not_", "verdict", "conjunction", "negation", "synthetic_edit",
           "series", "sweep_alpha", "sweep_start", "plot_pairs", "plot_rates", "CONJ_PREDICATES", "NEG_PREDICATES",
           "SYN_PREDICATES"]
