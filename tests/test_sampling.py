"""ebca_viz.sampling: the one sample-and-score equals a hand-written diffusers call, does not depend on
the batch, scores like detect + score_pair / score_single, and refuses bad input by naming the parameter."""
import numpy as np
import pytest
import torch

from ebca_viz.config import EBCAConfig, SEGConfig
from ebca_viz.errors import EbcaVizError
from ebca_viz.sampling import initial_latents, sample, score

PROMPTS = ["a red circle and a blue square", "a green triangle and a yellow circle",
           "a blue square and a red triangle", "a red circle"]
SEEDS = [0, 1, 7, 123]
STEPS = 4


def _by_hand(pipe, prompts, seeds, **kw):
    """What sample() promises, written out with diffusers: one CPU generator per seed draws (4, 8, 8)."""
    lat = torch.stack([torch.randn((4, 8, 8), generator=torch.Generator().manual_seed(s)) for s in seeds])
    im = pipe(prompts, latents=lat, num_inference_steps=STEPS, guidance_scale=3.0, height=32, width=32,
              output_type="np", **kw).images
    return (im * 255).round().astype(np.uint8)


def test_sample_equals_a_hand_written_diffusers_call(shapes):
    assert shapes.unet.config.sample_size == 8 and shapes.unet.config.in_channels == 4
    ims = sample(shapes, PROMPTS, SEEDS, steps=STEPS, guidance=3.0)
    assert ims.shape == (4, 32, 32, 3) and ims.dtype == np.uint8
    ref = _by_hand(shapes, PROMPTS, SEEDS)
    assert np.array_equal(ims, ref)
    assert ims.std() > 10  # real pictures, not a constant
    # one prompt from a seed = diffusers drawing the latents itself from a CPU generator with that seed
    one = shapes(PROMPTS[:1], num_inference_steps=STEPS, guidance_scale=3.0, output_type="np",
                 generator=torch.Generator().manual_seed(SEEDS[0])).images
    assert np.array_equal(sample(shapes, PROMPTS[:1], SEEDS[:1], steps=STEPS, guidance=3.0),
                          (one * 255).round().astype(np.uint8))
    assert torch.equal(initial_latents(SEEDS[:2], (4, 8, 8))[1],
                       torch.randn((4, 8, 8), generator=torch.Generator().manual_seed(SEEDS[1])))


def test_a_method_changes_the_image_and_equals_installing_it_by_hand(shapes):
    from ebca_viz.ebca import energy_attention

    cfg = EBCAConfig(gamma_attn=0.3, gamma_norm=0.3)
    ims = sample(shapes, PROMPTS[:2], SEEDS[:2], method=cfg, steps=STEPS)
    with energy_attention(shapes, cfg):
        ref = _by_hand(shapes, PROMPTS[:2], SEEDS[:2])
    assert np.array_equal(ims, ref)
    van = sample(shapes, PROMPTS[:2], SEEDS[:2], steps=STEPS)
    assert np.abs(ims.astype(int) - van).mean() > 0.5  # EBCU at these strengths changes the picture
    # an installer callable is the same as the config
    assert np.array_equal(ims, sample(shapes, PROMPTS[:2], SEEDS[:2], steps=STEPS,
                                      method=lambda p: energy_attention(p, cfg)))


def test_images_do_not_depend_on_the_batch(shapes):
    a = sample(shapes, PROMPTS, SEEDS, steps=STEPS, batch=4)
    b = sample(shapes, PROMPTS, SEEDS, steps=STEPS, batch=2)
    assert np.array_equal(a, b)
    # the latents never depend on the batch; CPU arithmetic on a batch of 1 may move a pixel by one grey
    # level (measured: 1 pixel channel of image 0 differs by 1, batch 1 vs 4)
    c = sample(shapes, PROMPTS[::-1], SEEDS[::-1], steps=STEPS, batch=1)[::-1]
    d = np.abs(a.astype(int) - c)
    assert d.max() <= 1 and d.mean() < 0.01, (d.max(), d.mean())


