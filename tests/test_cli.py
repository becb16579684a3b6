"""The demo command: offline, files written, energies that really descend, clear errors."""
import json

import pytest

from ebca_viz.cli import main


def test_demo_writes_images_plot_and_summary(tmp_path, capsys):
    rc = main(["demo", "--model", "tiny", "--steps", "3", "--out", str(tmp_path), "--gamma-attn", "0.05",
               "--gamma-norm", "0.05"])
    assert rc == 0
    for f in ("vanilla.png", "ebcu.png", "comparison.png", "energy.png", "summary.json", "trace.html"):
        assert (tmp_path / f).stat().st_size > 100, f
    page = (tmp_path / "trace.html").read_text()
    assert "data:image/png;base64," in page and '"energies"' in page and '"norms"' in page and "http" not in page
    s = json.loads((tmp_path / "summary.json").read_text())
    assert s["model"] == "tiny" and s["steps"] == 3
    assert s["fraction_of_updates_that_lower_energy"] == 1.0  # small steps descend
    assert s["pixel_change_mean_abs"] > 0  # the update changes the image
    # the first layer sees the prompt context in both runs and the same noise at step 0
    assert len(s["posterior_energy_entering_layers_mean_over_steps"]["ebcu"]) == 7


@pytest.mark.parametrize("argv, needle", [
    (["demo", "--model", "tiny", "--steps", "0"], "steps"),
    (["demo", "--model", "sd15-not-here/xyz"], "could not load"),
    (["demo", "--model", "tiny", "--steps", "2", "--gamma-attn", "-1"], "gamma_attn"),
])
def test_demo_bad_input_is_one_clear_line(argv, needle, capsys, tmp_path):
    assert main(argv + ["--out", str(tmp_path)]) == 2
    last = capsys.readouterr().err.strip().splitlines()[-1]
    assert last.startswith("error:") and needle in last


def test_no_command_prints_help(capsys):
    assert main([]) == 2
    assert "demo" in capsys.readouterr().out
