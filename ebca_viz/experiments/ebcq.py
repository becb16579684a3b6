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
from ..errors import InvalidSetting

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


def measure_edits(pipe, prompt: str, edits: Sequence, predicates: dict, n: int = 32, seed_base: int = REPORT_SEED,
            steps: int = 25, guidance: float = 3.0, name: Optional[str] = None, base=None,
            seeds: Optional[Sequence[int]] = None) -> EditResult:
    """Sample ``prompt`` on seeds ``seed_base .. seed_base+n-1`` (or the explicit ``seeds``) with ``edits``
    (a list of :class:`~ebca_viz.Edit`) and without (or reuse ``base = (images, detections)`` of the same seeds)."""
    from ..config import EBCAConfig
    from ..sampling import sample

    if seeds is not None:
        seeds = [int(x) for x in seeds]
        n = len(seeds)
    if n < 2:
        raise InvalidSetting(f"n must be >= 2 seeds, got {n}")
    if not predicates:
        raise InvalidSetting("predicates is empty: name at least one, e.g. {'blue square': has('blue', 'square')}")
    seeds = list(range(seed_base, seed_base + n)) if seeds is None else seeds
    cfg = EBCAConfig(edits=list(edits))
    cfg.validate().check_denominators(steps, steps + 1)  # a bad alpha fails before sampling
    if base is None:
        b_ims = sample(pipe, [prompt] * n, seeds, steps=steps, guidance=guidance)
        b_det = [detect(im) for im in b_ims]
    else:
        b_ims, b_det = base
    ims = sample(pipe, [prompt] * n, seeds, steps=steps, guidance=guidance, method=cfg)
    dets = [detect(im) for im in ims]
    r = EditResult(name or prompt, prompt, dict(edits=[_edit_json(e) for e in edits], steps=steps, guidance=guidance,
                                                 seed_base=seeds[0], seeds=seeds), ims, b_ims, dets, b_det)
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

    return measure_edits(pipe, CONJ_PROMPT, [Edit(prompt=CONJ_EDIT, alpha=alpha, direction=+1)], CONJ_PREDICATES,
                   name=f"+ '{CONJ_EDIT}' x {alpha:g}", **kw)


def negation(pipe, alpha: float, **kw) -> EditResult:
    from ..config import Edit

    return measure_edits(pipe, NEG_PROMPT, [Edit(prompt=NEG_EDIT, alpha=alpha, direction=-1)], NEG_PREDICATES,
                   name=f"- '{NEG_EDIT}' x {alpha:g}", **kw)


def measure_synthetic_edit(pipe, start: float, alpha: float = 1.5, neg_alpha: float = 0.5, **kw) -> EditResult:
    """``+ 'a blue circle' x alpha`` and ``- 'a red circle' x neg_alpha`` (the published real-edit form),
    both from ``start``."""
    from ..config import Edit

    edits = [Edit(prompt=SYN_TARGET, alpha=alpha, direction=+1, start=start)]
    if neg_alpha:
        edits.append(Edit(prompt=SYN_SOURCE, alpha=neg_alpha, direction=-1, start=start))
    return measure_edits(pipe, SYN_PROMPT, edits, SYN_PREDICATES,
                   name=f"start {start:g}: +blue x {alpha:g}, -red x {neg_alpha:g}", **kw)


# ---- sweeps (tuning seeds) ---------------------------------------------------------------------------
def series(experiment: Callable, pipe, values: Sequence[float], **kw) -> list:
    """``[experiment(pipe, v, base=..., **kw) for v in values]`` with the unedited samples of the same
    seeds drawn once (by the first run) and reused by the others."""
    if not values:
        raise InvalidSetting(f"values is empty ({values!r}); fix: pass at least one value to run the experiment at")
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
    res = series(measure_synthetic_edit, pipe, starts, **kw)
    ok = [r for r in res if r.rates["blue circle"].p >= 0.7] or res
    best = max(ok, key=lambda r: (r.settings["edits"][0]["start"]))
    return {"rows": [r.row() for r in res], "chosen": {"edit_start": float(best.settings["edits"][0]["start"])},
            "criterion": "the latest start with the edit (largest object a blue circle) in >= 70 % of seeds"}


