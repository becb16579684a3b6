r"""Multi-concept generation on the shapes world, measured by failure type.

For two-object prompts ``"a <c1> <s1> and a <c2> <s2>"`` every method samples the **same initial
latents** (one per seed) and the detector (:mod:`ebca_viz.shapes.detect`) puts each image in
exactly one category (:func:`~ebca_viz.shapes.detect.score_pair`):

* ``both_present`` both requested objects are there (the success);
* ``swapped``      the colours are swapped between the shapes (an attribute-binding failure);
* ``missing``      fewer than two objects (the neglect failure EBCU targets);
* ``wrong_binding`` two or more objects, neither the requested nor the swapped pair;
* ``unsure``       the detector abstains (a decision within its margins changes the category);

plus the flag ``extra`` (more than two objects). Rates carry Wilson 95 % intervals
(:mod:`ebca_viz.claims`); each method's change in ``both_present`` against vanilla is the paired
mean of per-seed differences with its t interval.

Methods (:func:`default_methods`): vanilla; EBCU at the model's gammas; EBCU + up-weighting of
the two shape tokens; the same up-weight on the two articles "a" (a control: same strength on
words that name no object); EBCQ with each object as a conjunctive editorial prompt
(``O = (O_prompt + alpha O_obj1 + alpha O_obj2) / (1 + 2 alpha)``).
"""
from __future__ import annotations

import textwrap
import time
from dataclasses import dataclass, field
from typing import Callable, Optional

import numpy as np
import torch

from .. import claims

from ..shapes import world
from ..shapes.benchmark import vae_roundtrip_ok  # noqa: F401  (notebook 08's mc.vae_roundtrip_ok)
from ..sampling import sample, score
from ..shapes.detect import PAIR_VERDICTS
from ..errors import InvalidSetting, NotFound

CATEGORIES = PAIR_VERDICTS + ("extra",)  # the four categories, "unsure" (the detector abstains), the flag
SHAPE_TOKENS = [3, 7]  # "a red circle and a blue square": 3 = circle, 7 = square
ARTICLE_TOKENS = [1, 5]  # the two "a": the up-weighting control
REPORT_N, REPORT_SEED = 192, 0  # notebooks 02 / 08, the README and benchmarks/shapes_failure_types.py


@dataclass
class Method:
    """One way of sampling: an EBCA config (None = vanilla), or a factory ``(items) -> config`` for
    settings that depend on the prompt (EBCQ with the prompt's own objects as edits)."""

    name: str
    config: object = None
    per_prompt: Optional[Callable] = None

    def config_for(self, pipe, items):
        return self.per_prompt(pipe, items) if self.per_prompt is not None else self.config


def _ebcq_objects(alpha: float, gamma_attn: float, gamma_norm: float):
    from ..config import EBCAConfig, Edit

    def make(pipe, items):
        embeds = []
        for k in range(2):
            prompts = [world.caption_for([it[k]]) for it in items]
            with torch.no_grad():
                e = pipe.encode_prompt(prompt=prompts, device=pipe._execution_device, num_images_per_prompt=1,
                                      do_classifier_free_guidance=False)[0]
            embeds.append(e)
        edits = [Edit(embeds=e, alpha=alpha, direction=+1, start=0.0) for e in embeds]
        return EBCAConfig(gamma_attn=gamma_attn, gamma_norm=gamma_norm, edits=edits)

    return make


def default_methods(regime, ebcq_alpha: Optional[float] = None) -> list:
    """vanilla, EBCU, EBCU + up-weight (shape tokens), up-weight control (articles), EBCQ objects."""
    from ..config import EBCAConfig

    ga, gn, w = regime.gamma_attn, regime.gamma_norm, regime.upweight
    a = regime.edit_alpha if ebcq_alpha is None else ebcq_alpha
    return [
        Method("vanilla"),
        Method("EBCU", EBCAConfig(gamma_attn=ga, gamma_norm=gn)),
        Method("EBCU + up-weight objects", EBCAConfig(gamma_attn=ga, gamma_norm=gn, token_indices=SHAPE_TOKENS,
                                                      token_upweight=[w, w])),
        Method("EBCU + up-weight 'a' (control)", EBCAConfig(gamma_attn=ga, gamma_norm=gn,
                                                            token_indices=ARTICLE_TOKENS, token_upweight=[w, w])),
        Method(f"EBCQ objects (alpha {a:g})", per_prompt=_ebcq_objects(a, 0.0, 0.0)),
    ]


