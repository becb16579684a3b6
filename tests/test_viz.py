"""ebca_viz.plots (and ebca_viz.tokens, ebca_viz.util): every figure builds from plain arrays and from a trace, nothing leaks into pyplot."""
import sys

import numpy as np
import pytest
import torch
from matplotlib.figure import Figure

from ebca_viz import plots, tokens, util


def _no_pyplot_figures():
    plt = sys.modules.get("matplotlib.pyplot")
    return plt is None or plt.get_fignums() == []


@pytest.fixture(autouse=True)
def no_leak():
    yield
    assert _no_pyplot_figures(), "a viz function left a pyplot figure open"


def test_fast_mode_and_pick(monkeypatch):
    monkeypatch.delenv("EBCA_VIZ_FAST", raising=False)
    assert not util.fast_mode() and util.pick(25, 4) == 25
    for v in ("1", "true", "YES"):
        monkeypatch.setenv("EBCA_VIZ_FAST", v)
        assert util.fast_mode() and util.pick(25, 4) == 4
    monkeypatch.setenv("EBCA_VIZ_FAST", "0")
    assert not util.fast_mode()


def _panels(fig):
    """The figure's axes except colourbars."""
    return [a for a in fig.axes if a.get_label() != "<colorbar>"]


def test_attention_maps_grid_shapes_and_png():
    rng = np.random.default_rng(0)
    maps = rng.random((3, 5, 8, 8))
    fig = plots.plot_attention_maps(maps, tokens=[f"t{i}" for i in range(5)], row_labels=["a", "b", "c"],
                                  token_indices=[1, 3], title="x")
    assert isinstance(fig, Figure) and len(_panels(fig)) == 3 * 2
    assert fig.axes[-1].get_label() == "<colorbar>" and fig.axes[-1].get_ylabel().startswith("attention")
    png = plots.figure_png(fig)
    assert png[:8] == b"\x89PNG\r\n\x1a\n"
    assert fig._repr_png_()[:4] == b"\x89PNG"
    # mixed grids (per layer) and an image under the maps
    fig = plots.plot_attention_maps([torch.rand(5, 8, 8), torch.rand(5, 4, 4)], image=np.zeros((16, 16, 3)))
    assert len(_panels(fig)) == 2 * 6
    with pytest.raises(ValueError, match="token_indices"):
        plots.plot_attention_maps(maps, token_indices=[7])
    with pytest.raises(ValueError, match="row_labels"):
        plots.plot_attention_maps(maps, row_labels=["only one"])
    with pytest.raises(ValueError, match="maps must be"):
        plots.plot_attention_maps(np.zeros((2, 2)))


def test_energy_curves_descent_title():
    b = torch.tensor([[3.0, 2.0, 1.0], [2.5, 1.5, 0.5]])
    fig = plots.plot_energy_curves(b, b - 0.1, reference=b + 1, layer_names=["down_blocks.0.attentions.0.x", "mid_block.attentions.0.y", "z"])
    assert "100% of updates descend" in fig.axes[1].get_title()
    fig = plots.plot_energy_curves(b)  # no "after": per-step means
    assert fig.axes[1].get_title() == "energy per step"
    assert isinstance(plots.plot_energy_heatmap(b, center=True), Figure)
    assert isinstance(plots.plot_descent([3, 2, 1.5], labels=["E"]), Figure)


def test_gradient_check_reports_error():
    g = torch.randn(4, 3)
    fig = plots.plot_gradient_check(g, g + 1e-3)
    assert "1.0e-03" in fig.axes[0].get_title()  # %.1e since the float64 fix
    with pytest.raises(ValueError):
        plots.plot_gradient_check(torch.zeros(3), torch.zeros(4))


def test_pca_and_context_trajectories():
    c = torch.randn(6, 4, 10)
    p = plots.pca_2d(c)
    assert p.shape == (6, 4, 2)
    fig = plots.plot_context_trajectories(c, tokens=["a", "b", "c", "d"])
    assert len(fig.axes) == 3
    fig = plots.plot_context_trajectories(norms=torch.rand(6, 4), drift=torch.rand(6, 4))
    assert len(fig.axes) == 2
    with pytest.raises(ValueError):
        plots.plot_context_trajectories()


