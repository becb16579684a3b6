"""The paper's tasks as functions and commands, on the tiny offline models (2 sampling steps)."""
import json

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image

import ebca_viz as ev
from ebca_viz.tasks import (PRESETS, TaskResult, ddim_invert, edits_from_lists, inpaint, multiconcept, preset_kwargs,
                            real_edit, run_preset, run_task, seg_sample, synthetic_edit)

STEPS = 1


def _state(p):
    u = p.unet
    return dict(u.attn_processors), set(u._forward_pre_hooks), set(u._forward_hooks), p.scheduler


@pytest.fixture(scope="module")
def inpaint_pipe():
    from ebca_viz.models import tiny_pipeline

    return tiny_pipeline(seed=0, inpainting=True)


@pytest.fixture(scope="module")
def sdxl_pipe():
    from ebca_viz.models import load_pipeline

    return load_pipeline("tiny-sdxl")


@pytest.fixture(scope="module")
def photo():
    img = Image.fromarray(np.random.default_rng(0).integers(0, 255, (20, 20, 3), dtype=np.uint8))
    return img


class EventLog:
    def __init__(self):
        self.events = []

    def on_cross_attention(self, ev_):
        self.events.append(ev_)


# ---- presets -----------------------------------------------------------------------------------------

def test_presets_match_published_settings():
    assert {"lion-crown", "cat-shirt", "castle-river", "house-watercolor", "cat-dog", "horse-zebra", "teddy-bear",
            "teddy-bear-repaint", "seg-sdxl-uncond", "seg-sdxl-cfg"} <= set(PRESETS)
    lion = PRESETS["lion-crown"]
    assert lion.kwargs["prompt"] == "A lion with a crown" and lion.kwargs["seed"] == 1
    assert (lion.kwargs["gamma_attn"], lion.kwargs["gamma_norm"]) == (0.01, 0.02) and "README.md:121" in lion.source
    assert PRESETS["cat-shirt"].kwargs["token_indices"] == [5] and PRESETS["cat-shirt"].kwargs["token_upweight"] == [2.5]
    kw = preset_kwargs("cat-dog")
    dog, cat = kw["edits"]
    assert (dog.prompt, dog.alpha, dog.direction, dog.start) == ("dog", 0.75, 1, 0.5)
    assert (cat.prompt, cat.alpha, cat.direction, cat.start) == ("cat", 0.65, -1, 0.5)
    assert (dog.gamma_attn, cat.gamma_norm) == (6e-4, 5e-4)
    # start fractions: alpha is off for i < int(50 * 0.5) = 25, on after (the published 'step' schedule)
    r = dog.resolved(0)
    assert r.alpha(24, 50) == 0.0 and r.alpha(25, 50) == 0.75
    # AFHQ: alpha starts at 0.35, the editorial gammas at 0.3
    goat = preset_kwargs("afhq-goat")["edits"][0].resolved(0)
    assert goat.alpha(16, 50) == 0.0 and goat.alpha(17, 50) == 0.6
    assert goat.gamma_attn(14, 50) == 0.0 and goat.gamma_attn(15, 50) == 1e-3
    assert preset_kwargs("castle-river")["seed"] == 48 and preset_kwargs("house-watercolor")["seed"] == 12
    for p in PRESETS.values():
        assert p.task in ("multiconcept", "synedit", "realedit", "inpaint", "seg") and p.source


# ---- multi-concept --------------------------------------------------------------------------------------

def test_multiconcept_preset_and_save(pipe, tmp_path):
    log = EventLog()
    before = _state(pipe)
    r = run_preset(pipe, "cat-shirt", num_inference_steps=STEPS, observers=[log])
    assert isinstance(r, TaskResult) and r.seed == 1 and r.image.size == (16, 16)
    assert r.settings["token_indices"] == [5] and r.info["unet_calls"] == STEPS and r.info["cross_attention_layers"] == 7
    assert len(log.events) == STEPS * 7
    assert _state(pipe) == before
    files = r.save(tmp_path, "cat")
    meta = json.loads((tmp_path / "cat.json").read_text())
    assert meta["seed"] == 1 and meta["settings"]["token_upweight"] == [2.5] and (tmp_path / "cat.png").exists()
    assert len(files) == 2


