"""Notebook 07_seg."""
from common import SETUP, code, md  # noqa: F401

CELLS = [
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
