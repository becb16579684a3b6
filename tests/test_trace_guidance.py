"""Where guidance acts: the trace's per-step, per-latent-pixel CFG and SEG maps (issue 20, item 7).

Every map is checked against an independent computation: the UNet's inputs are captured while
sampling and the UNet is run again, outside the trace, on exactly those inputs."""
import json

import pytest
import torch

import ebca_viz as ev
from ebca_viz.seg import apply_seg
from ebca_viz.tracing.filters import DEFAULT_QUANTITIES

W, S = 5.0, 3.0  # CFG guidance_scale, SEG scale
SEG_CFG = dict(scale=S, sigma=1.0, layers=["mid", "up"])


def _sample(pipe, steps=1, guidance_scale=W):
    pipe("a red circle", num_inference_steps=steps, guidance_scale=guidance_scale,
         generator=torch.Generator().manual_seed(0))


class _Inputs:
    """Captures the caller's UNet inputs ``(sample, t, context)`` at every call: a forward pre-hook
    put first, so it sees the batch before SEG appends its branch."""

    def __init__(self, unet):
        self.unet, self.calls = unet, []

    def __enter__(self):
        def pre(module, args, kwargs):
            x = args[0] if args else kwargs["sample"]
            t = args[1] if len(args) > 1 else kwargs["timestep"]
            c = args[2] if len(args) > 2 else kwargs["encoder_hidden_states"]
            self.calls.append((x.detach().clone(), t, c.detach().clone()))

        self.h = self.unet.register_forward_pre_hook(pre, with_kwargs=True, prepend=True)
        return self

    def __exit__(self, *exc):
        self.h.remove()


@torch.no_grad()
def _eps(unet, x, t, c):
    return unet(x, t, encoder_hidden_states=c).sample.float()


def _l2(d):
    return torch.linalg.vector_norm(d, dim=1)  # over the latent channels: (B, C, h, w) -> (B, h, w)


@pytest.mark.parametrize("seg_first", [False, True])
def test_cfg_and_seg_maps_equal_the_terms_computed_from_the_unet_outputs(pipe, seg_first):
    """CFG: w ||eps_c - eps_u||; SEG (published, with CFG): s ||eps_c - eps_blur||; both nesting orders."""
    unet = pipe.unet
    seg_cfg = ev.SEGConfig(**SEG_CFG)
    if seg_first:
        with ev.smoothed_energy_guidance(pipe, seg_cfg), ev.trace(pipe) as tr, _Inputs(unet) as cap:
            _sample(pipe, steps=2)
    else:
        with ev.trace(pipe) as tr, ev.smoothed_energy_guidance(pipe, seg_cfg), _Inputs(unet) as cap:
            _sample(pipe, steps=2)
    assert tr.guidance_kinds == ["cfg", "seg"] and tr.latent_hw == (8, 8)
    cfg_map, seg_map = tr.guidance("cfg"), tr.guidance("seg")
    assert cfg_map.shape == seg_map.shape == (2, 8, 8) and cfg_map.dtype == torch.float32
    assert len(cap.calls) == 2 and cap.calls[0][0].shape[0] == 2  # [uncond; cond]
    for step, (x, t, c) in enumerate(cap.calls):
        eps = _eps(unet, x, t, c)  # plain UNet: the raw halves
        want_cfg = W * _l2(eps[1:] - eps[:1])[0]
        torch.testing.assert_close(cfg_map[step], want_cfg, atol=1e-5, rtol=1e-5)
        # SEG's term, independently: a bare-UNet SEG (no CFG) returns eps_c + s (eps_c - eps_blur) for the
        # conditional rows, so its difference from the plain eps_c is the term
        seg = apply_seg(unet, seg_cfg)
        try:
            guided = _eps(unet, x[1:], t, c[1:])
        finally:
            seg.remove()
        want_seg = _l2(guided - eps[1:])[0]
        assert want_seg.max() > 1e-4 and (want_seg - want_cfg).abs().max() > 1e-3  # the maps tell the terms apart
        torch.testing.assert_close(seg_map[step], want_seg, atol=1e-5, rtol=1e-4)


