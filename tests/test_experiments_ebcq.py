"""experiments.ebcq: edits measured against the same seeds without them."""
import numpy as np
import pytest

import ebca_viz as ev
from ebca_viz.experiments import ebcq
from ebca_viz.shapes.detect import Detection
from ebca_viz.models.shapes_world import weights_available

pytestmark = pytest.mark.skipif(not weights_available(), reason="shapes-world weights not shipped")


def test_predicates():
    d = [Detection("red", "circle", (0, 0, 4, 4), 16, 0.8), Detection("blue", "square", (8, 8, 10, 10), 4, 1.0)]
    assert ebcq.has("blue", "square")(d) and not ebcq.has("blue", "circle")(d)
    assert ebcq.top_is("red", "circle")(d) and not ebcq.top_is(shape="square")(d) and not ebcq.top_is("red")([])
    assert ebcq.not_(ebcq.top_is("red"))(d) is False
    assert ebcq.verdict(d) == "red circle; blue square" and ebcq.verdict([]) == "nothing"


def test_measure_pairs_seeds_and_reuses_the_base(shapes):
    r0 = ebcq.negation(shapes, 0.6, n=2, steps=3)
    assert r0.n == 2 and r0.images.shape == r0.base.shape == (2, 32, 32, 3)
    assert set(r0.rates) == set(ebcq.NEG_PREDICATES) and r0.change.n == 2
    # alpha 0 with the base reused: the same images, a zero paired difference
    none = ebcq.measure_edits(shapes, ebcq.NEG_PROMPT, [ev.Edit(prompt="a blue square", alpha=0.0, direction=-1)],
                        ebcq.NEG_PREDICATES, n=2, steps=3, base=(r0.base, r0.base_detections))
    assert np.array_equal(none.images, r0.base) and none.change.value == 0
    assert all(m.value == 0 for m in none.paired.values())
    row = r0.row()
    assert row["n"] == 2 and "blue square (unedited)" in row
    assert len(ebcq.plot_pairs(r0, k=2).axes) == 7  # 3 rows x 2 seeds + the colour bar
    assert len(ebcq.plot_rates([r0, none], [0.6, 0.0], ["blue square"], "alpha").axes) == 1


def test_bad_inputs_fail_before_sampling():
    with pytest.raises(ValueError, match="n must be"):
        ebcq.measure_edits(None, "x", [], {"a": ebcq.has("red", "circle")}, n=1)
    with pytest.raises(ValueError, match="predicates is empty"):
        ebcq.measure_edits(None, "x", [], {}, n=4)
    with pytest.raises(ValueError, match="EBCQ denominator"):
        ebcq.measure_edits(None, "x", [ev.Edit(prompt="y", alpha=1.0, direction=-1)], {"a": ebcq.has("red", "circle")}, n=4)


def test_series_draws_the_unedited_samples_once(shapes):
    rs = ebcq.series(ebcq.negation, shapes, [0.3, 0.6], n=2, steps=2)
    assert [r.settings["edits"][0]["alpha"] for r in rs] == [0.3, 0.6]
    assert rs[1].base is rs[0].base  # reused, not re-sampled
    assert rs[0].summary().startswith("- 'a blue square' x 0.3: blue square")
    assert rs[0].summary(unedited=True).startswith("unedited: blue square")
    with pytest.raises(ValueError, match="values is empty"):
        ebcq.series(ebcq.negation, shapes, [])
