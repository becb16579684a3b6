"""The panel's sampling function (no widgets) and the panel wiring."""
import math

import pytest
import torch

from ebca_viz.widgets import (
    Comparison,
    ControlRanges,
    EditSpec,
    EnergyPanel,
    PanelSettings,
    VanillaCache,
    detector_verdict,
    difference_image,
    parse_token_weights,
    plot_layer_energies,
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


def _panel(pipe, **kw):
    return EnergyPanel(pipe=pipe, model="tiny", settings=PanelSettings.for_model("tiny", **kw))


def test_control_ranges_follow_the_models_regime():
    from ebca_viz.shapes.regime import SD, SHAPES

    sh, sd = ControlRanges.for_model("shapes-world"), ControlRanges.for_model("sd15")
    # shapes world's tuned gammas (0.3) sit inside the slider, not past its end (the old sliders stopped at 0.1)
    assert sh.gamma_attn.lo == 0 and sh.gamma_attn.hi == 1.0 and sh.gamma_attn.hi >= 3 * SHAPES.gamma_attn
    assert sd.gamma_attn.hi == 0.1 and sd.gamma_norm.hi >= 3 * SD.gamma_norm
    # every documented default is on the slider's grid and inside its range
    for R, reg in ((sh, SHAPES), (sd, SD)):
        for rng, v in ((R.gamma_attn, reg.gamma_attn), (R.gamma_norm, reg.gamma_norm), (R.upweight, reg.upweight),
                       (R.edit_alpha, reg.edit_alpha), (R.edit_alpha, reg.negation_alpha),
                       (R.guidance_scale, reg.guidance), (R.seg_scale, reg.seg_scale), (R.seg_sigma, reg.seg_sigma),
                       (R.steps, reg.steps)):
            assert rng.refuse(v, reg.name) is None, (rng.name, v)
            assert abs(round(v / rng.step) * rng.step - v) < 1e-9 or rng.log, (rng.name, v, rng.step)
    assert sd.edit_gamma.refuse(4e-4, "sd15") is None and abs(round(4e-4 / sd.edit_gamma.step) * sd.edit_gamma.step - 4e-4) < 1e-12
    msg = sh.gamma_attn.refuse(5.0, "shapes-world")
    assert "gamma_attn" in msg and "[0.000, 1.000]" in msg and "shapes-world" in msg
    assert sh.gamma_attn.refuse(float("nan"), "x") and sh.seed.refuse(2.5, "x") and sh.seed.refuse("a", "x")
    with pytest.raises(ValueError, match="gamma_attn = 5 refused"):
        sh.check(PanelSettings(gamma_attn=5.0))


def test_panel_sliders_reach_the_regime_and_refuse_typed_values(tiny_pipe):
    p = _panel(tiny_pipe, steps=2)
    assert p.w_ga.value == 0.3 and p.w_ga.slider.max == 1.0 and p.w_ga.slider.readout is False
    p.w_ga.text.value = 5.0  # typed beyond the slider: refused, not clamped to 1.0
    assert p.w_ga.value == 0.3 and p.w_ga.text.value == 0.3
    assert "gamma_attn = 5 refused" in p.notice.value and "kept 0.300" in p.notice.value
    p.w_ga.text.value = -0.1
    assert p.w_ga.value == 0.3 and "gamma_attn = -0.1 refused" in p.notice.value
    p.w_ga.text.value = 1.0  # the end of the range is accepted
    assert p.w_ga.slider.value == 1.0
    p.w_ga.slider.value = 0.25  # the slider writes the text box
    assert p.w_ga.text.value == 0.25 and p.read_settings().gamma_attn == 0.25
    p.w_steps.text.value = 10_000
    assert p.w_steps.value == 2 and "steps = 10000 refused" in p.notice.value
    with pytest.raises(ValueError, match="gamma_norm = 3 refused"):  # initial settings beyond the ranges
        EnergyPanel(pipe=tiny_pipe, model="tiny", settings=PanelSettings(gamma_norm=3.0))
    # the SD regime has its own ranges
    q = EnergyPanel(pipe=tiny_pipe, model="sd15", settings=PanelSettings.for_model("sd15", steps=2))
    assert q.w_ga.slider.max == 0.1 and q.w_ga.value == 0.01 and q.w_gn.value == 0.02


def test_panel_token_chips(tiny_pipe):
    p = _panel(tiny_pipe, steps=2)
    assert p.prompt_tokens() == ["<sot>", "a", "red", "circle", "and", "a", "blue", "square", "<eot>"]
    assert [c.description for c in p.chips][:3] == ["0 <sot>", "1 a", "2 red"]
    assert p.chips[0].disabled and p.chips[8].disabled and not p.chips[2].disabled
    p.chips[2].value = True  # click "red"
    assert p.token_weights == {2: 1.5} and p.chips[2].description == "2 red  x1.5"
    assert "token_indices=[2], token_upweight=[1.5]" in p.token_summary.value
    p.w_upweight.value = 2.5
    p.chips[6].value = True
    assert p.token_weights == {2: 2.5, 6: 2.5} and p.chips[6].description.endswith("x2.5")
    s = p.read_settings()
    assert s.ebca_config().token_indices == [2, 6] and s.ebca_config().token_upweight == [2.5, 2.5]
    p.chips[2].value = False
    assert p.token_weights == {6: 2.5} and p.chips[2].description == "2 red"
    p.w_prompt.value = "a red circle"  # "blue" (6) is gone: dropped, and said so
    assert p.token_weights == {} and "token 6 is no longer a word" in p.notice.value
    assert [c.description for c in p.chips] == ["0 <sot>", "1 a", "2 red", "3 circle", "4 <eot>"]
    # initial settings' weights show as selected chips
    q = EnergyPanel(pipe=tiny_pipe, model="tiny", settings=PanelSettings.for_model("tiny", steps=2, token_weights="3:2"))
    assert q.chips[3].value and q.chips[3].description == "3 circle  x2" and q.w_upweight.value == 2.0


def test_panel_one_method_selector_and_placeholders(tiny_pipe):
    import ipywidgets as W

    p = _panel(tiny_pipe, steps=2)

    def walk(w):
        yield w
        for c in getattr(w, "children", ()):
            yield from walk(c)

    ws = list(walk(p.widget))
    assert sum(isinstance(w, W.ToggleButtons) and "ebca-method" in w._dom_classes for w in ws) == 1
    assert not any(isinstance(w, W.Tab) for w in ws)
    p.w_method.value = "seg"
    assert p.method_stack.selected_index == 1 and p.read_settings().method == "seg"
    # before the first run every image holds a PNG (a placeholder), none is empty
    imgs = [w for w in ws if isinstance(w, W.Image)]
    assert len(imgs) >= 6 and all(w.value[:4] == b"\x89PNG" for w in imgs)
    assert p.state == "empty" and "ebca-stale" not in p.results._dom_classes


def test_panel_runs_marks_stale_and_caches(pipe):
    p = EnergyPanel(pipe=pipe, model="tiny", settings=PanelSettings.for_model("tiny", prompt="a red circle", steps=2))
    seen = []
    orig = p._on_step
    p._on_step = lambda d, t: (seen.append((d, t, p.state, "ebca-stale" in p.results._dom_classes)), orig(d, t))
    placeholder = p.img_energy.value
    p.button.click()
    assert p.last_error is None, p.error.value
    assert [(d, t) for d, t, *_ in seen] == [(1, 4), (2, 4), (3, 4), (4, 4)] and p.progress_updates == 4
    assert all(st == "running" and not stale for *_, st, stale in seen)  # first run: nothing to mark stale
    assert p.img_energy.value != placeholder  # the placeholder said "sampling ..." meanwhile, then the image
    assert p.runs == 1 and p.state == "fresh" and p.img_energy.value != placeholder
    assert p.progress.value == p.progress.max == 4 and p.progress.bar_style == "success"
    assert "detector:" in p.verdict_vanilla.value and "/255" in p.diff_caption.value
    assert "run 1</b>: seed 0; 2 steps" in p.run_caption.value
    first = p.img_energy.value
    p.w_ga.value = 0.8  # a setting changed: the result on screen is stale
    assert p.state == "stale" and "ebca-stale" in p.results._dom_classes and "setting changed" in p.stale_label.value
    seen.clear()
    p.button.click()
    assert all(st == "running" and stale for *_, st, stale in seen) and len(seen) == 2  # vanilla cached
    assert p.runs == 2 and p.last.vanilla_cached and p.img_energy.value != first and "cached" in p.status.value
    assert p.state == "fresh" and "ebca-stale" not in p.results._dom_classes
    # the accordion draws its figures on demand, once per result
    assert p.img_plot.value[:4] == b"\x89PNG" and not p._drawn_more
    p.more.selected_index = 1
    maps = p.img_maps.value
    assert p._drawn_more == {1: True} and len(maps) > 5000
    p.w_method.value = "seg"
    p.w_sigma_inf.value = True
    p.button.click()
    assert p.last_error is None and p.last.settings.method == "seg" and math.isinf(p.last.settings.seg_sigma)
    assert p.img_maps.value != maps  # redrawn for the new result (the accordion is open)
    assert "SEG sigma inf" in p.run_caption.value


def test_panel_direction_toggle_applies_the_new_direction(pipe):
    p = EnergyPanel(pipe=pipe, model="tiny", settings=PanelSettings.for_model("tiny", prompt="a red circle", steps=2))
    e = p.w_edits[0]
    e["prompt"].value, e["alpha"].value, e["start"].value, e["gamma"].value = "blue", 0.6, 0.0, 0.001
    e["direction"].value = -1
    p.button.click()
    assert p.last.settings.edits[0].direction == -1 and "NOT 'blue'" in p.run_caption.value
    neg = p.img_energy.value
    e["direction"].value = 1
    p.button.click()
    assert p.last.settings.edits[0].direction == 1 and "AND 'blue'" in p.run_caption.value
    assert p.img_energy.value != neg


def test_panel_errors_keep_the_last_result_stale_and_restore_processors(pipe):
    before = _procs(pipe)
    p = EnergyPanel(pipe=pipe, model="tiny", settings=PanelSettings.for_model("tiny", prompt="a cat", steps=1))
    p.button.click()
    assert p.runs == 1 and p.state == "fresh"
    shown = p.img_energy.value
    q = EnergyPanel(pipe=pipe, model="tiny", settings=PanelSettings.for_model("tiny", prompt=" ", steps=1))
    ph = q.img_energy.value
    assert q.sample() is None and q.state == "stale" and q.img_energy.value != ph  # "failed" placeholder, no stale label
    assert q.img_energy.value[:4] == b"\x89PNG" and "ebca-stale" not in q.results._dom_classes
    e = p.w_edits[0]  # NOT at the 'and' default alpha 1 (a zero EBCQ denominator) takes the negation default
    e["prompt"].value, e["alpha"].value, e["start"].value, e["direction"].value = "dog", 1.0, 0.0, -1
    assert e["alpha"].value == p.edit_defaults.neg[0]  # (tests/test_panel_defaults.py)
    e["prompt"].value = ""
    p.w_prompt.value = " "
    assert p.sample() is None
    assert isinstance(p.last_error, ValueError) and "prompt is empty" in p.error.value and "Error" in p.error.value
    assert p.state == "stale" and "ebca-stale" in p.results._dom_classes and "failed" in p.stale_label.value
    assert p.img_energy.value == shown  # the last result stays, greyed
    assert p.progress.bar_style == "danger" and not p.button.disabled
    assert _procs(pipe) == before
    p.w_prompt.value = "a cat"
    p.button.click()
    assert p.error.value == "" and p.runs == 2 and p.state == "fresh"
    assert _procs(pipe) == before


def test_panel_keeps_warnings_out_of_the_output_area(pipe, monkeypatch, recwarn):
    import warnings

    import ebca_viz.widgets.runs as wmod

    real = wmod.sample_comparison

    def noisy(*a, **kw):
        warnings.warn("float32 is not the dtype you wanted", UserWarning)
        return real(*a, **kw)

    monkeypatch.setattr(wmod, "sample_comparison", noisy)
    p = EnergyPanel(pipe=pipe, model="tiny", settings=PanelSettings.for_model("tiny", prompt="a cat", steps=1))
    pipe.set_progress_bar_config(disable=False)
    try:
        p.button.click()
        assert pipe._progress_bar_config == {"disable": False}  # the user's setting is back
    finally:
        pipe.set_progress_bar_config(disable=True)
    assert p.last_error is None and len(recwarn) == 0
    assert p.notes == ["UserWarning: float32 is not the dtype you wanted"] and "notes (1)" in p.notes_box.value


def test_detector_verdict_on_rendered_scenes():
    import numpy as np
    from PIL import Image

    from ebca_viz.shapes.world import ObjectSpec, render

    img, _ = render([ObjectSpec("circle", "red", 9, 9, 12), ObjectSpec("square", "blue", 23, 23, 12)])
    v = detector_verdict(Image.fromarray(img), "a red circle and a blue square")
    assert v["correct"] and v["category"] == "both_present" and sorted(v["objects"]) == ["blue square", "red circle"]
    v = detector_verdict(Image.fromarray(img), "a blue circle and a red square")  # colours swapped
    assert not v["correct"] and v["category"] == "swapped"
    assert [(r["colour_ok"], r["shape_ok"]) for r in v["requests"]] == [(False, True), (False, True)]
    v = detector_verdict(Image.fromarray(img), "a red triangle")  # one object: judged on the largest, as score_single
    assert v["category"] == "wrong" and v["requests"][0]["matched"] == "blue square"
    assert v["requests"][0]["status"] == "absent" and "largest" in v["requests"][0]["reason"]
    img1, _ = render([ObjectSpec("circle", "red", 16, 16, 12)])
    v = detector_verdict(Image.fromarray(img1), "a red triangle")
    assert v["category"] == "wrong" and v["requests"][0]["matched"] == "red circle"
    assert (v["requests"][0]["colour_ok"], v["requests"][0]["shape_ok"]) == (True, False)
    empty = Image.fromarray(np.zeros((32, 32, 3), np.uint8))
    v = detector_verdict(empty, "a red circle and a blue square")
    assert v["objects"] == [] and v["category"] == "missing" and v["requests"][0]["matched"] is None
    assert detector_verdict(empty, "a photo of a cat") is None


def test_difference_image_and_layer_energy_plot(pipe):
    import numpy as np
    from PIL import Image

    a = np.zeros((8, 8, 3), np.uint8)
    b = a.copy()
    b[0, 0] = (30, 60, 90)  # |diff| averaged over channels: 60 at one pixel
    im, mean, top = difference_image(Image.fromarray(a), Image.fromarray(b), size=64)
    assert im.width == 64 and im.height > 64 and top == 60.0 and mean == pytest.approx(60 / 64)  # map + colourbar
    assert difference_image(Image.fromarray(a), Image.fromarray(a))[1:] == (0.0, 0.0)
    r = sample_comparison(pipe, PanelSettings.for_model("tiny", prompt="a red circle", steps=2), model="tiny")
    fig = plot_layer_energies(r.vanilla.trace, r.energy.trace, "EBCA")
    top_ax, updates_ax = fig.axes
    vanilla = top_ax.get_lines()[0]
    np.testing.assert_allclose(vanilla.get_ydata(), r.vanilla.trace.energies("posterior", "before").mean(0).numpy(), rtol=1e-6)
    arrows = [t for t in top_ax.texts if getattr(t, "arrow_patch", None) is not None]  # entering -> leaving, per layer
    after = r.energy.trace.energies("posterior", "after").mean(0).numpy()
    before = r.energy.trace.energies("posterior", "before").mean(0).numpy()
    np.testing.assert_allclose([t.xy[1] for t in arrows], after, rtol=1e-6)
    np.testing.assert_allclose([t.xyann[1] for t in arrows], before, rtol=1e-6)
    assert not np.allclose(before, after)  # EBCU moved the context
    assert sum(len(c.get_offsets()) for c in updates_ax.collections) == r.energy.trace.energies("posterior").numel()


def test_panel_latency_benchmark_counts_progress_updates(tmp_path):
    import importlib.util
    import json
    from pathlib import Path

    path = Path(__file__).resolve().parents[1] / "benchmarks" / "panel_latency.py"
    spec = importlib.util.spec_from_file_location("panel_latency", path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    out = tmp_path / "lat.json"
    r = mod.main(["--model", "tiny", "--steps", "2", "--repeats", "1", "--out", str(out)])
    assert r["rerun"]["progress_updates"] == [2] and r["cold"]["progress_updates"] == [4]
    assert r["rerun"]["wall"]["n"] == 1 and r["rerun"]["wall"]["median"] > 0
    assert json.loads(out.read_text())["steps"] == 2
    with pytest.raises(SystemExit):
        mod.parse_args(["--repeats", "0"])


def test_seg_blurs_the_regimes_layers():
    """The panel's SEG blurs the blocks of the model's regime (shapes world: every layer; SD: mid)."""
    from ebca_viz.shapes.regime import SD, SHAPES

    assert PanelSettings.for_model("shapes-world", method="seg").seg_config().layers == list(SHAPES.seg_layers)
    assert PanelSettings.for_model("sd15", method="seg").seg_config().layers == list(SD.seg_layers)
    assert SHAPES.seg_layers != SD.seg_layers
