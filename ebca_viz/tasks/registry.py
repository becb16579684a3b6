"""Tasks by name: ``run_task("multiconcept", pipe, prompt=...)``, ``run_preset(pipe, "lion-crown")``."""
from __future__ import annotations

from typing import Callable
from ..errors import InvalidSetting


def _tasks() -> dict[str, Callable]:
    from .editing import synthetic_edit
    from .inpainting import inpaint
    from .multiconcept import multiconcept
    from .realedit import real_edit
    from .seg_sampling import seg_sample

    return {"multiconcept": multiconcept, "synedit": synthetic_edit, "realedit": real_edit, "inpaint": inpaint,
            "seg": seg_sample}


TASKS = ("multiconcept", "synedit", "realedit", "inpaint", "seg")


def run_task(name: str, pipe, **kwargs):
    """Run task ``name`` (one of :data:`TASKS`) on ``pipe``."""
    table = _tasks()
    if name not in table:
        raise InvalidSetting(f"unknown task {name!r}: choose one of {list(TASKS)}")
    return table[name](pipe, **kwargs)


def run_preset(pipe, name: str, **overrides):
    """Run a published example (:data:`~ebca_viz.tasks.presets.PRESETS`) on ``pipe``; ``overrides``
    replace preset settings (e.g. ``num_inference_steps=5`` for a quick look, ``image=`` for
    the tasks that need a photo)."""
    from .presets import get_preset, preset_kwargs

    p = get_preset(name)
    kw = preset_kwargs(name)
    kw.update(overrides)
    return run_task(p.task, pipe, **kw)
