"""Per-update energies, the step-size sweep and the energy figures (ebca_viz.energy_steps / plots)."""
import sys

import numpy as np
import pytest
import torch

from ebca_viz import energy as E
from ebca_viz import plots as EP
from ebca_viz import energy_steps as ES
from ebca_viz.config import EBCAConfig
from ebca_viz.ebca import energy_attention
from ebca_viz import trace

from energy_layers import random_layer  # noqa: E402


def _layer(B=2, **kw):
    return random_layer(B=B, **kw)


def _posterior(q, c, w_k, H, beta):
    return E.posterior_energy(q, E.split_heads(c @ w_k.T, H), beta)


def test_first_order_change_is_the_autograd_directional_derivative():
    q, c, w_k, beta, H = _layer()
    k = E.split_heads(c @ w_k.T, H)
    d_c = E.context_update(E.attention_scores(q, k, beta), q, k, w_k, 0.3, 0.3)
    c_ = c.clone().requires_grad_(True)
    kk = E.split_heads(c_ @ w_k.T, H)
    parts = [E.context_energy(q, kk, beta), E.prior_energy(E.merge_heads(kk))]
    fo = ES.first_order_change(q, c, d_c, w_k, H, beta)
    for i, e in enumerate(parts):
        (g,) = torch.autograd.grad(e.sum(), c_, retain_graph=True)
        torch.testing.assert_close(fo[i], (g * d_c).sum((-1, -2)))
    torch.testing.assert_close(fo[2], fo[0] + fo[1])


def test_sweep_changes_equal_direct_evaluation_and_follow_first_order_at_small_steps():
    q, c, w_k, beta, H = _layer(seed=1)
    k = E.split_heads(c @ w_k.T, H)
    d_c = E.context_update(E.attention_scores(q, k, beta), q, k, w_k, 0.5, 0.5)
    scales = [1e-4, 0.1, 1.0, 7.0]
    sw = ES.sweep_changes(q, c, d_c, w_k, H, beta, scales)  # (3, B, G)
    assert sw.shape == (3, 2, 4)
    for j, s in enumerate(scales):
        direct = _posterior(q, c + s * d_c, w_k, H, beta) - _posterior(q, c, w_k, H, beta)
        torch.testing.assert_close(sw[2, :, j], direct)
    fo = ES.first_order_change(q, c, d_c, w_k, H, beta)[2]
    assert torch.all(fo < 0)  # this update is a descent direction of the posterior
    ratio = sw[2, :, 0] / (1e-4 * fo)
    assert torch.all((ratio - 1).abs() < 1e-2)  # linearisation holds at a tiny step


def test_recorder_matches_the_trace_and_the_run(pipe):
    rec = ES.UpdateRecorder(scales=[0.01, 1.0, 50.0])
    g = torch.Generator().manual_seed(0)
    with trace(pipe, quantities=["energies"]) as tr, energy_attention(pipe, EBCAConfig(gamma_attn=0.05, gamma_norm=0.05)) as ctl:
        ctl.observers.append(rec)
        pipe(["a red circle", "a blue square"], num_inference_steps=2, guidance_scale=3.0, generator=g)
    r = rec.record()
    S, L = len(tr.steps), len(tr.layers)
    assert r.before["posterior"].shape == (S, L, 2) and r.sweep["posterior"].shape == (S, L, 2, 3)
    for kind in ES.KINDS:  # same energies as the recorder in ebca_viz.trace (fp32 there)
        np.testing.assert_allclose(r.before[kind], np.moveaxis(tr.energies(kind, "before", image=None).numpy(), 0, -1),
                                   rtol=1e-4, atol=1e-3)
        np.testing.assert_allclose(r.after[kind], np.moveaxis(tr.energies(kind, "after", image=None).numpy(), 0, -1),
                                   rtol=1e-4, atol=1e-3)
    # the run's own step is scale 1; the first layer attends to the prompt context itself
    np.testing.assert_allclose(r.sweep["posterior"][..., r.scale_index(1.0)], r.change(), atol=1e-9)
    np.testing.assert_allclose(r.before["posterior"][:, 0], r.prompt["posterior"][:, 0], atol=1e-9)
    assert np.allclose(r.gammas, [[0.05, 0.05]] * S)
    rates = r.sweep_rates()
    assert [x.n for x in rates] == [S * L * 2] * 3
    assert rates[0].p == 1.0  # a small step always descends
    js = r.to_json()
    assert js["updates"] == S * L * 2 and js["posterior_lowered"]["n"] == S * L * 2
    with pytest.raises(ValueError, match="scale"):
        r.scale_index(0.5)


