r"""The preregistered comparison (``docs/preregistration.md``) as notebooks 02 and 08 read it.

``benchmarks/neglect_comparison.py --split report`` samples vanilla, EBCU, EBCU + up-weighting and
Attend-and-Excite on the same seeds (paired design) and writes ``docs/neglect_comparison_<world>.json``:

    {"title", "fingerprint": {model, weights_sha256, split, steps, guidance_scale, settings, seeds,
                              code_commit, detector_sha, ...},
     "fingerprint_sha", "complete", "n_samples", "summary": {"methods": {label: rates, paired diffs,
     seconds per image}, "samples": [{set, index, prompt, seed}], "per_sample": {label: [{category,
     extra}]}}, "selection", ..., "digest"}

:func:`load_comparison` refuses a file whose ``digest`` does not match its content, whose
``fingerprint_sha`` does not match its fingerprint, that is incomplete, that was made with other
weights than the notebook's pipeline, or whose stored rates disagree with the per-sample verdicts
they summarise. Everything the notebooks print is recomputed from the per-sample verdicts
(:class:`ComparisonReport`), as :class:`~ebca_viz.experiments.multiconcept.MulticonceptResult`
objects so that the plotting and live-agreement helpers of :mod:`.multiconcept` apply.
"""
from __future__ import annotations

import hashlib
import json
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional

import numpy as np

from .. import claims
from .multiconcept import MulticonceptResult, _method_from_verdicts
from .shipped import ShippedMismatchError
from ..errors import InvalidSetting, MissingFile

#: the four methods of the preregistration, in table order (vanilla first: the reference)
METHODS = ("vanilla", "EBCU", "EBCU + up-weight", "A&E")


def digest(res: dict) -> str:
    """sha256 of the canonical JSON (sorted keys, no spaces) of ``res`` without its ``digest`` key."""
    body = {k: v for k, v in res.items() if k != "digest"}
    return hashlib.sha256(json.dumps(body, sort_keys=True, separators=(",", ":"), default=str).encode()).hexdigest()


def shipped_path(model: str) -> Path:
    """``docs/neglect_comparison_<model>.json`` of this copy of the repository."""
    return Path(__file__).resolve().parents[2] / "docs" / f"neglect_comparison_{model}.json"


def _items(prompt: str):
    from ..eval.detector import parse_shapes_prompt

    return tuple(tuple(o) for o in parse_shapes_prompt(prompt))


@dataclass
class ComparisonReport:
    """One world's preregistered comparison, recomputed from its per-sample verdicts.

    ``pairs``: two-object samples as a :class:`MulticonceptResult` keyed by method name
    (:data:`METHODS`); ``single``: ``{method: [category per single-object sample]}``;
    ``labels``: ``{method: the sweep setting label}``; ``specs``: ``{method: setting string}``."""

    model: str
    data: dict
    pairs: MulticonceptResult
    single: dict
    single_samples: list
    labels: dict
    specs: dict
    seconds: dict = field(default_factory=dict)  # method -> median s / image (this run's machine)

    @property
    def fingerprint(self) -> dict:
        return self.data["fingerprint"]

    def rate(self, method: str, category: str = "both_present") -> claims.Rate:
        """Two-object rate of ``category`` (``extra``: the flag) for ``method``."""
        return self.pairs.methods[method].rates[category]

    def single_rate(self, method: str) -> claims.Rate:
        return claims.rate([c == "correct" for c in self.single[method]])

    def diff(self, method: str, reference: str = "vanilla", category: str = "both_present") -> claims.Mean:
        """Paired difference ``1[method] - 1[reference]`` over the same samples (t 95 % interval);
        ``category="single_correct"``: on the single-object samples."""
        if category == "single_correct":
            a, b = self.single[method], self.single[reference]
            return claims.paired_diff([x == "correct" for x in a], [x == "correct" for x in b])
        a, b = self.pairs.methods[method], self.pairs.methods[reference]
        if category == "extra":
            return claims.paired_diff(a.extra, b.extra)
        return claims.paired_diff([v == category for v in a.verdicts], [v == category for v in b.verdicts])

    def table(self, categories=("both_present", "missing", "swapped", "wrong_binding", "unsure", "extra")) -> str:
        """Markdown: n, every rate with its Wilson 95 % interval, the paired both-present difference to
        vanilla and to A&E, single-object accuracy, seconds per image."""
        def pct(r):
            return f"{100 * r.p:.1f} % [{100 * r.lo:.1f}, {100 * r.hi:.1f}]"

        def pts(d):
            return f"{100 * d.value:+.1f} [{100 * d.lo:+.1f}, {100 * d.hi:+.1f}]"

        head = ["method", "n"] + [c.replace("_", " ") for c in categories] + \
            ["both present − vanilla (pts)", "both present − A&E (pts)", "single objects correct", "s / image"]
        lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
        for m in self.pairs.methods:
            cells = [m, str(self.pairs.n)] + [pct(self.rate(m, c)) for c in categories]
            cells += ["—" if m == "vanilla" else pts(self.diff(m, "vanilla")),
                      "—" if m == "A&E" else pts(self.diff(m, "A&E")),
                      pct(self.single_rate(m)) + f" (n = {len(self.single[m])})",
                      f"{self.seconds.get(m, float('nan')):.2f}"]
            lines.append("| " + " | ".join(cells) + " |")
        return "\n".join(lines)