def test_seg_map_without_cfg_and_vanilla_records_no_cfg_map(pipe):
    """No CFG (guidance_scale 1): only SEG's term, eps = eps_c + s (eps_c - eps_blur); the CFG slot is NaN and
    the accessor says why. A vanilla run without CFG records no map at all (both slots NaN)."""
    unet = pipe.unet
    with ev.trace(pipe) as tr, ev.smoothed_energy_guidance(pipe, ev.SEGConfig(**SEG_CFG)), _Inputs(unet) as cap:
        _sample(pipe, steps=1, guidance_scale=1.0)
    (x, t, c), = cap.calls
    assert x.shape[0] == 1  # no CFG: conditional rows only
    plain = _eps(unet, x, t, c)
    seg = apply_seg(unet, ev.SEGConfig(**SEG_CFG))
    try:
        guided = _eps(unet, x, t, c)
    finally:
        seg.remove()
    torch.testing.assert_close(tr.guidance("seg")[0], _l2(guided - plain)[0], atol=1e-5, rtol=1e-4)
    assert tr.guidance_kinds == ["seg"]
    with pytest.raises(ValueError, match="no 'cfg' guidance map: the run sampled without classifier-free guidance"):
        tr.guidance("cfg")

    with ev.trace(pipe) as van:
        _sample(pipe, steps=1, guidance_scale=1.0)
    g = van.record.stacked()["guidance"]
    assert g.shape == (1, 2, 1, 8, 8) and torch.isnan(g).all()  # counted and stored, but nothing acted
    assert van.guidance_kinds == []
    with pytest.raises(ValueError, match="no 'seg' guidance map: SEG was not installed"):
        van.guidance("seg")
    with pytest.raises(ValueError, match="kind must be one of"):
        van.guidance("pag")


def test_paper_convention_cfg_map_is_against_the_blurred_unconditional_branch(pipe):
    """SEG's paper convention with CFG blurs eps_u in place: eps = eps_ublur + w (eps_c - eps_ublur). The CFG map
    is w ||eps_c - eps_ublur||; SEG has no term of its own (the accessor says so)."""
    unet = pipe.unet
    cfg = ev.SEGConfig(**SEG_CFG, convention="paper")
    with ev.trace(pipe) as tr, ev.smoothed_energy_guidance(pipe, cfg), _Inputs(unet) as cap:
        _sample(pipe, steps=1)
    (x, t, c), = cap.calls
    seg = apply_seg(unet, ev.SEGConfig(**SEG_CFG, convention="paper", cfg=True))  # blurs rows [0, b2/2)
    try:
        eps = _eps(unet, x, t, c)  # [eps_ublur; eps_c]
    finally:
        seg.remove()
    plain = _eps(unet, x, t, c)
    want = W * _l2(eps[1:] - eps[:1])[0]
    assert (want - W * _l2(plain[1:] - plain[:1])[0]).abs().max() > 1e-4  # the blur changed eps_u
    torch.testing.assert_close(tr.guidance("cfg")[0], want, atol=1e-5, rtol=1e-5)
    with pytest.raises(ValueError, match="convention='paper'"):
        tr.guidance("seg")


def test_bare_unet_needs_the_guidance_scale():
    from ebca_viz.models.tiny import tiny_unet

    from conftest import unet_inputs

    unet = tiny_unet(seed=3)
    x, c = unet_inputs(unet, batch=2)
    with ev.trace(unet, cfg=True, guidance_scale=2.5) as tr:
        eps = _eps(unet, x, 500, c)
    torch.testing.assert_close(tr.guidance("cfg")[0], 2.5 * _l2(eps[1:] - eps[:1])[0], atol=1e-5, rtol=1e-5)
    with ev.trace(unet, cfg=True) as tr2:  # no pipeline to read w from: no CFG map
        _eps(unet, x, 500, c)
    with pytest.raises(ValueError, match="guidance_scale="):
        tr2.guidance("cfg")
    with pytest.raises(ValueError, match="guidance_scale must be"):
        ev.trace(unet, guidance_scale="7")


