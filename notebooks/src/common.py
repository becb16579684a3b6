"""Shared pieces of the notebook sources: cell constructors and the setup cell."""
from nbformat.v4 import new_code_cell, new_markdown_cell


def md(s: str):
    return new_markdown_cell(s.strip("\n"))


def code(s: str):
    return new_code_cell(s.strip("\n"))


SETUP = '''MODEL = "shapes-world"  # or "sd15" (real Stable Diffusion weights; a GPU is recommended)

import torch
import ebca_viz as ev
from ebca_viz import viz
from IPython.display import display

pipe, MODEL = viz.load_model(MODEL)  # falls back to the random "tiny" model when shapes-world is absent
REAL = MODEL.startswith("sd")
from ebca_viz import claims
from ebca_viz.shapes.regime import regime_for
R = regime_for(MODEL)  # this model's own settings (shapes world: benchmarks/shapes_sweep.py; real SD: the paper's)
STEPS, CFG = viz.pick(R.steps, R.fast_steps), R.guidance
print(f"{STEPS} sampling steps, CFG {CFG}{' (fast mode)' if viz.fast_mode() else ''}")'''
