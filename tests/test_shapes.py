"""Shapes world: generator, detector, training script and the shipped pipeline (fast, offline)."""
import json

import numpy as np
import pytest
import torch

from ebca_viz.shapes import world
from ebca_viz.shapes.detect import detect, score_pair, score_single, verify


def test_generator_is_deterministic_from_seed():
    a, b, c = world.generate(20, seed=3), world.generate(20, seed=3), world.generate(20, seed=4)
    assert all(np.array_equal(x.image, y.image) and x.caption == y.caption for x, y in zip(a, b))
    assert [(o.shape, o.colour, o.bbox) for s in a for o in s.objects] == \
        [(o.shape, o.colour, o.bbox) for s in b for o in s.objects]
    assert any(not np.array_equal(x.image, y.image) for x, y in zip(a, c))
    s = a[0]
    assert s.image.shape == (32, 32, 3) and s.image.dtype == np.uint8
    assert s.caption == world.caption_for([(o.colour, o.shape) for o in s.objects])


def test_scenes_are_non_overlapping_with_distinct_colours():
    for sc in world.generate(200, seed=1, p_two=1.0):
        m1, m2 = sc.objects[0].mask, sc.objects[1].mask
        assert not (m1 & m2).any()
        assert sc.objects[0].colour != sc.objects[1].colour
        assert " and " in sc.caption


def test_captions_are_single_tokens_at_documented_positions():
    from ebca_viz.models import load_tokenizer

    tok = load_tokenizer()
    for w in "circle square triangle red green blue yellow magenta cyan white orange and a".split():
        assert len(tok(w).input_ids) == 3, w  # <sot> word <eot>
    cap = "a red circle and a blue square"
    ids = tok(cap).input_ids
    assert len(ids) == 9
    pos = world.TOKEN_POSITIONS[2]
    assert [tok.decode([ids[i]]).strip() for i in pos["colour"]] == ["red", "blue"]
    assert [tok.decode([ids[i]]).strip() for i in pos["shape"]] == ["circle", "square"]


def test_prompt_splits_are_disjoint_and_cover_all():
    tune, report = world.two_object_prompts("tune"), world.two_object_prompts("report")
    assert len(tune) == 24 and len(report) == 48 and not set(tune) & set(report)
    assert set(tune) | set(report) == set(world.two_object_prompts())
    assert all(a[0] != b[0] and a[1] != b[1] for a, b in world.two_object_prompts())


def test_detector_matches_ground_truth_on_clean_renders():
    r = verify(n=400, seed=2024)
    assert r["scene_accuracy"] >= 0.99, r["errors"]
    assert r["object_recall"] >= 0.99 and r["object_precision"] >= 0.99
    cats = r["pair_categories"]
    assert cats["both_present"] >= 0.99 * sum(cats.values())


def test_detector_scores_failure_modes():
    rng = np.random.default_rng(0)
    req = (("red", "circle"), ("blue", "square"))
    swapped, _ = world.render(world.layout(rng, [("red", "square"), ("blue", "circle")]))
    assert score_pair(req, detect(swapped))["category"] == "swapped"
    one, _ = world.render(world.layout(rng, [("red", "circle")]))
    r = score_pair(req, detect(one))
    assert r["category"] == "missing" and r["first_present"] and not r["second_present"]
    leak, _ = world.render(world.layout(rng, [("red", "circle"), ("red", "square")]))
    assert score_pair(req, detect(leak))["category"] == "wrong_binding"
    good, _ = world.render(world.layout(rng, list(req)))
    assert score_pair(req, detect(good))["category"] == "both_present"
    assert score_single(("red", "circle"), detect(one))["exact"]
    assert not score_single(("red", "circle"), detect(np.zeros((32, 32, 3), np.uint8)))["correct"]


TINY = ["--image-size", "16", "--vae-channels", "8,16,16", "--unet-channels", "16,32", "--text-hidden", "16",
        "--heads", "2", "--batch", "4", "--vae-batch", "4", "--vae-max-steps", "2", "--max-steps", "3",
        "--log-every", "1", "--no-progress", "--seed", "5"]


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    from ebca_viz.shapes.train import main

    out = tmp_path_factory.mktemp("shapes_train")
    return out, main(["--out", str(out)] + TINY)


def test_short_training_run_saves_weights_that_load_back(trained):
    from safetensors.torch import load_file

    from ebca_viz.models.shapes_world import load_components, load_shapes_pipeline

    tmp_path, info = trained
    assert info["unet"]["steps"] == 3 and info["vae"]["steps"] == 2
    folder = tmp_path / "pipeline"
    files = sorted(p.relative_to(folder).as_posix() for p in folder.rglob("*") if p.is_file())
    assert "unet/diffusion_pytorch_model.safetensors" in files and "text_encoder/model.safetensors" in files
    assert not [f for f in files if f.endswith((".bin", ".pt", ".pth", ".pkl", ".ckpt"))]
    sd = load_file(str(folder / "unet" / "diffusion_pytorch_model.safetensors"))
    assert all(v.dtype == torch.float16 for v in sd.values())
    vae, unet, te = load_components(folder)
    assert torch.equal(unet.state_dict()["conv_in.weight"], sd["conv_in.weight"].float())
    assert vae.config.scaling_factor == info["vae"]["scaling_factor"]
    lines = (tmp_path / "loss.csv").read_text().splitlines()
    assert lines[0] == "step,minutes,loss,lr" and len(lines) == 4
    pipe = load_shapes_pipeline(folder=folder)
    im = pipe("a red circle", num_inference_steps=2, guidance_scale=3.0, output_type="np").images
    assert im.shape == (1, 16, 16, 3) and np.isfinite(im).all()
    assert json.loads((tmp_path / "train_info.json").read_text())["versions"]["torch"] == torch.__version__


def test_benchmark_runs_end_to_end_on_a_tiny_model(trained, tmp_path):
    from ebca_viz.shapes.benchmark import main

    folder = trained[0] / "pipeline"
    res = main(["--pipeline", str(folder), "--n", "4", "--tune-n", "4", "--grid", "0.01:0.02", "--upweights", "2.5",
                "--steps", "2", "--vae-n", "8", "--out", str(tmp_path)])
    assert set(res["report"]["pair"]) == {"vanilla", "EBCU", "EBCU + up-weight"}
    assert res["report"]["n_pair"] == 48 and res["report"]["n_single"] == 12
    assert res["chosen"] == dict(gamma_attn=0.01, gamma_norm=0.02, upweight=2.5, token_indices=[3, 7])
    assert (tmp_path / "results.md").read_text().startswith("# Shapes-world")
    r = res["report"]["pair"]["EBCU"]["both_present"]
    assert 0 <= r["p"] <= 1 and "vs_vanilla" in r


def test_shipped_pipeline_loads_offline_and_samples():
    from ebca_viz.models import load_pipeline
    from ebca_viz.models.shapes_world import WEIGHTS_DIR

    files = [p for p in WEIGHTS_DIR.rglob("*") if p.is_file()]
    assert sum(p.stat().st_size for p in files) <= 20 * 2**20
    assert {p.suffix for p in files} <= {".json", ".safetensors", ".md"}
    pipe = load_pipeline("shapes-world")
    im = pipe(["a red circle", "a red circle and a blue square"], num_inference_steps=3, guidance_scale=5.0,
              output_type="np").images
    assert im.shape == (2, 32, 32, 3) and np.isfinite(im).all()
