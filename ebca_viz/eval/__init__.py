"""Evaluation on the Attend-and-Excite prompt sets: CLIP metrics, BLIP captions, sweeps.

* :mod:`.clip_metrics`  full-prompt / minimum-object CLIP similarity, text-text similarity
* :mod:`ebca_viz.models.captioner`  BLIP captioner, re-exported here (``Salesforce/blip-image-captioning-base``)
* :mod:`.detector`      shapes-world detector metrics (when :mod:`ebca_viz.shapes.detect` is importable)
* :mod:`.sweep`         prompts x seeds x settings, one JSON per job, resumable, ``accelerate launch``-able
* :mod:`.aggregate`     mean +- standard error per setting
* :mod:`.ae`            diffusers' Attend-and-Excite on a loaded pipeline (sweep settings ``ae:...``)
* :mod:`.tiny`          tiny random CLIP / BLIP built in code (tests, offline)
"""
from .aggregate import aggregate, format_table
from ..models.captioner import BLIP_ID, Captioner, load_captioner
from .clip_metrics import CLIP_ID, CLIPScorer, load_clip_scorer, split_objects
from .sweep import Job, Setting, make_jobs, parse_seeds, parse_setting, resolve_prompts, run_sweep
from .tiny import tiny_captioner, tiny_clip_scorer

__all__ = [
    "CLIP_ID", "BLIP_ID", "CLIPScorer", "Captioner", "load_clip_scorer", "load_captioner", "split_objects",
    "Job", "Setting", "make_jobs", "parse_seeds", "parse_setting", "resolve_prompts", "run_sweep", "aggregate",
    "format_table", "tiny_captioner", "tiny_clip_scorer",
]
