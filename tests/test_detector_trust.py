"""The shapes-world detector can be trusted (issue 19, item 2), on a small sample (< 30 s).

Full numbers: ``benchmarks/detector_agreement.py`` -> ``docs/detector_agreement.json`` / ``docs/detector.md``.
"""
import collections

import numpy as np
import pytest

from ebca_viz.shapes import detect as D
from ebca_viz.shapes import world


def _blend(w: float, colour: str = "red", cx: float = 16.0, cy: float = 16.0, size: float = 12.0) -> np.ndarray:
    """A shape ``w`` of the way from a disc to a square (coverage blend), on black."""
    c = world.coverage(world.ObjectSpec("circle", colour, cx, cy, size))
    s = world.coverage(world.ObjectSpec("square", colour, cx, cy, size))
    a = ((1 - w) * c + w * s)[..., None]
    return np.clip(np.rint(a * np.array(world.COLOURS[colour], np.float32)), 0, 255).astype(np.uint8)


def test_rendered_scenes_never_claim_an_absent_object_and_are_confident():
    scenes = world.generate(300, seed=31_337)
    claimed_absent = wrong = unsure = 0
    for sc in scenes:
        found = D.detect(sc.image)
        gt = sorted((o.colour, o.shape) for o in sc.objects)
        claimed_absent += sum(d.key not in gt for d in found)
        wrong += sorted(d.key for d in found) != gt
        req = tuple((o.colour, o.shape) for o in sc.objects)
        v = D.score_pair(req, found) if len(req) == 2 else D.score_single(req[0], found)
        unsure += v["category"] == D.UNSURE
    assert claimed_absent == 0
    assert wrong <= 1  # per-object accuracy >= 99 % with room to spare (scene accuracy >= 99.7 %)
    assert unsure <= 3  # clean renders are far from every boundary


def test_shape_boundaries_are_the_midpoints_of_the_rendered_class_medians():
    feats = collections.defaultdict(list)
    for sc in world.generate(240, seed=99):
        for d in D.detect(sc.image):
            gt = [o for o in sc.objects if o.colour == d.colour]
            feats[gt[0].shape].append(d.features)
    med = {k: np.median(np.array(v), 0) for k, v in feats.items()}
    q_mid = (med["circle"][0] + med["square"][0]) / 2
    skew_mid = (med["triangle"][1] + (med["circle"][1] + med["square"][1]) / 2) / 2
    assert abs(q_mid - D.Q_BOUNDARY) < 0.01, med
    assert abs(skew_mid - D.SKEW_BOUNDARY) < 0.02, med
    assert abs((med["square"][0] - med["circle"][0]) / 2 - D.Q_HALF_GAP) < 0.01


def test_a_shape_halfway_between_circle_and_square_is_unsure_the_pure_ones_are_not():
    lo, hi = 0.0, 1.0  # blend weight where the squareness crosses the boundary
    for _ in range(30):
        mid = (lo + hi) / 2
        lo, hi = (mid, hi) if D.detect(_blend(mid))[0].features[0] < D.Q_BOUNDARY else (lo, mid)
    req = (("red", "circle"), ("blue", "triangle"))
    tri, _ = world.render([world.ObjectSpec("triangle", "blue", 6.5, 25.0, 10.0)])
    amb = np.maximum(_blend(mid, cx=20, cy=10), tri)
    found = D.detect(amb, q_margin=0.05)
    assert [d.key for d in found if not d.confident] == [found[0].key] and found[0].shape_margin < 0.01
    assert D.score_pair(req, found)["category"] == D.UNSURE
    assert D.score_single(("red", "circle"), D.detect(_blend(mid), q_margin=0.05))["category"] == D.UNSURE
    for w, shape in ((0.0, "circle"), (1.0, "square")):
        pure = D.detect(np.maximum(_blend(w, cx=20, cy=10), tri))
        assert pure.confident and {d.key for d in pure} == {("red", shape), ("blue", "triangle")}
        assert D.score_pair(req, pure)["category"] == ("both_present" if shape == "circle" else "wrong_binding")


