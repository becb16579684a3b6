"""SEG: query blur rule, the logits identity, guidance on a real pipeline and a bare UNet."""
import math
import types

import pytest
import torch

import ebca_viz as ev
from ebca_viz.seg import SEGController, SEGSelfAttnProcessor, blur_queries, gaussian_blur_2d, kernel_size_for, seg_combine
from ebca_viz.models import tiny_unet

from conftest import unet_inputs


@pytest.mark.parametrize("sigma,k", [(0.1, 1), (0.5, 3), (1.0, 7), (1.2, 9), (2.0, 13), (10.0, 61)])
def test_kernel_size_rule(sigma, k):
    assert kernel_size_for(sigma) == k and k % 2 == 1


def test_blur_is_normalised_and_capped_by_grid():
    x = torch.ones(1, 3, 5, 5)
    torch.testing.assert_close(gaussian_blur_2d(x, 61, 10.0), x)  # kernel 61 capped to 5, weights sum to 1
    y = torch.randn(2, 4, 6, 6)
    out = gaussian_blur_2d(y, 61, 3.0)  # capped to 7 for an even grid: reflect pad 3 < 6
    assert out.shape == y.shape


def test_query_blur_equals_blurring_the_logits():
    """(G Q) K^T = G (Q K^T): blurring queries blurs every token's logit map the same way."""
    g = torch.Generator().manual_seed(0)
    h = w = 6
    q = torch.randn(1, 2, h * w, 4, generator=g, dtype=torch.float64)
    k = torch.randn(1, 2, 10, 4, generator=g, dtype=torch.float64)
    qb = blur_queries(q, (h, w), 1.0, infinite=False)
    logits = q @ k.transpose(-1, -2)  # (1, 2, P, N)
    lmap = logits.permute(0, 1, 3, 2).reshape(1, 2 * 10, h, w)
    lblur = gaussian_blur_2d(lmap, kernel_size_for(1.0), 1.0).reshape(1, 2, 10, h * w).permute(0, 1, 3, 2)
    torch.testing.assert_close(qb @ k.transpose(-1, -2), lblur)
    qi = blur_queries(q, (h, w), 1e9, infinite=True)
    torch.testing.assert_close(qi, q.mean(dim=2, keepdim=True).expand_as(q))


def test_seg_combine_conventions_agree_without_cfg():
    e = [torch.randn(3) for _ in range(2)]
    s = 2.5
    torch.testing.assert_close(seg_combine(None, e[0], e[1], 1.0, s), e[1] + (s + 1) * (e[0] - e[1]))


def _manual_blurred(unet, x, c, t, keys, sigma):
    """Reference eps of a branch whose selected self-attention queries are all blurred."""
    cfg = ev.SEGConfig(sigma=sigma).validate()
    ctl = SEGController(cfg, None, unet, keys)
    ctl.blur_rows = slice(0, x.shape[0])
    ctl.latent_hw = tuple(x.shape[-2:])
    saved = dict(unet.attn_processors)
    procs = dict(saved)
    procs.update({k: SEGSelfAttnProcessor(ctl, k) for k in keys})
    unet.set_attn_processor(procs)
    try:
        with torch.no_grad():
            return unet(x, t, encoder_hidden_states=c).sample
    finally:
        unet.set_attn_processor(saved)


@pytest.mark.parametrize("sigma", [0.7, 1e6])
def test_guidance_published_with_cfg_on_unet(sigma):
    unet = tiny_unet(seed=11)
    x, c = unet_inputs(unet, batch=2)
    x = torch.cat([x[:1], x[:1]])  # CFG: same latent, [uncond; cond] contexts
    fake = types.SimpleNamespace(unet=unet, guidance_scale=5.0, do_classifier_free_guidance=True)
    keys = ev.seg.seg_layer_keys(unet, ["mid"])
    with torch.no_grad():
        van = unet(x, 500, encoder_hidden_states=c).sample
    eps_b = _manual_blurred(unet, x[1:], c[1:], 500, keys, sigma)
    with ev.smoothed_energy_guidance(fake, scale=3.0, sigma=sigma):
        with torch.no_grad():
            out = unet(x, 500, encoder_hidden_states=c).sample
    assert out.shape == van.shape
    want = seg_combine(van[:1], van[1:], eps_b, 5.0, 3.0)
    got = out[:1] + 5.0 * (out[1:] - out[:1])  # what the pipeline's CFG line computes
    torch.testing.assert_close(got, want, atol=1e-5, rtol=1e-4)
    assert (eps_b - van[1:]).abs().max() > 1e-4


def test_guidance_paper_with_cfg_blurs_uncond_branch():
    unet = tiny_unet(seed=12)
    x, c = unet_inputs(unet, batch=2)
    fake = types.SimpleNamespace(unet=unet, guidance_scale=5.0, do_classifier_free_guidance=True)
    keys = ev.seg.seg_layer_keys(unet, ["mid", "up"])
    with torch.no_grad():
        van = unet(x, 300, encoder_hidden_states=c).sample
    eps_ub = _manual_blurred(unet, x[:1], c[:1], 300, keys, 2.0)
    with ev.smoothed_energy_guidance(fake, ev.SEGConfig(sigma=2.0, layers=["mid", "up"], convention="paper")):
        with torch.no_grad():
            out = unet(x, 300, encoder_hidden_states=c).sample
    torch.testing.assert_close(out[:1], eps_ub, atol=1e-5, rtol=1e-4)
    torch.testing.assert_close(out[1:], van[1:], atol=1e-5, rtol=1e-4)


def test_guidance_without_cfg_on_bare_unet():
    unet = tiny_unet(seed=13)
    x, c = unet_inputs(unet, batch=1)
    keys = ev.seg.seg_layer_keys(unet, ["mid"])
    with torch.no_grad():
        van = unet(x, 200, encoder_hidden_states=c).sample
    eps_b = _manual_blurred(unet, x, c, 200, keys, 1.0)
    with ev.smoothed_energy_guidance(unet, scale=2.0, sigma=1.0, cfg=False):
        with torch.no_grad():
            out = unet(x, 200, encoder_hidden_states=c).sample
    torch.testing.assert_close(out, van + 2.0 * (van - eps_b), atol=1e-5, rtol=1e-4)


def test_seg_scale_zero_equals_vanilla_pipeline(pipe):
    g = torch.Generator().manual_seed(0)
    ref = pipe("a red circle", num_inference_steps=3, generator=g, guidance_scale=5.0, output_type="pt").images
    with ev.smoothed_energy_guidance(pipe, scale=0.0, sigma=3.0):
        g = torch.Generator().manual_seed(0)
        out = pipe("a red circle", num_inference_steps=3, generator=g, guidance_scale=5.0, output_type="pt").images
    torch.testing.assert_close(out, ref, atol=1e-5, rtol=1e-5)
    with ev.smoothed_energy_guidance(pipe, scale=3.0, sigma=3.0):
        g = torch.Generator().manual_seed(0)
        seg = pipe("a red circle", num_inference_steps=3, generator=g, guidance_scale=5.0, output_type="pt").images
    assert (seg - ref).abs().max() > 1e-4
    with ev.smoothed_energy_guidance(pipe, scale=3.0, sigma=math.inf):  # no CFG
        g = torch.Generator().manual_seed(0)
        one = pipe("a red circle", num_inference_steps=2, generator=g, guidance_scale=1.0, output_type="pt").images
    assert torch.isfinite(one).all()
