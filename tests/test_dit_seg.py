"""SEG on diffusion transformers (ebca_viz/seg_dit.py, docs/method.md "SEG on diffusion transformers").

The SD3 agreement with diffusers' own SmoothedEnergyGuidance guider is checked at the level of one
denoising step: same float64 SD3 transformer, latents, timestep, text states, blocks, sigma and scales;
diffusers' guider drives three forwards (cond, uncond, cond with its hook on the chosen blocks' ``to_q``)
and combines them with its ``forward``; ebca_viz runs one forward of the batch ``[uncond; cond]`` (plus
its blurred branch) under ``ev.smoothed_energy_guidance`` and the pipeline's CFG line is applied to what
it returns. The two guided predictions agree to 1e-12 (float64)."""
import math

import pytest
import torch

import ebca_viz as ev
from ebca_viz.errors import EbcaVizError
from ebca_viz.seg_dit import blur_grid

W, S = 4.0, 2.0  # CFG scale, SEG scale


def _sd3(**over):
    from diffusers import SD3Transformer2DModel

    cfg = dict(sample_size=8, patch_size=2, in_channels=4, num_layers=3, attention_head_dim=8, num_attention_heads=2,
               joint_attention_dim=16, caption_projection_dim=16, pooled_projection_dim=8, out_channels=4,
               pos_embed_max_size=16, dual_attention_layers=(1,))
    cfg.update(over)
    torch.manual_seed(0)
    return SD3Transformer2DModel(**cfg).eval().double()


def _inputs(hw=(8, 8)):
    g = torch.Generator().manual_seed(1)
    r = lambda *s: torch.randn(*s, generator=g, dtype=torch.float64)  # noqa: E731
    return dict(lat=r(1, 4, *hw), c=r(1, 5, 16), u=r(1, 5, 16), pc=r(1, 8), pu=r(1, 8), t=torch.tensor(500.0).double())


def _diffusers_step(m, x, sigma, layers, step=1, restore_counter=True):
    """One step of diffusers' modular SD3 denoise loop (modular_pipelines/stable_diffusion_3/denoise.py) with
    the SmoothedEnergyGuidance guider. ``restore_counter``: do what ``BaseGuidance.prepare_models`` would
    (count the prepared batch), which ``SmoothedEnergyGuidance.prepare_models`` does not call in 0.42.1."""
    from diffusers.guiders import SmoothedEnergyGuidance
    from diffusers.hooks.smoothed_energy_guidance_utils import SmoothedEnergyGuidanceConfig

    g = SmoothedEnergyGuidance(guidance_scale=W, seg_guidance_scale=S, seg_blur_sigma=sigma,
                               seg_guidance_config=SmoothedEnergyGuidanceConfig(indices=layers, fqn="transformer_blocks"))
    g.set_state(step=step, num_inference_steps=10, timestep=x["t"])
    batches = g.prepare_inputs({"hidden_states": (x["lat"], x["lat"]), "encoder_hidden_states": (x["c"], x["u"]),
                                "text_embeds": (x["pc"], x["pu"])})
    preds = []
    for i, b in enumerate(batches):
        if restore_counter:
            g._count_prepared = i + 1
        g.prepare_models(m)
        with torch.no_grad():
            b.noise_pred = m(hidden_states=b.hidden_states, timestep=x["t"].expand(1),
                             encoder_hidden_states=b.encoder_hidden_states, pooled_projections=b.text_embeds,
                             return_dict=False)[0]
        preds.append(b.noise_pred)
        g.cleanup_models(m)
    return g(batches).pred, preds


def _ebca_viz_step(m, x, config):
    """ebca_viz on the same step: one transformer call with [uncond; cond], then the pipeline's CFG line."""
    with ev.smoothed_energy_guidance(m, config):
        with torch.no_grad():
            out = m(hidden_states=torch.cat([x["lat"]] * 2), timestep=x["t"].expand(2),
                    encoder_hidden_states=torch.cat([x["u"], x["c"]]), pooled_projections=torch.cat([x["pu"], x["pc"]]),
                    return_dict=False)[0]
    u, c = out.chunk(2)
    return u + W * (c - u)


