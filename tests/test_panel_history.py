"""Issue 21 items 4-5: the last runs side by side (RunHistory, compare figure, strip) and the success
rate over seeds (success_rate, the panel's rate box). Seeds >= 3,000,000: no preregistered split."""
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from ebca_viz import claims
from ebca_viz.ebca import find_controller
from ebca_viz.shapes.detect import PAIR_VERDICTS
from ebca_viz.widgets import (
    Comparison,
    EditSpec,
    EnergyPanel,
    PanelSettings,
    RateUnavailable,
    RunHistory,
    RunResult,
    SuccessRate,
    VanillaCache,
    compare_energy_figure,
    detector_verdict,
    rate_figure,
    sample_comparison,
    success_rate,
)

SEED = 3_000_000
PROMPT = "a red circle and a blue square"


def _fake(seed: int) -> Comparison:
    im = Image.new("RGB", (8, 8), (seed % 256, 0, 0))
    s = PanelSettings(prompt="a red circle", seed=seed)
    return Comparison(s, "tiny", RunResult(im, None, 0.0), RunResult(im, None, 0.0), False, "cpu")


def _text_sizes(fig):
    return [t.get_fontsize() for t in fig.findobj(lambda o: hasattr(o, "get_text") and hasattr(o, "get_fontsize"))
            if t.get_text()]


def test_run_history_bounds_and_order():
    h = RunHistory(4)
    assert len(h) == 0 and h.current() is None
    with pytest.raises(IndexError, match="press Sample"):
        h.select(0)
    runs = [_fake(i) for i in range(6)]
    assert [h.add(c) for c in runs] == [1, 2, 3, 4, 5, 6]
    assert len(h) == 4
    assert [c.settings.seed for c in h.items()] == [2, 3, 4, 5]  # oldest first, the first two dropped
    assert h.numbers() == [3, 4, 5, 6]
    assert h.current() is runs[5]
    assert h.select(1) is runs[3] and h.selected == 4
    assert h.select(-1) is runs[5] and h.selected == 6
    with pytest.raises(IndexError, match="4 runs kept"):
        h.select(4)
    h.select(0)
    h.add(_fake(9))  # the selected run (#3) dropped out: nothing selected
    assert h.selected is None and h.numbers() == [4, 5, 6, 7]
    assert RunHistory().maxlen == 6
    with pytest.raises(ValueError, match="maxlen"):
        RunHistory(0)
    with pytest.raises(TypeError, match="Comparison"):
        h.add("run")


def test_compare_energy_figure(pipe):
    a = sample_comparison(pipe, PanelSettings(prompt="a red circle", steps=2), model="tiny")
    b = sample_comparison(pipe, PanelSettings(prompt="a red circle", steps=2, method="seg", seg_sigma=2.0), model="tiny")
    fig = compare_energy_figure(a, b, labels=("#1", "#2"))
    ax = fig.axes[0]
    # EBCA: entering + leaving; SEG: entering only (it does not update the context)
    assert len(ax.lines) == 3
    assert ax.lines[0].get_color() == ax.lines[1].get_color() != ax.lines[2].get_color()
    n_layers = len(a.energy.trace.layers)
    want = a.energy.trace.energies("posterior", "before").numpy().mean(0)
    np.testing.assert_allclose(ax.lines[0].get_ydata(), want, rtol=1e-6)
    assert len(ax.lines[0].get_xdata()) == n_layers
    labels = [t.get_text() for t in ax.get_legend().get_texts()]
    assert labels == ["#1 (EBCA): entering", "#1 (EBCA): leaving", "#2 (SEG): entering"]
    assert min(_text_sizes(fig)) >= 9 and fig.get_size_inches()[0] <= 8.5


def test_success_rate_shapes_world(shapes):
    s = PanelSettings.for_model("shapes-world", steps=5, seed=SEED, prompt=PROMPT)
    cache, prog = VanillaCache(maxsize=16), []
    r = success_rate(shapes, s, 4, model="shapes-world", cache=cache, on_progress=lambda d, t: prog.append((d, t)))
    assert isinstance(r, SuccessRate) and not r.cancelled
    assert r.n_done == 4 and r.seeds == [SEED, SEED + 1, SEED + 2, SEED + 3]
    assert set(r.vanilla) | set(r.method) <= set(PAIR_VERDICTS)
    ok_m = [int(c == "both_present") for c in r.method]
    ok_v = [int(c == "both_present") for c in r.vanilla]
    assert (r.rate("method").k, r.rate("method").n) == (sum(ok_m), 4)
    assert (r.rate("vanilla").k, r.rate("vanilla").n) == (sum(ok_v), 4)
    assert r.rate("method").interval == claims.rate(ok_m).interval
    d = claims.paired_diff(ok_m, ok_v)
    assert (r.diff.value, r.diff.lo, r.diff.hi) == pytest.approx((d.value, d.lo, d.hi))
    assert r.unsure("method") == r.method.count("unsure")
    # progress: monotone, ends at n * 2 * steps
    assert prog[-1] == (40, 40) and all(b[0] >= a[0] for a, b in zip(prog, prog[1:]))
    # one seed recomputed independently gives the same verdicts
    c = sample_comparison(shapes, s, model="shapes-world", seed=SEED + 1)
    assert detector_verdict(c.energy.image, PROMPT)["category"] == r.method[1]
    assert detector_verdict(c.vanilla.image, PROMPT)["category"] == r.vanilla[1]
    # a second rate (other gammas) takes every vanilla from the cache
    hits = cache.hits
    r2 = success_rate(shapes, s.__class__(**{**s.__dict__, "gamma_attn": 0.1}), 2, model="shapes-world", cache=cache)
    assert cache.hits - hits == 2 and r2.vanilla == r.vanilla[:2]
    text = r.summary("EBCA")
    assert f"EBCA: {r.rate('method')}" in text and "n = 4 seeds" in text and "paired difference" in text
    fig = rate_figure(r, "EBCA")
    assert min(_text_sizes(fig)) >= 9 and len(fig.axes[0].patches) == 2
    assert fig.axes[0].patches[1].get_height() == pytest.approx(100 * r.rate("method").p)


