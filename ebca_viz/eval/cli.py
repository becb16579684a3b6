"""``python -m ebca_viz sweep ...`` and ``python -m ebca_viz evaluate DIR``.

::

    python -m ebca_viz sweep --prompts animal_animal --seeds 0-63 --setting vanilla \\
        --setting ebcu:gamma_attn=0.01,gamma_norm=0.02 --out runs/aa
    accelerate launch -m ebca_viz sweep ...          # the same on every GPU of the machine
    python -m ebca_viz evaluate runs/aa             # mean +- standard error per setting -> summary.json
"""
from __future__ import annotations

import json

import torch
from ..errors import InvalidSetting


def add_sweep_arguments(p) -> None:
    p.add_argument("--prompts", nargs="+", default=["animal_animal"],
                   help="prompt sets: animal_animal, animal_object, object_object, all, shapes_pairs, shapes_report, "
                        "shapes_tune, shapes_single, or file:PATH")
    p.add_argument("--limit", type=int, default=None, help="only the first N prompts of each set")
    p.add_argument("--seeds", default="0-63", help="e.g. 0-63 or 0,1,5")
    p.add_argument("--setting", action="append", default=None,
                   help="repeatable: vanilla, NAME:key=value,... e.g. ebcu:gamma_attn=0.01,gamma_norm=0.02, or ae "
                        "(diffusers' Attend-and-Excite; ae:token_indices=cat;frog)")
    p.add_argument("--out", required=True, help="result folder (one JSON per job; existing jobs are skipped)")
    p.add_argument("--model", default="sd15", help="sd15 (default), sd14, tiny, shapes-world, a hub id or a folder")
    p.add_argument("--steps", type=int, default=50)
    p.add_argument("--guidance-scale", type=float, default=7.5)
    p.add_argument("--metrics", default="clip",
                   help="comma list of clip, caption (BLIP text-text), detector; or none (default: clip)")
    p.add_argument("--clip-model", default=None, help="CLIP id or folder (default openai/clip-vit-base-patch16)")
    p.add_argument("--captioner", default=None, help="BLIP id or folder (default Salesforce/blip-image-captioning-base)")
    p.add_argument("--no-images", action="store_true", help="do not keep the PNGs")
    p.add_argument("--no-progress", action="store_true")


def _metrics(spec: str) -> set:
    m = {x.strip() for x in spec.split(",") if x.strip()}
    if m == {"none"}:
        return set()
    bad = m - {"clip", "caption", "detector"}
    if bad:
        raise InvalidSetting(f"--metrics: unknown {sorted(bad)}; use clip, caption, detector or none")
    return m


def _scorers(metrics: set, args, device):
    from ..models.captioner import BLIP_ID, load_captioner
    from .clip_metrics import CLIP_ID, load_clip_scorer

    clip = load_clip_scorer(args.clip_model or CLIP_ID, device=device) if metrics & {"clip", "caption"} else None
    cap = load_captioner(args.captioner or BLIP_ID, device=device) if "caption" in metrics else None
    return clip, cap


def run_sweep(args) -> int:
    from ebca_viz.tasks.common import check_out_dir

    check_out_dir(args.out)
    from ..models import load_pipeline
    from .sweep import make_jobs, parse_seeds, resolve_prompts
    from .sweep import run_sweep as sweep

    settings = args.setting or ["vanilla"]
    jobs = make_jobs(resolve_prompts(args.prompts, args.limit), parse_seeds(args.seeds), settings)
    metrics = _metrics(args.metrics)
    try:
        from accelerate import PartialState

        # cpu=True on a machine without CUDA: accelerate then splits CPU processes (gloo) instead of
        # treating every process of `accelerate launch` / `torchrun` as the only one
        state = PartialState(cpu=not torch.cuda.is_available())
        device = state.device
    except ImportError:  # pragma: no cover - accelerate is a dependency
        state, device = None, torch.device("cuda" if torch.cuda.is_available() else "cpu")
    clip, cap = _scorers(metrics, args, device)
    pipe = load_pipeline(args.model, device=device)
    pipe.set_progress_bar_config(disable=True)
    counts = sweep(pipe, jobs, args.out, steps=args.steps, clip_scorer=clip, captioner=cap,
                   detector=True, save_images=not args.no_images,
                   guidance_scale=args.guidance_scale, model=args.model, state=state, progress=not args.no_progress)
    if not args.no_progress:
        print(f"sweep: {counts['run']} run, {counts['skipped']} already done, {counts['total']} jobs -> {args.out}/")
    return 0


def add_evaluate_arguments(p) -> None:
    p.add_argument("dir", help="the --out folder of a sweep")
    p.add_argument("--score", default=None,
                   help="first score saved images that lack metrics: clip, caption, detector (comma list)")
    p.add_argument("--clip-model", default=None)
    p.add_argument("--captioner", default=None)
    p.add_argument("--device", default=None)
    p.add_argument("--json", action="store_true", help="print the summary as JSON")


def run_evaluate(args) -> int:
    from .aggregate import aggregate, format_table, score_missing, write_summary

    if args.score:
        metrics = _metrics(args.score)
        device = args.device or ("cuda" if torch.cuda.is_available() else "cpu")
        clip, cap = _scorers(metrics, args, device)
        n = score_missing(args.dir, clip, cap, detector="detector" in metrics)
        print(f"scored {n} job(s)")
    res = aggregate(args.dir)
    path = write_summary(args.dir, res)
    print(json.dumps(res, indent=2) if args.json else format_table(res))
    print(f"wrote {path}")
    return 0
