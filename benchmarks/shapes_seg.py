"""The full-size measurement of notebook 07 (smoothed energy guidance on the shapes world), shipped.

    OMP_NUM_THREADS=1 python benchmarks/shapes_seg.py [--n 32] [--steps 25]

Runs :func:`ebca_viz.experiments.seg.measure_seg` for :func:`ebca_viz.experiments.seg.notebook_settings` (a sigma
sweep at the default scale and a scale sweep at the default sigma, without CFG and at the model's CFG,
each against SEG off on the same latents) on the ``n`` two-object report prompts (seeds 0..n-1) and writes
``docs/shapes_seg.json`` atomically with its fingerprint (:mod:`ebca_viz.experiments.shipped`). The
defaults themselves come from ``seg.sweep_seg`` on the tuning split.
"""
from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import torch  # noqa: E402


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=32, help="report prompts / seeds")
    ap.add_argument("--steps", type=int, default=25)
    ap.add_argument("--guidance", type=float, default=3.0, help="the model's CFG (the second w)")
    ap.add_argument("--out", default=str(ROOT / "docs" / "shapes_seg.json"))
    a = ap.parse_args(argv)
    if a.n < 2:
        ap.error("--n must be >= 2")
    torch.set_num_threads(int(os.environ.get("OMP_NUM_THREADS", "1")))
    from ebca_viz.experiments import seg, shipped
    from ebca_viz.notebook import load_model

    pipe, _ = load_model("shapes-world", verbose=False)
    t0 = time.perf_counter()
    study = seg.measure_seg(pipe, seg.notebook_settings(a.guidance)["all"], n=a.n, split="report", seed_base=0, steps=a.steps)
    results = seg.study_json(study)
    fp = dict(seg.shipped_fingerprint(shipped.weights_sha256(pipe), a.n, a.steps, a.guidance),
              code=shipped.code_version(ROOT), threads=torch.get_num_threads())
    shipped.write(a.out, fp, results)
    print(f"wrote {a.out} ({time.perf_counter() - t0:.0f} s)")
    return results


if __name__ == "__main__":
    main()
