"""``python -m ebca_viz demo``: vanilla vs EBCU from the same seed, with the energy descent plotted.

Writes to ``--out`` (default ``outputs/demo``):

* ``vanilla.png``, ``ebcu.png``, ``comparison.png`` (side by side, upscaled for small models),
* ``energy.png``: the context energy ``E(K;Q)``, the prior ``E(K)`` and their sum (the posterior),
  separately: through the layer cascade (relative to the prompt's own context at the same layer),
  the change each layer's own update makes, and that change over sampling steps
  (:func:`ebca_viz.plots.plot_energy_terms`),
* ``trace.html``: the EBCU run's trace as one self-contained page (open it in a browser; no kernel,
  no network): step / layer sliders, token chips, attention maps, energies, context trajectories
  (:meth:`ebca_viz.tracing.Trace.to_html`),
* ``summary.json``: settings, energies, timings, and the measured share of EBCU updates that lowered
  the posterior energy with its n and Wilson 95 % interval (``posterior_energy_lowered``).

Gammas and guidance default to the model's regime (:func:`ebca_viz.shapes.regime.regime_for`:
shapes world 0.3/0.3 at CFG 3; real SD the paper's 0.01/0.02 at CFG 7.5).

Runs fully offline on the shipped shapes-world model (or the random tiny model when it is absent);
``--model sd15`` etc. use real weights when they are on disk.
"""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import torch

from .config import EBCAConfig
from .energy_steps import UpdateRecorder
from .notebook import default_model, sample_traced  # default_model: re-exported here for callers
from .util import upscale
from .errors import InvalidSetting

DEFAULT_PROMPT = "a red circle and a blue square"


def _sample(pipe, prompt, seed, steps, guidance_scale, config, progress, quantities=("energies",)):
    """One EBCA run under a trace (``quantities``: energies only by default) with an
    :class:`UpdateRecorder` on the controller: ``(image, trace, seconds, UpdateRecord or None)``."""
    pipe.set_progress_bar_config(disable=not progress, leave=False)
    rec = UpdateRecorder(scales=[1.0])
    run = sample_traced(pipe, prompt, seed=seed, steps=steps, guidance_scale=guidance_scale, ebca=config,
                        quantities=list(quantities), observers=[rec])
    return run.image, run.trace, run.seconds, (rec.record() if rec._rows else None)


def plot_energy(vanilla, ebcu, path=None, record=None):
    """E(K;Q), E(K) and their sum, separately (:func:`ebca_viz.plots.plot_energy_terms`).

    ``record`` (an :class:`~ebca_viz.energy_steps.UpdateRecord` of the EBCU run) gives the cascade
    panel its reference: the prompt's own context seen by the same layer in the same run. Without it
    the reference is the ``vanilla`` trace (a separate run: its queries differ after the first layer).
    ``vanilla``, ``ebcu``: :class:`~ebca_viz.tracing.Trace` objects that recorded ``"energies"``.

    The prior can rise while the posterior falls: each update lowers ``E(K;Q)`` and, to first order,
    ``E(K)`` too, but ``E(K)`` curves up quadratically in the step size, so a long step (the shapes
    world's tuned 0.3/0.3) raises it in most updates while the sum still falls in about two thirds of
    them (notebook 01 measures and checks both numbers). Returns the Figure (saved to ``path`` if given).
    """
    from .plots import plot_energy_terms, save_figure, trace_energy_terms

    if record is not None:
        before, after, ref = record.before, record.after, record.prompt
    else:
        before, after = trace_energy_terms(ebcu, "before"), trace_energy_terms(ebcu, "after")
        ref = trace_energy_terms(vanilla, "before")
    fig = plot_energy_terms(before, after, reference=ref, layer_names=ebcu.layers, title="EBCU energies")
    if path:
        save_figure(fig, path, dpi=110)
    return fig


