"""Shipped benchmark results: atomic write, digest and fingerprint refusal, the interval-overlap agreement
rule, and the multiconcept view recomputed from per-sample verdicts (notebooks 02 and 08 use them)."""
import json
from pathlib import Path

import numpy as np
import pytest
import torch

from ebca_viz import claims
from ebca_viz.experiments import multiconcept as mc
from ebca_viz.experiments import shipped

ROOT = Path(__file__).resolve().parents[1]


def _pair_data():
    """A two-method pair result with known counts: vanilla 3/4 both right, EBCU 1/4 (paired -0.5)."""
    results = {"pair": {
        "split": "report", "seed_base": 0, "n": 4, "steps": 25, "guidance": 3.0, "seconds": 1.0,
        "items": [[["red", "circle"], ["blue", "square"]]] * 4, "prompts": ["a red circle and a blue square"] * 4,
        "seeds": [0, 1, 2, 3],
        "methods": {
            "vanilla": {"verdicts": ["both_present", "both_present", "both_present", "swapped"], "extra": [0, 0, 1, 0],
                        "change": [0.0] * 4},
            "EBCU": {"verdicts": ["both_present", "missing", "wrong_binding", "swapped"], "extra": [1, 1, 1, 0],
                     "change": [0.5, 3.0, 2.0, 1.5]},
        }},
        "single": {"methods": {"vanilla": {"exact": [1, 0, 1, 0, 1, 1]}, "EBCU": {"exact": [1, 1, 1, 0, 1, 1]}}}}
    fp = {"weights_sha256": "ab" * 32, "settings": {"steps": 25, "guidance": 3.0, "regime": {"seg_layers": ["down"]}},
          "seeds": {"pair": {"base": 0, "n": 4}}}
    return fp, results


def test_write_load_roundtrip_and_digest(tmp_path):
    fp, res = _pair_data()
    path = shipped.write(tmp_path / "r.json", fp, res)
    assert not (tmp_path / "r.json.tmp").exists()  # atomic: the temporary file was renamed
    data = shipped.load(path, expect={"weights_sha256": "ab" * 32, "settings": {"steps": 25,
                                                                               "regime": {"seg_layers": ("down",)}}})
    assert data["format"] == shipped.FORMAT
    assert data["digest"] == shipped.digest(fp, res) and len(data["digest"]) == 64


def test_load_refuses_edited_results_and_other_fingerprints(tmp_path):
    fp, res = _pair_data()
    path = shipped.write(tmp_path / "r.json", fp, res)
    raw = json.loads(path.read_text())
    raw["results"]["pair"]["methods"]["EBCU"]["verdicts"][1] = "both_present"  # a hand-edited number
    (tmp_path / "edited.json").write_text(json.dumps(raw))
    with pytest.raises(shipped.ShippedMismatchError, match="digest"):
        shipped.load(tmp_path / "edited.json")
    with pytest.raises(shipped.ShippedMismatchError, match=r"settings\.steps: file 25, here 10"):
        shipped.load(path, expect={"settings": {"steps": 10}})
    with pytest.raises(shipped.ShippedMismatchError, match="weights_sha256"):
        shipped.load(path, expect={"weights_sha256": "cd" * 32})
    (tmp_path / "bad.json").write_text("{not json")
    with pytest.raises(shipped.ShippedMismatchError, match="not a JSON file"):
        shipped.load(tmp_path / "bad.json")
    (tmp_path / "old.json").write_text(json.dumps({"n": 192}))
    with pytest.raises(shipped.ShippedMismatchError, match="format"):
        shipped.load(tmp_path / "old.json")
    with pytest.raises(FileNotFoundError, match="benchmarks/"):
        shipped.load(tmp_path / "absent.json")
    with pytest.raises(FileNotFoundError, match="does not exist"):
        shipped.write(tmp_path / "no" / "r.json", fp, res)


def test_overlap_rule_with_real_intervals():
    base = claims.Rate(72, 192)  # 37.5 % [31.0, 44.5]
    assert shipped.overlap(base, claims.Rate(5, 16))  # 31.3 % [14.2, 55.6]
    assert not shipped.overlap(base, claims.Rate(16, 16))  # 100 % [80.6, 100]: disjoint
    assert shipped.agree(base, claims.Rate(6, 16), "vanilla both right")
    with pytest.raises(claims.ClaimError, match="intervals overlap"):
        shipped.agree(base, claims.Rate(16, 16), "vanilla both right")
    a = shipped.verdict_agreement(["x", "y", "z", "w"], ["x", "y", "q"])
    assert (a.k, a.n) == (2, 3)
    with pytest.raises(ValueError, match="only 2 shipped"):
        shipped.verdict_agreement(["x", "y"], ["x", "y", "z"])