@pytest.mark.parametrize("diffusers_sigma, ours", [
    (1.0, dict(sigma=math.inf)),  # diffusers' hook: sigma <= 9999.9 -> the grid mean (branches swapped)
    (9999999.0, dict(sigma=9999999.0, inf_threshold=1e8)),  # > 9999.9 -> a Gaussian of that sigma, kernel capped
])
def test_sd3_seg_agrees_with_diffusers_guider(diffusers_sigma, ours):
    m, x = _sd3(), _inputs()
    ref, preds = _diffusers_step(m, x, diffusers_sigma, [1])
    assert (preds[2] - preds[0]).abs().max() > 1e-3  # the hook did blur (the comparison is not vacuous)
    got = _ebca_viz_step(m, x, ev.SEGConfig(scale=S, layers=[1], cfg=True, **ours))
    assert (got - ref).abs().max() < 1e-12
    plain_cfg = preds[1] + W * (preds[0] - preds[1])
    assert (got - plain_cfg).abs().max() > 1e-3


def test_finite_gaussian_agrees_with_diffusers_hook():
    """A finite Gaussian (sigma 1.5, kernel 11 capped to 5 on the 4x4 grid, reflect padding): diffusers' hook
    reaches it only with its threshold below sigma (the guider never passes its threshold to the hook)."""
    from diffusers.hooks import HookRegistry
    from diffusers.hooks.smoothed_energy_guidance_utils import SmoothedEnergyGuidanceHook

    m, x = _sd3(), _inputs()
    kw = lambda b: dict(hidden_states=x["lat"].expand(b, -1, -1, -1), timestep=x["t"].expand(b),  # noqa: E731
                        encoder_hidden_states=x["c"].expand(b, -1, -1), pooled_projections=x["pc"].expand(b, -1),
                        return_dict=False)
    blk = m.transformer_blocks[1]
    for a in (blk.attn, blk.attn2):
        HookRegistry.check_if_exists_or_initialize(a.to_q).register_hook(
            SmoothedEnergyGuidanceHook(blur_sigma=1.5, blur_threshold_inf=0.0), "seg")
    with torch.no_grad():
        ref = m(**kw(1))[0]
    for a in (blk.attn, blk.attn2):
        HookRegistry.check_if_exists_or_initialize(a.to_q).remove_hook("seg", recurse=True)
    with ev.smoothed_energy_guidance(m, ev.SEGConfig(scale=1.0, sigma=1.5, layers=[1], cfg=False)):
        with torch.no_grad():
            c_plus = m(**kw(1))[0]  # c + (c - blur)
    with torch.no_grad():
        c = m(**kw(1))[0]
    assert (c - ref).abs().max() > 1e-3
    assert ((2 * c - c_plus) - ref).abs().max() < 1e-12


def test_diffusers_guider_as_shipped_guides_without_seg():
    """What docs/method.md reports about diffusers 0.42.1: driven as its modular loop drives it, the guider's
    SEG branch is the conditional prediction (its prepare_models never counts the batches, so the hook is
    never registered) and its output is plain CFG; SEG is off at step 0 whatever seg_guidance_start is;
    ``seg_guidance_layers=[i]`` fails on its first batch."""
    from diffusers.guiders import SmoothedEnergyGuidance

    m, x = _sd3(), _inputs()
    pred, preds = _diffusers_step(m, x, 1.0, [1], restore_counter=False)
    assert torch.equal(preds[2], preds[0])
    assert (pred - (preds[1] + W * (preds[0] - preds[1]))).abs().max() < 1e-12
    g = SmoothedEnergyGuidance(seg_guidance_layers=[1], seg_guidance_start=0.0)
    g.set_state(step=0, num_inference_steps=10, timestep=x["t"])
    assert not g._is_seg_enabled()
    g._count_prepared = 3
    g.set_state(step=1, num_inference_steps=10, timestep=x["t"])
    g._count_prepared = 3
    with pytest.raises(TypeError):
        g.prepare_models(m)


def test_sd35_qk_norm_blurs_the_normed_queries():
    """With RMS qk-norm (SD3.5) ebca_viz blurs the queries as they enter the logits (after norm_q);
    diffusers' hook blurs to_q's output before the norm: the two differ there (docs/method.md)."""
    m, x = _sd3(qk_norm="rms_norm"), _inputs()
    ref, _ = _diffusers_step(m, x, 1.0, [1])
    got = _ebca_viz_step(m, x, ev.SEGConfig(scale=S, layers=[1], cfg=True, sigma=math.inf))
    assert (got - ref).abs().max() > 1e-4


