"""Shipped numbers for notebooks 02 and 08: two-object failure types per method, single objects, VAE ceiling.

    OMP_NUM_THREADS=1 python benchmarks/shapes_multiconcept.py        # ~15-30 min on 1 thread; writes docs/shapes_multiconcept.json

One command, a progress bar per part, 1 thread (``torch.set_num_threads(1)``). It writes
``docs/shapes_multiconcept.json`` (atomically, :mod:`ebca_viz.experiments.shipped`) with a fingerprint:
the sha256 of the loaded weights, the settings (steps, CFG, the regime's gammas / up-weight / EBCQ
alpha, methods, batch sizes, threads, device), the seeds and the code version (package, git commit,
torch, diffusers); and a human-readable ``docs/shapes_multiconcept.md``. The file holds the
**per-sample** outcomes (detector verdict per seed and method), so every rate, interval and paired
difference is recomputed from them by :func:`ebca_viz.experiments.multiconcept.result_from_shipped`.

Parts (the shapes world's regime, ``ebca_viz/shapes/regime.py``; DDIM 25 steps, CFG 3):

* **pair**: the 48 report-split two-object prompts, n = 192 (seeds 0..191), five methods on the same
  latents (vanilla, EBCU, EBCU + up-weight objects, EBCU + up-weight "a" (control), EBCQ objects):
  the same prompts, seeds and batch as ``benchmarks/shapes_failure_types.py``;
* **single**: the 12 single-object prompts, n = 480 (seeds 0..479), vanilla and EBCU: the same as the
  ``report.single`` part of ``ebca_viz/weights/shapes_world/benchmark.json`` (batch 64);
* **vae_roundtrip**: the detector on 500 VAE round trips of clean renders (seed 777): the ceiling.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def markdown(data: dict) -> str:
    from ebca_viz.experiments import multiconcept as mc

    fp, res = data["fingerprint"], data["results"]
    r = mc.result_from_shipped(data)
    single = mc.single_from_shipped(data, "exact")
    vae = res["vae_roundtrip"]
    lines = ["# Shapes world: shipped numbers of notebooks 02 and 08", "",
             f"Written by `{fp['benchmark']}`; weights sha256 `{fp['weights_sha256'][:16]}...`, "
             f"DDIM {fp['settings']['steps']} steps, CFG {fp['settings']['guidance']:g}, code "
             f"`{json.dumps(fp['code'])}`; digest `{data['digest'][:16]}...`.", "",
             f"## Two-object prompts (report split, n = {r.n} per method, seeds "
             f"{r.seeds[0]}..{r.seeds[-1]}, {res['pair']['seconds']:.0f} s)", "", r.table(), "",
             f"## Single-object prompts (12 prompts, n = {res['single']['methods']['vanilla']['exact'].__len__()}, "
             f"{res['single']['seconds']:.0f} s): exactly one object, colour and shape right", ""]
    for k, v in single.items():
        lines.append(f"* {k}: {v if not hasattr(v, 'fmt') else v.fmt(3, 100, ' pts')}")
    ok = sum(vae["ok"])
    lines += ["", f"Detector on VAE round trips of clean renders: {ok}/{len(vae['ok'])} scenes right.", ""]
    return "\n".join(lines)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--n-pair", type=int, default=192)
    p.add_argument("--n-single", type=int, default=480)
    p.add_argument("--vae-n", type=int, default=500)
    p.add_argument("--out", default=str(ROOT / "docs"), help="folder for shapes_multiconcept.json / .md")
    a = p.parse_args(argv)
    out = Path(a.out)
    if not out.is_dir():
        p.error(f"--out {out}: folder does not exist")
    import torch

    from ebca_viz.experiments import multiconcept as mc
    from ebca_viz.experiments import shipped
    from ebca_viz.models import load_pipeline
    from ebca_viz.shapes.regime import SHAPES

    torch.set_num_threads(1)
    pipe = load_pipeline("shapes-world")
    pipe.set_progress_bar_config(disable=True)
    methods = mc.default_methods(SHAPES)
    fp = mc.shipped_fingerprint(pipe, SHAPES, n_pair=a.n_pair, n_single=a.n_single, vae_n=a.vae_n, methods=methods)
    fp["command"] = "python benchmarks/shapes_multiconcept.py " + " ".join(argv if argv is not None else sys.argv[1:])
    t0 = time.time()
    pair = mc.measure_methods(pipe, methods, n=a.n_pair, seed_base=mc.REPORT_SEED, steps=SHAPES.steps,
                      guidance=SHAPES.guidance, batch=48, progress=True)
    print(pair.table(), flush=True)
    from ebca_viz.config import EBCAConfig

    single = mc.measure_single(pipe, {"vanilla": None, "EBCU": EBCAConfig(gamma_attn=SHAPES.gamma_attn,
                                                                          gamma_norm=SHAPES.gamma_norm)},
                               n=a.n_single, seed_base=0, steps=SHAPES.steps, guidance=SHAPES.guidance, batch=64,
                               progress=True)
    vae = {"seed": 777, "n": a.vae_n, "ok": mc.vae_roundtrip_ok(pipe, a.vae_n, seed=777)}
    results = {"pair": mc.pair_results_json(pair), "single": single, "vae_roundtrip": vae,
               "seconds": time.time() - t0}
    path = shipped.write(out / mc.SHIPPED_NAME, fp, results)
    data = shipped.load(path)
    md = markdown(data)
    tmp = out / "shapes_multiconcept.md.tmp"
    tmp.write_text(md)
    os.replace(tmp, out / "shapes_multiconcept.md")
    print(md)
    print("wrote", path, "and", out / "shapes_multiconcept.md")
    return 0


if __name__ == "__main__":
    sys.exit(main())