def test_success_rate_cancel(shapes):
    s = PanelSettings.for_model("shapes-world", steps=5, seed=SEED + 100, prompt="a green triangle")
    for k in (0, 2):
        done = []
        r = success_rate(shapes, s, 6, model="shapes-world", on_progress=lambda d, t: done.append(d),
                         should_stop=lambda: bool(done) and done[-1] >= k * 10)
        if k == 0:  # stops on the very first step check: nothing finished
            assert r.n_done == 0 and r.summary() == "no seed finished (cancelled)"
        assert r.cancelled and r.n_done == k and r.seeds == [SEED + 100 + i for i in range(k)]
        assert set(r.method) <= {"correct", "wrong", "unsure"}
    # cancelled in the middle of a seed: that seed is dropped and nothing stays installed
    calls = []
    r = success_rate(shapes, s, 6, model="shapes-world", on_progress=lambda d, t: calls.append(d),
                     should_stop=lambda: len(calls) >= 13)
    assert r.cancelled and r.n_done == 1 and find_controller(shapes.unet) is None


def test_success_rate_refusals(pipe):
    s = PanelSettings(prompt=PROMPT, steps=2, seed=SEED)
    with pytest.raises(RateUnavailable, match="shapes-world detector"):
        success_rate(pipe, s, 2, model="tiny")
    with pytest.raises(RateUnavailable, match="shapes-world detector"):
        success_rate(pipe, s, 2, model="CompVis/stable-diffusion-v1-4")
    # these are checked before any sampling, so a (wrongly named) tiny pipe is enough
    with pytest.raises(RateUnavailable, match="n .number of seeds"):
        success_rate(pipe, s, 0, model="shapes-world")
    with pytest.raises(RateUnavailable, match="shapes-world prompts"):
        success_rate(pipe, PanelSettings(prompt="a photo of a cat", steps=2), 2, model="shapes-world")
    neg = PanelSettings(prompt=PROMPT, steps=2, edits=[EditSpec(prompt="a blue square", alpha=0.5, direction=-1)])
    with pytest.raises(RateUnavailable, match="negation"):
        success_rate(pipe, neg, 2, model="shapes-world")


def test_panel_history_strip_compare_and_rate(shapes):
    p = EnergyPanel(pipe=shapes, model="shapes-world",
                    settings=PanelSettings.for_model("shapes-world", steps=5, seed=9990, prompt=PROMPT))
    hv = p.history_view
    assert "ebca-history" in hv.strip._dom_classes and "ebca-compare" in hv.compare._dom_classes
    assert p.sample() is not None
    p.w_seed.value = 9991  # the panel's seeds span 0..9999 (seeds the panel already shows)
    assert p.sample() is not None
    assert len(hv.history) == 2 and len(hv.strip.children) == 2
    assert "ebca-history-item-1" in hv.strip.children[1]._dom_classes
    assert hv.compare.layout.display == "none"
    hv.strip.children[0].children[2].click()  # "compare #1"
    assert hv.compare.layout.display is None and hv.history.selected == 1
    html_text = " ".join(getattr(w, "value", "") for w in hv.compare.children if isinstance(getattr(w, "value", None), str))
    assert "run #1 vs the current run #2" in html_text
    # seeds differ: both columns show their vanilla image (energy + vanilla: 2 images each)
    cols = hv.compare.children[1].children
    assert [sum(type(w).__name__ == "Image" for w in c.children) for c in cols] == [2, 2]
    # the success rate, waited for (a thread in the panel)
    hv.rate_n.value = 2
    hv.start_rate(wait=True)
    r = hv.last_rate
    assert r is not None and r.n_done == 2 and r.seeds == [9991, 9992]
    assert "vanilla: " in hv.rate_result.value and hv.rate_plot.layout.display is None
    assert not p.button.disabled and not hv.rate_button.disabled and hv.rate_cancel.disabled
    assert hv.rate_progress.value == hv.rate_progress.max == 20
    # cancel: the click reaches the running thread, which stops early
    hv.rate_n.value = 16
    hv.start_rate()
    assert p.button.disabled and hv.rate_running
    assert p.sample() is None and "success rate is running" in p.notice.value
    hv.rate_cancel.click()
    hv.thread.join(timeout=60)
    assert hv.last_rate.cancelled and hv.last_rate.n_done < 16 and not p.button.disabled
    # negation edit: refused with a message, no thread
    p.w_edits[0]["prompt"].value = "a blue square"
    p.w_edits[0]["direction"].value = -1
    p.w_edits[0]["alpha"].value = 0.5
    hv.start_rate(wait=True)
    assert "negation" in hv.rate_result.value and hv.last_rate.cancelled


def test_panel_rate_refused_on_tiny(pipe):
    p = EnergyPanel(pipe=pipe, model="tiny", settings=PanelSettings(prompt=PROMPT, steps=2))
    p.history_view.start_rate()
    assert p.history_view.thread is None
    assert "needs the shapes-world detector" in p.history_view.rate_result.value
    assert not p.button.disabled


def test_history_files_stay_small():
    root = Path(__file__).resolve().parents[1] / "ebca_viz" / "widgets"
    for f in ("history.py", "runs.py"):
        assert len((root / f).read_text().splitlines()) < 400, f