# ---- figures ---------------------------------------------------------------------------------------
def _edit_label(e: dict) -> str:
    """``{"prompt", "alpha", "direction", "start"}`` -> ``"+ 1.5 x 'a blue circle'"`` / ``"NOT: - 0.6 x 'a blue square'"``."""
    sign = "+" if e["direction"] > 0 else "NOT: -"
    start = f" from {e['start']:g}" if e.get("start") else ""
    return f"{sign} {e['alpha']:g} x '{e['prompt']}'{start}"


def settings_label(result) -> str:
    """The edits of a result (an :class:`EditResult` or a :class:`ShippedRow`) as text, signs included."""
    return ", ".join(_edit_label(e) for e in result.settings["edits"])


def plot_pairs(result: EditResult, k: int = 6, size: float = 1.45, title: Optional[str] = None, fontsize: float = 10):
    """Unedited / edited / |difference| for the first ``k`` seeds, the detector's verdict in each title.

    ``size`` inches per panel (6 columns: 8.7 in wide, shown unshrunk); images upscaled with nearest
    neighbour; the difference row has a colour bar (grey levels of 255)."""
    from ..plots import new_figure

    k = min(k, result.n)
    fig = new_figure(figsize=(size * k + 1.2, (size + 0.6) * 3 + 1.2))
    axes = np.atleast_2d(fig.subplots(3, k, squeeze=False))
    seeds = result.settings.get("seeds") or list(range(result.settings["seed_base"], result.settings["seed_base"] + result.n))
    shown = None
    for c in range(k):
        d = np.abs(result.images[c].astype(np.float32) - result.base[c].astype(np.float32)).mean(-1)
        for r, (im, t) in enumerate(((result.base[c], f"seed {seeds[c]}\n" + verdict(result.base_detections[c]).replace("; ", "\n")),
                                     (result.images[c], verdict(result.detections[c]).replace("; ", "\n")),
                                     (d, f"mean {d.mean():.0f}"))):
            ax = axes[r, c]
            h = ax.imshow(im, interpolation="nearest", **({"cmap": "inferno", "vmin": 0, "vmax": 255} if r == 2 else {}))
            if r == 2:
                shown = h
            ax.set_xticks([]); ax.set_yticks([])
            ax.set_title(t, fontsize=fontsize)
    axes[0, 0].set_ylabel("unedited", fontsize=fontsize)
    axes[1, 0].set_ylabel("edited", fontsize=fontsize)
    axes[2, 0].set_ylabel("|difference|", fontsize=fontsize)
    fig.suptitle(title or f'"{result.prompt}"  {settings_label(result)}  (same seeds)', fontsize=fontsize + 1)
    fig.tight_layout(rect=(0, 0, 0.9, 1))
    cax = fig.add_axes((0.91, 0.06, 0.015, 0.22))
    cb = fig.colorbar(shown, cax=cax)
    cb.set_label("grey levels", fontsize=fontsize)
    cb.ax.tick_params(labelsize=fontsize)
    return fig


def plot_seed_series(columns: dict, seeds: Sequence[int], title: str, size: float = 1.6, fontsize: float = 10):
    """One row per seed, one column per setting: ``columns = {label: (images (n, H, W, 3), detections)}``
    (the same ``seeds`` in every column); the detector's verdict above every image."""
    from ..plots import new_figure

    labels = list(columns)
    fig = new_figure(figsize=(size * len(labels) + 0.8, (size + 0.45) * len(seeds) + 0.9))
    axes = np.atleast_2d(fig.subplots(len(seeds), len(labels), squeeze=False))
    for r, sd in enumerate(seeds):
        for c, lab in enumerate(labels):
            ims, dets = columns[lab]
            ax = axes[r, c]
            ax.imshow(ims[r], interpolation="nearest")
            ax.set_xticks([]); ax.set_yticks([])
            ax.set_title((lab + "\n" if r == 0 else "") + verdict(dets[r]).replace("; ", "\n"), fontsize=fontsize)
        axes[r, 0].set_ylabel(f"seed {sd}", fontsize=fontsize)
    fig.suptitle(title, fontsize=fontsize + 1)
    fig.tight_layout()
    return fig


