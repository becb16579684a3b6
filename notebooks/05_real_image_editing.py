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
# # 05 · Real-image editing
#
# A photo is first **inverted** to the noise that regenerates it (DDIM inversion, pix2pix-zero style:
# no CFG, the noise prediction regularised towards white noise by an auto-correlation and a KL
# penalty), then sampled again with its caption as prompt and negative prompt, composed with
# editorial prompts:
#
# $$z_{t+1} = \sqrt{\bar a_{t+1}}\,\hat x_0(z_t) + \sqrt{1-\bar a_{t+1}}\;\epsilon_\theta(z_t, t, c),\qquad
# O = \frac{O_\text{caption} + \alpha_+ O_+ - \alpha_- O_-}{1 + \alpha_+ - \alpha_-}.$$
#
# Published example: cat $\to$ dog with "dog" (+, 0.75), "cat" (−, 0.65), start 0.5 (on real weights
# below). Offline the "photos" are shapes-world scenes with known ground truth, each holding a **red
# circle** (half of them alone, half next to a green or yellow object), and the edit is red $\to$ blue:
# "a blue circle" (+, 0.75), "a red circle" (−, 0.65), start 0.5, the paper's weights. Everything is
# measured over many scenes and judged by the shapes detector.
#
# The full measurement (64 scenes: inversion, reconstruction, two edits; minutes on 2 CPU cores) is
# shipped in `docs/shapes_realedit.json` (`benchmarks/shapes_realedit.py`, fingerprinted). The notebook
# loads it and **re-runs the first scenes live**, checking that the live numbers agree with the shipped
# ones (their 95 % intervals overlap; the inversion draws its random rolls per batch, so a smaller batch
# is not the same computation seed for seed).

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
from ebca_viz.tasks import real_edit, sample_image
from ebca_viz.experiments import realedit as RX, shipped

SHAPES = KIND == "shapes-world"
if REAL:  # the paper's example on one photo (cat -> dog), the paper's settings
    photo, where = sample_image()
    EDITS = [ev.Edit(prompt="dog", alpha=0.75, direction=+1, start=0.5, gamma_attn=6e-4, gamma_norm=6e-4),
             ev.Edit(prompt="cat", alpha=0.65, direction=-1, start=0.5, gamma_attn=5e-4, gamma_norm=5e-4)]
    res = real_edit(pipe, photo, EDITS, source_prompt=None, num_inference_steps=STEPS, guidance_scale=CFG)
    print(where, "| source prompt:", res.info["source_prompt"], "| inversion", res.info["seconds_inversion"], "s")
    display(plots.compare_images({"photo": res.extras["source"], "edited": res.image}, diff=True))
if SHAPES:
    SH = RX.load_shipped(pipe, guidance=CFG)  # refuses a file made with other weights or CFG
    rec, alt, both, pos = SH["rec"], SH["nozero"], SH["both"], SH["pos"]
    SH_STEPS = SH["steps"]
    print(f"docs/shapes_realedit.json: {rec.n} scenes (even indices a red circle alone, odd ones with a green / "
          f"yellow object), {SH_STEPS} DDIM steps, digest {SH['file']['digest'][:12]}...")
    # live: the first scenes (half alone, half with another object), the same settings
    K = pick(4, 2)
    scenes = RX.edit_scenes(K, seed=0)  # = the first K shipped scenes
    live = RX.measure_reconstruction(pipe, scenes, RX.PIX2PIX_ZERO, steps=SH_STEPS)
    live_both = RX.measure_edit(pipe, scenes, live.z, RX.PAPER_EDIT, SH_STEPS, CFG)
    live_pos = RX.measure_edit(pipe, scenes, live.z, RX.PAPER_EDIT.positive_only(), SH_STEPS, CFG)
    print(f"live, first {K} scenes ({live.seconds + 0:.0f} s for inversion + reconstruction): "
          f"|recon - input| {live.mae.fmt(3)}; edit success {live_both.rates['success']}")
    shipped.agree(rec.mae, live.mae, "reconstruction error |recon - input|")
    shipped.agree(rec.z_std, live.z_std, "std of the inverted noise z_T")
    shipped.agree(both.rates["success"], live_both.rates["success"], "success rate of the + and - edit")

