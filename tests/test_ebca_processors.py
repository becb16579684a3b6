"""EBCU / EBCQ processors on real diffusers pipelines and bare UNets (tiny random weights)."""
import pytest
import torch
from diffusers.models.attention_processor import AttnProcessor2_0

import ebca_viz as ev
from ebca_viz.attach import cross_attention_keys, module_of
from ebca_viz.models import tiny_pipeline, tiny_unet

from conftest import unet_inputs


def _sample(pipe, prompt="a red circle and a blue square", steps=3, seed=0, **kw):
    g = torch.Generator().manual_seed(seed)
    return pipe(prompt, num_inference_steps=steps, generator=g, output_type="pt", **kw).images


def _unet(unet, x, c, t=500):
    with torch.no_grad():
        return unet(x, t, encoder_hidden_states=c).sample


def test_zero_strength_reproduces_diffusers_single_layer():
    unet = tiny_unet(seed=1)
    key = cross_attention_keys(unet)[2]
    attn = module_of(unet, key)
    g = torch.Generator().manual_seed(0)
    h = torch.randn(2, 16, attn.to_q.in_features, generator=g)
    c = torch.randn(2, 77, 32, generator=g)
    ref = AttnProcessor2_0()(attn, h, encoder_hidden_states=c)
    ctl = ev.EBCAController(ev.EBCAConfig(), ev.EBCAConfig().validate(), None, unet, [])
    out = ev.EnergyCrossAttnProcessor(ctl, key)(attn, h, encoder_hidden_states=c)
    torch.testing.assert_close(out, ref, atol=1e-6, rtol=1e-5)


@pytest.mark.parametrize("kw", [{}, {"num_images_per_prompt": 2}])
def test_zero_strength_pipeline_equals_vanilla(pipe, kw):
    prompts = ["a red circle", "a blue square and a green triangle"]
    ref = _sample(pipe, prompts, **kw)
    with ev.energy_attention(pipe, ev.EBCAConfig()):
        out = _sample(pipe, prompts, **kw)
    assert out.shape[0] == 2 * kw.get("num_images_per_prompt", 1)
    torch.testing.assert_close(out, ref, atol=1e-5, rtol=1e-5)


def test_ebcu_changes_the_image_and_restores_processors(pipe):
    ref = _sample(pipe)
    with ev.energy_attention(pipe, gamma_attn=0.3, gamma_norm=0.3) as ctl:
        assert all(isinstance(p, ev.EnergyCrossAttnProcessor) for k, p in pipe.unet.attn_processors.items() if "attn2" in k)
        assert all(isinstance(p, AttnProcessor2_0) for k, p in pipe.unet.attn_processors.items() if "attn1" in k)
        out = _sample(pipe)
        assert ctl.step == 2 and ctl.num_steps == 3
    assert (out - ref).abs().max() > 1e-3
    torch.testing.assert_close(_sample(pipe), ref)


def test_context_cascades_and_resets_every_call_and_caller_tensor_is_untouched():
    unet = tiny_unet(seed=2)
    x, c = unet_inputs(unet)
    c0 = c.clone()
    seen = []

    class Obs:
        def on_cross_attention(self, ev_):
            seen.append((ev_.layer, ev_.context_in.clone(), ev_.context_out.clone()))

    with ev.energy_attention(unet, gamma_attn=0.2, gamma_norm=0.1) as ctl:
        ctl.observers.append(Obs())
        _unet(unet, x, c)
        _unet(unet, x, c, t=400)  # next step: the context restarts from c
    torch.testing.assert_close(c, c0, atol=0, rtol=0)
    n = len(cross_attention_keys(unet))
    assert [s[0] for s in seen] == list(range(n)) * 2
    torch.testing.assert_close(seen[0][1], c)  # first layer of each call sees the prompt embedding
    torch.testing.assert_close(seen[n][1], c)
    for i in range(n - 1):  # layer i+1 receives layer i's updated context
        torch.testing.assert_close(seen[i + 1][1], seen[i][2])
        assert (seen[i][2] - seen[i][1]).abs().max() > 0
    # the same call twice gives the same result (state resets per UNet call)
    with ev.energy_attention(unet, gamma_attn=0.2, gamma_norm=0.1):
        a1 = _unet(unet, x, c, t=500)
        a2 = _unet(unet, x, c, t=500)
    torch.testing.assert_close(a1, a2)


def test_both_cfg_halves_updated_by_default_and_paper_switch():
    unet = tiny_unet(seed=3)
    x, c = unet_inputs(unet, batch=4)
    van = _unet(unet, x, c)
    with ev.energy_attention(unet, gamma_attn=0.3, gamma_norm=0.3):
        pub = _unet(unet, x, c)
    with ev.energy_attention(unet, gamma_attn=0.3, gamma_norm=0.3, update_uncond=False):
        cond_only = _unet(unet, x, c)
    assert (pub[:2] - van[:2]).abs().max() > 1e-4  # uncond half moved (published behaviour)
    torch.testing.assert_close(cond_only[:2], van[:2])  # paper: the uncond half is plain attention
    torch.testing.assert_close(cond_only[2:], pub[2:])