def _refuse(path, what: str) -> None:
    raise ShippedMismatchError(f"{path}: {what}. Re-run `python benchmarks/neglect_comparison.py --model <world> "
                               "--split report` (it resumes) instead of editing the file.")


def load_comparison(model: str, pipe=None, path=None) -> ComparisonReport:
    """Load ``docs/neglect_comparison_<model>.json`` and check it (see the module docstring).

    Args:
        model: ``"neglect-world"`` or ``"shapes-world"``.
        pipe: the notebook's pipeline; when given, its weights hash must be the file's.
        path: another file (tests).

    Raises:
        FileNotFoundError: no such file (the comparison has not been run in this copy).
        ShippedMismatchError: digest, fingerprint, completeness, weights or summary disagree.
    """
    path = Path(path) if path is not None else shipped_path(model)
    if not path.exists():
        raise MissingFile(f"{path} does not exist: run `python benchmarks/neglect_comparison.py --model {model} "
                                "--split report` (docs/preregistration.md)")
    data = json.loads(path.read_text())
    if data.get("digest") != digest(data):
        _refuse(path, "its digest does not match its content (edited, truncated or pasted together)")
    fp = data["fingerprint"]
    if data.get("fingerprint_sha") != hashlib.sha256(json.dumps(fp, sort_keys=True).encode()).hexdigest()[:20]:
        _refuse(path, "fingerprint_sha does not match the fingerprint")
    if fp.get("model") != model:
        _refuse(path, f"it is the comparison of {fp.get('model')!r}, not of {model!r}")
    if not data.get("complete"):
        _refuse(path, "the run is incomplete (the preregistered n is not reached)")
    if pipe is not None:
        from .shipped import weights_sha256

        sha = weights_sha256(pipe)
        if sha != fp["weights_sha256"]:
            _refuse(path, f"made with weights {fp['weights_sha256'][:16]}…, this pipeline's are {sha[:16]}…")
    s = data["summary"]
    labels = {s["methods"][lab]["method"]: lab for lab in s["methods"]}
    order = [m for m in METHODS if m in labels]
    samples = s["samples"]
    pi = [i for i, x in enumerate(samples) if x["set"] == "pairs"]
    si = [i for i, x in enumerate(samples) if x["set"] == "single"]
    prompts = [samples[i]["prompt"] for i in pi]
    res = MulticonceptResult([_items(p) for p in prompts], prompts, [samples[i]["seed"] for i in pi],
                             int(fp["steps"]), float(fp["guidance_scale"]))
    base = None
    single = {}
    for m in order:
        ps = s["per_sample"][labels[m]]
        verd = [ps[i]["category"] for i in pi]
        res.methods[m] = _method_from_verdicts(m, verd, [ps[i].get("extra", False) for i in pi], base)
        base = base or verd
        single[m] = [ps[i]["category"] for i in si]
        stored = s["methods"][labels[m]]
        for c, r in stored.get("pair", {}).items():  # the file's own summary must be its per-sample verdicts'
            mine = res.methods[m].rates[c] if c in res.methods[m].rates else claims.rate([v == c for v in verd])
            if abs(mine.p - r["p"]) > 1e-9 or stored["n_pair"] != len(pi):
                _refuse(path, f"{m}: stored {c} rate {r['p']:.4f} != {mine.p:.4f} recomputed from its verdicts")
    rep = ComparisonReport(model, data, res, single, [samples[i] for i in si], labels,
                           {m: fp["settings"][labels[m]] for m in order},
                           {m: s["methods"][labels[m]]["seconds_per_image"]["median"] for m in order})
    return rep


