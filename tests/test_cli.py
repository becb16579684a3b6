"""The demo command: offline, files written, energies that really descend, clear errors."""
import json

import pytest
import torch

from ebca_viz.cli import main
from ebca_viz.demo import PosteriorEnergyLog
from ebca_viz import EBCAConfig, energy_attention
from ebca_viz.energy import posterior_energy, split_heads
from ebca_viz.models import tiny_pipeline


def test_demo_writes_images_plot_and_summary(tmp_path, capsys):
    rc = main(["demo", "--model", "tiny", "--steps", "3", "--out", str(tmp_path), "--gamma-attn", "0.05",
               "--gamma-norm", "0.05"])
    assert rc == 0
    for f in ("vanilla.png", "ebcu.png", "comparison.png", "energy.png", "summary.json"):
        assert (tmp_path / f).stat().st_size > 100, f
    s = json.loads((tmp_path / "summary.json").read_text())
    assert s["model"] == "tiny" and s["steps"] == 3
    assert s["fraction_of_updates_that_lower_energy"] == 1.0  # small steps descend
    assert s["pixel_change_mean_abs"] > 0  # the update changes the image
    # the first layer sees the prompt context in both runs and the same noise at step 0
    assert len(s["posterior_energy_entering_layers_mean_over_steps"]["ebcu"]) == 7


def test_energy_log_matches_direct_computation():
    pipe = tiny_pipeline()
    log, seen = PosteriorEnergyLog(), {}

    class Grab:
        def on_cross_attention(self, ev):
            if ev.step == 0 and ev.layer == 2:
                seen["q"], seen["k"], seen["attn"] = ev.query.clone(), ev.key.clone(), ev.attn
                seen["ctx_out"], seen["n"] = ev.context_out.clone(), ev.n_uncond

    with energy_attention(pipe, EBCAConfig(gamma_attn=0.05, gamma_norm=0.05)) as ctl:
        ctl.observers += [log, Grab()]
        pipe("a red circle", num_inference_steps=2, generator=torch.Generator().manual_seed(0))
    n, attn = seen["n"], seen["attn"]
    with torch.no_grad():
        e_in = posterior_energy(seen["q"][n:], seen["k"][n:], attn.scale).mean()
        k_out = split_heads(attn.to_k(seen["ctx_out"][n:]), attn.heads)
        e_out = posterior_energy(seen["q"][n:], k_out, attn.scale).mean()
    assert log.before[0][2] == pytest.approx(e_in.item(), rel=1e-5)
    assert log.after[0][2] == pytest.approx(e_out.item(), rel=1e-5)
    assert log.after[0][2] < log.before[0][2]
    assert log.matrix("before").shape == (2, 7)


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
