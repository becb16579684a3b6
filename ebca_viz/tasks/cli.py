"""Command lines of the tasks: ``python -m ebca_viz {multiconcept,synedit,realedit,inpaint,seg} ...``.

Every command takes ``--preset NAME`` (a published example, :data:`~ebca_viz.tasks.PRESETS`) and
options that override the preset's settings; it loads ``--model`` (default: the model the preset
was published with, else ``sd15``; ``tiny`` etc. run offline), runs the task with a tqdm
progress bar and writes ``{out}/{name}.png`` + ``{name}.json`` (settings, seed, controller info)::

    python -m ebca_viz multiconcept --preset lion-crown --model sd15
    python -m ebca_viz synedit --prompt "a castle next to a river" --edit "boat on a river, boat" --alpha 1.3 --start 0.2
    python -m ebca_viz realedit --preset cat-dog --image cat.jpg            # BLIP caption, or --source-prompt
    python -m ebca_viz inpaint --preset teddy-bear --image photo.png --mask mask.png
    python -m ebca_viz inpaint --preset teddy-bear-repaint --jump-n-sample 1   # RePaint, no resampling jumps
    python -m ebca_viz seg --preset seg-sdxl-uncond --model sdxl

The table :data:`ebca_viz.cli.COMMANDS` names ``add_<task>_arguments`` / ``run_<task>`` from here.
"""
from __future__ import annotations

import argparse
from pathlib import Path

import torch

from ..errors import InvalidSetting, MissingFile, UnsupportedModel
from .presets import PRESETS, get_preset, preset_kwargs


# ---- shared ----------------------------------------------------------------------------------------

def _common(p: argparse.ArgumentParser, task: str) -> None:
    names = [n for n, x in PRESETS.items() if x.task == task]
    p.add_argument("--preset", default=None, help=f"a published example: {', '.join(names)}")
    p.add_argument("--model", default=None,
                   help="tiny, tiny-inpainting, tiny-sdxl, shapes-world, sd14, sd15, sd15-inpainting, sdxl, a hub id or "
                        "a folder (default: the preset's model, else sd15)")
    p.add_argument("--device", default=None, help="cuda when available, else cpu")
    p.add_argument("--seed", type=int, default=None)
    p.add_argument("--steps", type=int, default=None, help="sampling steps (published: 50)")
    p.add_argument("--guidance-scale", type=float, default=None)
    p.add_argument("--height", type=int, default=None)
    p.add_argument("--width", type=int, default=None)
    p.add_argument("--out", default=None, help=f"output folder (default outputs/{task})")
    p.add_argument("--name", default=None, help="file stem of the outputs (default: the preset or the task name)")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")


def _edit_args(p) -> None:
    p.add_argument("--edit", nargs="+", default=None, metavar="PROMPT", help="editorial prompt(s)")
    p.add_argument("--direction", nargs="+", default=None,
                   help="per edit: + (conjunction) or - (negation); the published 1 / 0 also work")
    p.add_argument("--alpha", nargs="+", type=float, default=None, help="per edit: weight alpha_s")
    p.add_argument("--start", nargs="+", type=float, default=None,
                   help="per edit: fraction of the run before which alpha (and the editorial gammas) are off")
    p.add_argument("--gamma-attn-comp", nargs="+", type=float, default=None, help="per edit: editorial EBCU gamma_attn")
    p.add_argument("--gamma-norm-comp", nargs="+", type=float, default=None, help="per edit: editorial EBCU gamma_norm")
    p.add_argument("--gamma-start", nargs="+", type=float, default=None,
                   help="per edit: start fraction of the editorial gammas (default: --start)")


def _direction(d: str):
    table = {"+": 1, "1": 1, "+1": 1, "-": -1, "-1": -1, "0": -1, "conjunction": 1, "negation": -1}
    if d not in table:
        raise InvalidSetting.of("--direction", d, "pass + (conjunction) or - (negation), or the published 1 / 0",
                                why="not a direction")
    return table[d]


