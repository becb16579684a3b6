# ---
# jupyter:
#   jupytext:
#     formats: ipynb,py:percent
#     text_representation:
#       extension: .py
#       format_name: percent
#       format_version: '1.3'
#       jupytext_version: 1.19.7
#   kernelspec:
#     display_name: Python 3 (ipykernel)
#     language: python
#     name: python3
# ---

# %% [markdown]
# # 09 · Playground
#
# Vanilla and energy-based sampling from the same seed, side by side. Controls: prompt, seed, steps,
# CFG; **EBCA**: $\gamma_\text{attn}$, $\gamma_\text{norm}$, token up-weights (click a word of the prompt: its
# chip shows the index that `token_indices` uses, 0 = start-of-text, and its up-weight),
# up to two editorial prompts with $\alpha$, direction (and / not) and start; **SEG**: $\sigma$ (or $\infty$) and scale.
# The slider ranges come from the model's regime (`ebca_viz.shapes.regime`: shapes world's gammas are 0.3,
# real SD's 0.01 / 0.02); a value typed beyond a slider is refused with a message, not clamped.
# An edit row starts at the model's defaults; choosing "not" switches it to the negation default
# (shapes worlds: alpha 0.6 from 40 % of the steps, chosen on tuning seeds by
# `benchmarks/panel_negation.py`), and an alpha that would divide by zero is clamped with a message.
#
# Next to the images: the detector's verdict per image on the shapes worlds (✓ only when the object is
# found with a clear margin, **?** where the detector is unsure, ✗ missing or another object), the
# difference image on a **fixed scale** (0-64/255, colour bar; "identical" when nothing changed), and the
# posterior energy through the cascade with each update's drop marked and the share that went downhill.
# Under the result: the **last runs** as thumbnails (click "compare" to see a run beside the current
# one), and **success rate**, which samples N seeds with the current settings and vanilla on the same
# seeds and prints both rates with 95 % intervals and their paired difference (cancel stops it).
# **present** enlarges images and text for a projector and hides the expert controls.
# While a run is in progress, after an error, or once a setting changed, the previous result is greyed
# and marked *stale*.
# The button runs `ebca_viz.widgets.sample_comparison` on the GPU when there is one; the vanilla
# image is cached per (model, prompt, seed, steps). Errors appear in the panel.

# %%
MODEL = "shapes-world"  # or "sd15", "sdxl", a hub id or a folder with your weights (GPU recommended)
import ebca_viz as ev
from ebca_viz import claims
from ebca_viz.util import pick
from ebca_viz.notebook import finish, setup
from ebca_viz.widgets import EnergyPanel, PanelSettings

pipe, MODEL, KIND, REAL, R, STEPS, CFG = setup(MODEL)  # EBCA_VIZ_MODEL wins when set; prints the model and its regime
SETTINGS = PanelSettings.for_model(KIND, steps=pick(25, 10))   # this model's CFG, gammas, SEG settings
if KIND == "shapes-world":  # start on the seed (of 16) where EBCU changes the picture most; say so
    from ebca_viz.experiments.multiconcept import pick_demo_seed
    choice = pick_demo_seed(pipe, SETTINGS.prompt, SETTINGS.ebca_config(), seeds=range(16), steps=SETTINGS.steps,
                            guidance=SETTINGS.guidance_scale)
    SETTINGS.seed = choice.seed
    print(f"seed {choice.seed}: the largest change of 16 seeds ({choice.change:.1f}/255; median {choice.median_change:.1f}/255)")
panel = EnergyPanel(pipe=pipe, model=MODEL, settings=SETTINGS)
panel.show();

# %% [markdown]
# The same function without widgets:

# %%
from ebca_viz.widgets import sample_comparison

import numpy as np
from ebca_viz import claims

res = sample_comparison(pipe, SETTINGS, model=MODEL, cache=panel.cache)
change = np.abs(np.asarray(res.vanilla.image, float) - np.asarray(res.energy.image, float)).mean()
print(f"mean |{res.label} - vanilla| = {change:.2f} / 255 per pixel")
if MODEL.startswith("tiny"):  # random weights (shapes-world not in this copy): the pictures are noise, no claim
    print("random 'tiny' model: no claim about the size of the change")
else:
    claims.check(change > 5.0, "the default settings change the image visibly (mean |difference| > 5/255)", change)
res.images_figure()

# %% [markdown]
# ## Checks and timings
#
# Every result sentence above was guarded by a check that would have stopped the notebook had it failed; here they are in one table, with the time this run took.

# %%
finish();
