"""Test models with the published layouts: the scaled models have exactly the real module trees, and
their folders load like real checkpoints, whatever the folder is called."""
import json

import pytest
import torch

from ebca_viz.attach import cross_attention_keys
from ebca_viz.models import load_pipeline
from ebca_viz.models.layouts import (build_text_encoder, build_unet, build_vae, module_layout, parameter_layout,
                                     scale_layout)
from layout_models import FOLDER_NAMES, LAYOUTS, full_layout

CLASSES = {"sd15": "StableDiffusionPipeline", "sd21-base": "StableDiffusionPipeline",
           "sd15-inpainting": "StableDiffusionInpaintPipeline", "sdxl-base": "StableDiffusionXLPipeline"}


@pytest.fixture(scope="module")
def loaded(layout_pipes):
    return {n: layout_pipes(n) for n in LAYOUTS}


@pytest.mark.parametrize("name", LAYOUTS)
def test_scaled_model_has_the_full_configs_layout(name, loaded):
    """Names, counts and kinds of every module and parameter equal those of the full published config
    (built on the meta device: no memory, no weights)."""
    full, pipe = full_layout(name), loaded[name]
    with torch.device("meta"):
        parts = {"unet": build_unet(full["unet"]), "vae": build_vae(full["vae"]),
                 "text_encoder": build_text_encoder(full["text_encoder"])}
        if "text_encoder_2" in full:
            parts["text_encoder_2"] = build_text_encoder(full["text_encoder_2"])
    assert set(parts) == {k for k in ("unet", "vae", "text_encoder", "text_encoder_2") if getattr(pipe, k, None)}
    for k, m in parts.items():
        assert module_layout(getattr(pipe, k)) == module_layout(m), k
        assert parameter_layout(getattr(pipe, k)) == parameter_layout(m), k
    keys = cross_attention_keys(pipe.unet)
    assert keys == cross_attention_keys(parts["unet"])
    assert len(keys) == full["cross_attention_layers"] == (70 if name == "sdxl-base" else 16)
    # the widths are what changed, by exactly the scale factor
    u, fu = pipe.unet.config, full["unet"]
    assert [c * 8 for c in u.block_out_channels] == fu["block_out_channels"]
    assert u.cross_attention_dim * 8 == fu["cross_attention_dim"]
    assert pipe.text_encoder.config.hidden_size * 8 == full["text_encoder"]["hidden_size"]
    assert pipe.text_encoder.config.num_hidden_layers == full["text_encoder"]["num_hidden_layers"]
    assert pipe.text_encoder.config.vocab_size == len(pipe.tokenizer) == 49408


def test_layout_specifics():
    """What distinguishes the layouts, read off the built modules (not the configs)."""
    sd15, sd21, xl = (scale_layout(full_layout(n)) for n in ("sd15", "sd21-base", "sdxl-base"))
    u15, u21, uxl = build_unet(sd15["unet"]), build_unet(sd21["unet"]), build_unet(xl["unet"])
    a15 = u15.down_blocks[0].attentions[0]
    a21 = u21.down_blocks[0].attentions[0]
    assert type(a15.proj_in).__name__ == "Conv2d" and type(a21.proj_in).__name__ == "Linear"  # linear projections
    assert [b.attentions[0].transformer_blocks[0].attn2.heads for b in u21.down_blocks[:3]] == [5, 10, 20]  # per-block
    assert u15.down_blocks[0].attentions[0].transformer_blocks[0].attn2.heads == 8
    assert u21.down_blocks[0].attentions[0].transformer_blocks[0].attn2.to_k.in_features * 8 == 1024
    assert [len(b.attentions[0].transformer_blocks) for b in uxl.down_blocks[1:]] == [2, 10]  # depth 1/2/10
    assert not hasattr(uxl.down_blocks[0], "attentions") and len(uxl.mid_block.attentions[0].transformer_blocks) == 10
    assert uxl.add_embedding.linear_1.in_features * 8 == 2816  # text-time embedding: pooled 1280 + 6 x 256
    assert build_unet(scale_layout(full_layout("sd15-inpainting"))["unet"]).conv_in.in_channels == 9
    with pytest.raises(ValueError, match="not divisible by the scale factor 7"):
        scale_layout(full_layout("sd15"), factor=7)


@pytest.mark.parametrize("name", LAYOUTS)
def test_folder_loads_by_model_index_not_name(name, loaded, layout_folders):
    pipe = loaded[name]
    assert type(pipe).__name__ == CLASSES[name] and layout_folders[name].name == FOLDER_NAMES[name]
    assert json.loads((layout_folders[name] / "model_index.json").read_text())["_class_name"] == CLASSES[name]
    pads = {"sd15": "<|endoftext|>", "sd15-inpainting": "<|endoftext|>", "sd21-base": "!", "sdxl-base": "<|endoftext|>"}
    assert pipe.tokenizer.pad_token == pads[name]
    if name == "sdxl-base":
        assert pipe.tokenizer_2.pad_token == "!" and pipe.tokenizer_2.pad_token_id == 0
        assert type(pipe.text_encoder_2).__name__ == "CLIPTextModelWithProjection"


def test_load_pipeline_does_not_print_the_torch_dtype_futurewarning(layout_folders):
    import warnings

    with warnings.catch_warnings(record=True) as w:
        warnings.simplefilter("always")
        load_pipeline(str(layout_folders["sd15"]))
    assert not [x for x in w if "torch_dtype" in str(x.message)], [str(x.message) for x in w]
