"""The full-size measurements of notebook 05 (real-image editing on shapes-world scenes), shipped.

    OMP_NUM_THREADS=1 python benchmarks/shapes_realedit.py [--n 64] [--n-parts 32] [--steps 25]

Runs :func:`ebca_viz.experiments.realedit.run_shipped` (inversion + reconstruction of ``n`` scenes with the
published regulariser and without its zero roll, z_T of the regulariser's parts, the red -> blue edit with
and without its negative prompt) and writes ``docs/shapes_realedit.json`` atomically with its fingerprint
(:mod:`ebca_viz.experiments.shipped`). Notebook 05 loads it and re-runs the first scenes live.
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
    ap.add_argument("--n", type=int, default=64, help="scenes (edit_scenes(n, seed=0))")
    ap.add_argument("--n-parts", type=int, default=32, help="scenes for the regulariser-part latents")
    ap.add_argument("--steps", type=int, default=25)
    ap.add_argument("--guidance", type=float, default=3.0)
    ap.add_argument("--out", default=str(ROOT / "docs" / "shapes_realedit.json"))
    a = ap.parse_args(argv)
    if a.n < 4 or a.n_parts < 2:
        ap.error("--n must be >= 4 and --n-parts >= 2 (intervals need a few scenes)")
    torch.set_num_threads(int(os.environ.get("OMP_NUM_THREADS", "1")))
    from ebca_viz.experiments import realedit, shipped
    from ebca_viz.notebook import load_model

    pipe, _ = load_model("shapes-world", verbose=False)
    t0 = time.perf_counter()
    results = realedit.run_shipped(pipe, n=a.n, n_parts=a.n_parts, steps=a.steps, guidance=a.guidance)
    results["seconds"] = round(time.perf_counter() - t0, 1)
    fp = dict(realedit.shipped_fingerprint(shipped.weights_sha256(pipe), a.n, a.n_parts, a.steps, a.guidance),
              code=shipped.code_version(ROOT), threads=torch.get_num_threads())
    shipped.write(a.out, fp, results)
    print(f"wrote {a.out} ({time.perf_counter() - t0:.0f} s)")
    return results


if __name__ == "__main__":
    main()