@dataclass
class MethodResult:
    name: str
    rates: dict  # category -> claims.Rate
    vs_vanilla: Optional[claims.Mean]  # paired both_present difference
    changed: Optional[claims.Rate]  # seeds whose image differs from vanilla (mean |diff| > 1/255)
    verdicts: list  # per image: category
    images: Optional[np.ndarray]  # (n, H, W, 3) uint8 (None for results loaded from a shipped file)
    extra: list = field(default_factory=list)  # per image: more than two objects (0/1)

    def row(self) -> dict:
        out = dict(method=self.name, n=self.rates["both_present"].n,
                   **{k: self.rates[k].to_json() for k in CATEGORIES})
        if self.vs_vanilla is not None:
            out["both_present_vs_vanilla"] = self.vs_vanilla.to_json()
            out["changed_vs_vanilla"] = self.changed.to_json()
        return out


@dataclass
class MulticonceptResult:
    items: list  # per image ((c1, s1), (c2, s2))
    prompts: list
    seeds: list
    steps: int
    guidance: float
    methods: dict = field(default_factory=dict)  # name -> MethodResult
    seconds: float = 0.0

    @property
    def n(self) -> int:
        return len(self.items)

    def table(self) -> str:
        """Markdown: one row per method, each failure type as 'p % [lo, hi]'."""
        head = "| method | n | " + " | ".join(CATEGORIES) + " | both right vs vanilla (paired) |"
        lines = [head, "|" + "---|" * (len(CATEGORIES) + 3)]
        for m in self.methods.values():
            cells = [f"{100 * m.rates[k].p:.1f} % [{100 * m.rates[k].lo:.1f}, {100 * m.rates[k].hi:.1f}]"
                     for k in CATEGORIES]
            d = "—" if m.vs_vanilla is None else \
                f"{100 * m.vs_vanilla.value:+.1f} pts [{100 * m.vs_vanilla.lo:+.1f}, {100 * m.vs_vanilla.hi:+.1f}]"
            lines.append(f"| {m.name} | {m.rates['both_present'].n} | " + " | ".join(cells) + f" | {d} |")
        return "\n".join(lines)

    def only(self, names) -> "MulticonceptResult":
        """The same result restricted to the methods ``names`` (in that order; the first stays the reference)."""
        names = list(names)
        missing = [k for k in names if k not in self.methods]
        if missing:
            raise NotFound.of("names", missing, f"pick from the methods of this result: {list(self.methods)}",
                              why="not in this result")
        return MulticonceptResult(self.items, self.prompts, self.seeds, self.steps, self.guidance,
                                  {k: self.methods[k] for k in names}, self.seconds)

    def to_json(self) -> dict:
        return dict(n=self.n, steps=self.steps, guidance=self.guidance, seconds=self.seconds,
                    methods=[m.row() for m in self.methods.values()])


def prompt_items(split: str, n: int, seed_base: int):
    """``n`` (prompt, seed) pairs cycling through the two-object prompts of ``split``."""
    pairs = world.two_object_prompts(split)
    items = [pairs[k % len(pairs)] for k in range(n)]
    return items, [world.caption_for(list(p)) for p in items], [seed_base + k for k in range(n)]


def _sample(pipe, method: Method, items, prompts, seeds, steps, guidance, batch):
    """:func:`ebca_viz.sampling.sample` one batch at a time: an EBCQ method's edits are the batch's own objects."""
    out = []
    for i in range(0, len(prompts), batch):
        sl = slice(i, i + batch)
        cfg = method.config_for(pipe, items[sl])
        out.append(sample(pipe, prompts[sl], seeds[sl], steps=steps, guidance=guidance, method=cfg, batch=batch))
    return np.concatenate(out)


