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
# # 01 · Attention as energy descent
#
# One cross-attention layer, one head: $Q\in\mathbb R^{P\times d}$, $K\in\mathbb R^{N\times d}$, $S = \beta QK^\top$.
# Three energies ([docs/method.md](../docs/method.md), $\alpha = 0$ as in the paper):
#
# * query energy $\;E(Q;K) = -\sum_i \operatorname{lse}_j S_{ij}$
# * context energy $\;E(K;Q) = -\sum_j \operatorname{lse}_i S_{ij}$ (lse over **pixels**)
# * prior $\;E(K) = \operatorname{lse}_j \tfrac12 |k_j|^2$ (heads concatenated)
#
# Their gradients have closed forms, and those closed forms are what the processors compute:
#
# $$-\frac{\partial E(Q;K)}{\partial q_i} = \beta \sum_j \operatorname{softmax}_j(S_{ij})\, k_j
# \quad(\text{attention, with } V = K)$$
#
# $$-\frac{\partial E(K;Q)}{\partial k_j} = \beta \sum_i \operatorname{softmax}_i(S_{ij})\, q_i = \beta\, A_j,
# \qquad \frac{\partial E(K)}{\partial k_j} = \operatorname{softmax}_j(\tfrac12|k_j|^2)\, k_j = R_j .$$
#
# (`ebca_viz.energy` averages the context and query energies over the $H$ heads, hence a factor $H$ below.)
# We take a real layer from a real sampling run and check each identity against `torch.autograd`.

# %%
MODEL = "shapes-world"  # or "sd15", "sdxl", a hub id or a folder with your weights (GPU recommended)
import torch
import ebca_viz as ev
from ebca_viz import claims, plots
from ebca_viz.util import pick
from ebca_viz.notebook import finish, setup
from IPython.display import display

pipe, MODEL, KIND, REAL, R, STEPS, CFG = setup(MODEL)  # EBCA_VIZ_MODEL wins when set; prints the model and its regime

# %%
import numpy as np
from ebca_viz import energy as E

PROMPT = "A lion with a crown" if REAL else "a red circle and a blue square"
from ebca_viz.notebook import capture_attention
cap = capture_attention(pipe, PROMPT, step=1, layer=len(pipe.unet.down_blocks), num_inference_steps=STEPS)
q, k = cap["q"].double(), cap["k"].double()   # (1, H, P, d), (1, H, N, d)
beta, H = cap["scale"], cap["heads"]
print(cap["name"], "grid", cap["grid"], "q", tuple(q.shape), "k", tuple(k.shape), "beta", round(beta, 4))

# %% [markdown]
# ## 1 · The context energy: autograd vs `ebca_viz.energy.attention_term`
#
# $A = \operatorname{softmax}_i(S)^\top Q$ (heads concatenated) should equal $-\tfrac{H}{\beta}\,\partial E(K;Q)/\partial K$.
# **What to notice:** every one of the $N \times Hd$ entries lies on the diagonal: closed form and
# autograd agree to float64 precision (the title prints the largest difference).

# %%
TOL = 1e-10   # float64: the identities hold up to rounding (~1e-15); a wrong factor would be >= 1e-3
k_ = k.clone().requires_grad_(True)
E.context_energy(q, k_, beta).sum().backward()
A = E.attention_term(E.attention_scores(q, k, beta), q)             # closed form, (1, N, H d)
autograd_A = -(H / beta) * E.merge_heads(k_.grad)
err_A = float((A - autograd_A).abs().max())
print(f"max |A - autograd| = {err_A:.1e}  (max |A| = {float(A.abs().max()):.2f}): equal to float precision")
claims.check(err_A < TOL, "the attention term A equals -(H/beta) dE(K;Q)/dK (autograd)", err_A)
display(plots.readable(plots.plot_gradient_check(autograd_A, A, title="attention term A vs -(H/beta) dE(K;Q)/dK")))

# %% [markdown]
# ## 2 · The prior: $R = \partial E(K)/\partial K$ (`norm_term`, paper form; the published code uses $|k|^2$ without the $\tfrac12$)

