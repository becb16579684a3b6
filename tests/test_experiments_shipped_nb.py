"""Notebooks 03-07's shipped results: per-seed outcomes written as JSON and read back as the same numbers,
the negation rule, and the figures they feed (small sizes; the real files come from benchmarks/)."""
import json

import numpy as np
import pytest

from ebca_viz import claims
from ebca_viz.experiments import ebcq, inpainting as xi, realedit as RX, seg as X, shipped


def test_negation_outcomes_tell_removal_from_replacement():
    base = [[["red", "circle"], ["blue", "square"]]] * 3 + [[["red", "square"]]]
    edited = [[["red", "circle"]],                      # removed: the rest as it was
              [["red", "circle"], ["green", "square"]],  # replaced by another object
              [],                                        # gone, but the red circle too: neither
              [["red", "square"]]]                       # no blue square to remove: not counted
    o = ebcq.negation_outcomes(base, edited)
    assert o["seeds_with_target"] == [0, 1, 2]
    assert o["gone"].tolist() == [True, True, True]
    assert o["removed"].tolist() == [True, False, False] and o["replaced"].tolist() == [False, True, False]
    assert o["count_change"].tolist() == [-1, 0, -2]
    r = ebcq.negation_rates(base, edited)
    assert r["removed"] == claims.Rate(1, 3) and r["replaced"] == claims.Rate(1, 3)
    assert ebcq.negation_rates([[["red", "circle"]]], [[]]) == {}
    assert ebcq.rest_kept(base, edited).tolist() == [True, True, False]
    rows = [dict(alpha=0.3, start=0.0, removed=dict(p=0.1), rest_kept=dict(p=0.9)),
            dict(alpha=0.9, start=0.0, removed=dict(p=0.5), rest_kept=dict(p=0.2)),
            dict(alpha=0.6, start=0.4, removed=dict(p=0.5), rest_kept=dict(p=0.7)),
            dict(alpha=0.15, start=0.0, removed=None, rest_kept=None)]
    assert ebcq.choose_negation(rows) == {"alpha": 0.6, "start": 0.4}  # tie on removal: the rest kept more often
    # the most removing setting wrecks the rest of the scene (kept in 20 % of seeds < 50 %): not eligible
    assert ebcq.choose_negation([rows[0], rows[1], rows[3]]) == {"alpha": 0.3, "start": 0.0}
    # no setting keeps the rest in half the seeds: every setting is eligible again
    assert ebcq.choose_negation([rows[1], dict(alpha=0.15, start=0.0, removed=dict(p=0.0), rest_kept=dict(p=0.1))]) \
        == {"alpha": 0.9, "start": 0.0}
    with pytest.raises(ValueError, match="no rows"):
        ebcq.choose_negation([])


def test_ebcq_result_json_round_trip_and_figures(shapes):
    r = ebcq.negation(shapes, 0.6, seeds=[3, 5], steps=2)
    assert r.settings["seeds"] == [3, 5] and r.n == 2
    back = ebcq.ShippedRow.from_json(json.loads(json.dumps(ebcq.result_json(r))))
    assert back.rates == r.rates and back.base_rates == r.base_rates and back.n == 2
    assert back.keys == [ebcq.keys_of(d) for d in r.detections]
    assert back.paired["blue square"].value == pytest.approx(r.paired["blue square"].value)
    assert back.paired["blue square"].bounds == (-1.0, 1.0)
    assert ebcq.settings_label(back) == "NOT: - 0.6 x 'a blue square'"
    fig = ebcq.plot_rates([back], [0.6], ["blue square"], "alpha")
    assert min(t.get_fontsize() for t in fig.findobj(lambda o: hasattr(o, "get_fontsize"))) >= 10
    assert len(ebcq.plot_pairs(r, k=2).axes) == 7  # 3 rows x 2 seeds + the colour bar
    cols = {"unedited": (r.base, r.base_detections), "edited": (r.images, r.detections)}
    assert len(ebcq.plot_seed_series(cols, [3, 5], "t").axes) == 4


def test_realedit_shipped_round_trip(shapes, tmp_path):
    res = RX.run_shipped(shapes, n=4, n_parts=2, steps=2, log=lambda *a: None)
    fp = RX.shipped_fingerprint(shipped.weights_sha256(shapes), 4, 2, 2, 3.0)
    shipped.write(tmp_path / "r.json", fp, res)
    o = RX.load_shipped(shapes, guidance=3.0, path=tmp_path / "r.json")
    assert o["rec"].n == 4 and o["steps"] == 2 and o["rec"].mae.n == 4
    assert o["rec"].mae.value == pytest.approx(float(np.mean(res["rec"]["per_image"]["mae"])))
    assert o["both"].n == 4 and set(o["both"].single) >= {"success", "colour"}
    assert 0.9 * 4 * 4 * 8 * 8 <= sum(o["hist"]["rec"]) <= 4 * 4 * 8 * 8  # the z_T values within [-4, 4]
    assert set(o["parts"]) == {p.name for p in RX.PARTS}
    with pytest.raises(shipped.ShippedMismatchError, match="guidance"):
        RX.load_shipped(shapes, guidance=7.5, path=tmp_path / "r.json")
    assert len(RX.plot_latents([o["rec"], o["nozero"]], hists=[o["hist"]["rec"], o["hist"]["nozero"]]).axes) == 2


def test_inpainting_shipped_round_trip(tiny_pipe, tmp_path):
    res = xi.run_shipped(tiny_pipe, n=2, steps=2, gammas=(0.1,), log=lambda *a: None)
    shipped.write(tmp_path / "i.json", {"settings": {"guidance": 3.0}}, json.loads(json.dumps(res)))
    M, _ = xi.load_shipped(guidance=3.0, path=tmp_path / "i.json")
    assert [c.source.shape for c in M.cases] == [(16, 16, 3)] * 2
    base = M.conditions["no update (gamma 0)"]
    assert base.verdicts == res["conditions"]["no update (gamma 0)"]["verdicts"] and base.follows.n == 2
    assert M.vs("masked EBCU (gamma 0.1)", base.name).n == 2
    lines, diffs = xi.ebcu_null_lines(M, (0.1,))
    assert len(lines) == 2 and set(diffs) == {0.1}
    assert any("pts" in ln for ln in xi.report_lines(M, (0.1,))) is False  # report lines carry rates, not pts
    assert "VAE round trip" in xi.report_lines(M, (0.1,))[1]


def test_seg_study_json_round_trip(shapes):
    s = X.SEGSetting(3.0, 1.0, ("mid",), 3.0)
    study = X.measure_seg(shapes, [s], n=2, steps=2)
    back = X.study_from_json(json.loads(json.dumps(X.study_json(study))))
    assert back.table() == study.table()
    assert back[s].energy_gap.value == pytest.approx(study[s].energy_gap.value)
    ns = X.notebook_settings(3.0)
    assert len(ns["all"]) == 14 and ns["by_sigma"][1.0][0].sigma == 0.1
    fig = X.plot_seed_grid(study.seed_rows([s.baseline(), s], [0, 1]), study.seeds, base_key=s.baseline().label,
                           prompts=study.prompts)
    assert min(t.get_fontsize() for t in fig.findobj(lambda o: hasattr(o, "get_fontsize"))) >= 10