def measure_methods(pipe, methods: list, n: int = 96, split: str = "report", seed_base: int = 0, steps: int = 25,
            guidance: float = 3.0, batch: int = 48, progress: bool = True) -> MulticonceptResult:
    """Sample ``n`` two-object prompts of ``split`` with every method on the same latents and score them.

    ``methods[0]`` is the reference (vanilla) for the paired differences."""
    if n < 2:
        raise InvalidSetting(f"n must be >= 2 samples, got {n}")
    if not methods:
        raise InvalidSetting("methods is empty: pass e.g. default_methods(regime)")
    t0 = time.time()
    items, prompts, seeds = prompt_items(split, n, seed_base)
    res = MulticonceptResult(items, prompts, seeds, steps, guidance)
    base = None
    it = methods
    if progress:
        from tqdm.auto import tqdm

        it = tqdm(methods, desc=f"{n} prompts x {len(methods)} methods")
    for m in it:
        ims = _sample(pipe, m, items, prompts, seeds, steps, guidance, batch)
        cats = score(ims, items)
        ind = {k: np.array([c["category"] == k for c in cats]) for k in PAIR_VERDICTS}
        ind["extra"] = np.array([c["extra"] for c in cats])
        rates = {k: claims.rate(v) for k, v in ind.items()}
        if base is None:
            base = (ind, ims)
            vs, changed = None, None
        else:
            vs = claims.paired_diff(ind["both_present"], base[0]["both_present"])
            diff = np.abs(ims.astype(np.float32) - base[1].astype(np.float32)).mean(axis=(1, 2, 3))
            changed = claims.rate(diff > 1.0)
        res.methods[m.name] = MethodResult(m.name, rates, vs, changed, [c["category"] for c in cats], ims,
                                           [int(c["extra"]) for c in cats])
    res.seconds = time.time() - t0
    return res


def sweep_gammas(pipe, grid, n: int = 96, guidance: float = 3.0, steps: int = 25, seed_base: int = 100_000,
                 split: str = "tune", upweight: Optional[float] = None) -> list:
    """Both-right rate (and the other categories) per ``(gamma_attn, gamma_norm)`` on the tuning split."""
    from ..config import EBCAConfig

    methods = [Method("vanilla")]
    for ga, gn in grid:
        kw = dict(gamma_attn=ga, gamma_norm=gn)
        if upweight is not None:
            kw.update(token_indices=SHAPE_TOKENS, token_upweight=[upweight] * 2)
        methods.append(Method(f"ga={ga:g} gn={gn:g}" + (f" up={upweight:g}" if upweight else ""), EBCAConfig(**kw)))
    r = measure_methods(pipe, methods, n=n, split=split, seed_base=seed_base, steps=steps, guidance=guidance)
    return [dict(setting=m.name, guidance=guidance, **{k: v for k, v in m.row().items() if k != "method"})
            for m in r.methods.values()]


def sweep_guidance(pipe, values, n: int = 96, steps: int = 25, seed_base: int = 100_000, split: str = "tune") -> list:
    """Vanilla both-right rate per CFG scale on the tuning split (the model's own best CFG)."""
    rows = []
    for g in values:
        r = measure_methods(pipe, [Method("vanilla")], n=n, split=split, seed_base=seed_base, steps=steps, guidance=g,
                    progress=False)
        rows.append(dict(setting=f"CFG {g:g}", guidance=g, **{k: v for k, v in
                                                              r.methods["vanilla"].row().items() if k != "method"}))
    return rows


def contrast_seeds(result: MulticonceptResult, a: str, b: str, k: int = 4) -> list:
    """Indices of up to ``k`` seeds where methods ``a`` and ``b`` get different detector verdicts
    (then the largest pixel differences): the pairs worth showing side by side."""
    ma, mb = result.methods[a], result.methods[b]
    diff = np.abs(ma.images.astype(np.float32) - mb.images.astype(np.float32)).mean(axis=(1, 2, 3))
    flips = [i for i in np.argsort(-diff) if ma.verdicts[i] != mb.verdicts[i]]
    rest = [i for i in np.argsort(-diff) if i not in flips and diff[i] > 1.0]
    return [int(i) for i in (flips + rest)[:k]]


@dataclass
class SeedChoice:
    """The seed of a one-prompt demo where a method changes the image most (and what it is on a typical seed)."""

    seed: int
    change: float  # mean |method - vanilla| in [0, 255] at ``seed``
    median_change: float  # the median over all seeds tried
    seeds: list
    changes: list