def plot_rates(results: Sequence, xs: Sequence[float], predicates: Sequence[str], xlabel: str,
               title: str = "", base: bool = True, fontsize: float = 10):
    """Rate of each predicate (95 % interval band) against the swept setting; dashed: unedited.
    ``results``: :class:`EditResult` or :class:`ShippedRow` (anything with ``rates``, ``base_rates``, ``n``)."""
    from ..plots import new_figure

    fig = new_figure(figsize=(7.5, 4.0))
    ax = fig.subplots()
    for i, k in enumerate(predicates):
        p = np.array([r.rates[k].p for r in results])
        lo = np.array([r.rates[k].lo for r in results])
        hi = np.array([r.rates[k].hi for r in results])
        line, = ax.plot(xs, 100 * p, "o-", label=k)
        ax.fill_between(xs, 100 * lo, 100 * hi, alpha=0.15, color=line.get_color())
        if base:
            ax.axhline(100 * results[0].base_rates[k].p, ls="--", lw=1.0, color=line.get_color())
    ax.set_xlabel(xlabel, fontsize=fontsize)
    ax.set_ylabel(f"% of {results[0].n} seeds (95 % CI)", fontsize=fontsize)
    ax.tick_params(labelsize=fontsize)
    ax.set_ylim(-3, 103)
    ax.set_title(title + "\n(dashed: unedited, same seeds)", fontsize=fontsize)
    ax.legend(fontsize=fontsize, loc="center left", bbox_to_anchor=(1.01, 0.5))
    fig.tight_layout()
    return fig


def step_rows(steps: Sequence[int], k: int = 4) -> list:
    """``k`` indices into a trace's recorded steps, evenly spread, first and last included."""
    n = len(steps)
    return sorted({int(round(i * (n - 1) / max(1, k - 1))) for i in range(min(k, n))})


def plot_step_maps(tr, image, title: str, rows: Optional[Sequence[int]] = None, cell: float = 1.55,
                   fontsize: float = 10):
    """The prompt words' cross-attention maps (mean over layers and heads) at a few recorded steps,
    beside the final image; one colour bar per row (attention probability, shared by the row's
    maps, 0 to the row's maximum). ``rows``: indices into ``tr.steps`` (default :func:`step_rows`)."""
    from ..plots import image_array, new_figure, resize_map, to_numpy
    from ..tokens import trace_prompt_positions, trace_tokens

    m = to_numpy(tr.maps(aggregate="step"))  # (S, N, h, w)
    idx = trace_prompt_positions(tr)
    toks = trace_tokens(tr)
    rows = step_rows(tr.steps) if rows is None else list(rows)
    cell = min(cell, 7.8 / (len(idx) + 1))  # at most 9 inches wide: shown unshrunk
    img = image_array(image)
    H, W = img.shape[:2]
    fig = new_figure(figsize=(cell * (len(idx) + 1) + 1.0, cell * len(rows) + 0.8))
    axes = np.atleast_2d(fig.subplots(len(rows), len(idx) + 1, squeeze=False))
    for r, si in enumerate(rows):
        maps = [resize_map(m[si, j], (H, W)) for j in idx]
        vmax = max(float(x.max()) for x in maps)
        ax = axes[r, 0]
        ax.imshow(img, interpolation="nearest")
        ax.set_ylabel(f"step {tr.steps[si]}", fontsize=fontsize)
        if r == 0:
            ax.set_title("final image", fontsize=fontsize)
        for c, (j, mp) in enumerate(zip(idx, maps), start=1):
            ax = axes[r, c]  # the map alone (an image under it would add its own brightness)
            h = ax.imshow(mp, cmap="magma", vmin=0, vmax=vmax)
            if r == 0:
                ax.set_title(f"'{toks[j].split(' ', 1)[-1]}'", fontsize=fontsize)
        cb = fig.colorbar(h, ax=list(axes[r, 1:]), fraction=0.04, pad=0.02)
        cb.ax.tick_params(labelsize=fontsize - 1 if fontsize > 10 else fontsize)
    for ax in axes.ravel():
        ax.set_xticks([]); ax.set_yticks([])
    import textwrap

    fig.suptitle(textwrap.fill(title, int(fig.get_figwidth() * 9)), fontsize=fontsize + 1)
    return fig


