"""ebca_viz.experiments.seg: kernels and blur residuals, layer grids, the measurement on the shapes world."""
import math

import numpy as np
import pytest
import torch

from ebca_viz.experiments import seg as X


@pytest.fixture(scope="module")
def shapes_pipe():
    from ebca_viz.models import load_pipeline

    try:
        pipe = load_pipeline("shapes-world")
    except Exception as e:  # pragma: no cover - weights absent in a stripped copy
        pytest.skip(f"shapes-world model not available: {e}")
    pipe.set_progress_bar_config(disable=True)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # tiny batches: one thread is faster than two on a shared 2-core machine
    yield pipe
    torch.set_num_threads(threads)


def test_effective_kernel_is_capped_by_the_grid():
    assert X.effective_kernel(0.1, 4) == 1  # ceil(0.6) + 1 = 2 -> odd 1: the identity
    assert X.effective_kernel(0.5, 4) == 3
    assert X.effective_kernel(1.0, 4) == 5  # 7 taps capped at w + 1 = 5
    assert X.effective_kernel(10.0, 4) == 5
    assert X.effective_kernel(10.0, 8) == 9
    assert X.effective_kernel(math.inf, 8) == 8
    with pytest.raises(ValueError, match="width"):
        X.effective_kernel(1.0, 0)


def test_blur_residual_saturates_on_small_grids():
    r = {s: X.blur_residual(4, s) for s in (0.1, 0.3, 0.5, 1.0, 2.0, 10.0, math.inf)}
    assert r[0.1] == pytest.approx(1.0, abs=1e-12)  # 1-tap kernel = no blur
    assert r[math.inf] == pytest.approx(0.0, abs=1e-12)  # exact mean
    assert r[0.3] > r[0.5] > r[1.0] > r[2.0]
    assert abs(r[10.0] - r[2.0]) < 0.01  # sigma 2 and 10 are the same 5-tap kernel on 4x4
    assert 0.1 < r[10.0] < 0.2  # ... which is NOT the mean (reflect padding)
    with pytest.raises(ValueError, match="width"):
        X.blur_residual(1, 1.0)


def test_setting_validation_and_labels():
    s = X.SEGSetting(3.0, math.inf, ("down", "mid", "up"), 1.0)
    assert s.label == "no CFG, s 3, sigma inf, all"
    assert s.baseline() == X.SEGSetting(0.0, math.inf, (), 1.0) == X.SEGSetting(3, 2.0, ["mid"], 1.0).baseline()
    assert X.SEGSetting(0.0, guidance=3.0).label == "CFG 3, no SEG"
    assert s.config().sigma > 9999 and s.config().layers == ["down", "mid", "up"]
    with pytest.raises(ValueError, match="scale"):
        X.SEGSetting(-1.0)
    with pytest.raises(ValueError, match="sigma"):
        X.SEGSetting(1.0, 0.0)
    with pytest.raises(ValueError, match="layers"):
        X.SEGSetting(1.0, 1.0, "mid")
    with pytest.raises(ValueError, match="guidance"):
        X.SEGSetting(1.0, 1.0, ("mid",), 0.5)


def test_layer_grids_match_what_the_processors_see(shapes_pipe):
    from ebca_viz.seg import smoothed_energy_guidance

    seen = {}

    class Obs:
        def on_seg_attention(self, ev):
            seen[ev.name] = tuple(ev.grid)

    with smoothed_energy_guidance(shapes_pipe, scale=1.0, sigma=1.0, layers=["down", "mid", "up"]) as ctl:
        ctl.observers.append(Obs())
        shapes_pipe("a red circle and a blue square", num_inference_steps=1, guidance_scale=3.0, output_type="np")
    grids = X.layer_grids(shapes_pipe)
    assert {g["key"]: g["grid"] for g in grids} == seen
    assert sorted(g["grid"][0] for g in grids) == [4, 4, 4, 4, 8, 8, 8]
    assert [g["grid"] for g in grids if g["block"] == "mid"] == [(4, 4)]