def _edits_from_args(args, kw: dict) -> None:
    from .common import edits_from_lists

    lists = (args.direction, args.alpha, args.start, args.gamma_attn_comp, args.gamma_norm_comp, args.gamma_start)
    if args.edit is None:
        if any(x is not None for x in lists):
            raise InvalidSetting("--direction/--alpha/--start/--gamma-*-comp describe editorial prompts: give them with --edit")
        return
    dirs = [_direction(d) for d in args.direction] if args.direction is not None else None
    kw["edits"] = edits_from_lists(args.edit, dirs, args.alpha, args.start, args.gamma_attn_comp,
                                   args.gamma_norm_comp, args.gamma_start)


def _base_kwargs(args, task: str) -> tuple[dict, str]:
    kw = preset_kwargs(args.preset, task) if args.preset else {}
    for a, k in (("seed", "seed"), ("steps", "num_inference_steps"), ("guidance_scale", "guidance_scale"),
                 ("height", "height"), ("width", "width")):
        v = getattr(args, a)
        if v is not None:
            kw[k] = v
    model = args.model or (get_preset(args.preset).model if args.preset else "sd15")
    return kw, model


def _set(kw: dict, args, pairs) -> None:
    for a, k in pairs:
        v = getattr(args, a, None)
        if v is not None:
            kw[k] = v


def _load(model: str, args, text_to_image: str | None = None):
    from .common import check_out_dir

    if args.out:  # before any sampling: a path under a file or a read-only place is a clear error now
        check_out_dir(args.out)
    from ..models import load_pipeline

    device = args.device or ("cuda" if torch.cuda.is_available() else "cpu")
    pipe = load_pipeline(model, device=device)
    if text_to_image and type(pipe).__name__.endswith("InpaintPipeline"):  # refused before any sampling
        raise UnsupportedModel(f"{text_to_image}: --model {model!r} is an inpainting model ({type(pipe).__name__}, "
                           f"{pipe.unet.config.in_channels}-channel UNet), which needs an image and a mask; run "
                           f"`{text_to_image}` on a text-to-image checkpoint (e.g. sd15) or use the `inpaint` command")
    pipe.set_progress_bar_config(disable=args.no_progress, leave=False)
    return pipe


def _finish(result, args, task: str, model: str) -> int:
    result.info["model"] = model
    out = Path(args.out or f"outputs/{task}")
    stem = args.name or args.preset or task
    files = result.save(out, stem)
    if not args.no_progress:
        print(f"wrote {', '.join(p.name for p in files)} to {out}/")
    return 0


# ---- multiconcept ------------------------------------------------------------------------------------

def add_multiconcept_arguments(p) -> None:
    _common(p, "multiconcept")
    p.add_argument("--prompt", default=None)
    p.add_argument("--negative-prompt", default=None)
    p.add_argument("--gamma-attn", type=float, default=None, help="EBCU attention step (published 0.01)")
    p.add_argument("--gamma-norm", type=float, default=None, help="EBCU norm step (published 0.02)")
    p.add_argument("--gamma-stop", type=float, default=None,
                   help="fraction of the run after which EBCU stops (published gamma_tau, default 1.0)")
    p.add_argument("--token-indices", nargs="+", type=int, default=None, help="token positions, 0 = start of text")
    p.add_argument("--token", nargs="+", default=None, metavar="WORD",
                   help="words of the prompt to up-weight (resolved with the model's tokenizer; instead of --token-indices)")
    p.add_argument("--token-upweight", nargs="+", type=float, default=None, help="one weight per token index")


