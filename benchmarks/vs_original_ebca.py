"""ebca_viz vs the original EBCA implementation: same weights, same inputs, one EBCU UNet step.

The original code (github.com/EnergyAttention/Energy-Based-CrossAttention, its
``EnergyUNet2DConditionModel`` on its diffusers 0.16.1) runs from a local checkout, given by
path, in its own virtual environment, in a server process (``benchmarks/_ebca_ref_worker.py``).
Nothing of it is in this repository. This side runs ebca_viz's processors on the current
diffusers' own ``UNet2DConditionModel``.

    python benchmarks/vs_original_ebca.py --ref-code /tmp/ref_ebca --ref-python /tmp/ref/bin/python

Set-up of the reference (see tests/data/REFERENCE_FIXTURES.md)::

    git -C <mirror> archive d69b1b1f814333343ac0f7c7c5195ec505d76058 | tar -x -C /tmp/ref_ebca
    python3.11 -m venv /tmp/ref && /tmp/ref/bin/pip install torch==2.13.0 && /tmp/ref/bin/pip install \\
        diffusers==0.16.1 huggingface_hub==0.25.2 transformers==4.36.2 numpy==1.26.4 safetensors

Without either path it prints ``skipped: ... not found`` and exits 0.

What it does: builds SD 1.5's UNet (their ``__init__`` hands SD's default 4-block layout to the
parent, so the full-size layout can be built on both sides: 860M parameters) with random weights
rounded to fp16 (so they are stored losslessly as fp16 safetensors), loads the same state dict
into their UNet (``strict=True``), draws the same inputs (CFG batch [uncond; cond] latents,
random 77x768 "prompt embeddings", t = 500), and runs one EBCU call on each side with the same
gammas (their ``cross_attention_kwargs`` = what ``EnergyStableDiffusionPipeline`` passes).
Checks: the noise predictions agree to float32 tolerance (atol = rtol = ``--tol``), printed
as max abs diff, next to the effect of EBCU itself (max |EBCU - vanilla|, so the agreement is
not vacuous). Timing: rounds alternate reference / ebca_viz, each call timed inside its own
process (no start-up, no I/O), round 0 a warm-up; the ratio of medians is reported (CPU: the
processes' CPU time; wall time printed too), with the range of the per-round ratios.
"""
from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import shlex
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import ebca_viz as ev  # noqa: E402
from ebca_viz.models import tiny  # noqa: E402

WORKER = Path(__file__).resolve().parent / "_ebca_ref_worker.py"
DEFAULT_OUT = ROOT / "docs" / "benchmarks_vs_original_ebca.json"
REF_COMMIT = "d69b1b1f814333343ac0f7c7c5195ec505d76058"
# the fidelity fixtures' small SD-1.x layout (tests/data/fidelity_ebca.json), for a quick check
SMALL = dict(sample_size=24, in_channels=4, out_channels=4, layers_per_block=1, block_out_channels=(8, 16, 16, 16),
             cross_attention_dim=32, attention_head_dim=2, norm_num_groups=4)
BLOCK_TYPES = ("down_block_types", "up_block_types", "mid_block_type")


class RefServer:
    """The reference process: one request per line, one ``@@ {json}`` reply per request."""

    def __init__(self, python: str, code: str):
        self.p = subprocess.Popen([python, str(WORKER), code], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                  text=True, bufsize=1)
        self.hello = self._read()

    def _read(self):
        for line in self.p.stdout:
            if line.startswith("@@ "):
                r = json.loads(line[3:])
                if not r.get("ok"):
                    raise RuntimeError(f"reference worker failed: {r.get('error')}\n{r.get('traceback', '')}")
                return r
        raise RuntimeError(f"reference worker exited (code {self.p.wait()}); see its stderr above")

    def ask(self, **req):
        self.p.stdin.write(json.dumps(req) + "\n")
        self.p.stdin.flush()
        return self._read()

    def close(self):
        try:
            self.ask(op="quit")
        except (RuntimeError, BrokenPipeError, OSError):
            pass
        self.p.stdin.close()
        self.p.wait(timeout=60)


def missing(ref_code, ref_python):
    why = []
    if not ref_code or not (Path(ref_code) / "modules" / "models" / "energy_unet_2d_condition.py").is_file():
        why.append(f"--ref-code {ref_code!r} (a checkout of EnergyAttention/Energy-Based-CrossAttention: "
                   "modules/models/energy_unet_2d_condition.py) not found")
    if not ref_python or not Path(ref_python).is_file():
        why.append(f"--ref-python {ref_python!r} (the python of its diffusers-0.16.1 virtual environment) not found")
    return why