def test_a_shape_at_the_size_threshold_is_unsure_whether_it_is_there():
    found = None
    for size in np.arange(3.0, 8.0, 0.05):  # the smallest size whose core reaches min_area
        im, _ = world.render([world.ObjectSpec("square", "green", 16.0, 16.0, float(size))])
        cands, min_area = D.candidates(im)
        if cands and cands[0].area >= D.MIN_AREA:
            found = D.apply_margins(cands, min_area, area_margin=0.25)
            break
    assert found is not None and len(found) == 1 and None in found[0].alternatives
    big, _ = world.render([world.ObjectSpec("circle", "red", 8.0, 8.0, 11.0)])
    im = np.maximum(im, big)
    req = (("red", "circle"), ("green", "square"))
    assert D.score_pair(req, D.detect(im, area_margin=0.25))["category"] == D.UNSURE
    assert D.score_pair(req, D.detect(im, area_margin=0.0))["category"] == "both_present"
    assert D.score_single(("red", "circle"), D.detect(im, area_margin=0.25))["category"] == "correct"  # the top object is sure


def test_plain_lists_of_detections_still_score():
    d = [D.Detection("red", "circle", (0, 0, 4, 4), 16, 0.8), D.Detection("blue", "square", (8, 8, 12, 12), 16, 1.0)]
    r = D.score_pair((("red", "circle"), ("blue", "square")), d)
    assert r["category"] == "both_present" and not r["unsure"]
    assert D.score_single(("red", "circle"), d)["category"] == "correct"


@pytest.mark.skipif(not __import__("ebca_viz.models.shapes_world", fromlist=["x"]).weights_available(),
                    reason="shapes-world weights not shipped")
def test_vae_roundtrip_and_generated_pairs(shapes):
    """VAE round-trips are judged like the renders; vanilla vs EBCU (gamma 0.1) pairs agree."""
    import sys
    from pathlib import Path

    import torch

    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
    import detector_agreement as B
    from ebca_viz.config import EBCAConfig
    from ebca_viz.sampling import sample

    torch.set_num_threads(1)
    scenes = world.generate(60, seed=4242)
    acc = B.object_accuracy(scenes, B.vae_images(shapes, scenes))
    assert acc["object_accuracy"]["p"] >= 0.98 and acc["object_precision"] == 1.0, acc

    items = world.two_object_prompts("report")[:16]
    prompts = [world.caption_for(list(p)) for p in items]
    seeds = [510_000 + k for k in range(16)]  # not a tuning seed
    a = sample(shapes, prompts, seeds, steps=25, guidance=3.0, batch=16)
    b = sample(shapes, prompts, seeds, steps=25, guidance=3.0, batch=16,
               method=EBCAConfig(gamma_attn=0.1, gamma_norm=0.1))
    va = [D.score_pair(it, D.detect(x))["category"] for it, x in zip(items, a)]
    vb = [D.score_pair(it, D.detect(x))["category"] for it, x in zip(items, b)]
    sure = [(x, y) for x, y in zip(va, vb) if D.UNSURE not in (x, y)]
    # 16 pairs cannot show 98 %: this guards against a regression to the old detector's level
    # (85 % on the 595 measurement pairs, i.e. ~2.4 disagreements expected here; measured now: 2 of 16)
    assert len(sure) >= 12, (va, vb)
    assert sum(x != y for x, y in sure) <= 2, (va, vb)
    assert (va + vb).count(D.UNSURE) <= 4, (va, vb)


def test_template_fit_names_clean_renders_and_its_readings_follow_the_margin():
    """Revision 2's second opinion: each clean render fits its own template far better than the others."""
    own, other = [], []
    for sc in world.generate(30, seed=2024):
        for d in D.candidates(sc.image, with_templates=True)[0]:
            gt = [o.shape for o in sc.objects if o.colour == d.colour][0]
            for k, e in zip(D.SHAPE_KINDS, d.fit_errors):
                (own if k == gt else other).append(e)
    assert max(own) < 0.02 and min(other) > 0.05, (max(own), min(other))
    assert D.template_readings((0.01, 0.05, 0.2), -1.0) == []
    assert D.template_readings((0.01, 0.05, 0.2), 0.0) == ["circle"]
    assert D.template_readings((0.01, 0.05, 0.2), 2.0) == ["circle", "square"]  # log(5) = 1.61 < 2
    d = D.Detection("red", "circle", (0, 0, 4, 4), 16, 0.8, features=(0.9, 0.0), fit_errors=(0.05, 0.01, 0.3))
    found = D.apply_margins([d], 12, q_margin=0.0, skew_margin=0.0, area_margin=0.0, tmpl_margin=0.0)
    assert found[0].alternatives == [("red", "square")]  # moments say square (q 0.9), the templates too
    d.features = (0.7, 0.0)  # moments: circle; templates: square -> the square is a reading, the object unsure
    found = D.apply_margins([d], 12, q_margin=0.0, skew_margin=0.0, area_margin=0.0, tmpl_margin=0.0)
    assert found[0].shape == "circle" and found[0].alternatives == [("red", "square")]
    found = D.apply_margins([d], 12, q_margin=0.0, skew_margin=0.0, area_margin=0.0, tmpl_margin=-1.0)
    assert found[0].alternatives == []


