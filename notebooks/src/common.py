"""Shared pieces of the notebook sources: cell constructors and the setup cell."""
from nbformat.v4 import new_code_cell, new_markdown_cell


def md(s: str):
    return new_markdown_cell(s.strip("\n"))


def code(s: str):
    return new_code_cell(s.strip("\n"))


SETUP = '''MODEL = "shapes-world"  # or "sd15", "sdxl", a hub id or a folder with your weights (GPU recommended)
import os
MODEL = os.environ.get("EBCA_VIZ_MODEL", MODEL)  # the environment variable EBCA_VIZ_MODEL wins when set

import torch
import ebca_viz as ev
from ebca_viz import viz
from ebca_viz.models import model_kind
from IPython.display import display

pipe, MODEL = viz.load_model(MODEL)  # falls back to the random "tiny" model when shapes-world is absent
KIND = model_kind(pipe)  # read from the loaded pipeline, never from the name: "shapes-world", "tiny*" or "sd"
REAL = KIND == "sd"      # a Stable Diffusion checkpoint (real weights or yours): the paper's prompts and settings
from ebca_viz import claims
from ebca_viz.shapes.regime import regime_for
R = regime_for(KIND)  # this model's own settings (shapes world: benchmarks/shapes_sweep.py; real SD: the paper's)
print(f"model {MODEL!r}: {KIND}")
STEPS, CFG = viz.pick(R.steps, R.fast_steps), R.guidance
print(f"{STEPS} sampling steps, CFG {CFG}{' (fast mode)' if viz.fast_mode() else ''}")'''
