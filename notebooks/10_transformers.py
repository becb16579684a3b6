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
# # 10 · Transformers: the same questions on a DiT
#
# Stable Diffusion 3, Flux and PixArt-Sigma denoise with a **transformer** (a DiT) instead of a UNet.
# Their text reaches the image in different ways: PixArt has a cross-attention layer per block, as SD's
# UNet; SD3 and Flux put text and image tokens in **one** softmax (joint attention), and Flux adds
# single-stream blocks over `[text; image]`. `ebca_viz` asks one **adapter** per family where the
# attention layers are, which text positions hold which tokenizer's tokens and what the image-token grid
# is, so `ev.trace`, `ev.smoothed_energy_guidance` and `ev.energy_attention` run unchanged.
#
# This notebook runs on **neglect-world-dit**: the neglect world's data (notebook 02) learnt by a small
# `PixArtSigmaPipeline` (6 blocks, T5-style text encoder, 8 x 8 image tokens; trained from scratch on two CPU
# cores, `ebca_viz/weights/neglect_world_dit/TRAINING.md`). Four questions: what the adapter sees, whether
# the maps by word point at the objects, whether SEG changes the samples, and what EBCU does to neglect,
# next to the UNet world.

# %%
MODEL = "neglect-world-dit"  # or "pixart-sigma" (GPU), a folder with your PixArt-Sigma weights; "sd15" has no DiT
import math
import torch
import ebca_viz as ev
from ebca_viz import claims
from ebca_viz.util import pick
from ebca_viz.notebook import finish, setup
from IPython.display import display

pipe, MODEL, KIND, REAL, R, STEPS, CFG = setup(MODEL)  # EBCA_VIZ_MODEL wins when set; prints the model and its regime

# %% [markdown]
# ## 1 · What the adapter says about the model
#
# `adapter_for(pipe)` is the one place that knows the architecture; the lines below are printed from it
# (and, for CFG, read inside a one-step call: PixArt's pipeline keeps that decision in a local variable).

# %%
from ebca_viz.adapters import adapter_for
from ebca_viz.experiments import dit as X

WORLD = KIND == "neglect-world-dit"      # the DiT world: the shapes detector can judge its images
ad = adapter_for(pipe)
for line in X.describe(pipe, probe_cfg=CFG):
    print(line)
