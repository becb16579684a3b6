"""Recorder (ebca_viz.trace): values against direct computation, restoration, budget, filters, persistence."""

import pytest
import torch

import ebca_viz as ev
from ebca_viz import energy as E
from ebca_viz.attach import cross_attention_keys, self_attention_keys
from ebca_viz.models import tiny_unet
from ebca_viz.tracing import TraceBudgetError, self_attention_energy
from ebca_viz.tracing.processor import RecordingCrossAttnProcessor

from conftest import unet_inputs

PROMPT = "a red circle and a blue square"


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    """Tiny tensors: one intra-op thread is faster than two on a shared CPU (restored afterwards)."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


def _sample(pipe, prompt=PROMPT, steps=3, seed=0, **kw):
    g = torch.Generator().manual_seed(seed)
    return pipe(prompt, num_inference_steps=steps, generator=g, output_type="pt", **kw).images


def _unet(unet, x, c, t=500):
    with torch.no_grad():
        return unet(x, t, encoder_hidden_states=c).sample


def _snapshot(unet):
    return dict(unet.attn_processors)


def _assert_restored(unet, before, te=None):
    after = unet.attn_processors
    assert after.keys() == before.keys()
    assert all(after[k] is before[k] for k in before), "processors not restored (identity)"
    assert not unet._forward_pre_hooks and not unet._forward_hooks
    if te is not None:
        assert not te._forward_hooks


class Capture:
    """A second observer of an EBCA controller: keeps every event's tensors."""

    def __init__(self):
        self.events = []

    def on_cross_attention(self, e):
        self.events.append(
            dict(name=e.name, layer=e.layer, q=e.query.detach().clone(), k=e.key.detach().clone(),
                 cin=e.context_in.detach().clone(), cout=e.context_out.detach().clone(), attn=e.attn,
                 n=e.n_uncond)
        )


# ---------------------------------------------------------------------------------------------
def test_plain_trace_is_exact_records_maps_and_restores(pipe):
    before = _snapshot(pipe.unet)
    ref = _sample(pipe)
    with ev.trace(pipe, quantities="all") as tr:
        assert all(isinstance(pipe.unet.attn_processors[k], RecordingCrossAttnProcessor) for k in tr.layers)
        out = _sample(pipe)
    torch.testing.assert_close(out, ref, atol=1e-6, rtol=1e-5)  # recording processor = diffusers attention
    _assert_restored(pipe.unet, before, pipe.text_encoder)
    assert tr.mode == "plain" and tr.layers == cross_attention_keys(pipe.unet) == tr.execution_order
    assert tr.steps == [0, 1, 2] and tr.step_timesteps == [float(t) for t in pipe.scheduler.timesteps]
    assert tr.tokens[:8] == ["<|startoftext|>", "a", "red", "circle", "and", "a", "blue", "square"]
    assert tr.grids[tr.layers[0]] == (8, 8) and tr.grids[tr.layers[2]] == (4, 4) and tr.map_grid == (8, 8)
    L, N = len(tr.layers), 77
    # maps: softmax over tokens per pixel -> every aggregation sums to 1 over tokens at each pixel
    for agg, shape in (("mean", (N, 8, 8)), ("layer", (L, N, 8, 8)), ("step", (3, N, 8, 8)), (None, (3, L, N, 8, 8))):
        m = tr.maps(aggregate=agg)
        assert m.shape == shape
        torch.testing.assert_close(m.sum(-3), torch.ones_like(m.sum(-3)), atol=2e-3, rtol=0)
    torch.testing.assert_close(tr.maps(aggregate="sum").sum(0), torch.full((8, 8), 3.0 * L), atol=2e-3, rtol=0)
    sp = tr.maps(token=["red", 3], normalize="spatial")
    assert sp.shape == (2, 8, 8)
    torch.testing.assert_close(sp.sum((-1, -2)), torch.ones(2))
    torch.testing.assert_close(tr.maps(token="circle"), tr.maps()[3:4])
    # the three aggregations agree with the full record
    full = tr.maps(aggregate=None)
    torch.testing.assert_close(tr.maps(), full.mean((0, 1)), atol=2e-3, rtol=0)
    torch.testing.assert_close(tr.maps(layers="up"), full[:, -4:].mean((0, 1)), atol=2e-3, rtol=0)
    # no EBCU: before == after, drift 0, context is the prompt embedding at every layer
    torch.testing.assert_close(tr.energies(when="before"), tr.energies(when="after"))
    assert tr.energies().shape == (3, L) and torch.isfinite(tr.energies()).all()
    assert tr.drift().abs().max() == 0
    torch.testing.assert_close(tr.contexts(), tr.prompt_embeds()[:, None].expand(-1, L, -1, -1))


