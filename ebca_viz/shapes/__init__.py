"""Shapes world: a toy text-to-image domain where multi-object prompts really fail.

* :mod:`.world`     procedural scenes (1-2 coloured shapes) with captions and ground truth
* :mod:`.detect`    deterministic detector (palette colour masks + connected components + fill ratio)
* :mod:`.train`     trains a genuine diffusers ``StableDiffusionPipeline`` from scratch on it
* :mod:`ebca_viz.models.shapes_world` (with every other model loader) loads the shipped fp16 pipeline
* :mod:`.benchmark` vanilla vs EBCU vs EBCU + token up-weighting on two-object prompts
"""
