"""The shipped worlds by name (shapes-world, neglect-world): offline loading, bad names, bad prompts,
and the neglect world's held-out training pairs."""
import json

import numpy as np
import pytest
import torch

from ebca_viz.errors import EbcaVizError
from ebca_viz.models.worlds import WORLDS, shipped_worlds, world_folder
from ebca_viz.shapes.vocabulary import check_prompt, vocabulary


def test_neglect_world_loads_offline_and_samples_a_batch():
    from diffusers import StableDiffusionPipeline

    from ebca_viz.models import load_pipeline

    folder = world_folder("neglect-world")
    files = [p for p in folder.rglob("*") if p.is_file()]
    assert sum(p.stat().st_size for p in files) <= 20 * 2**20
    assert {p.suffix for p in files} <= {".json", ".safetensors", ".md"}
    info = json.loads((folder / "training.json").read_text())
    assert info["args"]["holdout"] == "triangle-pairs" and info["args"]["threads"] == 1
    assert info["args"]["holdout_mode"] == "drop" and info["unet"]["steps"] > 0
    pipe = load_pipeline("neglect-world")
    assert type(pipe) is StableDiffusionPipeline
    gen = torch.Generator().manual_seed(0)
    im = pipe(["a red circle", "a red circle and a blue triangle"], num_inference_steps=3, guidance_scale=3.0,
              output_type="np", generator=gen).images
    assert im.shape == (2, 32, 32, 3) and np.isfinite(im).all()
    assert im.std() > 0.05  # not a blank canvas: something is drawn


def test_both_worlds_ship():
    assert shipped_worlds()[:2] == ["shapes-world", "neglect-world"]
    # the DiT world (tests/test_dit_world.py) ships once its training run has finished
    assert set(WORLDS) - set(shipped_worlds()) <= {"neglect-world-dit"}


@pytest.mark.parametrize("name", ["neglect-wrld", "no-such-world"])
def test_unknown_world_lists_the_worlds_that_ship(name):
    from ebca_viz.models import load_pipeline

    with pytest.raises(EbcaVizError, match=r"unknown (model or )?world .*'shapes-world', 'neglect-world'"):
        load_pipeline(name)
    with pytest.raises(EbcaVizError, match="neglect-world"):
        world_folder(name)


def test_prompt_outside_the_vocabulary_is_refused_listing_the_known_words():
    assert vocabulary("neglect-world") == sorted(
        ["a", "and", "red", "green", "blue", "yellow", "circle", "square", "triangle"])
    assert check_prompt("neglect-world", "a red circle and a blue triangle") == "a red circle and a blue triangle"
    assert check_prompt("shapes-world", "") == ""
    with pytest.raises(EbcaVizError) as e:
        check_prompt("neglect-world", "a purple cat and a blue triangle")
    msg = str(e.value)
    assert "['cat', 'purple']" in msg and "'triangle'" in msg and "'yellow'" in msg
    with pytest.raises(EbcaVizError, match="unknown world"):
        check_prompt("cat-world", "a red circle")


def test_neglect_training_scenes_never_hold_the_report_pairs():
    from ebca_viz.shapes import neglect
    from ebca_viz.shapes.train import Batches

    data = Batches(seed=3, size=32, p_two=0.5, holdout="triangle-pairs")
    two = [p for p in (data.pairs() for _ in range(3000)) if len(p) == 2]
    assert len(two) > 1300
    seen = {frozenset(s for _, s in p) for p in two}
    assert frozenset({"circle", "triangle"}) not in seen and frozenset({"square", "triangle"}) not in seen
    assert frozenset({"circle", "square"}) in seen and frozenset({"triangle"}) in seen
    report = neglect.two_object_prompts("report")
    assert len(report) == 48 and all(neglect.is_held_out(list(p)) for p in report)
    assert not any(neglect.is_held_out(list(p)) for p in neglect.two_object_prompts("seen"))
    with pytest.raises(ValueError, match="holdout must be one of"):
        Batches(seed=0, size=32, p_two=0.1, holdout="triangles")


