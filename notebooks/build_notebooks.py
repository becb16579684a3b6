"""Writes the explainer notebooks (``notebooks/NN_*.ipynb``) with nbformat, outputs stripped.

    python notebooks/build_notebooks.py          # rewrite every notebook
    python notebooks/build_notebooks.py --check  # exit 1 if a committed notebook differs

The notebooks hold the story (markdown with the equations) next to short calls; the logic lives
in ``ebca_viz``. Each one starts with ``MODEL = "shapes-world"  # or "sd15"``: the shapes-world toy
model offline (the random ``tiny`` model when its weights are absent), real Stable Diffusion with
one edit. ``EBCA_VIZ_FAST=1`` makes them use few steps and samples (CI).
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import nbformat
from nbformat.v4 import new_code_cell, new_markdown_cell, new_notebook

HERE = Path(__file__).resolve().parent

SETUP = '''MODEL = "shapes-world"  # or "sd15" (real Stable Diffusion weights; a GPU is recommended)

import torch
import ebca_viz as ev
from ebca_viz import viz
from IPython.display import display

pipe, MODEL = viz.load_model(MODEL)  # falls back to the random "tiny" model when shapes-world is absent
REAL = MODEL.startswith("sd")
STEPS = viz.pick(50 if REAL else 25, 4)  # EBCA_VIZ_FAST=1: 4 steps
print(f"{STEPS} sampling steps{' (fast mode)' if viz.fast_mode() else ''}")'''


def md(s: str):
    return new_markdown_cell(s.strip("\n"))


def code(s: str):
    return new_code_cell(s.strip("\n"))


NOTEBOOKS: dict[str, list] = {}

# ------------------------------------------------------------------------------------------------
NOTEBOOKS["00_tour"] = [
    md(r'''
# 00 · A tour of energy-based cross-attention

Text-to-image diffusion models read the prompt through **cross-attention**: at every layer the
image queries $Q = X W_q^\top$ ($P$ pixels) attend to keys $K = C W_k^\top$ and values $V = C W_v^\top$
of the text context $C$ ($N$ tokens):

$$O = \operatorname{softmax}_j\!\big(\beta\, Q K^\top\big)\, V, \qquad \beta = 1/\sqrt{d}.$$

Energy-based cross-attention (Park et al., NeurIPS 2023) reads this as one step of descent on an
energy, and adds the missing half: the **context** also descends, on the posterior energy

$$E(K;Q) + E(K) = -\sum_j \operatorname{lse}_i(\beta\, q_i^\top k_j) \;+\; \operatorname{lse}_j\!\big(\tfrac12 |k_j|^2\big),$$

layer after layer (**EBCU**, the Bayesian context update):

$$\Delta K = \gamma_\text{attn}\, \operatorname{softmax}_i(S)^\top Q - \gamma_\text{norm}\, \operatorname{softmax}_j(|k_j|^2)\, k_j,
\qquad C_{n+1} = C_n + \Delta K\, W_k .$$

This tour samples one prompt twice from the same seed, plain and with EBCU, and looks inside with
`ebca_viz.trace`. The other notebooks take each piece apart:
01 energy descent · 02 multi-concept · 03 composition (EBCQ) · 04 synthetic editing ·
05 real-image editing · 06 inpainting · 07 SEG · 08 measuring misalignment · 09 the playground panel.
'''),
    code(SETUP),
    code('''
PROMPT = "A lion with a crown" if REAL else "a red circle and a blue square"
SEED = 1 if REAL else 0

def sample(config=None):
    """Sample PROMPT from SEED, recording every cross-attention layer; config=None is vanilla."""
    g = torch.Generator("cpu").manual_seed(SEED)
    with ev.trace(pipe) as tr:
        if config is None:
            image = pipe(PROMPT, num_inference_steps=STEPS, generator=g).images[0]
        else:
            with ev.energy_attention(pipe, config):
                image = pipe(PROMPT, num_inference_steps=STEPS, generator=g).images[0]
    return image, tr

vanilla, tr_vanilla = sample()
ebcu, tr_ebcu = sample(ev.EBCAConfig(gamma_attn=0.01, gamma_norm=0.02))
viz.compare_images({"vanilla": vanilla, "EBCU": ebcu}, diff=True)
'''),
    md(r'''
## What the trace holds

Per sampling step $\times$ cross-attention layer: the attention maps per token, the energies of the
context entering and leaving the layer, and the norms / drift of every token's context vector.
'''),
    code('''print(tr_ebcu.summary())'''),
    md(r'''
## Energy goes down, layer after layer

Left: the posterior energy $E(K;Q)+E(K)$ of the context entering (dot) and leaving (end of the
segment) each layer, for a few steps, relative to the prompt's own context at that layer (vanilla
= 0): every segment goes down, and the updates cascade from layer to layer. Right: the decrease
each update achieves, per sampling step.
'''),
    code('''viz.plot_trace_energies(tr_ebcu, reference=tr_vanilla)'''),
    md(r'''
## Where each word looks

Maps $M_{t}(p) = \operatorname{mean}_\text{heads} \operatorname{softmax}_t(\beta\, q_p^\top k_t)$ of the prompt's words,
averaged over steps, one row per layer (execution order: down, mid, up).
'''),
    code('''viz.plot_trace_maps(tr_ebcu, by="layer", image=ebcu)'''),
    md('''And over the sampling steps (mean over layers), as an animation:'''),
    code('''viz.show_animation(viz.animate_trace(tr_ebcu))'''),
    md(r'''
## The context moves

Per token: $|c_j|$ along the layers, the drift $|c_j - c_j^0|$ from the prompt embedding, at the last
step. (In vanilla sampling the drift is 0: every layer reads the same prompt embedding.)
'''),
    code('''viz.plot_trace_contexts(tr_ebcu)'''),
    md(r'''
## Try it

`ebca_viz.widgets.EnergyPanel` wires these controls to the same sampling function
(`ebca_viz.widgets.sample_comparison`); notebook 09 is the playground.
'''),
    code('''
from ebca_viz.widgets import EnergyPanel, PanelSettings

panel = EnergyPanel(pipe=pipe, model=MODEL, settings=PanelSettings(prompt=PROMPT, seed=SEED, steps=STEPS))
panel.show();
'''),
]

# ------------------------------------------------------------------------------------------------
NOTEBOOKS["01_energy_descent"] = [
    md(r'''
# 01 · Attention as energy descent

One cross-attention layer, one head: $Q\in\mathbb R^{P\times d}$, $K\in\mathbb R^{N\times d}$, $S = \beta QK^\top$.
Three energies (method.md, $\alpha = 0$ as in the paper):

* query energy $\;E(Q;K) = -\sum_i \operatorname{lse}_j S_{ij}$
* context energy $\;E(K;Q) = -\sum_j \operatorname{lse}_i S_{ij}$ (lse over **pixels**)
* prior $\;E(K) = \operatorname{lse}_j \tfrac12 |k_j|^2$ (heads concatenated)

Their gradients have closed forms, and those closed forms are what the processors compute:

$$-\frac{\partial E(Q;K)}{\partial q_i} = \beta \sum_j \operatorname{softmax}_j(S_{ij})\, k_j
\quad(\text{attention, with } V = K)$$

$$-\frac{\partial E(K;Q)}{\partial k_j} = \beta \sum_i \operatorname{softmax}_i(S_{ij})\, q_i = \beta\, A_j,
\qquad \frac{\partial E(K)}{\partial k_j} = \operatorname{softmax}_j(\tfrac12|k_j|^2)\, k_j = R_j .$$

(`ebca_viz.energy` averages the context and query energies over the $H$ heads, hence a factor $H$ below.)
We take a real layer from a real sampling run and check each identity against `torch.autograd`.
'''),
    code(SETUP),
    code('''
from ebca_viz import energy as E

PROMPT = "A lion with a crown" if REAL else "a red circle and a blue square"
cap = viz.capture_attention(pipe, PROMPT, step=1, layer=len(pipe.unet.down_blocks), num_inference_steps=STEPS)
q, k = cap["q"].double(), cap["k"].double()   # (1, H, P, d), (1, H, N, d)
beta, H = cap["scale"], cap["heads"]
print(cap["name"], "grid", cap["grid"], "q", tuple(q.shape), "k", tuple(k.shape), "beta", round(beta, 4))
'''),
    md(r'''
## 1 · The context energy: autograd vs `ebca_viz.energy.attention_term`

$A = \operatorname{softmax}_i(S)^\top Q$ (heads concatenated) should equal $-\tfrac{H}{\beta}\,\partial E(K;Q)/\partial K$.
'''),
    code('''
k_ = k.clone().requires_grad_(True)
E.context_energy(q, k_, beta).sum().backward()
A = E.attention_term(E.attention_scores(q, k, beta), q)             # closed form, (1, N, H d)
autograd_A = -(H / beta) * E.merge_heads(k_.grad)
print("max |A - autograd| =", float((A - autograd_A).abs().max()))
viz.plot_gradient_check(autograd_A, A, title="attention term A vs -(H/beta) dE(K;Q)/dK")
'''),
    md(r'''## 2 · The prior: $R = \partial E(K)/\partial K$ (`norm_term`, paper form; the published code uses $|k|^2$ without the $\tfrac12$)'''),
    code('''
kc = E.merge_heads(k).clone().requires_grad_(True)
E.prior_energy(kc).sum().backward()
R = E.norm_term(E.merge_heads(k), prior_form="paper")
print("max |R - autograd| =", float((R - kc.grad).abs().max()))
'''),
    md(r'''## 3 · Attention itself is a gradient step on the query energy'''),
    code('''
q_ = q.clone().requires_grad_(True)
E.query_energy(q_, k, beta).sum().backward()
attention = beta * torch.softmax(E.attention_scores(q, k, beta), dim=-1) @ k   # softmax(S) K, per head
print("max |attention + H dE(Q;K)/dq| =", float((attention + H * q_.grad).abs().max()))
'''),
    md(r'''
## 4 · The context update is gradient descent, in context space

With $\gamma_\text{attn} = \eta\,\beta/H$ and $\gamma_\text{norm} = \eta$ (paper prior) the EBCU update
$\Delta K = \gamma_\text{attn} A - \gamma_\text{norm} R$ is $-\eta\, \partial(E(K;Q)+E(K))/\partial K$, and
$\Delta C = \Delta K\, W_k$ is the chain rule through $K = C W_k^\top$: $\Delta C = -\eta\,\partial E/\partial C$.
`ebca_viz.energy.context_update` against autograd in context space, then 30 such steps:
'''),
    code('''
C, Wk = cap["context"].double(), cap["w_k"].double()
eta = 0.01
C_ = C.clone().requires_grad_(True)
E.posterior_energy(q, E.split_heads(C_ @ Wk.T, H), beta).sum().backward()
dC = E.context_update(E.attention_scores(q, k, beta), q, k, Wk, eta * beta / H, eta, prior_form="paper")
print("max |dC + eta dE/dC| =", float((dC + eta * C_.grad).abs().max()), " (|dC| max", float(dC.abs().max()), ")")

energies, c = [], C.clone()
for _ in range(30):
    kk = E.split_heads(c @ Wk.T, H)
    energies.append(float(E.posterior_energy(q, kk, beta)))
    c = c + E.context_update(E.attention_scores(q, kk, beta), q, kk, Wk, eta * beta / H, eta, prior_form="paper")
viz.plot_descent(energies, xlabel="EBCU step on one layer", ylabel="E(K;Q) + E(K)", title="posterior energy along repeated updates")
'''),
    md(r'''
## 5 · Across the layers of a real run

In the UNet one update happens per layer, and the next layer sees the updated context through its
**own** $W_k$ and queries. The trace records $E(K;Q)+E(K)$ entering and leaving every layer:
every update lowers the energy at its own layer (right panel: the decrease per update).
'''),
    code('''
g = torch.Generator("cpu").manual_seed(0)
with ev.trace(pipe) as tr, ev.energy_attention(pipe, ev.EBCAConfig(gamma_attn=0.01, gamma_norm=0.02)):
    pipe(PROMPT, num_inference_steps=STEPS, generator=g)
drop = tr.energies(when="before") - tr.energies(when="after")
print(f"{float((drop > 0).float().mean()):.0%} of the {drop.numel()} updates lowered the posterior energy")
viz.plot_trace_energies(tr)
'''),
    code('''viz.plot_energy_heatmap(drop, layer_names=tr.layers, title="E_entering - E_leaving per step and layer")'''),
]

# ------------------------------------------------------------------------------------------------
NOTEBOOKS["02_ebcu_multiconcept"] = [
    md(r'''
# 02 · EBCU: several concepts in one prompt

Vanilla models often drop one object of "a cat wearing a shirt". EBCU lets the context of every
token gather the evidence the image queries give it, layer after layer,

$$C_{n+1} = C_n + \big(\gamma_\text{attn}\, w \odot \operatorname{softmax}_i(S)^\top Q - \gamma_\text{norm}\, \operatorname{softmax}_j(|k_j|^2)\, k_j\big) W_k ,$$

and **token up-weighting** ($w_t > 1$ for chosen tokens, conditional half only) strengthens the
attention term of a neglected word. `ebca_viz.tasks.multiconcept` runs it (published example:
"A cat wearing a shirt", $\gamma = 0.01/0.02$, up-weight 2.5 on index 5 = "shirt").
'''),
    code(SETUP),
    code('''
from ebca_viz.tasks import multiconcept

if REAL:  # the paper's settings
    PROMPT, UP, SEED = "A cat wearing a shirt", [5], 1
    GA, GN, W = 0.01, 0.02, 2.5
else:     # shapes-world: tuned on its tuning prompt split (ebca_viz/weights/shapes_world/TRAINING.md);
    PROMPT, UP, SEED = "a red circle and a blue square", [3, 7], 0   # 3 = circle, 7 = square
    GA, GN, W = 0.3, 0.3, 1.5  # the paper's 0.01 barely moves this small model's 64-d context
print(viz.token_labels(pipe, PROMPT))

settings = {
    "vanilla": dict(gamma_attn=0.0, gamma_norm=0.0),
    "EBCU": dict(gamma_attn=GA, gamma_norm=GN),
    f"EBCU + up-weight {UP}": dict(gamma_attn=GA, gamma_norm=GN, token_indices=UP, token_upweight=[W] * len(UP)),
}
images, traces = {}, {}
for name, kw in settings.items():
    with ev.trace(pipe, quantities=["maps", "energies", "context_norms", "contexts"]) as tr:
        res = multiconcept(pipe, PROMPT, seed=SEED, num_inference_steps=STEPS, **kw)
    images[name], traces[name] = res.image, tr
viz.compare_images(images)
'''),
    md(r'''## Where the words look, per setting (mean over steps and layers)'''),
    code('''
maps = torch.stack([tr.maps() for tr in traces.values()])   # (setting, token, H, W)
t0 = next(iter(traces.values()))
viz.plot_attention_maps(maps, tokens=viz.trace_tokens(t0), row_labels=list(traces),
                        token_indices=viz.trace_prompt_positions(t0), normalize="row")
'''),
    md(r'''
## The context trajectories

With up-weighting the chosen tokens travel further from their prompt embedding (drift), and the
2-D PCA of the displacements $c_j^{(n)} - c_j^{(0)}$ shows the direction each token takes.
'''),
    code('''viz.plot_trace_contexts(traces[f"EBCU + up-weight {UP}"], title="EBCU + up-weight: last step")'''),
    code('''viz.plot_trace_contexts(traces["EBCU"], title="EBCU: last step")'''),
    md(r'''## And the energies (dashed: vanilla)'''),
    code('''viz.plot_trace_energies(traces["EBCU"], reference=traces["vanilla"])'''),
]

# ------------------------------------------------------------------------------------------------
NOTEBOOKS["03_ebcq_composition"] = [
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

# ------------------------------------------------------------------------------------------------
NOTEBOOKS["04_synthetic_editing"] = [
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

# ------------------------------------------------------------------------------------------------
NOTEBOOKS["05_real_image_editing"] = [
    md(r'''
# 05 · Real-image editing

A photo is first **inverted** to the noise that regenerates it (DDIM inversion, pix2pix-zero style:
no CFG, the noise prediction regularised towards white noise by an auto-correlation and a KL
penalty), then sampled again with its caption as prompt and negative prompt, composed with
editorial prompts:

$$z_{t+1} = \sqrt{\bar a_{t+1}}\,\hat x_0(z_t) + \sqrt{1-\bar a_{t+1}}\;\epsilon_\theta(z_t, t, c),\qquad
O = \frac{O_\text{caption} + \alpha_+ O_\text{dog} - \alpha_- O_\text{cat}}{1 + \alpha_+ - \alpha_-}.$$

Published example: cat $\to$ dog with "dog" (+, 0.75), "cat" (−, 0.65), start 0.5.
Offline, the "photo" is a shapes-world scene (or matplotlib's sample photo on real weights).
'''),
    code(SETUP),
    code('''
from ebca_viz.tasks import real_edit, sample_image

if REAL:
    photo, where = sample_image()
    SOURCE = None   # the BLIP captioner writes it (needs its weights), or type one
    EDITS = [ev.Edit(prompt="dog", alpha=0.75, direction=+1, start=0.5, gamma_attn=6e-4, gamma_norm=6e-4),
             ev.Edit(prompt="cat", alpha=0.65, direction=-1, start=0.5, gamma_attn=5e-4, gamma_norm=5e-4)]
else:
    from PIL import Image
    from ebca_viz.shapes import world
    scene = world.make_scene(__import__("numpy").random.default_rng(3), pairs=[("red", "circle")])
    photo, where = Image.fromarray(scene.image), "shapes-world scene"
    SOURCE = scene.caption
    EDITS = [ev.Edit(prompt="a blue circle", alpha=0.75, direction=+1, start=0.5),
             ev.Edit(prompt="a red circle", alpha=0.65, direction=-1, start=0.5)]
print(where, "| caption:", SOURCE)
res = real_edit(pipe, photo, EDITS, source_prompt=SOURCE, num_inference_steps=STEPS,
                num_reg_steps=viz.pick(5, 1), num_autocorr_rolls=viz.pick(5, 1))
print("source prompt:", res.info["source_prompt"], "| inversion", res.info["seconds_inversion"], "s")
viz.compare_images({"photo": res.extras["source"], "edited": res.image}, diff=True)
'''),
    md(r'''
## The inverted noise

If the inversion works, $z_T$ looks like white noise (no image structure left): its channels and
their histogram against $\mathcal N(0,1)$.
'''),
    code('''
import numpy as np
z = res.extras["inverted_latents"][0].float().cpu()
fig = viz.new_figure(figsize=(10, 2.4))
axes = fig.subplots(1, z.shape[0] + 1)
for c in range(z.shape[0]):
    axes[c].imshow(z[c], cmap="RdBu_r"); axes[c].set_title(f"z_T channel {c}", fontsize=8); axes[c].axis("off")
x = np.linspace(-4, 4, 100)
axes[-1].hist(z.flatten().numpy(), bins=40, density=True, alpha=0.6)
axes[-1].plot(x, np.exp(-x**2 / 2) / np.sqrt(2 * np.pi), "k-", lw=1)
axes[-1].set_title(f"mean {float(z.mean()):.2f}, std {float(z.std()):.2f}", fontsize=8)
fig.tight_layout(); fig
'''),
    md(r'''## Editing from the same inverted noise, with and without the negative edit'''),
    code('''
only_pos = real_edit(pipe, photo, EDITS[:1], source_prompt=res.info["source_prompt"], num_inference_steps=STEPS,
                     num_reg_steps=viz.pick(5, 1), num_autocorr_rolls=viz.pick(5, 1))
viz.compare_images({"photo": res.extras["source"], "+ only": only_pos.image, "+ and -": res.image})
'''),
]

# ------------------------------------------------------------------------------------------------
NOTEBOOKS["06_inpainting"] = [
    md(r'''
# 06 · Text-guided inpainting

Only the masked region should listen to the prompt, so only its queries feed the context update:

$$\Delta K = \gamma_\text{attn}\, \operatorname{softmax}_i(S)^\top (m \odot Q) - \gamma_\text{norm}\, \operatorname{softmax}_j(|k_j|^2)\, k_j ,$$

with $m$ the mask resized to each layer's grid (bilinear, `align_corners=True`); the attention output
itself is untouched. With an inpainting model (9-channel UNet) the pipeline keeps the rest; on a
plain model the **RePaint** variant re-noises the known region from the source at every step
(the published RePaint path fed the inverted mask to the update; here the right one is used,
`update_region="known"` reproduces theirs).
'''),
    code(SETUP),
    code('''
import numpy as np
from PIL import Image
from ebca_viz.tasks import inpaint, sample_image

if REAL:
    inpaint_pipe, _ = viz.load_model("sd15-inpainting")
    photo, _ = sample_image()
    PROMPT = "teddy bear"
elif MODEL == "tiny":
    inpaint_pipe, _ = viz.load_model("tiny-inpainting")   # a random 9-channel inpainting UNet
    photo = Image.fromarray((np.random.default_rng(0).random((16, 16, 3)) * 255).astype("uint8"))
    PROMPT = "a red circle"
else:  # shapes-world: RePaint on the text-to-image model
    inpaint_pipe = pipe
    from ebca_viz.shapes import world
    photo = Image.fromarray(world.make_scene(np.random.default_rng(5), pairs=[("green", "square")]).image)
    PROMPT = "a red circle"
W_, H_ = photo.size
mask = np.zeros((H_, W_), np.uint8); mask[H_ // 4: 3 * H_ // 4, W_ // 4: 3 * W_ // 4] = 255
mask = Image.fromarray(mask)
runs = {}
for name, g in {"no update (gamma 0)": 0.0, "masked EBCU (gamma 0.025)": 0.025}.items():
    with ev.trace(inpaint_pipe) as tr:
        res = inpaint(inpaint_pipe, photo, mask, PROMPT, gamma_attn=g, gamma_norm=g, seed=0, num_inference_steps=STEPS)
    runs[name] = (res, tr)
first = next(iter(runs.values()))[0]
viz.compare_images({"source": first.extras["source"], "mask": first.extras["mask"],
                    **{k: r.image for k, (r, _) in runs.items()}})
'''),
    md(r'''## The mask as each layer sees it'''),
    code('''
import torch.nn.functional as F
m = first.extras["latent_mask"].float()
grids = sorted({tuple(g) for g in runs["masked EBCU (gamma 0.025)"][1].grids.values()}, reverse=True)
layer_masks = [F.interpolate(m, size=g, mode="bilinear", align_corners=True)[0] for g in grids]
viz.plot_attention_maps(layer_masks, tokens=["mask"], row_labels=[f"{g[0]}x{g[1]}" for g in grids], cmap="gray", normalize="none")
'''),
    md(r'''## Attention of the prompt's words, with the masked update'''),
    code('''
res, tr = runs["masked EBCU (gamma 0.025)"]
viz.plot_trace_maps(tr, by="mean", image=res.image)
'''),
    code('''viz.plot_trace_energies(tr, reference=runs["no update (gamma 0)"][1])'''),
]

# ------------------------------------------------------------------------------------------------
NOTEBOOKS["07_seg"] = [
    md(r'''
# 07 · Smoothed energy guidance (SEG)

SEG (Hong, NeurIPS 2024) guides sampling with a **blurred** self-attention energy
$E = -\sum_i \operatorname{lse}_j(q_i^\top k_j)$. Blurring the attention logits with a Gaussian $G_\sigma$ over the
spatial grid equals blurring the queries first,

$$(G_\sigma Q)\,K^\top = G_\sigma\,(QK^\top),$$

so no $HW\times HW$ matrix is needed; $\sigma\to\infty$ replaces every query by the spatial mean.
The prediction with the blurred attention is a worse, smoother model; guidance moves away from it
(published form, with CFG):

$$\hat\epsilon = \epsilon_u + w(\epsilon_c - \epsilon_u) + s\,(\epsilon_c - \epsilon_\text{blur}).$$
'''),
    code(SETUP),
    md(r'''## The identity, numerically (`ebca_viz.seg.blur_queries`)'''),
    code('''
from ebca_viz.seg import blur_queries, gaussian_blur_2d, kernel_size_for

h = w = 8; d = 4
q = torch.randn(1, 1, h * w, d, dtype=torch.float64); k = torch.randn(1, 1, h * w, d, dtype=torch.float64)
sigma = 1.5
lhs = blur_queries(q, (h, w), sigma, infinite=False) @ k.transpose(-1, -2)          # (G Q) K^T
logits = (q @ k.transpose(-1, -2))[0, 0].T.reshape(h * w, h, w)                        # one map per key
rhs = gaussian_blur_2d(logits, kernel_size_for(sigma), sigma).reshape(h * w, h * w).T    # G (Q K^T)
print("max |(G Q) K^T - G (Q K^T)| =", float((lhs[0, 0] - rhs).abs().max()))
'''),
    md(r'''
## Energy vs $\sigma$

For each $\sigma$ sample with SEG and read the self-attention energy of the blurred branch from the
trace (mean over steps and SEG layers); dashed: the unblurred branch. Blurring flattens the
attention (neighbouring queries become alike; at $\sigma=\infty$ all of them are the mean), which moves
the energy away from the unblurred one: that gap is what the guidance term pushes against.
'''),
    code('''
import math
from ebca_viz.tasks import seg_sample

PROMPT = "a photo of a cat" if REAL else "a red circle and a blue square"
sigmas = viz.pick([0.5, 1.0, 2.0, 5.0, 10.0, math.inf], [0.5, 2.0, math.inf])
blurred, reference, images = [], [], []
for s in sigmas:
    with ev.trace(pipe) as tr:
        res = seg_sample(pipe, PROMPT, sigma=s, seg_scale=3.0, seed=0, num_inference_steps=STEPS)
    blurred.append(float(tr.seg_energies("blurred").mean()))
    reference.append(float(tr.seg_energies("reference").mean()))
    images.append(res.image)
viz.plot_seg_energy(sigmas, blurred, reference=sum(reference) / len(reference), images=images)
'''),
    md(r'''## SEG on and off from the same seed (SEG scale $s$)'''),
    code('''
scales = viz.pick([0.0, 1.0, 3.0, 5.0], [0.0, 3.0])
outs = [seg_sample(pipe, PROMPT, sigma=math.inf, seg_scale=s, seed=0, num_inference_steps=STEPS).image for s in scales]
viz.image_grid(outs, ncols=len(outs), titles=[f"s = {s:g}" for s in scales], title="SEG, sigma = inf")
'''),
    code('''
with ev.trace(pipe) as tr:
    seg_sample(pipe, PROMPT, sigma=2.0, seg_scale=3.0, seed=0, num_inference_steps=STEPS)
viz.plot_trace_seg(tr)
'''),
]

# ------------------------------------------------------------------------------------------------
NOTEBOOKS["08_measuring_misalignment"] = [
    md(r'''
# 08 · Measuring misalignment

Does EBCU make "a red circle and a blue square" show **both** objects more often? Two harnesses:

1. **shapes world** (`ebca_viz.shapes.benchmark`): prompts with two coloured shapes, a deterministic
   detector (`ebca_viz.shapes.detect`) judges every sample; the rate of "both present" with a
   binomial standard error $\sqrt{p(1-p)/n}$, and the paired difference to vanilla on the same
   initial latents.
2. **Attend-and-Excite prompt sets** (`ebca_viz.eval`): the paper's CLIP metrics (full-prompt
   similarity, minimum object similarity) over prompt sets x seeds x settings, one JSON per job.

In fast mode (and on the random `tiny` model) the numbers are a smoke test, not a result.
'''),
    code(SETUP),
    code('''
import numpy as np
from ebca_viz.shapes import benchmark, world
from ebca_viz.shapes.detect import detect

pairs = world.two_object_prompts("report")[: viz.pick(12, 2)]
items, prompts, seeds = benchmark.prompt_set(pairs, n_min=viz.pick(48, 4), seed_base=1000)
methods = {"vanilla": None,
           "EBCU": benchmark.make_config(0.03, 0.03),
           "EBCU + up-weight": benchmark.make_config(0.03, 0.03, upweight=2.5)}
images, scores = {}, {}
for name, cfg in methods.items():
    images[name] = benchmark.sample(pipe, prompts, seeds, steps=STEPS, guidance=5.0, config=cfg)
    scores[name] = benchmark.score_images(items, images[name], two=True)
summary = {n: benchmark.summarize(s, None if n == "vanilla" else scores["vanilla"]) for n, s in scores.items()}
print(f"{len(prompts)} samples per method")
for n, s in summary.items():
    line = ", ".join(f"{k} {v['p']:.2f}±{v['se']:.2f}" for k, v in s.items() if k in benchmark.PAIR_CATEGORIES)
    diff = s["both_present"].get("vs_vanilla")
    print(f"{n:18s} {line}" + (f" | both_present vs vanilla {diff['diff']:+.2f}±{diff['se']:.2f}" if diff else ""))
'''),
    code('''
k = min(8, len(prompts))
viz.image_grid([im for n in methods for im in images[n][:k]], ncols=k,
               titles=[f"{n[:10]}: {p[:22]}" for n in methods for p in prompts[:k]], size=1.5)
'''),
    md(r'''What the detector sees in one sample (colour masks → components → shape by fill ratio):'''),
    code('''
found = detect(images["EBCU"][0])
print(prompts[0], "->", found)
'''),
    md(r'''
## The Attend-and-Excite harness

`make_jobs(prompts, seeds, settings)` $\to$ `run_sweep` (resumable: a job with a JSON is skipped)
$\to$ `aggregate` (mean $\pm$ standard error per setting). Offline a random tiny CLIP stands in for
`openai/clip-vit-base-patch32` (set `SCORER = ev.eval.load_clip_scorer()` with its weights).
'''),
    code('''
import tempfile
from ebca_viz import eval as ev_eval

SCORER = ev_eval.tiny_clip_scorer()
ae_prompts = ev_eval.resolve_prompts("animals", limit=viz.pick(4, 1))
jobs = ev_eval.make_jobs(ae_prompts, seeds=[0] if viz.fast_mode() else [0, 1], settings=["vanilla", "ebcu:gamma_attn=0.01,gamma_norm=0.02"])
out = tempfile.mkdtemp(prefix="ae_sweep_")
print(ev_eval.run_sweep(pipe, jobs, out, steps=STEPS, clip_scorer=SCORER, model=MODEL))
print(ev_eval.format_table(ev_eval.aggregate(out)))
'''),
]

# ------------------------------------------------------------------------------------------------
NOTEBOOKS["09_playground"] = [
    md(r'''
# 09 · Playground

Vanilla and energy-based sampling from the same seed, side by side. Controls: prompt, seed, steps,
CFG; **EBCA**: $\gamma_\text{attn}$, $\gamma_\text{norm}$, token up-weights (`index:weight`, 0 = start-of-text),
up to two editorial prompts with $\alpha$, direction and start; **SEG**: $\sigma$ (or $\infty$) and scale.
The button runs `ebca_viz.widgets.sample_comparison` on the GPU when there is one; the vanilla
image is cached per (model, prompt, seed, steps). Errors appear in the panel.
'''),
    code('''
MODEL = "shapes-world"  # or "sd15"

from ebca_viz import viz
from ebca_viz.widgets import EnergyPanel, PanelSettings

pipe, MODEL = viz.load_model(MODEL)
panel = EnergyPanel(pipe=pipe, model=MODEL, settings=PanelSettings(steps=viz.pick(25, 3)))
panel.show();
'''),
    md('''The same function without widgets:'''),
    code('''
from ebca_viz.widgets import sample_comparison

res = sample_comparison(pipe, PanelSettings(steps=viz.pick(25, 3)), model=MODEL, cache=panel.cache)
res.images_figure()
'''),
]


def build(name: str, cells: list) -> nbformat.NotebookNode:
    nb = new_notebook(cells=cells)
    nb.metadata["kernelspec"] = {"display_name": "Python 3 (ipykernel)", "language": "python", "name": "python3"}
    nb.metadata["language_info"] = {"name": "python"}
    for i, c in enumerate(nb.cells):
        c["id"] = f"{name[:2]}-{i:02d}"
    return nb


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--check", action="store_true", help="fail if a committed notebook is not what this script writes")
    p.add_argument("--out", default=str(HERE))
    args = p.parse_args(argv)
    bad = []
    for name, cells in NOTEBOOKS.items():
        path = Path(args.out) / f"{name}.ipynb"
        text = nbformat.writes(build(name, cells)) + "\n"
        if args.check:
            if not path.exists() or path.read_text() != text:
                bad.append(path.name)
        else:
            path.write_text(text)
    if bad:
        print("out of date (run python notebooks/build_notebooks.py):", ", ".join(bad))
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
