"""Overhead of ``ebca_viz.trace`` (default settings) vs vanilla diffusers, measured in the same run.

The UNet is Stable Diffusion 1.5's architecture (``UNet2DConditionModel``: block_out_channels
(320, 640, 1280, 1280), layers_per_block 2, cross_attention_dim 768, attention_head_dim 8,
16 cross-attention layers) with random weights, built in code (no download). A sampling
loop of ``--steps`` UNet calls with classifier-free guidance (batch ``[uncond; cond]``, 77
tokens) runs without and with ``ebca_viz.trace(unet, cfg=True, guidance_scale=7.5)`` (default
quantities: running map sums, energies before/after, context norms and drift, the CFG guidance map
``w ||eps_c - eps_u||`` per latent pixel; map grid 32x32 at 64x64 latents).

    python benchmarks/trace_overhead.py                           # 50 steps, 64x64 latents, CPU fp32
    python benchmarks/trace_overhead.py --latent 32 --steps 5     # quick run on a small CPU
    python benchmarks/trace_overhead.py --device cuda             # GPU, fp16

Rounds alternate vanilla / traced and the ratio of the medians is reported against the target
(<= 1.15x): wall time on CUDA; on a CPU, this process's CPU time (``time.process_time``), since
on a shared machine the wall time mostly measures the neighbours (both are printed).
Host memory of the trace: the bytes it stores (``Trace.nbytes``, exactly the tensors it keeps
on the CPU) and the growth of this process's resident set across the traced run (allocator
noise included), against the target (<= 250 MB), plus the projected figure for a full 50-step
run at 64x64 latents.
"""
from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import ebca_viz as ev  # noqa: E402
from ebca_viz.models.tiny import sd15_unet  # noqa: E402

TIME_TARGET = 1.15
MEM_TARGET = 250e6


def rss() -> int:
    import psutil

    return psutil.Process().memory_info().rss


def sample(unet, x, ctx, steps, device):
    """``steps`` UNet calls at decreasing timesteps (the work of a sampler, minus the scheduler math)."""
    ts = torch.linspace(999, 1, steps).round().long().tolist()
    if device.type == "cuda":
        torch.cuda.synchronize()
    t0, c0 = time.perf_counter(), time.process_time()
    for t in ts:
        eps = unet(x, t, encoder_hidden_states=ctx).sample
        x = x - 1e-3 * eps  # keep a data dependency between steps
    if device.type == "cuda":
        torch.cuda.synchronize()
    return time.perf_counter() - t0, time.process_time() - c0


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--steps", type=int, default=50)
    ap.add_argument("--latent", type=int, default=64, help="latent side (64 = 512x512 images)")
    ap.add_argument("--batch", type=int, default=1, help="images (the UNet batch is 2x with CFG)")
    ap.add_argument("--rounds", type=int, default=1, help="vanilla/traced rounds (medians reported)")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--dtype", default=None, help="float32 (CPU default) or float16 (CUDA default)")
    ap.add_argument("--threads", type=int, default=None)
    args = ap.parse_args(argv)
    device = torch.device(args.device)
    dtype = getattr(torch, args.dtype or ("float16" if device.type == "cuda" else "float32"))
    if args.threads:
        torch.set_num_threads(args.threads)

    unet = sd15_unet(seed=0).to(device=device, dtype=dtype).eval()
    g = torch.Generator().manual_seed(0)
    x = torch.randn(args.batch, 4, args.latent, args.latent, generator=g).to(device, dtype).repeat(2, 1, 1, 1)
    ctx = torch.randn(2 * args.batch, 77, 768, generator=g).to(device, dtype)
    print(f"SD1.5 UNet ({sum(p.numel() for p in unet.parameters()) / 1e6:.0f}M params, random weights), "
          f"{args.latent}x{args.latent} latents, {args.steps} steps, CFG batch {2 * args.batch}, {device} {dtype}, "
          f"{torch.get_num_threads()} threads")

    with torch.no_grad():
        unet(x, 999, encoder_hidden_states=ctx)  # warm-up, vanilla
        with ev.trace(unet, cfg=True, guidance_scale=7.5):
            unet(x, 999, encoder_hidden_states=ctx)  # warm-up, traced
        van, trc, stored, grown = [], [], 0, 0
        for r in range(args.rounds):
            van.append(sample(unet, x, ctx, args.steps, device))
            base = rss()
            with ev.trace(unet, cfg=True, guidance_scale=7.5) as tr:
                trc.append(sample(unet, x, ctx, args.steps, device))
            grown = max(grown, rss() - base)
            stored = tr.nbytes
            print(f"  round {r}: vanilla {van[-1][0]:.2f}s wall / {van[-1][1]:.2f}s cpu   "
                  f"traced {trc[-1][0]:.2f}s wall / {trc[-1][1]:.2f}s cpu")
    wall = statistics.median(t for t, _ in trc) / statistics.median(t for t, _ in van)
    cpu = statistics.median(c for _, c in trc) / statistics.median(c for _, c in van)
    # on a shared CPU, wall time mostly measures the neighbours; the process's CPU time is the work done
    ratio = wall if device.type == "cuda" else cpu
    full = tr.estimate_bytes(num_steps=50, height=64, width=64, batch=args.batch)
    tv = statistics.median(t for t, _ in van)
    tt = statistics.median(t for t, _ in trc)
    print(f"\nper step (wall): vanilla {1e3 * tv / args.steps:.1f} ms, traced {1e3 * tt / args.steps:.1f} ms")
    print(f"time ratio traced/vanilla: {wall:.3f}x wall, {cpu:.3f}x process CPU time "
          f"(target <= {TIME_TARGET}x on {'wall' if device.type == 'cuda' else 'CPU time'}: "
          f"{'OK' if ratio <= TIME_TARGET else 'MISSED'})")
    print(f"trace host memory: {stored / 1e6:.2f} MB stored (Trace.nbytes), {grown / 1e6:.1f} MB RSS growth "
          f"(target <= {MEM_TARGET / 1e6:.0f} MB: {'OK' if max(stored, grown) <= MEM_TARGET else 'MISSED'})")
    print(f"projected for 50 steps at 64x64 latents: {full / 1e6:.2f} MB (map grid {tr.map_grid} here)")
    print(tr.summary())
    return ratio, stored


if __name__ == "__main__":
    main()