def test_blur_grid_non_square_keeps_the_row_major_grid():
    """q[y, x] = f(x) on a 3 x 5 grid stays constant along y after the blur (a transposed grid would not);
    interior columns are mixed; sigma -> inf gives the mean."""
    h, w = 3, 5
    f = torch.arange(w, dtype=torch.float64) ** 2
    q = f.repeat(h).view(1, 1, h * w, 1)
    out = blur_grid(q, (h, w), 1.0, False).view(h, w)
    assert torch.allclose(out, out[0].expand(h, w), atol=1e-12)
    assert not torch.allclose(out[0], f)
    assert torch.allclose(blur_grid(q, (h, w), 1.0, True), q.mean().expand_as(q))


def _attn_call(family):
    """An attention module of a tiny DiT, its inputs and ebca_viz's SEG processor for it."""
    from ebca_viz.models import tiny_dit
    from ebca_viz.seg_dit import PROCESSORS, DiTSEGController

    mk = {"sd3": tiny_dit.tiny_sd3_pipeline, "flux": tiny_dit.tiny_flux_pipeline}[family]
    tr = mk(0).transformer.double()
    g = torch.Generator().manual_seed(2)
    return tr, g, PROCESSORS[family], DiTSEGController


@pytest.mark.parametrize("family, key", [("sd3", "transformer_blocks.0.attn"), ("flux", "transformer_blocks.0.attn"),
                                         ("flux", "single_transformer_blocks.0.attn")])
def test_only_image_queries_are_blurred(family, key):
    """Infinite blur on rows [1, 2) of the image queries: every image output of those rows is the same vector,
    every text output (joint: the context stream; single: the first N positions) is unchanged, row 0 is unchanged."""
    tr, g, Proc, Ctl = _attn_call(family)
    attn = tr.get_submodule(key)
    h, w, n, dim = 2, 3, 4, attn.to_q.in_features
    x = torch.randn(2, h * w, dim, generator=g, dtype=torch.float64)
    c = torch.randn(2, n, dim, generator=g, dtype=torch.float64)
    kw = {}
    if family == "flux":
        from diffusers.models.embeddings import FluxPosEmbed

        ids = torch.cat([torch.zeros(n, 3), torch.stack(torch.meshgrid(torch.zeros(1), torch.arange(h).float(),
                                                                      torch.arange(w).float(), indexing="ij"), -1).view(-1, 3)])
        kw["image_rotary_emb"] = tuple(e.double() for e in FluxPosEmbed(theta=10000, axes_dim=tr.config.axes_dims_rope)(ids))
    single = key.startswith("single")
    args = dict(hidden_states=torch.cat([c, x], 1)) if single else dict(hidden_states=x, encoder_hidden_states=c)
    ctl = Ctl(ev.SEGConfig(sigma=math.inf), None, tr, [key], family, None)
    ctl.grid = (h, w)
    with torch.no_grad():
        ref = attn.processor(attn, **args, **kw)
        ctl.blur_rows = slice(1, 2)
        out = Proc(ctl, key)(attn, **args, **kw)
    if single:
        ref, out = (ref[:, n:], ref[:, :n]), (out[:, n:], out[:, :n])
    (ri, rt), (oi, ot) = ref, out
    assert torch.allclose(ot, rt, atol=1e-12)  # text outputs: untouched
    assert torch.allclose(oi[0], ri[0], atol=1e-12)  # the unmarked row: diffusers' processor exactly
    assert torch.allclose(oi[1], oi[1, :1].expand_as(oi[1]), atol=1e-10)  # one query for every image token
    assert not torch.allclose(oi[1], ri[1], atol=1e-6)


def _run(pipe, seg=None, **kw):
    rows = []
    raw = []
    h1 = pipe.transformer.register_forward_hook(lambda m, a, k, o: raw.append(o[0].detach().clone()), with_kwargs=True)
    try:
        ctx = ev.smoothed_energy_guidance(pipe, seg) if seg is not None else None
        if ctx is not None:
            ctx.__enter__()
        h2 = pipe.transformer.register_forward_pre_hook(
            lambda m, a, k: rows.append(int((a[0] if a else k["hidden_states"]).shape[0])), with_kwargs=True)
        try:
            out = pipe("a red cube", num_inference_steps=2, height=16, width=24, output_type="latent",
                       generator=torch.Generator().manual_seed(0), **kw).images
        finally:
            h2.remove()
            if ctx is not None:
                ctx.__exit__(None, None, None)
    finally:
        h1.remove()
    return out, rows, raw


