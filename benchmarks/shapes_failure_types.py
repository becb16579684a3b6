"""EBCU's effect on the shapes world, by failure type (issue: "measured honestly").

    OMP_NUM_THREADS=1 python benchmarks/shapes_failure_types.py            # n = 192, writes docs/shapes_failure_types.md
    OMP_NUM_THREADS=1 python benchmarks/shapes_failure_types.py --n 480 --out outputs/failure_types

Per method (vanilla, EBCU, EBCU + up-weighting of the shape tokens, the same up-weight on "a" as a
control, EBCQ with each object as an editorial prompt): n, the rate of each failure type with its
95 % Wilson interval, and the paired change in "both right" against vanilla (same seeds). The
settings are the model's regime (``ebca_viz/shapes/regime.py``, chosen by
``benchmarks/shapes_sweep.py`` on other prompts and seeds). Notebooks 02 and 08 compute the same
numbers at the same n, prompts and seeds.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def main(argv=None) -> int:
    from ebca_viz.experiments import multiconcept as mc

    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--n", type=int, default=mc.REPORT_N)
    p.add_argument("--seed", type=int, default=mc.REPORT_SEED)
    p.add_argument("--steps", type=int, default=None, help="default: the regime's")
    p.add_argument("--out", default=str(ROOT / "docs"))
    a = p.parse_args(argv)
    import torch

    import ebca_viz
    from ebca_viz.models import load_pipeline
    from ebca_viz.shapes.regime import SHAPES

    torch.set_num_threads(int(os.environ.get("OMP_NUM_THREADS", "1")))
    pipe = load_pipeline("shapes-world")
    pipe.set_progress_bar_config(disable=True)
    steps = a.steps or SHAPES.steps
    r = mc.measure_methods(pipe, mc.default_methods(SHAPES), n=a.n, seed_base=a.seed, steps=steps, guidance=SHAPES.guidance)
    head = (f"Shapes world, report split (circle/triangle and square/triangle prompts), n = {r.n} per method, "
            f"seeds {a.seed}..{a.seed + r.n - 1}, DDIM {steps} steps, CFG {SHAPES.guidance:g}, regime "
            f"`{json.dumps(SHAPES.to_json())}`, ebca_viz {ebca_viz.__version__}, {r.seconds:.0f} s.")
    md = "# Shapes world: failure types per method\n\n" + head + "\n\n" + r.table() + "\n"
    print(md)
    out = Path(a.out)
    out.mkdir(parents=True, exist_ok=True)
    for name, text in (("shapes_failure_types.md", md),
                       ("shapes_failure_types.json", json.dumps(dict(r.to_json(), regime=SHAPES.to_json(),
                                                                     seed=a.seed, version=ebca_viz.__version__,
                                                                     verdicts={k: m.verdicts for k, m in
                                                                               r.methods.items()}),
                                                                indent=1) + "\n")):
        tmp = out / (name + ".tmp")
        tmp.write_text(text)
        os.replace(tmp, out / name)
    print("wrote", out / "shapes_failure_types.md")
    return 0


if __name__ == "__main__":
    sys.exit(main())
