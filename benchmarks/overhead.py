"""Overhead of the energy processors vs vanilla diffusers, measured in the same run.

Time per UNet step (one classifier-free-guidance call: batch [uncond; cond]) and peak memory
for: vanilla (diffusers' own processors), EBCU, EBCU + EBCQ (one editorial prompt), SEG (mid
block, published convention: an extra blurred conditional row), and the recorder
(``trace``: ``ebca_viz.trace`` with its default quantities on diffusers' own attention).
``EBCU-noguard`` is EBCU without the finiteness guards (their cost). The UNet is Stable
Diffusion 1.5's architecture built from its config with random weights (no download).
``measure()`` is what ``benchmarks/full_size.py`` calls for the README's full-size table.

    python benchmarks/overhead.py                      # CPU, 32x32 latents (fp32)
    python benchmarks/overhead.py --device cuda        # GPU, 64x64 latents, fp16
    python benchmarks/overhead.py --latent 64 --modes vanilla,EBCU,trace   # full size, some modes

Modes are interleaved round by round and medians are reported, so a busy machine slows
every mode alike. On CUDA the target is judged on wall time; on a CPU on this process's CPU
time (``time.process_time``, all threads), since on a shared machine wall time also measures the
neighbours (both are printed).

``--trace`` runs ``benchmarks/trace_overhead.py`` instead (the recorder over a 50-step loop at
64x64 latents, with its stored bytes; its other flags pass through); the ``trace`` row here is one step. Memory: CUDA = ``torch.cuda.max_memory_allocated`` during the step; CPU =
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


MODES = ("vanilla", "EBCU", "EBCU-noguard", "EBCU+EBCQ", "SEG", "trace")


def make_modes(unet, edit, names=MODES):
    """name -> a callable giving the context manager that installs that mode on ``unet``."""
    holder = types.SimpleNamespace(unet=unet, guidance_scale=7.5, do_classifier_free_guidance=True)
    ebcu = lambda: ev.EBCAConfig(gamma_attn=0.01, gamma_norm=0.02)  # noqa: E731
    every = {
        "vanilla": lambda: _null(),
        "EBCU": lambda: ev.energy_attention(unet, ebcu()),
        "EBCU-noguard": lambda: _unguarded(lambda: ev.energy_attention(unet, ebcu())),
        "EBCU+EBCQ": lambda: ev.energy_attention(unet, ev.EBCAConfig(
            gamma_attn=0.01, gamma_norm=0.02,
            edits=[ev.Edit(embeds=edit, alpha=1.3, gamma_attn=4e-4, gamma_norm=4e-4)])),
        "SEG": lambda: ev.smoothed_energy_guidance(holder, ev.SEGConfig(scale=3.0, sigma=10.0)),
        # the recorder on diffusers' own attention (default quantities; stores on the CPU)
        "trace": lambda: ev.trace(unet, cfg=True),
    }
    unknown = [n for n in names if n not in every]
    if unknown or "vanilla" not in names:
        raise ValueError(f"modes must include 'vanilla' and be among {list(every)}; got {list(names)}")
    return {n: every[n] for n in names}


def measure(unet, device, side, rounds, modes=MODES, progress=True):
    """Time one CFG UNet step (batch 2) per mode, modes interleaved round by round.

    Round 0 is a warm-up (not recorded). Returns a JSON-able dict: per-mode lists of wall
    seconds, process CPU seconds and peak extra memory in bytes, and the medians / ratios.
    """
    if rounds < 1:
        raise ValueError(f"rounds must be >= 1, got {rounds}")
    device = torch.device(device)
    dtype = next(unet.parameters()).dtype
    D = unet.config.cross_attention_dim
    g = torch.Generator().manual_seed(0)
    x = torch.randn(2, unet.config.in_channels, side, side, generator=g).to(device, dtype)
    ctx = torch.randn(2, 77, D, generator=g).to(device, dtype)
    edit = torch.randn(1, 77, D, generator=g).to(device, dtype)
    t = torch.tensor(500, device=device)
    made = make_modes(unet, edit, modes)
    rec = {m: {"wall_s": [], "cpu_s": [], "peak_bytes": []} for m in made}
    it = range(rounds + 1)
    if progress:
        from tqdm.auto import tqdm

        it = tqdm(it, desc="rounds", file=sys.stderr)
    with torch.no_grad():
        for r in it:
            for m, make in made.items():
                with make():
                    dt, dc, mem = step_once(unet, x, t, ctx, device)
                if r:  # round 0 is the warm-up
                    rec[m]["wall_s"].append(dt)
                    rec[m]["cpu_s"].append(dc)
                    rec[m]["peak_bytes"].append(int(mem))
    assert unet._forward_pre_hooks == {} and unet._forward_hooks == {}
    med = statistics.median
    base = rec["vanilla"]
    for m, d in rec.items():
        d["median_wall_s"], d["median_cpu_s"] = med(d["wall_s"]), med(d["cpu_s"])
        d["wall_ratio"] = d["median_wall_s"] / med(base["wall_s"])
        d["cpu_ratio"] = d["median_cpu_s"] / med(base["cpu_s"])
        # spread of the per-round ratio (round r of the mode / round r of vanilla: same conditions)
        per = sorted(a / b for a, b in zip(d["wall_s"], base["wall_s"]))
        perc = sorted(a / b for a, b in zip(d["cpu_s"], base["cpu_s"]))
        d["wall_ratio_range"], d["cpu_ratio_range"] = [per[0], per[-1]], [perc[0], perc[-1]]
        d["max_peak_bytes"] = max(d["peak_bytes"])
        d["extra_peak_bytes"] = d["max_peak_bytes"] - max(base["peak_bytes"])
    return {
        "device": device.type, "dtype": str(dtype).replace("torch.", ""), "latent": side,
        "unet_batch": 2, "params_M": round(sum(p.numel() for p in unet.parameters()) / 1e6, 1),
        "threads": torch.get_num_threads(), "rounds": rounds, "warmup_rounds": 1,
        "timestep": 500, "modes": rec,
    }


def print_table(res):
    base = res["modes"]["vanilla"]
    print(f"\n{'mode':<13} {'wall s/step':>11} {'ratio':>7} {'CPU s/step':>11} {'ratio':>7} {'(range)':>13} "
          f"{'peak MB':>9} {'+MB':>7}")
    for m, d in res["modes"].items():
        lo, hi = d["cpu_ratio_range"]
        print(f"{m:<13} {d['median_wall_s']:11.3f} {d['wall_ratio']:6.2f}x {d['median_cpu_s']:11.3f} "
              f"{d['cpu_ratio']:6.2f}x {f'{lo:.2f}-{hi:.2f}':>13} {d['max_peak_bytes'] / 2**20:9.1f} "
              f"{d['extra_peak_bytes'] / 2**20:7.1f}")
    return base


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
    ap.add_argument("--modes", default=",".join(MODES), help=f"comma-separated, among {','.join(MODES)}")
    args = ap.parse_args(argv)
    device = torch.device(args.device)
    if args.threads:
        torch.set_num_threads(args.threads)
    dtype = torch.float16 if device.type == "cuda" else torch.float32
    side = args.latent or (64 if device.type == "cuda" else 32)
    unet = sd15_unet(seed=0).to(device=device, dtype=dtype).eval()
    modes = tuple(m.strip() for m in args.modes.split(",") if m.strip())
    print(f"SD 1.5 UNet ({sum(p.numel() for p in unet.parameters()) / 1e6:.0f}M params, random weights), "
          f"{device.type} {str(dtype).replace('torch.', '')}, latents 2x4x{side}x{side} (CFG batch), "
          f"{torch.get_num_threads()} threads, {args.rounds} rounds after 1 warm-up", flush=True)
    res = measure(unet, device, side, args.rounds, modes)
    print_table(res)
    judged = "wall" if device.type == "cuda" else "cpu"
    ratio = res["modes"]["EBCU"][f"{judged}_ratio"] if "EBCU" in res["modes"] else None
    target = TARGETS.get(device.type, 1.2)
    if "EBCU" in res["modes"] and "EBCU-noguard" in res["modes"]:
        g = res["modes"]["EBCU"][f"median_{judged}_s"] / res["modes"]["EBCU-noguard"][f"median_{judged}_s"]
        print(f"finiteness guards: EBCU with / without them = {g:.3f}x")
    if ratio is not None:
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