def test_trace_on_step_and_seg(shapes):
    steps_seen = []
    ims, traces = sample(shapes, PROMPTS, SEEDS, steps=STEPS, batch=3, method=SEGConfig(scale=3.0),
                         trace=["seg"], on_step=lambda done, total: steps_seen.append((done, total)))
    assert len(traces) == 2 and steps_seen == [(k, 2 * STEPS) for k in range(1, 2 * STEPS + 1)]
    assert traces[0].seg_energies("blurred", image=None).shape[:2] == (3, STEPS)  # (images, steps, layers)
    # the trace computes attention itself (to keep the maps): at most one grey level apart from the
    # untraced images (measured: one pixel channel of image 0, vanilla and SEG; also so before sampling.py)
    van, tr = sample(shapes, PROMPTS, SEEDS, steps=STEPS, batch=3, trace=True)
    for traced, plain in ((ims, sample(shapes, PROMPTS, SEEDS, steps=STEPS, batch=3, method=SEGConfig(scale=3.0))),
                          (van, sample(shapes, PROMPTS, SEEDS, steps=STEPS, batch=3))):
        d = np.abs(traced.astype(int) - plain)
        assert d.max() <= 1 and d.mean() < 0.01, (d.max(), d.mean())
    assert len(tr) == 2 and tr[1].maps(aggregate="mean").shape == tr[0].maps(aggregate="mean").shape

    class Stop(Exception):
        pass

    def cancel(done, total):
        if done == 2:
            raise Stop

    procs = dict(shapes.unet.attn_processors)
    with pytest.raises(Stop):
        sample(shapes, PROMPTS[:1], SEEDS[:1], steps=STEPS, method=EBCAConfig(gamma_attn=0.1), on_step=cancel)
    assert dict(shapes.unet.attn_processors) == procs  # a cancel leaves nothing installed


def test_score_equals_detect_and_score_pair(shapes):
    from ebca_viz.shapes.detect import detect, score_pair, score_single

    ims = sample(shapes, PROMPTS, SEEDS, steps=STEPS)
    items = [(("red", "circle"), ("blue", "square")), (("green", "triangle"), ("yellow", "circle")),
             (("blue", "square"), ("red", "triangle")), ("red", "circle")]
    got = score(ims, items)
    ref = [score_pair(it, detect(im)) for it, im in zip(items[:3], ims[:3])] + [score_single(items[3], detect(ims[3]))]
    assert got == ref and all("category" in g for g in got)
    assert score(ims[3:], [[["red", "circle"]]]) == ref[3:]  # ((c, s),) and JSON lists are the same request


@pytest.mark.parametrize("kw, name", [
    (dict(prompts=PROMPTS, seeds=SEEDS[:3]), "seeds"),
    (dict(prompts=PROMPTS, seeds=SEEDS, steps=0), "steps"),
    (dict(prompts=PROMPTS, seeds=SEEDS, batch=0), "batch"),
    (dict(prompts="a red circle", seeds=[0]), "prompts"),
    (dict(prompts=PROMPTS, seeds=SEEDS, negative_prompts=["x"]), "negative_prompts"),
    (dict(prompts=PROMPTS, seeds=SEEDS, method="ebcu"), "method"),
    (dict(prompts=PROMPTS, seeds=SEEDS, observers=[object()]), "observers"),
])
def test_bad_input_names_the_parameter(shapes, kw, name, monkeypatch):
    calls = []
    monkeypatch.setattr(type(shapes), "__call__", lambda *a, **k: calls.append(1))
    with pytest.raises(EbcaVizError, match=name):
        sample(shapes, **kw)
    assert not calls  # refused before any pipeline call


def test_score_refuses_mismatched_items():
    with pytest.raises(EbcaVizError, match="items"):
        score(np.zeros((2, 32, 32, 3), np.uint8), [("red", "circle")])
    with pytest.raises(EbcaVizError, match="items"):
        score(np.zeros((1, 32, 32, 3), np.uint8), [("red",)])
