"""The budget bounds everything a trace holds; "drop" keeps the longest complete prefix and says so."""
import warnings

import pytest
import torch

import ebca_viz as ev


def _sample(pipe, steps=3, runs=1):
    for r in range(runs):
        pipe("a red circle", num_inference_steps=steps, generator=torch.Generator().manual_seed(r))


def _held(tr) -> int:
    """Bytes of every tensor the trace holds once recording is over."""
    held = sum(t.nbytes for t in tr._stacked().values())
    held += sum(t.nbytes for rec in tr.record.per_step.values() for t in rec.values())
    return held


@pytest.mark.parametrize("quantities", [None, "all"])
def test_held_bytes_equal_the_accounted_bytes_over_two_runs_and_after_accessors(pipe, quantities):
    with ev.energy_attention(pipe, ev.EBCAConfig(gamma_attn=0.01)), ev.trace(pipe, quantities=quantities) as tr:
        _sample(pipe, steps=3, runs=2)
    assert _held(tr) == tr.nbytes
    before = _held(tr)
    tr.maps(); tr.energies(); tr.drift()  # accessors build no second stored copy
    assert _held(tr) == before == tr.nbytes


@pytest.mark.parametrize("slack, kept", [(0, 3), (-1, 2), ("half", None)])
def test_drop_at_just_below_and_well_below_the_estimate(pipe, slack, kept):
    q = ["maps", "energies", "context_norms"]
    est = ev.estimate_bytes(pipe, num_steps=3, quantities=q)
    budget = est // 2 if slack == "half" else est + slack
    with warnings.catch_warnings(record=True) as w:
        warnings.simplefilter("always")
        with ev.trace(pipe, quantities=q, budget_bytes=budget, on_budget="drop") as tr:
            _sample(pipe, steps=3)
    assert tr.nbytes <= budget and _held(tr) == tr.nbytes
    if slack == 0:
        assert tr.steps == [0, 1, 2] and not tr.dropped and not w
        return
    assert tr.dropped and any("dropped" in str(x.message) for x in w)
    if kept is not None:
        assert len(tr.steps) == kept
    else:  # half the budget: the fixed running sums give way, so that steps are still kept
        assert len(tr.steps) >= 1
    assert torch.isfinite(tr.energies()).all()  # every kept step is complete
