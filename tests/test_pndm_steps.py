"""PNDM (SD 1.x/2.x's default scheduler) calls the UNet once more than num_inference_steps: the
trace's byte estimate, the gamma schedules (per-step lists and start/stop windows) and the trace's
step windows all count that extra call the same way."""
import pytest
import torch

import ebca_viz as ev


@pytest.fixture()
def pndm_pipe(tiny_pipe):
    from diffusers import PNDMScheduler, StableDiffusionPipeline

    p = StableDiffusionPipeline(**{**tiny_pipe.components,
                                   "scheduler": PNDMScheduler.from_config(tiny_pipe.scheduler.config, skip_prk_steps=True)})
    p.set_progress_bar_config(disable=True)
    return p


def _run(p, steps=2):
    return p("a red circle", num_inference_steps=steps, guidance_scale=5.0, output_type="pt",
             generator=torch.Generator().manual_seed(0)).images


def test_pndm_estimate_counts_every_unet_call(pndm_pipe):
    est = ev.estimate_bytes(pndm_pipe, num_steps=2)
    with ev.trace(pndm_pipe) as tr:
        _run(pndm_pipe)
    assert len(tr.timesteps) == 3 and len(tr.steps) == 3  # 2 steps, 3 UNet calls
    assert tr.nbytes == est
    assert ev.estimate_bytes(pndm_pipe, num_steps=2, steps=[(0.5, 1.0)]) < est  # the window keeps 2 of 3 calls
    with ev.trace(pndm_pipe, steps=[(0.5, 1.0)]) as w:
        _run(pndm_pipe)
    assert w.steps == [1, 2] and w.nbytes == ev.estimate_bytes(pndm_pipe, num_steps=2, steps=[(0.5, 1.0)])


def test_pndm_schedules_list_and_window_agree(pndm_pipe):
    """A per-step list [0, g] and the window 'on from half the run' give the same gamma at every call,
    PNDM's extra (third) call included."""
    g = 0.05
    seen = {}
    for name, sched in (("list", ev.Schedule.steps([0.0, g])), ("window", ev.Schedule.window(g, start=0.5))):
        class Grab:
            def on_forward_start(self, ctl, out=seen.setdefault(name, [])):
                out.append(ctl.now["gamma_attn"])

            def on_cross_attention(self, ev):
                pass

        with ev.energy_attention(pndm_pipe, ev.EBCAConfig(gamma_attn=sched, gamma_norm=0.0)) as ctl:
            ctl.observers.append(Grab())
            _run(pndm_pipe)
    assert seen["list"] == [0.0, g, g]
    assert seen["window"] == seen["list"]
