"""benchmarks/: the README's full-size numbers are the JSON's, and the scripts' code runs (tiny size).

The measurements themselves (minutes to hours on a CPU) never run here; ``benchmarks/full_size.py
--tiny`` runs the same code paths on the tiny test model in seconds.
"""
import json
import statistics
import sys
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))

import full_size  # noqa: E402
import overhead  # noqa: E402
import vs_original_ebca  # noqa: E402

VS_JSON = ROOT / "docs" / "benchmarks_vs_original_ebca.json"


@pytest.fixture
def one_thread():
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


def test_readme_full_size_block_is_generated_from_the_json():
    docs = full_size.load_docs()
    assert "cpu" in docs, "docs/benchmarks_full_size.json is missing: run python benchmarks/full_size.py"
    block = full_size.readme_block((ROOT / "docs" / "benchmarks.md").read_text())
    assert block == full_size.render(docs), "docs/benchmarks.md full-size block is stale: python benchmarks/full_size.py --readme"


def _check_summary(d, key):
    """The stored medians and ratios are those of the stored rounds."""
    assert d[f"median_{key}_s"] == pytest.approx(statistics.median(d[f"{key}_s"]))


def test_full_size_json_holds_what_was_asked():
    data = full_size.load_docs()["cpu"]["parts"]
    o = data["overhead"]["result"]
    assert o["latent"] == 64 and o["rounds"] >= 5 and o["params_M"] > 850  # SD 1.5 at 512 px, n >= 5
    assert set(full_size.OVERHEAD_MODES) <= set(o["modes"])
    base = o["modes"]["vanilla"]
    for m, d in o["modes"].items():
        assert len(d["cpu_s"]) == len(d["wall_s"]) == len(d["peak_bytes"]) == o["rounds"], m
        for key in ("cpu", "wall"):
            _check_summary(d, key)
            assert d[f"{key}_ratio"] == pytest.approx(d[f"median_{key}_s"] / statistics.median(base[f"{key}_s"]))
            lo, hi = d[f"{key}_ratio_range"]
            assert lo <= hi
    t = data["trace_memory"]["result"]
    assert t["image_px"] == 512 and t["latent"] == 64 and t["steps"] >= 2
    assert t["estimate_over_stored"] == pytest.approx(t["estimate_bytes"] / t["stored_bytes"])
    assert t["stored_bytes"] > 0 and t["estimate_50_steps_bytes"] > t["estimate_bytes"]
    for part in data.values():  # every part says where and how it was measured
        fp = part["fingerprint"]
        assert fp["command"].startswith("python benchmarks/full_size.py") and fp["versions"]["torch"] and fp["date_utc"]


def test_vs_original_json_agrees_and_is_not_vacuous():
    data = json.loads(VS_JSON.read_text())
    r = data["result"]
    assert r["agree"] and r["max_abs_diff"] <= r["tol"] * (1 + r["max_abs_eps"])
    assert r["max_abs_effect_vs_vanilla"] > 100 * r["max_abs_diff"]  # EBCU moved eps far more than the disagreement
    assert r["rounds"] >= 5 and r["size"] == "sd15" and r["params"] > 850e6
    for side in ("original", "ebca_viz"):
        assert len(r[side]["cpu_s"]) == r["rounds"]
        _check_summary(r[side], "cpu")
    assert r["cpu_ratio"] == pytest.approx(r["ebca_viz"]["median_cpu_s"] / r["original"]["median_cpu_s"])
    assert data["fingerprint"]["reference_commit"] == vs_original_ebca.REF_COMMIT
    assert data["fingerprint"]["reference_versions"]["diffusers"] == "0.16.1"


def test_full_size_script_runs_at_tiny_size(tmp_path, one_thread, capsys):
    out = tmp_path / "tiny.json"
    data = full_size.main(["--tiny", "--rounds", "1", "--out", str(out)])
    assert json.loads(out.read_text()) == json.loads(json.dumps(data))  # what was returned was written
    o = data["parts"]["overhead"]["result"]
    assert list(o["modes"]) == list(full_size.OVERHEAD_MODES) and o["latent"] == 8
    assert all(d["median_cpu_s"] > 0 and len(d["cpu_s"]) == 1 for d in o["modes"].values())
    t = data["parts"]["trace_memory"]["result"]
    assert t["image_px"] == 16 and t["stored_bytes"] > 0
    # the estimate made before sampling is the size of what the run stored (to 10%)
    assert t["estimate_over_stored"] == pytest.approx(1.0, abs=0.1)
    text = full_size.render({"cpu": data})
    for label in full_size.LABELS.values():
        assert label in text
    assert f"{t['estimate_bytes'] / 2**20:.1f} MiB" in text


def test_overhead_modes_are_checked():
    with pytest.raises(ValueError, match="vanilla"):
        overhead.make_modes(None, None, ("EBCU",))
    with pytest.raises(ValueError, match="among"):
        overhead.make_modes(None, None, ("vanilla", "EBCQ-only"))


def test_vs_original_skips_without_the_reference(tmp_path, capsys):
    rc = vs_original_ebca.main(["--ref-code", str(tmp_path / "no_checkout"), "--ref-python", str(tmp_path / "no_python")])
    said = capsys.readouterr().out
    assert rc == 0 and said.startswith("skipped:") and "not found" in said
    assert "--ref-code" in said and "--ref-python" in said


def test_vs_original_small_layout_is_the_fidelity_fixtures_one():
    meta = json.loads((ROOT / "tests" / "data" / "fidelity_ebca.json").read_text())
    unet, ref_cfg = vs_original_ebca.build("small")
    assert ref_cfg == meta["unet_config"]
    assert all(torch.equal(p, p.half().float()) for p in unet.parameters())  # lossless as fp16
