"""The published examples, by name: same hyperparameters and seeds as the published scripts.

``PRESETS["lion-crown"]`` etc. Sources are files and lines of the published repositories
(github.com/EnergyAttention/Energy-Based-CrossAttention, github.com/SusungHong/SEG-SDXL):
the README's example command lines, and the scripts' argument defaults for everything the
command line leaves out (50 steps: ``--num_steps`` default in every script; CFG 7.5: the
pipelines' ``guidance_scale`` default; seed 0: ``--seed`` default).

Schedules are written with start/stop fractions: the published ``gamma_tau`` of the
multi-concept script is a *stop* fraction (``reverse_step``), the ``alpha_tau`` / ``gamma_tau``
of the editing scripts are *start* fractions (``step``).

Real-image editing and inpainting need an input image (and a mask): the published sample
photos are not shipped; pass your own, or the CLI falls back to a photo shipped with an
installed package (:func:`~ebca_viz.tasks.common.sample_image`) and a centred square mask.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from ..errors import InvalidSetting

EBCA_REPO = "EnergyAttention/Energy-Based-CrossAttention"
SEG_REPO = "SusungHong/SEG-SDXL"


@dataclass(frozen=True)
class Preset:
    """A named published example.

    Attributes:
        name: registry key.
        task: ``"multiconcept" | "synedit" | "realedit" | "inpaint" | "seg"``.
        kwargs: keyword arguments of the task function (prompt, gammas, edits, seed, ...).
        model: the model it was published with (a :data:`~ebca_viz.models.HUB_IDS` key).
        source: where the settings come from (``repo: file:lines``).
        note: what the preset needs beyond the settings (an image, a mask, ...).
    """

    name: str
    task: str
    kwargs: dict
    model: str
    source: str
    note: str = ""
    image_hint: str = field(default="")


def _edit(prompt, alpha, direction, start, ga=0.0, gn=0.0, gamma_start=None):
    return dict(prompt=prompt, alpha=alpha, direction=direction, start=start, gamma_attn=ga, gamma_norm=gn,
                gamma_start=gamma_start)


_P = [
    # ---- multi-concept text-to-image (inference_txt2img.py; gamma_tau default 1.0 = never off) ----
    Preset("lion-crown", "multiconcept",
           dict(prompt="A lion with a crown", gamma_attn=0.01, gamma_norm=0.02, gamma_stop=1.0, seed=1,
                num_inference_steps=50, guidance_scale=7.5),
           "sd15", f"{EBCA_REPO}: README.md:121; inference_txt2img.py:12,15 (gamma_tau 1, 50 steps)"),
    Preset("cat-shirt", "multiconcept",
           dict(prompt="A cat wearing a shirt", gamma_attn=0.01, gamma_norm=0.02, gamma_stop=1.0, seed=1,
                token_indices=[5], token_upweight=[2.5], num_inference_steps=50, guidance_scale=7.5),
           "sd15", f"{EBCA_REPO}: README.md:126; inference_txt2img.py:12-15"),
    # ---- synthetic-image editing (synedit_txt2img.py: main gammas constant, edits 'step') ----------
    Preset("castle-river", "synedit",
           dict(prompt="a castle next to a river", gamma_attn=0.01, gamma_norm=0.01, seed=48,
                edits=[_edit("monet painting, impression, sunrise", 1.3, +1, 0.2),
                       _edit("boat on a river, boat", 1.3, +1, 0.2)],
                num_inference_steps=50, guidance_scale=7.5),
           "sd15", f"{EBCA_REPO}: README.md:110-112; synedit_txt2img.py:12,50-81"),
    Preset("house-watercolor", "synedit",
           dict(prompt="a house at a lake", gamma_attn=0.0, gamma_norm=0.0, seed=12,
                edits=[_edit("Water colors, Watercolor painting, Watercolor", 1.1, +1, 0.2, 4e-4, 4e-4)],
                num_inference_steps=50, guidance_scale=7.5),
           "sd15", f"{EBCA_REPO}: README.md:104-105; synedit_txt2img.py:12,50-81"),
    # ---- real-image editing (realedit_txt2img.py: BLIP caption, inversion, prompt = negative = caption) --
    Preset("cat-dog", "realedit",
           dict(edits=[_edit("dog", 0.75, +1, 0.5, 6e-4, 6e-4), _edit("cat", 0.65, -1, 0.5, 5e-4, 5e-4)],
                gamma_attn=0.0, gamma_norm=0.0, seed=0, num_inference_steps=50, guidance_scale=7.5),
           "sd15", f"{EBCA_REPO}: README.md:76-77; realedit_txt2img.py:18,28,91,107-161",
           note="needs a photo of a cat (published: assets/samples/realedit/cat_1.jpg)"),
    Preset("horse-zebra", "realedit",
           dict(edits=[_edit("zebra", 0.6, +1, 0.3, 5e-4, 5e-4), _edit("brown horse", 0.5, -1, 0.3, 4e-4, 4e-4)],
                gamma_attn=0.0, gamma_norm=0.0, seed=0, num_inference_steps=50, guidance_scale=7.5),
           "sd15", f"{EBCA_REPO}: README.md:82-83; realedit_txt2img.py:18,28",
           note="needs a photo of a horse (published: assets/samples/realedit/horse_1.jpg)"),
    Preset("afhq-goat", "realedit",
           dict(edits=[_edit("a goat, a photography of a goat", 0.6, +1, 0.35, 1e-3, 1e-3, gamma_start=0.3)],
                gamma_attn=0.0, gamma_norm=0.0, seed=0, num_inference_steps=50, guidance_scale=7.5),
           "sd15", f"{EBCA_REPO}: README.md:88-89 (alpha starts at 0.35, the editorial gammas at 0.3)",
           note="needs an AFHQ animal face (published: assets/samples/realedit/afhq_1.jpg)"),
    # ---- text-guided inpainting (inpaint_txt2img.py: gammas constant) -----------------------------------
    Preset("teddy-bear", "inpaint",
           dict(prompt="teddy bear", gamma_attn=0.025, gamma_norm=0.025, seed=0, num_inference_steps=50,
                guidance_scale=7.5, repaint=False),
           "sd15-inpainting", f"{EBCA_REPO}: README.md:131; inpaint_txt2img.py:27-31,39-40,59-60",
           note="needs an image and a mask, white = inpaint (published: assets/samples/inpaint/starry_night_512*.png)"),
    Preset("teddy-bear-repaint", "inpaint",
           dict(prompt="teddy bear", gamma_attn=0.025, gamma_norm=0.025, seed=0, num_inference_steps=50,
                guidance_scale=7.5, repaint=True, jump_length=10, jump_n_sample=10),
           "sd15", f"{EBCA_REPO}: README.md:131,134; inpaint_txt2img.py:32,41-42,63-65 (--repaint, RePaintScheduler); "
           "modules/pipelines/energy_repaint_stable_diffusion.py:99-100 (jump_length=10, jump_n_sample=10: __call__ "
           "defaults, the script passes neither), :103 (eta 0.0), :272 (set_timesteps); the update mask is the "
           "inpainted region here (the published path passes the inverted mask)",
           note="needs an image and a mask, white = inpaint; the published jumps make 410 UNet calls at 50 steps "
                "(--jump-n-sample 1: 50)"),
    # ---- SEG (SEG-SDXL) -------------------------------------------------------------------------------------
    Preset("seg-sdxl-uncond", "seg",
           dict(prompt="", seg_scale=3.0, sigma=100.0, layers=["mid"], guidance_scale=1.0, seed=10,
                num_inference_steps=25),
           "sdxl", f"{SEG_REPO}: README.md:64-74 (prompt '', seed 10, 25 steps, CFG off, sigma 100)"),
    Preset("seg-sdxl-cfg", "seg",
           dict(prompt="a photo of a cat", seg_scale=3.0, sigma=9999999.0, layers=["mid"], guidance_scale=5.0,
                seed=10, num_inference_steps=50),
           "sdxl", f"{SEG_REPO}: pipeline_seg.py __call__ defaults (50 steps, guidance_scale 5.0, seg_scale 3.0, "
           "seg_blur_sigma 9999999 = infinite blur, seg_applied_layers ['mid']); prompt and seed are ours"),
]

PRESETS: dict[str, Preset] = {p.name: p for p in _P}


def get_preset(name: str, task: str | None = None) -> Preset:
    """The preset called ``name``; a clear error for an unknown name or a preset of another task."""
    if not isinstance(name, str) or name not in PRESETS:
        names = [n for n, p in PRESETS.items() if task is None or p.task == task]
        raise InvalidSetting(f"unknown preset {name!r}: choose one of {names}")
    p = PRESETS[name]
    if task is not None and p.task != task:
        raise InvalidSetting(
            f"preset {name!r} is a {p.task!r} example, not {task!r}: run `python -m ebca_viz {p.task} --preset {name}`"
        )
    return p


def preset_kwargs(name: str, task: str | None = None) -> dict:
    """Task-function keyword arguments of a preset (edits as :class:`~ebca_viz.Edit`, fresh copies)."""
    import copy

    from .common import edits_from_lists

    p = get_preset(name, task)
    kw = copy.deepcopy(p.kwargs)
    if "edits" in kw:
        e = kw["edits"]
        kw["edits"] = edits_from_lists(
            [x["prompt"] for x in e], [x["direction"] for x in e], [x["alpha"] for x in e], [x["start"] for x in e],
            [x["gamma_attn"] for x in e], [x["gamma_norm"] for x in e],
            [x["gamma_start"] if x["gamma_start"] is not None else x["start"] for x in e],
        )
    return kw
