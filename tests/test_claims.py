"""ebca_viz.claims: the intervals behind every result sentence, and the check that fails."""
import math

import numpy as np
import pytest

from ebca_viz import claims


def test_wilson_interval_matches_closed_form_values():
    # Wilson 95 % intervals (z = 1.96) computed by hand / from the textbook formula
    lo, hi = claims.Rate(5, 10).interval
    assert lo == pytest.approx(0.2366, abs=1e-4) and hi == pytest.approx(0.7634, abs=1e-4)
    lo, hi = claims.Rate(0, 10).interval
    assert lo == 0.0 and hi == pytest.approx(0.2775, abs=1e-4)
    lo, hi = claims.Rate(32, 32).interval
    assert hi == 1.0 and lo == pytest.approx(0.8928, abs=1e-4)


def test_rate_from_bools_and_formatting():
    r = claims.rate([True, False, True, True])
    assert (r.k, r.n, r.p) == (3, 4, 0.75)
    assert str(r).startswith("3/4 = 75.0 % (95 % CI")
    assert r.to_json()["lo"] == pytest.approx(r.lo)
    with pytest.raises(ValueError, match="n >= 1"):
        claims.Rate(0, 0)
    with pytest.raises(ValueError, match="successes"):
        claims.Rate(5, 3)


def test_mean_t_interval_and_paired_difference():
    m = claims.mean([1, 2, 3, 4, 5])
    assert m.value == 3 and m.sd == pytest.approx(math.sqrt(2.5))
    assert m.half_width == pytest.approx(2.776 * math.sqrt(2.5) / math.sqrt(5), rel=1e-3)
    assert m.excludes_zero
    d = claims.paired_diff([1, 0, 1, 0], [1, 0, 1, 0])
    assert d.value == 0 and not d.excludes_zero
    with pytest.raises(ValueError, match="not finite"):
        claims.mean([1.0, float("nan")])
    with pytest.raises(ValueError, match="differ in length"):
        claims.paired_diff([1, 2], [1])
    # t quantile: interpolated between table entries, normal in the limit
    assert claims._t975(22) < claims._t975(20) and claims._t975(22) > claims._t975(25)
    assert claims._t975(10_000) == pytest.approx(1.96, abs=1e-3)


def test_interval_coverage_is_near_95_percent():
    rng = np.random.default_rng(0)
    cover = 0
    for _ in range(2000):
        r = claims.rate(rng.random(40) < 0.3)
        cover += r.lo <= 0.3 <= r.hi
    assert 0.92 <= cover / 2000 <= 0.98


def test_check_raises_with_the_measured_numbers(capsys):
    claims.check(True, "a true claim")
    assert "check passed: a true claim" in capsys.readouterr().out
    with pytest.raises(claims.ClaimError, match=r"claim no longer holds: it works .*1/4"):
        claims.check(False, "it works", claims.Rate(1, 4))
    assert issubclass(claims.ClaimError, AssertionError)


def test_paired_rate_difference_stays_within_minus_one_to_one():
    d = claims.paired_diff([0] * 29 + [0] * 3, [1] * 29 + [0] * 3)  # 29 of 32 flipped 1 -> 0
    assert d.value == pytest.approx(-29 / 32) and d.lo >= -1.0 and d.hi < 0
    assert claims.paired_diff([0.5, 2.0], [0.0, 0.0]).bounds == (-math.inf, math.inf)