def test_weights_sha256_sees_one_changed_weight():
    class P:
        unet = torch.nn.Linear(3, 2)
        vae = torch.nn.Conv2d(1, 1, 1)
        text_encoder = None

    h1 = shipped.weights_sha256(P)
    assert h1 == shipped.weights_sha256(P) and len(h1) == 64
    with torch.no_grad():
        P.unet.weight[0, 0] += 1e-6
    assert shipped.weights_sha256(P) != h1


def test_multiconcept_view_recomputes_rates_from_verdicts(tmp_path):
    fp, res = _pair_data()
    data = shipped.load(shipped.write(tmp_path / "r.json", fp, res))
    r = mc.result_from_shipped(data)
    van, eb = r.methods["vanilla"], r.methods["EBCU"]
    assert (van.rates["both_present"].k, van.rates["both_present"].n) == (3, 4)
    assert (eb.rates["missing"].k, eb.rates["extra"].k) == (1, 3)
    assert eb.vs_vanilla.value == pytest.approx(-0.5)
    assert (eb.changed.k, eb.changed.n) == (3, 4)  # mean |diff| > 1/255 on 3 of 4 seeds
    s = mc.single_from_shipped(data, "exact")
    assert (s["vanilla"].k, s["EBCU"].k) == (4, 5)
    assert s["EBCU vs vanilla"].value == pytest.approx(1 / 6)
    # a live re-sample of the first 2 seeds: the EBCU verdicts agree on 1 of 2 seeds
    live = mc.MulticonceptResult(r.items[:2], r.prompts[:2], r.seeds[:2], 25, 3.0)
    live.methods["vanilla"] = mc._method_from_verdicts("vanilla", ["both_present", "both_present"], [0, 0])
    live.methods["EBCU"] = mc._method_from_verdicts("EBCU", ["both_present", "both_present"], [0, 0],
                                                    ["both_present", "both_present"], [2.0, 2.0])
    ag = mc.compare_live(r, live)
    assert (ag.verdicts["EBCU"].k, ag.verdicts["vanilla"].k) == (1, 2)
    assert ag.all_overlap and ag.n_overlap == len(ag.rows) == 9
    assert mc.first_flips(van.verdicts, eb.verdicts, k=5) == [1, 2]


def test_shipped_file_in_docs_is_valid_and_matches_failure_types():
    """docs/shapes_multiconcept.json: digest valid, and its two-object verdicts reproduce
    docs/shapes_failure_types.json (same prompts, seeds, batch; that file has no fingerprint)."""
    path = mc.shipped_path()
    if not path.exists():
        pytest.skip("docs/shapes_multiconcept.json not produced yet (benchmarks/shapes_multiconcept.py)")
    data = shipped.load(path)
    fp = data["fingerprint"]
    assert fp["settings"]["steps"] == 25 and fp["seeds"]["pair"]["n"] == 192 and len(fp["weights_sha256"]) == 64
    r = mc.result_from_shipped(data)
    assert r.n == 192 and list(r.methods)[:2] == ["vanilla", "EBCU"]
    old = json.loads((ROOT / "docs" / "shapes_failure_types.json").read_text())
    same = np.mean([a == b for a, b in zip(old["verdicts"]["vanilla"], r.methods["vanilla"].verdicts)])
    assert same >= 0.95, f"vanilla verdicts agree with shapes_failure_types.json on only {same:.1%}"


def test_resample_refuses_methods_and_n_outside_the_file(tmp_path):
    fp, res = _pair_data()
    data = shipped.load(shipped.write(tmp_path / "r.json", fp, res))
    with pytest.raises(ValueError, match=r"\['EBCQ'\] are not in the shipped file"):
        mc.resample_pair(None, data, [mc.Method("vanilla"), mc.Method("EBCQ")], n=2)
    with pytest.raises(ValueError, match="n must be in 2..4"):
        mc.resample_pair(None, data, [mc.Method("vanilla")], n=5)
    with pytest.raises(KeyError, match="not in this result"):
        mc.result_from_shipped(data).only(["vanilla", "SEG"])
