"""The sweep behind the shapes-world inpainting experiment's defaults (``ebca_viz.experiments.inpainting``).

    OMP_NUM_THREADS=1 python benchmarks/shapes_inpaint_sweep.py [--n 16] [--steps 25]

Runs :func:`ebca_viz.experiments.inpainting.sweep_inpaint` on **tuning** scenes (seed 100, Case seeds
100000+), disjoint from the report scenes of notebook 06 and the tests (seed 0), and writes
``docs/shapes_inpaint.json`` (atomically, with the settings and the package version) and the table
``docs/shapes_inpaint.md``. Each row is RePaint with no EBCU update (gamma 0) on the same ``n`` scenes;
``follows`` = the detector finds the prompted object with its box centre inside the mask, ``kept`` =
it still finds the known object, ``mae_out`` = mean |result - source| outside the mask (0: paste-back).
``benchmarks/shapes_sweep.py --only inpaint`` runs the same function as a section of the regime sweep.
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

import torch  # noqa: E402

OUT = ROOT / "docs" / "shapes_inpaint.json"


def _atomic_write(path: Path, text: str) -> None:
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(text)
    os.replace(tmp, path)


def _rate(v: dict) -> str:
    return f"{v['k']}/{v['n']} = {100 * v['p']:.0f} % [{100 * v['lo']:.0f}, {100 * v['hi']:.0f}]"


def markdown(state: dict) -> str:
    lines = ["# Shapes-world inpainting: the sweep behind `ebca_viz/experiments/inpainting.py`'s defaults", "",
             "Made by `python benchmarks/shapes_inpaint_sweep.py` "
             f"(n = {state['n']} tuning scenes per row, seed {state['seed']}, {state['steps']} steps, package "
             f"{state['version']}, {state['seconds']:.0f} s on {state['threads']} CPU thread(s)). Every row is "
             "RePaint on the shipped text-to-image model with no EBCU update, on the same scenes and seeds. "
             "Rates: detector verdicts with 95 % Wilson intervals. `follows`: the prompted object is found with "
             "its box centre inside the mask; `kept`: the known object is still found; `|diff| outside`: mean "
             "|result - source| over the known pixels, of 255 (paste-back).", "",
             "Designs: `legacy` = the first version (random one-object scene, 16x16 box in the half not holding "
             "the object's centre; may cut into the object); `side` = the known object wholly in one half, the "
             "16x16 box (rows 8-24) in the other; `side-full` = the whole other half (16x32). Prompts: `object` = "
             "the new object only (\"a red circle\"); `scene` = the caption of the whole desired scene, both "
             "objects in random order (\"a green square and a red circle\"), as in training.", "",
             f"Criterion: {state['criterion']}.", "",
             "| setting | design | prompt | jumps | CFG | follows | kept | \\|diff\\| outside | s |",
             "|---|---|---|---|---|---|---|---|---|"]
    for r in state["rows"]:
        lines.append(f"| {r['setting']} | {r['design']} | {r['prompt'] if r['control'] == '-' else r['control'] + ' (control)'} "
                     f"| {r['jump_length']}/{r['jump_n_sample']} | {r['guidance']:g} | {_rate(r['follows'])} | "
                     f"{_rate(r['kept'])} | {r['mae_out']['mean']:.3g} | {r['seconds']:.0f} |")
    lines += ["", f"Chosen: `{json.dumps(state['chosen'])}` (the defaults of `experiments.inpainting.measure_inpainting` / "
              "`make_cases`; notebook 06 reports on the separate seed-0 scenes)."]
    return "\n".join(lines) + "\n"


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--n", type=int, default=16, help="tuning scenes per row")
    p.add_argument("--steps", type=int, default=25)
    p.add_argument("--out", default=str(OUT))
    a = p.parse_args(argv)
    import ebca_viz
    from ebca_viz.experiments.inpainting import TUNE_SEED, sweep_inpaint
    from ebca_viz.models import load_pipeline

    threads = int(os.environ.get("OMP_NUM_THREADS", "1"))
    torch.set_num_threads(threads)
    pipe = load_pipeline("shapes-world")
    pipe.set_progress_bar_config(disable=True)
    t0 = time.time()
    out = sweep_inpaint(pipe, n=a.n, steps=a.steps, seed=TUNE_SEED)
    state = dict(out, n=a.n, steps=a.steps, seed=TUNE_SEED, version=ebca_viz.__version__, threads=threads,
                 seconds=time.time() - t0)
    path = Path(a.out)
    _atomic_write(path, json.dumps(state, indent=1, default=str) + "\n")
    _atomic_write(path.with_suffix(".md"), markdown(state))
    for r in state["rows"]:
        print(f"{r['setting']:50s} follows {_rate(r['follows'])}  kept {_rate(r['kept'])}")
    print(f"chosen {state['chosen']}; wrote {path} and {path.with_suffix('.md')}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