def test_token_upweight_acts_on_conditional_half_only():
    unet = tiny_unet(seed=4)
    x, c = unet_inputs(unet, batch=2)
    with ev.energy_attention(unet, gamma_attn=0.3, gamma_norm=0.1):
        base = _unet(unet, x, c)
    with ev.energy_attention(unet, gamma_attn=0.3, gamma_norm=0.1, token_indices=[2, 5], token_upweight=[1.0, 1.0]):
        same = _unet(unet, x, c)
    with ev.energy_attention(unet, gamma_attn=0.3, gamma_norm=0.1, token_indices=[2, 5], token_upweight=[4.0, 0.0]):
        up = _unet(unet, x, c)
    torch.testing.assert_close(same, base)
    torch.testing.assert_close(up[:1], base[:1])
    assert (up[1:] - base[1:]).abs().max() > 1e-5


def test_query_mask_zero_and_one():
    unet = tiny_unet(seed=5)
    x, c = unet_inputs(unet, batch=2)
    van = _unet(unet, x, c)
    with ev.energy_attention(unet, gamma_attn=0.5, query_mask=torch.zeros(8, 8)):
        zero = _unet(unet, x, c)
    with ev.energy_attention(unet, gamma_attn=0.5):
        nomask = _unet(unet, x, c)
    with ev.energy_attention(unet, gamma_attn=0.5, query_mask=torch.ones(1, 1, 8, 8)):
        one = _unet(unet, x, c)
    half = torch.zeros(1, 1, 8, 8)
    half[..., :4] = 1
    with ev.energy_attention(unet, gamma_attn=0.5, query_mask=half):
        part = _unet(unet, x, c)
    torch.testing.assert_close(zero, van)
    torch.testing.assert_close(one, nomask)
    assert (part - van).abs().max() > 1e-5 and (part - nomask).abs().max() > 1e-5


def test_gamma_schedules_follow_steps():
    unet = tiny_unet(seed=6)
    x, c = unet_inputs(unet)
    ts = [900, 600, 300, 100]
    van = [_unet(unet, x, c, t) for t in ts]
    cfg = ev.EBCAConfig(gamma_attn=ev.Schedule.window(0.4, start=0.5), gamma_norm=0.0, num_inference_steps=4)
    with ev.energy_attention(unet, cfg):
        out = [_unet(unet, x, c, t) for t in ts]
    torch.testing.assert_close(out[0], van[0])
    torch.testing.assert_close(out[1], van[1])
    assert all((out[i] - van[i]).abs().max() > 1e-5 for i in (2, 3))
    with ev.energy_attention(unet, gamma_attn=[0.4, 0.0, 0.4, 0.0], gamma_norm=0.0) as ctl:
        lst = [_unet(unet, x, c, t) for t in ts]
        assert ctl.step == 3
    torch.testing.assert_close(lst[1], van[1])
    torch.testing.assert_close(lst[3], van[3])
    torch.testing.assert_close(lst[2], out[2])


def test_new_run_detected_when_timestep_goes_up():
    unet = tiny_unet(seed=6)
    x, c = unet_inputs(unet)
    with ev.energy_attention(unet, gamma_attn=[0.4, 0.0], gamma_norm=0.0) as ctl:
        a = _unet(unet, x, c, 900)
        _unet(unet, x, c, 100)
        b = _unet(unet, x, c, 900)  # a second sampling loop starts at step 0 again
        assert ctl.step == 0
    torch.testing.assert_close(a, b)


def _edit_cfg(mode, emb, **kw):
    e = ev.Edit(embeds=emb, alpha=0.7, direction=1, gamma_attn=0.3, gamma_norm=0.2)
    return ev.EBCAConfig(gamma_attn=0.1, gamma_norm=0.1, edits=[e], edit_context=mode, **kw)


def test_ebcq_identity_compositions():
    unet = tiny_unet(seed=7)
    x, c = unet_inputs(unet)
    with ev.energy_attention(unet, gamma_attn=0.2, gamma_norm=0.1):
        base = _unet(unet, x, c)
    # an edit whose context is the prompt's own embedding, updated with the same gammas, cascades
    # exactly like the main context, so (O + a O) / (1 + a) = O and (O - a O) / (1 - a) = O
    for d, a in ((1, 1.3), (-1, 0.5)):
        e = ev.Edit(embeds=c[1:], alpha=a, direction=d, gamma_attn=0.2, gamma_norm=0.1)
        with ev.energy_attention(unet, gamma_attn=0.2, gamma_norm=0.1, edits=[e], edit_context="reset"):
            out = _unet(unet, x, c)
        torch.testing.assert_close(out, base, atol=1e-5, rtol=1e-4)
    other = torch.randn_like(c[:1])
    with ev.energy_attention(unet, gamma_attn=0.2, gamma_norm=0.1, edits=[ev.Edit(embeds=other, alpha=1.0)]):
        moved = _unet(unet, x, c)
    assert (moved - base).abs().max() > 1e-4