def test_multiconcept_ebcu_changes_the_image_and_zero_is_vanilla(pipe):
    g = torch.Generator().manual_seed(3)
    plain = np.asarray(pipe("a cat and a dog", num_inference_steps=STEPS, generator=g).images[0], dtype=float)
    zero = np.asarray(multiconcept(pipe, "a cat and a dog", gamma_attn=0.0, gamma_norm=0.0, seed=3,
                                   num_inference_steps=STEPS).image, dtype=float)
    assert np.abs(plain - zero).max() <= 1.0  # strengths 0: diffusers' attention (up to rounding)


def test_runs_inside_a_callers_wrapper_and_restores_it(pipe):
    """A recorder-like wrapper installs its own processors and a hook; the task runs inside it
    and leaves both in place, also when sampling raises."""
    from diffusers.models.attention_processor import AttnProcessor

    saved = dict(pipe.unet.attn_processors)
    calls = []
    mine = {k: AttnProcessor() for k in saved}
    pipe.unet.set_attn_processor(dict(mine))
    h = pipe.unet.register_forward_pre_hook(lambda m, a: calls.append(1))
    try:
        multiconcept(pipe, "a cat", num_inference_steps=STEPS)
        assert len(calls) == STEPS
        assert pipe.unet.attn_processors == mine

        class Boom:
            def on_cross_attention(self, e):
                raise RuntimeError("observer failed")

        with pytest.raises(RuntimeError, match="observer failed"):
            multiconcept(pipe, "a cat", num_inference_steps=STEPS, observers=[Boom()])
        assert pipe.unet.attn_processors == mine
        assert len(pipe.unet._forward_pre_hooks) == 1 and len(pipe.unet._forward_hooks) == 0
    finally:
        h.remove()
        pipe.unet.set_attn_processor(saved)


# ---- editing -------------------------------------------------------------------------------------------

def test_synthetic_edit_preset(pipe):
    r = run_preset(pipe, "house-watercolor", num_inference_steps=STEPS)
    assert r.task == "synedit" and r.seed == 12 and r.settings["edits"][0]["alpha"] == 1.1
    r2 = synthetic_edit(pipe, "a house", [{"prompt": "snow", "alpha": 0.5, "direction": -1}], num_inference_steps=STEPS)
    assert r2.settings["edits"][0]["direction"] == -1


def test_real_edit_with_tiny_captioner_and_paused_inversion(pipe, photo):
    from ebca_viz.eval import tiny_captioner

    before = _state(pipe)
    r = real_edit(pipe, photo, [ev.Edit(prompt="dog", alpha=0.75, start=0.5, gamma_attn=6e-4, gamma_norm=6e-4)],
                  captioner=tiny_captioner(), num_inference_steps=STEPS, num_reg_steps=1, num_autocorr_rolls=1)
    assert r.info["source_prompt"].startswith("a photography of") and r.info["source_prompt_from"] == "Captioner"
    assert r.extras["inverted_latents"].shape == (1, 4, 8, 8) and r.settings["inversion"]["lambda_kl"] == 20.0
    assert _state(pipe) == before  # scheduler swapped to DDIM during the call, restored after
    # inversion with an installed controller: paused, so identical to inverting without one
    kw = dict(num_inference_steps=STEPS, num_reg_steps=1, num_autocorr_rolls=1)
    z0 = ddim_invert(pipe, photo, "a photo", generator=torch.Generator().manual_seed(0), **kw)
    with ev.energy_attention(pipe, ev.EBCAConfig(gamma_attn=0.5, gamma_norm=0.5)) as ctl:
        z1 = ddim_invert(pipe, photo, "a photo", generator=torch.Generator().manual_seed(0), **kw)
        assert ctl.step == -1  # no UNet call counted
    assert torch.allclose(z0, z1, atol=1e-5)  # explicit scores vs SDPA: rounding only


def test_regularizers_pull_towards_white_noise():
    from ebca_viz.tasks.inversion import autocorr_loss, kl_loss

    g = torch.Generator().manual_seed(0)
    white = torch.randn(1, 4, 16, 16, generator=g)
    smooth = F.avg_pool2d(F.pad(white, (2, 2, 2, 2), mode="circular"), 5, stride=1) * 3
    assert autocorr_loss(smooth, torch.Generator().manual_seed(1)) > autocorr_loss(white, torch.Generator().manual_seed(1))
    assert kl_loss(white) < 0.05 and kl_loss(white * 3) > 1.0