def test_interrupted_training_resumes_bit_identically(tmp_path):
    """A run stopped at step 3 (--stop-at) and continued with --resume ends with exactly the weights
    and losses of the uninterrupted run (step-based schedule; the state holds weights, EMA, AdamW
    moments and both RNG states)."""
    from safetensors.torch import load_file

    from ebca_viz.shapes.train import main

    tiny = ["--image-size", "16", "--batch", "4", "--vae-batch", "4", "--unet-channels", "32,32", "--vae-channels",
            "16,16,16", "--text-hidden", "32", "--heads", "2", "--log-every", "1", "--no-progress", "--minutes", "5",
            "--vae-max-steps", "2", "--schedule", "steps", "--max-steps", "5", "--p-two", "0.3", "--holdout",
            "triangle-pairs", "--ckpt-minutes", "100"]
    a, b = tmp_path / "a", tmp_path / "b"
    main(["--out", str(a)] + tiny)
    main(["--out", str(b), "--stop-at", "2"] + tiny)
    assert (b / "state" / "state.json").is_file() and json.loads((b / "state" / "state.json").read_text())["step"] == 2
    info = main(["--out", str(b), "--resume"] + tiny)
    assert info["unet"]["steps"] == 5
    for sub in ("pipeline", "pipeline_raw"):
        for comp, f in (("unet", "diffusion_pytorch_model.safetensors"), ("text_encoder", "model.safetensors")):
            wa, wb = load_file(str(a / sub / comp / f)), load_file(str(b / sub / comp / f))
            assert all(torch.equal(wa[k], wb[k]) for k in wa), (sub, comp)
    la = [r.split(",")[2] for r in (a / "loss.csv").read_text().splitlines()[1:]]
    lb = [r.split(",")[2] for r in (b / "loss.csv").read_text().splitlines()[1:]]
    assert la == lb and len(la) == 5


def test_drop_mode_names_both_held_out_objects_but_draws_one():
    from ebca_viz.shapes import neglect
    from ebca_viz.shapes.detect import detect
    from ebca_viz.shapes.train import Batches

    data = Batches(seed=5, size=32, p_two=1.0, holdout="triangle-pairs", mode="drop")
    scenes = [data.scene() for _ in range(120)]
    held = [id(s) for s in scenes if neglect.is_held_out([tuple(o.split()[1:]) for o in s.caption.split(" and ")])]
    assert 30 < len(held) < 90  # 4/9 of the random shape pairs are held out
    for s in scenes:
        drawn = len(s.objects)
        assert drawn == (1 if id(s) in held else 2), s.caption
        if id(s) in held:  # the one drawn object is one of the two named
            assert [d.key for d in detect(s.image)] == [(s.objects[0].colour, s.objects[0].shape)]
            assert f"a {s.objects[0].colour} {s.objects[0].shape}" in s.caption
    with pytest.raises(ValueError, match="holdout mode"):
        Batches(seed=0, size=32, p_two=0.1, holdout="triangle-pairs", mode="erase")


def test_neglect_benchmark_script_and_shipped_numbers(tmp_path):
    """benchmarks/neglect_world.py runs end to end (tiny n, 3 steps) and the shipped benchmark.json
    holds the targets of issue 19 item 1 at the stated n."""
    import sys
    from pathlib import Path

    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
    import neglect_world

    out = tmp_path / "r.json"
    res = neglect_world.main(["--split", "tune", "--n-pair", "4", "--n-seen", "2", "--n-single", "2", "--steps", "3",
                              "--out", str(out)])
    r = json.loads(out.read_text())
    assert r["fingerprint"] == res["fingerprint"] and set(r["by_guidance"]["3"]) == {"held_out_pairs", "seen_pairs",
                                                                                     "single"}
    pairs = r["by_guidance"]["3"]["held_out_pairs"]
    assert pairs["n"] == 4 and pairs["seeds"] == [100000, 100003] and len(pairs["verdicts"]) == 4
    cats = [v for k, v in pairs["rates"].items() if k.startswith("category:")] + [pairs["rates"]["missing"]]
    assert sum(c["k"] for c in cats) == 4  # the categories partition the samples
    shipped = json.loads((world_folder("neglect-world") / "benchmark.json").read_text())["report"]
    miss, single = shipped["held_out_pairs"]["rates"]["missing"], shipped["single"]["rates"]["correct"]
    assert miss["n"] >= 480 and miss["p"] >= 0.25 and single["n"] >= 480 and single["p"] >= 0.90
    assert shipped["seen_pairs"]["rates"]["missing"]["p"] < miss["lo"]  # the held-out pairs, not pairs as such


def test_sample_traced_refuses_words_outside_the_world_before_sampling():
    from ebca_viz.errors import EbcaVizError
    from ebca_viz.models import load_pipeline
    from ebca_viz.notebook import sample_traced

    pipe = load_pipeline("neglect-world")
    before = dict(pipe.unet.attn_processors)
    with pytest.raises(EbcaVizError, match=r"never trained on \['cat', 'purple'\].*knows only"):
        sample_traced(pipe, "a purple cat and a blue triangle", steps=2)
    assert dict(pipe.unet.attn_processors) == before  # nothing installed, nothing left behind