# %% [markdown]
# ## 1 · Does the inversion give the scene back?
#
# Regenerating from $z_T$ with prompt = negative prompt = caption and **no edit**: both CFG halves
# then see the same context, so $\epsilon_u + w(\epsilon_c - \epsilon_u) = \epsilon_c$ for any CFG
# $w$ and the sampler simply runs the inversion backwards. No reconstruction can be better than the
# VAE's own round trip $D(z_0)$ of the same $z_0$ (the floor); the detector says whether the
# regenerated scene has the input's objects.

# %%
if SHAPES:
    print(f"|reconstruction - input| = {rec.mae.fmt(3)} grey levels of 255, PSNR {rec.psnr.fmt(3)} dB")
    print(f"|VAE round trip - input| = {rec.mae_vae.fmt(3)} (the floor), PSNR {rec.psnr_vae.fmt(3)} dB")
    print(f"excess over the floor (paired, same scenes): {rec.mae_excess.fmt(2)} grey levels")
    print(f"detector: regenerated scene = input's ground truth in {rec.correct}; VAE round trip {rec.correct_vae}")
    claims.check(rec.correct.lo > 0.8, "the regenerated scene has the input's objects in most scenes (CI above 80 %)",
                 rec.correct)
    claims.check(rec.mae.hi < 6.0, "the reconstruction is within a few grey levels of the input", rec.mae)
    claims.check(rec.mae_excess.lo > 0, "the reconstruction is measurably worse than the VAE floor (the inversion "
                 "adds error)", rec.mae_excess)

# %% [markdown]
# ## 2 · The inverted noise is not unit Gaussian
#
# $z_T$ should look like a draw from $\mathcal N(0, I)$. With the published regulariser its std is
# clearly below 1. Why: the auto-correlation penalty rolls the noise by a random shift
# $r \in \{0, \dots, h/2 - 1\}$, and at $r = 0$ its term is $\mathrm{mean}(\epsilon^2)^2$, which
# shrinks the **variance** instead of decorrelating; on an $8\times8$ latent $r = 0$ is drawn a quarter
# of the time and the gradient per element is large ($1/64$ per pixel vs $1/4096$ on SD's $64\times64$),
# so $\lambda = 20$ pulls hard. The KL term pulls back towards 1. Each part alone, and the penalty with
# the zero roll left out (`min_shift=1`), was measured on the first scenes. **What to notice** in the
# histograms: the published inversion's values (left) are narrower than the black $\mathcal N(0,1)$
# curve, and leaving out the zero roll (right) widens them towards it.

# %%
if SHAPES:
    parts = SH["parts"]
    print(f"pix2pix-zero (published): z_T std {rec.z_std.fmt(3)}, mean {rec.z_mean.fmt(2)}, "
          f"lag-1 autocorrelation {rec.z_lag1.fmt(2)}")
    for name, p in parts.items():
        print(f"{name:>22}: z_T std {p['std'].fmt(3)}, mean {p['mean'].fmt(2)}, lag-1 {p['lag1'].fmt(2)}")
    print(f"{alt.setting.name}: z_T std {alt.z_std.fmt(3)}, lag-1 {alt.z_lag1.fmt(2)}; "
          f"reconstruction {alt.mae.fmt(3)}, = ground truth {alt.correct}")
    d_std = claims.paired_diff(abs(alt.per_image["std"] - 1), abs(rec.per_image["std"] - 1))
    d_mae = claims.paired_diff(alt.per_image["mae"], rec.per_image["mae"])
    print(f"no zero roll vs published (paired): |std - 1| changes by {d_std.fmt(2)}, reconstruction error by {d_mae.fmt(2)}")
    claims.check(rec.z_std.hi < 0.9, "with the published regulariser z_T has std clearly below 1", rec.z_std)
    claims.check(parts["auto-corr only"]["std"].hi < rec.z_std.lo,
                 "the auto-correlation penalty alone shrinks z_T further: it is the cause", parts["auto-corr only"]["std"], rec.z_std)
    claims.check(d_std.hi < 0, "leaving out the zero roll brings z_T closer to unit std", d_std)
    claims.check(d_mae.hi < 0.5, "... without a worse reconstruction", d_mae)
    display(RX.plot_latents([rec, alt], hists=[SH["hist"]["rec"], SH["hist"]["nozero"]]))

