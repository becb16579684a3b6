"""Overhead of the energy processors vs vanilla diffusers, measured in the same run.

Time per UNet step (one classifier-free-guidance call: batch [uncond; cond]) and peak memory
for: vanilla (diffusers' own processors), EBCU, EBCU + EBCQ (one editorial prompt), SEG (mid
block, published convention: an extra blurred conditional row). The UNet is Stable Diffusion
1.5's architecture built from its config with random weights (no download).

    python benchmarks/overhead.py                      # CPU, 32x32 latents (fp32)
    python benchmarks/overhead.py --device cuda        # GPU, 64x64 latents, fp16

Modes are interleaved round by round and medians are reported, so a busy machine slows
every mode alike. On CUDA the target is judged on wall time; on a CPU on this process's CPU
time (``time.process_time``, all threads), since on a shared machine wall time also measures the
neighbours (both are printed).

``--trace`` runs ``benchmarks/trace_overhead.py`` instead (the recorder's overhead: default
``ebca_viz.trace`` on the same UNet, 50 steps at 64x64 latents; its other flags pass through). Memory: CUDA = ``torch.cuda.max_memory_allocated`` during the step; CPU =
peak resident-set growth during the step, sampled every millisecond (psutil); on a CPU it is
dominated by oneDNN's per-call weight reorders (tens of MB for SD 1.5's 1280-channel convs), so
the ``+MB`` column (extra peak over vanilla) is the figure that shows the processors' own cost. So that freed
blocks go back to the OS and the resident set follows live tensors, the script re-runs itself
with glibc's ``MALLOC_MMAP_THRESHOLD_=65536`` (allocations >= 64 KiB are mmap-ed, unmapped on free).
"""
from __future__ import annotations

import argparse
import contextlib
import os
import statistics
import sys
import threading
import time
import types
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

import ebca_viz as ev  # noqa: E402
from ebca_viz.models.tiny import sd15_unet  # noqa: E402

TARGETS = {"cpu": 1.20, "cuda": 1.10}


class PeakRSS:
    """Peak growth of this process's resident memory while the block runs (CPU)."""

    def __init__(self):
        import psutil

        self.proc = psutil.Process()

    def __enter__(self):
        self.base = self.peak = self.proc.memory_info().rss
        self._stop = False
        self._t = threading.Thread(target=self._run, daemon=True)
        self._t.start()
        return self

    def _run(self):
        while not self._stop:
            self.peak = max(self.peak, self.proc.memory_info().rss)
            time.sleep(0.001)

    def __exit__(self, *exc):
        self._stop = True
        self._t.join()
        self.peak = max(self.peak, self.proc.memory_info().rss)
        self.bytes = self.peak - self.base


def step_once(unet, x, t, ctx, device):
    if device.type == "cuda":
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
        base = torch.cuda.memory_allocated()
        t0, c0 = time.perf_counter(), time.process_time()
        unet(x, t, encoder_hidden_states=ctx)
        torch.cuda.synchronize()
        return time.perf_counter() - t0, time.process_time() - c0, torch.cuda.max_memory_allocated() - base
    with PeakRSS() as m:
        t0, c0 = time.perf_counter(), time.process_time()
        unet(x, t, encoder_hidden_states=ctx)
        dt, dc = time.perf_counter() - t0, time.process_time() - c0
    return dt, dc, m.bytes