def attention_inside(tr, box, word: int, hw=(32, 32)) -> np.ndarray:
    """Per recorded step, the fraction of word ``word``'s attention map (mean over layers, resized to
    ``hw``) that falls inside ``box = (x0, y0, x1, y1)`` (pixels, exclusive ends). ``(S,)`` in [0, 1]."""
    from ..plots import resize_map, to_numpy

    m = to_numpy(tr.maps(aggregate="step"))[:, word]
    x0, y0, x1, y1 = (int(v) for v in box)
    out = []
    for s in range(m.shape[0]):
        a = resize_map(m[s], hw)
        out.append(float(a[y0:y1, x0:x1].sum() / max(a.sum(), 1e-12)))
    return np.array(out)


# ---- negation: removed, or replaced by another object? ----------------------------------------------
def keys_of(dets) -> list:
    """Detections as JSON: ``[["red", "circle"], ...]`` (largest first)."""
    return [[d.colour, d.shape] for d in dets]


def negation_outcomes(base_keys: Sequence, keys: Sequence, target=("blue", "square")) -> dict:
    """Per seed whose **unedited** image has ``target``: is it gone, and was it *removed* (the edited
    image holds exactly the unedited objects minus the target, as a multiset of (colour, shape)),
    *replaced* (gone, but as many objects or more: another object took its place) or neither (gone and
    the rest of the scene changed too)?

    ``base_keys`` / ``keys``: per seed, the detections as :func:`keys_of` lists. Returns 0/1 arrays over
    those seeds: ``gone``, ``removed``, ``replaced``, and ``count_change`` (edited - unedited number of
    objects), plus ``seeds_with_target`` (their indices)."""
    from collections import Counter

    t = tuple(target)
    idx = [i for i, b in enumerate(base_keys) if t in [tuple(x) for x in b]]
    gone = np.array([t not in [tuple(x) for x in keys[i]] for i in idx], bool)
    cnt = np.array([len(keys[i]) - len(base_keys[i]) for i in idx], int)
    rest = []
    for i in idx:
        want = Counter(tuple(x) for x in base_keys[i])
        want[t] -= 1
        rest.append(Counter(tuple(x) for x in keys[i]) == +want)
    return dict(seeds_with_target=idx, gone=gone, removed=gone & np.array(rest, bool), replaced=gone & (cnt >= 0),
                count_change=cnt)


def negation_rates(base_keys, keys, target=("blue", "square")) -> dict:
    """:func:`negation_outcomes` as :class:`~ebca_viz.claims.Rate` (``gone``, ``removed``, ``replaced``)
    and the mean ``count_change`` (``None`` when no unedited image has the target)."""
    o = negation_outcomes(base_keys, keys, target)
    if not o["seeds_with_target"]:
        return {}
    out = {k: claims.rate(o[k]) for k in ("gone", "removed", "replaced")}
    out["count_change"] = claims.mean(o["count_change"]) if len(o["count_change"]) >= 2 else None
    return out


NEG_TUNE_GRID = [(a, s) for s in (0.0, 0.4) for a in (0.15, 0.3, 0.6, 0.9)]
NEG_RULE = ("on the tuning seeds, among the (alpha, start) that keep the rest of the scene (every other unedited "
            "object still there) in at least half of the seeds (a negation that wrecks the scene is not one; if none "
            "does, all settings), the one with the highest removal rate (the blue square gone and every other object "
            "of the unedited image still there, nothing new); ties: the highest rate of keeping the rest of the scene, "
            "then the smaller alpha")
#: the share of tuning seeds whose rest of the scene a negation setting must keep to be eligible (NEG_RULE)
NEG_MIN_REST_KEPT = 0.5


def rest_kept(base_keys: Sequence, keys: Sequence, target=("blue", "square")) -> np.ndarray:
    """Per seed whose unedited image has ``target``: every *other* unedited object (multiset of
    (colour, shape)) is still in the edited image (whatever happened to the target). 0/1 array."""
    from collections import Counter

    t = tuple(target)
    out = []
    for b, k in zip(base_keys, keys):
        if t not in [tuple(x) for x in b]:
            continue
        want = Counter(tuple(x) for x in b)
        want[t] -= 1
        have = Counter(tuple(x) for x in k)
        out.append(all(have[key] >= c for key, c in (+want).items()))
    return np.array(out, bool)


def rate_of(d: Optional[dict]) -> Optional[claims.Rate]:
    """A :class:`~ebca_viz.claims.Rate` from its JSON (``k``, ``n``); ``None`` stays ``None``."""
    return None if d is None else claims.Rate(int(d["k"]), int(d["n"]))


