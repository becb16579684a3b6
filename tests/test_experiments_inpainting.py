"""ebca_viz.experiments.inpainting: scenes, error measures, detector verdicts, and a tiny end-to-end run."""
import numpy as np
import pytest

from ebca_viz.experiments import inpainting as xi
from ebca_viz.shapes import world


def test_cases_put_the_mask_away_from_the_known_object():
    cases = xi.make_cases(12, seed=3)
    assert len(cases) == 12 and len({c.seed for c in cases}) == 12
    for c in cases:
        assert c.mask.shape == (32, 32) and (c.mask > 0).sum() == 16 * 16
        assert c.target[0] != c.kept[0] and c.prompt == f"a {c.target[0]} {c.target[1]}"
        cx = (np.nonzero(c.source.max(-1) > 90)[1]).mean()  # the object's pixel centre
        cols = np.nonzero(c.mask.max(0))[0]
        assert not cols.min() <= cx <= cols.max()  # the mask is in the other half
    with pytest.raises(ValueError, match="n must be"):
        xi.make_cases(0)


def test_outside_error_and_follows():
    c = xi.make_cases(1, seed=1)[0]
    y = c.source.copy()
    y[c.mask > 0] = 255  # changes inside the mask do not count
    assert xi.outside_error(y, c.source, c.mask) == (0.0, 0.0)
    y[0, 0] = c.source[0, 0].astype(int) + 30
    m, mx = xi.outside_error(y, c.source, c.mask)
    assert mx == 30 and m == pytest.approx(30 * 3 / ((c.mask == 0).sum() * 3))
    # draw the target inside the mask: found; at the known object's place only: not found
    ys, xs = np.nonzero(c.mask)
    spec = world.ObjectSpec(c.target[1], c.target[0], float(xs.mean()), float(ys.mean()), 11.0)
    img, _ = world.render([spec])
    assert xi.follows(img, c.target, c.mask)
    assert not xi.follows(c.source, c.target, c.mask)


def test_measure_end_to_end_on_the_tiny_pipeline(tiny_pipe):
    r = xi.measure(tiny_pipe, n=2, steps=2, guidance=3.0, gammas=(0.1,), jump_length=1, jump_n_sample=1)
    assert list(r.conditions) == ["no update (gamma 0)", "masked EBCU (gamma 0.1)", xi.CONTROL]
    for c in r.conditions.values():
        assert c.mae_out.value == 0.0 and c.max_out == 0.0  # paste-back: the known pixels are the source's
        assert c.raw_mae_out.value > 0  # the decoder alone does not keep them
        assert c.follows.n == 2 and c.images.shape == (2, 16, 16, 3)
    assert r.floor_mae.n == 2 and r.floor_mae.value > 0
    fig = xi.plot_examples(r, xi.CONTROL, k=2)
    assert len(fig.axes) == 10