_ROOT = __import__("pathlib").Path(__file__).resolve().parents[1]


@pytest.mark.parametrize("model,name,first_seed", [("shapes-world", "detector_agreement.json", 520_000),
                                                   ("neglect-world", "detector_agreement_neglect-world.json", 600_000)])
def test_shipped_agreement_files_match_the_detector_and_their_numbers(model, name, first_seed):
    """The shipped measurements (docs/detector.md): made with this detector's margins, on >= 500 fresh
    pairs outside the tuning seeds, fingerprint intact, and the flags agree with the numbers."""
    import hashlib
    import json

    res = json.loads((_ROOT / "docs" / name).read_text())
    body = {k: v for k, v in res.items() if k not in ("wall_s", "fingerprint")}
    assert hashlib.sha256(json.dumps(body, sort_keys=True, default=str).encode()).hexdigest()[:16] == res["fingerprint"]
    s = res["settings"]
    assert (s["model"], s["split"], s["seed"]) == (model, "report", first_seed)
    assert s["seed"] >= 400_768 or s["seed"] + s["n_pairs"] <= 400_000  # never a tuning seed
    assert res["margins"] == dict(q_margin=D.Q_MARGIN, skew_margin=D.SKEW_MARGIN, colour_margin=D.COLOUR_MARGIN,
                                  area_margin=D.AREA_MARGIN, tmpl_margin=D.TMPL_MARGIN)
    p, gt, vae = res["pairs"], res["ground_truth"], res["vae_roundtrip"]
    assert res["n_kept"] >= 500 and p["n_pairs"] == res["n_kept"]
    assert gt["object_accuracy"]["p"] >= 0.99 and vae["object_accuracy"]["p"] >= 0.99
    assert p["unsure"]["p"] <= 0.05
    assert p["agreement"]["n"] <= res["n_kept"]
    assert res["targets_met"]["agreement_ge_98"] == (p["agreement"]["p"] >= 0.98)
    # regression floor, below the shipped values (docs/detector.md, revision 2: shapes-world 93.3 %
    # [91.0, 95.1] on seeds 520000+; the old silhouette detector: 85 %)
    assert p["agreement"]["p"] >= 0.90, p["agreement"]


def test_neglect_world_generated_pairs_live():
    """A small live sample on neglect-world (seeds 610000+: neither tuning nor measurement seeds)."""
    from ebca_viz.models.worlds import shipped_worlds

    if "neglect-world" not in shipped_worlds():
        pytest.skip("neglect-world weights not shipped")
    import torch

    from ebca_viz.config import EBCAConfig
    from ebca_viz.models import load_pipeline
    from ebca_viz.shapes.benchmark import sample

    torch.set_num_threads(1)
    pipe = load_pipeline("neglect-world")
    pipe.set_progress_bar_config(disable=True)
    items = world.two_object_prompts("report")[::6]  # 8 prompts
    prompts = [world.caption_for(list(p)) for p in items]
    seeds = [610_000 + k for k in range(len(items))]
    a = sample(pipe, prompts, seeds, steps=25, guidance=3.0, batch=8)
    b = sample(pipe, prompts, seeds, steps=25, guidance=3.0, batch=8, config=EBCAConfig(gamma_attn=0.1, gamma_norm=0.1))
    va = [D.score_pair(it, D.detect(x))["category"] for it, x in zip(items, a)]
    vb = [D.score_pair(it, D.detect(x))["category"] for it, x in zip(items, b)]
    sure = [(x, y) for x, y in zip(va, vb) if D.UNSURE not in (x, y)]
    # 8 pairs cannot show 98 %; the measured pair noise (docs/detector.md) predicts < 0.5 disagreements here
    assert len(sure) >= 6 and sum(x != y for x, y in sure) <= 1, (va, vb)
    assert "missing" in va + vb or "both_present" in va + vb, (va, vb)  # the world's verdicts, not all unsure
