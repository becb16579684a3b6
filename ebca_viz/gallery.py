"""``python -m ebca_viz gallery --out docs/gallery``: the explainer's figures as small PNGs (README).

Offline on the shapes-world model (the random ``tiny`` model when its weights are absent; the
file ``gallery.json`` says which). Every image is written with a small DPI and checked against
``--max-kb`` (default 150 KB).

Files:

* ``comparison.png``   vanilla vs EBCU from the same seed (+ difference)
* ``energy_descent.png``  posterior energy entering/leaving every layer, decrease per update
* ``attention_maps.png``  maps of the prompt's words by layer, over the EBCU image
* ``context_trajectories.png``  per-token norms, drift and PCA paths of the context
* ``gradient_check.png``  closed-form attention term vs ``torch.autograd``
* ``seg_energy.png``  SEG: self-attention energy vs blur sigma, with the samples
* ``maps_animation.gif``  maps over the sampling steps
"""
from __future__ import annotations

import json
import math
from pathlib import Path
from .errors import InvalidSetting


DEFAULT_PROMPT = "a red circle and a blue square"


def make_gallery(out="docs/gallery", model: str = "auto", prompt: str = DEFAULT_PROMPT, seed: int | None = None,
                 steps: int = 20, device=None, max_kb: int = 150, verbose: bool = True) -> dict:
    """Write the gallery; returns ``{"model", "files": {name: bytes}, ...}``. Raises if a file is too big."""
    from . import energy as E
    from . import plots
    from .config import EBCAConfig, SEGConfig
    from .notebook import capture_attention, load_model, sample_traced

    if not isinstance(steps, int) or steps < 1:
        raise InvalidSetting(f"steps must be a positive integer, got {steps!r}")
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    pipe, name = load_model("shapes-world" if model == "auto" else model, device=device, verbose=verbose)
    written = {}

    def save(fig, fname, dpi=72):
        p = plots.save_figure(fig, out / fname, dpi=dpi, palette=True)
        written[fname] = p.stat().st_size
        if verbose:
            print(f"  {fname}: {p.stat().st_size / 1024:.0f} KB")

    from .shapes.regime import regime_for

    R = regime_for(name)  # the model's own regime (shapes world: benchmarks/shapes_sweep.py)
    cfg_scale = R.guidance
    seed_choice = None
    if seed is None:  # the seed of 0..15 where EBCU changes the image most; recorded with the median
        from .experiments.multiconcept import pick_demo_seed

        seed_choice = pick_demo_seed(pipe, prompt, EBCAConfig(gamma_attn=R.gamma_attn, gamma_norm=R.gamma_norm),
                                     seeds=range(16), steps=steps, guidance=cfg_scale)
        seed = seed_choice.seed

    def run(config=None, seg=None, quantities=None, guidance=None):
        r = sample_traced(pipe, prompt, seed=seed, steps=steps, guidance_scale=cfg_scale if guidance is None else guidance,
                          ebca=config, seg=seg, quantities=quantities)
        return r.image, r.trace

    def verdict(img):
        try:
            from .shapes.detect import detect
        except ImportError:  # pragma: no cover
            return ""
        import numpy as np

        return ":\n" + ("\n".join(f"{d.colour} {d.shape}" for d in detect(np.asarray(img))) or "nothing")

    import numpy as np

    van, tr_v = run(quantities=["maps", "energies"])
    ebcu, tr_e = run(EBCAConfig(gamma_attn=R.gamma_attn, gamma_norm=R.gamma_norm),
                     quantities=["maps", "energies", "context_norms", "contexts"])
    change = float(np.abs(np.asarray(van, np.float32) - np.asarray(ebcu, np.float32)).mean())
    if change <= 1.0 and R.name != "tiny":  # the random test model draws noise either way
        raise InvalidSetting(f"gallery: vanilla and EBCU images are (nearly) identical at seed {seed} "
                         f"(mean |diff| {change:.2f}/255): pick another --seed")
    save(plots.compare_images({f"vanilla (CFG {cfg_scale:g}){verdict(van)}": van,
                             f"EBCU {R.gamma_attn}/{R.gamma_norm}{verdict(ebcu)}": ebcu}, diff=True, size=2.2),
         "comparison.png")
    from .demo import plot_energy

    save(plot_energy(tr_v, tr_e), "energy_descent.png")
    save(plots.plot_trace_maps(tr_e, by="layer", image=ebcu, cell=1.0), "attention_maps.png")
    save(plots.plot_trace_contexts(tr_e), "context_trajectories.png")

    n_down = len(pipe.unet.down_blocks)
    cap = capture_attention(pipe, prompt, step=1, layer=n_down, seed=seed, num_inference_steps=min(steps, 4))
    q, k = cap["q"].double(), cap["k"].double()
    k_ = k.clone().requires_grad_(True)
    E.context_energy(q, k_, cap["scale"]).sum().backward()
    closed = E.attention_term(E.attention_scores(q, k, cap["scale"]), q)
    save(plots.plot_gradient_check(-(cap["heads"] / cap["scale"]) * E.merge_heads(k_.grad), closed,
                                 title="A = softmax_i(S)^T Q vs -(H/beta) dE(K;Q)/dK"), "gradient_check.png")

    sigmas = [0.5, 1.0, 2.0, math.inf]
    seg_layers = list(R.seg_layers)  # the regime's (shapes world: its SEG sweep's choice; SD: the mid block)
    energies, refs, images = [], [], []
    for s in sigmas:
        img, tr = run(seg=SEGConfig(scale=R.seg_scale, sigma=s, layers=seg_layers))
        energies.append(float(tr.seg_energies("blurred").mean()))
        refs.append(float(tr.seg_energies("reference").mean()))
        images.append(img)
    save(plots.plot_seg_energy(sigmas, energies, reference=sum(refs) / len(refs), images=images), "seg_energy.png")

    gif = plots.save_animation(plots.animate_trace(tr_e, cell=1.1, max_frames=10), out / "maps_animation.gif", fps=3, dpi=60)
    written[gif.name] = gif.stat().st_size

    too_big = {f: b for f, b in written.items() if b > max_kb * 1024}
    meta = {"model": name, "prompt": prompt, "seed": seed, "steps": steps, "files": written,
            "regime": R.to_json(), "mean_abs_diff_vanilla_ebcu": change,
            "seed_choice": None if seed_choice is None else {
                "rule": "the seed of 0..15 where EBCU changes the image most", "change": seed_choice.change,
                "median_change_over_seeds": seed_choice.median_change},
            "command": f"python -m ebca_viz gallery --out {out} --model {model} --steps {steps}"}
    (out / "gallery.json").write_text(json.dumps(meta, indent=2) + "\n")
    if too_big:
        raise InvalidSetting.of("max_kb", max_kb, "raise max_kb (--max-kb) or lower steps / the figure sizes",
                                 why=f"gallery files over {max_kb} KB: {too_big}")
    if verbose:
        print(f"wrote {len(written)} files to {out}/ (model {name})")
    return meta


def add_arguments(p) -> None:
    p.add_argument("--out", default="docs/gallery")
    p.add_argument("--model", default="auto", help="auto (shapes-world, else tiny), tiny, sd15, ...")
    p.add_argument("--prompt", default=DEFAULT_PROMPT)
    p.add_argument("--seed", type=int, default=None, help="default: the seed of 0..15 where EBCU changes the image most")
    p.add_argument("--steps", type=int, default=20)
    p.add_argument("--device", default=None)
    p.add_argument("--max-kb", type=int, default=150, help="fail if an image is larger (default 150)")


def run(args) -> int:
    from ebca_viz.tasks.common import check_out_dir

    check_out_dir(args.out)
    make_gallery(out=args.out, model=args.model, prompt=args.prompt, seed=args.seed, steps=args.steps,
                 device=args.device, max_kb=args.max_kb)
    return 0