def pick_demo_seed(pipe, prompt: str, config, seeds=range(16), steps: int = 25, guidance: float = 3.0) -> SeedChoice:
    """Sample ``prompt`` on each seed with and without ``config`` and return the seed whose image changes
    most (ties: the smaller seed). A demo picked this way must say so: :attr:`SeedChoice.median_change`
    is what a typical seed shows."""
    seeds = [int(x) for x in seeds]
    if not seeds:
        raise InvalidSetting(f"seeds is empty ({seeds!r}); fix: pass at least one seed")
    van = sample(pipe, [prompt] * len(seeds), seeds, steps=steps, guidance=guidance)
    eb = sample(pipe, [prompt] * len(seeds), seeds, steps=steps, guidance=guidance, method=config)
    ch = np.abs(eb.astype(np.float32) - van.astype(np.float32)).mean(axis=(1, 2, 3))
    i = int(np.argmax(ch))
    return SeedChoice(seeds[i], float(ch[i]), float(np.median(ch)), seeds, [float(x) for x in ch])


# ---- shipped results (benchmarks/shapes_multiconcept.py -> docs/shapes_multiconcept.json) -----------------------

SHIPPED_NAME = "shapes_multiconcept.json"  # in docs/
SINGLE_METRICS = ("colour_ok", "shape_ok", "correct", "exact")


def shipped_path():
    """``docs/shapes_multiconcept.json`` of this copy of the repository."""
    from pathlib import Path

    return Path(__file__).resolve().parents[2] / "docs" / SHIPPED_NAME


def shipped_fingerprint(pipe, regime, n_pair: int = REPORT_N, n_single: int = 480, vae_n: int = 500,
                        pair_seed: int = REPORT_SEED, single_seed: int = 0, vae_seed: int = 777,
                        pair_batch: int = 48, single_batch: int = 64, methods=None) -> dict:
    """What produces the shipped numbers: weights hash, settings (steps, CFG, regime, methods, batch sizes,
    threads, device), seeds and code version (:mod:`ebca_viz.experiments.shipped`)."""
    import torch

    from . import shipped

    names = [m.name for m in (methods or default_methods(regime))]
    return {
        "benchmark": "benchmarks/shapes_multiconcept.py",
        "model": regime.name,
        "weights_sha256": shipped.weights_sha256(pipe),
        "settings": {"steps": regime.steps, "guidance": regime.guidance, "regime": regime.to_json(),
                     "pair_methods": names, "single_methods": ["vanilla", "EBCU"], "pair_batch": pair_batch,
                     "single_batch": single_batch, "threads": torch.get_num_threads(), "device": str(pipe.device)},
        "seeds": {"pair": {"split": "report", "base": pair_seed, "n": n_pair},
                  "single": {"base": single_seed, "n": n_single}, "vae_roundtrip": {"seed": vae_seed, "n": vae_n}},
        "code": shipped.code_version(),
    }


def single_items(n: int, seed_base: int = 0):
    """``n`` single-object (item, prompt, seed) triples cycling through the 12 single-object prompts."""
    singles = world.single_prompts()
    items = [singles[k % len(singles)] for k in range(n)]
    return items, [world.caption_for([p]) for p in items], [seed_base + k for k in range(n)]


def measure_single(pipe, configs: dict, n: int, seed_base: int = 0, steps: int = 25, guidance: float = 3.0,
                   batch: int = 64, progress: bool = False) -> dict:
    """Single-object prompts under each ``configs[name]`` (None = vanilla), same latents per seed.

    Returns ``{"items", "seeds", "methods": {name: {metric: [0/1 per sample]}}, "seconds"}`` with the
    metrics of :func:`ebca_viz.shapes.detect.score_single` (:data:`SINGLE_METRICS`)."""
    t0 = time.time()
    items, prompts, seeds = single_items(n, seed_base)
    out = {"items": [list(it) for it in items], "seeds": seeds, "methods": {}}
    it = configs.items()
    if progress:
        from tqdm.auto import tqdm

        it = tqdm(list(it), desc=f"{n} single-object prompts x {len(configs)} methods")
    for name, cfg in it:
        rows = score(sample(pipe, prompts, seeds, steps=steps, guidance=guidance, method=cfg, batch=batch), items)
        out["methods"][name] = {k: [int(r[k]) for r in rows] for k in SINGLE_METRICS}
    out["seconds"] = time.time() - t0
    return out


