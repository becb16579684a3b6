"""How often a world's vanilla samples neglect a requested object (issue 19, item 1).

    OMP_NUM_THREADS=1 python benchmarks/neglect_world.py                       # neglect-world, split report
    OMP_NUM_THREADS=1 python benchmarks/neglect_world.py --split tune --guidance 3,5 --n-pair 96
    OMP_NUM_THREADS=1 python benchmarks/neglect_world.py --pipeline outputs/run/pipeline --split tune

Vanilla sampling (DDIM ``--steps``, CFG ``--guidance``, one seeded initial latent per sample, as
:func:`ebca_viz.sampling.sample`), judged by :mod:`ebca_viz.shapes.detect`:

* **held-out pairs** (:func:`ebca_viz.shapes.neglect.two_object_prompts` ``"report"``: the 48
  circle/triangle and square/triangle prompts, pairs never drawn together in the neglect world's
  training scenes);
* **seen pairs** (``"seen"``: the 24 circle/square prompts, co-occurring in training; the control);
* **single objects** (all 12).

Splits are seed ranges: ``report`` uses seeds ``0+``, ``tune`` seeds ``100000+`` (choose CFG on
``tune``, never on ``report``). Per group: ``n``; ``missing`` = the detector's category "fewer than
two objects detected" (an object dropped outright); ``shape_neglected`` = a requested shape appears
nowhere in the image, in any colour (its noun was neglected: "a red circle and a blue triangle" drawn
as two triangles, or as one object; catastrophic neglect as Attend-and-Excite defines it), and
``neglected:<shape>`` which noun it was; ``object_absent`` = at least one requested (colour, shape)
object not detected (neglect, or a binding error); every pair
category of the detector; for single objects ``correct`` (largest object has the requested colour
and shape) and ``exact``. Each rate with its Wilson 95 % interval (:class:`ebca_viz.claims.Rate`).
Writes ``--out`` (JSON, atomically, with a fingerprint of the settings) when given.
"""
from __future__ import annotations

import argparse
import hashlib
import json
import os
import sys
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

SPLIT_SEEDS = {"report": 0, "tune": 100_000}


def evaluate(pipe, split: str = "report", n_pair: int = 480, n_seen: int = 192, n_single: int = 480,
             steps: int = 25, guidance: float = 3.0, batch: int = 64) -> dict:
    """Rates per group (see the module docstring) for one pipeline and one CFG scale."""
    from ebca_viz.claims import Rate
    from ebca_viz.shapes import neglect, world
    from ebca_viz.sampling import sample, score
    from ebca_viz.shapes.benchmark import prompt_set
    from ebca_viz.shapes.detect import detect, score_pair

    if split not in SPLIT_SEEDS:
        raise ValueError(f"split must be one of {sorted(SPLIT_SEEDS)}, got {split!r}")
    base = SPLIT_SEEDS[split]
    out = {}
    groups = (("held_out_pairs", neglect.two_object_prompts("report"), n_pair, base),
              ("seen_pairs", neglect.two_object_prompts("seen"), n_seen, base + 50_000),
              ("single", world.single_prompts(), n_single, base + 80_000))
    for name, pairs, n, seed0 in groups:
        if n <= 0:
            continue
        items, prompts, seeds = prompt_set(pairs, n, seed0)
        items, prompts, seeds = items[:n], prompts[:n], seeds[:n]
        t0 = time.time()
        ims = sample(pipe, prompts, seeds, steps=steps, guidance=guidance, batch=batch)
        sec = (time.time() - t0) / len(ims)
        if name == "single":
            rows = score(ims, items)
            flags = {k: [bool(r[k]) for r in rows] for k in ("correct", "exact")}
        else:
            found = [detect(im) for im in ims]
            rows = [score_pair(it, f) for it, f in zip(items, found)]
            cats = sorted({r["category"] for r in rows} | {"both_present", "missing", "swapped", "wrong_binding"})
            flags = {"shape_neglected": [not r["shapes_present"] for r in rows],
                     "missing": [r["category"] == "missing" for r in rows],
                     "object_absent": [not (r["first_present"] and r["second_present"]) for r in rows]}
            for s in world.SHAPES:  # which requested noun is the neglected one
                flags[f"neglected:{s}"] = [s in (it[0][1], it[1][1]) and s not in [d.shape for d in f]
                                           for it, f in zip(items, found)]
            flags.update({f"category:{c}": [r["category"] == c for r in rows] for c in cats if c != "missing"})
        rates = {}
        for k, v in flags.items():
            r = Rate(int(sum(v)), len(v))
            rates[k] = dict(k=r.k, n=r.n, p=r.p, lo=r.interval[0], hi=r.interval[1])
        verdicts = [dict(prompt=pr, seed=sd, **{k: (v if isinstance(v, (str, int)) else bool(v)) for k, v in r.items()})
                    for pr, sd, r in zip(prompts, seeds, rows)]
        out[name] = dict(n=len(ims), seeds=[seeds[0], seeds[-1]], seconds_per_image=sec, rates=rates,
                         verdicts=verdicts)
    return out