# %% [markdown]
# So the low std comes from the regulariser, not from the DDIM inversion itself (no regularisation
# and KL alone stay near 1 on these scenes), and it hardly matters for reconstruction: section 1 gave
# the scenes back with the std well below 1. Sampling is deterministic from $z_T$; what matters is
# that the inversion is (approximately) the sampler run backwards. The published setting is kept
# below (it is what the paper edits with); `min_shift=1` is the measured alternative.
#
# ## 3 · The edit: red circle $\to$ blue circle, with and without the negative prompt
#
# From the same $z_T$: "+ and −" is the paper's pair, "+ only" drops "a red circle" (−). In the
# unconditional CFG half every edit is paired with the caption, so CFG amplifies exactly the edit.
# Per scene: the object at the red circle's place must be **blue**, a **circle**, at the same place
# (box IoU $\ge 0.5$ with the input's), no red circle left, and the other object kept.

# %%
if SHAPES:
    from IPython.display import Markdown
    display(Markdown(RX.edit_table([both, pos])))
    s1 = both.single
    print(f"one object, + and -: blue {s1['colour']}, still a circle {s1['shape']}, same place {s1['position']}, "
          f"all of it {s1['success']}; box IoU {both.iou.fmt(2)} (all scenes)")
    d = claims.paired_diff(both.indicator("success", "single"), pos.indicator("success", "single"))
    print(f"'+ and -' minus '+ only' (paired, one-object scenes): {100 * d.value:+.0f} pts "
          f"(95 % CI {100 * d.lo:+.0f} to {100 * d.hi:+.0f} pts, n = {d.n})")
    claims.check(s1["success"].lo > 0.7, "on one-object scenes the + and - edit turns the red circle "
                 "blue, keeps it a circle and keeps it in place", s1["success"])
    claims.check(d.lo > 0, "the negative prompt is needed: + only succeeds less often", d)
    p2 = both.pair
    print(f"two objects, + and -: success {p2['success']}; other object kept {p2['other_kept']}; "
          f"the other object turned blue instead {p2['other_turned_blue']}")
    claims.check(p2["success"].hi < 0.5, "on two-object scenes the edit is NOT local: it fails in most scenes",
                 p2["success"])

# %% [markdown]
# **What to notice** on one-object scenes: the "+ and −" bar for *success* is far above the "+ only"
# bar (the negative prompt is what removes the red).

# %%
if SHAPES:
    display(RX.plot_edit_rates([both, pos], subset="single"))

# %% [markdown]
# **What to notice** on two-object scenes: *success* is low for both edits, and the *other kept* bar
# is low too: the edit does not stay on the red circle.

# %%
if SHAPES:
    display(RX.plot_edit_rates([both, pos], subset="pair"))

# %% [markdown]
# EBCQ composes the editorial outputs **at every pixel** of every cross-attention layer. With one
# object that is the whole picture and the edit works; with two, "a blue circle" is also added where
# the other object is and "a red circle" subtracted where the red circle is, so the colour goes to
# the wrong object (see the "turned blue" rate and the examples). Making it local would need a mask
# on the composition, as the inpainting task has for EBCU.
#
# ## 4 · Per scene: input, reconstruction, edits and their differences
#
# The first live scenes (no selection): left half one object, right half two objects. **What to
# notice:** in the one-object columns the "+ and −" row turns the circle blue in place, while in the
# two-object columns the difference map lights up on the *other* object as well.

# %%
if SHAPES:
    idx = list(range(0, K, 2)) + list(range(1, K, 2))  # one-object, then two-object scenes
    display(RX.plot_examples(live, [live_both, live_pos], idx))

# %% [markdown]
# ## Checks and timings
#
# Every result sentence above was guarded by a check that would have stopped the notebook had it failed; here they are in one table, with the time this run took.

# %%
finish();
