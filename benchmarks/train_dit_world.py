"""Train, check and ship the DiT shapes world (issue 23, item 5).

    # the full run (resumable; re-run the same line with --resume after an interruption)
    OMP_NUM_THREADS=1 nice -n 19 python benchmarks/train_dit_world.py train --out outputs/dit_world --max-steps 3000
    # a checkpoint's quick check: single objects and neglect on the tune seeds (Wilson 95 % intervals)
    OMP_NUM_THREADS=1 python benchmarks/train_dit_world.py eval outputs/dit_world/ckpt --grid outputs/dit_world/ckpt.png
    # copy a finished run's pipeline/ into the package as ebca_viz/weights/neglect_world_dit
    python benchmarks/train_dit_world.py ship outputs/dit_world/pipeline
    # the UNet worlds' benchmark (vanilla vs EBCU vs EBCU + up-weighting; needs EBCU on PixArt, branch dit-seg)
    OMP_NUM_THREADS=1 python benchmarks/train_dit_world.py benchmark --out outputs/dit_world_benchmark --n 200

``train`` passes every option to :func:`ebca_viz.shapes.train_dit.main` (``--help`` there).
"""
from __future__ import annotations

import json
import os
import shutil
import sys
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

SHIP = ROOT / "ebca_viz" / "weights" / "neglect_world_dit"
MAX_MB = 20.0


def ship(src: Path, dest: Path = SHIP) -> float:
    """Copy an exported pipeline folder into the package (refusing > 20 MB); returns its size in MB."""
    from ebca_viz.shapes.train_dit import dit_weights_available

    if not dit_weights_available(src):
        raise SystemExit(f"{src} is not an exported DiT world (model_index.json, transformer/, ...)")
    mb = sum(f.stat().st_size for f in src.rglob("*") if f.is_file()) / 2**20
    if mb > MAX_MB:
        raise SystemExit(f"{src} is {mb:.1f} MB, over the {MAX_MB} MB limit")
    tmp = dest.with_name(dest.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    shutil.copytree(src, tmp)
    shutil.rmtree(dest, ignore_errors=True)
    os.replace(tmp, dest)
    return mb


def main(argv=None):
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] not in ("train", "eval", "ship", "benchmark"):
        raise SystemExit(__doc__)
    cmd, rest = argv[0], argv[1:]
    import torch

    torch.set_num_threads(1)
    if cmd == "train":
        from ebca_viz.shapes.train_dit import main as train_main

        return train_main(rest)
    if cmd == "ship":
        print(f"shipped {ship(Path(rest[0])):.2f} MB -> {SHIP}")
        return None
    import argparse

    if cmd == "benchmark":
        p = argparse.ArgumentParser(prog="train_dit_world.py benchmark")
        p.add_argument("--pipeline", default="neglect-world-dit", help="world name or exported folder")
        p.add_argument("--out", default="outputs/dit_world_benchmark")
        p.add_argument("--n", type=int, default=200)
        p.add_argument("--tune-n", type=int, default=96)
        p.add_argument("--steps", type=int, default=20)
        p.add_argument("--guidance", type=float, default=3.0)
        p.add_argument("--ship-to", default=None, help="also write the fingerprinted result here, e.g. docs/dit_world_benchmark.json")
        a = p.parse_args(rest)
        from ebca_viz.models import load_pipeline
        from ebca_viz.shapes.dit_eval import benchmark
        from ebca_viz.shapes.train_dit import load_dit_pipeline

        pipe = load_dit_pipeline(a.pipeline) if Path(a.pipeline).is_dir() else load_pipeline(a.pipeline)
        res = benchmark(pipe, a.out, n=a.n, tune_n=a.tune_n, steps=a.steps, guidance=a.guidance)
        from ebca_viz.experiments import shipped

        fingerprint = dict(weights_sha256=shipped.weights_sha256(pipe), code=shipped.code_version(), **res["settings"])
        for path in (Path(a.out) / "results.json", *([Path(a.ship_to)] if a.ship_to else [])):
            shipped.write(path, fingerprint, json.loads(json.dumps(res, allow_nan=False)))
        if a.ship_to:
            Path(a.ship_to).with_suffix(".md").write_text((Path(a.out) / "results.md").read_text())
        print((Path(a.out) / "results.md").read_text())
        return res
    p = argparse.ArgumentParser(prog="train_dit_world.py eval")
    p.add_argument("folder")
    p.add_argument("--n-single", type=int, default=48)
    p.add_argument("--n-pair", type=int, default=48)
    p.add_argument("--n-seen", type=int, default=24)
    p.add_argument("--guidance", type=float, default=3.0)
    p.add_argument("--steps", type=int, default=20)
    p.add_argument("--grid", default=None, help="PNG of the first samples of each group")
    a = p.parse_args(rest)
    from ebca_viz.shapes.dit_eval import quick_eval
    from ebca_viz.shapes.train_dit import load_dit_pipeline

    res = quick_eval(load_dit_pipeline(a.folder), a.n_single, a.n_pair, a.n_seen, steps=a.steps,
                     guidance=a.guidance, grid=a.grid)
    for k, r in res.items():
        print(f"{k:28s} {r['p']:.3f} [{r['lo']:.3f}, {r['hi']:.3f}] n={r['n']}")
    print(json.dumps(res))
    return res


if __name__ == "__main__":
    main()
