"""``python -m ebca_viz demo``: vanilla vs EBCU from the same seed, with the energy descent plotted.

Writes to ``--out`` (default ``outputs/demo``):

* ``vanilla.png``, ``ebcu.png``, ``comparison.png`` (side by side, upscaled for small models),
* ``energy.png``: posterior energy ``E(K;Q) + E(K)`` of the conditional context entering each
  cross-attention layer (vanilla: the prompt's keys; EBCU: the updated contexts as they descend),
  and the per-layer decrease produced by the update, over sampling steps,
* ``summary.json``: settings, energies and timings.

Runs fully offline on the shipped shapes-world model (or the random tiny model when it is absent);
``--model sd15`` etc. use real weights when they are on disk.
"""
from __future__ import annotations

import json
import time
from pathlib import Path

import torch

from .config import EBCAConfig
from .ebca import energy_attention
from .trace import trace

DEFAULT_PROMPT = "a red circle and a blue square"


def default_model() -> str:
    """``"shapes-world"`` when its weights ship with this copy, else ``"tiny"``."""
    try:
        from .shapes.model import weights_available
    except ImportError:
        return "tiny"
    return "shapes-world" if weights_available() else "tiny"


def _sample(pipe, prompt, seed, steps, guidance_scale, config, progress):
    """One run inside a recorder: ``(image, trace, seconds)``."""
    pipe.set_progress_bar_config(disable=not progress, leave=False)
    g = torch.Generator("cpu").manual_seed(seed)
    t0 = time.perf_counter()
    with trace(pipe, quantities=["energies"]) as tr, energy_attention(pipe, config):
        image = pipe(prompt, num_inference_steps=steps, guidance_scale=guidance_scale, generator=g).images[0]
    return image, tr, time.perf_counter() - t0


