"""Property-based: over prompts, batch sizes, dtypes, resolutions and configs within the documented
ranges, EBCA and SEG give finite output, restore processors and hooks, and leave vanilla sampling
bit-exact afterwards."""
import pytest
import torch

hypothesis = pytest.importorskip("hypothesis")
from hypothesis import HealthCheck, given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

import ebca_viz as ev  # noqa: E402

WORDS = ["a", "red", "blue", "circle", "square", "cat", "and", "with", "triangle", "green"]


def _vanilla(pipe, prompt, hw, n):
    g = torch.Generator().manual_seed(0)
    return pipe(prompt, num_inference_steps=2, generator=g, output_type="pt", height=hw, width=hw,
                num_images_per_prompt=n).images


def _state(pipe):
    u = pipe.unet
    return ({k: type(v) for k, v in u.attn_processors.items()}, len(u._forward_pre_hooks), len(u._forward_hooks),
            len(pipe.vae.decoder._forward_pre_hooks))


configs = st.one_of(
    st.builds(lambda ga, gn, up: ("ebca", dict(gamma_attn=ga, gamma_norm=gn,
                                               **({"token_indices": [1], "token_upweight": [up]} if up else {}))),
              st.floats(0, 0.3), st.floats(0, 0.3), st.one_of(st.none(), st.floats(1.0, 4.0))),
    st.builds(lambda a, d: ("ebcq", dict(gamma_attn=0.01, edits=[ev.Edit(prompt="a blue square", alpha=a,
                                                                         direction=d)])),
              st.floats(0.0, 0.9), st.sampled_from([1, -1])),
    st.builds(lambda s, sig: ("seg", dict(scale=s, sigma=sig)), st.floats(0, 5), st.sampled_from([0.5, 2.0, 10.0, 1e9])),
)


@settings(max_examples=8, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(words=st.lists(st.sampled_from(WORDS), min_size=1, max_size=6), n=st.integers(1, 2),
       hw=st.sampled_from([32, 64]), half=st.booleans(), cfg=configs)
def test_methods_are_finite_and_leave_the_pipeline_as_it_was(tiny_pipe, tiny_pipe_bf16, words, n, hw, half, cfg):
    pipe = tiny_pipe_bf16 if half else tiny_pipe
    prompt = " ".join(words)
    before_state = _state(pipe)
    ref = _vanilla(pipe, prompt, hw, n)
    kind, kw = cfg
    cm = ev.smoothed_energy_guidance(pipe, ev.SEGConfig(**kw)) if kind == "seg" else \
        ev.energy_attention(pipe, ev.EBCAConfig(**kw))
    with cm:
        g = torch.Generator().manual_seed(1)
        out = pipe(prompt, num_inference_steps=2, generator=g, output_type="pt", height=hw, width=hw,
                   num_images_per_prompt=n).images
    assert out.shape[0] == n and torch.isfinite(out.float()).all()
    assert _state(pipe) == before_state
    assert torch.equal(_vanilla(pipe, prompt, hw, n), ref)  # vanilla bit-exact after the context manager


@pytest.fixture(scope="module")
def tiny_pipe_bf16():
    from ebca_viz.models import tiny_pipeline

    p = tiny_pipeline(seed=0).to(torch.bfloat16)
    p.set_progress_bar_config(disable=True)
    return p
