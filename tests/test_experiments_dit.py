"""ebca_viz.experiments.dit (notebook 10): box mass, object matching, DiT sampling pairs, segment labels,
the DiT benchmark file reader, the lesson kind of a DiT world."""
import json
import math

import numpy as np
import pytest
import torch

from ebca_viz.errors import InvalidSetting
from ebca_viz.experiments import dit as X


def test_box_mass_counts_the_share_inside_the_box():
    m = torch.zeros(8, 8)
    m[0, 0] = 3.0  # image pixels 0..3 x 0..3 on a 32 x 32 image
    m[7, 7] = 1.0
    assert X.box_mass(m, (0, 0, 4, 4), 32) == pytest.approx(0.75)
    assert X.box_mass(m, (28, 28, 32, 32), 32) == pytest.approx(0.25)
    assert X.box_mass(m, (0, 0, 2, 2), 32) == pytest.approx(0.75 / 4)  # a quarter of the first cell
    assert X.box_mass(torch.ones(8, 8), (0, 0, 16, 32), 32) == pytest.approx(0.5)
    with pytest.raises(InvalidSetting, match="non-negative"):
        X.box_mass(-torch.ones(8, 8), (0, 0, 4, 4), 32)


def test_find_object_prefers_colour_and_shape_then_shape():
    class D:
        def __init__(self, colour, shape, area):
            self.colour, self.shape, self.area = colour, shape, area

    a, b, c = D("blue", "circle", 30), D("red", "circle", 10), D("red", "square", 50)
    assert X.find_object([a, b, c], "red", "circle") is b
    assert X.find_object([a, c], "red", "circle") is a
    assert X.find_object([c], "red", "circle") is None


def test_alignment_diff_is_own_minus_other():
    al = X.Alignment(("circle", "square"), [0, 1, 2], {"circle": [0.5, 0.4, 0.6], "square": [0.3, 0.3, 0.3]},
                     {"circle": [0.1, 0.1, 0.1], "square": [0.1, 0.2, 0.1]}, [0, 1, 2])
    d = al.diff()
    assert d.n == 3
    assert d.value == pytest.approx(np.mean([(0.5 + 0.3) / 2 - 0.1, (0.4 + 0.3) / 2 - 0.15, (0.6 + 0.3) / 2 - 0.1]))


def _results(tmp_path, p_van=0.3, p_up=0.4, n=100):
    pair = {"vanilla": {"both_present": dict(p=p_van, se=0.04, n=n)},
            "EBCU": {"both_present": dict(p=0.32, se=0.04, n=n, vs_vanilla=dict(diff=0.02, se=0.01))},
            "EBCU + up-weight": {"both_present": dict(p=p_up, se=0.05, n=n, vs_vanilla=dict(diff=p_up - p_van, se=0.02))}}
    res = dict(report=dict(pair=pair, n_pair=n), chosen=dict(gamma_attn=0.3, gamma_norm=0.1, upweight=2.5,
                                                             token_indices=[2, 6]))
    from ebca_viz.experiments import shipped

    return shipped.write(tmp_path / "results.json", dict(weights_sha256="0" * 64, steps=20), res)


def test_load_dit_benchmark_reads_rates_and_paired_differences(tmp_path):
    wr = X.load_dit_benchmark(_results(tmp_path))
    assert wr.n == 100 and wr.rates["vanilla"].k == 30 and wr.rates["EBCU + up-weight"].k == 40
    d = wr.diffs["EBCU + up-weight"]
    assert d.value == pytest.approx(0.1)
    assert d.lo == pytest.approx(0.1 - 1.984 * 0.02, abs=1e-3) and d.lo > 0  # t(99) 95 % from the stored SE
    assert wr.chosen["upweight"] == 2.5
    from ebca_viz.experiments.shipped import ShippedMismatchError
    from ebca_viz.experiments import shipped

    data = json.loads(_results(tmp_path).read_text())
    data["results"]["report"]["pair"]["vanilla"]["both_present"]["p"] = 0.5  # edited by hand: the digest refuses it
    (tmp_path / "edited.json").write_text(json.dumps(data))
    with pytest.raises(ShippedMismatchError, match="digest"):
        X.load_dit_benchmark(tmp_path / "edited.json")
    res = json.loads(_results(tmp_path).read_text())["results"]
    del res["report"]["pair"]["EBCU"]
    shipped.write(tmp_path / "bad.json", dict(weights_sha256="0" * 64), res)
    with pytest.raises(InvalidSetting, match="'EBCU' is missing"):
        X.load_dit_benchmark(tmp_path / "bad.json")


def test_load_dit_benchmark_refuses_other_weights(tmp_path, pixart):
    from ebca_viz.experiments.shipped import ShippedMismatchError

    with pytest.raises(ShippedMismatchError):
        X.load_dit_benchmark(_results(tmp_path), pipe=pixart)


