"""The paper's tasks as functions (and ``python -m ebca_viz <task>`` commands).

=================  ======================================  =========================================
task               function                                 published example presets
=================  ======================================  =========================================
``multiconcept``   :func:`multiconcept` (EBCU, up-weight)   ``lion-crown``, ``cat-shirt``
``synedit``        :func:`synthetic_edit` (EBCU + EBCQ)     ``castle-river``, ``house-watercolor``
``realedit``       :func:`real_edit` (inversion + EBCQ)     ``cat-dog``, ``horse-zebra``, ``afhq-goat``
``inpaint``        :func:`inpaint` (masked EBCU, RePaint)   ``teddy-bear``, ``teddy-bear-repaint``
``seg``            :func:`seg_sample` (SEG, SD and SDXL)     ``seg-sdxl-uncond``, ``seg-sdxl-cfg``
=================  ======================================  =========================================

Every function takes the pipeline first, returns a :class:`TaskResult` (images, settings, seed,
controller info), accepts ``observers=`` and leaves the pipeline as it found it (also on errors)::

    from ebca_viz.tasks import run_preset
    result = run_preset(pipe, "lion-crown")
    result.save("outputs/lion")
"""
from .common import TaskResult, edits_from_lists, sample_image
from .editing import synthetic_edit
from .inpainting import inpaint, repaint
from .inversion import ddim_invert
from .multiconcept import multiconcept
from .presets import PRESETS, Preset, get_preset, preset_kwargs
from .realedit import real_edit
from .registry import TASKS, run_preset, run_task
from .seg_sampling import seg_sample

__all__ = [
    "TaskResult", "multiconcept", "synthetic_edit", "real_edit", "ddim_invert", "inpaint", "repaint", "seg_sample",
    "PRESETS", "Preset", "get_preset", "preset_kwargs", "TASKS", "run_task", "run_preset", "edits_from_lists",
    "sample_image",
]
