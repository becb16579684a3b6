"""Traces on tiny PixArt-Sigma, SD3 and Flux built in code: recording changes nothing, the image->text block
of joint attention is the model's own softmax, words resolve with each segment's tokenizer, the budget formula."""
import math
import warnings

import pytest
import torch

import ebca_viz as ev
from ebca_viz.errors import EbcaVizError
from ebca_viz.models.tiny_dit import tiny_flux_pipeline, tiny_pixart_pipeline, tiny_sd3_pipeline
from ebca_viz.tracing.budget import DEFAULT_BUDGET, FLUX_1024, FLUX_1024_DEFAULT_BYTES, default_trace_bytes
from ebca_viz.tracing.processor import _attention_with_lse, _text_block

BUILD = {"pixart": tiny_pixart_pipeline, "sd3": tiny_sd3_pipeline, "flux": tiny_flux_pipeline}
EXTRA = {"pixart": dict(use_resolution_binning=False), "sd3": {}, "flux": {}}


@pytest.fixture(scope="module")
def pipes():
    return {f: b() for f, b in BUILD.items()}


def _sample(pipe, fam, prompt="a red circle", steps=2, **kw):
    torch.manual_seed(0)
    return pipe(prompt, num_inference_steps=steps, height=16, width=24, max_sequence_length=16, output_type="latent",
                **EXTRA[fam], **kw).images


@pytest.mark.parametrize("fam", ["pixart", "sd3", "flux"])
def test_trace_reproduces_diffusers_and_records(pipes, fam):
    pipe = pipes[fam]
    ref = _sample(pipe, fam)
    before = {k: type(v) for k, v in pipe.transformer.attn_processors.items()}
    with ev.trace(pipe, quantities="all") as tr:
        out = _sample(pipe, fam)
    assert (out - ref).abs().max().item() <= 1e-5 * max(1.0, ref.abs().max().item())
    assert {k: type(v) for k, v in pipe.transformer.attn_processors.items()} == before  # restored
    n_layers = {"pixart": 2, "sd3": 2, "flux": 3}[fam]
    assert len(tr.layers) == n_layers and tr.steps == [0, 1] and tr.map_grid == (4, 6)
    m = tr.maps(aggregate=None)  # (step, layer, token, H, W)
    assert m.shape[:3] == (2, n_layers, {"sd3": 93}.get(fam, 16))
    mass = m.sum(2)  # share of attention on the text keys at each image token
    if fam == "pixart":  # cross-attention: all of it
        assert torch.allclose(mass, torch.ones_like(mass), atol=2e-3)
    else:  # joint / single-stream: the text block of one softmax over [image; text] keys
        assert 0.0 < mass.min().item() and mass.max().item() < 1.0
    assert torch.isfinite(tr.energies(when="before")).all()
    d = tr.drift()  # (step, layer, token): the text stream's distance from what entered the first block
    assert d.shape == (2, n_layers, m.shape[2])
    if fam == "pixart":
        assert d.abs().max().item() < 1e-4  # one caption for every block
    else:
        assert d[:, -1].abs().max().item() > 1e-3  # the joint blocks move the text stream
    assert tr.contexts().shape[-1] == pipe.transformer.config.num_attention_heads * pipe.transformer.config.attention_head_dim


def test_text_block_is_the_full_softmax_block():
    torch.manual_seed(0)
    P, N = 24, 7
    q, k, v = (torch.randn(2, 3, P + N, 16) for _ in range(3))
    full = torch.softmax(q @ k.transpose(-1, -2) / 4.0, dim=-1)  # the (P+N)^2 matrix, for reference only
    for mask in (None, torch.zeros(1, 1, 1, P + N)):  # CPU kernel with its lse / per-block fallback
        out, lse = _attention_with_lse(q, k, v, mask)
        assert torch.allclose(out, full @ v, atol=1e-5)
        s, probs = _text_block(q[:, :, :P], k[:, :, P:], lse[:, :, :P])  # SD3 layout: [image; text]
        assert torch.allclose(probs, full[:, :, :P, P:], atol=1e-6)
        s, probs = _text_block(q[:, :, N:], k[:, :, :N], lse[:, :, N:])  # Flux layout: [text; image]
        assert torch.allclose(probs, full[:, :, N:, :N], atol=1e-6)


