"""Notebook 04_synthetic_editing."""
from common import SETUP, code, md  # noqa: F401

CELLS = [
    md(r'''
# 04 · Synthetic-image editing

Edit a generated image by composing editorial prompts (EBCQ) **after** the layout has formed:
$\alpha_s$ and the editorial gammas switch on at a fraction `start` of the run,

$$\alpha_s(i) = \alpha_s\, [\, \lfloor T\cdot\text{start}\rfloor \le i \,], \qquad i = 0 \text{ (noisiest)} \dots T-1 .$$

(The published scripts call this fraction `alpha_tau`/`gamma_tau` and use the same name with the
opposite meaning for text-to-image; `ebca_viz.Schedule.window(value, start=, stop=)` says which.)
Published example: "a castle next to a river" + "monet painting, impression, sunrise" (+) +
"boat on a river, boat" (+), $\alpha = 1.3, 1.3$, start 0.2.
'''),
    code(SETUP),
    code('''
from ebca_viz.tasks import synthetic_edit, edits_from_lists

if REAL:
    PROMPT = "a castle next to a river"
    EDITS = edits_from_lists(["monet painting, impression, sunrise", "boat on a river, boat"],
                             directions=[1, 1], alphas=[1.3, 1.3], starts=[0.2, 0.2])
else:
    PROMPT = "a red circle"
    EDITS = edits_from_lists(["a blue square"], directions=[1], alphas=[1.3], starts=[0.2])
SEED = 0
source = synthetic_edit(pipe, PROMPT, [], seed=SEED, num_inference_steps=STEPS)
with ev.trace(pipe) as tr:
    edited = synthetic_edit(pipe, PROMPT, EDITS, gamma_attn=0.0, gamma_norm=0.0, seed=SEED, num_inference_steps=STEPS)
viz.compare_images({"source (same seed)": source.image, "edited": edited.image}, diff=True)
'''),
    md(r'''## The schedules: when each edit acts'''),
    code('''
from ebca_viz.config import Edit
fig = viz.new_figure(figsize=(6, 2.6))
ax = fig.subplots()
for n, e in enumerate(EDITS):
    r = e.resolved(n)
    ax.step(range(STEPS), [r.alpha(i, STEPS) for i in range(STEPS)], where="post", label=f"alpha of edit {n}: {e.prompt[:25]}")
ax.set_xlabel("sampling step i (0 = noisiest)"); ax.set_ylabel("alpha_s(i)"); ax.legend(fontsize=7)
fig.tight_layout(); fig
'''),
    md(r'''## Attention of the main prompt's words over the steps (mean over layers)'''),
    code('''viz.plot_trace_maps(tr, by="step", image=edited.image)'''),
    code('''viz.show_animation(viz.animate_trace(tr))'''),
]
