"""The architecture seam (ebca_viz.adapters) on tiny PixArt-Sigma, SD3 and Flux built in code, and the UNet."""
import pytest
import torch

from ebca_viz.adapters import SUPPORTED, adapter_for
from ebca_viz.errors import EbcaVizTypeError
from ebca_viz.models.tiny import tiny_pipeline
from ebca_viz.models.tiny_dit import t5_tokenizer, tiny_flux_pipeline, tiny_pixart_pipeline, tiny_sd3_pipeline


@pytest.fixture(scope="module")
def pipes():
    return {"unet": tiny_pipeline(), "pixart": tiny_pixart_pipeline(), "sd3": tiny_sd3_pipeline(),
            "flux": tiny_flux_pipeline()}


def test_layers_and_kinds(pipes):
    kinds = {f: [(li.key, li.kind) for li in adapter_for(p).layers()] for f, p in pipes.items()}
    assert kinds["pixart"] == [("transformer_blocks.0.attn1.processor", "self"), ("transformer_blocks.0.attn2.processor", "cross"),
                               ("transformer_blocks.1.attn1.processor", "self"), ("transformer_blocks.1.attn2.processor", "cross")]
    assert kinds["sd3"] == [("transformer_blocks.0.attn.processor", "joint"), ("transformer_blocks.1.attn.processor", "joint")]
    assert kinds["flux"] == [("transformer_blocks.0.attn.processor", "joint"), ("single_transformer_blocks.0.attn.processor", "single"),
                             ("single_transformer_blocks.1.attn.processor", "single")]
    unet = kinds["unet"]
    assert len(unet) == 14 and sum(k == "cross" for _, k in unet) == 7
    assert all(k.endswith("attn2.processor") == (kind == "cross") for k, kind in unet)
    assert [li.index for li in adapter_for(pipes["flux"]).layers()] == [0, 1, 2]
    assert {adapter_for(p).family for p in pipes.values()} == {"unet", "pixart", "sd3", "flux"}


def test_text_segments(pipes):
    assert [(s.name, s.start, s.length, s.tokenizer_attr) for s in adapter_for(pipes["sd3"]).text_segments(n_text=93)] == [
        ("clip", 0, 77, "tokenizer"), ("t5", 77, 16, "tokenizer_3")]
    assert [(s.name, s.tokenizer_attr) for s in adapter_for(pipes["flux"]).text_segments(n_text=16)] == [("t5", "tokenizer_2")]
    assert [(s.name, s.tokenizer_attr) for s in adapter_for(pipes["pixart"]).text_segments(n_text=16)] == [("t5", "tokenizer")]


def test_parse_call_and_grid_non_square(pipes):
    captured = {}
    for fam in ("pixart", "sd3", "flux"):
        pipe = pipes[fam]
        ad = adapter_for(pipe)
        h = pipe.transformer.register_forward_pre_hook(lambda m, a, k, fam=fam, ad=ad: captured.__setitem__(fam, ad.parse_call(a, k)),
                                                       with_kwargs=True)
        kw = dict(use_resolution_binning=False) if fam == "pixart" else {}
        pipe("a red circle", num_inference_steps=1, height=16, width=24, max_sequence_length=16, output_type="latent", **kw)
        h.remove()
        parts = captured[fam]
        assert ad.latent_grid(parts["sample"], parts) == (4, 6), fam
        assert torch.is_tensor(parts["context"]) and parts["context"].ndim == 3 and torch.is_tensor(parts["timestep"])
    assert captured["sd3"]["context"].shape[1] == 77 + 16 and captured["pixart"]["context"].shape[1] == 16
    assert captured["flux"]["context"].shape[1] == 16 and captured["flux"]["extras"]["img_ids"].shape == (24, 3)
    assert captured["sd3"]["extras"]["pooled_projections"].shape[-1] == 64
    assert captured["pixart"]["sample"].shape[0] == 2  # [uncond; cond] with the default guidance_scale 4.5


def test_unknown_denoiser_names_class_and_supported():
    with pytest.raises(EbcaVizTypeError, match="Linear.*UNet2DConditionModel, PixArtTransformer2DModel, SD3Transformer2DModel, "
                                               "FluxTransformer2DModel"):
        adapter_for(torch.nn.Linear(2, 2))

    class Pipe:
        transformer = torch.nn.Conv2d(1, 1, 1)

    with pytest.raises(EbcaVizTypeError, match="Pipe's denoiser is a Conv2d"):
        adapter_for(Pipe())
    assert len(SUPPORTED) == 4


def test_t5_tokenizer_words_and_padding():
    tok = t5_tokenizer()
    ids = tok("a red zebra", padding="max_length", max_length=8).input_ids
    assert tok.convert_ids_to_tokens(ids) == ["▁a", "▁red", "▁zebra", "</s>", "<pad>", "<pad>", "<pad>", "<pad>"]
    assert tok.pad_token_id == 0 and tok.eos_token_id == 1
    assert len(tok("xyzzy").input_ids) > 2  # an unknown word splits into letters
