"""Config and schedule inputs that used to be accepted silently or gave raw errors (issue: nothing silently wrong)."""
import math

import pytest

import ebca_viz as ev
from ebca_viz.config import MIN_EBCQ_DENOMINATOR
from ebca_viz.schedule import Schedule


def test_scalar_token_indices_and_weights_are_accepted():
    rc = ev.EBCAConfig(gamma_attn=0.1, token_indices=5, token_upweight=2.0).validate()
    assert rc.token_indices == [5] and rc.token_upweight == [2.0]
    rc = ev.EBCAConfig(token_indices=[3, 7], token_upweight=1.5).validate()
    assert rc.token_upweight == [1.5, 1.5]


def test_duplicate_token_indices_are_refused():
    with pytest.raises(ValueError, match=r"token_indices lists \[5\] more than once"):
        ev.EBCAConfig(token_indices=[5, 5], token_upweight=[2.0, 2.0]).validate()


@pytest.mark.parametrize("bad, exc, msg", [
    (dict(token_indices="5", token_upweight=[2.0]), TypeError, "token_indices must be an int or a list"),
    (dict(token_indices=[5], token_upweight="2"), TypeError, "token_upweight must be a number or a list"),
    (dict(edits=5), TypeError, "edits must be a list of Edit"),
])
def test_bad_config_types_name_the_parameter(bad, exc, msg):
    with pytest.raises(exc, match=msg):
        ev.EBCAConfig(**bad).validate()


def test_edits_none_means_no_edits():
    assert ev.EBCAConfig(edits=None).validate().edits == []


def test_unhashable_direction_is_a_clear_error():
    with pytest.raises(ValueError, match=r"edits\[0\].direction must be \+1"):
        ev.EBCAConfig(edits=[ev.Edit(prompt="x", direction=[1])]).validate()


def test_schedule_kind_and_values_are_checked():
    with pytest.raises(ValueError, match="Schedule kind must be one of"):
        Schedule("bogus", value=0.1)
    with pytest.raises(TypeError, match=r"Schedule.window\(value\) must be a number"):
        Schedule.window("abc")
    with pytest.raises(TypeError, match="Schedule.steps takes a list"):
        Schedule.steps(0.3)


def test_per_step_list_with_one_value_per_denoising_step_covers_pndm_extra_call():
    s = Schedule.steps([0.1, 0.2, 0.3])
    assert [s(i, 3) for i in range(4)] == [0.1, 0.2, 0.3, 0.3]  # PNDM: T + 1 calls
    with pytest.raises(ValueError, match=r"has 3 values but sampling reached step 4: give 5 \(one per denoising step\)"):
        s(4, 5)


def test_ebcq_denominator_bound_is_documented_and_enforced():
    near = 1 - MIN_EBCQ_DENOMINATOR / 2  # |den| = 0.025 < 0.05: a 40x amplification
    rc = ev.EBCAConfig(edits=[ev.Edit(prompt="x", alpha=near, direction=-1)]).validate()
    with pytest.raises(ValueError, match=r"within 0.05 of 0 \(it would amplify the edit 40x\)"):
        rc.check_denominators(10, 10)
    ok = ev.EBCAConfig(edits=[ev.Edit(prompt="x", alpha=1 - 2 * MIN_EBCQ_DENOMINATOR, direction=-1)]).validate()
    ok.check_denominators(10, 10)
    # 0.99999 with negation (den 1e-5) used to pass silently
    rc = ev.EBCAConfig(edits=[ev.Edit(prompt="x", alpha=0.99999, direction=-1)]).validate()
    with pytest.raises(ValueError, match="EBCQ denominator"):
        rc.check_denominators(10, 10)


@pytest.mark.parametrize("bad, exc, msg", [
    (dict(layers=None), TypeError, "layers must be a list"),
    (dict(inf_threshold=-5), ValueError, "inf_threshold must be > 0"),
])
def test_seg_config_errors(bad, exc, msg):
    with pytest.raises(exc, match=msg):
        ev.SEGConfig(**bad).validate()


def test_gamma_stop_out_of_range_is_refused_before_sampling(pipe):
    from ebca_viz.tasks import multiconcept

    with pytest.raises(ValueError, match=r"gamma_stop is the fraction of the run.*got 2.0"):
        multiconcept(pipe, "a red circle", gamma_stop=2.0, num_inference_steps=2)
    assert math.isfinite(MIN_EBCQ_DENOMINATOR)


def test_compiled_unet_is_refused_with_the_fix(tiny_pipe):
    import torch

    compiled = torch.compile(tiny_pipe.unet)  # wraps, compiles lazily: nothing runs here
    with pytest.raises(TypeError, match=r"torch.compile'd module: install on the uncompiled UNet"):
        ev.apply_energy_attention(compiled, ev.EBCAConfig(gamma_attn=0.01))
    with pytest.raises(TypeError, match="torch.compile"):
        ev.trace(compiled)


def test_sdxl_edit_prompts_are_encoded_with_both_text_encoders():
    import torch

    from ebca_viz.models import load_pipeline

    pipe = load_pipeline("tiny-sdxl")
    pipe.set_progress_bar_config(disable=True)
    with ev.energy_attention(pipe, ev.EBCAConfig(edits=[ev.Edit(prompt="boat", alpha=0.5)])) as ctl:
        out = pipe("a river", num_inference_steps=2, generator=torch.Generator().manual_seed(0), output_type="pt",
                   height=64, width=64).images
        assert ctl.edit_embeds[0].shape[-1] == pipe.unet.config.cross_attention_dim
    assert torch.isfinite(out).all()