def _upscale(img, size=256):
    from PIL import Image

    if img.width >= size:
        return img
    return img.resize((size, size * img.height // img.width), Image.NEAREST)


def plot_energy(vanilla, ebcu, path=None):
    """Two panels: the posterior energy of the context entering each layer under EBCU minus that of
    the prompt's own context (mean over steps; the updates cascade, and since every layer has its
    own key weights, a context made cheaper for layer n need not be cheaper for layer n+1), and the
    decrease ``E_before - E_after`` each EBCU update achieves, per step (mean over layers).
    ``vanilla``, ``ebcu``: :class:`~ebca_viz.trace.Trace` objects that recorded ``"energies"``."""
    import matplotlib

    matplotlib.use("Agg", force=False) if path else None
    import matplotlib.pyplot as plt

    fig, (a, b) = plt.subplots(1, 2, figsize=(11, 3.8))
    ev = vanilla.energies("posterior", when="before")  # (step, layer)
    ee, ee_after = ebcu.energies("posterior", when="before"), ebcu.energies("posterior", when="after")
    x = range(ev.shape[1])
    a.plot(x, (ee - ev).mean(0), "s-", label="EBCU context - prompt context")
    a.axhline(0, color="gray", lw=0.8)
    a.set_xlabel("cross-attention layer (execution order)")
    a.set_ylabel("difference of E(K;Q)+E(K)")
    a.set_title("energy of the context entering each layer, vs vanilla")
    a.legend()
    drop = (ee - ee_after)
    b.plot(range(drop.shape[0]), drop.mean(1), "o-", color="C1")
    b.axhline(0, color="gray", lw=0.8)
    b.set_xlabel("sampling step (0 = noisiest)")
    b.set_ylabel("E_before - E_after (mean over layers)")
    b.set_title("energy decrease per EBCU update")
    fig.tight_layout()
    if path:
        fig.savefig(path, dpi=110)
        plt.close(fig)
    return fig


def run_demo(model: str = "auto", prompt: str = DEFAULT_PROMPT, seed: int = 0, steps: int = 25,
             gamma_attn: float = 0.01, gamma_norm: float = 0.02, guidance_scale: float = 7.5,
             out: str | Path = "outputs/demo", device: str | None = None, progress: bool = True) -> dict:
    """Sample ``prompt`` twice from the same seed, vanilla (all strengths 0: diffusers' own
    attention, recorded) and EBCU, save images + energy plot + summary; returns the summary."""
    from .models import load_pipeline

    if not isinstance(steps, int) or steps < 1:
        raise ValueError(f"steps must be a positive integer, got {steps!r}")
    configs = {"vanilla": EBCAConfig(gamma_attn=0.0, gamma_norm=0.0),
               "ebcu": EBCAConfig(gamma_attn=gamma_attn, gamma_norm=gamma_norm)}
    for c in configs.values():
        c.validate()  # fail before loading a model
    name = default_model() if model == "auto" else model
    device = device or ("cuda" if torch.cuda.is_available() else "cpu")
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    pipe = load_pipeline(name, device=device)
    runs = {}
    for label, cfg in configs.items():
        if progress:
            print(f"[{name}] sampling {label} ({steps} steps) ...", flush=True)
        runs[label] = _sample(pipe, prompt, seed, steps, guidance_scale, cfg, progress)
    from PIL import Image

    (vi, vlog, vt), (ei, elog, et) = runs["vanilla"], runs["ebcu"]
    vi.save(out / "vanilla.png")
    ei.save(out / "ebcu.png")
    a, b = _upscale(vi), _upscale(ei)
    both = Image.new("RGB", (a.width + b.width + 8, a.height), "white")
    both.paste(a, (0, 0))
    both.paste(b, (a.width + 8, 0))
    both.save(out / "comparison.png")
    plot_energy(vlog, elog, path=out / "energy.png")
    ee, ea = elog.energies("posterior", when="before"), elog.energies("posterior", when="after")
    summary = {
        "model": name, "prompt": prompt, "seed": seed, "steps": steps, "guidance_scale": guidance_scale,
        "gamma_attn": gamma_attn, "gamma_norm": gamma_norm, "device": device,
        "seconds": {"vanilla": round(vt, 3), "ebcu": round(et, 3)},
        "posterior_energy_entering_layers_mean_over_steps": {
            "vanilla": vlog.energies("posterior", when="before").mean(0).tolist(), "ebcu": ee.mean(0).tolist()},
        "fraction_of_updates_that_lower_energy": float((ea < ee).float().mean()),
        "pixel_change_mean_abs": float(
            (torch.tensor(list(vi.getdata()), dtype=torch.float32)
             - torch.tensor(list(ei.getdata()), dtype=torch.float32)).abs().mean()),
        "files": ["vanilla.png", "ebcu.png", "comparison.png", "energy.png"],
    }
    (out / "summary.json").write_text(json.dumps(summary, indent=2))
    if progress:
        print(f"wrote {', '.join(summary['files'])} and summary.json to {out}/")
        print(f"EBCU updates that lowered the posterior energy: {summary['fraction_of_updates_that_lower_energy']:.0%}")
    return summary


def add_arguments(p) -> None:
    p.add_argument("--model", default="auto", help="auto (shapes-world, else tiny), tiny, shapes-world, sd14, sd15, ... or a folder")
    p.add_argument("--prompt", default=DEFAULT_PROMPT)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--steps", type=int, default=25, help="sampling steps (default 25)")
    p.add_argument("--gamma-attn", type=float, default=0.01)
    p.add_argument("--gamma-norm", type=float, default=0.02)
    p.add_argument("--guidance-scale", type=float, default=7.5)
    p.add_argument("--device", default=None, help="cuda when available, else cpu")
    p.add_argument("--out", default="outputs/demo")


def run(args) -> int:
    run_demo(model=args.model, prompt=args.prompt, seed=args.seed, steps=args.steps, gamma_attn=args.gamma_attn,
             gamma_norm=args.gamma_norm, guidance_scale=args.guidance_scale, out=args.out, device=args.device)
    return 0