# %%
kc = E.merge_heads(k).clone().requires_grad_(True)
E.prior_energy(kc).sum().backward()
R_ = E.norm_term(E.merge_heads(k), prior_form="paper")
err_R = float((R_ - kc.grad).abs().max())
print(f"max |R - autograd| = {err_R:.1e}: equal to float precision")
claims.check(err_R < TOL, "the norm term R (paper form) equals dE(K)/dK (autograd)", err_R)

# %% [markdown]
# ## 3 · Attention itself is a gradient step on the query energy

# %%
q_ = q.clone().requires_grad_(True)
E.query_energy(q_, k, beta).sum().backward()
attention = beta * torch.softmax(E.attention_scores(q, k, beta), dim=-1) @ k   # softmax(S) K, per head
err_Q = float((attention + H * q_.grad).abs().max())
print(f"max |attention + H dE(Q;K)/dq| = {err_Q:.1e}: equal to float precision")
claims.check(err_Q < TOL, "beta softmax(S) K equals -H dE(Q;K)/dQ (autograd)", err_Q)

# %% [markdown]
# ## 4 · The context update is gradient descent, in context space
#
# With $\gamma_\text{attn} = \eta\,\beta/H$ and $\gamma_\text{norm} = \eta$ (paper prior) the EBCU update
# $\Delta K = \gamma_\text{attn} A - \gamma_\text{norm} R$ is $-\eta\, \partial(E(K;Q)+E(K))/\partial K$, and
# $\Delta C = \Delta K\, W_k$ is the chain rule through $K = C W_k^\top$: $\Delta C = -\eta\,\partial E/\partial C$.
# `ebca_viz.energy.context_update` against autograd in context space, then 30 such steps.
# **What to notice:** the energy goes down at every one of the 30 steps.

# %%
C, Wk = cap["context"].double(), cap["w_k"].double()
eta = 0.01
C_ = C.clone().requires_grad_(True)
E.posterior_energy(q, E.split_heads(C_ @ Wk.T, H), beta).sum().backward()
kd = E.split_heads(C @ Wk.T, H)   # the keys recomputed in float64 (the model's own are float32 roundings of these)
dC = E.context_update(E.attention_scores(q, kd, beta), q, kd, Wk, eta * beta / H, eta, prior_form="paper")
err_C = float((dC + eta * C_.grad).abs().max())
print(f"max |dC + eta dE/dC| = {err_C:.1e}: equal to float precision  (|dC| max {float(dC.abs().max()):.2e})")
claims.check(err_C < TOL, "context_update with gamma_attn = eta beta/H, gamma_norm = eta is -eta dE/dC", err_C)

energies, c = [], C.clone()
for _ in range(31):
    kk = E.split_heads(c @ Wk.T, H)
    energies.append(float(E.posterior_energy(q, kk, beta)))
    c = c + E.context_update(E.attention_scores(q, kk, beta), q, kk, Wk, eta * beta / H, eta, prior_form="paper")
desc = claims.rate(np.diff(energies) < 0)
print(f"E(K;Q)+E(K) went down in {desc} of the 30 gradient steps ({energies[0]:.2f} -> {energies[-1]:.2f})")
claims.check(desc.k == desc.n, "every small gradient step (eta = 0.01) lowers the posterior energy", desc)
display(plots.readable(plots.plot_descent(energies, xlabel="EBCU step on one layer", ylabel="E(K;Q) + E(K)",
                                     title="posterior energy along repeated updates")))

# %% [markdown]
# ## 5 · Across the layers of a real run: three energies, not one
#
# In the UNet one update happens per layer, with the gammas the model really uses
# (shapes world: the tuned $\gamma_\text{attn} = \gamma_\text{norm} = 0.3$ of the regime `R`; published
# prior $\operatorname{softmax}_j(|k_j|^2)$), and the next layer sees the updated context through its
# **own** queries and $W_k$. `ebca_viz.energy_steps.record_updates` samples a batch of seeds and, for
# every update (step x layer x image, conditional half), evaluates $E(K;Q)$, $E(K)$ and their sum for
# the context entering the layer, the context leaving it, and the prompt's own context seen by the
# same layer.
#
# Watch the three terms separately. **What to notice:** in every layer the blue bars ($E(K;Q)$) go down
# and the orange ones ($E(K)$) mostly up; the black sum goes down in some layers and up in others.

