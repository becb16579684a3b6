"""Sampling and scoring the DiT shapes world (a ``PixArtSigmaPipeline``) with the UNet worlds' detector.

* :func:`sample` -- the DiT counterpart of :func:`ebca_viz.shapes.benchmark.sample`: one seeded initial
  latent ``(4, 8, 8)`` per sample (:func:`.benchmark.latents_for`, batch-independent), so vanilla and EBCU
  runs are paired; DPM-Solver++ ``steps``, CFG ``guidance``, resolution binning off.
* :func:`quick_eval` -- the pilot / checkpoint check: single objects correct, and the neglect rates of
  the held-out and seen pairs, on the **tune** seeds (never the report seeds), with Wilson intervals.
* :func:`benchmark` -- the UNet worlds' vanilla vs EBCU vs EBCU + up-weighting benchmark
  (:mod:`.benchmark`) run on the DiT, with its rule written here before the report run: the gammas, then
  the up-weight, are the ones with the highest both-present rate on the **held-out pairs at the tune seeds**
  (``tune_seed`` = 100000+: the pairs where this world loses an object; ties go to the smaller value);
  vanilla, EBCU and EBCU + up-weighting are then reported on the same held-out prompts at the report seeds
  (``report_seed`` = 0+, never used in tuning) and on the 12 single objects, paired on the same latents. Token positions differ from the CLIP
  worlds: T5 has no start token, so the shape nouns of ``"a red circle and a blue square"`` are at
  positions 2 and 6 (:data:`SHAPE_TOKENS`), the single-object noun at 2.
"""
from __future__ import annotations

import contextlib
import time
from pathlib import Path

import numpy as np
import torch

from . import world
from .train_dit import CALL_KWARGS

SHAPE_TOKENS = [2, 6]  # T5: 0=a 1=red 2=circle 3=and 4=a 5=blue 6=square 7=</s>


def sample(pipe, prompts, seeds, steps: int = CALL_KWARGS["num_inference_steps"],
           guidance: float = CALL_KWARGS["guidance_scale"], config=None, batch: int = 64) -> np.ndarray:
    """Images ``(len(prompts), 32, 32, 3) uint8``; with ``config`` (an :class:`~ebca_viz.EBCAConfig`) sampling
    runs under :func:`ebca_viz.energy_attention` (needs EBCU on PixArt, branch dit-seg)."""
    from ..sampling import initial_latents

    tr = pipe.transformer
    hw = tr.config.sample_size
    f = 2 ** (len(pipe.vae.config.block_out_channels) - 1)
    out = []
    for i in range(0, len(prompts), batch):
        lat = initial_latents(seeds[i:i + batch], (tr.config.in_channels, hw, hw)).to(pipe.device, tr.dtype)
        if config is not None:
            from ..ebca import energy_attention

            ctx = energy_attention(pipe, config)
        else:
            ctx = contextlib.nullcontext()
        with ctx, torch.no_grad():
            im = pipe(list(prompts[i:i + batch]), latents=lat, num_inference_steps=steps, guidance_scale=guidance,
                      height=hw * f, width=hw * f, output_type="np", use_resolution_binning=False,
                      clean_caption=False).images
        out.append(np.clip(np.rint(im * 255), 0, 255).astype(np.uint8))
    return np.concatenate(out)