def test_ebcq_accumulate_vs_reset():
    unet = tiny_unet(seed=8)
    x, c = unet_inputs(unet)
    emb = torch.randn(1, 77, 32, generator=torch.Generator().manual_seed(1))
    runs = {}
    for mode in ("accumulate", "reset"):
        with ev.energy_attention(unet, _edit_cfg(mode, emb)) as ctl:
            runs[mode] = [_unet(unet, x, c, 500) for _ in range(3)]
            if mode == "accumulate":  # editorial contexts moved away from their start and persist
                assert (ctl._edit_state[1] - emb).abs().max() > 1e-4
                assert (ctl._edit_state[0] - c[:1]).abs().max() > 1e-4
    acc, rst = runs["accumulate"], runs["reset"]
    torch.testing.assert_close(acc[0], rst[0])  # identical until contexts carry over
    assert (acc[1] - rst[1]).abs().max() > 1e-5
    assert (acc[2] - acc[1]).abs().max() > 1e-5
    # reset mode: the same inputs give the same output at every step
    torch.testing.assert_close(rst[1], rst[0])
    torch.testing.assert_close(rst[2], rst[0])


def test_processors_restored_after_exception_mid_sampling(pipe):
    before = dict(pipe.unet.attn_processors)

    def boom(p, i, t, kw):
        if i == 1:
            raise KeyboardInterrupt("user pressed stop")
        return kw

    with pytest.raises(KeyboardInterrupt):
        with ev.energy_attention(pipe, gamma_attn=0.1, gamma_norm=0.1):
            _sample(pipe, steps=4, callback_on_step_end=boom)
    assert dict(pipe.unet.attn_processors) == before


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_low_precision(dtype):
    unet = tiny_unet(seed=9).to(dtype)
    x, c = unet_inputs(unet, dtype=dtype)
    van = _unet(unet, x, c)
    with ev.energy_attention(unet, ev.EBCAConfig()):
        zero = _unet(unet, x, c)
    with ev.energy_attention(unet, gamma_attn=0.3, gamma_norm=0.3):
        out = _unet(unet, x, c)
    assert out.dtype == dtype and torch.isfinite(out).all()
    torch.testing.assert_close(zero.float(), van.float(), atol=2e-2, rtol=2e-2)
    assert (out.float() - van.float()).abs().max() > 1e-2


def test_sd2_style_unet_linear_projection_and_head_lists():
    unet = tiny_unet(seed=10, use_linear_projection=True, attention_head_dim=(2, 4), upcast_attention=True)
    x, c = unet_inputs(unet)
    van = _unet(unet, x, c)
    with ev.energy_attention(unet, ev.EBCAConfig()):
        torch.testing.assert_close(_unet(unet, x, c), van, atol=1e-5, rtol=1e-5)
    with ev.energy_attention(unet, gamma_attn=0.3, gamma_norm=0.3):
        assert (_unet(unet, x, c) - van).abs().max() > 1e-4


def test_pipeline_edit_prompts_are_encoded(pipe):
    with ev.energy_attention(pipe, edits=[ev.Edit(prompt="a green triangle", alpha=0.5, start=0.5)]) as ctl:
        assert ctl.edit_embeds[0].shape == (1, 77, 32)
        out = _sample(pipe, steps=4)
    assert torch.isfinite(out).all()


def test_inpainting_pipeline_with_mask():
    pipe = tiny_pipeline(inpainting=True)
    img = torch.rand(1, 3, 16, 16)
    mask = torch.zeros(1, 1, 16, 16)
    mask[..., 8:] = 1
    g = torch.Generator().manual_seed(0)
    van = pipe("a teddy bear", image=img, mask_image=mask, num_inference_steps=2, generator=g, output_type="pt").images
    with ev.energy_attention(pipe, gamma_attn=0.3, gamma_norm=0.3, query_mask=mask[:, :, ::2, ::2]):
        g = torch.Generator().manual_seed(0)
        out = pipe("a teddy bear", image=img, mask_image=mask, num_inference_steps=2, generator=g, output_type="pt").images
    assert (out - van).abs().max() > 1e-4


def test_ebcq_on_a_bf16_pipeline_keeps_the_pipeline_dtype():
    """Regression (found by tests/test_properties.py): the editorial contexts attend in the pipeline's dtype while
    the updates run in fp32; a bf16 pipeline with an edit samples finite images and restores its processors."""
    import ebca_viz as ev
    from ebca_viz.models import tiny_pipeline

    tiny_pipe_bf16 = tiny_pipeline(seed=0).to(torch.bfloat16)
    tiny_pipe_bf16.set_progress_bar_config(disable=True)
    before = dict(tiny_pipe_bf16.unet.attn_processors)
    cfg = ev.EBCAConfig(gamma_attn=0.01, edits=[ev.Edit(prompt="a blue square", alpha=0.5, direction=1)])
    with ev.energy_attention(tiny_pipe_bf16, cfg):
        out = tiny_pipe_bf16("a", num_inference_steps=2, generator=torch.Generator().manual_seed(0),
                             output_type="pt", height=32, width=32)
    assert out.images.dtype == torch.bfloat16 and bool(torch.isfinite(out.images.float()).all())
    assert all(type(p) is type(before[k]) for k, p in tiny_pipe_bf16.unet.attn_processors.items())
