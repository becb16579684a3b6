"""Notebook 01_energy_descent."""
from common import SETUP, code, md  # noqa: F401

CELLS = [
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