def choose_negation(rows: Sequence[dict], metric: str = "removed") -> dict:
    """:data:`NEG_RULE` over rows ``{"alpha", "start", "removed": Rate json, "rest_kept": Rate json, ...}``:
    the highest ``metric`` rate among the settings that keep the rest of the scene on at least
    :data:`NEG_MIN_REST_KEPT` of the seeds; ties: higher rest kept, then smaller alpha. (The panel's rule,
    ``benchmarks/panel_negation.py``, is the same with ``metric="gone"``.)"""
    if not rows:
        raise InvalidSetting.of("rows", rows, "pass the rows of a negation sweep (at least one)",
                                why="choose_negation: no rows")
    p = lambda d: 0.0 if d is None else d["p"]  # noqa: E731  (no unedited image had the target)
    eligible = [r for r in rows if p(r.get("rest_kept")) >= NEG_MIN_REST_KEPT] or list(rows)
    best = min(eligible, key=lambda r: (-p(r[metric]), -p(r.get("rest_kept")), r["alpha"]))
    return {"alpha": best["alpha"], "start": best["start"]}


# ---- shipped results: benchmarks/shapes_ebcq.py writes docs/shapes_ebcq.json -----------------------------
SHIPPED_PATH = "docs/shapes_ebcq.json"
CONJ_ALPHAS = (0.5, 1.0, 2.0)
SYN_STARTS = (0.0, 0.2, 0.4, 0.6)


def result_json(r: EditResult) -> dict:
    """Everything a notebook shows of a result, as JSON: rates, paired differences, per-seed verdicts."""
    out = dict(name=r.name, prompt=r.prompt, settings=r.settings, n=r.n,
               rates={k: v.to_json() for k, v in r.rates.items()},
               base_rates={k: v.to_json() for k, v in r.base_rates.items()},
               paired={k: dict(v.to_json(), bounds=list(v.bounds)) for k, v in r.paired.items()},
               change=r.change.to_json(), shift=None if r.shift is None else r.shift.to_json(),
               keys=[keys_of(d) for d in r.detections], base_keys=[keys_of(d) for d in r.base_detections])
    return out


@dataclass
class ShippedRow:
    """A shipped :func:`result_json` back as rates (what :func:`plot_rates` and the text read)."""

    name: str
    prompt: str
    settings: dict
    n: int
    rates: dict
    base_rates: dict
    paired: dict
    change: claims.Mean
    shift: Optional[claims.Mean]
    keys: list
    base_keys: list

    @classmethod
    def from_json(cls, d: dict) -> "ShippedRow":
        def mean(m):
            if m is None:
                return None
            return claims.Mean(m["mean"], m["sd"], m["n"], bounds=tuple(m.get("bounds", (-np.inf, np.inf))))

        return cls(d["name"], d["prompt"], d["settings"], d["n"],
                   {k: claims.Rate(v["k"], v["n"]) for k, v in d["rates"].items()},
                   {k: claims.Rate(v["k"], v["n"]) for k, v in d["base_rates"].items()},
                   {k: mean(v) for k, v in d["paired"].items()}, mean(d["change"]), mean(d["shift"]),
                   d["keys"], d["base_keys"])


def shipped_fingerprint(weights: str, n: int, n_tune: int, steps: int, guidance: float) -> dict:
    """What determines ``docs/shapes_ebcq.json``: the weights, prompts, grids, seeds, steps, CFG."""
    return {"weights_sha256": weights,
            "settings": {"steps": steps, "guidance": guidance, "conj": [CONJ_PROMPT, CONJ_EDIT, list(CONJ_ALPHAS)],
                         "neg": [NEG_PROMPT, NEG_EDIT, [list(x) for x in NEG_TUNE_GRID]],
                         "syn": [SYN_PROMPT, SYN_TARGET, SYN_SOURCE, list(SYN_STARTS)], "neg_rule": NEG_RULE},
            "seeds": {"report": [REPORT_SEED, n], "tune": [TUNE_SEED, n_tune]}}


