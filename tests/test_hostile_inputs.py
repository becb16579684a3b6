"""Hostile inputs from the probe of issue 22: each is refused with a message naming the parameter, the
value and the fix, before sampling, and the pipeline is left exactly as it was (processors, hooks)."""
import shutil

import pytest
import torch

import ebca_viz as ev
from ebca_viz.models import load_pipeline

EMB = torch.zeros(1, 77, 32)


def _state(pipe):
    unet = pipe.unet
    hooks = [len(m._forward_pre_hooks) + len(m._forward_hooks)
             for m in (unet, pipe.text_encoder) if m is not None]
    return {k: type(v) for k, v in unet.attn_processors.items()}, hooks


def _run(pipe, steps=5, prompt="a red circle"):
    g = torch.Generator().manual_seed(0)
    return pipe(prompt, num_inference_steps=steps, generator=g, output_type="pt").images


class _Seen:
    """Counts UNet calls (a forward pre-hook of the test's own, removed in the test)."""

    def __init__(self, unet):
        self.calls = 0
        self.h = unet.register_forward_pre_hook(lambda *a: setattr(self, "calls", self.calls + 1))


# 1. per-step lists shorter than the run: refused before the first step, naming the parameter
SHORT_LISTS = [
    (dict(gamma_attn=[0.1, 0.2]), "gamma_attn is a per-step schedule (a list) of 2 values"),
    (dict(gamma_norm=[0.0] * 4), "gamma_norm is a per-step schedule (a list) of 4 values"),
    (dict(edits=[ev.Edit(embeds=EMB, alpha=[0.1, 0.2])]), "edits[0].alpha is a per-step schedule (a list) of 2"),
    (dict(edits=[ev.Edit(embeds=EMB, gamma_attn=[0.1])]), "edits[0].gamma_attn is a per-step schedule"),
]


@pytest.mark.parametrize("kw,msg", SHORT_LISTS, ids=[m.split()[0] for _, m in SHORT_LISTS])
def test_short_per_step_list_is_refused_before_sampling(tiny_pipe, kw, msg):
    before = _state(tiny_pipe)
    seen = _Seen(tiny_pipe.unet)
    try:
        with pytest.raises(ValueError) as e:
            with ev.energy_attention(tiny_pipe, **kw):
                _run(tiny_pipe, steps=5)
    finally:
        seen.h.remove()
    text = str(e.value)
    assert msg in text and "the run has 5 steps" in text
    assert "(5 values)" in text and "Schedule.window" in text
    assert seen.calls == 1  # refused at the first UNet call, before any step was taken
    assert _state(tiny_pipe) == before


def test_per_step_list_of_exactly_the_run_length_runs(tiny_pipe):
    with ev.energy_attention(tiny_pipe, gamma_attn=[0.0, 0.1, 0.0]):
        x = _run(tiny_pipe, steps=3)
    assert torch.isfinite(x).all()


def test_check_lengths_names_the_edit_alpha():
    rc = ev.EBCAConfig(edits=[ev.Edit(embeds=EMB, alpha=[0.1] * 49)]).validate()
    rc.check_lengths(49)  # enough
    with pytest.raises(ValueError, match=r"edits\[0\]\.alpha .* 49 values, but the run has 50 steps"):
        rc.check_denominators(50, 51)


# 2. token positions on padding: refused when the pipeline encodes the prompt
def test_token_index_on_padding_is_refused_with_the_last_word_position(tiny_pipe):
    ids = tiny_pipe.tokenizer("a red circle").input_ids
    end = ids.index(tiny_pipe.tokenizer.eos_token_id, 1)
    assert end == 4  # <bos> a red circle <eos>: the last word at 3
    before = _state(tiny_pipe)
    with pytest.raises(ValueError) as e:
        with ev.energy_attention(tiny_pipe, token_indices=[40], token_upweight=[2.0]):
            _run(tiny_pipe, steps=2)
    assert "token_indices [40] point at padding" in str(e.value)
    assert "last word is at position 3" in str(e.value)
    assert _state(tiny_pipe) == before
    with pytest.raises(ValueError, match=r"token_indices \[5\] point at padding"):  # one past end-of-text
        with ev.energy_attention(tiny_pipe, token_indices=[2, 5], token_upweight=[2.0, 2.0]):
            _run(tiny_pipe, steps=2)
    assert _state(tiny_pipe) == before