def test_measure_change_energy_and_scores(shapes_pipe):
    tiny = X.SEGSetting(3.0, 0.1, ("mid",), 3.0)  # 1-tap kernel: the blurred branch equals the conditional one
    strong = X.SEGSetting(10.0, math.inf, ("down", "mid", "up"), 1.0)
    st = X.measure_seg(shapes_pipe, [tiny, strong], n=4, steps=4, batch=4)
    assert list(st.results) == [tiny.baseline(), tiny, strong.baseline(), strong]
    assert st[tiny].change.value < 0.01 and st[tiny].changed.k == 0
    assert st[strong].change.value > 1.0  # grey levels, mean over the 4 images
    assert st[strong].energy_gap.value > 0  # blurred queries: higher energy (Jensen on lse)
    assert abs(st[tiny].energy_gap.value) < 1e-3
    assert st.base(strong).change is None and st.base(strong).energy_gap is None
    for r in st.results.values():
        assert r.rates["both_present"].n == 4 and len(r.verdicts) == 4 and r.images.shape == (4, 32, 32, 3)
        assert all(v["clean"] <= v["both_present"] for v in r.verdicts)  # clean implies both present
    assert "| no CFG, s 10, sigma inf, all | 4 |" in st.table()
    row = st[strong].row()
    assert row["n"] == 4 and row["sigma"] == "inf" and "both_present_vs_base" in row
    with pytest.raises(KeyError, match="not measured"):
        st[X.SEGSetting(1.0)]
    with pytest.raises(ValueError, match="n must be"):
        X.measure_seg(shapes_pipe, [tiny], n=1)
    with pytest.raises(ValueError, match="settings"):
        X.measure_seg(shapes_pipe, [], n=4)


def test_plots_return_figures():
    from matplotlib.figure import Figure

    from ebca_viz import claims

    sig = [0.5, 1.0, math.inf]
    fig = X.plot_vs_sigma(sig, {"a": [claims.mean([1.0, 2.0, 3.0])] * 3, "b": [claims.rate([1, 0, 1])] * 3}, "y", "t")
    assert isinstance(fig, Figure) and len(fig.axes) == 1
    ims = np.zeros((3, 32, 32, 3), np.uint8)
    ims2 = ims.copy()
    ims2[:, :4] = 200
    fig = X.plot_seed_grid({"base": (ims, ["x"] * 3), "seg": (ims2, ["y"] * 3)}, [0, 1, 2], base_key="base")
    assert len(fig.axes) == 10  # base, seg, diff rows x 3 seeds + the colour bar of the diff rows
    assert isinstance(X.plot_blur_residual(), Figure)


def test_choose_default_rule():
    def row(scale, sigma, g, p, change):
        return dict(scale=scale, sigma=sigma, layers=["mid"], guidance=g, both_present=dict(p=p), change=dict(mean=change))

    rows = [dict(scale=0.0, sigma="inf", layers=[], guidance=1.0, both_present=dict(p=0.9)),
            row(1.0, "inf", 1.0, 0.3, 1.0), row(1.0, "inf", 3.0, 0.5, 1.0),  # mean 0.4
            row(3.0, 1.0, 1.0, 0.5, 5.0), row(3.0, 1.0, 3.0, 0.3, 5.0),  # mean 0.4, larger change: wins the tie
            row(10.0, 1.0, 1.0, 0.2, 9.0), row(10.0, 1.0, 3.0, 0.2, 9.0)]
    assert X.choose_default(rows) == dict(scale=3.0, sigma=1.0, layers=("mid",))
    rows[1]["both_present"]["p"] = 0.31
    assert X.choose_default(rows)["sigma"] == math.inf
    with pytest.raises(ValueError, match="sweep_seg"):
        X.choose_default(rows[:1])