def resample(pipe, report: ComparisonReport, methods, n: Optional[int] = None, indices=None) -> MulticonceptResult:
    """Re-sample the first ``n`` two-object samples of ``report`` (or the samples ``indices``), with its
    prompts, seeds, steps, CFG and setting strings, under ``methods`` (names of :data:`METHODS`; the
    first is the reference); score them with the detector and keep the images. One image per call, as
    the benchmark sampled them, so the same sample gives the same image."""
    from ..eval.sweep import Job, generate, parse_setting
    from ..sampling import score

    methods = list(methods)
    bad = [m for m in methods if m not in report.specs]
    if bad:
        raise InvalidSetting.of("methods", bad, f"pick from the report's methods: {list(report.specs)}",
                                why="resample: not in the report")
    p = report.pairs
    idx = list(range(n)) if indices is None else [int(i) for i in indices]
    if not idx or not all(0 <= i < p.n for i in idx):
        raise InvalidSetting(f"resample: n / indices must pick samples in 0..{p.n - 1}, got n={n}, indices={indices}")
    live = MulticonceptResult([p.items[i] for i in idx], [p.prompts[i] for i in idx], [p.seeds[i] for i in idx],
                              p.steps, p.guidance)
    base = None
    t0 = time.perf_counter()
    for m in methods:
        setting = parse_setting(report.specs[m])
        imgs, verd, extra = [], [], []
        for k in idx:
            job = Job("pairs", k, p.prompts[k], p.seeds[k], setting)
            im, _ = generate(pipe, job, steps=p.steps, guidance_scale=p.guidance)
            a = np.asarray(im.convert("RGB"))
            sc = score([a], [p.items[k]])[0]
            imgs.append(a)
            verd.append(sc["category"])
            extra.append(bool(sc.get("extra", False)))
        imgs = np.stack(imgs)
        change = None if base is None else np.abs(imgs.astype(np.float32) - base[1]).mean(axis=(1, 2, 3))
        live.methods[m] = _method_from_verdicts(m, verd, extra, None if base is None else base[0], change, imgs)
        if base is None:
            base = (verd, imgs.astype(np.float32))
    live.seconds = time.perf_counter() - t0
    return live


def first_where(verdicts, category: str) -> Optional[int]:
    """Index of the first sample (seed order) whose verdict is ``category``: a demo rule a reader can check."""
    return next((i for i, v in enumerate(verdicts) if v == category), None)


__all__ = ["METHODS", "ComparisonReport", "load_comparison", "resample", "first_where", "shipped_path", "digest"]


def direction(d: claims.Mean) -> str:
    """The preregistered reading of a paired difference: ``"higher"`` iff its 95 % interval lies above 0,
    ``"lower"`` iff below, else ``"no difference detected"`` (at this n)."""
    return "higher" if d.lo > 0 else "lower" if d.hi < 0 else "no difference detected"


def plot_world(report: ComparisonReport, categories=("both_present", "missing", "wrong_binding", "unsure", "extra"),
               title: Optional[str] = None, width: float = 8.5):
    """Rates per method (bars, Wilson 95 % intervals as whiskers), one group per verdict."""
    from .multiconcept import plot_rates

    fp = report.fingerprint
    return plot_rates(report.pairs, categories=categories, width=width, title=title or (
        f"{report.model}, report split: n = {report.pairs.n} two-object samples per method, "
        f"DDIM {fp['steps']}, CFG {fp['guidance_scale']:g}"))


def effects(report: ComparisonReport, reference: str = "vanilla", category: str = "both_present") -> dict:
    """``{label: claims.Mean}`` of every other method minus ``reference`` (paired), for :func:`plot_effects`."""
    return {f"{m} − {reference}\n(n = {report.pairs.n})": report.diff(m, reference, category)
            for m in report.pairs.methods if m != reference}


__all__ += ["direction", "plot_world", "effects"]


README_BEGIN = "<!-- results:neglect:begin (made by python -m ebca_viz.experiments.neglect --readme) -->"
README_END = "<!-- results:neglect:end -->"


def readme_lines(reports: dict) -> str:
    """One line per world for the README: every method's both-present rate with its Wilson 95 % interval,
    and the primary reading (EBCU − vanilla, paired, t 95 % interval), whatever it says."""
    out = []
    for world, rep in reports.items():
        rates = "; ".join(f"{m} {100 * rep.rate(m).p:.1f} % [{100 * rep.rate(m).lo:.1f}, {100 * rep.rate(m).hi:.1f}]"
                          for m in rep.pairs.methods)
        d, dm = rep.diff("EBCU"), rep.diff("EBCU", "vanilla", "missing")
        out.append(f"* **{world}** (n = {rep.pairs.n} per method), both objects present: {rates}. EBCU − vanilla "
                   f"{100 * d.value:+.1f} pts [{100 * d.lo:+.1f}, {100 * d.hi:+.1f}]: {direction(d)} (the primary test); "
                   f"an object missing: EBCU − vanilla {100 * dm.value:+.1f} pts [{100 * dm.lo:+.1f}, {100 * dm.hi:+.1f}].")
    return "\n".join(out)


def write_readme(path=None, worlds=("neglect-world", "shapes-world")) -> str:
    """Rewrite the README block between :data:`README_BEGIN` and :data:`README_END` from the shipped files."""
    import os

    path = Path(path) if path is not None else Path(__file__).resolve().parents[2] / "README.md"
    text = path.read_text()
    a, b = text.index(README_BEGIN) + len(README_BEGIN), text.index(README_END)
    block = "\n" + readme_lines({w: load_comparison(w) for w in worlds}) + "\n"
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(text[:a] + block + text[b:])
    os.replace(tmp, path)
    return block


if __name__ == "__main__":  # python -m ebca_viz.experiments.neglect --readme
    import sys

    if sys.argv[1:] != ["--readme"]:
        raise SystemExit("usage: python -m ebca_viz.experiments.neglect --readme")  # internal invariant: script usage
    print(write_readme())