def run_shipped(pipe, n: int = 32, n_tune: int = 32, steps: int = 25, guidance: float = 3.0,
                sections=("conj", "neg", "syn"), log=print) -> dict:
    """The measurements of notebooks 03 and 04 at full size (what ``benchmarks/shapes_ebcq.py`` ships).

    ``conj``: "a red circle" + alpha x "a blue circle", alpha in :data:`CONJ_ALPHAS`, report seeds;
    ``neg``: the negation grid :data:`NEG_TUNE_GRID` on **tuning** seeds, the setting chosen by
    :data:`NEG_RULE`, then that setting on the report seeds (with the removal / replacement rates);
    ``syn``: notebook 04's synthetic edit for every start in :data:`SYN_STARTS`, report seeds."""
    import time

    from ..config import Edit

    out = {}
    kw = dict(n=n, seed_base=REPORT_SEED, steps=steps, guidance=guidance)
    if "conj" in sections:
        t = time.perf_counter()
        out["conj"] = [result_json(r) for r in series(conjunction, pipe, list(CONJ_ALPHAS), **kw)]
        log(f"conj: {time.perf_counter() - t:.0f} s")
    if "neg" in sections:
        t = time.perf_counter()
        tune, base = [], None
        for a, st in NEG_TUNE_GRID:
            r = measure_edits(pipe, NEG_PROMPT, [Edit(prompt=NEG_EDIT, alpha=a, direction=-1, start=st)], NEG_PREDICATES,
                        n=n_tune, seed_base=TUNE_SEED, steps=steps, guidance=guidance, base=base,
                        name=f"NOT '{NEG_EDIT}' x {a:g} from {st:g}")
            base = (r.base, r.base_detections)
            nr = negation_rates([keys_of(d) for d in r.base_detections], [keys_of(d) for d in r.detections])
            rk = rest_kept([keys_of(d) for d in r.base_detections], [keys_of(d) for d in r.detections])
            tune.append(dict(alpha=a, start=st, n=r.n, red_circle=r.rates["red circle"].to_json(),
                             rest_kept=claims.rate(rk).to_json() if rk.size else None,
                             keys=[keys_of(d) for d in r.detections], base_keys=[keys_of(d) for d in r.base_detections],
                             **{k: (None if nr.get(k) is None else nr[k].to_json())
                                for k in ("gone", "removed", "replaced", "count_change")}))
            log(f"neg tune alpha {a:g} start {st:g}: removed {nr.get('removed')}, replaced {nr.get('replaced')}")
        chosen = choose_negation(tune)
        rep = measure_edits(pipe, NEG_PROMPT, [Edit(prompt=NEG_EDIT, alpha=chosen["alpha"], direction=-1, start=chosen["start"])],
                      NEG_PREDICATES, name=f"NOT '{NEG_EDIT}' x {chosen['alpha']:g} from {chosen['start']:g}", **kw)
        out["neg"] = dict(tune=tune, chosen=chosen, rule=NEG_RULE, report=result_json(rep))
        log(f"neg: {time.perf_counter() - t:.0f} s; chosen {chosen}")
    if "syn" in sections:
        t = time.perf_counter()
        out["syn"] = [result_json(r) for r in series(measure_synthetic_edit, pipe, list(SYN_STARTS), **kw)]
        log(f"syn: {time.perf_counter() - t:.0f} s")
    return out


def load_shipped(pipe=None, path=None, steps: Optional[int] = None, guidance: Optional[float] = None) -> dict:
    """``docs/shapes_ebcq.json`` checked against this run (the weights of ``pipe``, ``steps``, ``guidance``
    when given), via :func:`ebca_viz.experiments.shipped.load`. Returns the file's dict."""
    from . import shipped

    return shipped.load_for_run(SHIPPED_PATH, path, pipe, steps=steps, guidance=guidance)


__all__ = ["plot_step_maps", "attention_inside", "step_rows", "EditResult", "ShippedRow", "measure_edits", "negation_outcomes", "negation_rates", "rate_of", "rest_kept", "choose_negation", "keys_of",
           "result_json", "run_shipped", "load_shipped", "shipped_fingerprint", "plot_seed_series", "settings_label", "has", "top_is", "not_", "verdict", "conjunction", "negation", "measure_synthetic_edit",
           "series", "sweep_alpha", "sweep_start", "plot_pairs", "plot_rates", "CONJ_PREDICATES", "NEG_PREDICATES",
           "SYN_PREDICATES"]
