import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")  # an accidental download fails fast
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")

import pytest
import torch

torch.set_num_threads(min(2, os.cpu_count() or 1))


@pytest.fixture(scope="session")
def tiny_pipe():
    from ebca_viz.models import tiny_pipeline

    return tiny_pipeline(seed=0)


@pytest.fixture(scope="session")
def shapes():
    """The shipped shapes-world pipeline, loaded once (skips where the weights are not in this copy)."""
    from ebca_viz.models.shapes_world import weights_available

    if not weights_available():
        pytest.skip("shapes-world weights not shipped")
    from ebca_viz.models import load_pipeline

    p = load_pipeline("shapes-world")
    p.set_progress_bar_config(disable=True)
    return p


@pytest.fixture()
def pipe(tiny_pipe):
    """The shared tiny pipeline; the test must leave its processors as it found them."""
    before = {k: type(v) for k, v in tiny_pipe.unet.attn_processors.items()}
    hooks = (len(tiny_pipe.unet._forward_pre_hooks), len(tiny_pipe.unet._forward_hooks))
    yield tiny_pipe
    assert {k: type(v) for k, v in tiny_pipe.unet.attn_processors.items()} == before
    assert (len(tiny_pipe.unet._forward_pre_hooks), len(tiny_pipe.unet._forward_hooks)) == hooks


def unet_inputs(unet, batch=2, tokens=77, seed=0, hw=None, dtype=torch.float32):
    g = torch.Generator().manual_seed(seed)
    h, w = hw or (unet.config.sample_size,) * 2
    x = torch.randn(batch, unet.config.in_channels, h, w, generator=g).to(dtype)
    c = torch.randn(batch, tokens, unet.config.cross_attention_dim, generator=g).to(dtype)
    return x, c


@pytest.fixture(scope="session")
def layout_folders(tmp_path_factory, clip_tokenizers):
    """Scaled SD 1.5 / SD 2.1-base / SD 1.5-inpainting / SDXL-base folders (real layouts, real CLIP
    tokenizer), built once per session (see tests/layout_models.py)."""
    from layout_models import build_folders

    return build_folders(tmp_path_factory.mktemp("layouts"), clip_tokenizers)


@pytest.fixture(scope="session")
def clip_tokenizers(tmp_path_factory):
    from layout_models import clip_tokenizers as build

    return build(tmp_path_factory.mktemp("clip"))


@pytest.fixture(scope="session")
def layout_pipes(layout_folders):
    """``layout_pipes(name)``: the folder of that layout loaded with ``load_pipeline(folder)``, once."""
    from ebca_viz.models import load_pipeline

    cache = {}

    def get(name):
        if name not in cache:
            cache[name] = load_pipeline(str(layout_folders[name]))
            cache[name].set_progress_bar_config(disable=True)
        return cache[name]

    return get