def test_budget_counts_the_maps_and_the_estimate_equals_what_is_stored(pipe):
    with ev.trace(pipe) as tr:
        _sample(pipe, steps=2)
    held = sum(t.nbytes for t in tr.record.stacked().values())
    assert tr.nbytes == held == tr.estimate_bytes(num_steps=2)
    assert ev.estimate_bytes(pipe, num_steps=2) == tr.nbytes
    no = [q for q in DEFAULT_QUANTITIES if q != "guidance"]
    per_step = 2 * 1 * 8 * 8 * 4  # (cfg, seg) x images x latent h x w x fp32
    assert ev.estimate_bytes(pipe, num_steps=2) - ev.estimate_bytes(pipe, num_steps=2, quantities=no) == 2 * per_step
    assert tr.record.stacked()["guidance"].nbytes == 2 * per_step
    # a 512-pixel image, 50 DDIM steps: the latent grid is 512 / the VAE factor per side
    big = ev.estimate_bytes(pipe, num_steps=50, height=512, width=512)
    side = 512 // pipe.vae_scale_factor
    assert big - ev.estimate_bytes(pipe, num_steps=50, height=512, width=512, quantities=no) == 50 * 2 * side * side * 4


def test_steps_filter_and_quantities_filter(pipe):
    with ev.trace(pipe) as full:
        _sample(pipe, steps=3)
    with ev.trace(pipe, steps=[1]) as one:
        _sample(pipe, steps=3)
    assert one.steps == [1] and one.guidance("cfg").shape == (1, 8, 8)
    torch.testing.assert_close(one.guidance("cfg"), full.guidance("cfg", steps=[1]))
    assert one.nbytes == one.estimate_bytes(num_steps=3)
    with pytest.raises(ValueError, match="step 0 was not recorded"):
        one.guidance("cfg", steps=[0])
    hooks = len(pipe.unet._forward_hooks)
    with ev.trace(pipe, quantities=["energies"]) as off:
        assert len(pipe.unet._forward_hooks) == hooks + 1  # only the step hook: no guidance hook
        _sample(pipe, steps=1)
    assert "guidance" not in off.record.stacked()
    with pytest.raises(ValueError, match="add 'guidance' to quantities="):
        off.guidance("cfg")