def test_words_by_segment_and_padding(pipes):
    traces = {}
    for fam, pipe in pipes.items():
        with ev.trace(pipe) as tr:
            _sample(pipe, fam, steps=1)
        traces[fam] = tr
    px, sd3, fx = traces["pixart"], traces["sd3"], traces["flux"]
    assert px.tokens[:4] == ["a", "red", "circle", "</s>"] and px.padding[:5] == [False] * 4 + [True]
    assert px.token_index("red") == [1] and fx.token_index("circle") == [2]
    assert [s["tokenizer"] for s in fx.text_segments] == ["tokenizer_2"]  # Flux: T5 only
    # SD3: the CLIP segment (77 positions) and the T5 segment, each labelled by its own tokenizer
    assert sd3.tokens[:5] == ["<|startoftext|>", "a", "red", "circle", "<|endoftext|>"] and sd3.tokens[77:81] == ["a", "red", "circle", "</s>"]
    assert sd3.padding[4] is False and all(sd3.padding[5:77]) and sd3.padding[80] is False and all(sd3.padding[81:])
    assert sd3.token_index("red") == [2, 78]
    from ebca_viz.tokens import trace_prompt_positions

    assert trace_prompt_positions(sd3) == [1, 2, 3, 77, 78, 79] and trace_prompt_positions(px) == [0, 1, 2]
    assert trace_prompt_positions(fx, include_eot=True) == [0, 1, 2, 3]
    assert sd3.maps(token="red").shape == (2, 4, 6)
    with pytest.raises(EbcaVizError, match=r"'xyzzy'.*clip segment \(tokenizer.*t5 segment \(tokenizer_3, T5Tokenizer: splits"):
        sd3.token_index("xyzzy")


def test_sd3_word_missing_from_one_tokenizer_is_reported(pipes):
    from transformers import T5Tokenizer

    pipe = pipes["sd3"]
    letters = [chr(c) for c in range(ord("a"), ord("z") + 1)]
    kept = pipe.tokenizer_3
    pipe.tokenizer_3 = T5Tokenizer(vocab=[("<pad>", 0.0), ("</s>", 0.0), ("<unk>", 0.0), ("▁", -2.0), ("▁a", -1.0), ("▁red", -1.0)]
                                   + [(c, -8.0) for c in letters], extra_ids=0)
    try:
        with ev.trace(pipe) as tr:
            _sample(pipe, "sd3", steps=1)
    finally:
        pipe.tokenizer_3 = kept
    with pytest.warns(UserWarning, match=r"'circle'.*t5 segment \(tokenizer_3, T5Tokenizer: splits it into \['c', 'i'"):
        assert tr.token_index("circle") == [3]
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert tr.token_index("red") == [2, 78]


def test_flux_true_cfg_records_the_cond_calls_only(pipes):
    pipe = pipes["flux"]
    with ev.trace(pipe) as tr:
        _sample(pipe, "flux", steps=2, negative_prompt="blue", true_cfg_scale=2.0)
    assert tr.steps == [0, 1] and len(tr.timesteps) == 2 and tr.tokens[:2] == ["a", "red"]


def test_flux_guidance_distilled_and_save_load(tmp_path):
    pipe = tiny_flux_pipeline(guidance_embeds=True)
    with ev.trace(pipe) as tr:
        _sample(pipe, "flux", steps=1, guidance_scale=3.5)
    tr.save(tmp_path / "f.safetensors")
    tr2 = ev.load_trace(tmp_path / "f.safetensors")
    assert tr2.record.family == "flux" and tr2.text_segments == tr.text_segments
    assert torch.equal(tr2.maps(token="red"), tr.maps(token="red"))


def test_flux_budget_formula_on_a_full_size_layout(pipes):
    """FLUX.1's 1024 x 1024 layout (64 x 64 image tokens, 512 T5 positions) with random weights and 3 of its 57
    layers: the stored bytes equal the budget formula, which then states the full default trace."""
    pipe = pipes["flux"]
    tr = ev.trace(pipe)
    est = tr.estimate_bytes(num_steps=2, height=256, width=256, tokens=512)  # VAE factor 2 here: 256 px -> 64 x 64 tokens
    with tr:
        torch.manual_seed(0)
        pipe("a red circle", num_inference_steps=2, height=256, width=256, max_sequence_length=512, output_type="latent")
    layout = dict(layers=3, tokens=512, map_grid=(32, 32), steps=2, latent_hw=(64, 64), images=1)
    assert tr.map_grid == (32, 32) and tr.latent_hw == (64, 64) and len(tr.tokens) == 512
    stored = sum(t.numel() * t.element_size() for t in tr.record.stacked().values())
    assert tr.nbytes == stored == est == default_trace_bytes(**layout)
    assert FLUX_1024 == dict(layout, layers=57, steps=28)
    assert FLUX_1024_DEFAULT_BYTES == default_trace_bytes(**FLUX_1024) == 189_032_660 <= DEFAULT_BUDGET
    assert math.isclose(FLUX_1024_DEFAULT_BYTES / 2**20, 180.28, abs_tol=0.01)


def test_pixart_energies_use_the_unmasked_keys(pipes):
    """PixArt masks T5's padding out of its cross-attention: the energies are over the prompt's keys only."""
    pipe = pipes["pixart"]
    with ev.trace(pipe, layers=[0]) as tr:
        _sample(pipe, "pixart", steps=1)
    e = tr.energies(kind="context", when="before")
    assert e.shape == (1, 1) and abs(e.item()) < 1e3  # 12 masked keys would add ~12 x 10^4
    with ev.trace(pipe, layers=[0]) as tr2:
        torch.manual_seed(0)
        pipe("a red circle", num_inference_steps=1, height=16, width=24, max_sequence_length=4, output_type="latent",
             use_resolution_binning=False)  # exactly the prompt and </s>: nothing masked
    assert tr2.tokens == ["a", "red", "circle", "</s>"] and math.isfinite(tr2.energies().item())
