"""Every method and task on every published layout (scaled SD 1.5, SD 2.1-base, SD 1.5-inpainting,
SDXL-base with the real CLIP tokenizer), loaded as a user with real weights would: ``load_pipeline(folder)``
and the CLI ``--model FOLDER``, or plain ``from_pretrained`` + the context managers. 64 px, 2 steps."""
import json

import numpy as np
import pytest
import torch
from PIL import Image

import ebca_viz as ev
from ebca_viz.cli import main
from layout_models import LAYOUTS

PROMPT = "A cat wearing a shirt"
STEPS = 2


def _sample(pipe, prompt=PROMPT, seed=0, **kw):
    g = torch.Generator().manual_seed(seed)
    if type(pipe).__name__ == "StableDiffusionInpaintPipeline":
        kw.setdefault("image", Image.new("RGB", (64, 64), (120, 90, 60)))
        kw.setdefault("mask_image", Image.new("L", (64, 64), 255))
    return pipe(prompt, num_inference_steps=STEPS, generator=g, height=64, width=64, output_type="pt", **kw).images


def _state(pipe):
    u = pipe.unet
    return {k: type(v) for k, v in u.attn_processors.items()}, len(u._forward_pre_hooks), len(u._forward_hooks)


@pytest.mark.parametrize("name", LAYOUTS)
def test_ebcu_with_upweight_by_word_and_the_trace(name, layout_pipes, tmp_path):
    pipe = layout_pipes(name)
    before = _state(pipe)
    vanilla = _sample(pipe)
    cfg = ev.EBCAConfig(gamma_attn=0.01, gamma_norm=0.02, token_indices=["shirt"], token_upweight=[2.5], prompt=PROMPT)
    with ev.trace(pipe, quantities="all") as tr, ev.energy_attention(pipe, cfg) as ctl:
        out = _sample(pipe)
    assert _state(pipe) == before
    assert ctl.rc.token_indices == [5]  # resolved with the real tokenizer: <sot> a cat wearing a shirt
    assert tr.tokens[:7] == ["<|startoftext|>", "a", "cat", "wearing", "a", "shirt", "<|endoftext|>"]
    assert tr.token_index("shirt") == [5]
    L = 70 if name == "sdxl-base" else 16
    n = len(pipe.scheduler.timesteps)  # PNDM (SD 1.5 / 2.1-base) takes one more UNet step than asked
    assert len(tr.layers) == L and tr.steps == list(range(n)) and n in (STEPS, STEPS + 1)
    assert (out - vanilla).abs().max() > 1e-4  # EBCU changes the sample
    m = tr.maps()
    assert m.shape[0] == 77
    torch.testing.assert_close(m.sum(0), torch.ones_like(m.sum(0)), atol=3e-3, rtol=0)
    e = tr.energies()
    assert e.shape == (n, L) and torch.isfinite(e).all()
    d = tr.drift()
    assert d.shape == (n, L, 77) and d[:, -1, 1:6].min() > 0 and torch.isfinite(d).all()
    tr.save(tmp_path / "t.safetensors")
    lo = ev.load_trace(tmp_path / "t.safetensors")
    torch.testing.assert_close(lo.maps(token="shirt"), tr.maps(token="shirt"), atol=0, rtol=0)
    torch.testing.assert_close(lo.drift(), tr.drift(), atol=0, rtol=0)


def _cli(task_args, folder, out, capsys, expect=0):
    rc = main(task_args + ["--model", str(folder), "--steps", str(STEPS), "--height", "64", "--width", "64",
                           "--no-progress", "--out", str(out)])
    err = capsys.readouterr().err
    assert rc == expect, err[-2000:]
    return err if expect else out


def _outputs(out, stem):
    info = json.loads((out / f"{stem}.json").read_text())
    img = np.asarray(Image.open(out / f"{stem}.png"))
    assert img.shape[:2] == (64, 64) and img.std() > 0  # not a blank image
    return info, img


