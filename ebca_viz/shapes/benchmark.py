"""Misalignment benchmark on the shapes world: vanilla sampling vs EBCU vs EBCU + token up-weighting.

    python -m ebca_viz.shapes.benchmark --n 200 --out outputs/shapes_benchmark

1. **Tuning** (split ``"tune"`` of :func:`.world.two_object_prompts`: the 24 circle/square prompts,
   its own seeds): a grid of ``(gamma_attn, gamma_norm)`` for EBCU, then ``token_upweight`` on the
   shape tokens (positions 3 and 7) at the best gammas; the criterion is the both-present rate.
2. **Report** (split ``"report"``: the 48 circle/triangle and square/triangle prompts, other seeds,
   ``>= n`` samples) and all 12 single-object prompts (``>= n`` samples): every method on the
   same initial latents (paired comparison).

Each sample is judged by :mod:`.detect`. Rates come with binomial standard errors
``sqrt(p (1 - p) / n)``; differences to vanilla with the paired standard error
``std(x_method - x_vanilla) / sqrt(n)``. Writes ``results.json``, ``results.md`` and image grids
(``*.png``) to ``--out``.
"""
from __future__ import annotations

import argparse
import json
import math
import time
from pathlib import Path

import numpy as np
import torch

from . import world
from ..sampling import sample, score
from .detect import PAIR_VERDICTS, detect

SHAPE_TOKENS = [3, 7]  # "a red circle and a blue square": 3 = circle, 7 = square
# On this model gamma_attn = 0.01 changes the object tokens' context by only ~0.3-0.6 % per layer
# (|Q| is small at 64-128 channels), 0.1 by ~2-5 %: the grid spans 0.03 .. 1.0.
DEFAULT_GRID = [(ga, r * ga) for ga in (0.03, 0.1, 0.3, 1.0) for r in (0.0, 1.0, 2.0)]
DEFAULT_UPWEIGHTS = (1.5, 2.5, 4.0)


def prompt_set(pairs, n_min: int, seed_base: int):
    """Repeat the prompt list until ``>= n_min`` samples; seed ``seed_base + k`` for sample ``k``."""
    reps = math.ceil(n_min / len(pairs))
    items = [p for _ in range(reps) for p in pairs]
    return items, [world.caption_for(p if isinstance(p[0], tuple) else [p]) for p in items], \
        [seed_base + k for k in range(len(items))]


def _rate(x) -> dict:
    x = np.asarray(x, np.float64)
    p = float(x.mean())
    return dict(p=p, se=math.sqrt(max(p * (1 - p), 0.0) / len(x)), n=int(len(x)))


def _paired(x, v) -> dict:
    d = np.asarray(x, np.float64) - np.asarray(v, np.float64)
    return dict(diff=float(d.mean()), se=float(d.std(ddof=1) / math.sqrt(len(d))) if len(d) > 1 else float("nan"))


def score_images(items, images, two: bool) -> dict:
    """Per-sample indicator arrays (0/1) for every metric."""
    rows = score(images, items)
    if two:
        keys = list(PAIR_VERDICTS) + ["first_present", "second_present", "extra", "shapes_present", "colours_present"]
        return {k: [int(r["category"] == k) if k in PAIR_VERDICTS else int(r[k]) for r in rows] for k in keys}
    return {k: [int(r[k]) for r in rows] for k in ("colour_ok", "shape_ok", "correct", "exact", "unsure")}


def summarize(scores: dict, base: dict | None = None) -> dict:
    out = {k: _rate(v) for k, v in scores.items()}
    if base is not None:
        for k, v in scores.items():
            out[k]["vs_vanilla"] = _paired(v, base[k])
    return out


def same_scene(scene, image) -> bool:
    """The detector finds exactly the scene's ground-truth (colour, shape) objects."""
    return sorted(d.key for d in detect(image)) == sorted((o.colour, o.shape) for o in scene.objects)