def test_seg_energy_with_inf_and_images():
    fig = plots.plot_seg_energy([1, 3, 10, float("inf")], [[-5, -4, -3, -2.5]], reference=-6,
                              images=[np.zeros((8, 8, 3))] * 4)
    labels = [t.get_text() for t in fig.axes[0].get_xticklabels()]
    assert labels[-1] == "inf"
    with pytest.raises(ValueError, match="one value per sigma"):
        plots.plot_seg_energy([1, 2], [1, 2, 3])


def test_compare_images_and_grid():
    from PIL import Image

    a = Image.new("RGB", (16, 16), "red")
    b = torch.zeros(3, 16, 16) - 1  # a [-1, 1] tensor
    fig = plots.compare_images({"before": a, "after": b}, diff=True)
    assert len(fig.axes) >= 3 and fig.axes[0].get_title() == "before"
    assert isinstance(plots.image_grid([a] * 5, ncols=3), Figure)
    assert util.upscale(a, 64).size == (64, 64)


def test_animation_jshtml_and_gif(tmp_path):
    anim = plots.animate_maps(torch.rand(3, 4, 8, 8), tokens=["a", "b", "c", "d"], token_indices=[1, 2])
    html = anim.to_jshtml()
    assert "<script" in html and "anim" in html
    path = plots.save_animation(anim, tmp_path / "maps.gif", fps=2)
    from PIL import Image

    with Image.open(path) as im:
        assert im.format == "GIF" and im.n_frames == 3


def test_save_figure_closes_pyplot_figures(tmp_path):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig = plt.figure()
    plots.save_figure(fig, tmp_path / "a.png")
    assert plt.get_fignums() == []
    plots.save_figure(plots.plot_descent([1, 0]), tmp_path / "b.png")
    assert (tmp_path / "b.png").stat().st_size > 0


def test_token_labels(tiny_pipe):
    labels = tokens.token_labels(tiny_pipe, "a red circle")
    assert labels[0] == "0 <sot>" and labels[2] == "2 red" and labels[-1] == "4 <eot>"
    assert tokens.prompt_token_indices(tiny_pipe, "a red circle") == [1, 2, 3]


def test_trace_figures(pipe, tmp_path):
    import ebca_viz as ev

    with ev.trace(pipe, quantities="all") as tr, ev.energy_attention(pipe, ev.EBCAConfig(gamma_attn=0.05, gamma_norm=0.02)):
        pipe("a red circle", num_inference_steps=2, generator=torch.Generator().manual_seed(0))
    assert tokens.trace_prompt_positions(tr) == [1, 2, 3]
    assert tokens.trace_tokens(tr)[3] == "3 circle"
    fig = plots.plot_trace_maps(tr, by="layer")
    assert len(_panels(fig)) == len(tr.layers) * 3
    assert len(_panels(plots.plot_trace_maps(tr, by="step", token="red"))) == 2
    assert len(plots.plot_trace_energies(tr).axes) == 2
    assert len(plots.plot_trace_contexts(tr).axes) == 3
    assert plots.trace_context_path(tr).shape[0] == len(tr.layers) + 1
    plots.save_animation(plots.animate_trace(tr), tmp_path / "t.gif")
    with ev.trace(pipe) as tr2, ev.smoothed_energy_guidance(pipe, ev.SEGConfig(sigma=2.0)):
        pipe("a red circle", num_inference_steps=2, generator=torch.Generator().manual_seed(0))
    assert len(plots.plot_trace_seg(tr2).axes) == 1
    assert len(plots.plot_trace_contexts(tr2).axes) == 2  # norms + drift without recorded contexts


def test_gallery_command_writes_small_files(tmp_path):
    from ebca_viz.cli import main

    assert main(["gallery", "--out", str(tmp_path), "--model", "tiny", "--steps", "2"]) == 0
    import json

    meta = json.loads((tmp_path / "gallery.json").read_text())
    assert meta["model"] == "tiny"
    for name in ("comparison.png", "energy_descent.png", "attention_maps.png", "context_trajectories.png",
                 "gradient_check.png", "seg_energy.png", "maps_animation.gif"):
        size = (tmp_path / name).stat().st_size
        assert 0 < size < 150 * 1024, (name, size)