def run_multiconcept(args) -> int:
    from .multiconcept import multiconcept

    kw, model = _base_kwargs(args, "multiconcept")
    _set(kw, args, [("prompt", "prompt"), ("negative_prompt", "negative_prompt"), ("gamma_attn", "gamma_attn"),
                    ("gamma_norm", "gamma_norm"), ("gamma_stop", "gamma_stop"), ("token_indices", "token_indices"),
                    ("token_upweight", "token_upweight")])
    if args.token is not None:
        if args.token_indices is not None:
            raise InvalidSetting("--token and --token-indices both name the up-weighted tokens: give one of them")
        kw["token_indices"] = list(args.token)
    if "prompt" not in kw:
        raise InvalidSetting("multiconcept: give --prompt or --preset")
    pipe = _load(model, args, text_to_image="multiconcept")
    return _finish(multiconcept(pipe, **kw), args, "multiconcept", model)


# ---- synthetic editing --------------------------------------------------------------------------------

def add_synedit_arguments(p) -> None:
    _common(p, "synedit")
    p.add_argument("--prompt", default=None)
    p.add_argument("--negative-prompt", default=None)
    p.add_argument("--gamma-attn", type=float, default=None, help="EBCU of the main prompt (constant)")
    p.add_argument("--gamma-norm", type=float, default=None)
    _edit_args(p)


def run_synedit(args) -> int:
    from .editing import synthetic_edit

    kw, model = _base_kwargs(args, "synedit")
    _set(kw, args, [("prompt", "prompt"), ("negative_prompt", "negative_prompt"), ("gamma_attn", "gamma_attn"),
                    ("gamma_norm", "gamma_norm")])
    _edits_from_args(args, kw)
    if "prompt" not in kw or "edits" not in kw:
        raise InvalidSetting("synedit: give --prompt and --edit (or --preset)")
    pipe = _load(model, args, text_to_image="synedit")
    return _finish(synthetic_edit(pipe, **kw), args, "synedit", model)


# ---- real-image editing --------------------------------------------------------------------------------

def add_realedit_arguments(p) -> None:
    _common(p, "realedit")
    p.add_argument("--image", default=None,
                   help="photo to edit (default: a sample photo shipped with an installed package)")
    p.add_argument("--source-prompt", default=None, help="caption of the photo (default: BLIP caption)")
    p.add_argument("--captioner", default=None, help="BLIP model id or folder (default Salesforce/blip-image-captioning-base)")
    p.add_argument("--gamma-attn", type=float, default=None)
    p.add_argument("--gamma-norm", type=float, default=None)
    _edit_args(p)


def run_realedit(args) -> int:
    from tqdm.auto import tqdm

    from .common import center_crop_square, sample_image
    from .realedit import real_edit

    kw, model = _base_kwargs(args, "realedit")
    _set(kw, args, [("source_prompt", "source_prompt"), ("gamma_attn", "gamma_attn"), ("gamma_norm", "gamma_norm")])
    _edits_from_args(args, kw)
    if "edits" not in kw:
        raise InvalidSetting("realedit: give --edit (or --preset)")
    if args.image is None:
        img, src = sample_image()
        kw["image"] = center_crop_square(img)
        if not args.no_progress:
            print(f"no --image: editing the sample photo {src}")
    else:
        kw["image"] = args.image
    if args.captioner and "source_prompt" not in kw:
        from ..models.captioner import load_captioner

        kw["captioner"] = load_captioner(args.captioner, device=args.device or ("cuda" if torch.cuda.is_available() else "cpu"))
    pipe = _load(model, args, text_to_image="realedit")
    steps = kw.get("num_inference_steps", 50)
    with tqdm(total=steps, desc="DDIM inversion", disable=args.no_progress, leave=False) as bar:
        res = real_edit(pipe, progress=lambda: bar.update(1), **kw)
    if not args.no_progress:
        print(f"source prompt: {res.info['source_prompt']!r} ({res.info['source_prompt_from']})")
    return _finish(res, args, "realedit", model)


# ---- inpainting -----------------------------------------------------------------------------------------