def build(size: str, seed: int = 0):
    """Our UNet (current diffusers) + the config their ``EnergyUNet2DConditionModel`` takes."""
    from diffusers import UNet2DConditionModel

    cfg = dict(tiny.SD15_UNET) if size == "sd15" else dict(SMALL)
    torch.manual_seed(seed)
    unet = UNet2DConditionModel(**cfg).eval()
    with torch.no_grad():
        for p in unet.parameters():  # stored losslessly as fp16
            p.copy_(p.half().float())
    ref_cfg = {k: (list(v) if isinstance(v, tuple) else v) for k, v in cfg.items() if k not in BLOCK_TYPES}
    return unet, ref_cfg


def fingerprint(argv, ref_versions):
    import diffusers

    try:
        commit = subprocess.run(["git", "-C", str(ROOT), "rev-parse", "HEAD"], capture_output=True, text=True,
                                timeout=10).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        commit = ""
    return {
        "date_utc": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "command": "python benchmarks/vs_original_ebca.py " + shlex.join(argv),
        "ebca_viz_commit": commit, "reference_commit": REF_COMMIT,
        "versions": {"python": platform.python_version(), "torch": torch.__version__, "diffusers": diffusers.__version__},
        "reference_versions": ref_versions,
        "machine": {"platform": platform.platform(), "cpu_count": os.cpu_count(), "threads": torch.get_num_threads(),
                    "loadavg_at_start": list(os.getloadavg()) if hasattr(os, "getloadavg") else None},
    }