def test_plain_energies_equal_direct_computation():
    """Energies recorded by the trace's own processor = ebca_viz.energy on the captured q, k."""
    unet = tiny_unet(seed=1)
    x, c = unet_inputs(unet, batch=2)
    with ev.trace(unet, cfg=True, alpha=0.5) as plain:
        ref = _unet(unet, x, c)
    cap = Capture()
    with ev.energy_attention(unet, ev.EBCAConfig()) as ctl:  # zero strength: identical attention
        ctl.observers.append(cap)
        torch.testing.assert_close(_unet(unet, x, c), ref, atol=1e-5, rtol=1e-5)
    for li, e in enumerate(cap.events):
        q, k, s = e["q"][1:], e["k"][1:], e["attn"].scale
        want = torch.stack([E.query_energy(q, k, s, 0.5), E.context_energy(q, k, s, 0.5),
                            E.prior_energy(E.merge_heads(k)), E.posterior_energy(q, k, s, 0.5)])
        for j, kind in enumerate(("query", "context", "prior", "posterior")):
            torch.testing.assert_close(plain.energies(kind, "before")[0, li], want[j, 0], rtol=1e-5, atol=1e-4)


def test_ebcu_energies_and_cascade_match_the_controller():
    unet = tiny_unet(seed=2)
    x, c = unet_inputs(unet, batch=2)
    before = _snapshot(unet)
    cap = Capture()
    with ev.energy_attention(unet, gamma_attn=0.2, gamma_norm=0.1) as ctl:
        ctl.observers.append(cap)
        with ev.trace(unet, quantities="all") as tr:
            _unet(unet, x, c, 500)
            _unet(unet, x, c, 400)
        assert tr.recorder not in ctl.observers and cap in ctl.observers
    _assert_restored(unet, before)
    assert tr.mode == "ebca"
    L = len(tr.layers)
    ctx, norms_in, norms_out = tr.contexts(), tr.context_norms("before"), tr.context_norms("after")
    for step in range(2):
        evs = cap.events[step * L : (step + 1) * L]
        torch.testing.assert_close(tr.prompt_embeds()[step].float(), c[1].half().float())  # cond row, fp16 store
        for n, e in enumerate(evs):
            cond_q, cond_k = e["q"][1:], e["k"][1:]
            k_after = E.split_heads(e["attn"].to_k(e["cout"][1:]), e["attn"].heads)
            s = e["attn"].scale
            torch.testing.assert_close(tr.energies("posterior", "before")[step, n], E.posterior_energy(cond_q, cond_k, s)[0], rtol=1e-5, atol=1e-4)
            torch.testing.assert_close(tr.energies("posterior", "after")[step, n], E.posterior_energy(cond_q, k_after, s)[0], rtol=1e-5, atol=1e-4)
            torch.testing.assert_close(tr.energies("query", "after")[step, n], E.query_energy(cond_q, k_after, s)[0], rtol=1e-5, atol=1e-4)
            torch.testing.assert_close(ctx[step, n].float(), e["cout"][1].half().float())
            torch.testing.assert_close(norms_out[step, n], e["cout"][1].norm(dim=-1))
            torch.testing.assert_close(tr.drift()[step, n], (e["cout"][1] - c[1]).norm(dim=-1))
            if n + 1 < L:  # EBCU cascade: context_out of layer n is context_in of layer n+1
                torch.testing.assert_close(e["cout"], evs[n + 1]["cin"], atol=0, rtol=0)
                torch.testing.assert_close(norms_in[step, n + 1], norms_out[step, n], atol=0, rtol=0)
        assert tr.drift()[step, -1].max() > tr.drift()[step, 0].max() > 0  # drift accumulates down the cascade