def test_energy_curves_relative_to_reference():
    b = torch.tensor([[3.0, 2.0], [2.5, 1.5]])
    fig = plots.plot_energy_curves(b, b - 0.1, reference=b + 0.05)
    assert "relative to vanilla" in fig.axes[0].get_title()
    fig = plots.plot_energy_curves(b, b - 0.1, reference=b, relative=False)
    assert "relative" not in fig.axes[0].get_title()
    with pytest.raises(ValueError, match="reference"):
        plots.plot_energy_curves(b, relative=True)


def test_animation_max_frames(tmp_path):
    from PIL import Image

    anim = plots.animate_maps(torch.rand(20, 2, 4, 4), max_frames=5)
    with Image.open(plots.save_animation(anim, tmp_path / "a.gif", dpi=40)) as im:
        assert im.n_frames == 5


def test_readme_gallery_caption_matches_gallery_json():
    """The README's sentence on the comparison figure quotes docs/gallery/gallery.json."""
    import json
    from pathlib import Path

    root = Path(__file__).resolve().parents[1]
    g = json.loads((root / "docs/gallery/gallery.json").read_text())
    readme = (root / "README.md").read_text()
    sc = g["seed_choice"]
    assert f"seed {g['seed']}, the one of 16 where EBCU changes the image most ({sc['change']:.1f}/255" in readme
    assert f"median seed changes by {sc['median_change_over_seeds']:.1f}/255" in readme
    assert g["mean_abs_diff_vanilla_ebcu"] > 1.0  # the pair shown is not identical


def test_trace_energy_plot_counts_unet_calls(tiny_pipe):
    """The trace's step axis counts recorded UNet calls (PNDM makes one more than the sampling steps)."""
    import ebca_viz as ev

    with ev.trace(tiny_pipe) as tr:
        tiny_pipe("a red circle", num_inference_steps=2, output_type="pt", generator=torch.Generator().manual_seed(0))
    fig = plots.plot_trace_energies(tr)
    assert fig.axes[1].get_xlabel().startswith("recorded UNet call")


def test_sample_traced_is_the_one_helper_and_viz_loads_no_model(tiny_pipe):
    """notebook.sample_traced: vanilla records with its own processors, ebca= under the controller
    (observers subscribed), both at once refused; viz itself imports no model code."""

    import ebca_viz as ev
    from ebca_viz.notebook import sample_traced

    seen = []

    class Obs:
        def on_cross_attention(self, e):
            seen.append(e.step)

    a = sample_traced(tiny_pipe, "a red circle", seed=0, steps=2)
    b = sample_traced(tiny_pipe, "a red circle", seed=0, steps=2,
                      ebca=ev.EBCAConfig(gamma_attn=0.0, gamma_norm=0.0), observers=[Obs()])
    assert (a.trace.mode, b.trace.mode) == ("plain", "ebca") and sorted(set(seen)) == [0, 1]
    # all strengths 0: the same image as diffusers' attention (uint8: at most one grey level apart)
    assert np.abs(np.asarray(a.image, np.int16) - np.asarray(b.image, np.int16)).max() <= 1
    with pytest.raises(ValueError, match="not both"):
        sample_traced(tiny_pipe, "a", ebca=ev.EBCAConfig(), seg=ev.SEGConfig())
    import ast
    from pathlib import Path

    # the figures load no model and sample nothing: no module of ebca_viz.plots imports one that does
    for f in sorted(Path(plots.__file__).parent.glob("*.py")):
        tree = ast.parse(f.read_text())
        mods = {n.module.split(".")[0] for n in ast.walk(tree) if isinstance(n, ast.ImportFrom) and n.level and n.module}
        assert not mods & {"models", "demo", "ebca", "seg", "config", "notebook", "tracing", "shapes"}, (f.name, mods)
    assert sample_traced.__globals__["pick"] is util.pick  # one home: ebca_viz.util