def test_token_index_within_the_prompt_runs_and_the_watch_is_removed(tiny_pipe):
    before = _state(tiny_pipe)
    with ev.energy_attention(tiny_pipe, token_indices=[3, 4], token_upweight=[2.0, 1.5]):  # last word, eos
        assert _state(tiny_pipe)[1][1] == before[1][1] + 1  # the text encoder is watched while installed
        x = _run(tiny_pipe, steps=2)
        x2 = _run(tiny_pipe, steps=2)  # a second run is checked afresh
    assert torch.isfinite(x).all() and torch.equal(x, x2)
    assert _state(tiny_pipe) == before


def test_bare_unet_refuses_only_past_the_context():
    """A bare UNet has no token ids: padding cannot be told from words (documented), the context length can."""
    from ebca_viz.models import tiny_unet

    unet = tiny_unet()
    x = torch.randn(2, 4, 8, 8)
    with ev.energy_attention(unet, token_indices=[40], token_upweight=[2.0], num_inference_steps=1):
        unet(x, 10, encoder_hidden_states=torch.randn(2, 77, 32))
    with pytest.raises(ValueError, match=r"token_indices \[77\] out of range"):
        with ev.energy_attention(unet, token_indices=[77], token_upweight=[2.0], num_inference_steps=1):
            unet(x, 10, encoder_hidden_states=torch.randn(2, 77, 32))
    assert not unet._forward_pre_hooks and not unet._forward_hooks


# 3. SEG and custom self-attention processors
def test_seg_refuses_custom_self_attention_processors(tiny_pipe):
    from diffusers.models.attention_processor import AttnProcessor

    class MySelfAttn(AttnProcessor):  # a user's processor (its module is this test file)
        pass

    saved = dict(tiny_pipe.unet.attn_processors)
    from ebca_viz.seg import seg_layer_keys

    key = seg_layer_keys(tiny_pipe.unet, ev.SEGConfig().layers)[0]  # a layer SEG would replace
    tiny_pipe.unet.set_attn_processor({**saved, key: MySelfAttn()})
    try:
        before = _state(tiny_pipe)
        with pytest.raises(ValueError) as e:
            with ev.smoothed_energy_guidance(tiny_pipe, ev.SEGConfig(scale=1.0, sigma=2.0)):
                _run(tiny_pipe, steps=2)
        assert f"custom processor (MySelfAttn on {key})" in str(e.value)
        assert "set_default_attn_processor" in str(e.value)
        assert _state(tiny_pipe) == before
        assert type(tiny_pipe.unet.attn_processors[key]) is MySelfAttn
    finally:
        tiny_pipe.unet.set_attn_processor(saved)


# 4. folders with pickled weights
@pytest.fixture(scope="module")
def saved_folder(tmp_path_factory, tiny_pipe):
    d = tmp_path_factory.mktemp("hostile") / "tiny"
    tiny_pipe.save_pretrained(d, safe_serialization=True)
    return d


def test_folder_with_one_pickled_component_is_refused_not_sent_to_the_network(saved_folder, tmp_path):
    d = tmp_path / "mixed"
    shutil.copytree(saved_folder, d)
    for f in (d / "unet").glob("*.safetensors"):  # only the UNet pickled; junk bytes: never unpickled
        f.unlink()
    (d / "unet" / "diffusion_pytorch_model.bin").write_bytes(b"not a pickle, never read")
    with pytest.raises(ValueError) as e:
        load_pipeline(str(d))
    text = str(e.value)
    assert "unet/diffusion_pytorch_model.bin" in text and "only pickle weights" in text
    assert "never unpickles" in text and "safe_serialization=True" in text and "use_safetensors=False" in text
    assert "download" not in text.replace("does not download", "")


def test_unloadable_local_folder_does_not_say_download(saved_folder, tmp_path):
    d = tmp_path / "broken"
    shutil.copytree(saved_folder, d)
    shutil.rmtree(d / "unet")
    with pytest.raises(FileNotFoundError) as e:  # an incomplete folder names what is missing (issue 23's loader)
        load_pipeline(str(d))
    assert "unet/" in str(e.value) and "missing" in str(e.value) and "save_pretrained" in str(e.value)