def main(argv=None):
    argv = sys.argv[1:] if argv is None else list(argv)
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--ref-code", default=None, help="checkout of the original EBCA repository")
    ap.add_argument("--ref-python", default=None, help="python of its virtual environment (diffusers 0.16.1)")
    ap.add_argument("--size", choices=("sd15", "small"), default="sd15",
                    help="sd15: SD 1.5's layout (860M); small: the fidelity fixtures' 144k-parameter layout")
    ap.add_argument("--latent", type=int, default=None, help="latent side (default 64 for sd15 = 512 px, 24 small)")
    ap.add_argument("--rounds", type=int, default=5, help="timed rounds after 1 warm-up (medians reported)")
    ap.add_argument("--threads", type=int, default=None, help="torch threads on both sides (default: torch's)")
    ap.add_argument("--gamma-attn", type=float, default=0.6)
    ap.add_argument("--gamma-norm", type=float, default=0.4)
    ap.add_argument("--tol", type=float, default=1e-4, help="atol = rtol of the agreement check (float32)")
    ap.add_argument("--out", default=None, help=f"JSON to write (default {DEFAULT_OUT.relative_to(ROOT)}; '-' = none)")
    ap.add_argument("--note", default="", help="free text stored in the JSON (e.g. 'shared machine')")
    args = ap.parse_args(argv)
    why = missing(args.ref_code, args.ref_python)
    if why:
        print("skipped: " + "; ".join(why))
        return 0
    if args.rounds < 1:
        ap.error("--rounds must be >= 1")
    if args.threads:
        torch.set_num_threads(args.threads)
    side = args.latent or (64 if args.size == "sd15" else 24)
    unet, ref_cfg = build(args.size)
    D = unet.config.cross_attention_dim
    g = torch.Generator().manual_seed(1234)
    x = torch.randn(1, 4, side, side, generator=g).repeat(2, 1, 1, 1)  # [uncond; cond] share the latents
    ctx = torch.randn(2, 77, D, generator=g)
    t = torch.tensor(500)
    # their pipelines: cross_attention_kwargs.update(gamma_attn=..., gamma_norm=..., token_indices=..., token_upweight=...)
    cak = {"gamma_attn": args.gamma_attn, "gamma_norm": args.gamma_norm, "token_indices": None, "token_upweight": None}
    cfg = ev.EBCAConfig(gamma_attn=args.gamma_attn, gamma_norm=args.gamma_norm, cfg=True)
    n_params = sum(p.numel() for p in unet.parameters())
    print(f"UNet: {args.size} layout ({n_params / 1e6:.1f}M params, weights fp16-rounded), latents 2x4x{side}x{side}, "
          f"t=500, gamma_attn={args.gamma_attn}, gamma_norm={args.gamma_norm}, {torch.get_num_threads()} thread(s)",
          flush=True)

    from safetensors.torch import load_file, save_file

    with tempfile.TemporaryDirectory(prefix="ebca_vs_ref_") as tmp:
        wpath, ipath, opath = (str(Path(tmp) / n) for n in ("weights.safetensors", "inputs.safetensors", "ref_out.safetensors"))
        save_file({k: v.half().contiguous() for k, v in unet.state_dict().items()}, wpath)
        save_file({"x": x, "t": t, "context": ctx}, ipath)
        server = RefServer(args.ref_python, args.ref_code)
        try:
            loaded = server.ask(op="load", config=ref_cfg, weights=wpath, inputs=ipath, threads=torch.get_num_threads(),
                                cak=cak)
            os.unlink(wpath)
            if loaded["params"] != n_params:
                raise RuntimeError(f"reference UNet has {loaded['params']} parameters, ours {n_params}")
            ref_t, our_t = [], []
            ours = None
            with torch.no_grad():
                for r in range(args.rounds + 1):
                    rr = server.ask(op="step", save=opath if r == 0 else None)
                    with ev.energy_attention(unet, cfg):
                        t0, c0 = time.perf_counter(), time.process_time()
                        out = unet(x, t, encoder_hidden_states=ctx).sample
                        dt, dc = time.perf_counter() - t0, time.process_time() - c0
                    if r == 0:
                        ours = out
                    else:
                        ref_t.append((rr["wall_s"], rr["cpu_s"]))
                        our_t.append((dt, dc))
                    print(f"  round {r}{' (warm-up)' if r == 0 else ''}: original {rr['wall_s']:.2f}s wall / "
                          f"{rr['cpu_s']:.2f}s cpu   ebca_viz {dt:.2f}s wall / {dc:.2f}s cpu", flush=True)
                vanilla = unet(x, t, encoder_hidden_states=ctx).sample  # diffusers' own processors
            ref = load_file(opath)["sample"]
        finally:
            server.close()

    diff = (ours - ref).abs().max().item()
    effect = (ours - vanilla).abs().max().item()
    agree = torch.allclose(ours, ref, atol=args.tol, rtol=args.tol)
    med = statistics.median
    res = {"size": args.size, "params": n_params, "latent": side, "unet_batch": 2, "timestep": 500,
           "gamma_attn": args.gamma_attn, "gamma_norm": args.gamma_norm, "threads": torch.get_num_threads(),
           "rounds": args.rounds, "warmup_rounds": 1,
           "max_abs_diff": diff, "max_abs_eps": ref.abs().max().item(), "tol": args.tol, "agree": bool(agree),
           "max_abs_effect_vs_vanilla": effect,
           "original": {"wall_s": [a for a, _ in ref_t], "cpu_s": [b for _, b in ref_t]},
           "ebca_viz": {"wall_s": [a for a, _ in our_t], "cpu_s": [b for _, b in our_t]}}
    for k in ("wall", "cpu"):
        o, e = res["original"][f"{k}_s"], res["ebca_viz"][f"{k}_s"]
        res[f"{k}_ratio"] = med(e) / med(o)  # ebca_viz / original
        per = sorted(a / b for a, b in zip(e, o))
        res[f"{k}_ratio_range"] = [per[0], per[-1]]
        res["original"][f"median_{k}_s"], res["ebca_viz"][f"median_{k}_s"] = med(o), med(e)
    print(f"\nnoise prediction: max |ebca_viz - original| = {diff:.3g} (max |eps| {res['max_abs_eps']:.3g}; "
          f"EBCU's own effect max |EBCU - vanilla| = {effect:.3g}): "
          f"{'AGREE' if agree else 'DISAGREE'} at atol = rtol = {args.tol:g}")
    print(f"one EBCU step, median of {args.rounds}: original {res['original']['median_cpu_s']:.2f}s CPU / "
          f"{res['original']['median_wall_s']:.2f}s wall, ebca_viz {res['ebca_viz']['median_cpu_s']:.2f}s CPU / "
          f"{res['ebca_viz']['median_wall_s']:.2f}s wall -> ebca_viz / original = {res['cpu_ratio']:.3f}x CPU time "
          f"(per-round {res['cpu_ratio_range'][0]:.2f}-{res['cpu_ratio_range'][1]:.2f}), {res['wall_ratio']:.3f}x wall")
    if args.out != "-":
        out = Path(args.out) if args.out else DEFAULT_OUT
        fp = fingerprint(argv, server.hello.get("versions"))
        fp["machine"]["note"] = args.note
        out.parent.mkdir(parents=True, exist_ok=True)
        tmpf = out.with_name(f".{out.name}.{os.getpid()}.tmp")
        tmpf.write_text(json.dumps({"fingerprint": fp, "result": res}, indent=1) + "\n")
        os.replace(tmpf, out)
        print(f"wrote {out}")
    return 0 if agree else 1


if __name__ == "__main__":
    sys.exit(main())
