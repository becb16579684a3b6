"""The full-size measurement of notebook 06 (text-guided inpainting on shapes-world scenes), shipped.

    OMP_NUM_THREADS=1 python benchmarks/shapes_inpaint_report.py [--n 32] [--steps 25]

Runs :func:`ebca_viz.experiments.inpainting.run_shipped` (RePaint 5/2 on the ``n`` report scenes, seed 0:
no update, masked EBCU at gamma 0.025 and 0.3, the empty-prompt and another-object controls) and writes
``docs/shapes_inpaint_report.json`` atomically with its fingerprint (:mod:`ebca_viz.experiments.shipped`).
The defaults themselves come from ``benchmarks/shapes_inpaint_sweep.py`` (tuning scenes, seed 100).
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
    ap.add_argument("--n", type=int, default=32, help="report scenes (make_cases(n, seed=0))")
    ap.add_argument("--steps", type=int, default=25)
    ap.add_argument("--guidance", type=float, default=3.0)
    ap.add_argument("--out", default=str(ROOT / "docs" / "shapes_inpaint_report.json"))
    a = ap.parse_args(argv)
    if a.n < 2:
        ap.error("--n must be >= 2")
    torch.set_num_threads(int(os.environ.get("OMP_NUM_THREADS", "1")))
    from ebca_viz.experiments import inpainting, shipped
    from ebca_viz.notebook import load_model

    pipe, _ = load_model("shapes-world", verbose=False)
    t0 = time.perf_counter()
    results = inpainting.run_shipped(pipe, n=a.n, steps=a.steps, guidance=a.guidance)
    results["seconds"] = round(time.perf_counter() - t0, 1)
    fp = dict(inpainting.shipped_fingerprint(shipped.weights_sha256(pipe), a.n, a.steps, a.guidance),
              code=shipped.code_version(ROOT), threads=torch.get_num_threads())
    shipped.write(a.out, fp, results)
    print(f"wrote {a.out} ({time.perf_counter() - t0:.0f} s)")
    return results


if __name__ == "__main__":
    main()
