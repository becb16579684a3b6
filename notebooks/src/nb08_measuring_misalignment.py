"""Notebook 08_measuring_misalignment."""
from common import SETUP, code, md  # noqa: F401

CELLS = [
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