# ---- inpainting ------------------------------------------------------------------------------------------

def _left_mask(size=16):
    m = np.zeros((size, size), np.uint8)
    m[:, : size // 2] = 255  # inpaint the left half
    return Image.fromarray(m)


def _check_update_uses(events, region_latent):
    """The update of the first layer = the update computed from the queries of ``region`` only."""
    from ebca_viz.energy import context_update

    e = events[0]
    d_actual = e.context_out - e.context_in
    m = F.interpolate(region_latent, size=e.grid, mode="bilinear", align_corners=True).flatten(2).unsqueeze(-1)
    w_k = e.attn.to_k.weight.detach()
    cfg = e.controller.now
    d_in = context_update(e.scores, e.query * m, e.key, w_k, cfg["gamma_attn"], cfg["gamma_norm"])
    d_out = context_update(e.scores, e.query * (1 - m), e.key, w_k, cfg["gamma_attn"], cfg["gamma_norm"])
    return torch.allclose(d_actual, d_in, atol=1e-6), torch.allclose(d_actual, d_out, atol=1e-6)


@pytest.mark.parametrize("mode", ["inpaint", "repaint"])
def test_masked_update_acts_on_the_inpainted_region(mode, pipe, inpaint_pipe, photo):
    p = inpaint_pipe if mode == "inpaint" else pipe
    img = photo.resize((16, 16))
    log = EventLog()
    before = _state(p)
    r = inpaint(p, img, _left_mask(), "teddy bear", num_inference_steps=STEPS, observers=[log], gamma_norm=0.0)
    assert r.settings["repaint"] == (mode == "repaint") and r.settings["mask_fraction"] == 0.5
    lat = r.extras["latent_mask"]
    assert lat[..., :4].min() == 1 and lat[..., 4:].max() == 0  # 1 = inpaint (left half of the 8x8 latents)
    uses_in, uses_out = _check_update_uses(log.events, lat)
    assert uses_in and not uses_out
    assert _state(p) == before
    if mode == "repaint":  # the published RePaint path's inverted mask, on request
        log2 = EventLog()
        inpaint(p, img, _left_mask(), "teddy bear", num_inference_steps=STEPS, observers=[log2], gamma_norm=0.0,
                update_region="known")
        uses_in, uses_out = _check_update_uses(log2.events, lat)
        assert uses_out and not uses_in


# ---- SEG ----------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("which", ["sd", "sdxl"])
@pytest.mark.parametrize("guidance", [5.0, 1.0])
def test_seg_with_and_without_cfg(which, guidance, pipe, sdxl_pipe):
    p = pipe if which == "sd" else sdxl_pipe
    before = _state(p)
    r = seg_sample(p, "a cat", guidance_scale=guidance, num_inference_steps=STEPS, seed=10)
    assert r.info["cfg"] == (guidance > 1) and r.image.size == (16, 16)
    assert r.info["self_attention_layers"] == ["mid_block.attentions.0.transformer_blocks.0.attn1.processor"]
    assert _state(p) == before
    if which == "sdxl" and guidance == 1.0:
        g = torch.Generator().manual_seed(10)
        plain = np.asarray(p("a cat", guidance_scale=1.0, num_inference_steps=STEPS, generator=g).images[0], float)
        assert np.abs(plain - np.asarray(r.image, float)).max() > 0  # SEG changes the sample
        r0 = seg_sample(p, "a cat", guidance_scale=1.0, num_inference_steps=STEPS, seed=10, seg_scale=0.0)
        assert np.abs(plain - np.asarray(r0.image, float)).max() <= 1.0  # scale 0 = plain sampling


def test_tiny_sdxl_is_an_sdxl_pipeline(sdxl_pipe):
    from diffusers import StableDiffusionXLPipeline

    assert isinstance(sdxl_pipe, StableDiffusionXLPipeline)
    assert sdxl_pipe.unet.config.addition_embed_type == "text_time"
    assert sdxl_pipe.text_encoder_2.config.projection_dim == 32


# ---- bad inputs: clear errors, pipeline untouched -------------------------------------------------------------

def test_bad_inputs(pipe, inpaint_pipe, sdxl_pipe, photo):
    before = _state(pipe), _state(inpaint_pipe), _state(sdxl_pipe)
    img = photo.resize((16, 16))
    with pytest.raises(ValueError, match=r"mask_image has size 8x8.*resize"):
        inpaint(inpaint_pipe, img, Image.new("L", (8, 8), 255), "x", num_inference_steps=STEPS)
    with pytest.raises(ValueError, match="mask_image is empty"):
        inpaint(inpaint_pipe, img, Image.new("L", (16, 16), 0), "x", num_inference_steps=STEPS)
    with pytest.raises(ValueError, match=r"image must be an RGB image.*convert\('RGB'\)"):
        inpaint(inpaint_pipe, img.convert("L"), _left_mask(), "x", num_inference_steps=STEPS)
    with pytest.raises(TypeError, match="image must be a PIL.Image.Image"):
        real_edit(pipe, np.zeros((16, 16, 3)), [ev.Edit(prompt="dog")], source_prompt="a cat")
    with pytest.raises(ValueError, match="not an inpainting model.*repaint=True"):
        inpaint(pipe, img, _left_mask(), "x", repaint=False)
    with pytest.raises(ValueError, match=r"source_prompt: no source prompt was given.*source_prompt="):
        real_edit(pipe, img, [ev.Edit(prompt="dog")], num_inference_steps=STEPS)
    with pytest.raises(ValueError, match="unknown task 'paint'"):
        run_task("paint", pipe)
    with pytest.raises(ValueError, match="unknown preset 'lion'"):
        run_preset(pipe, "lion")
    with pytest.raises(ValueError, match=r"2 editing prompt\(s\) but 1 value\(s\) in alphas"):
        edits_from_lists(["dog", "cat"], [1, -1], [0.75])
    with pytest.raises(ValueError, match=r"height/width: SEG blurs square.*height == width"):
        seg_sample(sdxl_pipe, "a cat", height=16, width=32, num_inference_steps=STEPS)
    with pytest.raises(ValueError, match="EBCQ denominator"):
        synthetic_edit(pipe, "a house", [ev.Edit(prompt="snow", alpha=1.0, direction=-1)], num_inference_steps=STEPS)
    with pytest.raises(ValueError, match="edits is empty"):
        real_edit(pipe, img, [], source_prompt="a cat")
    with pytest.raises(TypeError, match="edits must be a list"):
        synthetic_edit(pipe, "a house", "snow")
    assert (_state(pipe), _state(inpaint_pipe), _state(sdxl_pipe)) == before


# ---- command line ---------------------------------------------------------------------------------------------

def test_cli_preset_and_errors(tmp_path, capsys):
    from ebca_viz.cli import main

    assert main(["multiconcept", "--preset", "lion-crown", "--model", "tiny", "--steps", "1", "--out", str(tmp_path),
                 "--no-progress"]) == 0
    meta = json.loads((tmp_path / "lion-crown.json").read_text())
    assert meta["seed"] == 1 and meta["settings"]["prompt"] == "A lion with a crown" and meta["info"]["model"] == "tiny"
    assert (tmp_path / "lion-crown.png").exists()
    assert main(["multiconcept", "--preset", "castle-river", "--model", "tiny"]) == 2
    assert "run `python -m ebca_viz synedit --preset castle-river`" in capsys.readouterr().err
    assert main(["synedit", "--model", "tiny", "--prompt", "a", "--edit", "x", "y", "--alpha", "1"]) == 2
    assert "give one value of alphas per editing prompt" in capsys.readouterr().err
    assert main(["seg", "--model", "tiny-sdxl", "--height", "16", "--width", "32", "--steps", "1"]) == 2
    assert "height == width" in capsys.readouterr().err


def test_tasks_record_under_ebca_viz_trace(pipe):
    """Inside the recorder: the task's energy processors are seen by the trace, and the trace's
    own state is what the pipeline returns to."""
    if not hasattr(ev, "trace"):
        pytest.skip("ebca_viz.trace is not available in this copy")
    with ev.trace(pipe) as tr:
        inside = _state(pipe)
        multiconcept(pipe, "A lion with a crown", num_inference_steps=STEPS)
        assert _state(pipe) == inside
    e = tr.energies(kind="posterior", when="after")
    assert e.shape[0] == STEPS and e.shape[1] == 7 and torch.isfinite(e).all()