def vae_roundtrip_images(pipe, images):
    """``(B, S, S, 3) uint8`` -> ``D(E(x))`` (posterior mode), ``(B, S, S, 3) uint8``."""
    x = world.to_tensor(images).to(pipe.device, pipe.vae.dtype)
    with torch.no_grad():
        return world.from_tensor(pipe.vae.decode(pipe.vae.encode(x).latent_dist.mode()).sample)


def vae_roundtrip_ok(pipe, n: int, seed: int = 777, batch: int = 100) -> list:
    """Per scene 0/1: the detector reads a VAE round trip (encode -> mode -> decode) of a clean render of
    ``world.generate(n, seed)`` correctly (the first ``n`` scenes do not depend on ``n``): the ceiling a
    perfect UNet could reach with this VAE and this detector."""
    den = pipe.unet if getattr(pipe, "unet", None) is not None else pipe.transformer
    size = den.config.sample_size * 2 ** (len(pipe.vae.config.block_out_channels) - 1)
    scenes = world.generate(n, seed, size=size)
    ok = []
    for i in range(0, n, batch):
        ims = vae_roundtrip_images(pipe, [s.image for s in scenes[i:i + batch]])
        ok += [int(same_scene(s, im)) for s, im in zip(scenes[i:i + batch], ims)]
    return ok


def vae_roundtrip(pipe, n: int = 500, seed: int = 777) -> dict:
    """Scene accuracy + SE of :func:`vae_roundtrip_ok`: the ceiling a perfect UNet could reach."""
    return _rate(vae_roundtrip_ok(pipe, n, seed))


def make_config(ga, gn, upweight=None, tokens=SHAPE_TOKENS):
    """EBCU at ``(ga, gn)``; with ``upweight``, on the object nouns ``tokens`` (two-object prompts: 3 and 7;
    single-object prompts "a red circle": 3 only, position 7 would be padding, which EBCU refuses)."""
    from ..config import EBCAConfig

    if upweight is None:
        return EBCAConfig(gamma_attn=ga, gamma_norm=gn)
    return EBCAConfig(gamma_attn=ga, gamma_norm=gn, token_indices=list(tokens), token_upweight=[upweight] * len(tokens))


def save_grid(images, path, cols: int = 16, scale: int = 3) -> None:
    from PIL import Image

    n = len(images)
    rows = math.ceil(n / cols)
    h, w = images.shape[1:3]
    canvas = np.full((rows * (h + 1), cols * (w + 1), 3), 128, np.uint8)
    for k, im in enumerate(images):
        r, c = divmod(k, cols)
        canvas[r * (h + 1):r * (h + 1) + h, c * (w + 1):c * (w + 1) + w] = im
    Image.fromarray(canvas).resize((canvas.shape[1] * scale, canvas.shape[0] * scale), Image.NEAREST).save(path)


def _fmt(r: dict) -> str:
    s = f"{r['p']:.3f} ± {r['se']:.3f}"
    if "vs_vanilla" in r:
        d = r["vs_vanilla"]
        s += f" ({d['diff']:+.3f} ± {d['se']:.3f})"
    return s