def test_posterior_energy_decreases_for_a_small_step():
    """Paper prior + gamma_attn / gamma_norm = beta / H: dK = -g grad(E(K;Q) + E(K)), so the
    mapped update C + dK W_k (a descent direction, W_k W_k^T is PSD) lowers the posterior at every layer."""
    unet = tiny_unet(seed=3, block_out_channels=(32, 32), attention_head_dim=4)  # 4 heads of 8 everywhere
    heads = {ev.attach.module_of(unet, k).heads for k in cross_attention_keys(unet)}
    assert heads == {4}
    g, beta = 2e-3, 8 ** -0.5
    x, c = unet_inputs(unet, batch=2)
    cfg = ev.EBCAConfig.paper(gamma_attn=g * beta / 4, gamma_norm=g)
    with ev.trace(unet) as tr:
        with ev.energy_attention(unet, cfg):
            for t in (800, 500, 200):
                _unet(unet, x, c, t)
    d = tr.energies("posterior", "delta")
    assert d.shape == (3, len(tr.layers))
    assert (d < 0).all(), d


def test_nesting_in_both_orders_hands_over_and_restores(pipe):
    unet = pipe.unet
    before = _snapshot(unet)
    cfg = ev.EBCAConfig(gamma_attn=0.05, gamma_norm=0.05)
    with ev.trace(pipe, num_steps=2) as outer:  # energy processors installed inside the trace
        _sample(pipe, steps=2)  # plain
        with ev.energy_attention(pipe, cfg):
            assert ev.find_controller(unet) is not None
            ebcu = _sample(pipe, steps=2)
        assert all(isinstance(unet.attn_processors[k], RecordingCrossAttnProcessor) for k in outer.layers)
        _sample(pipe, steps=2)  # plain again
    _assert_restored(unet, before, pipe.text_encoder)
    assert outer.steps == list(range(6)) and outer.run_starts == [0, 2, 4]
    drift = outer.drift().amax(dim=(1, 2))
    assert drift[:2].max() == 0 and drift[2:4].min() > 0 and drift[4:].max() == 0
    with ev.energy_attention(pipe, cfg) as ctl:  # trace inside the energy processors
        with ev.trace(pipe) as inner:
            assert inner.recorder in ctl.observers and find_recorders(unet) == []
            ebcu2 = _sample(pipe, steps=2)
        assert inner.recorder not in ctl.observers
    _assert_restored(unet, before, pipe.text_encoder)
    torch.testing.assert_close(ebcu2, ebcu)
    torch.testing.assert_close(inner.energies(when="after"), outer.energies(when="after")[2:4])
    torch.testing.assert_close(inner.maps(), outer.maps(steps=[2, 3]), atol=1e-6, rtol=1e-5)


def find_recorders(unet):
    return [k for k, p in unet.attn_processors.items() if isinstance(p, RecordingCrossAttnProcessor)]


def test_state_restored_after_exceptions(pipe):
    unet = pipe.unet
    before = _snapshot(unet)
    with pytest.raises(KeyError):
        with ev.trace(pipe):
            _sample(pipe, steps=1)
            raise KeyError("user error inside the block")
    _assert_restored(unet, before, pipe.text_encoder)
    with pytest.raises(KeyError):
        with ev.trace(pipe):
            with ev.energy_attention(pipe, gamma_attn=0.1):
                raise KeyError("inside both")
    _assert_restored(unet, before, pipe.text_encoder)
    with pytest.raises(TraceBudgetError):  # raised inside the UNet call
        with ev.trace(pipe, budget_bytes=1000):
            _sample(pipe, steps=1)
    _assert_restored(unet, before, pipe.text_encoder)
    with ev.trace(pipe) as tr:
        pass
    with pytest.raises(RuntimeError, match="already been used"):
        tr.start()
    with ev.trace(pipe):
        with pytest.raises(RuntimeError, match="another trace"):
            ev.trace(pipe).start()
    _assert_restored(unet, before, pipe.text_encoder)


