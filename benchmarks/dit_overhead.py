"""Overhead of ``ebca_viz.trace`` (default settings) on a diffusion transformer vs vanilla diffusers, same run.

The denoiser is diffusers' ``FluxTransformer2DModel`` with FLUX.1's head layout (head dim 128, rotary axes
(16, 56, 56), T5-width 4096 text input, guidance embedding as in FLUX.1-dev) but fewer and narrower blocks
(``--heads`` x 128 wide, ``--double`` double-stream + ``--single`` single-stream blocks) so that it runs on a
small CPU; random weights, built in code. A loop of ``--steps`` transformer calls at decreasing timesteps
runs without and with ``ebca_viz.trace(transformer)`` (default quantities on every joint and single-stream
layer: the image->text block of each attention (maps, running sums on the default grid), energies of that
block, the text stream's norms and drift, the guidance map slot).

    python benchmarks/dit_overhead.py                      # 16x16 image tokens, 256 text tokens, 4 steps
    python benchmarks/dit_overhead.py --grid 32 --tokens 512 --steps 8

Rounds alternate vanilla / traced and the ratio of the medians is reported against the target (<= 1.05x):
on a CPU this process's CPU time (``time.process_time``; on a shared machine the wall time mostly measures
the neighbours), on CUDA the wall time; both are printed.
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

TIME_TARGET = 1.05


def build(heads: int, double: int, single: int, seed: int = 0):
    from diffusers import FluxTransformer2DModel

    torch.manual_seed(seed)
    return FluxTransformer2DModel(patch_size=1, in_channels=64, num_layers=double, num_single_layers=single,
                                  attention_head_dim=128, num_attention_heads=heads, joint_attention_dim=4096,
                                  pooled_projection_dim=768, guidance_embeds=True, axes_dims_rope=(16, 56, 56)).eval()


def inputs(grid: int, tokens: int, device, dtype):
    from diffusers import FluxPipeline

    g = torch.Generator().manual_seed(0)
    x = torch.randn(1, grid * grid, 64, generator=g).to(device, dtype)
    ctx = torch.randn(1, tokens, 4096, generator=g).to(device, dtype)
    pooled = torch.randn(1, 768, generator=g).to(device, dtype)
    img_ids = FluxPipeline._prepare_latent_image_ids(1, grid, grid, device, dtype)
    txt_ids = torch.zeros(tokens, 3, device=device, dtype=dtype)
    return x, ctx, pooled, img_ids, txt_ids


def sample(model, x, ctx, pooled, img_ids, txt_ids, steps, device):
    ts = torch.linspace(1.0, 1.0 / steps, steps).tolist()
    guidance = torch.full((1,), 3.5, device=device)
    if device.type == "cuda":
        torch.cuda.synchronize()
    t0, c0 = time.perf_counter(), time.process_time()
    for t in ts:
        v = model(x, encoder_hidden_states=ctx, pooled_projections=pooled, timestep=torch.full((1,), t, device=device),
                  img_ids=img_ids, txt_ids=txt_ids, guidance=guidance, return_dict=False)[0]
        x = x - 1e-3 * v
    if device.type == "cuda":
        torch.cuda.synchronize()
    return time.perf_counter() - t0, time.process_time() - c0


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--grid", type=int, default=16, help="image-token grid side (FLUX.1 at 1024 px: 64)")
    ap.add_argument("--tokens", type=int, default=256, help="T5 positions (FLUX.1-dev: 512, schnell: 256)")
    ap.add_argument("--heads", type=int, default=6, help="attention heads of 128 (FLUX.1: 24)")
    ap.add_argument("--double", type=int, default=2, help="double-stream blocks (FLUX.1: 19)")
    ap.add_argument("--single", type=int, default=4, help="single-stream blocks (FLUX.1: 38)")
    ap.add_argument("--steps", type=int, default=4)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--threads", type=int, default=1)
    args = ap.parse_args(argv)
    device = torch.device(args.device)
    dtype = torch.float16 if device.type == "cuda" else torch.float32
    torch.set_num_threads(args.threads)
    model = build(args.heads, args.double, args.single).to(device=device, dtype=dtype)
    x, ctx, pooled, img_ids, txt_ids = inputs(args.grid, args.tokens, device, dtype)
    print(f"FluxTransformer2DModel ({sum(p.numel() for p in model.parameters()) / 1e6:.0f}M params, random weights): "
          f"{args.double} double + {args.single} single blocks, {args.heads}x128 wide, {args.grid}x{args.grid} image "
          f"tokens + {args.tokens} text tokens, {args.steps} steps, {device} {dtype}, {torch.get_num_threads()} threads")
    with torch.no_grad():
        sample(model, x, ctx, pooled, img_ids, txt_ids, 1, device)  # warm-up, vanilla
        with ev.trace(model, num_steps=1):
            sample(model, x, ctx, pooled, img_ids, txt_ids, 1, device)  # warm-up, traced
        van, trc = [], []
        for r in range(args.rounds):
            van.append(sample(model, x, ctx, pooled, img_ids, txt_ids, args.steps, device))
            with ev.trace(model, num_steps=args.steps) as tr:
                trc.append(sample(model, x, ctx, pooled, img_ids, txt_ids, args.steps, device))
            print(f"  round {r}: vanilla {van[-1][0]:.2f}s wall / {van[-1][1]:.2f}s cpu   "
                  f"traced {trc[-1][0]:.2f}s wall / {trc[-1][1]:.2f}s cpu")
    wall = statistics.median(t for t, _ in trc) / statistics.median(t for t, _ in van)
    cpu = statistics.median(c for _, c in trc) / statistics.median(c for _, c in van)
    ratio = wall if device.type == "cuda" else cpu
    print(f"recorded layers: {len(tr.layers)} ({sum(k.startswith('single') for k in tr.layers)} single-stream), "
          f"map grid {tr.map_grid}, stored {tr.nbytes / 2**20:.2f} MiB")
    print(f"time ratio traced/vanilla: {wall:.3f}x wall, {cpu:.3f}x process CPU time "
          f"(target <= {TIME_TARGET}x on {'wall' if device.type == 'cuda' else 'CPU time'}: "
          f"{'OK' if ratio <= TIME_TARGET else 'MISSED'})")
    return ratio


if __name__ == "__main__":
    main()