def table(res: dict) -> str:
    lines = ["| group | n | metric | rate | 95 % interval |", "|---|---|---|---|---|"]
    for g, r in res.items():
        for k, v in r["rates"].items():
            lines.append(f"| {g} | {r['n']} | {k} | {v['k']}/{v['n']} = {100 * v['p']:.1f} % | "
                         f"[{100 * v['lo']:.1f}, {100 * v['hi']:.1f}] |")
    return "\n".join(lines)


def main(argv=None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--pipeline", default="neglect-world", help="a world name for load_pipeline or a pipeline folder")
    p.add_argument("--split", default="report", choices=sorted(SPLIT_SEEDS))
    p.add_argument("--guidance", default="3.0", help="CFG scale, or a comma list (tuning)")
    p.add_argument("--steps", type=int, default=25)
    p.add_argument("--n-pair", type=int, default=480, help="held-out two-object samples")
    p.add_argument("--n-seen", type=int, default=192, help="seen (circle/square) two-object samples")
    p.add_argument("--n-single", type=int, default=480, help="single-object samples")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--out", default="", help="JSON result file (written atomically)")
    a = p.parse_args(argv)
    import torch

    import ebca_viz
    from ebca_viz.models import load_pipeline
    from ebca_viz.models.shapes_world import load_shapes_pipeline

    torch.set_num_threads(a.threads)
    pipe = load_shapes_pipeline(folder=a.pipeline) if Path(a.pipeline).is_dir() else load_pipeline(a.pipeline)
    settings = dict(pipeline=a.pipeline, split=a.split, steps=a.steps, n_pair=a.n_pair, n_seen=a.n_seen,
                    n_single=a.n_single, ebca_viz=ebca_viz.__version__)
    result = dict(settings=settings, by_guidance={})
    t0 = time.time()
    for g in (float(x) for x in a.guidance.split(",")):
        r = evaluate(pipe, a.split, a.n_pair, a.n_seen, a.n_single, a.steps, g)
        result["by_guidance"][f"{g:g}"] = r
        print(f"\n## {a.pipeline}, split {a.split}, DDIM {a.steps}, CFG {g:g}\n\n{table(r)}", flush=True)
    result["seconds"] = time.time() - t0
    result["fingerprint"] = hashlib.sha256(json.dumps(settings, sort_keys=True).encode()).hexdigest()[:20]
    if a.out:
        out = Path(a.out)
        out.parent.mkdir(parents=True, exist_ok=True)
        tmp = out.with_suffix(out.suffix + ".tmp")
        tmp.write_text(json.dumps(result, indent=1) + "\n")
        os.replace(tmp, out)
    return result


if __name__ == "__main__":
    main()
