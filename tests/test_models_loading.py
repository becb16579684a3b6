"""load_pipeline: dtype and device inputs, folders by model_index.json, safetensors only."""
import pickle

import pytest
import torch

from ebca_viz.models import load_pipeline
from ebca_viz.models.hub import check_device, check_dtype


def test_dtype_names_and_bad_dtypes():
    assert check_dtype("float16") is torch.float16 and check_dtype("bf16") is torch.bfloat16
    assert check_dtype(None) is None and check_dtype(torch.float32) is torch.float32
    with pytest.raises(ValueError, match="floating torch dtype"):
        check_dtype(torch.int8)
    with pytest.raises(ValueError, match="not a floating dtype name"):
        check_dtype("int8")
    p = load_pipeline("tiny", dtype="float16")
    assert p.unet.dtype is torch.float16


def test_bad_devices():
    n = torch.cuda.device_count() if torch.cuda.is_available() else 0
    with pytest.raises(ValueError, match="cuda:99"):
        check_device("cuda:99" if n < 99 else "cuda:999")
    with pytest.raises(ValueError, match="not a device name"):
        check_device("gpu!")
    with pytest.raises(ValueError, match="cuda:99"):
        load_pipeline("tiny", device="cuda:99")


@pytest.fixture(scope="module")
def folder(tmp_path_factory, tiny_pipe):
    d = tmp_path_factory.mktemp("models") / "xl-fancy-inpaint-name"  # a misleading name
    tiny_pipe.save_pretrained(d, safe_serialization=True)
    return d


def test_folder_class_comes_from_model_index_not_the_name(folder):
    p = load_pipeline(str(folder))
    assert type(p).__name__ == "StableDiffusionPipeline"


def test_pickle_only_folder_is_refused_with_the_conversion_command(folder, tmp_path):
    import shutil

    d = tmp_path / "pickled"
    shutil.copytree(folder, d)
    for f in d.rglob("*.safetensors"):
        f.with_suffix(".bin").write_bytes(pickle.dumps({"not": "loaded"}))
        f.unlink()
    with pytest.raises(ValueError, match=r"only pickle weights .*safe_serialization=True"):
        load_pipeline(str(d))