def markdown(res: dict) -> str:
    a = res["settings"]
    lines = [
        "# Shapes-world misalignment benchmark",
        "",
        f"Pipeline `{a['pipeline']}`, DDIM {a['steps']} steps, CFG {a['guidance']}, {res.get('image_size', '?')}x{res.get('image_size', '?')} images, "
        f"detector `ebca_viz.shapes.detect`. Rates ± binomial standard error; in parentheses the paired "
        f"difference to vanilla (same initial latents) ± its standard error.",
        f"EBCU: gamma_attn = {res['chosen']['gamma_attn']}, gamma_norm = {res['chosen']['gamma_norm']}; "
        f"up-weighting: shape tokens {SHAPE_TOKENS} x {res['chosen']['upweight']}; "
        f"tuned on split `tune` ({res['tuning']['n']} samples per setting, seeds {a['tune_seed']}+), "
        f"reported on split `report` and the single-object prompts (seeds {a['report_seed']}+).",
        f"Detector on VAE reconstructions of clean renders (the ceiling): scene accuracy "
        f"{_fmt(res['vae_roundtrip'])} (n = {res['vae_roundtrip']['n']}).",
        "",
        f"## Two-object prompts (split `report`, n = {res['report']['n_pair']})",
        "",
        "| method | both present | missing (< 2 objects) | colours swapped | wrong binding | unsure | extra object |",
        "|---|---|---|---|---|---|---|",
    ]
    for m, r in res["report"]["pair"].items():
        lines.append(f"| {m} | " + " | ".join(_fmt(r[k]) for k in ("both_present", "missing", "swapped",
                                                                  "wrong_binding", "unsure", "extra")) + " |")
    lines += ["", "| method | first object present | second object present | both shapes (any colour) | both colours |",
              "|---|---|---|---|---|"]
    for m, r in res["report"]["pair"].items():
        lines.append(f"| {m} | " + " | ".join(_fmt(r[k]) for k in ("first_present", "second_present",
                                                                  "shapes_present", "colours_present")) + " |")
    lines += ["", f"## Single-object prompts (12 prompts, n = {res['report']['n_single']})", "",
              "| method | colour correct | shape correct | both | exactly one object, correct | unsure |", "|---|---|---|---|---|---|"]
    for m, r in res["report"]["single"].items():
        lines.append(f"| {m} | " + " | ".join(_fmt(r[k]) for k in ("colour_ok", "shape_ok", "correct", "exact", "unsure")) + " |")
    lines += ["", f"## Tuning (split `tune`, n = {res['tuning']['n']} per setting, both-present rate)", "",
              "| gamma_attn | gamma_norm | upweight | both present | missing | swapped |", "|---|---|---|---|---|---|"]
    for t in res["tuning"]["runs"]:
        lines.append(f"| {t['gamma_attn']} | {t['gamma_norm']} | {t['upweight']} | {_fmt(t['both_present'])} | "
                     f"{_fmt(t['missing'])} | {_fmt(t['swapped'])} |")
    lines += ["", f"Wall time {res['wall_minutes']:.1f} min, torch threads {a['threads']}.", ""]
    return "\n".join(lines)


def parse_args(argv=None):
    p = argparse.ArgumentParser(description="shapes-world misalignment: vanilla vs EBCU vs EBCU + up-weighting")
    p.add_argument("--n", type=int, default=200, help="minimum samples per reported category")
    p.add_argument("--tune-n", type=int, default=96, help="samples per tuning setting (split 'tune')")
    p.add_argument("--pipeline", default=None, help="folder written by train.py (default: the shipped weights)")
    p.add_argument("--steps", type=int, default=25)
    p.add_argument("--guidance", type=float, default=3.0, help="CFG scale (3.0: best of 3 / 5 / 7.5 on the tune split)")
    p.add_argument("--gammas", default=None, help="'ga,gn': skip the gamma grid")
    p.add_argument("--upweight", type=float, default=None, help="skip the up-weight grid")
    p.add_argument("--grid", default=None, help="'ga:gn,ga:gn,...' (default: %s)" % DEFAULT_GRID)
    p.add_argument("--upweights", default=",".join(map(str, DEFAULT_UPWEIGHTS)))
    p.add_argument("--tune-seed", type=int, default=100_000)
    p.add_argument("--report-seed", type=int, default=0)
    p.add_argument("--vae-n", type=int, default=500, help="scenes for the VAE round-trip ceiling")
    p.add_argument("--batch", type=int, default=64)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--out", default="outputs/shapes_benchmark")
    return p.parse_args(argv)