def add_inpaint_arguments(p) -> None:
    _common(p, "inpaint")
    p.add_argument("--image", default=None, help="image (default: a sample photo shipped with an installed package)")
    p.add_argument("--mask", default=None, help="mask image, white = inpaint (default: a centred square)")
    p.add_argument("--prompt", default=None)
    p.add_argument("--negative-prompt", default=None)
    p.add_argument("--repaint", action="store_true", default=None,
                   help="RePaint with resampling jumps on a plain SD model (RePaintScheduler)")
    p.add_argument("--jump-length", type=int, default=None,
                   help="RePaint: steps per resampling jump (published 10); implies --repaint")
    p.add_argument("--jump-n-sample", type=int, default=None,
                   help="RePaint: times each jump is made (published 10; 1 = no resampling); implies --repaint")
    p.add_argument("--gamma-attn", type=float, default=None)
    p.add_argument("--gamma-norm", type=float, default=None)
    p.add_argument("--update-region", choices=("inpaint", "known"), default=None,
                   help="queries the update sees: inpaint (correct, default) or known (the published RePaint bug)")


def run_inpaint(args) -> int:
    from PIL import Image

    from .common import center_crop_square, load_rgb, sample_image
    from .inpainting import inpaint

    kw, model = _base_kwargs(args, "inpaint")
    _set(kw, args, [("prompt", "prompt"), ("negative_prompt", "negative_prompt"), ("repaint", "repaint"),
                    ("gamma_attn", "gamma_attn"), ("gamma_norm", "gamma_norm"), ("update_region", "update_region"),
                    ("jump_length", "jump_length"), ("jump_n_sample", "jump_n_sample")])
    if "prompt" not in kw:
        raise InvalidSetting("inpaint: give --prompt (or --preset)")
    if args.jump_length is not None or args.jump_n_sample is not None:
        if kw.get("repaint") is False:
            raise InvalidSetting(f"--jump-length/--jump-n-sample are RePaint settings, but preset {args.preset!r} runs the SD "
                             "inpainting model: add --repaint (or use --preset teddy-bear-repaint)")
        kw["repaint"] = True
    img = load_rgb(args.image, "--image") if args.image else center_crop_square(sample_image()[0])
    if args.mask:
        p = Path(args.mask)
        if not p.exists():
            raise MissingFile.of("--mask", args.mask, "give the path of a mask image (white = repaint), or omit --mask",
                                 why="no such file")
        mask = load_rgb(p, "--mask").convert("L")  # directories and non-images: a clear error
    else:
        w, h = img.size
        mask = Image.new("L", img.size, 0)
        mask.paste(255, (w // 4, h // 4, 3 * w // 4, 3 * h // 4))
    if args.model is None and kw.get("repaint") and not args.preset:
        model = "sd15"
    elif args.model is None and not args.preset:
        model = "sd15-inpainting"
    pipe = _load(model, args)
    return _finish(inpaint(pipe, img, mask, **kw), args, "inpaint", model)


# ---- SEG -------------------------------------------------------------------------------------------------

def add_seg_arguments(p) -> None:
    _common(p, "seg")
    p.add_argument("--prompt", default=None, help="prompt (SEG also works with the empty prompt)")
    p.add_argument("--negative-prompt", default=None)
    p.add_argument("--seg-scale", type=float, default=None, help="SEG scale s (published 3.0)")
    p.add_argument("--sigma", type=float, default=None, help="query blur; > 9999 = infinite (published 9999999)")
    p.add_argument("--layers", nargs="+", default=None, help="down / mid / up and/or processor keys (published: mid)")
    p.add_argument("--convention", choices=("published", "paper"), default=None)


def run_seg(args) -> int:
    from .seg_sampling import seg_sample

    kw, model = _base_kwargs(args, "seg")
    if args.model is None and not args.preset:
        model = "sdxl"
    _set(kw, args, [("prompt", "prompt"), ("negative_prompt", "negative_prompt"), ("seg_scale", "seg_scale"),
                    ("sigma", "sigma"), ("layers", "layers"), ("convention", "convention")])
    pipe = _load(model, args, text_to_image="seg")
    return _finish(seg_sample(pipe, **kw), args, "seg", model)