# %%
from ebca_viz.energy_steps import record_updates

N_SEEDS = pick(10 if not REAL else 4, 8 if not REAL else 1)   # 10 seeds: 1750 updates, ~20 s on 2 CPU cores
ONSHAPES = KIND == "shapes-world"   # the numbers below were measured there; other models print them unchecked
images, rec = record_updates(pipe, PROMPT, ev.EBCAConfig(gamma_attn=R.gamma_attn, gamma_norm=R.gamma_norm),
                             seeds=range(N_SEEDS), steps=STEPS, guidance_scale=CFG)
r_ctx, r_pri, r_post = rec.rate("context"), rec.rate("prior", rose=True), rec.rate("posterior")
print(f"{N_SEEDS} seeds x {STEPS} steps x {len(rec.layers)} layers, gamma {R.gamma_attn}/{R.gamma_norm}, CFG {CFG}")
print(f"E(K;Q) fell in {r_ctx} of the updates")
print(f"E(K)   rose in {r_pri}")
print(f"E(K;Q)+E(K) fell in {r_post}")
display(plots.readable(plots.plot_energy_terms(rec.before, rec.after, reference=rec.prompt, layer_names=rec.layers, ncols=2,
                                         title=f"gamma {R.gamma_attn}/{R.gamma_norm}, CFG {CFG}, {N_SEEDS} seeds")))

# %% [markdown]
# **Why the prior can rise while the posterior falls.** The step
# $\Delta K = \gamma_\text{attn} A - \gamma_\text{norm} R$ points downhill for the sum: to first order
# (the tangent, $\langle \partial E/\partial C, \Delta C\rangle$) it lowers $E(K;Q)$ and, mostly, even $E(K)$.
# But $E(K) = \operatorname{lse}_j \tfrac12|k_j|^2$ grows with the *square* of the key change
# ($+\tfrac12 s^2 |\Delta k_j|^2$ for a step $s$), and at $\gamma = 0.3$ the step is long: that
# curvature term turns the first-order fall of $E(K)$ into a rise, while $E(K;Q)$ keeps falling.
# The sum falls only where the fall of $E(K;Q)$ is the larger one. The run's numbers:

# %%
fo = rec.first_order
fo_post = claims.rate(fo["posterior"][rec.updated] < 0)
fo_pri = claims.rate(fo["prior"][rec.updated] < 0)
print(f"first order: the update is a descent direction of E(K;Q)+E(K) in {fo_post}")
print(f"first order: it would lower E(K) in {fo_pri}; in fact E(K) rose in {r_pri}")
print(f"=> E(K) rose in {r_pri.k} of {r_pri.n} updates while E(K;Q)+E(K) fell in {r_post.k} of {r_post.n}")
casc = claims.mean(np.nanmean(rec.before["posterior"] - rec.prompt["posterior"], 1).ravel())
print(f"cascade: the context entering a layer has, for that layer, a posterior energy {casc} above the prompt's own "
      "(mean over layers, per step and image; each layer has its own W_k)")
if ONSHAPES:
    claims.check(r_ctx.lo > 0.95, "E(K;Q) falls in (nearly) every update", r_ctx)
    claims.check(r_pri.lo > 0.5, "E(K) rises in most updates", r_pri)
    claims.check(0.5 < r_post.lo and r_post.hi < 0.9, "the posterior falls in most, but clearly not all, updates", r_post)
    claims.check(fo_post.k == fo_post.n, "every update is a first-order descent direction of the posterior", fo_post)
    claims.check(fo_pri.lo > 0.8 and r_pri.lo > 1 - fo_pri.hi, "the rise of E(K) is a second-order (step-size) effect", fo_pri, r_pri)
    claims.check(casc.lo > 0, "the cascade leaves later layers a context of higher posterior energy than the prompt's", casc)

