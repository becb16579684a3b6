"""RePaint with resampling jumps (``inpaint(..., repaint=True)``) on the tiny offline SD pipeline."""
import json

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image

import ebca_viz as ev
from ebca_viz.tasks import PRESETS, preset_kwargs, repaint
from ebca_viz.tasks.inpainting import repaint_plan

STEPS = 3  # RePaintScheduler grid 666, 333, 0; few UNet calls: the tiny UNet is slow on a shared CPU


def _state(p):
    u = p.unet
    return dict(u.attn_processors), set(u._forward_pre_hooks), set(u._forward_hooks), p.scheduler


@pytest.fixture(scope="module")
def photo():
    return Image.fromarray(np.random.default_rng(0).integers(0, 255, (16, 16, 3), dtype=np.uint8))


@pytest.fixture(scope="module")
def left_mask():
    m = np.zeros((16, 16), np.uint8)
    m[:, :8] = 255  # inpaint the left half -> latent columns 0..3
    return Image.fromarray(m)


class EventLog:
    def __init__(self):
        self.events = []

    def on_cross_attention(self, e):
        self.events.append(e)


def _schedule(n, jump_length, jump_n_sample):
    from diffusers import RePaintScheduler

    s = RePaintScheduler()
    s.set_timesteps(n, jump_length, jump_n_sample)
    return [int(t) for t in s.timesteps]


def _descending(ts):
    return [t for i, t in enumerate(ts) if i == 0 or t < ts[i - 1]]


def _update_sees(e, region):
    """Is this event's context update the one computed from the queries of ``region`` only?"""
    from ebca_viz.energy import context_update

    m = F.interpolate(region, size=e.grid, mode="bilinear", align_corners=True).flatten(2).unsqueeze(-1)
    now = e.controller.now
    d = context_update(e.scores, e.query * m, e.key, e.attn.to_k.weight.detach(), now["gamma_attn"], now["gamma_norm"])
    return torch.allclose(e.context_out - e.context_in, d, atol=1e-6)


@pytest.fixture(scope="module")
def jumped(tiny_pipe, photo, left_mask):
    """One RePaint run with jumps (jump_length 1, jump_n_sample 2), recorded from the outside:
    a caller's UNet pre-hook counts calls, an observer logs events, the progress bar's total is kept."""
    pipe = tiny_pipe
    calls, totals, log = [], [], EventLog()
    h = pipe.unet.register_forward_pre_hook(lambda m, a, kw: calls.append(int(a[1])), with_kwargs=True)
    orig_bar = pipe.progress_bar

    def bar(iterable=None, total=None):
        totals.append(total)
        return orig_bar(iterable=iterable, total=total)

    pipe.progress_bar = bar
    try:
        before = _state(pipe)
        r = repaint(pipe, photo, left_mask, "teddy bear", num_inference_steps=STEPS, jump_length=1, jump_n_sample=2,
                    seed=5, observers=[log])
        after = _state(pipe)
    finally:
        del pipe.progress_bar
        h.remove()
    return dict(result=r, calls=calls, totals=totals, events=log.events, before=before, after=after)