def test_recorder_errors():
    with pytest.raises(ValueError, match="scales"):
        ES.UpdateRecorder(scales=[0.0, 1.0])
    with pytest.raises(ValueError, match="no context update"):
        ES.UpdateRecorder().record()


def _record(S=4, L=3, B=5, G=4, seed=0):
    rng = np.random.default_rng(seed)
    before = {k: rng.normal(size=(S, L, B)) for k in ES.KINDS}
    dctx, dpri = -np.abs(rng.normal(size=(S, L, B))), rng.normal(size=(S, L, B))
    after = {"context": before["context"] + dctx, "prior": before["prior"] + dpri}
    before["posterior"] = before["context"] + before["prior"]
    after["posterior"] = after["context"] + after["prior"]
    return before, after


def test_update_counts_and_energy_terms_figure():
    before, after = _record()
    cnt = EP.update_counts(before, after)
    post = (after["posterior"] - before["posterior"]).ravel()
    assert cnt["context_fell"].k == 60 and cnt["context_fell"].n == 60
    assert cnt["posterior_fell"].k == int((post < 0).sum())
    assert cnt["prior_rose"].k == int(((after["prior"] - before["prior"]) > 0).sum())
    n_before = len(getattr(sys.modules.get("matplotlib.pyplot"), "get_fignums", lambda: [])())
    fig = EP.plot_energy_terms(before, after, reference=before, layer_names=["a", "b", "c"], title="t")
    assert len(fig.axes) == 3 and "fell in" in fig._suptitle.get_text()
    assert len(EP.plot_energy_terms(before, after).axes) == 2
    assert len(getattr(sys.modules.get("matplotlib.pyplot"), "get_fignums", lambda: [])()) == n_before
    with pytest.raises(ValueError, match="before must be a dict"):
        EP.plot_energy_terms(before["context"], after)
    with pytest.raises(ValueError, match="reference must have the shape"):
        EP.plot_energy_terms(before, after, reference={k: v[:2] for k, v in before.items()})


def test_descent_map_and_step_size_figures():
    before, after = _record()
    ch = after["posterior"] - before["posterior"]
    ch[0, 1] = np.nan  # a layer that did not update at step 0
    fig = EP.plot_descent_map(ch, layer_names=["a", "b", "c"], steps=[0, 1, 2, 3])
    assert len(fig.axes) == 4  # heatmap, colourbar, per layer, per step
    with pytest.raises(ValueError, match="change must be"):
        EP.plot_descent_map(np.zeros(3))
    S, L, B = ch.shape
    g = np.array([0.01, 0.1, 0.3, 1.0])
    fo = -np.ones((S, L, B))
    sweep = fo[..., None] * g / 0.3 + (g / 0.3) ** 2 * 0.5  # descends, then overshoots
    fig = EP.plot_step_size(g, sweep, fo, 0.3, layer_names=["a", "b", "c"], marks={"tuned": 0.3})
    assert len(fig.axes) == 3
    assert "0.3: 100%" in fig.axes[2].get_title()  # -1 + 0.5 < 0 at the run's gamma: every update lowered
    with pytest.raises(ValueError, match="run_gamma"):
        EP.plot_step_size(g, sweep, fo, 0.0)
    with pytest.raises(ValueError, match="first_order"):
        EP.plot_step_size(g, sweep, fo[0], 0.3)


def test_demo_plot_energy_is_a_figure_from_traces(pipe):
    from ebca_viz.demo import plot_energy

    runs = []
    for ga in (0.0, 0.05):
        g = torch.Generator().manual_seed(0)
        with trace(pipe, quantities=["energies"]) as tr, energy_attention(pipe, EBCAConfig(gamma_attn=ga, gamma_norm=ga)):
            pipe("a red circle", num_inference_steps=1, guidance_scale=3.0, generator=g)
        runs.append(tr)
    fig = plot_energy(*runs)
    assert len(fig.axes) == 3 and "E(K)" in fig._suptitle.get_text()
