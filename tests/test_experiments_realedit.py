"""experiments.realedit: inversion reconstruction, z_T statistics and the red -> blue edit, scored."""
import numpy as np
import pytest
import torch

from ebca_viz import claims
from ebca_viz.experiments import realedit as rx
from ebca_viz.shapes import world
from ebca_viz.models.shapes_world import weights_available

needs_weights = pytest.mark.skipif(not weights_available(), reason="shapes-world weights not shipped")


def test_edit_scenes_hold_a_red_circle_and_alternate():
    sc = rx.edit_scenes(6, seed=3)
    assert [len(s.objects) for s in sc] == [1, 2, 1, 2, 1, 2]
    for s in sc:
        assert ("red", "circle") in [(o.colour, o.shape) for o in s.objects]
        assert all(o.colour in ("red",) + rx.OTHER_COLOURS for o in s.objects)
    assert [s.caption for s in sc] == [s.caption for s in rx.edit_scenes(6, seed=3)]  # deterministic
    with pytest.raises(ValueError, match="n must be"):
        rx.edit_scenes(0)


def test_latent_stats_white_vs_smooth_noise():
    g = torch.Generator().manual_seed(0)
    white = torch.randn(8, 4, 16, 16, generator=g)
    st = rx.latent_stats(white)
    assert np.all(np.abs(st["std"] - 1) < 0.1) and np.all(np.abs(st["lag1"]) < 0.15)
    smooth = torch.nn.functional.avg_pool2d(white, 3, stride=1, padding=1) * 0.5
    s2 = rx.latent_stats(smooth)
    assert np.all(s2["lag1"] > 0.4) and np.all(s2["std"] < 0.3)


def test_pixel_error_and_score_edit_on_drawn_scenes():
    rng = np.random.default_rng(0)
    specs = world.layout(rng, [("red", "circle"), ("green", "square")])
    img, gts = world.render(specs)
    scene = world.Scene(img, "a red circle and a green square", gts)
    e = rx.pixel_error(img[None], img[None])
    assert e["mae"][0] == 0 and e["psnr"][0] == 60.0
    assert rx.same_scene(scene, img)
    # the ideal edit: the same layout with the circle blue
    blue, _ = world.render([world.ObjectSpec("circle", "blue", specs[0].cx, specs[0].cy, specs[0].size), specs[1]])
    s = rx.score_edit(scene, blue)
    assert s["success"] and s["iou"] == 1.0 and s["shift"] == 0.0 and not s["other_turned_blue"]
    # the failure seen on two-object scenes: the blue goes to the other object, the circle turns green
    swapped, _ = world.render([world.ObjectSpec("circle", "green", specs[0].cx, specs[0].cy, specs[0].size),
                               world.ObjectSpec("square", "blue", specs[1].cx, specs[1].cy, specs[1].size)])
    s = rx.score_edit(scene, swapped)
    assert not s["success"] and not s["colour"] and s["shape"] and s["position"] and s["other_turned_blue"]
    assert not s["other_kept"] and s["no_source"]
    # unchanged input: still red
    s = rx.score_edit(scene, img)
    assert not s["success"] and not s["no_source"] and s["other_kept"]
    assert rx.verdict(np.zeros((32, 32, 3), np.uint8)) == "nothing"


def test_edit_setting_builds_edits():
    es = rx.PAPER_EDIT
    ed = es.edits()
    assert [e.direction for e in ed] == [1, -1] and ed[0].alpha == 0.75 and ed[1].alpha == 0.65
    assert len(es.positive_only().edits()) == 1 and "start 0.5" in es.name


@needs_weights
def test_reconstruction_and_edit_on_shapes_world(shapes):
    sc = rx.edit_scenes(4, seed=7)
    st = rx.InversionSetting(num_reg_steps=1, num_autocorr_rolls=1)
    rec = rx.measure_reconstruction(shapes, sc, st, steps=6)
    assert rec.z.shape == (4, 4, 8, 8) and rec.recon.shape == (4, 32, 32, 3)
    assert isinstance(rec.correct, claims.Rate) and rec.correct.n == 4
    assert rec.mae_vae.value < 6 and rec.mae.value < 25  # the VAE floor is a few grey levels
    assert abs(rec.mae_excess.value - (rec.mae.value - rec.mae_vae.value)) < 1e-9
    assert 0.3 < rec.z_std.value < 1.3
    # batched inversion = one image at a time (same posterior: the mean; no random rolls)
    st0 = rx.InversionSetting(lambda_autocorr=0.0, num_reg_steps=1, posterior="mean")
    zb = rx.invert(shapes, sc[:2], st0, steps=6)
    z1 = rx.invert(shapes, sc[1:2], st0, steps=6)
    assert torch.allclose(zb[1:2], z1, atol=1e-4)
    e = rx.measure_edit(shapes, sc, rec.z, rx.PAPER_EDIT, steps=6, guidance=3.0)
    assert e.rates["success"].n == 4 and e.single["success"].n == 2 and e.pair["success"].n == 2
    assert np.abs(e.images.astype(float) - rec.recon).mean() > 1.0  # the edit changes the images
    assert "| one object | 2 |" in rx.edit_table([e])
    assert "pix2pix-zero" in rx.inversion_table([rec])
    assert len(rx.plot_latents([rec]).axes) == 1
    assert len(rx.plot_examples(rec, [e], [0, 1]).axes) == 5 * 2 + 1  # + the colour bar of the difference maps