TASKS = {
    "multiconcept": ["multiconcept", "--prompt", PROMPT, "--token", "shirt", "--token-upweight", "2.5"],
    "synedit": ["synedit", "--prompt", "a castle next to a river", "--edit", "boat on a river, boat", "--alpha", "1.3"],
    "negation": ["synedit", "--prompt", "a castle next to a river", "--edit", "castle", "--direction", "-", "--alpha", "0.5"],
    "realedit": ["realedit", "--source-prompt", "a cat", "--edit", "a dog", "cat", "--direction", "+", "-",
                 "--alpha", "1.0", "0.5"],
    "repaint": ["inpaint", "--prompt", "a teddy bear", "--repaint", "--jump-length", "1", "--jump-n-sample", "2"],
    "seg-cfg": ["seg", "--prompt", "a cat", "--guidance-scale", "5"],
    "seg-nocfg": ["seg", "--prompt", "a cat", "--guidance-scale", "1"],
}


@pytest.mark.parametrize("name", LAYOUTS)
@pytest.mark.parametrize("task", list(TASKS))
def test_cli_task_on_a_folder(name, task, layout_folders, tmp_path, capsys):
    if task == "repaint" and name == "sd15-inpainting":
        task_args = ["inpaint", "--prompt", "a teddy bear"]  # the SD inpainting model: its own pipeline
    else:
        task_args = TASKS[task]
    if name == "sd15-inpainting" and task != "repaint":  # text-to-image tasks need no image: refused, one line
        err = _cli(task_args, layout_folders[name], tmp_path, capsys, expect=2)
        assert "is an inpainting model (StableDiffusionInpaintPipeline, 9-channel UNet)" in err.strip().splitlines()[-1]
        assert not list(tmp_path.glob("*.png"))
        return
    if task == "repaint" and name == "sdxl-base":  # RePaint needs a text-only UNet: refused before sampling
        err = _cli(task_args, layout_folders[name], tmp_path, capsys, expect=2)
        assert err.strip().splitlines()[-1].startswith("error: repaint=True runs SD 1.x/2.x pipelines")
        assert not (tmp_path / "inpaint.png").exists()
        return
    out = _cli(task_args, layout_folders[name], tmp_path, capsys)
    info, _ = _outputs(out, task_args[0])
    s = info["settings"]
    assert s["num_inference_steps"] == STEPS
    if task in ("synedit", "negation", "realedit"):
        assert len(s["edits"]) == (2 if task == "realedit" else 1)
        if task == "negation":
            assert s["edits"][0]["direction"] in (-1, "negation")
    if task == "multiconcept":
        assert s["token_indices"] == [5]
    if task.startswith("seg"):
        assert s["guidance_scale"] == (5.0 if task == "seg-cfg" else 1.0)


@pytest.mark.parametrize("name", LAYOUTS)
def test_plain_from_pretrained_with_the_context_managers(name, layout_folders):
    """A user's own diffusers code: ``DiffusionPipeline.from_pretrained(folder)``, then EBCQ (conjunction and
    negation) and SEG (with and without CFG) through the context managers; the pipeline is restored after."""
    from diffusers import DiffusionPipeline

    pipe = DiffusionPipeline.from_pretrained(str(layout_folders[name]), use_safetensors=True)
    pipe.set_progress_bar_config(disable=True)
    before = _state(pipe)
    vanilla = _sample(pipe, guidance_scale=5.0)
    edits = [ev.Edit("a dog", alpha=1.0), ev.Edit("cat", alpha=0.5, direction="negation")]
    with ev.energy_attention(pipe, ev.EBCAConfig(gamma_attn=0.01, gamma_norm=0.02, edits=edits)) as ctl:
        ebcq = _sample(pipe, guidance_scale=5.0)
    assert len(ctl.edit_embeds) == 2 and ctl.edit_embeds[0].shape[-1] == pipe.unet.config.cross_attention_dim
    # at 64 px the mid block's grid is 1x1 (SD) / 2x2 (SDXL), where blurring the queries changes (almost) nothing:
    # SEG on the up blocks (8x8 grids at the top)
    seg = ev.SEGConfig(scale=3.0, sigma=10.0, layers=["up"])
    with ev.smoothed_energy_guidance(pipe, seg):
        seg_cfg = _sample(pipe, guidance_scale=5.0)
    with ev.smoothed_energy_guidance(pipe, seg):
        seg_plain = _sample(pipe, guidance_scale=1.0)
    plain = _sample(pipe, guidance_scale=1.0)
    assert _state(pipe) == before
    for what, a, b in (("EBCQ", ebcq, vanilla), ("SEG+CFG", seg_cfg, vanilla), ("SEG", seg_plain, plain)):
        assert torch.isfinite(a).all() and (a - b).abs().max() > 1e-4, what