kinds = [li.kind for li in ad.layers()]
claims.check(ad.family == "pixart" and kinds == ["self", "cross"] * (len(kinds) // 2),
             "every PixArt block has one self- and one cross-attention layer, in that order", ad.family, len(kinds))

# %% [markdown]
# ## 2 · Maps by word: do they point at the objects?
#
# One prompt, "a red circle and a blue square", traced on several seeds in one batch. `tr.maps(token=word)`
# finds the word with the model's own T5 tokenizer (T5 has no start token: "circle" is position 2) and
# returns its cross-attention map on the 8 x 8 token grid, averaged over the steps and the 6 cross-attention
# layers. The detector (`ebca_viz.shapes.detect`) finds the circle and the square; for each word we measure
# the share of its map inside **its** object's box and inside the **other** object's box
# (`X.box_mass`). A map that means its word puts more of its mass on its own object; the paired difference
# (own − other, per seed, mean of the two words) says whether it does, with a 95 % interval. Seeds where the
# detector does not find both objects are left out (their number is printed).

# %%
SEEDS = list(range(pick(16, 6)))
al = X.map_alignment(pipe, seeds=SEEDS, steps=STEPS, guidance=CFG)
m0 = al.maps[SEEDS[0]]
print(f"'{' and '.join(al.words)}' maps: {tuple(m0.shape)} per seed (word, h, w), each summing to "
      f"{float(m0[0].sum()):.3f} over the grid (spatially normalised)")
print(f"both objects found in {al.n}/{len(SEEDS)} seeds: {claims.rate([s in al.usable for s in SEEDS])}")
for w, (own, oth) in al.word_means().items() if al.n else ():
    print(f"'{w}': {own.fmt(2, 100, ' %')} of its map in its own object's box, {oth.fmt(2, 100, ' %')} in the other's"
          + (f"; own - other (paired) {claims.paired_diff(al.own[w], al.other[w]).fmt(3, 100, ' pts')}" if al.n >= 2 else ""))
if al.n >= 2:
    d_map = al.diff()
    map_verdict = ("point at their own object" if d_map.lo > 0 else
                   "point at the other object" if d_map.hi < 0 else "do not measurably prefer their own object")
    print(f"=> own - other (paired): {d_map.fmt(3, 100, ' pts')}: the maps by word {map_verdict}")
    claims.check((map_verdict == "point at their own object") == (d_map.lo > 0) and
                 (map_verdict == "point at the other object") == (d_map.hi < 0),
                 f"the maps by word {map_verdict} (the verdict is the interval's)", d_map)
claims.check(abs(float(m0.sum((-1, -2)).mean()) - 1) < 1e-4, "each word's map sums to 1 over the grid", float(m0[0].sum()))

# %% [markdown]
# The first two seeds where the detector found both objects (a rule you can check: the figure names the
# seeds; the fraction they represent is printed above). Boxes: cyan the circle, green the square; the titles
# give the share of each map inside its word's box. What to notice is printed from the numbers, just above the
# figure: how alike the two words' maps are (their correlation over the grid cells, mean over all seeds).

# %%
show = al.usable[:2] or SEEDS[:2]
sim = al.similarity()
print(f"correlation of the 'circle' and 'square' maps: {sim.fmt(2)}")
SAME = sim.lo > 0.8  # the rule, fixed before looking: "nearly the same picture" = correlation > 0.8 (95 % CI)
if SAME:
    print("What to notice: in each row the two maps are nearly the same picture, bright and dark in the same cells: "
          "on this model the two words look at the same places, so their maps cannot tell the circle from the square.")
else:
    print("What to notice: in each row the two maps differ; compare each map's bright cells with its own word's box.")
claims.check(SAME == (sim.lo > 0.8), "the two words' maps are " + ("" if SAME else "not ") + "nearly the same "
             "picture (correlation > 0.8, lower end of the 95 % CI)", sim)
display(X.plot_word_maps(al, show, title=f"{KIND}: 'a red circle and a blue square', {STEPS} steps, CFG {CFG:g}"))

# %% [markdown]
# ## 3 · SEG on a DiT
#
# Smoothed energy guidance blurs the **image-token queries** of the chosen blocks on the 2-D patch grid
# (`ebca_viz/seg_dit.py`; text queries, keys and values untouched) and guides away from that blurred
# prediction: $\hat\epsilon = \epsilon_u + w(\epsilon_c-\epsilon_u) + s(\epsilon_c-\epsilon_\text{blur})$. The
# setting is diffusers' default for DiTs, not tuned here: the middle block, $\sigma = \infty$ (every query
# replaced by the grid mean), $s = 3$. Same initial latents with and without SEG; per seed the mean absolute
# pixel change (grey levels 0-255).

# %%
SEG = ev.SEGConfig(scale=R.seg_scale, sigma=math.inf, layers=("mid",))
PROMPT = "a red circle and a blue square"
SEG_SEEDS = list(range(pick(12, 4)))
van, seg, change = X.seg_change(pipe, PROMPT, SEG_SEEDS, SEG, steps=STEPS, guidance=CFG)
chg = claims.mean(change)
print(f"SEG s = {SEG.scale:g}, sigma inf, middle block ({ad.model.config.num_layers // 2} of "
      f"{ad.model.config.num_layers}), CFG {CFG:g}, {STEPS} steps")
print(f"mean |pixel change| vs SEG off: {chg.fmt(3, 1, ' grey levels')}; changed (> 1 grey level): "
      f"{claims.rate(change > 1)}")
claims.check(chg.lo > 0, "SEG changes the DiT's samples (mean |change| > 0, 95 % CI)", chg)
if WORLD:  # the detector on the same images: does SEG change how often both requested objects are drawn?
    from ebca_viz.shapes.benchmark import score_images

    items = [(("red", "circle"), ("blue", "square"))] * len(SEG_SEEDS)
    bp_v, bp_s = (score_images(items, im, True)["both_present"] for im in (van, seg))
    d_seg = claims.paired_diff(bp_s, bp_v)
    seg_verdict = "raises" if d_seg.lo > 0 else "lowers" if d_seg.hi < 0 else "does not measurably change"
    print(f"both objects present: SEG off {claims.rate(bp_v)}, SEG on {claims.rate(bp_s)}; SEG - off (paired) "
          f"{d_seg.fmt(3, 100, ' pts')}: on this prompt SEG {seg_verdict} it")
    claims.check((seg_verdict == "raises") == (d_seg.lo > 0) and (seg_verdict == "lowers") == (d_seg.hi < 0),
                 f"SEG {seg_verdict} both present on this prompt (the verdict is the interval's)", d_seg)
print(f"the pair shown below (seed {SEG_SEEDS[0]}, the first seed): mean |difference| {change[0]:.2f} grey levels")
claims.check(change[0] > 0, "the vanilla and SEG images shown differ", float(change[0]))

# %% [markdown]
# **What to notice:** the same seed with SEG off and on; the right panel (the difference, amplified x4)
# shows where SEG moved the picture.

# %%
display(X.plot_pair(van[0], seg[0], titles=(f"SEG off (seed {SEG_SEEDS[0]})", f"SEG s = {SEG.scale:g}, sigma inf")))

# %% [markdown]
# ## 4 · EBCU on a DiT, measured, next to the UNet world
#
# PixArt's cross-attention has SD's form, so EBCU's context update runs through its 6 cross-attention layers
# unchanged. The measurement is the UNet worlds' benchmark (`ebca_viz.shapes.dit_eval.benchmark`: gammas and
# up-weight chosen on the 48 held-out two-object prompts at the *tune* seeds, reported on the same prompts at
# the *report* seeds, the same latents for every method; "both present": the detector finds both requested
# objects; `benchmarks/train_dit_world.py benchmark --ship-to docs/dit_world_benchmark.json`). When the DiT
# world's benchmark file ships it is read here and a few of its seeds are re-sampled live; until then a
# small live sample with the shapes world's settings stands in (its n is printed). The UNet neglect world's
# preregistered comparison (notebook 02, `docs/neglect_comparison_neglect-world.json`, the same 48 prompts)
# is read next to it.

# %%
from ebca_viz.experiments import neglect

unet = X.unet_rates(neglect.load_comparison("neglect-world"))
path = X.find_dit_benchmark()
N_LIVE = pick(8, 6)  # a live sample small enough for one cell (< 30 s on a busy 2-core CPU)
if path is not None and WORLD:
    dit = X.load_dit_benchmark(path, pipe)  # refuses a file made with other weights, or edited
    ch, fp = dit.chosen, dit.fingerprint
    print(f"{path.name}: weights sha256 {fp['weights_sha256'][:12]}... = this model's; DPM-Solver++ {fp.get('steps')} "
          f"steps, CFG {fp.get('guidance')}; n = {dit.n} two-object samples per method; chosen on the tune seeds: "
          f"EBCU gamma {ch['gamma_attn']}/{ch['gamma_norm']}, up-weight {ch['upweight']} on T5 positions {ch['token_indices']}")
    live = X.live_benchmark(pipe, N_LIVE, ch["gamma_attn"], ch["gamma_norm"], ch["upweight"], steps=STEPS, guidance=CFG)
else:
    dit = live = X.live_benchmark(pipe, N_LIVE, R.gamma_attn, R.gamma_norm, R.upweight, steps=STEPS, guidance=CFG)
    print(f"the DiT world's benchmark file is not in this copy: live sample only, n = {live.n} per method "
          f"(EBCU gamma {R.gamma_attn}/{R.gamma_norm}, up-weight {R.upweight}: placeholders from the DiT benchmark's "
          "grid, not tuned)")
DIT_LABEL = f"DiT {KIND}" + (" (live)" if dit is live else "")
for lab, wr in (("UNet neglect-world", unet), (DIT_LABEL, dit)):
    for m in X.METHODS:
        d = "" if m == "vanilla" else f"; {m} - vanilla (paired) {wr.diffs[m].fmt(3, 100, ' pts')}"
        print(f"{lab:<28s} {m:<17s} both present {wr.rates[m]}{d}")
if dit is not live:  # the live re-sample agrees with the shipped file (its first seeds, fewer steps in fast mode)
    for m in X.METHODS:
        print(f"live re-sample, {m}: {live.rates[m]} vs shipped {100 * dit.rates[m].p:.1f} %")
    claims.check(all(live.rates[m].lo <= dit.rates[m].hi and dit.rates[m].lo <= live.rates[m].hi for m in X.METHODS),
                 "the live re-sample's intervals overlap the shipped ones", *[str(live.rates[m]) for m in X.METHODS])
verdict = {m: ("raises" if d.lo > 0 else "lowers" if d.hi < 0 else "does not measurably change")
           for m, d in dit.diffs.items()}
for m, v in verdict.items():
    print(f"=> on the DiT, {m} {v} the both-present rate ({dit.diffs[m].fmt(3, 100, ' pts')}); on the UNet world: "
          f"{unet.diffs[m].fmt(3, 100, ' pts')}")
    claims.check((v == "raises") == (dit.diffs[m].lo > 0) and (v == "lowers") == (dit.diffs[m].hi < 0),
                 f"DiT: {m} {v} both present (the verdict is the interval's)", dit.diffs[m])

# %% [markdown]
# **What to notice:** for each method, compare the two bars' heights and whiskers (95 % Wilson intervals):
# the UNet world's bars are measured on 480 samples, the DiT's on the n in its legend; the paired
# differences to vanilla printed above are the test, since the bars of one world share their seeds.

# %%
display(X.plot_world_bars({"UNet neglect-world": unet, DIT_LABEL: dit}))

# %% [markdown]
# ## 5 · The same trace call on SD3 and Flux (random weights)
#
# Tiny SD3 and Flux pipelines built in code from diffusers' own classes (**random weights**: their maps mean
# nothing, so no claim here is about meaning). What the trace must get right is the bookkeeping: SD3's text
# is a CLIP segment (77 positions) followed by a T5 segment, Flux's a T5 segment; each is labelled by **its
# own** tokenizer, padding marked, and a word resolves to one position per segment that has it.

# %%
from ebca_viz.models import load_pipeline

for name in ("tiny-sd3", "tiny-flux"):
    p = load_pipeline(name)
    p.set_progress_bar_config(disable=True)
    with ev.trace(p) as tr5, torch.no_grad():
        p(PROMPT, num_inference_steps=2, height=32, width=32, generator=torch.Generator().manual_seed(0))
    kinds5 = [li.kind for li in adapter_for(p).layers()]
    print(f"{name}: layers {', '.join(f'{kinds5.count(k)} {k}' for k in ('joint', 'single') if k in kinds5)}; "
          f"map grid {tuple(tr5.map_grid)}; 'circle' at positions {tr5.token_index('circle')}")
    rows = X.segment_labels(tr5, p, PROMPT)
    for r in rows:
        print(f"  {r['name']:<5s} pipe.{r['attr']:<12s} {r['tokenizer']:<14s} {r['words']}; padding {r['padding']} "
              f"of {r['length']}; = the tokenizer's own pieces: {r['match']}")
    claims.check(all(r["match"] for r in rows), f"{name}: every text segment is labelled by its own tokenizer",
                 *[r["name"] for r in rows])
    claims.check(len(tr5.token_index("circle")) == len(rows) and all(tr5.tokens[i] == "circle" for i in tr5.token_index("circle")),
                 f"{name}: 'circle' resolves to one position per segment", tr5.token_index("circle"))

# %% [markdown]
# ## Checks and timings
#
# Every result sentence above was guarded by a check that would have stopped the notebook had it failed; here
# they are in one table, with the time this run took.

# %%
finish();