def test_save_load_round_trip(pipe, tmp_path):
    with ev.trace(pipe, quantities="all") as tr:
        with ev.energy_attention(pipe, gamma_attn=0.05, gamma_norm=0.05):
            _sample(pipe, steps=2)
    path = tmp_path / "t.safetensors"
    tr.save(path)
    assert path.read_bytes()[8:9] == b"{"  # safetensors: 8-byte length + JSON header, no pickle
    lo = ev.load_trace(path)
    for attr in ("layers", "steps", "step_timesteps", "tokens", "token_labels", "grids", "map_grid", "execution_order",
                 "quantities", "nbytes", "dropped", "mode", "dtype"):
        assert getattr(lo, attr) == getattr(tr, attr), attr
    for f in (lambda t: t.maps(), lambda t: t.maps(aggregate=None), lambda t: t.maps(aggregate="step", image=None),
              lambda t: t.energies("context", "delta"), lambda t: t.context_norms("before"), lambda t: t.drift(),
              lambda t: t.contexts(), lambda t: t.prompt_embeds(), lambda t: t.maps(token="blue", layers="down")):
        torch.testing.assert_close(f(lo), f(tr), atol=0, rtol=0, equal_nan=True)
    with pytest.raises(RuntimeError):
        lo.start()
    lo.save(tmp_path / "again.safetensors")  # a loaded trace saves to the same content
    again = ev.load_trace(tmp_path / "again.safetensors")
    torch.testing.assert_close(again.maps(aggregate=None), tr.maps(aggregate=None), atol=0, rtol=0)
    assert again.token_labels == tr.token_labels and again.steps == tr.steps
    with pytest.raises(ValueError, match="not an ebca_viz trace"):
        from safetensors.torch import save_file

        save_file({"x": torch.zeros(1)}, str(tmp_path / "other.safetensors"))
        ev.load_trace(tmp_path / "other.safetensors")


def test_budget_error_before_allocation_and_estimate(pipe):
    est = ev.estimate_bytes(pipe, num_steps=3, quantities="all")
    tr = ev.trace(pipe, quantities="all", budget_bytes=est - 1)
    assert tr.estimate_bytes(num_steps=3) == est
    with pytest.raises(TraceBudgetError, match="budget_bytes=") as err:
        with tr:
            _sample(pipe)
    assert "on_budget='drop'" in str(err.value) and "Nothing was allocated" in str(err.value)
    assert tr.nbytes == 0 and tr.steps == []
    with ev.trace(pipe, quantities="all", budget_bytes=est) as ok:  # exactly enough
        _sample(pipe)
    assert ok.nbytes == est and ok.steps == [0, 1, 2] and not ok.dropped
    stored = sum(v.numel() * v.element_size() for v in ok._stacked().values())
    assert stored == est  # the reservation is the real size
    # a bare UNet has no scheduler: no projection, the error comes at the step that would not fit
    unet = tiny_unet(seed=4)
    x, c = unet_inputs(unet, batch=1)
    one = ev.estimate_bytes(unet, num_steps=1, quantities=["energies"])
    with pytest.raises(TraceBudgetError, match="step 2"):
        with ev.trace(unet, quantities=["energies"], budget_bytes=2 * one) as tb:
            for t in (900, 500, 100):
                _unet(unet, x, c, t)
    assert tb.steps == [0, 1]


def test_budget_drop_keeps_a_prefix(pipe):
    per_step = ev.estimate_bytes(pipe, num_steps=1, quantities=["energies", "layer_maps"])
    with pytest.warns(UserWarning, match="held 2 of the 4 UNet calls"):
        with ev.trace(pipe, quantities=["energies", "layer_maps"], budget_bytes=int(2.5 * per_step),
                      on_budget="drop") as tr:
            _sample(pipe, steps=4)
    assert tr.steps == [0, 1]  # a step is kept whole or not at all: the longest complete prefix
    assert [(d["step"], d["item"]) for d in tr.dropped] == [(2, "step (energies, layer_maps)"),
                                                            (3, "step (energies, layer_maps)")]
    assert tr.nbytes <= 2.5 * per_step
    assert torch.isfinite(tr.energies()).all()
    full = tr.maps(aggregate=None)
    assert full.shape[0] == 2 and full.sum() > 0


