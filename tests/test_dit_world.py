"""The DiT shapes world (issue 23 item 5): its trainer resumes bit-identically, its export loads offline by
name as a ``PixArtSigmaPipeline``, and the shipped weights (once the training run has shipped them) load."""
import json
import shutil

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from ebca_viz.shapes import train_dit

TINY = ["--hidden", "32", "--layers", "2", "--heads", "2", "--text-d", "16", "--text-layers", "1", "--text-heads", "2",
        "--batch", "4", "--warmup", "2", "--log-every", "1", "--ckpt-minutes", "0", "--lr", "3e-3"]


def _run(out, *extra):
    return train_dit.main(["--out", str(out), *TINY, *extra])


def _state(out):
    return load_file(str(out / "state" / "tensors.safetensors")), json.loads((out / "state" / "state.json").read_text())


def test_interrupted_run_resumes_bit_identically(tmp_path):
    """4 steps straight == 2 steps, stop, resume, 2 steps: every weight, EMA weight, AdamW moment and RNG state."""
    a, b = tmp_path / "straight", tmp_path / "resumed"
    _run(a, "--max-steps", "4", "--no-export")
    _run(b, "--max-steps", "4", "--no-export", "--stop-at", "2")
    t_mid, s_mid = _state(b)
    assert s_mid["step"] == 2
    _run(b, "--max-steps", "4", "--no-export", "--resume")
    (ta, sa), (tb, sb) = _state(a), _state(b)
    assert sa["step"] == sb["step"] == 4 and sa["numpy_rng"] == sb["numpy_rng"]
    assert set(ta) == set(tb) and any(k.startswith("opt.") for k in ta) and any(k.startswith("ema_") for k in ta)
    diff = [k for k in ta if not torch.equal(ta[k], tb[k])]
    assert diff == []
    # the run really trained: weights moved between step 2 and step 4, and the losses are logged per step
    assert not torch.equal(t_mid["transformer.proj_out.weight"], ta["transformer.proj_out.weight"])
    rows = (b / "loss.csv").read_text().splitlines()
    assert rows[0] == "step,minutes,loss,lr" and [r.split(",")[0] for r in rows[1:]] == ["1", "2", "3", "4"]
    assert [r.split(",")[2] for r in rows[1:]] == [r.split(",")[2] for r in (a / "loss.csv").read_text().splitlines()[1:]]


def test_resume_refuses_other_model_arguments(tmp_path):
    _run(tmp_path, "--max-steps", "2", "--no-export", "--stop-at", "1")
    with pytest.raises(ValueError, match=r"--resume: these arguments differ.*'hidden': \(32, 64\)"):
        train_dit.main(["--out", str(tmp_path), *TINY, "--hidden", "64", "--max-steps", "2", "--resume",
                        "--no-export"])


def test_export_loads_offline_by_name_as_pixart_sigma(tmp_path, monkeypatch):
    """3 training steps, exported fp16; the folder placed where the package looks for the world loads by name."""
    from diffusers import DPMSolverMultistepScheduler, PixArtSigmaPipeline, PixArtTransformer2DModel

    from ebca_viz.models import load_pipeline, worlds

    res = _run(tmp_path / "run", "--max-steps", "3")
    src = tmp_path / "run" / "pipeline"
    files = [p for p in src.rglob("*") if p.is_file()]
    assert {p.suffix for p in files} <= {".json", ".safetensors", ".md"}
    assert sum(p.stat().st_size for p in files) <= 20 * 2**20
    info = json.loads((src / "training.json").read_text())
    assert info["steps"] == 3 and info["args"]["holdout"] == "triangle-pairs" and len(info["loss_curve"]) == 3
    assert "train_dit" in info["command"] and info["versions"]["diffusers"]
    assert "PixArtTransformer2DModel" in (src / "TRAINING.md").read_text()

    root = tmp_path / "weights"
    shutil.copytree(src, root / worlds.WORLDS["neglect-world-dit"])
    monkeypatch.setattr(worlds, "WEIGHTS_ROOT", root)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    assert worlds.shipped_worlds() == ["neglect-world-dit"]
    pipe = load_pipeline("neglect-world-dit")
    assert type(pipe) is PixArtSigmaPipeline and type(pipe.transformer) is PixArtTransformer2DModel
    assert type(pipe.scheduler) is DPMSolverMultistepScheduler and pipe.scheduler.config.prediction_type == "epsilon"
    assert pipe.transformer.dtype == torch.float32
    # the shipped transformer is the EMA weights rounded to fp16
    ema = res["ema_tr"].state_dict()
    for k, v in pipe.transformer.state_dict().items():
        assert torch.equal(v, ema[k].half().float()), k
    # the frozen VAE is the neglect world's, bit for bit (both fp16 on disk)
    ref = load_file(str(worlds.Path(train_dit.DEFAULT_INIT_VAE) / "vae" / "diffusion_pytorch_model.safetensors"))
    got = load_file(str(root / "neglect_world_dit" / "vae" / "diffusion_pytorch_model.safetensors"))
    assert set(ref) == set(got) and all(torch.equal(ref[k], got[k]) for k in ref)
    im = pipe(["a red circle", "a red circle and a blue triangle"], num_inference_steps=3, guidance_scale=3.0,
              use_resolution_binning=False, clean_caption=False, output_type="np",
              generator=torch.Generator().manual_seed(0)).images
    assert im.shape == (2, 32, 32, 3) and np.isfinite(im).all()


def test_t5_positions_of_the_shape_nouns():
    """T5 has no start token: the nouns of a two-object caption are at 2 and 6 (the CLIP worlds: 3 and 7)."""
    from ebca_viz.shapes.dit_eval import SHAPE_TOKENS

    tok = train_dit.build_t5_tokenizer()
    ids = tok("a red circle and a blue square").input_ids
    assert tok.convert_ids_to_tokens(ids) == ["▁a", "▁red", "▁circle", "▁and", "▁a", "▁blue", "▁square", "</s>"]
    assert [tok.convert_ids_to_tokens(ids)[i] for i in SHAPE_TOKENS] == ["▁circle", "▁square"]


def test_shipped_dit_world_loads_by_name(monkeypatch):
    from diffusers import PixArtSigmaPipeline

    from ebca_viz.models import load_pipeline, worlds

    folder = worlds.WEIGHTS_ROOT / worlds.WORLDS["neglect-world-dit"]
    if not folder.is_dir():
        pytest.skip(f"{folder} is absent: the DiT world's training run (benchmarks/train_dit_world.py train) has not "
                    "been shipped yet (benchmarks/train_dit_world.py ship <run>/pipeline)")
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    files = [p for p in folder.rglob("*") if p.is_file()]
    assert sum(p.stat().st_size for p in files) <= 20 * 2**20
    assert {p.suffix for p in files} <= {".json", ".safetensors", ".md"}
    info = json.loads((folder / "training.json").read_text())
    assert info["steps"] == info["args"]["max_steps"] and info["args"]["holdout_mode"] == "drop"
    pipe = load_pipeline("neglect-world-dit")
    assert type(pipe) is PixArtSigmaPipeline
    im = pipe(["a red circle"], num_inference_steps=5, guidance_scale=3.0, use_resolution_binning=False,
              clean_caption=False, output_type="np", generator=torch.Generator().manual_seed(0)).images
    assert im.shape == (1, 32, 32, 3) and im.std() > 0.05