def test_unet_calls_are_the_forward_steps_of_the_repaint_schedule(jumped):
    ts = _schedule(STEPS, 1, 2)
    assert ts == [666, 333, 666, 333, 0, 333, 0]  # diffusers' jump expansion
    fwd = _descending(ts)
    r = jumped["result"]
    assert jumped["calls"] == fwd  # one UNet call per descending entry, at that timestep; none for jump-backs
    assert r.info["unet_calls"] == len(fwd) == 5 and r.info["repaint"]["undo_steps"] == len(ts) - len(fwd) == 2
    assert jumped["totals"] == [len(ts)]  # progress bar over the jump-expanded list
    # the controller saw no new run: step = position of t in the plain schedule, run length = STEPS
    layers = r.info["cross_attention_layers"]
    steps = [e.step for e in jumped["events"]][::layers]
    assert steps == [STEPS - 1 - t // (1000 // STEPS) for t in fwd] == [0, 1, 1, 2, 2]
    assert {e.controller.num_steps for e in jumped["events"]} == {STEPS} and r.info["num_steps"] == STEPS
    assert r.settings["jump_length"] == 1 and r.settings["jump_n_sample"] == 2
    assert repaint_plan(ts, STEPS)[2] == ("undo", 333, None)


def test_known_region_of_the_final_latents_is_the_encoded_image(jumped, tiny_pipe):
    pipe, r = tiny_pipe, jumped["result"]
    lat, z0, m = r.extras["latents"], r.extras["known_latents"], r.extras["latent_mask"]
    # z0 is the VAE encoding of the (resized) image times the scaling factor, drawn first from the seed's generator
    x = pipe.image_processor.preprocess(r.extras["source"], height=16, width=16)
    ref = pipe.vae.encode(x).latent_dist.sample(generator=torch.Generator().manual_seed(5)) * pipe.vae.config.scaling_factor
    assert torch.allclose(z0, ref, atol=1e-6)
    assert m[..., :4].min() == 1 and m[..., 4:].max() == 0  # 1 = inpaint
    assert torch.allclose(lat[..., 4:], z0[..., 4:], atol=1e-5)  # known region: the original latents
    assert (lat[..., :4] - z0[..., :4]).abs().max() > 1e-2  # the inpainted region was sampled
    with torch.no_grad():
        img = pipe.vae.decode(lat / pipe.vae.config.scaling_factor).sample
    ref_img = pipe.image_processor.postprocess(img, output_type="pil")[0]
    assert np.array_equal(np.asarray(ref_img), np.asarray(r.extras["decoded"][0]))  # decoded final latents
    # paste-back (default): outside the mask the result is the source bit for bit; deep inside, the decoded image
    out, src = np.asarray(r.image), np.asarray(r.extras["source"])
    assert r.info["paste_back"]["on"] and r.settings["paste_back"] is True
    assert np.array_equal(out[:, 8:], src[:, 8:])
    assert np.array_equal(out[:, :7 - r.settings["paste_feather"]], np.asarray(ref_img)[:, :7 - r.settings["paste_feather"]])


def test_paste_alpha_ramps_inside_the_mask_only():
    from ebca_viz.tasks.inpainting import paste_alpha

    m = torch.zeros(1, 1, 1, 8)
    m[..., :6] = 1  # mask touches the left border (which does not count as known)
    a = paste_alpha(m, 2)[0, 0, 0]
    assert torch.allclose(a, torch.tensor([1, 1, 1, 1, 2 / 3, 1 / 3, 0, 0]))  # rows of 1: chessboard in 1-D
    assert torch.equal(paste_alpha(m, 0), m)  # F = 0: hard paste
    with pytest.raises(ValueError, match="paste_feather"):
        paste_alpha(m, -1)


def test_paste_back_off_reproduces_the_decoded_output(tiny_pipe, photo, left_mask):
    r = repaint(tiny_pipe, photo, left_mask, "teddy bear", num_inference_steps=2, jump_length=1, jump_n_sample=1,
                seed=3, paste_back=False)
    assert r.info["paste_back"]["on"] is False and "decoded" not in r.extras
    src = np.asarray(r.extras["source"], float)
    assert np.abs(np.asarray(r.image, float)[:, 8:] - src[:, 8:]).max() > 0  # the decoder changes known pixels


def test_update_sees_only_the_inpainted_region_during_jumps(jumped):
    """Masked EBCU with the scheduler's opposite mask polarity: the query mask stays 1 = inpaint,
    also in the UNet calls after a jump back."""
    r, ev_ = jumped["result"], jumped["events"]
    m = r.extras["latent_mask"]
    late = ev_[-1]  # a layer of the last call (re-denoised after the final jump)
    assert _update_sees(late, m) and not _update_sees(late, 1 - m)


def test_jumps_change_the_result_and_one_sample_means_no_jumps(jumped, pipe, photo, left_mask):
    kw = dict(num_inference_steps=STEPS, seed=5)
    plain = repaint(pipe, photo, left_mask, "teddy bear", jump_length=1, jump_n_sample=1, **kw)
    assert plain.info["unet_calls"] == STEPS and plain.info["repaint"]["undo_steps"] == 0
    with_jumps = jumped["result"].extras["latents"]
    assert (plain.extras["latents"] - with_jumps)[..., :4].abs().max() > 1e-3  # resampling changes the sample
    assert torch.allclose(plain.extras["latents"][..., 4:], with_jumps[..., 4:], atol=1e-5)  # the known region does not
    # jump_n_sample=1: the plain descending schedule whatever jump_length (no jumps at all)
    for jl in (1, 2, 10):
        assert _schedule(STEPS, jl, 1) == [666, 333, 0]
    assert _schedule(50, 10, 1) == list(range(980, -1, -20))


def test_pipeline_restored_after_the_call_and_on_errors(jumped, pipe, photo, left_mask):
    from diffusers import DDIMScheduler

    assert jumped["after"] == jumped["before"] and isinstance(pipe.scheduler, DDIMScheduler)

    class Boom:
        def on_cross_attention(self, e):
            raise RuntimeError("observer failed")

    before, gs = _state(pipe), vars(pipe).get("_guidance_scale", "absent")
    with pytest.raises(RuntimeError, match="observer failed"):
        repaint(pipe, photo, left_mask, "x", num_inference_steps=STEPS, jump_length=1, jump_n_sample=2,
                observers=[Boom()])
    assert _state(pipe) == before and vars(pipe).get("_guidance_scale", "absent") == gs


@pytest.mark.parametrize("name", ["jump_length", "jump_n_sample"])
@pytest.mark.parametrize("value", [0, -2, 2.5, "3", True])
def test_bad_jump_settings(name, value, pipe, photo, left_mask):
    before = _state(pipe)
    with pytest.raises(ValueError, match=name):
        repaint(pipe, photo, left_mask, "x", num_inference_steps=STEPS, **{name: value})
    assert _state(pipe) == before


def test_runs_inside_ebca_viz_trace(pipe, photo, left_mask):
    if not hasattr(ev, "trace"):
        pytest.skip("ebca_viz.trace is not available in this copy")
    with ev.trace(pipe) as tr:
        inside = _state(pipe)
        r = repaint(pipe, photo, left_mask, "teddy bear", num_inference_steps=2, jump_length=1, jump_n_sample=2)
        assert _state(pipe) == inside
    n = len(_descending(_schedule(2, 1, 2)))
    assert r.info["unet_calls"] == n == 3
    e = tr.energies(kind="posterior", when="after")
    assert e.shape[0] == n and e.shape[1] == r.info["cross_attention_layers"] and torch.isfinite(e).all()
    assert [int(t) for t in tr.timesteps] == _descending(_schedule(2, 1, 2)) == [500, 0, 0]


def test_preset_and_cli(tmp_path, capsys):
    from ebca_viz.cli import main

    p = PRESETS["teddy-bear-repaint"]
    assert (p.kwargs["jump_length"], p.kwargs["jump_n_sample"], p.kwargs["repaint"]) == (10, 10, True)
    assert "energy_repaint_stable_diffusion.py:99-100" in p.source
    assert preset_kwargs("teddy-bear-repaint")["jump_n_sample"] == 10
    assert main(["inpaint", "--preset", "teddy-bear-repaint", "--model", "tiny", "--steps", "2", "--jump-length", "1",
                 "--jump-n-sample", "2", "--height", "16", "--width", "16", "--out", str(tmp_path), "--no-progress"]) == 0
    meta = json.loads((tmp_path / "teddy-bear-repaint.json").read_text())
    assert meta["settings"]["jump_n_sample"] == 2 and meta["settings"]["repaint"] is True
    assert meta["info"]["repaint"]["unet_calls"] == 3 and meta["info"]["repaint"]["undo_steps"] == 1
    assert main(["inpaint", "--preset", "teddy-bear-repaint", "--model", "tiny", "--jump-length", "0"]) == 2
    assert "jump_length must be a positive int" in capsys.readouterr().err
    assert main(["inpaint", "--preset", "teddy-bear", "--model", "tiny", "--jump-n-sample", "2"]) == 2
    assert "add --repaint" in capsys.readouterr().err

