r"""``python -m ebca_viz evaluate DIR``: mean +- standard error per setting over a sweep's job files.

For a metric with values ``x_1..x_n`` (one per job of the setting): ``mean = sum x / n`` and
``se = std(x, ddof=1) / sqrt(n)`` (0 for n = 1). Boolean detector flags become fractions and the
detector's ``category`` one fraction per category. Results per setting, and per setting and
prompt set.
"""
from __future__ import annotations

import json
import math
from collections import defaultdict
from pathlib import Path
from typing import Optional
from ..errors import InvalidSetting, MissingFile, RefusedFile

SCALAR_METRICS = ("clip_full", "clip_min_object", "text_text")


def load_records(out: str | Path) -> list[dict]:
    """Every job JSON under ``out`` (``{setting}/{set}/{index}_seed{seed}.json``)."""
    out = Path(out)
    if not out.is_dir():
        raise MissingFile(f"evaluate: {str(out)!r} is not a directory (give the --out of a sweep)")
    recs = []
    for p in sorted(out.glob("*/*/*.json")):
        try:
            r = json.loads(p.read_text())
        except (json.JSONDecodeError, UnicodeDecodeError):
            raise RefusedFile(f"evaluate: {p} is not valid JSON (a half-written result?); re-run the sweep, which "
                             "redoes corrupt results") from None
        job = r.get("job") if isinstance(r, dict) else None
        if not isinstance(job, dict) or not {"setting", "prompt_set"} <= set(job) or \
                not isinstance(r.get("metrics", {}), dict):
            raise InvalidSetting(f"evaluate: {p} is not a sweep result (needs 'job' with 'setting' and 'prompt_set', "
                             "and a 'metrics' object)")
        r["_path"] = str(p)
        recs.append(r)
    return recs


def _flatten(metrics: dict) -> dict:
    flat = {}
    for k in SCALAR_METRICS:
        if isinstance(metrics.get(k), (int, float)):
            flat[k] = float(metrics[k])
    det = metrics.get("detector")
    if isinstance(det, dict):
        for k, v in det.items():
            if isinstance(v, bool):
                flat[f"detector.{k}"] = float(v)
            elif k == "category":
                flat[f"detector.category={v}"] = 1.0
    return flat


def mean_se(xs: list) -> dict:
    n = len(xs)
    m = sum(xs) / n
    se = math.sqrt(sum((x - m) ** 2 for x in xs) / (n - 1)) / math.sqrt(n) if n > 1 else 0.0
    return {"mean": m, "se": se, "n": n}


def aggregate(out: str | Path, by_prompt_set: bool = True) -> dict:
    """``{"settings": {label: {metric: {mean, se, n}}}, "by_prompt_set": {label: {set: {...}}}, "jobs": N}``."""
    recs = load_records(out)
    if not recs:
        raise MissingFile(f"evaluate: no job results (*/*/*.json) under {str(out)!r}; run a sweep first")
    groups: dict = defaultdict(lambda: defaultdict(list))
    sub: dict = defaultdict(lambda: defaultdict(lambda: defaultdict(list)))
    cats: dict = defaultdict(set)
    for r in recs:
        lab, ps = r["job"]["setting"], r["job"]["prompt_set"]
        flat = _flatten(r.get("metrics", {}))
        cats[lab].update(k for k in flat if k.startswith("detector.category="))
        groups[lab]["_count"].append(1.0)
        sub[lab][ps]["_count"].append(1.0)
        for k, v in flat.items():
            groups[lab][k].append(v)
            sub[lab][ps][k].append(v)
    # a category not hit by a job counts as 0 for it
    for lab, g in groups.items():
        n = len(g["_count"])
        for c in cats[lab]:
            g[c] += [0.0] * (n - len(g[c]))
    result = {"jobs": len(recs), "settings": {}, "by_prompt_set": {}}
    for lab, g in sorted(groups.items()):
        result["settings"][lab] = {k: mean_se(v) for k, v in sorted(g.items()) if k != "_count"}
        result["settings"][lab]["jobs"] = len(g["_count"])
        if by_prompt_set:
            result["by_prompt_set"][lab] = {
                ps: dict({k: mean_se(v) for k, v in sorted(d.items()) if k != "_count"}, jobs=len(d["_count"]))
                for ps, d in sorted(sub[lab].items())
            }
    return result


def format_table(result: dict) -> str:
    """One line per setting and metric: ``setting  metric  mean +- se  (n)``."""
    lines = []
    for lab, ms in result["settings"].items():
        lines.append(f"{lab}  ({ms['jobs']} jobs)")
        for k, v in ms.items():
            if k == "jobs":
                continue
            lines.append(f"    {k:<32s} {v['mean']:.4f} +- {v['se']:.4f}  (n={v['n']})")
        if len(ms) == 1:
            lines.append("    (no metrics recorded: run the sweep with CLIP, or `evaluate --score`)")
    return "\n".join(lines)


def score_missing(out: str | Path, clip_scorer=None, captioner=None, detector: bool = True) -> int:
    """Add metrics to job files that lack them, from their saved PNGs; returns how many were updated."""
    from PIL import Image

    from .detector import detector_scores
    from .sweep import _write_json

    n = 0
    for r in load_records(out):
        p = Path(r.pop("_path"))
        m = r.setdefault("metrics", {})
        img_path = p.with_suffix(".png")
        need_clip = clip_scorer is not None and "clip_full" not in m
        need_cap = captioner is not None and "text_text" not in m
        need_det = detector and "detector" not in m
        if not img_path.exists() or not (need_clip or need_cap or need_det):
            continue
        img = Image.open(img_path).convert("RGB")
        prompt = r["job"]["prompt"]
        changed = False
        if need_cap:
            r["caption"] = captioner(img)
        if need_clip or need_cap:
            if clip_scorer is not None:
                m.update(clip_scorer.scores(img, prompt, r.get("caption")))
                changed = True
        if need_det:
            d = detector_scores(img, prompt)
            if d is not None:
                m["detector"] = d
                changed = True
        if changed:
            _write_json(p, r)
            n += 1
    return n


def write_summary(out: str | Path, result: Optional[dict] = None) -> Path:
    result = result or aggregate(out)
    p = Path(out) / "summary.json"
    p.write_text(json.dumps(result, indent=2))
    return p