def main(argv=None) -> dict:
    a = parse_args(argv)
    torch.set_num_threads(a.threads)
    from ..models.shapes_world import WEIGHTS_DIR, load_shapes_pipeline

    t0 = time.time()
    out = Path(a.out)
    out.mkdir(parents=True, exist_ok=True)
    pipe = load_shapes_pipeline(folder=a.pipeline)
    kw = dict(steps=a.steps, guidance=a.guidance, batch=a.batch)
    log = lambda m: print(f"[{time.strftime('%H:%M:%S')}] {m}", flush=True)  # noqa: E731
    ceiling = vae_roundtrip(pipe, a.vae_n)
    log(f"detector on VAE reconstructions: {ceiling['p']:.3f} +- {ceiling['se']:.3f}")

    # ---- tuning -----------------------------------------------------------------------------
    t_items, t_prompts, t_seeds = prompt_set(world.two_object_prompts("tune"), a.tune_n, a.tune_seed)
    runs = []

    def tune_run(ga, gn, up):
        cfg = None if ga is None else make_config(ga, gn, up)
        sc = score_images(t_items, sample(pipe, t_prompts, t_seeds, method=cfg, **kw), two=True)
        r = summarize(sc)
        row = dict(gamma_attn=ga, gamma_norm=gn, upweight=up, **{k: r[k] for k in PAIR_VERDICTS})
        runs.append(row)
        log(f"tune ga={ga} gn={gn} up={up}: both {r['both_present']['p']:.3f} missing {r['missing']['p']:.3f} "
            f"swapped {r['swapped']['p']:.3f}")
        return r["both_present"]["p"]

    tune_run(None, None, None)
    if a.gammas:
        ga, gn = (float(x) for x in a.gammas.split(","))
    else:
        grid = [tuple(float(v) for v in g.split(":")) for g in a.grid.split(",")] if a.grid else DEFAULT_GRID
        best = max(grid, key=lambda g: (tune_run(g[0], g[1], None), -g[0]))
        ga, gn = best
    if a.upweight is not None:
        up = a.upweight
    else:
        ups = [float(u) for u in a.upweights.split(",")]
        up = max(ups, key=lambda u: (tune_run(ga, gn, u), -u))
    log(f"chosen: gamma_attn={ga} gamma_norm={gn} upweight={up}")

    # ---- report -----------------------------------------------------------------------------
    methods = {"vanilla": None, "EBCU": make_config(ga, gn), "EBCU + up-weight": make_config(ga, gn, up)}
    report = {"pair": {}, "single": {}}
    for two, pairs, key in ((True, world.two_object_prompts("report"), "pair"),
                            (False, world.single_prompts(), "single")):
        items, prompts, seeds = prompt_set(pairs, a.n, a.report_seed)
        base = None
        for name, cfg in methods.items():
            if not two and cfg is not None and cfg.token_indices:  # single objects: the one noun (position 3)
                cfg = make_config(ga, gn, up, tokens=SHAPE_TOKENS[:1])
            ims = sample(pipe, prompts, seeds, method=cfg, **kw)
            sc = score_images(items, ims, two)
            report[key][name] = summarize(sc, base)
            if base is None:
                base = sc
            save_grid(ims[:128], out / f"{key}_{name.replace(' ', '').replace('+', '_')}.png")
            log(f"{key} {name}: " + ", ".join(f"{k} {v['p']:.3f}" for k, v in report[key][name].items()))
        report["n_" + key] = len(items)
    res = dict(
        settings=dict(vars(a), pipeline=str(a.pipeline or WEIGHTS_DIR.name)),
        image_size=int(ims.shape[1]),
        chosen=dict(gamma_attn=ga, gamma_norm=gn, upweight=up, token_indices=SHAPE_TOKENS),
        tuning=dict(split="tune", n=len(t_items), runs=runs), report=report, vae_roundtrip=ceiling,
        wall_minutes=(time.time() - t0) / 60,
    )
    (out / "results.json").write_text(json.dumps(res, indent=1) + "\n")
    (out / "results.md").write_text(markdown(res))
    log(f"wrote {out / 'results.json'} and {out / 'results.md'}")
    print(markdown(res))
    return res


if __name__ == "__main__":
    main()