def pair_results_json(result: MulticonceptResult, split: str = "report", seed_base: int = REPORT_SEED) -> dict:
    """The raw per-sample outcomes of :func:`measure_methods` (verdicts, extra flags, mean |diff| to vanilla)."""
    base = next(iter(result.methods.values())).images.astype(np.float32)
    methods = {}
    for name, m in result.methods.items():
        cats = m.verdicts
        change = np.abs(m.images.astype(np.float32) - base).mean(axis=(1, 2, 3))
        methods[name] = {"verdicts": list(cats), "extra": [int(x) for x in m.extra],
                         "change": [round(float(x), 4) for x in change]}
    return {"split": split, "seed_base": seed_base, "n": result.n, "items": [[list(a), list(b)] for a, b in result.items],
            "prompts": result.prompts, "seeds": result.seeds, "steps": result.steps, "guidance": result.guidance,
            "methods": methods, "seconds": result.seconds}


def _method_from_verdicts(name, verdicts, extra, base_verdicts=None, change=None, images=None) -> MethodResult:
    ind = {k: np.array([v == k for v in verdicts]) for k in PAIR_VERDICTS}
    ind["extra"] = np.asarray(extra, bool)
    rates = {k: claims.rate(v) for k, v in ind.items()}
    vs = changed = None
    if base_verdicts is not None:
        vs = claims.paired_diff(ind["both_present"], np.array([v == "both_present" for v in base_verdicts]))
        changed = claims.rate(np.asarray(change) > 1.0) if change is not None else None
    return MethodResult(name, rates, vs, changed, list(verdicts), images, [int(x) for x in extra])


def result_from_shipped(data: dict) -> MulticonceptResult:
    """A :class:`MulticonceptResult` (no images) from the ``pair`` part of a shipped file: rates with their
    Wilson intervals and paired differences recomputed from the stored per-sample verdicts."""
    p = data["results"]["pair"]
    items = [tuple(tuple(o) for o in it) for it in p["items"]]
    res = MulticonceptResult(items, list(p["prompts"]), list(p["seeds"]), int(p["steps"]), float(p["guidance"]),
                             seconds=float(p["seconds"]))
    base = None
    for name, m in p["methods"].items():
        res.methods[name] = _method_from_verdicts(name, m["verdicts"], m["extra"], base, m["change"])
        if base is None:
            base = m["verdicts"]
    return res


def single_from_shipped(data: dict, metric: str = "exact") -> dict:
    """``{name: claims.Rate}`` of a single-object ``metric`` per method, plus ``"EBCU vs vanilla"``: the
    paired difference (a :class:`~ebca_viz.claims.Mean`, same seeds)."""
    if metric not in SINGLE_METRICS:
        raise InvalidSetting(f"metric must be one of {SINGLE_METRICS}, got {metric!r}")
    s = data["results"]["single"]["methods"]
    out = {name: claims.rate(m[metric]) for name, m in s.items()}
    names = list(s)
    for name in names[1:]:
        out[f"{name} vs {names[0]}"] = claims.paired_diff(s[name][metric], s[names[0]][metric])
    return out


def load_shipped(pipe, regime, path=None) -> dict:
    """:func:`ebca_viz.experiments.shipped.load` of ``docs/shapes_multiconcept.json`` with the expectation
    that its weights are ``pipe``'s and its steps / guidance / gammas are ``regime``'s (refused otherwise)."""
    from . import shipped

    expect = {"weights_sha256": shipped.weights_sha256(pipe),
              "settings": {"steps": regime.steps, "guidance": regime.guidance,
                           "regime": {k: regime.to_json()[k] for k in ("gamma_attn", "gamma_norm", "upweight",
                                                                       "edit_alpha")}}}
    return shipped.load(path or shipped_path(), expect=expect)