def test_filters_and_bad_input(pipe):
    keys = cross_attention_keys(pipe.unet)
    with ev.trace(pipe, layers=["down", "up_blocks.1.*"], steps=[(0.0, 0.5), -1], quantities=["maps", "energies"]) as tr:
        _sample(pipe, steps=4)
    assert tr.layers == [k for k in keys if k.startswith(("down", "up_blocks.1."))]
    assert tr.steps == [0, 1, 3]
    assert tr.energies().shape == (3, 4)
    with pytest.raises(ValueError, match="context_norms"):
        tr.drift()
    torch.testing.assert_close(tr.maps(layers="down"), tr.maps(aggregate="layer")[:2].mean(0))
    torch.testing.assert_close(tr.maps(steps=[0, 3]), tr.maps(aggregate="step")[[0, 2]].mean(0))
    with pytest.raises(ValueError, match="layer_maps"):  # a mean over some layers AND some steps
        tr.maps(layers="down", steps=[0])
    with pytest.raises(ValueError, match="not recorded"):
        tr.maps(steps=[2])
    with ev.trace(pipe, layers=[2, "mid"], steps=range(1, 3), quantities="maps") as tr2:
        _sample(pipe, steps=4)
    assert tr2.layers == [keys[2]] and tr2.steps == [1, 2]
    with ev.trace(pipe, steps=0.5, layers=keys[0]) as tr3:
        _sample(pipe, steps=4)
    assert tr3.steps == [2] and tr3.layers == keys[:1]
    bad = [
        (dict(layers=["nonexistent.attn2.processor"]), ValueError, "layers"),
        (dict(layers=[99]), ValueError, "layers"),
        (dict(quantities=["maps", "attention"]), ValueError, "quantities"),
        (dict(budget_bytes=-5), ValueError, "budget_bytes"),
        (dict(budget_bytes="1GB"), TypeError, "budget_bytes"),
        (dict(on_budget="ignore"), ValueError, "on_budget"),
        (dict(map_grid=(0, 4)), ValueError, "map_grid"),
        (dict(steps=[1.5]), ValueError, "steps"),
        (dict(steps=[(0.6, 0.2)]), ValueError, "steps"),
        (dict(steps="all"), TypeError, "steps"),
        (dict(dtype=torch.int8), TypeError, "dtype"),
        (dict(num_steps=0), ValueError, "num_steps"),
    ]
    for kw, exc, word in bad:
        with pytest.raises(exc, match=word):
            ev.trace(pipe, **kw)
    with pytest.raises(TypeError, match="pipe must be"):
        ev.trace(object())
    with pytest.raises(ValueError, match="aggregate"):
        tr.maps(aggregate="median")
    with pytest.raises(ValueError, match="kind"):
        tr.energies(kind="free")
    with pytest.raises(ValueError, match="not in the prompt"):
        tr.maps(token="giraffe")
    with pytest.raises(ValueError, match="image"):
        tr.maps(image=5)
    unet = tiny_unet(seed=5)
    with pytest.raises(ValueError, match="num_steps"):  # fractions on a bare UNet need the run length
        with ev.trace(unet, steps=0.5):
            _unet(unet, *unet_inputs(unet, batch=1))


@pytest.mark.parametrize("guidance,convention", [(5.0, "published"), (1.0, "published"), (5.0, "paper")])
def test_seg_energies_blurred_vs_reference(pipe, guidance, convention):
    unet = pipe.unet
    before = _snapshot(unet)
    seen = []

    class SegCap:
        def on_seg_attention(self, ev):
            seen.append((ev.name, ev.query.clone(), ev.key.clone(), ev.rows, ev.attn.scale, ev.unblurred_query.clone()))

    with ev.trace(pipe) as plain:
        _sample(pipe, steps=2, guidance_scale=guidance)
    with ev.trace(pipe) as tr:
        cfg = ev.SEGConfig(scale=3.0, sigma=1.0, layers=["mid", "up"], convention=convention)
        with ev.smoothed_energy_guidance(pipe, cfg) as seg:
            seg.observers.append(SegCap())
            _sample(pipe, steps=2, guidance_scale=guidance)
    _assert_restored(unet, before, pipe.text_encoder)
    want_layers = [k for k in self_attention_keys(unet) if k.startswith(("mid", "up"))]
    assert tr.seg_layers == want_layers
    blur, ref = tr.seg_energies("blurred"), tr.seg_energies("reference")
    assert blur.shape == ref.shape == (2, len(want_layers)) and torch.isfinite(blur).all()
    assert (blur - ref).abs().min() > 0
    L = len(want_layers)
    for step in range(2):
        for i in range(L):
            name, q, k, rows, scale, unblurred = seen[step * L + i]
            b = rows.stop - rows.start
            assert name == want_layers[i] and b == 1
            torch.testing.assert_close(blur[step, i], self_attention_energy(q[rows], k[rows], scale)[0])
            # the reference: the conditional branch the published convention copies, or the unconditional
            # half (its queries before the blur) that the paper's convention blurs in place
            b2 = 2 if guidance > 1 else 1  # the caller's UNet batch
            assert rows == (slice(0, 1) if convention == "paper" else slice(b2, b2 + 1))
            qq, kk = (unblurred, k[rows]) if convention == "paper" else (q[b2 - 1 : b2], k[b2 - 1 : b2])
            direct = -torch.logsumexp(scale * qq @ kk.transpose(-1, -2), dim=-1).sum(-1).mean(1)
            torch.testing.assert_close(ref[step, i], direct[0], rtol=1e-5, atol=1e-4)
    if convention == "published":  # the conditional rows are those of the unguided run at the first step
        torch.testing.assert_close(tr.maps(steps=[0]), plain.maps(steps=[0]), atol=1e-5, rtol=1e-5)
    with ev.smoothed_energy_guidance(pipe, cfg):  # the other nesting order records the same
        with ev.trace(pipe) as tr2:
            _sample(pipe, steps=2, guidance_scale=guidance)
    _assert_restored(unet, before, pipe.text_encoder)
    torch.testing.assert_close(tr2.seg_energies("delta"), tr.seg_energies("delta"))
    torch.testing.assert_close(tr2.maps(aggregate="step"), tr.maps(aggregate="step"))
    torch.testing.assert_close(tr.maps().sum(0), torch.ones(8, 8), atol=2e-3, rtol=0)