def main(argv=None):
    argv = sys.argv[1:] if argv is None else list(argv)
    if "--trace" in argv:
        import trace_overhead

        trace_overhead.main([a for a in argv if a != "--trace"])
        return 0
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--trace", action="store_true", help="measure the recorder instead (trace_overhead.py)")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--latent", type=int, default=None, help="latent side (default 32 on CPU, 64 on GPU)")
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's)")
    args = ap.parse_args(argv)
    device = torch.device(args.device)
    if args.threads:
        torch.set_num_threads(args.threads)
    dtype = torch.float16 if device.type == "cuda" else torch.float32
    side = args.latent or (64 if device.type == "cuda" else 32)
    unet = sd15_unet(seed=0).to(device).eval()
    if dtype != torch.float32:
        unet = unet.to(dtype=dtype)
    g = torch.Generator().manual_seed(0)
    x = torch.randn(2, 4, side, side, generator=g).to(device, dtype)
    ctx = torch.randn(2, 77, 768, generator=g).to(device, dtype)
    edit = torch.randn(1, 77, 768, generator=g).to(device, dtype)
    t = torch.tensor(500, device=device)
    holder = types.SimpleNamespace(unet=unet, guidance_scale=7.5, do_classifier_free_guidance=True)

    modes = {
        "vanilla": lambda: _null(),
        "EBCU": lambda: ev.energy_attention(unet, ev.EBCAConfig(gamma_attn=0.01, gamma_norm=0.02)),
        "EBCU-noguard": lambda: _unguarded(lambda: ev.energy_attention(unet, ev.EBCAConfig(gamma_attn=0.01,
                                                                                       gamma_norm=0.02))),
        "EBCU+EBCQ": lambda: ev.energy_attention(unet, ev.EBCAConfig(
            gamma_attn=0.01, gamma_norm=0.02,
            edits=[ev.Edit(embeds=edit, alpha=1.3, gamma_attn=4e-4, gamma_norm=4e-4)])),
        "SEG": lambda: ev.smoothed_energy_guidance(holder, ev.SEGConfig(scale=3.0, sigma=10.0)),
    }
    times = {m: [] for m in modes}
    cpu = {m: [] for m in modes}
    mems = {m: [] for m in modes}
    print(f"SD 1.5 UNet ({sum(p.numel() for p in unet.parameters()) / 1e6:.0f}M params, random weights), "
          f"{device.type} {str(dtype).replace('torch.', '')}, latents 2x4x{side}x{side} (CFG batch), "
          f"{torch.get_num_threads()} threads, {args.rounds} rounds after 1 warm-up", flush=True)
    from tqdm.auto import tqdm

    with torch.no_grad():
        for r in tqdm(range(args.rounds + 1), desc="rounds", file=sys.stderr):
            for m, make in modes.items():
                with make():
                    dt, dc, mem = step_once(unet, x, t, ctx, device)
                if r:  # round 0 is the warm-up
                    times[m].append(dt)
                    cpu[m].append(dc)
                    mems[m].append(mem)
    assert unet._forward_pre_hooks == {} and unet._forward_hooks == {}
    med = lambda d, m: statistics.median(d[m])  # noqa: E731
    base_t, base_c, base_m = med(times, "vanilla"), med(cpu, "vanilla"), max(mems["vanilla"])
    print(f"\n{'mode':<11} {'wall s/step':>11} {'ratio':>7} {'CPU s/step':>11} {'ratio':>7} {'peak MB':>9} {'ratio':>7} {'+MB':>6}")
    for m in modes:
        tm, cm, mm = med(times, m), med(cpu, m), max(mems[m])
        print(f"{m:<11} {tm:11.3f} {tm / base_t:6.2f}x {cm:11.3f} {cm / base_c:6.2f}x {mm / 2**20:9.1f} "
              f"{mm / max(base_m, 1):6.2f}x {(mm - base_m) / 2**20:6.1f}")
    judged = times if device.type == "cuda" else cpu
    ratio = med(judged, "EBCU") / med(judged, "vanilla")
    target = TARGETS.get(device.type, 1.2)
    g = med(judged, "EBCU") / med(judged, "EBCU-noguard")
    print(f"finiteness guards: EBCU with / without them = {g:.3f}x")
    print(f"\nEBCU / vanilla = {ratio:.3f}x ({'wall' if device.type == 'cuda' else 'CPU'} time; target <= "
          f"{target:.2f}x on {device.type}): {'met' if ratio <= target else 'NOT met'}")
    return 0


@contextlib.contextmanager
def _unguarded(make):
    """The same installation without the finiteness guards (their cost = EBCU / EBCU-noguard)."""
    from ebca_viz import guards

    with guards.disabled():
        cm = make()
        cm.__enter__()
    try:
        yield
    finally:
        cm.__exit__(None, None, None)


class _null:
    def __enter__(self):
        return None

    def __exit__(self, *exc):
        return False


if __name__ == "__main__":
    if os.environ.get("MALLOC_MMAP_THRESHOLD_") is None and sys.platform.startswith("linux"):
        os.execve(sys.executable, [sys.executable, *sys.argv], {**os.environ, "MALLOC_MMAP_THRESHOLD_": "65536"})
    sys.exit(main())