def resample_pair(pipe, data: dict, methods: list, n: int, batch: int = 48) -> MulticonceptResult:
    """Re-sample the first ``n`` two-object samples of a shipped file (its prompts, seeds, steps and CFG)
    with ``methods`` (whose names must be in the file; ``methods[0]`` the reference)."""
    p = data["results"]["pair"]
    missing = [m.name for m in methods if m.name not in p["methods"]]
    if missing:
        raise InvalidSetting(f"resample_pair: methods {missing} are not in the shipped file "
                             f"(it has {list(p['methods'])}); "
                             "fix: pass only methods the shipped file has")
    if not 2 <= n <= p["n"]:
        raise InvalidSetting(f"resample_pair: n must be in 2..{p['n']} (the shipped n), got {n}")
    return measure_methods(pipe, methods, n=n, split=p["split"], seed_base=int(p["seed_base"]), steps=int(p["steps"]),
                   guidance=float(p["guidance"]), batch=batch, progress=False)


@dataclass
class Agreement:
    """Live re-sample vs shipped numbers: one row per compared quantity, and per-seed verdict agreement."""

    rows: list  # [(what, shipped, live, overlap: bool)]
    verdicts: dict  # method -> claims.Rate of seeds whose live verdict equals the shipped one

    @property
    def all_overlap(self) -> bool:
        return all(r[3] for r in self.rows)

    @property
    def n_overlap(self) -> int:
        return sum(bool(r[3]) for r in self.rows)

    def table(self) -> str:
        lines = ["| quantity | shipped (95 % CI) | live (95 % CI) | intervals overlap |", "|---|---|---|---|"]
        for what, a, b, ok in self.rows:
            lines.append(f"| {what} | {_short(a)} | {_short(b)} | {'yes' if ok else 'NO'} |")
        return "\n".join(lines)

    #: the share of seeds whose live verdict must equal the shipped one (the notebooks' stated rule)
    MIN_VERDICT_AGREEMENT = 0.75

    def report(self, n: int) -> None:
        """Print the table and the per-method verdict agreement, then check the stated rule: every
        pair of 95 % intervals overlaps, and live verdicts equal the shipped ones on at least
        :attr:`MIN_VERDICT_AGREEMENT` of the same seeds (``n`` = the live sample size, for the sentence)."""
        print(self.table())
        for name, a in self.verdicts.items():
            print(f"{name}: same verdict as the shipped file on the same seed in {a}")
        claims.check(self.all_overlap, f"the live re-sample (n = {n}) agrees with the shipped numbers "
                     "(every pair of 95 % intervals overlaps)", f"{self.n_overlap}/{len(self.rows)} overlap")
        claims.check(min(a.p for a in self.verdicts.values()) >= self.MIN_VERDICT_AGREEMENT,
                     "live verdicts equal the shipped verdicts on >= 75 % of the same seeds", *self.verdicts.values())


def _short(x) -> str:
    if isinstance(x, claims.Rate):
        return f"{x.k}/{x.n} = {100 * x.p:.1f} % [{100 * x.lo:.1f}, {100 * x.hi:.1f}]"
    return f"{100 * x.value:+.1f} pts [{100 * x.lo:+.1f}, {100 * x.hi:+.1f}] (n = {x.n})"


def compare_live(shipped_result: MulticonceptResult, live: MulticonceptResult,
                 categories=("both_present", "swapped", "missing", "wrong_binding")) -> Agreement:
    """Each live method's rates (and paired difference to the reference) against the shipped ones on the
    full shipped n; the rule is :func:`ebca_viz.experiments.shipped.overlap` (95 % intervals overlap).
    Per-seed: the fraction of live seeds whose verdict equals the shipped verdict for the same seed."""
    from . import shipped

    rows, verdicts = [], {}
    for name, m in live.methods.items():
        s = shipped_result.methods[name]
        for k in categories:
            rows.append((f"{name}: {k.replace('_', ' ')}", s.rates[k], m.rates[k], shipped.overlap(s.rates[k], m.rates[k])))
        if m.vs_vanilla is not None and s.vs_vanilla is not None:
            rows.append((f"{name} - {next(iter(live.methods))}: both right", s.vs_vanilla, m.vs_vanilla,
                         shipped.overlap(s.vs_vanilla, m.vs_vanilla)))
        verdicts[name] = shipped.verdict_agreement(s.verdicts[:live.n], m.verdicts)
    return Agreement(rows, verdicts)


