"""The full-size measurements of notebooks 03 (EBCQ composition) and 04 (synthetic editing), shipped.

    OMP_NUM_THREADS=1 python benchmarks/shapes_ebcq.py [--n 32] [--n-tune 32] [--steps 25] [--only conj,neg,syn]

Runs :func:`ebca_viz.experiments.ebcq.run_shipped` on the shapes-world model and writes
``docs/shapes_ebcq.json`` atomically with its fingerprint (weights sha256, prompts, grids, seeds, steps,
CFG, code version; :mod:`ebca_viz.experiments.shipped`). The notebooks load it, re-sample a few of the
same seeds live and check that the live verdicts agree. ``--only`` re-runs some sections and keeps the
others from the existing file (when its fingerprint matches).
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
    ap.add_argument("--n", type=int, default=32, help="report seeds per setting (seeds 0..n-1)")
    ap.add_argument("--n-tune", type=int, default=32, help="tuning seeds for the negation grid (100000+)")
    ap.add_argument("--steps", type=int, default=25)
    ap.add_argument("--guidance", type=float, default=3.0)
    ap.add_argument("--only", default="conj,neg,syn", help="comma-separated sections: conj, neg, syn")
    ap.add_argument("--out", default=str(ROOT / "docs" / "shapes_ebcq.json"))
    a = ap.parse_args(argv)
    torch.set_num_threads(int(os.environ.get("OMP_NUM_THREADS", "1")))
    from ebca_viz.experiments import ebcq, shipped
    from ebca_viz.notebook import load_model

    sections = [s.strip() for s in a.only.split(",") if s.strip()]
    bad = set(sections) - {"conj", "neg", "syn"}
    if bad:
        ap.error(f"--only: unknown section(s) {sorted(bad)}; choose from conj, neg, syn")
    pipe, _ = load_model("shapes-world", verbose=False)
    fp = ebcq.shipped_fingerprint(shipped.weights_sha256(pipe), a.n, a.n_tune, a.steps, a.guidance)
    results = {}
    if set(sections) != {"conj", "neg", "syn"} and Path(a.out).is_file():
        try:  # the other sections' inputs: weights, steps, CFG, seeds (the negation rule only concerns "neg")
            old = shipped.load(a.out, {"weights_sha256": fp["weights_sha256"], "seeds": fp["seeds"],
                                       "settings": {k: fp["settings"][k] for k in ("steps", "guidance", "conj", "syn")}})
            results = {k: v for k, v in old["results"].items() if k not in sections}
        except (shipped.ShippedMismatchError, FileNotFoundError) as e:
            print(f"not keeping the old sections: {e}")
    t0 = time.perf_counter()
    results.update(ebcq.run_shipped(pipe, n=a.n, n_tune=a.n_tune, steps=a.steps, guidance=a.guidance, sections=sections))
    results.setdefault("seconds", {})[",".join(sections)] = round(time.perf_counter() - t0, 1)
    fp = dict(fp, code=shipped.code_version(ROOT), threads=torch.get_num_threads())
    shipped.write(a.out, fp, results)
    print(f"wrote {a.out} ({time.perf_counter() - t0:.0f} s)")
    return results


if __name__ == "__main__":
    main()
