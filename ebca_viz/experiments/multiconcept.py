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

import math
import textwrap
import time
from dataclasses import dataclass, field
from typing import Callable, Optional

import numpy as np
import torch

from .. import claims
from ..shapes import world
from ..shapes.detect import PAIR_CATEGORIES, PAIR_VERDICTS, detect, score_pair

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
    images: np.ndarray  # (n, H, W, 3) uint8

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

    def to_json(self) -> dict:
        return dict(n=self.n, steps=self.steps, guidance=self.guidance, seconds=self.seconds,
                    methods=[m.row() for m in self.methods.values()])


def prompt_items(split: str, n: int, seed_base: int):
    """``n`` (prompt, seed) pairs cycling through the two-object prompts of ``split``."""
    pairs = world.two_object_prompts(split)
    items = [pairs[k % len(pairs)] for k in range(n)]
    return items, [world.caption_for(list(p)) for p in items], [seed_base + k for k in range(n)]


def _sample(pipe, method: Method, items, prompts, seeds, steps, guidance, batch):
    from ..shapes.benchmark import sample

    out = []
    for i in range(0, len(prompts), batch):
        sl = slice(i, i + batch)
        cfg = method.config_for(pipe, items[sl])
        out.append(sample(pipe, prompts[sl], seeds[sl], steps=steps, guidance=guidance, config=cfg, batch=batch))
    return np.concatenate(out)


def measure(pipe, methods: list, n: int = 96, split: str = "report", seed_base: int = 0, steps: int = 25,
            guidance: float = 3.0, batch: int = 48, progress: bool = True) -> MulticonceptResult:
    """Sample ``n`` two-object prompts of ``split`` with every method on the same latents and score them.

    ``methods[0]`` is the reference (vanilla) for the paired differences."""
    if n < 2:
        raise ValueError(f"n must be >= 2 samples, got {n}")
    if not methods:
        raise ValueError("methods is empty: pass e.g. default_methods(regime)")
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
        cats = [score_pair(item, detect(im)) for item, im in zip(items, ims)]
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
        res.methods[m.name] = MethodResult(m.name, rates, vs, changed, [c["category"] for c in cats], ims)
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
    r = measure(pipe, methods, n=n, split=split, seed_base=seed_base, steps=steps, guidance=guidance)
    return [dict(setting=m.name, guidance=guidance, **{k: v for k, v in m.row().items() if k != "method"})
            for m in r.methods.values()]


def sweep_guidance(pipe, values, n: int = 96, steps: int = 25, seed_base: int = 100_000, split: str = "tune") -> list:
    """Vanilla both-right rate per CFG scale on the tuning split (the model's own best CFG)."""
    rows = []
    for g in values:
        r = measure(pipe, [Method("vanilla")], n=n, split=split, seed_base=seed_base, steps=steps, guidance=g,
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
    from ..shapes.benchmark import sample

    seeds = [int(x) for x in seeds]
    if not seeds:
        raise ValueError("seeds is empty")
    van = sample(pipe, [prompt] * len(seeds), seeds, steps=steps, guidance=guidance)
    eb = sample(pipe, [prompt] * len(seeds), seeds, steps=steps, guidance=guidance, config=config)
    ch = np.abs(eb.astype(np.float32) - van.astype(np.float32)).mean(axis=(1, 2, 3))
    i = int(np.argmax(ch))
    return SeedChoice(seeds[i], float(ch[i]), float(np.median(ch)), seeds, [float(x) for x in ch])


def plot_rates(result: MulticonceptResult, categories=CATEGORIES, title: Optional[str] = None):
    """Grouped bars: rate of each failure type per method, with the 95 % interval as error bars."""
    from ..viz import new_figure

    names = list(result.methods)
    fig = new_figure(figsize=(1.6 + 1.5 * len(categories), 3.4))
    ax = fig.subplots()
    width = 0.8 / len(names)
    for j, name in enumerate(names):
        r = result.methods[name].rates
        p = np.array([r[k].p for k in categories])
        lo = np.clip(p - np.array([r[k].lo for k in categories]), 0, None)
        hi = np.clip(np.array([r[k].hi for k in categories]) - p, 0, None)
        ax.bar(np.arange(len(categories)) + (j - (len(names) - 1) / 2) * width, 100 * p, width,
               yerr=100 * np.stack([lo, hi]), capsize=2, label=name)
    ax.set_xticks(range(len(categories)), [c.replace("_", " ") for c in categories])
    ax.set_ylabel("% of samples (95 % CI)")
    ax.set_title(title or f"two-object prompts, n = {result.n} per method, CFG {result.guidance:g}, "
                          f"{result.steps} steps", fontsize=9)
    ax.legend(fontsize=7)
    fig.tight_layout()
    return fig


def plot_examples(result: MulticonceptResult, methods=None, k: int = 8, size: float = 1.3, seeds=None):
    """Seeds (the first ``k``, or the indices ``seeds``) under each method (rows), the detector's
    category in every title, with the mean |difference| to vanilla on the same seed."""
    from ..viz import new_figure

    names = list(methods or result.methods)
    idx = list(range(k)) if seeds is None else list(seeds)
    k = len(idx)
    fig = new_figure(figsize=(size * k, size * len(names) + 0.6))
    axes = np.atleast_2d(fig.subplots(len(names), k))
    base = next(iter(result.methods.values())).images
    for r, name in enumerate(names):
        m = result.methods[name]
        for c, i in enumerate(idx):
            ax = axes[r, c]
            ax.imshow(m.images[i], interpolation="nearest")
            ax.set_xticks([]); ax.set_yticks([])
            t = m.verdicts[i].replace("_", " ")
            if r:
                t += f"\nΔ {np.abs(m.images[i].astype(float) - base[i]).mean():.1f}"
            ax.set_title(t, fontsize=6)
            if c == 0:
                ax.set_ylabel(textwrap.fill(name, 18), fontsize=6)  # whole name, wrapped (it was cut at 22)
    for c, i in enumerate(idx):
        axes[0, c].set_xlabel(result.prompts[i].replace(" and ", "\n& "), fontsize=5)
        axes[0, c].xaxis.set_label_position("top")
    fig.tight_layout()
    return fig


__all__ = ["Method", "MethodResult", "MulticonceptResult", "default_methods", "measure", "sweep_gammas",
           "sweep_guidance", "contrast_seeds", "pick_demo_seed", "SeedChoice", "plot_rates", "plot_examples", "prompt_items", "CATEGORIES", "SHAPE_TOKENS",
           "ARTICLE_TOKENS", "REPORT_N", "REPORT_SEED"]