def paired_effects(result: MulticonceptResult, name: str, categories=CATEGORIES, reference: Optional[str] = None) -> dict:
    """``{category: claims.Mean}``: method ``name`` minus ``reference`` (default: the first method) in the rate of
    each category, paired on the same seeds (positive = more samples in that category)."""
    ref = result.methods[reference or next(iter(result.methods))]
    m = result.methods[name]
    out = {}
    for k in categories:
        if k == "extra":
            a, b = np.asarray(m.extra, float), np.asarray(ref.extra, float)
        else:
            a = np.array([v == k for v in m.verdicts], float)
            b = np.array([v == k for v in ref.verdicts], float)
        out[k] = claims.paired_diff(a, b)
    return out


def plot_rates(result: MulticonceptResult, categories=CATEGORIES, title: Optional[str] = None,
               width: float = 9.0, fontsize: float = 10):
    """Grouped bars: rate of each failure type per method, with the 95 % (Wilson) interval as error bars
    (:func:`ebca_viz.plots.plot_rate_bars`). ``width`` inches; text at ``fontsize`` points."""
    from ..plots import plot_rate_bars

    return plot_rate_bars({k: m.rates for k, m in result.methods.items()}, categories, "% of samples (95 % CI)",
                          title or f"two-object prompts, n = {result.n} per method, CFG {result.guidance:g}, "
                                   f"{result.steps} steps", width=width, height=3.2 + 0.25 * len(result.methods),
                          fontsize=fontsize)


def plot_examples(result: MulticonceptResult, methods=None, k: int = 8, size: float = 1.45, seeds=None,
                  fontsize: float = 10):
    """Seeds (the first ``k``, or the indices ``seeds``) under each method (rows): each column is headed by
    its prompt and seed, each image has the detector's category under it and, below the first row, the
    mean |difference| to the first method on the same seed (Δ, grey levels of 255). Images are drawn with
    nearest-neighbour interpolation (the model draws 32 x 32 pixels)."""
    from ..plots import new_figure

    names = list(methods or result.methods)
    idx = list(range(k)) if seeds is None else list(seeds)
    k = len(idx)
    fig = new_figure(figsize=(size * k + 1.4, (size + 0.45) * len(names) + 0.8), layout="constrained")
    axes = np.atleast_2d(fig.subplots(len(names), k, squeeze=False))
    base = result.methods[names[0]].images
    for r, name in enumerate(names):
        m = result.methods[name]
        for c, i in enumerate(idx):
            ax = axes[r, c]
            ax.imshow(m.images[i], interpolation="nearest")
            ax.set_xticks([]); ax.set_yticks([])
            t = m.verdicts[i].replace("_", " ").replace("wrong binding", "wrong bind.")
            if r and base is not None:
                t += f", Δ {np.abs(m.images[i].astype(float) - base[i]).mean():.1f}"
            ax.set_xlabel(t, fontsize=fontsize)
            if c == 0:
                ax.set_ylabel(textwrap.fill(name, 14), fontsize=fontsize)
            if r == 0:
                p = result.prompts[i].replace("a ", "").replace(" and ", "\n+ ")
                ax.set_title(f"{p}\nseed {result.seeds[i]}", fontsize=fontsize)
    return fig


def first_flips(verdicts_a: list, verdicts_b: list, k: int = 4) -> list:
    """Indices of the first ``k`` samples (in seed order) whose verdicts differ between two methods: a demo
    rule a reader can check."""
    return [i for i, (a, b) in enumerate(zip(verdicts_a, verdicts_b)) if a != b][:k]


__all__ = ["Method", "MethodResult", "MulticonceptResult", "default_methods", "measure_methods", "sweep_gammas",
           "sweep_guidance", "contrast_seeds", "pick_demo_seed", "SeedChoice", "plot_rates",
           "shipped_path", "shipped_fingerprint", "single_items", "measure_single", "pair_results_json",
           "result_from_shipped", "single_from_shipped", "load_shipped", "resample_pair", "Agreement", "compare_live",
           "SHIPPED_NAME", "SINGLE_METRICS", "first_flips",
           "paired_effects", "vae_roundtrip_ok", "plot_examples", "prompt_items", "CATEGORIES", "SHAPE_TOKENS",
           "ARTICLE_TOKENS", "REPORT_N", "REPORT_SEED"]