def test_seg_reference_energy_paper_convention_is_the_unblurred_unconditional_half(pipe):
    """Issue 11: with the paper's convention and CFG, the reference is the unconditional half before
    its blur, computed here from the layer's input (a module pre-hook), independently of the processor."""
    from ebca_viz.attach import module_of
    from ebca_viz.energy import split_heads

    key = [k for k in self_attention_keys(pipe.unet) if k.startswith("mid")][0]
    attn = module_of(pipe.unet, key)
    inputs = []
    h = attn.register_forward_pre_hook(lambda m, args, kw: inputs.append((args[0] if args else kw["hidden_states"]).clone()),
                                       with_kwargs=True)
    try:
        with ev.trace(pipe) as tr:
            with ev.smoothed_energy_guidance(pipe, ev.SEGConfig(scale=3.0, sigma=1.0, layers=["mid"], convention="paper")):
                _sample(pipe, steps=2, guidance_scale=5.0)
    finally:
        h.remove()
    assert len(inputs) == 2 and inputs[0].shape[0] == 2  # [uncond; cond], no extra branch
    ref = tr.seg_energies("reference")
    for step, x in enumerate(inputs):
        x = x.flatten(2).transpose(1, 2) if x.ndim == 4 else x
        with torch.no_grad():
            q, k = split_heads(attn.to_q(x), attn.heads), split_heads(attn.to_k(x), attn.heads)
        e = self_attention_energy(q, k, attn.scale)  # (2,): uncond, cond
        assert (e[0] - e[1]).abs() > 1e-3  # the two halves differ, so the test tells them apart
        torch.testing.assert_close(ref[step, 0], e[0], rtol=1e-5, atol=1e-4)


def test_self_attention_energy_chunks():
    g = torch.Generator().manual_seed(0)
    q, k = torch.randn(2, 3, 50, 4, generator=g), torch.randn(2, 3, 50, 4, generator=g)
    direct = -torch.logsumexp(0.5 * q @ k.transpose(-1, -2), dim=-1).sum(-1).mean(1)
    torch.testing.assert_close(self_attention_energy(q, k, 0.5, max_elems=7 * 2 * 3 * 50), direct)


@pytest.mark.parametrize("guidance", [7.5, 1.0])
def test_batch_and_cfg(pipe, guidance):
    prompts = ["a red circle", "a blue square and a green triangle"]
    with ev.trace(pipe) as tr:
        _sample(pipe, prompts, steps=2, guidance_scale=guidance, num_images_per_prompt=2)
    assert tr.n_uncond == (4 if guidance > 1 else 0)
    assert [lab[1:4] for lab in tr.token_labels] == [["a", "red", "circle"]] * 2 + [["a", "blue", "square"]] * 2
    m = tr.maps(image=None)
    assert m.shape == (4, 77, 8, 8)
    torch.testing.assert_close(m.sum(1), torch.ones(4, 8, 8), atol=2e-3, rtol=0)
    assert tr.energies(image=None).shape == (4, 2, len(tr.layers))
    assert tr.nbytes == tr.estimate_bytes(num_steps=2, batch=4)