def test_save_load_round_trip_and_older_or_newer_formats(pipe, tmp_path):
    from safetensors import safe_open
    from safetensors.torch import save_file

    from ebca_viz.tracing.files import FORMAT, TraceFileError

    with ev.trace(pipe) as tr, ev.smoothed_energy_guidance(pipe, ev.SEGConfig(**SEG_CFG)):
        _sample(pipe, steps=2)
    p = tmp_path / "g.safetensors"
    tr.save(p)
    tr2 = ev.load_trace(p)
    assert FORMAT == "ebca_viz.trace/2" and tr2.latent_hw == (8, 8) and tr2.guidance_kinds == ["cfg", "seg"]
    for k in ("cfg", "seg"):
        assert torch.equal(tr2.guidance(k), tr.guidance(k))
    assert tr2.nbytes == tr.nbytes

    with safe_open(str(p), framework="pt") as f:
        meta = json.loads(f.metadata()["ebca_viz.trace"])
        tensors = {k: f.get_tensor(k) for k in f.keys()}

    def write(name, m, t):
        q = tmp_path / name
        save_file(t, str(q), metadata={"ebca_viz.trace": json.dumps(m)})
        return q

    # a format-1 file (written before the guidance maps) still loads; it has no guidance map
    old = dict(meta, format="ebca_viz.trace/1", quantities=[q for q in meta["quantities"] if q != "guidance"])
    old.pop("latent_hw")
    t1 = ev.load_trace(write("v1.safetensors", old, {k: v for k, v in tensors.items() if k != "guidance"}))
    torch.testing.assert_close(t1.energies(), tr.energies(), equal_nan=True)
    with pytest.raises(ValueError, match="add 'guidance' to quantities="):
        t1.guidance("cfg")
    with pytest.raises(TraceFileError, match="ebca_viz.trace/1 file holds no 'guidance' tensor"):
        ev.load_trace(write("v1g.safetensors", old, tensors))
    with pytest.raises(TraceFileError, match="unsupported trace format 'ebca_viz.trace/3'.*newer ebca_viz"):
        ev.load_trace(write("v3.safetensors", dict(meta, format="ebca_viz.trace/3"), tensors))
    with pytest.raises(TraceFileError, match="lacks \\['latent_hw'\\]"):
        ev.load_trace(write("v2nohw.safetensors", old | {"format": FORMAT}, tensors))
    with pytest.raises(TraceFileError, match="'guidance' maps are \\(8, 8\\), the header's latent_hw is \\(4, 4\\)"):
        ev.load_trace(write("v2hw.safetensors", dict(meta, latent_hw=[4, 4]), tensors))


def test_plot_guidance_maps_colourbar_line_and_text_size(pipe):
    from ebca_viz import plots
    from ebca_viz.notebook import MIN_DISPLAY_PT, text_audit

    with ev.trace(pipe) as tr, ev.smoothed_energy_guidance(pipe, ev.SEGConfig(**SEG_CFG)):
        out = pipe("a red circle", num_inference_steps=3, guidance_scale=W, generator=torch.Generator().manual_seed(0))
    img = out.images[0]
    fig = plots.plot_guidance(tr, "seg", steps=2, sample=img)
    audit = text_audit(fig)
    assert audit.min_pt >= MIN_DISPLAY_PT and audit.width_px <= 850
    maps = [a for a in fig.axes if a.images and a.images[0].get_cmap().name == "magma"]
    g = tr.guidance("seg").numpy()
    f = img.width // 8
    assert [a.get_title() for a in maps] == [f"step 0 (t={tr.step_timesteps[0]:.0f})", f"step 2 (t={tr.step_timesteps[2]:.0f})"]
    for a, i in zip(maps, (0, 2)):  # nearest-neighbour upscale to the image, one shared scale from 0
        arr = a.images[0].get_array()
        assert arr.shape == (8 * f, 8 * f) and (arr[::f, ::f] == g[i]).all() and (arr[f - 1 :: f, f - 1 :: f] == g[i]).all()
        assert a.images[0].get_clim() == (0.0, pytest.approx(float(max(g[0].max(), g[2].max()))))
    cbar = [a for a in fig.axes if "eps" in a.get_ylabel() or "\u03b5_blur" in a.get_ylabel()]
    assert len(cbar) == 1
    line = [a for a in fig.axes if a.get_xlabel() == plots.TRACE_STEP_LABEL][0]
    seg_line = [ln for ln in line.get_lines() if ln.get_label() == "SEG"][0]
    assert seg_line.get_ydata() == pytest.approx(g.reshape(3, -1).mean(1))
    assert {ln.get_label() for ln in line.get_lines()} >= {"CFG", "SEG", "steps mapped above"}
    plots.figure_png(fig)  # draws
    with pytest.raises(ValueError, match="step 7 was not recorded"):
        plots.plot_guidance(tr, "cfg", steps=[7])
    with ev.trace(pipe) as van:
        _sample(pipe, steps=1, guidance_scale=1.0)
    with pytest.raises(ValueError, match="no 'cfg' guidance map"):
        plots.plot_guidance(van, "cfg")