def quick_eval(pipe, n_single: int = 48, n_pair: int = 48, n_seen: int = 24, seed_base: int = 100_000,
               steps: int = 20, guidance: float = 3.0, grid: str | None = None) -> dict:
    """Rates with Wilson 95 % intervals on the tune seeds (``seed_base``: pairs, ``+50000`` seen pairs,
    ``+80000`` singles, as ``benchmarks/neglect_world.py --split tune``): ``single_correct`` (largest
    object has the requested colour and shape), ``single_exact``, and per pair group ``missing`` (< 2
    objects detected) and ``both_present``."""
    from ..claims import Rate
    from . import neglect
    from .benchmark import prompt_set, save_grid
    from .detect import detect, score_pair, score_single

    res, grids = {}, []
    for name, pairs, n, s0 in (("single", world.single_prompts(), n_single, seed_base + 80_000),
                               ("held_out_pairs", neglect.two_object_prompts("report"), n_pair, seed_base),
                               ("seen_pairs", neglect.two_object_prompts("seen"), n_seen, seed_base + 50_000)):
        if n <= 0:
            continue
        items, prompts, seeds = (x[:n] for x in prompt_set(pairs, n, s0))
        ims = sample(pipe, prompts, seeds, steps=steps, guidance=guidance)
        grids.append(ims[:32])
        if name == "single":
            rows = [score_single(it, detect(im)) for it, im in zip(items, ims)]
            for k in ("correct", "exact"):
                r = Rate(sum(bool(x[k]) for x in rows), len(rows))
                res[f"single_{k}"] = dict(p=r.p, lo=r.lo, hi=r.hi, n=len(rows))
        else:
            rows = [score_pair(it, detect(im)) for it, im in zip(items, ims)]
            for k in ("missing", "both_present"):
                r = Rate(sum(x["category"] == k for x in rows), len(rows))
                res[f"{name}_{k}"] = dict(p=r.p, lo=r.lo, hi=r.hi, n=len(rows))
    if grid:
        save_grid(np.concatenate(grids), grid, cols=16)
    return res


def benchmark(pipe, out, n: int = 200, tune_n: int = 96, steps: int = 20, guidance: float = 3.0,
              grid=None, upweights=(1.5, 2.5, 4.0), tune_seed: int = 100_000, report_seed: int = 0,
              batch: int = 64, vae_n: int = 200, log=print) -> dict:
    """The UNet worlds' benchmark (:func:`ebca_viz.shapes.benchmark.main`) on the DiT world: tune EBCU's
    ``(gamma_attn, gamma_norm)`` on split ``tune`` (both-present rate), then the up-weight of the shape
    nouns (:data:`SHAPE_TOKENS`); report vanilla, EBCU and EBCU + up-weighting on split ``report`` and the
    12 single objects with the same seeds (paired differences). Writes ``results.json`` / ``results.md``
    to ``out``. Needs ``ebca_viz.energy_attention`` to accept a ``PixArtSigmaPipeline`` (branch dit-seg)."""
    from .benchmark import (make_config, prompt_set, save_grid, score_images, summarize,
                            vae_roundtrip)
    from .detect import PAIR_VERDICTS

    t0 = time.time()
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    kw = dict(steps=steps, guidance=guidance, batch=batch)
    from . import neglect

    t_items, t_prompts, t_seeds = prompt_set(neglect.two_object_prompts("report"), tune_n, tune_seed)
    runs = []

    def tune_run(ga, gn, up):
        cfg = None if ga is None else make_config(ga, gn, up, tokens=SHAPE_TOKENS)
        r = summarize(score_images(t_items, sample(pipe, t_prompts, t_seeds, config=cfg, **kw), two=True))
        runs.append(dict(gamma_attn=ga, gamma_norm=gn, upweight=up, **{k: r[k] for k in PAIR_VERDICTS}))
        log(f"tune ga={ga} gn={gn} up={up}: both {r['both_present']['p']:.3f} missing {r['missing']['p']:.3f}")
        return r["both_present"]["p"]

    tune_run(None, None, None)
    ga, gn = max(grid or DIT_GRID, key=lambda g: (tune_run(g[0], g[1], None), -g[0]))
    up = max(upweights, key=lambda u: (tune_run(ga, gn, u), -u))
    methods = {"vanilla": None, "EBCU": make_config(ga, gn),
               "EBCU + up-weight": make_config(ga, gn, up, tokens=SHAPE_TOKENS)}
    report = {"pair": {}, "single": {}}
    for two, pairs, key in ((True, neglect.two_object_prompts("report"), "pair"), (False, world.single_prompts(), "single")):
        items, prompts, seeds = prompt_set(pairs, n, report_seed)  # report: held-out prompts, fresh seeds
        base = None
        for name, cfg in methods.items():
            if not two and cfg is not None and cfg.token_indices:
                cfg = make_config(ga, gn, up, tokens=SHAPE_TOKENS[:1])
            ims = sample(pipe, prompts, seeds, config=cfg, **kw)
            sc = score_images(items, ims, two)
            report[key][name] = summarize(sc, base)
            base = sc if base is None else base
            save_grid(ims[:128], out / f"{key}_{name.replace(' ', '').replace('+', '_')}.png")
        report["n_" + key] = len(items)
    settings = dict(pipeline="neglect-world-dit", steps=steps, guidance=guidance, tune_seed=tune_seed, tune_n=tune_n,
                    report_seed=report_seed, n=n, threads=torch.get_num_threads(), scheduler="DPMSolverMultistep",
                    tune_prompts="held-out pairs (neglect.two_object_prompts('report'))")
    res = dict(settings=settings, image_size=32, chosen=dict(gamma_attn=ga, gamma_norm=gn, upweight=up,
                                                               token_indices=SHAPE_TOKENS),
               tuning=dict(split="held-out pairs, tune seeds", n=len(t_items), runs=runs), report=report,
               vae_roundtrip=vae_roundtrip(pipe, n=vae_n), wall_minutes=(time.time() - t0) / 60)
    (out / "results.md").write_text(dit_markdown(res))
    return res  # benchmarks/train_dit_world.py writes it with its fingerprint (experiments.shipped.write)


