"""Notebook 03_ebcq_composition."""
from common import SETUP, code, md  # noqa: F401

CELLS = [
    md(r'''
# 03 · EBCQ: composing prompts at every layer

Editorial prompts $s = 1..S$ each get their own cross-attention output $O_s$ (same queries, their own
context, itself updated by its own EBCU), and the layer returns the weighted mean

$$O = \frac{O_\text{main} + \sum_s \sigma_s \alpha_s\, O_s}{1 + \sum_s \sigma_s \alpha_s},
\qquad \sigma_s = +1 \text{ (and)},\; -1 \text{ (not)} .$$

It is the energy view again: summing the query energies of several contexts and taking one
gradient step gives exactly this mean. A zero denominator is a user error, reported before any
sampling.
'''),
    code(SETUP),
    code('''
from ebca_viz.tasks import synthetic_edit

if REAL:
    PROMPT, EDIT = "a house at a lake", "Water colors, Watercolor painting, Watercolor"
else:
    PROMPT, EDIT = "a red circle", "a blue square"
SEED = 0
alphas = viz.pick([0.0, 0.4, 0.8, 1.2], [0.0, 1.0])
images = []
for a in alphas:
    res = synthetic_edit(pipe, PROMPT, [ev.Edit(prompt=EDIT, alpha=a, direction=+1, start=0.0)],
                         seed=SEED, num_inference_steps=STEPS)
    images.append(res.image)
viz.image_grid(images, ncols=len(images), titles=[f"alpha {a:g}" for a in alphas],
               title=f'"{PROMPT}" + alpha x "{EDIT[:30]}"')
'''),
    md(r'''
## Negation

$\sigma = -1$ pushes the output away from the editorial prompt. With a single negated edit and
$\alpha = 1$ the denominator $1 - 1$ vanishes:
'''),
    code('''
try:
    synthetic_edit(pipe, PROMPT, [ev.Edit(prompt=EDIT, alpha=1.0, direction=-1)], num_inference_steps=STEPS)
except ValueError as e:
    print("ValueError:", e)
res_neg = synthetic_edit(pipe, PROMPT, [ev.Edit(prompt=EDIT, alpha=0.5, direction=-1, start=0.0)],
                         seed=SEED, num_inference_steps=STEPS)
viz.compare_images({"alpha 0": images[0], "+ edit": images[-1], "- edit (alpha 0.5)": res_neg.image})
'''),
    md(r'''
## What the main context does meanwhile

The trace follows the main prompt's context (the editorial contexts are inside the controller).
With editorial EBCU on (`gamma_attn`, `gamma_norm` of the edit) and the published
`edit_context="accumulate"`, the editorial contexts keep their updates across steps.
'''),
    code('''
g_ed = viz.pick(4e-4, 4e-3)
with ev.trace(pipe) as tr:
    res = synthetic_edit(pipe, PROMPT, [ev.Edit(prompt=EDIT, alpha=1.0, start=0.0, gamma_attn=g_ed, gamma_norm=g_ed)],
                         gamma_attn=0.01, gamma_norm=0.02, seed=SEED, num_inference_steps=STEPS)
print(res.info)
viz.plot_trace_maps(tr, by="step", image=res.image)
'''),
]
