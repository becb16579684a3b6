"""The tour's descent-first helpers: repeated updates, the 95 % step-size rule, its figures, the demo-seed rule."""

import numpy as np
import pytest
import torch

from ebca_viz import claims
from ebca_viz import energy as E
from ebca_viz import plots as EP
from ebca_viz import energy_steps as ES
from ebca_viz.tour import DemoChoice, verdict_text

from energy_layers import random_layer  # noqa: E402


def _layer(B=1, **kw):
    return random_layer(B=B, **kw)


def test_repeated_updates_start_at_the_context_and_follow_context_update():
    q, c, w_k, beta, H = _layer()
    e = ES.repeated_updates(q, c, w_k, H, beta, 0.05, 0.05, n_steps=3)
    assert e.shape == (4, 3)
    k = E.split_heads(c @ w_k.T, H)
    post0 = float(E.posterior_energy(q, k, beta).sum())
    assert e[0, 2] == pytest.approx(post0, rel=1e-12)
    assert e[0, 2] == pytest.approx(e[0, 0] + e[0, 1], rel=1e-12)
    c1 = c + E.context_update(E.attention_scores(q, k, beta), q, k, w_k, 0.05, 0.05)
    post1 = float(E.posterior_energy(q, E.split_heads(c1 @ w_k.T, H), beta).sum())
    assert e[1, 2] == pytest.approx(post1, rel=1e-12)


def test_small_repeated_updates_descend_and_a_huge_step_overshoots():
    q, c, w_k, beta, H = _layer(seed=3)
    small = ES.repeated_updates(q, c, w_k, H, beta, 0.01, 0.01, n_steps=20)[:, 2]
    assert np.all(np.diff(small) < 0)
    huge = ES.repeated_updates(q, c, w_k, H, beta, 50.0, 50.0, n_steps=1)[:, 2]
    assert huge[1] > huge[0]
    with pytest.raises(ValueError, match="n_steps"):
        ES.repeated_updates(q, c, w_k, H, beta, 0.01, 0.01, n_steps=0)


def test_largest_descending_gamma_rule():
    g = [0.01, 0.03, 0.1, 0.3]
    rates = [claims.Rate(100, 100), claims.Rate(96, 100), claims.Rate(94, 100), claims.Rate(60, 100)]
    assert ES.largest_descending_gamma(g, rates) == (1, 0.03)
    assert ES.largest_descending_gamma(g, rates, level=0.9) == (2, 0.1)
    assert ES.largest_descending_gamma(g, [claims.Rate(1, 2)] * 4) == (None, None)
    with pytest.raises(ValueError, match="differ in length"):
        ES.largest_descending_gamma(g, rates[:2])
    with pytest.raises(ValueError, match="level"):
        ES.largest_descending_gamma(g, rates, level=0)


def test_gamma_sweep_figure_and_readable_fonts():
    rng = np.random.default_rng(0)
    g = np.array([0.01, 0.1, 0.3, 1.0])
    fo = -rng.uniform(1, 2, (3, 2, 4))  # first-order change at run gamma 0.3 (downhill)
    # a quadratic line search: change(g) = fo*g/0.3 + a g^2, crosses zero at g = -fo/(0.3 a)
    ch = fo[..., None] * g / 0.3 + 10.0 * g ** 2
    fig = EP.readable(EP.plot_gamma_sweep(g, ch, fo, 0.3, chosen=0.1, marks={"run": 0.3}))
    assert fig.get_size_inches()[0] <= 9.0
    sizes = [t.get_fontsize() for t in fig.findobj(lambda o: hasattr(o, "get_text") and hasattr(o, "get_fontsize"))
             if t.get_text()]
    assert min(sizes) >= 10
    right = fig.axes[1]
    share = right.lines[0].get_ydata()
    assert share[0] == pytest.approx(100.0) and share[-1] == pytest.approx(0.0)
    with pytest.raises(ValueError, match="run_gamma"):
        EP.plot_gamma_sweep(g, ch, fo, 0.0)


def test_readable_narrows_a_wide_figure():
    fig = EP.ExplainerFigure(figsize=(15, 4))  # not new_figure, which would cap it at EP.MAX_WIDTH_IN itself
    ax = fig.subplots()
    ax.set_title("x", fontsize=6)
    EP.readable(fig)
    assert fig.get_size_inches()[0] == pytest.approx(9.0)
    assert ax.title.get_fontsize() == 10
    with pytest.raises(ValueError):
        EP.readable(fig, min_pt=0)
    ax.plot([0, 1], label="a")
    ax.legend(loc="upper left")
    EP.readable(fig, legend_loc=["lower right"])
    assert ax.get_legend()._loc == 4  # matplotlib's code of "lower right"
    with pytest.raises(ValueError, match="legend_loc"):
        EP.readable(fig, legend_loc=["best", "best"])