# %% [markdown]
# ## 6 · Which updates lowered the posterior energy?
#
# Per step and layer: the share of images whose update lowered $E(K;Q)+E(K)$ (green) or raised it
# (red), the rate per layer with its Wilson 95 % interval, and per step. (The interval treats the
# updates as independent; updates of one image and step are correlated, so read it as a lower bound
# on the uncertainty.) **What to notice:** the map is striped by layer, not by step: whether an update
# overshoots depends mostly on which layer makes it.

# %%
rates = rec.layer_rates()
for i, (name, r) in enumerate(zip(rec.layers, rates)):
    print(f"layer {i} {plots.short_layer(name):8s} lowered the posterior in {r}")
display(plots.readable(plots.plot_descent_map(rec.change(), layer_names=rec.layers, steps=rec.steps, ncols=2)))
if ONSHAPES:
    claims.check(any(r.lo > 0.95 for r in rates), "some layers lower the posterior in (nearly) every update", *rates)
    claims.check(any(r.hi < 0.5 for r in rates), "some layers raise it in most updates", *rates)

# %% [markdown]
# ## 7 · Step size: one update, many gammas
#
# Hold a layer's inputs fixed (its queries, the context it received, its $W_k$) and rescale its
# update: $E(C_\text{in} + \tfrac{\gamma}{0.3}\,\Delta C) - E(C_\text{in})$, both gammas scaled together.
# At small $\gamma$ the change follows the first-order prediction
# $\gamma\,\langle \partial E/\partial C, \Delta C\rangle/0.3$ (for a plain gradient step that is
# $-\gamma |\nabla E|^2$); as $\gamma$ grows the quadratic term catches up, the energy change bends back
# through zero and the update **overshoots**. Each update has its own break-even $\gamma$: the tuned
# 0.3 (chosen for the images, not for the energy) lies beyond it for about a third of them.
# **What to notice:** in the bottom panel, the share of updates that went downhill is 100 % for small
# $\gamma$ and falls as $\gamma$ grows; the tuned 0.3 (dotted line) sits on the falling part.

# %%
G = rec.gamma_attn() * rec.scales                      # the swept gamma_attn
sw = rec.sweep_rates()
i_small, i_run, i_big = rec.scale_index(1 / 30), rec.scale_index(1.0), rec.scale_index(10.0)
ratio = np.nanmedian(rec.first_order_ratio()[..., 0])
for g, r in zip(G, sw):
    print(f"gamma {g:6.3f}: the update lowers E(K;Q)+E(K) in {r}")
print(f"at gamma {G[0]:.3f} the actual change is {ratio:.4f} x the first-order prediction (median)")
display(plots.readable(plots.plot_step_size(G, rec.sweep["posterior"], rec.first_order["posterior"], rec.gamma_attn(),
                          layer_names=rec.layers, marks={f"tuned (R, notebooks 02-09): {R.gamma_attn}": R.gamma_attn,
                                                         f"small: {G[i_small]:.2g}": G[i_small]}, ncols=2)))
claims.check(sw[i_run] == r_post, "the sweep at the run's gamma reproduces the run", sw[i_run], r_post)
if ONSHAPES:
    claims.check(abs(ratio - 1) < 0.02, "at the smallest gamma the first-order prediction holds (within 2 %)", ratio)
    claims.check(sw[i_small].k == sw[i_small].n, f"at gamma {G[i_small]:.2g} every update lowers the posterior", sw[i_small])
    claims.check(sw[i_run].hi < sw[i_small].lo, "the tuned gamma lowers it in fewer updates than a small one", sw[i_run], sw[i_small])
    claims.check(sw[i_big].hi < sw[i_run].lo, f"a longer step ({G[i_big]:.2g}) overshoots more often still", sw[i_big], sw[i_run])

# %% [markdown]
# So the descent of section 4's small steps and the partial descent of the tuned run are the same
# mechanism at two step sizes: the tuned $\gamma$ trades a guaranteed decrease of the posterior energy
# for a context that moves far enough to change the image (notebook 02 measures that).

# %% [markdown]
# ## Checks and timings
#
# Every result sentence above was guarded by a check that would have stopped the notebook had it failed; here they are in one table, with the time this run took.

# %%
finish();
