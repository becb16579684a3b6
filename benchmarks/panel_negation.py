"""The panel's default "not" edit, chosen on tuning seeds with EBCU on (issue 21, item 1).

    OMP_NUM_THREADS=1 python benchmarks/panel_negation.py [--n-tune 32]

The EBCQ benchmark (``docs/shapes_ebcq.json``) chose its negation (alpha 0.15 from step 0) with EBCQ
alone (gammas 0). The panel samples with EBCU on at the world's regime gammas (0.3 / 0.3) as well, and
there that alpha leaves the blue square in most images. This script applies :data:`PANEL_NEG_RULE`
(why it differs from the benchmark's rule: see its comment) on fresh tuning seeds (130000+) over the
benchmark's grid (:data:`~ebca_viz.experiments.ebcq.NEG_TUNE_GRID`) with the main prompt sampled under
EBCU at the regime's gammas, i.e. exactly what the panel runs, and writes
``docs/panel_negation.json`` (:mod:`ebca_viz.experiments.shipped`: atomic, fingerprinted). The panel's
default (``ebca_viz.widgets.controls.SHAPES_NEGATION``) must equal the chosen setting (a test checks).
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

TUNE_SEED = 130_000  # tuning seeds used by no other benchmark (grep: none at 130000+; never a report seed)
#: The panel's rule, written after a first run on the EBCQ benchmark's own tuning seeds (100000+) showed
#: that with EBCU on, NEG_RULE's "removed" (the target gone AND every other object unchanged, nothing new)
#: is 0 for every eligible setting, so that rule only picked by its tie-breaker (alpha 0.15 from 0.4: the
#: square gone on 16 % of seeds). What a class sees as "not X worked" is X gone with the rest of the scene
#: kept, so the panel's rule uses that, and is applied to fresh seeds (130000+), not the ones that
#: suggested it.
PANEL_NEG_RULE = ("on the tuning seeds, among the (alpha, start) of the grid that keep the rest of the scene (every "
                  "other unedited object still there) in at least half of the seeds, the one whose edited image "
                  "most often no longer shows the negated object ('gone'); ties: the higher rest-kept rate, then the "
                  "smaller alpha")


def choose(rows) -> dict:
    """:data:`PANEL_NEG_RULE`: the EBCQ benchmark's rule (:func:`ebca_viz.experiments.ebcq.choose_negation`)
    with the metric "gone" instead of "removed"."""
    from ebca_viz.experiments.ebcq import choose_negation

    return choose_negation(rows, metric="gone")


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="shapes-world")
    ap.add_argument("--n-tune", type=int, default=32)
    ap.add_argument("--steps", type=int, default=25)
    ap.add_argument("--out", default=str(ROOT / "docs" / "panel_negation.json"))
    a = ap.parse_args(argv)

    import torch
    from tqdm.auto import tqdm

    from ebca_viz import EBCAConfig, Edit
    from ebca_viz.experiments import ebcq, shipped
    from ebca_viz.models import load_pipeline
    from ebca_viz.sampling import sample
    from ebca_viz.shapes.detect import detect
    from ebca_viz.shapes.regime import regime_for

    torch.set_num_threads(int(os.environ.get("OMP_NUM_THREADS", "1")))
    pipe = load_pipeline(a.model, device="cpu")
    pipe.set_progress_bar_config(disable=True)
    r = regime_for(a.model)
    seeds = list(range(TUNE_SEED, TUNE_SEED + a.n_tune))
    prompts = [ebcq.NEG_PROMPT] * len(seeds)
    t0 = time.time()
    base = EBCAConfig(gamma_attn=r.gamma_attn, gamma_norm=r.gamma_norm)  # the panel's main-prompt setting
    b_keys = [ebcq.keys_of(detect(im)) for im in sample(pipe, prompts, seeds, steps=a.steps, guidance=r.guidance,
                                                         config=base)]
    rows = []
    for alpha, start in tqdm(ebcq.NEG_TUNE_GRID, desc="negation grid (EBCU on)"):
        cfg = EBCAConfig(gamma_attn=r.gamma_attn, gamma_norm=r.gamma_norm,
                         edits=[Edit(prompt=ebcq.NEG_EDIT, alpha=alpha, direction=-1, start=start)])
        keys = [ebcq.keys_of(detect(im)) for im in sample(pipe, prompts, seeds, steps=a.steps, guidance=r.guidance,
                                                           method=cfg)]
        rates = ebcq.negation_rates(b_keys, keys)
        kept = ebcq.rest_kept(b_keys, keys)
        rows.append(dict(alpha=alpha, start=start, keys=keys,
                         **{k: (v.to_json() if v is not None else None) for k, v in rates.items()},
                         rest_kept=ebcq.claims.rate(kept).to_json() if len(kept) else None))
        print(f"alpha {alpha:g} start {start:g}: removed {rates.get('removed')}, gone {rates.get('gone')}, "
              f"rest kept {rows[-1]['rest_kept'] and round(rows[-1]['rest_kept']['p'], 3)}", flush=True)
    chosen = choose(rows)
    fp = dict(weights_sha256=shipped.weights_sha256(pipe), model=a.model, prompt=ebcq.NEG_PROMPT, edit=ebcq.NEG_EDIT,
              grid=[list(g) for g in ebcq.NEG_TUNE_GRID], rule=PANEL_NEG_RULE,
              settings=dict(steps=a.steps, guidance=r.guidance, gamma_attn=r.gamma_attn, gamma_norm=r.gamma_norm),
              seeds=dict(base=TUNE_SEED, n=a.n_tune), code=shipped.code_version(ROOT))
    results = dict(base_keys=b_keys, rows=rows, chosen=chosen, wall_s=round(time.time() - t0, 1))
    shipped.write(a.out, fp, results)
    print(f"chosen by the rule: alpha {chosen['alpha']:g}, start {chosen['start']:g}; wrote {a.out}")
    return results


if __name__ == "__main__":
    main()