#: the gamma grid of the DiT benchmark (written before its report run): finer and smaller than the UNet worlds'
#: :data:`~ebca_viz.shapes.benchmark.DEFAULT_GRID`, since a pilot showed gamma 0.1 already empties PixArt's images
DIT_GRID = [(ga, r * ga) for ga in (0.003, 0.01, 0.03, 0.1) for r in (0.0, 1.0)]


def _wilson(p: float, n: int) -> str:
    from ..claims import Rate

    r = Rate(int(round(p * n)), n)
    return f"{100 * r.p:.1f} % [{100 * r.lo:.1f}, {100 * r.hi:.1f}]"


def dit_markdown(res: dict) -> str:
    """The DiT benchmark's table: each rate with its Wilson 95 % interval, the paired difference to vanilla
    with a normal 95 % interval (``diff +- 1.96 se``), n per method."""
    s, c = res["settings"], res["chosen"]
    lines = [f"# {s['pipeline']}: vanilla vs EBCU vs EBCU + up-weighting", "",
             f"PixArt-style DiT world, DPM-Solver++ {s['steps']} steps, CFG {s['guidance']}, 32x32 images, detector "
             "`ebca_viz.shapes.detect`. Settings chosen on the held-out pairs at the tune seeds "
             f"({s['tune_seed']}+, n = {s['tune_n']} per setting) by the highest both-present rate: "
             f"gamma_attn = {c['gamma_attn']}, gamma_norm = {c['gamma_norm']}, up-weight {c['upweight']} on T5 "
             f"positions {c['token_indices']}. Reported on the same prompts at seeds {s['report_seed']}+ "
             "(never used in tuning), paired on the same latents.", ""]
    for key, cols, title in (("pair", ("both_present", "missing", "wrong_binding", "swapped", "unsure"),
                              "Two objects (held-out pairs)"),
                             ("single", ("correct", "colour_ok", "shape_ok", "unsure"), "Single objects")):
        rows = res["report"].get(key, {})
        if not rows:
            continue
        n = res["report"]["n_" + key]
        lines += [f"## {title}, n = {n} per method", "", "| method | " + " | ".join(cols) + " | "
                  + f"{cols[0]} - vanilla (paired) |", "|" + "---|" * (len(cols) + 2)]
        for name, r in rows.items():
            cells = [_wilson(r[k]["p"], r[k]["n"]) if k in r else "-" for k in cols]
            d = r.get(cols[0], {}).get("vs_vanilla")
            diff = "-" if not d else f"{100 * d['diff']:+.1f} pts [{100 * (d['diff'] - 1.96 * d['se']):+.1f}, " \
                                     f"{100 * (d['diff'] + 1.96 * d['se']):+.1f}]"
            lines.append(f"| {name} | " + " | ".join(cells) + f" | {diff} |")
        lines.append("")
    v = res["vae_roundtrip"]
    lines.append(f"Detector on VAE reconstructions of rendered scenes (the ceiling): {_wilson(v['p'], v['n'])} (n = {v['n']}). "
                 f"Wall time {res['wall_minutes']:.1f} min.")
    return "\n".join(lines) + "\n"
