"""ebca_viz.experiments.inpainting: scenes, error measures, detector verdicts, and a tiny end-to-end run."""
import numpy as np
import pytest

from ebca_viz.experiments import inpainting as xi
from ebca_viz.shapes import world


def test_cases_put_the_mask_away_from_the_known_object():
    for design in ("side", "side-full"):
        cases = xi.make_cases(12, seed=3, design=design)
        assert len(cases) == 12 and len({c.seed for c in cases}) == 12
        for c in cases:
            rows = 32 if design == "side-full" else 16
            assert c.mask.shape == (32, 32) and (c.mask > 0).sum() == rows * 16
            obj = c.source.max(-1) > 0  # every pixel the known object touches, anti-aliased edge included
            assert not (obj & (c.mask > 0)).any()  # the mask never touches the known object
            assert (obj[:, :16].any() != obj[:, 16:].any()) and not (c.mask > 0)[obj.any(0)[None].repeat(32, 0)].any()
            # the prompt is the caption of the whole desired scene, the known object and the new one
            a, b = f"a {c.kept[0]} {c.kept[1]}", f"a {c.target[0]} {c.target[1]}"
            assert c.prompt in (f"{a} and {b}", f"{b} and {a}") and c.target[0] != c.kept[0]
            # the control asks for a third colour and another shape, in the same caption form
            assert c.other[0] not in (c.kept[0], c.target[0]) and c.other[1] != c.target[1]
            assert c.control_prompt == c.prompt.replace(b, f"a {c.other[0]} {c.other[1]}")
    objs = [xi.make_cases(1, seed=1, prompt="object")[0], xi.make_cases(1, seed=1, design="legacy", prompt="object")[0]]
    assert [c.prompt for c in objs] == [f"a {c.target[0]} {c.target[1]}" for c in objs]
    with pytest.raises(ValueError, match="n must be"):
        xi.make_cases(0)
    with pytest.raises(ValueError, match="design must be one of"):
        xi.make_cases(2, design="centre")
    with pytest.raises(ValueError, match="prompt must be one of"):
        xi.make_cases(2, prompt="target")


def test_legacy_design_keeps_the_first_version():
    """The first version's scenes (for the sweep's comparison): the mask in the half not holding the
    object's centre, the target cycling through the other colours."""
    cases = xi.make_cases(12, seed=3, design="legacy", prompt="object")
    for c in cases:
        assert (c.mask > 0).sum() == 16 * 16 and c.prompt == f"a {c.target[0]} {c.target[1]}"
        cx = (np.nonzero(c.source.max(-1) > 90)[1]).mean()  # the object's pixel centre
        cols = np.nonzero(c.mask.max(0))[0]
        assert not cols.min() <= cx <= cols.max()


def test_outside_error_and_follows():
    c = xi.make_cases(1, seed=1)[0]
    y = c.source.copy()
    y[c.mask > 0] = 255  # changes inside the mask do not count
    assert xi.outside_error(y, c.source, c.mask) == (0.0, 0.0)
    yk, xk = np.argwhere((c.mask == 0) & (c.source.max(-1) == 0))[0]  # a known background pixel
    y[yk, xk] = 30
    m, mx = xi.outside_error(y, c.source, c.mask)
    assert mx == 30 and m == pytest.approx(30 * 3 / ((c.mask == 0).sum() * 3))
    # draw the target inside the mask: found; at the known object's place only: not found
    ys, xs = np.nonzero(c.mask)
    spec = world.ObjectSpec(c.target[1], c.target[0], float(xs.mean()), float(ys.mean()), 11.0)
    img, _ = world.render([spec])
    assert xi.follows(img, c.target, c.mask)
    assert not xi.follows(c.source, c.target, c.mask)


def test_measure_end_to_end_on_the_tiny_pipeline(tiny_pipe):
    r = xi.measure_inpainting(tiny_pipe, n=2, steps=2, guidance=3.0, gammas=(0.1,), jump_length=1, jump_n_sample=1)
    assert list(r.conditions) == ["no update (gamma 0)", "masked EBCU (gamma 0.1)", xi.CONTROL, xi.OTHER]
    for c in r.conditions.values():
        assert c.mae_out.value == 0.0 and c.max_out == 0.0  # paste-back: the known pixels are the source's
        assert c.raw_mae_out.value > 0  # the decoder alone does not keep them
        assert c.follows.n == 2 and c.images.shape == (2, 16, 16, 3)
    assert r.conditions[xi.CONTROL].prompts == ["", ""] and r.conditions[xi.CONTROL].asked is None
    assert r.conditions[xi.OTHER].prompts == [c.control_prompt for c in r.cases]
    assert r.floor_mae.n == 2 and r.floor_mae.value > 0
    fig = xi.plot_examples(r, xi.OTHER, k=2)
    assert len(fig.axes) == 9  # 4 rows x 2 scenes + the colour bar of the difference maps
    with pytest.raises(ValueError, match="controls must be"):
        xi.measure_inpainting(tiny_pipe, n=1, steps=1, controls=("negative",))
    with pytest.raises(ValueError, match="cases must be"):
        xi.measure_inpainting(tiny_pipe, cases=xi.make_cases(1, size=32))


def test_report_scenes_follow_the_prompt_on_shapes_world(shapes):
    """The notebook's claim, re-run on its first 4 report scenes (seed 0, full settings: 25 steps,
    CFG 3, RePaint 5/2): the prompted object is found inside the mask in a majority of them, more
    often than under the empty prompt, the known object is kept and the known pixels are the source's."""
    cases = xi.make_cases(4, seed=xi.REPORT_SEED)
    r = xi.measure_inpainting(shapes, steps=25, guidance=3.0, gammas=(), jump_length=5, jump_n_sample=2, controls=("empty",),
                   cases=cases)
    base, ctrl = r.conditions["no update (gamma 0)"], r.conditions[xi.CONTROL]
    assert base.follows.k >= 3 and base.follows.k > ctrl.follows.k, (base.follows, ctrl.follows)
    assert base.kept.k == 4 and base.max_out == 0.0