@pytest.mark.parametrize("family, kw, rows_vanilla, rows_seg", [
    ("sd3", dict(max_sequence_length=8, guidance_scale=4.0), [2, 2], [3, 3]),
    ("pixart", dict(max_sequence_length=8, guidance_scale=4.0, use_resolution_binning=False), [2, 2], [3, 3]),
    ("flux", dict(max_sequence_length=8), [1, 1], [2, 2]),
    ("flux", dict(max_sequence_length=8, negative_prompt="blue", true_cfg_scale=3.0), [1, 1, 1, 1], [2, 1, 2, 1]),
])
def test_one_extra_branch_per_step(family, kw, rows_vanilla, rows_seg):
    """One transformer forward per denoiser call, the batch grown by the conditional rows once (the floor of
    SEG's published form), on a non-square 4 x 6 token grid; the image changes."""
    from ebca_viz.models import tiny_dit

    pipe = tiny_dit.TINY_DIT[f"tiny-{family}"](0)
    base, rows0, _ = _run(pipe, **kw)
    out, rows1, _ = _run(pipe, ev.SEGConfig(scale=S, sigma=1.0, layers=[0]), **kw)
    assert rows0 == rows_vanilla and rows1 == rows_seg
    assert (out - base).abs().max() > 1e-4


def test_flux_true_cfg_combination():
    """Flux with true CFG: the cond call returns c + s (c - blur), the uncond call u + s (c - blur), so the
    pipeline's line u + w (c - u) is the published formula u + w (c - u) + s (c - blur) for every w."""
    from ebca_viz.models.tiny_dit import tiny_flux_pipeline

    pipe = tiny_flux_pipeline(0)
    seen = []  # (raw rows, returned rows) per call
    raw = []
    h_raw = pipe.transformer.register_forward_hook(lambda m, a, k, o: raw.append(o[0].detach().clone()),
                                                   with_kwargs=True)
    with ev.smoothed_energy_guidance(pipe, ev.SEGConfig(scale=S, sigma=1.0, layers=[0])):
        h_out = pipe.transformer.register_forward_hook(lambda m, a, k, o: seen.append(o[0].detach().clone()),
                                                       with_kwargs=True)
        pipe("a red cube", negative_prompt="blue", true_cfg_scale=3.0, num_inference_steps=1, height=16, width=24,
             max_sequence_length=8, output_type="latent", generator=torch.Generator().manual_seed(0))
        h_out.remove()
    h_raw.remove()
    (c, b), u = raw[0], raw[1][0]
    delta = S * (c - b)
    assert torch.allclose(seen[0][0], c + delta, atol=1e-6) and torch.allclose(seen[1][0], u + delta, atol=1e-6)
    assert delta.abs().max() > 1e-4


@pytest.mark.parametrize("family, kw, rows_paper", [
    ("pixart", dict(max_sequence_length=8, guidance_scale=4.0, use_resolution_binning=False), [2, 2]),
    ("flux", dict(max_sequence_length=8, negative_prompt="blue", true_cfg_scale=3.0), [1, 1, 1, 1]),
])
def test_paper_convention_with_cfg_adds_no_rows(family, kw, rows_paper):
    """Paper convention with CFG: the unconditional rows (Flux true CFG: the second call of a step) are blurred
    in place, no branch; the pipeline's CFG line is the formula."""
    from ebca_viz.models import tiny_dit

    pipe = tiny_dit.TINY_DIT[f"tiny-{family}"](0)
    base, _, raw0 = _run(pipe, **kw)
    out, rows, raw = _run(pipe, ev.SEGConfig(scale=S, sigma=1.0, layers=[0], convention="paper"), **kw)
    assert rows == rows_paper and (out - base).abs().max() > 1e-4
    if family == "flux":  # the conditional call is untouched, the unconditional one blurred
        assert torch.equal(raw[0], raw0[0]) and (raw[1] - raw0[1]).abs().max() > 1e-4


def test_layer_choice_errors():
    from ebca_viz.models.tiny_dit import tiny_flux_pipeline, tiny_pixart_pipeline

    pipe = tiny_pixart_pipeline(0)
    with pytest.raises(EbcaVizError, match="cross-attention"):
        ev.apply_seg(pipe, ev.SEGConfig(layers=["transformer_blocks.0.attn2.processor"]))
    with pytest.raises(EbcaVizError, match="out of range"):
        ev.apply_seg(pipe, ev.SEGConfig(layers=[7]))
    assert pipe.transformer.attn_processors["transformer_blocks.0.attn1.processor"].__class__.__module__.startswith(
        "diffusers")
    ctl = ev.apply_seg(tiny_flux_pipeline(0), ev.SEGConfig(layers=["single_transformer_blocks.1.attn.processor", 0]))
    assert ctl.keys == ["single_transformer_blocks.1.attn.processor", "transformer_blocks.0.attn.processor"]
    ctl.remove()
