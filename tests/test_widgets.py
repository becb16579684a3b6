"""The panel's sampling function (no widgets) and the panel wiring."""
import math

import pytest
import torch

from ebca_viz.widgets import (
    Comparison,
    EditSpec,
    EnergyPanel,
    PanelSettings,
    VanillaCache,
    parse_token_weights,
    sample_comparison,
)


def _procs(pipe):
    return {k: type(v) for k, v in pipe.unet.attn_processors.items()}


def test_parse_token_weights():
    assert parse_token_weights("5:2.5, 3:1.5") == ([5, 3], [2.5, 1.5])
    assert parse_token_weights({2: 2}) == ([2], [2.0])
    assert parse_token_weights("") == ([], [])
    with pytest.raises(ValueError, match="index:weight"):
        parse_token_weights("5=2")
    with pytest.raises(TypeError):
        parse_token_weights(3)


def test_settings_validation_names_the_field():
    with pytest.raises(ValueError, match="prompt is empty"):
        PanelSettings(prompt=" ").check()
    with pytest.raises(ValueError, match="steps"):
        PanelSettings(steps=0).check()
    with pytest.raises(ValueError, match="method"):
        PanelSettings(method="magic").check()
    with pytest.raises(ValueError, match="gamma_attn"):
        PanelSettings(gamma_attn=-1.0).ebca_config()
    with pytest.raises(ValueError, match="denominator"):
        PanelSettings(edits=[EditSpec(prompt="x", alpha=1.0, direction=-1, start=0.0)]).ebca_config()


def test_sample_comparison_ebca_and_cache(pipe):
    cache = VanillaCache()
    seen = []
    s = PanelSettings(prompt="a red circle", steps=2, token_weights="3:2.0",
                      edits=[EditSpec(prompt="blue", alpha=0.5, start=0.0, gamma_attn=1e-3, gamma_norm=1e-3)])
    r = sample_comparison(pipe, s, model="tiny", cache=cache, on_step=lambda d, t: seen.append((d, t)))
    assert isinstance(r, Comparison) and not r.vanilla_cached
    assert seen == [(1, 4), (2, 4), (3, 4), (4, 4)]
    assert r.vanilla.image.size == r.energy.image.size
    b, a = r.energy.trace.energies(when="before"), r.energy.trace.energies(when="after")
    assert b.shape == (2, len(r.energy.trace.layers))
    assert not torch.equal(b, a)  # EBCU moved the context
    vb, va = r.vanilla.trace.energies(when="before"), r.vanilla.trace.energies(when="after")
    assert torch.equal(vb, va)  # vanilla: nothing updated
    for f in (r.images_figure(), r.energy_figure(), r.maps_figure()):
        assert f.axes
    # same (model, prompt, seed, steps): the vanilla run comes from the cache
    seen.clear()
    r2 = sample_comparison(pipe, s, model="tiny", cache=cache, on_step=lambda d, t: seen.append((d, t)), gamma_attn=0.02)
    assert r2.vanilla_cached and r2.vanilla is r.vanilla and cache.hits == 1
    assert seen == [(1, 2), (2, 2)]
    # another seed misses
    r3 = sample_comparison(pipe, s, model="tiny", cache=cache, seed=1)
    assert not r3.vanilla_cached and len(cache) == 2


def test_sample_comparison_seg(pipe):
    r = sample_comparison(pipe, PanelSettings(prompt="a red circle", steps=2, method="seg", seg_sigma=math.inf,
                                              seg_scale=2.0), model="tiny")
    e = r.energy.trace.seg_energies("blurred")
    assert e.shape[0] == 2 and torch.isfinite(e).all()
    assert r.energy_figure().axes


def test_sample_comparison_restores_processors_on_error(pipe):
    before = _procs(pipe)
    with pytest.raises(ValueError, match="token_indices"):
        sample_comparison(pipe, PanelSettings(prompt="a cat", steps=1, token_weights="99:2"), model="tiny")
    assert _procs(pipe) == before


def test_panel_builds_with_stable_classes(tiny_pipe):
    p = EnergyPanel(pipe=tiny_pipe, model="tiny", settings=PanelSettings(steps=2))
    assert "ebca-sample" in p.button._dom_classes and "ebca-panel" in p.widget._dom_classes
    for w, c in ((p.img_vanilla, "ebca-image-vanilla"), (p.img_energy, "ebca-image-energy"), (p.img_plot, "ebca-plot"),
                 (p.progress, "ebca-progress"), (p.error, "ebca-error"), (p.w_seed, "ebca-seed"),
                 (p.w_ga, "ebca-gamma-attn")):
        assert c in w._dom_classes
    s = p.read_settings()
    assert s.steps == 2 and s.method == "ebca" and len(s.edits) == 2


def test_panel_button_runs_and_caches(pipe):
    p = EnergyPanel(pipe=pipe, model="tiny", settings=PanelSettings(prompt="a red circle", steps=2))
    p.button.click()
    assert p.last_error is None, p.error.value
    assert p.runs == 1 and p.img_vanilla.value[:4] == b"\x89PNG" and p.img_plot.value[:4] == b"\x89PNG"
    assert p.progress.value == p.progress.max == 4 and p.progress.bar_style == "success"
    first = p.img_energy.value
    p.w_ga.value = 0.08
    p.button.click()
    assert p.runs == 2 and p.last.vanilla_cached and p.img_energy.value != first
    assert "cached" in p.status.value
    p.w_method.value = "seg"
    assert p.method_tabs.selected_index == 1
    p.w_sigma_inf.value = True
    p.button.click()
    assert p.last_error is None and p.last.settings.method == "seg" and math.isinf(p.last.settings.seg_sigma)


def test_panel_shows_errors_and_restores_processors(pipe):
    before = _procs(pipe)
    p = EnergyPanel(pipe=pipe, model="tiny", settings=PanelSettings(prompt="a cat", steps=1))
    p.w_tokens.value = "99:2.5"  # out of range: raised inside sampling, by the EBCA pre-hook
    assert p.sample() is None
    assert isinstance(p.last_error, ValueError) and "token_indices" in p.error.value and "Error" in p.error.value
    assert p.progress.bar_style == "danger" and not p.button.disabled
    assert _procs(pipe) == before
    p.w_tokens.value = "oops"  # rejected before sampling
    p.button.click()
    assert "index:weight" in p.error.value
    p.w_tokens.value = ""
    p.w_prompt.value = ""
    p.button.click()
    assert "prompt is empty" in p.error.value
    p.w_prompt.value = "a cat"
    p.button.click()
    assert p.error.value == "" and p.runs == 1
    assert _procs(pipe) == before
