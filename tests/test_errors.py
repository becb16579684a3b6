"""Bad input: a clear error naming the parameter, and the pipeline left as it was."""
import types

import pytest
import torch

import ebca_viz as ev


def _run(pipe, steps=2, **kw):
    g = torch.Generator().manual_seed(0)
    return pipe("a red circle", num_inference_steps=steps, generator=g, output_type="pt", **kw).images


EMB = torch.zeros(1, 77, 32)

CONFIG_ERRORS = [
    (dict(gamma_attn=-0.1), "gamma_attn"),
    (dict(gamma_norm=-1e-3), "gamma_norm"),
    (dict(gamma_attn=float("nan")), "gamma_attn"),
    (dict(gamma_attn="big"), "gamma_attn"),
    (dict(gamma_attn=ev.Schedule.window(0.1, start=0.8, stop=0.2)), "start"),
    (dict(gamma_norm=ev.Schedule.window(0.1, start=-0.5)), "gamma_norm"),
    (dict(token_indices=[5], token_upweight=[2.0, 3.0]), "token_upweight"),
    (dict(token_indices=[5]), "token_upweight"),
    (dict(token_indices=[-1], token_upweight=[2.0]), "token_indices"),
    (dict(token_indices=[2], token_upweight=[float("inf")]), "token_upweight"),
    (dict(prior_form="bayes"), "prior_form"),
    (dict(edit_context="sometimes"), "edit_context"),
    (dict(query_mask=torch.ones(3, 8, 8)), "query_mask"),
    (dict(query_mask=2 * torch.ones(8, 8)), "query_mask"),
    (dict(edits=ev.Edit(embeds=EMB)), "edits"),
    (dict(edits=["a dog"]), "edits[0]"),
    (dict(edits=[ev.Edit()]), "edits[0]"),
    (dict(edits=[ev.Edit(prompt="a", embeds=EMB)]), "edits[0]"),
    (dict(edits=[ev.Edit(embeds=EMB, direction=0)]), "edits[0].direction"),
    (dict(edits=[ev.Edit(embeds=EMB, alpha=-1.0)]), "edits[0].alpha"),
    (dict(edits=[ev.Edit(embeds=EMB, start=1.5)]), "edits[0].start"),
    (dict(num_inference_steps=0), "num_inference_steps"),
    (dict(cfg="yes"), "cfg"),
]


@pytest.mark.parametrize("kw,name", CONFIG_ERRORS, ids=[c[1] + f"-{i}" for i, c in enumerate(CONFIG_ERRORS)])
def test_config_errors_name_the_parameter_and_leave_pipeline(pipe, kw, name):
    with pytest.raises((ValueError, TypeError)) as e:
        with ev.energy_attention(pipe, **kw):
            _run(pipe)
    assert name in str(e.value)


RUNTIME_ERRORS = [
    (dict(token_indices=[77], token_upweight=[2.0]), "token_indices"),
    (dict(gamma_attn=[0.1]), "schedule"),  # explicit list shorter than the run
    (dict(edits=[ev.Edit(embeds=EMB, alpha=1.0, direction=-1)]), "denominator"),
    (dict(edits=[ev.Edit(embeds=torch.zeros(3, 77, 32))]), "edits[0]"),
    (dict(edits=[ev.Edit(embeds=torch.zeros(1, 10, 32))]), "edits[0]"),
]


@pytest.mark.parametrize("kw,name", RUNTIME_ERRORS, ids=[c[1] for c in RUNTIME_ERRORS])
def test_errors_during_sampling_restore_the_pipeline(pipe, kw, name):
    before = dict(pipe.unet.attn_processors)
    with pytest.raises(ValueError) as e:
        with ev.energy_attention(pipe, **kw):
            _run(pipe, steps=3)
    assert name in str(e.value)
    assert dict(pipe.unet.attn_processors) == before
    _run(pipe)  # still usable


def test_window_schedule_on_bare_unet_needs_num_steps():
    from ebca_viz.models import tiny_unet

    unet = tiny_unet()
    x = torch.randn(2, 4, 8, 8)
    with pytest.raises(ValueError, match="num_inference_steps"):
        with ev.energy_attention(unet, gamma_attn=ev.Schedule.window(0.1, stop=0.5)):
            unet(x, 10, encoder_hidden_states=torch.randn(2, 77, 32))


def test_odd_batch_with_cfg():
    from ebca_viz.models import tiny_unet

    unet = tiny_unet()
    with pytest.raises(ValueError, match="cfg"):
        with ev.energy_attention(unet, gamma_attn=0.1):
            unet(torch.randn(3, 4, 8, 8), 10, encoder_hidden_states=torch.randn(3, 77, 32))


def test_unsupported_architectures():
    with pytest.raises(TypeError, match="unsupported architecture"):
        ev.apply_energy_attention(types.SimpleNamespace(transformer=torch.nn.Linear(1, 1)))
    with pytest.raises(TypeError, match="unsupported architecture"):
        ev.apply_energy_attention(types.SimpleNamespace(unet=torch.nn.Linear(1, 1)))
    with pytest.raises(TypeError, match="pipe"):
        ev.apply_energy_attention("CompVis/stable-diffusion-v1-4")
    with pytest.raises(TypeError, match="config"):
        ev.apply_energy_attention(types.SimpleNamespace(), config={"gamma_attn": 0.1})


def test_nested_installation_refused(pipe):
    with ev.energy_attention(pipe, gamma_attn=0.1):
        with pytest.raises(RuntimeError, match="already installed"):
            ev.apply_energy_attention(pipe, gamma_attn=0.2)
        with pytest.raises(RuntimeError, match="SEG"):
            ev.apply_seg(pipe)


SEG_ERRORS = [
    (dict(sigma=0.0), "sigma"),
    (dict(scale=-1.0), "scale"),
    (dict(layers=["middle"]), "layers"),
    (dict(layers="mid"), "layers"),
    (dict(layers=[]), "layers"),
    (dict(convention="hong"), "convention"),
]


@pytest.mark.parametrize("kw,name", SEG_ERRORS, ids=[c[1] + f"-{i}" for i, c in enumerate(SEG_ERRORS)])
def test_seg_config_errors(pipe, kw, name):
    with pytest.raises((ValueError, TypeError)) as e:
        with ev.smoothed_energy_guidance(pipe, **kw):
            _run(pipe)
    assert name in str(e.value)


def test_seg_non_square_grid(pipe):
    with pytest.raises(ValueError, match="square"):
        with ev.smoothed_energy_guidance(pipe, sigma=2.0):
            _run(pipe, height=16, width=32)


def test_missing_real_weights_error_is_clear(monkeypatch):
    from ebca_viz.models import load_pipeline

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(FileNotFoundError, match="stable-diffusion-v1-5"):
        load_pipeline("sd15")
    with pytest.raises(TypeError, match="name"):
        load_pipeline(15)
