"""load_pipeline on diffusion transformers: names, folders written by save_pretrained (offline), incomplete folders."""
import json
import shutil

import pytest
import torch

from ebca_viz.errors import EbcaVizError
from ebca_viz.models.hub import DIT_PIPELINES, HUB_IDS, _pipeline_class, load_pipeline
from ebca_viz.models.tiny_dit import TINY_DIT

CLASSES = {"tiny-pixart": "PixArtSigmaPipeline", "tiny-sd3": "StableDiffusion3Pipeline", "tiny-flux": "FluxPipeline"}


@pytest.fixture(scope="module")
def folders(tmp_path_factory):
    root = tmp_path_factory.mktemp("dit")
    out = {}
    for name, build in TINY_DIT.items():
        pipe = build()
        pipe.save_pretrained(root / name, safe_serialization=True)
        out[name] = (root / name, pipe)
    return out


def test_names_and_classes():
    assert HUB_IDS["sd35-medium"] == "stabilityai/stable-diffusion-3.5-medium"
    assert HUB_IDS["flux-schnell"] == "black-forest-labs/FLUX.1-schnell" and HUB_IDS["flux-dev"] == "black-forest-labs/FLUX.1-dev"
    assert HUB_IDS["pixart-sigma"] == "PixArt-alpha/PixArt-Sigma-XL-2-1024-MS" and HUB_IDS["sd35-large"].endswith("3.5-large")
    for name, cls in DIT_PIPELINES.items():
        assert _pipeline_class(name).__name__ == cls
    assert _pipeline_class("someone/my-flux-finetune").__name__ == "FluxPipeline"
    for name, cls in CLASSES.items():
        assert type(load_pipeline(name)).__name__ == cls


@pytest.mark.parametrize("name", list(CLASSES))
def test_folder_round_trip_offline(folders, name, monkeypatch, tmp_path):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    folder, pipe = folders[name]
    plain = tmp_path / "a-folder-with-no-model-name"  # the class comes from model_index.json, not the name
    shutil.copytree(folder, plain)
    loaded = load_pipeline(str(plain))
    assert type(loaded).__name__ == CLASSES[name]
    assert all(f.suffix != ".bin" for f in plain.rglob("*"))
    sd, sd2 = pipe.transformer.state_dict(), loaded.transformer.state_dict()
    assert sd.keys() == sd2.keys() and all(torch.equal(sd[k], sd2[k]) for k in sd)
    tok_attr = {"tiny-pixart": "tokenizer", "tiny-sd3": "tokenizer_3", "tiny-flux": "tokenizer_2"}[name]
    t1, t2 = getattr(pipe, tok_attr), getattr(loaded, tok_attr)
    assert t1("a red zebra").input_ids == t2("a red zebra").input_ids  # the T5 tokenizer survives the folder


def test_incomplete_folder_names_every_missing_part(folders, tmp_path):
    folder, _ = folders["tiny-sd3"]
    bad = tmp_path / "sd3-incomplete"
    shutil.copytree(folder, bad)
    for f in (bad / "transformer").glob("*.safetensors"):
        f.unlink()
    shutil.rmtree(bad / "text_encoder_3")
    (bad / "tokenizer_3" / "tokenizer.json").unlink()
    for f in (bad / "tokenizer_3").glob("*"):
        if f.name in ("tokenizer_config.json", "spiece.model", "vocab.json"):
            f.unlink()
    with pytest.raises(EbcaVizError) as e:
        load_pipeline(str(bad))
    msg = str(e.value)
    assert "incomplete (StableDiffusion3Pipeline" in msg
    assert "transformer/ (SD3Transformer2DModel): no safetensors weights" in msg
    assert "text_encoder_3/ (transformers.T5EncoderModel): the folder is missing" in msg
    assert "tokenizer_3/" in msg and "vae/" not in msg


def test_missing_shard_is_named(folders, tmp_path):
    folder, _ = folders["tiny-flux"]
    bad = tmp_path / "flux-sharded"
    shutil.copytree(folder, bad)
    idx = {"metadata": {}, "weight_map": {"a.weight": "diffusion_pytorch_model-00001-of-00002.safetensors",
                                          "b.weight": "diffusion_pytorch_model-00002-of-00002.safetensors"}}
    for f in (bad / "transformer").glob("*.safetensors"):
        f.rename(f.with_name("diffusion_pytorch_model-00001-of-00002.safetensors"))
    (bad / "transformer" / "diffusion_pytorch_model.safetensors.index.json").write_text(json.dumps(idx))
    with pytest.raises(EbcaVizError, match=r"transformer/ \(FluxTransformer2DModel\): 1 of its 2 weight shards are missing "
                                           r"\(diffusion_pytorch_model-00002-of-00002.safetensors\)"):
        load_pipeline(str(bad))