def test_repeated_updates_figure():
    fig = EP.plot_repeated_updates({"a": [3.0, 2.0, 1.5], "b": [3.0, 1.0, 0.5]})
    assert len(fig.axes[0].lines) == 2
    with pytest.raises(ValueError, match="at least 2"):
        EP.plot_repeated_updates({"a": [1.0]})


def test_gradient_check_title_prints_the_float64_difference():
    a = torch.linspace(-1, 1, 50, dtype=torch.float64)
    fig = EP.plot_gradient_check(a, a + 1.8e-15)
    t = fig.axes[0].get_title()
    assert "0.0e+00" not in t and "e-15" in t and "equal to float precision" in t
    t2 = EP.plot_gradient_check(a, a + 1e-3).axes[0].get_title()
    assert "1.0e-03" in t2 and "relative" in t2


def test_demo_choice_fixes_breaks_and_rule():
    im = np.zeros((4, 8, 8, 3), np.uint8)
    ch = DemoChoice(seed=2, index=2, fixed=True, seeds=[0, 1, 2, 3],
                    vanilla=["both_present", "both_present", "missing", "swapped"],
                    ebcu=["both_present", "swapped", "both_present", "both_present"],
                    found_vanilla=[""] * 4, found_ebcu=[""] * 4, images_vanilla=im, images_ebcu=im)
    assert (ch.fixes.k, ch.fixes.n) == (2, 4)
    assert (ch.breaks.k, ch.breaks.n) == (1, 4)
    assert "seed 2: the first of seeds 0-3" in ch.rule() and "missing" in ch.rule()
    ch.fixed, ch.index, ch.seed = False, 0, 0
    assert "simply the first seed" in ch.rule()
    assert verdict_text("both_present", "red circle; blue square") == "both right: red circle; blue square"


def test_choose_demo_seed_refuses_bad_input_before_sampling():
    from ebca_viz.tour import choose_demo_seed

    req = (("red", "circle"), ("blue", "square"))
    with pytest.raises(ValueError, match="vanilla_images"):
        choose_demo_seed(None, req, None, seeds=range(4), vanilla_images=np.zeros((3, 8, 8, 3), np.uint8))
    with pytest.raises(ValueError, match="seeds is empty"):
        choose_demo_seed(None, req, None, seeds=[])
    with pytest.raises(ValueError, match="two \\(colour, shape\\) pairs"):
        choose_demo_seed(None, (("red", "circle"),), None)


def test_two_column_layouts_fit_nine_inches_and_move_legends_to_the_free_cell():
    rng = np.random.default_rng(1)
    S, L, B = 5, 3, 2
    mk = lambda: {k: rng.normal(size=(S, L, B)) for k in EP.KINDS}  # noqa: E731
    before = mk()
    after = {k: v + rng.normal(size=v.shape) for k, v in before.items()}
    fig = EP.plot_energy_terms(before, after, reference=mk(), layer_names=["a", "b", "c"], ncols=2, title="t")
    w = min(9.0, EP.MAX_WIDTH_IN)  # 9 in asked; new_figure keeps it within JupyterLab's output area
    assert tuple(fig.get_size_inches()) == pytest.approx((w, 8.4 * w / 9.0))
    assert fig._ebca_spare.get_legend() is not None or fig._ebca_spare.artists  # the cascade legend moved there
    assert all(ax.get_legend() is None for ax in fig.axes if ax is not fig._ebca_spare)
    g = np.array([0.01, 0.3, 3.0])
    fo = -rng.uniform(1, 2, (S, L, B))
    fig = EP.plot_step_size(g, fo[..., None] * g / 0.3 + g ** 2, fo, 0.3, ncols=2)
    assert fig.get_size_inches()[0] == pytest.approx(w)
    from matplotlib.legend import Legend

    titles = {lg.get_title().get_text() for lg in fig._ebca_spare.findobj(Legend)}
    assert titles == {"top-left panel", "bottom panel"}
    fig = EP.plot_descent_map(rng.normal(size=(S, L, B)), ncols=2)
    assert fig.get_size_inches()[0] == pytest.approx(w)
    one_row = EP.plot_energy_terms(before, after, reference=mk())
    assert one_row.get_size_inches()[0] == pytest.approx(EP.MAX_WIDTH_IN)  # one row of 15.6 in, capped by new_figure