def run_demo(model: str = "auto", prompt: str = DEFAULT_PROMPT, seed: int | None = None, steps: int = 25,
             gamma_attn: float | None = None, gamma_norm: float | None = None, guidance_scale: float | None = None,
             out: str | Path = "outputs/demo", device: str | None = None, progress: bool = True) -> dict:
    """Sample ``prompt`` twice from the same seed, vanilla (all strengths 0: diffusers' own
    attention, recorded) and EBCU, save images + energy plot + summary; returns the summary.
    ``gamma_attn``, ``gamma_norm``, ``guidance_scale``: None takes the model's regime. ``seed=None``: the
    seed of 0..15 where EBCU changes the image most (:func:`~ebca_viz.experiments.multiconcept.pick_demo_seed`;
    ``summary.json`` records it with the median change over those seeds), else 0 on models without it."""
    from .models import load_pipeline
    from .shapes.regime import regime_for

    if not isinstance(steps, int) or steps < 1:
        raise InvalidSetting(f"steps must be a positive integer, got {steps!r}")
    name = default_model() if model == "auto" else model
    reg = regime_for(name)
    gamma_attn = reg.gamma_attn if gamma_attn is None else gamma_attn
    gamma_norm = reg.gamma_norm if gamma_norm is None else gamma_norm
    guidance_scale = reg.guidance if guidance_scale is None else guidance_scale
    configs = {"vanilla": EBCAConfig(gamma_attn=0.0, gamma_norm=0.0),
               "ebcu": EBCAConfig(gamma_attn=gamma_attn, gamma_norm=gamma_norm)}
    for c in configs.values():
        c.validate()  # fail before loading a model
    device = device or ("cuda" if torch.cuda.is_available() else "cpu")
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    pipe = load_pipeline(name, device=device)
    seed_choice = None
    if seed is None:
        from .experiments.multiconcept import pick_demo_seed

        seed_choice = pick_demo_seed(pipe, prompt, configs["ebcu"], seeds=range(16), steps=steps,
                                     guidance=guidance_scale)
        seed = seed_choice.seed
        if progress:
            print(f"seed {seed}: the largest change of 16 seeds ({seed_choice.change:.1f}/255 per pixel; "
                  f"median {seed_choice.median_change:.1f}/255)", flush=True)
    runs = {}
    for label, cfg in configs.items():
        if progress:
            print(f"[{name}] sampling {label} ({steps} steps) ...", flush=True)
        # the EBCU run also records what its trace page draws (maps, context norms)
        qs = ("maps", "energies", "context_norms") if label == "ebcu" else ("energies",)
        runs[label] = _sample(pipe, prompt, seed, steps, guidance_scale, cfg, progress, quantities=qs)
    from PIL import Image

    (vi, vlog, vt, _), (ei, elog, et, rec) = runs["vanilla"], runs["ebcu"]
    vi.save(out / "vanilla.png")
    ei.save(out / "ebcu.png")
    a, b = upscale(vi), upscale(ei)
    both = Image.new("RGB", (a.width + b.width + 8, a.height), "white")
    both.paste(a, (0, 0))
    both.paste(b, (a.width + 8, 0))
    both.save(out / "comparison.png")
    plot_energy(vlog, elog, path=out / "energy.png", record=rec)
    elog.to_html(out / "trace.html", image=ei, quiet=True,
                 title=f"EBCU on {name}: \"{prompt}\", seed {seed}, gammas {gamma_attn}/{gamma_norm}, CFG {guidance_scale}")
    ee, ea = elog.energies("posterior", when="before"), elog.energies("posterior", when="after")
    summary = {
        "model": name, "prompt": prompt, "seed": seed, "steps": steps, "guidance_scale": guidance_scale,
        "seed_choice": None if seed_choice is None else {
            "rule": "the seed of 0..15 where EBCU changes the image most", "change": seed_choice.change,
            "median_change_over_seeds": seed_choice.median_change},
        "mean_abs_diff_vanilla_ebcu": float(np.abs(np.asarray(vi, np.float32) - np.asarray(ei, np.float32)).mean()),
        "gamma_attn": gamma_attn, "gamma_norm": gamma_norm, "device": device,
        "seconds": {"vanilla": round(vt, 3), "ebcu": round(et, 3)},
        "posterior_energy_entering_layers_mean_over_steps": {
            "vanilla": vlog.energies("posterior", when="before").mean(0).tolist(), "ebcu": ee.mean(0).tolist()},
        "fraction_of_updates_that_lower_energy": float((ea < ee).float().mean()),
        # k, n, p and the Wilson 95 % interval (lo, hi) over the (step, layer) updates of this image;
        # E(K;Q) lowered and E(K) raised alongside, and the rate per layer
        "posterior_energy_lowered": None if rec is None else rec.rate("posterior").to_json(),
        "energy_terms": None if rec is None else rec.to_json(),
        "pixel_change_mean_abs": float(
            (torch.tensor(list(vi.getdata()), dtype=torch.float32)
             - torch.tensor(list(ei.getdata()), dtype=torch.float32)).abs().mean()),
        "files": ["vanilla.png", "ebcu.png", "comparison.png", "energy.png", "trace.html"],
    }
    (out / "summary.json").write_text(json.dumps(summary, indent=2))
    if progress:
        print(f"wrote {', '.join(summary['files'])} and summary.json to {out}/")
        if rec is not None:
            print(f"EBCU updates that lowered the posterior energy E(K;Q)+E(K): {rec.rate('posterior')}; "
                  f"E(K;Q) fell in {rec.rate('context')}, E(K) rose in {rec.rate('prior', rose=True)}")
    return summary


def add_arguments(p) -> None:
    p.add_argument("--model", default="auto", help="auto (shapes-world, else tiny), tiny, shapes-world, sd14, sd15, ... or a folder")
    p.add_argument("--prompt", default=DEFAULT_PROMPT)
    p.add_argument("--seed", type=int, default=None,
                   help="default: the seed of 0..15 where EBCU changes the image most (recorded in summary.json)")
    p.add_argument("--steps", type=int, default=25, help="sampling steps (default 25)")
    p.add_argument("--gamma-attn", type=float, default=None, help="default: the model's regime (shapes world 0.3, SD 0.01)")
    p.add_argument("--gamma-norm", type=float, default=None, help="default: the model's regime (shapes world 0.3, SD 0.02)")
    p.add_argument("--guidance-scale", type=float, default=None, help="default: the model's regime (shapes world 3, SD 7.5)")
    p.add_argument("--device", default=None, help="cuda when available, else cpu")
    p.add_argument("--out", default="outputs/demo")


def run(args) -> int:
    from ebca_viz.tasks.common import check_out_dir

    check_out_dir(args.out)
    run_demo(model=args.model, prompt=args.prompt, seed=args.seed, steps=args.steps, gamma_attn=args.gamma_attn,
             gamma_norm=args.gamma_norm, guidance_scale=args.guidance_scale, out=args.out, device=args.device)
    return 0