def test_find_dit_benchmark_takes_the_first_existing_path(tmp_path):
    assert X.find_dit_benchmark(tmp_path) is None
    p = tmp_path / X.DIT_RESULT_PATHS[-1]
    p.parent.mkdir(parents=True)
    p.write_text("{}")
    assert X.find_dit_benchmark(tmp_path) == p


def test_plot_world_bars_has_a_bar_per_method_and_world(tmp_path):
    wr = X.load_dit_benchmark(_results(tmp_path))
    fig = X.plot_world_bars({"A": wr, "B": wr})
    assert len(fig.axes[0].patches) == 2 * len(X.METHODS)


@pytest.fixture(scope="module")
def pixart():
    from ebca_viz.models import load_pipeline

    torch.manual_seed(0)
    p = load_pipeline("tiny-pixart")
    p.set_progress_bar_config(disable=True)
    return p


def test_describe_and_sampling_on_tiny_pixart(pixart):
    lines = X.describe(pixart, probe_cfg=3.0)
    assert lines[0].startswith("family 'pixart'")
    assert any("cross" in ln for ln in lines) and any("named by pipe.tokenizer" in ln for ln in lines)
    assert lines[-1].endswith("{'cfg': True, 'style': 'batch'}")
    a = X.sample(pixart, ["a red circle", "a red circle"], [0, 1], steps=2)
    b = X.sample(pixart, ["a red circle"], [1], steps=2)
    assert a.shape[1:] == b.shape[1:] and a.dtype == np.uint8
    assert np.abs(a[1].astype(int) - b[0].astype(int)).max() <= 1  # the seed rule: batch-independent latents
    van, seg, d = X.seg_change(pixart, "a red circle", [0], __import__("ebca_viz").SEGConfig(scale=3, sigma=math.inf,
                                                                                               layers=("mid",)), steps=2)
    assert d.shape == (1,) and d[0] > 0  # SEG moves the sample
    with pytest.raises(InvalidSetting, match="one seed per prompt"):
        X.sample(pixart, ["a"], [0, 1])


def test_segment_labels_on_tiny_sd3():
    import ebca_viz as ev
    from ebca_viz.models import load_pipeline

    p = load_pipeline("tiny-sd3")
    p.set_progress_bar_config(disable=True)
    prompt = "a red circle and a blue square"
    with ev.trace(p) as tr, torch.no_grad():
        p(prompt, num_inference_steps=1, height=32, width=32, generator=torch.Generator().manual_seed(0))
    rows = X.segment_labels(tr, p, prompt)
    assert [r["name"] for r in rows] == ["clip", "t5"]
    assert all(r["match"] for r in rows) and rows[0]["tokenizer"].startswith("CLIP") and rows[1]["tokenizer"].startswith("T5")
    assert rows[0]["padding"] == 77 - 9  # start, 7 words, end-of-text; the rest is padding


def test_lesson_kind_names_a_32px_pixart_the_dit_world(pixart):
    from ebca_viz.notebook import lesson_kind
    from ebca_viz.shapes.regime import NEGLECT_DIT, regime_for

    assert lesson_kind(pixart) == "tiny-pixart"  # its own small VAE: the in-code test model, not the world
    import copy
    import json

    from diffusers import AutoencoderKL

    from ebca_viz.models.worlds import WEIGHTS_ROOT

    cfg = json.loads((WEIGHTS_ROOT / "neglect_world" / "vae" / "config.json").read_text())
    world = copy.copy(pixart)  # the DiT world: a PixArt transformer over the neglect world's VAE, 32 x 32 images
    world.register_modules(vae=AutoencoderKL.from_config(cfg))
    assert lesson_kind(world) == "neglect-world-dit"
    assert pixart.vae is not world.vae and lesson_kind(pixart) == "tiny-pixart"
    assert regime_for("neglect-world-dit") is NEGLECT_DIT and NEGLECT_DIT.steps == 20 and NEGLECT_DIT.guidance == 3.0
    from ebca_viz.shapes.dit_eval import DIT_GRID

    assert (NEGLECT_DIT.gamma_attn, NEGLECT_DIT.gamma_norm) in DIT_GRID  # the placeholder is a point of the DiT grid


def test_setup_loads_a_dit_and_falls_back_to_tiny_pixart(monkeypatch, capsys):
    import ebca_viz.models.worlds as worlds
    from ebca_viz.notebook import load_model

    monkeypatch.setattr(worlds, "shipped_worlds", lambda: [])  # as in a copy without the DiT world's weights
    pipe, name = load_model("neglect-world-dit", device="cpu")
    out = capsys.readouterr().out
    assert name == "tiny-pixart" and "not in this copy" in out
    assert "PixArtTransformer2DModel with 2 attention layers that see text" in out  # no pipe.unet asked
