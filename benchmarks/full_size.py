"""Numbers at full size: Stable Diffusion 1.5 (860M-parameter UNet, 512 px, 64x64 latents), random weights.

Two measurements, each written (atomically) into one JSON with a fingerprint (versions, config,
command, date, machine), and the README's table generated from that JSON:

* ``overhead``: ``benchmarks/overhead.py``'s interleaved timing of one CFG UNet step (batch 2) for
  vanilla diffusers, EBCU, EBCU + EBCQ (one edit), SEG (mid block) and the recorder
  (``ebca_viz.trace`` on diffusers' attention), medians over ``--rounds`` rounds after one warm-up
  round, with the per-round ratio range; plus peak memory (CPU: resident-set growth during the step).
* ``trace_memory``: ``ev.estimate_bytes(pipe, ...)`` before sampling vs what a short real run at
  512 px stores (``Trace.nbytes``) and the process's extra peak resident memory (traced run vs the
  same vanilla run). The pipeline is a full-size ``StableDiffusionPipeline`` built from configs with
  random weights: SD 1.5's UNet, CLIP ViT-L/14 text encoder (123M), SD's ``AutoencoderKL``; the
  runs use ``output_type="latent"`` (the VAE decode is the same in both runs and not traced).

    python benchmarks/full_size.py                         # CPU fp32, both parts -> docs/benchmarks_full_size.json
    python benchmarks/full_size.py --parts trace_memory    # one part (merged into the JSON)
    python benchmarks/full_size.py --device cuda           # GPU fp16 -> docs/benchmarks_full_size_cuda.json
    python benchmarks/full_size.py --readme                # only rewrite the README table from the JSON(s)

``--tiny`` runs the same code on the tiny test model (seconds; for the smoke test, never written to
docs/ unless ``--out`` says so). On a CPU the ratios are judged on this process's CPU time
(``time.process_time``): on a shared machine the wall time also measures the neighbours.
"""
from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import shlex
import subprocess
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

import ebca_viz as ev  # noqa: E402
from ebca_viz.models import tiny  # noqa: E402

DOCS = ROOT / "docs"
README = ROOT / "docs" / "benchmarks.md"  # the block lives in the benchmarks page (the README links it)
PARTS = ("overhead", "trace_memory")
OVERHEAD_MODES = ("vanilla", "EBCU", "EBCU+EBCQ", "SEG", "trace")
BEGIN, END = "<!-- bench:full-size:begin (made by benchmarks/full_size.py --readme) -->", "<!-- bench:full-size:end -->"

# CLIP ViT-L/14 text tower (SD 1.x's text encoder) and SD 1.x's VAE, from their published configs
SD15_TEXT = dict(hidden_size=768, intermediate_size=3072, num_hidden_layers=12, num_attention_heads=12,
                 max_position_embeddings=77, hidden_act="quick_gelu", vocab_size=49408)
SD15_VAE = dict(in_channels=3, out_channels=3, latent_channels=4, block_out_channels=(128, 256, 512, 512),
                down_block_types=("DownEncoderBlock2D",) * 4, up_block_types=("UpDecoderBlock2D",) * 4,
                layers_per_block=2, norm_num_groups=32, sample_size=512)


def out_path(device: str) -> Path:
    return DOCS / ("benchmarks_full_size.json" if device == "cpu" else f"benchmarks_full_size_{device}.json")


def fingerprint(args, argv) -> dict:
    import diffusers
    import transformers

    try:
        commit = subprocess.run(["git", "-C", str(ROOT), "rev-parse", "HEAD"], capture_output=True, text=True,
                                timeout=10).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        commit = ""
    load = os.getloadavg() if hasattr(os, "getloadavg") else None
    return {
        "date_utc": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "command": "python benchmarks/full_size.py " + shlex.join(argv),
        "ebca_viz_commit": commit,
        "versions": {"python": platform.python_version(), "torch": torch.__version__,
                     "diffusers": diffusers.__version__, "transformers": transformers.__version__},
        "machine": {"platform": platform.platform(), "cpu_count": os.cpu_count(), "threads": torch.get_num_threads(),
                    "loadavg_at_start": list(load) if load else None,
                    "env": {k: os.environ[k] for k in ("OMP_NUM_THREADS", "OMP_WAIT_POLICY", "MALLOC_MMAP_THRESHOLD_")
                            if k in os.environ},
                    "device_name": torch.cuda.get_device_name() if args.device.startswith("cuda") else platform.processor(),
                    "note": args.note},
        "model": "tiny test model" if args.tiny else "SD 1.5 architecture, random weights (ebca_viz.models.tiny.SD15_UNET)",
    }


def full_size_pipeline(seed: int = 0):
    """A full-size SD 1.5 ``StableDiffusionPipeline`` with random weights, built from configs (no hub)."""
    from diffusers import AutoencoderKL, DDIMScheduler, StableDiffusionPipeline
    from transformers import CLIPTextConfig, CLIPTextModel

    from ebca_viz.models.tokenizer import load_tokenizer

    tok = load_tokenizer()
    torch.manual_seed(seed)
    te = CLIPTextModel(CLIPTextConfig(**dict(SD15_TEXT, vocab_size=max(SD15_TEXT["vocab_size"], len(tok))),
                                      bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id,
                                      pad_token_id=tok.pad_token_id)).eval()
    pipe = StableDiffusionPipeline(
        vae=AutoencoderKL(**SD15_VAE), text_encoder=te, tokenizer=tok, unet=tiny.sd15_unet(seed),
        scheduler=DDIMScheduler(**tiny.SD_SCHEDULER), safety_checker=None, feature_extractor=None,
        requires_safety_checker=False)
    pipe.set_progress_bar_config(disable=True)
    return pipe


def run_overhead(args) -> dict:
    import overhead

    unet = (tiny.tiny_unet(0) if args.tiny else tiny.sd15_unet(0)).eval()
    dtype = torch.float16 if args.device.startswith("cuda") else torch.float32
    unet = unet.to(device=args.device, dtype=dtype)
    res = overhead.measure(unet, args.device, args.latent, args.rounds, OVERHEAD_MODES, progress=not args.tiny)
    overhead.print_table(res)
    return res


def run_trace_memory(args) -> dict:
    from overhead import PeakRSS

    pipe = tiny.tiny_pipeline(0) if args.tiny else full_size_pipeline(0)
    dtype = torch.float16 if args.device.startswith("cuda") else torch.float32
    pipe = pipe.to(args.device, dtype)
    side = args.latent * pipe.vae_scale_factor  # image pixels
    prompt = "a photo of a cat wearing a red shirt"
    kw = dict(height=side, width=side, guidance_scale=7.5, output_type="latent")

    def run(steps, traced):
        g = torch.Generator().manual_seed(0)
        tr = None
        cuda = args.device.startswith("cuda")
        if cuda:
            torch.cuda.synchronize()
            torch.cuda.reset_peak_memory_stats()
            base = torch.cuda.memory_allocated()
        import psutil

        before = psutil.Process().memory_info().rss
        with PeakRSS() as m:
            t0, c0 = time.perf_counter(), time.process_time()
            if traced:
                with ev.trace(pipe) as tr:
                    pipe(prompt, num_inference_steps=steps, generator=g, **kw)
            else:
                pipe(prompt, num_inference_steps=steps, generator=g, **kw)
            if cuda:
                torch.cuda.synchronize()
            dt, dc = time.perf_counter() - t0, time.process_time() - c0
        retained = psutil.Process().memory_info().rss - before
        rec = {"wall_s": dt, "cpu_s": dc, "peak_rss_growth_bytes": int(m.bytes), "rss_retained_bytes": int(retained)}
        if cuda:  # the trace stores on the host; this shows it adds nothing on the device beyond its working set
            rec["cuda_peak_growth_bytes"] = int(torch.cuda.max_memory_allocated() - base)
        return tr, rec

    est = ev.estimate_bytes(pipe, num_steps=args.steps, height=side, width=side)
    est50 = ev.estimate_bytes(pipe, num_steps=50, height=side, width=side)
    with torch.no_grad():
        run(1, False)  # warm-up: first-call allocations (oneDNN, allocator pools) out of the way
        _, van = run(args.steps, False)
        tr, trc = run(args.steps, True)
    res = {
        "device": args.device, "dtype": str(dtype).replace("torch.", ""), "image_px": side, "latent": args.latent,
        "steps": args.steps, "batch": 1, "cfg": True, "prompt": prompt, "map_grid": list(tr.map_grid),
        "quantities": list(tr.quantities), "layers": len(tr.layers),
        "estimate_bytes": int(est), "stored_bytes": int(tr.nbytes), "estimate_over_stored": est / max(tr.nbytes, 1),
        "estimate_50_steps_bytes": int(est50), "vanilla": van, "traced": trc,
        "extra_peak_rss_bytes": trc["peak_rss_growth_bytes"] - van["peak_rss_growth_bytes"],
        "extra_retained_rss_bytes": trc["rss_retained_bytes"] - van["rss_retained_bytes"],
    }
    mb = lambda b: f"{b / 2**20:.2f} MiB"  # noqa: E731
    print(f"\ntrace at {side}px, {args.steps} steps: estimate {mb(est)}, stored {mb(tr.nbytes)} "
          f"(estimate/stored {res['estimate_over_stored']:.3f}); extra peak RSS traced vs vanilla "
          f"{mb(res['extra_peak_rss_bytes'])}, retained {mb(res['extra_retained_rss_bytes'])}; "
          f"estimate for 50 steps {mb(est50)}", flush=True)
    return res


def write_json_atomic(path: Path, data: dict) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(json.dumps(data, indent=1, sort_keys=False) + "\n")
    os.replace(tmp, path)


# ------------------------------------------------------------------------------------------------
# README table, generated from the JSON
# ------------------------------------------------------------------------------------------------
LABELS = {"vanilla": "vanilla diffusers", "EBCU": "EBCU", "EBCU+EBCQ": "EBCU + EBCQ (1 edit)",
          "SEG": "SEG (mid block, extra blurred row)", "trace": "`ebca_viz.trace` (default quantities)"}


def render(data_by_device: dict) -> str:
    """The README block for the JSON(s): one overhead table per device, the trace-memory lines."""
    out = []
    for dev, data in data_by_device.items():
        parts = data.get("parts", {})
        if "overhead" in parts:
            o, fp = parts["overhead"]["result"], parts["overhead"]["fingerprint"]
            judged = "CPU time" if o["device"] == "cpu" else "wall time"
            key = "cpu" if o["device"] == "cpu" else "wall"
            out.append(f"| mode ({o['params_M']:.0f}M-param SD 1.5 UNet, {o['device'].upper()} {o['dtype']}, "
                       f"{o['latent']}x{o['latent']} latents, CFG batch 2) | wall s/step | {judged} s/step | "
                       f"ratio ({judged}, median) | per-round range | extra peak MB |")
            out.append("|---|---|---|---|---|---|")
            for m, d in o["modes"].items():
                lo, hi = d[f"{key}_ratio_range"]
                out.append(f"| {LABELS.get(m, m)} | {d['median_wall_s']:.2f} | {d[f'median_{key}_s']:.2f} | "
                           f"**{d[f'{key}_ratio']:.2f}x** | {lo:.2f}-{hi:.2f} | {d['extra_peak_bytes'] / 2**20:.1f} |")
            out.append("")
            load = fp["machine"].get("loadavg_at_start")
            ebcu = o["modes"].get("EBCU", {}).get(f"{key}_ratio")
            target = overhead_targets().get(o["device"])
            verdict = (f" EBCU target <= {target:.2f}x ({judged}): {'met' if ebcu <= target else 'NOT met'}."
                       if ebcu is not None and target else "")
            load = f", load average {load[0]:.1f} at the start" if load else ""
            env = fp["machine"].get("env", {})
            load += "".join(f", {k}={v}" for k, v in env.items() if k.startswith("OMP_"))
            out.append(f"n = {o['rounds']} interleaved rounds after 1 warm-up round, {o['threads']} thread(s), "
                       f"{fp['date_utc']}{load}, torch {fp['versions']['torch']}, diffusers "
                       f"{fp['versions']['diffusers']} (`{fp['command']}`; all rounds in `docs/{out_path(dev).name}`)."
                       f"{verdict}")
            out.append("")
        if "trace_memory" in parts:
            t = parts["trace_memory"]["result"]
            mb = lambda b: f"{b / 2**20:.1f} MiB"  # noqa: E731
            out.append(f"Recorder memory at {t['image_px']} px ({t['device']} {t['dtype']}, {t['steps']} steps, CFG, "
                       f"{t['layers']} layers, map grid {t['map_grid'][0]}x{t['map_grid'][1]}): "
                       f"`ev.estimate_bytes(pipe, num_steps={t['steps']}, height={t['image_px']}, "
                       f"width={t['image_px']})` = **{mb(t['estimate_bytes'])}** before sampling, "
                       f"`tr.nbytes` after the run = **{mb(t['stored_bytes'])}** "
                       f"(estimate / stored = {t['estimate_over_stored']:.3f}); the process's peak resident "
                       f"memory grew {mb(t['extra_peak_rss_bytes'])} more in the traced run than in the same "
                       f"vanilla run (one run each after a warm-up; peak growth {mb(t['vanilla']['peak_rss_growth_bytes'])}"
                       f" vanilla, {mb(t['traced']['peak_rss_growth_bytes'])} traced; resident memory after minus "
                       f"before the run, trace alive: {mb(t['vanilla']['rss_retained_bytes'])} vanilla, "
                       f"{mb(t['traced']['rss_retained_bytes'])} traced: the allocator's noise is of that size). "
                       f"Estimate for 50 steps: {mb(t['estimate_50_steps_bytes'])}."
                       + (f" Device memory peak: vanilla {mb(t['vanilla']['cuda_peak_growth_bytes'])}, traced "
                          f"{mb(t['traced']['cuda_peak_growth_bytes'])}." if "cuda_peak_growth_bytes" in t["traced"] else ""))
            out.append("")
    vs = DOCS / "benchmarks_vs_original_ebca.json"
    if vs.exists():
        out.append(render_vs_original(json.loads(vs.read_text())))
    return "\n".join(out).rstrip() + "\n"


def render_vs_original(data: dict) -> str:
    r, fp = data["result"], data["fingerprint"]
    layout = "SD 1.5 layout" if r["size"] == "sd15" else "the fidelity fixtures' small layout"
    o, e = r["original"], r["ebca_viz"]
    return (f"Against the original EBCA code (commit `{fp['reference_commit'][:7]}`, its `EnergyUNet2DConditionModel` on "
            f"diffusers {fp['reference_versions']['diffusers']}, own virtual environment, server process) with the same "
            f"weights and inputs ({layout}, {r['params'] / 1e6:.0f}M parameters, {r['latent']}x{r['latent']} latents, "
            f"CFG batch 2, gamma_attn = {r['gamma_attn']:g}, gamma_norm = {r['gamma_norm']:g}, CPU fp32, "
            f"{r['threads']} thread(s)): noise predictions differ by at most **{r['max_abs_diff']:.2g}** "
            f"(max |eps| {r['max_abs_eps']:.2g}; EBCU itself moves them by {r['max_abs_effect_vs_vanilla']:.2g}), "
            f"{'within' if r['agree'] else 'NOT within'} atol = rtol = {r['tol']:g}. One EBCU step, median of "
            f"{r['rounds']} interleaved rounds after a warm-up, timed inside each process: original "
            f"{o['median_cpu_s']:.2f} s, ebca_viz {e['median_cpu_s']:.2f} s CPU time: ebca_viz / original = "
            f"**{r['cpu_ratio']:.2f}x** (per-round {r['cpu_ratio_range'][0]:.2f}-{r['cpu_ratio_range'][1]:.2f}; "
            f"wall {r['wall_ratio']:.2f}x) ({fp['date_utc']}, `{fp['command']}`)."
            + (f" Run note: {fp['machine']['note']}." if fp["machine"].get("note") else "") + "\n")


def overhead_targets() -> dict:
    import overhead

    return overhead.TARGETS


def load_docs() -> dict:
    found = {}
    for p in sorted(DOCS.glob("benchmarks_full_size*.json")):
        dev = "cpu" if p.stem == "benchmarks_full_size" else p.stem[len("benchmarks_full_size_"):]
        found[dev] = json.loads(p.read_text())
    return found


def readme_block(text: str) -> str:
    if BEGIN not in text or END not in text:
        raise ValueError(f"README has no {BEGIN!r} ... {END!r} block")
    return text[text.index(BEGIN) + len(BEGIN):text.index(END)].strip("\n") + "\n"


def update_readme() -> None:
    text = README.read_text()
    new = render(load_docs())
    readme_block(text)  # raises if the markers are missing
    text = text[:text.index(BEGIN) + len(BEGIN)] + "\n" + new + text[text.index(END):]
    tmp = README.with_name(f".README.md.{os.getpid()}.tmp")
    tmp.write_text(text)
    os.replace(tmp, README)
    print(f"README block rewritten from {', '.join(sorted(load_docs()))} JSON")


def main(argv=None):
    argv = sys.argv[1:] if argv is None else list(argv)
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--parts", default=",".join(PARTS), help=f"comma-separated among {','.join(PARTS)}")
    ap.add_argument("--rounds", type=int, default=5, help="interleaved rounds of the overhead part (>= 5 for the README)")
    ap.add_argument("--latent", type=int, default=None, help="latent side (default 64 = 512 px; 8 with --tiny)")
    ap.add_argument("--steps", type=int, default=2, help="sampling steps of the trace-memory runs")
    ap.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's)")
    ap.add_argument("--note", default="", help="free text stored in the fingerprint (e.g. 'shared machine')")
    ap.add_argument("--out", default=None, help="JSON to write/merge (default docs/benchmarks_full_size[_<device>].json)")
    ap.add_argument("--tiny", action="store_true", help="the tiny test model (smoke test; nothing written unless --out)")
    ap.add_argument("--readme", action="store_true", help="only regenerate the README table from docs/ JSON")
    args = ap.parse_args(argv)
    if args.readme:
        update_readme()
        return 0
    parts = [p.strip() for p in args.parts.split(",") if p.strip()]
    bad = [p for p in parts if p not in PARTS]
    if bad or not parts:
        ap.error(f"--parts: unknown {bad}; choose among {','.join(PARTS)}")
    if args.rounds < 1:
        ap.error("--rounds must be >= 1")
    if args.threads:
        torch.set_num_threads(args.threads)
    args.latent = args.latent or (8 if args.tiny else 64)
    out = Path(args.out) if args.out else (None if args.tiny else out_path(args.device))
    data = json.loads(out.read_text()) if out is not None and out.exists() else {"parts": {}}
    for part in parts:
        fp = fingerprint(args, argv)
        print(f"== {part}: {fp['model']}, {args.device}, latents {args.latent}x{args.latent}, "
              f"{torch.get_num_threads()} thread(s)", flush=True)
        res = run_overhead(args) if part == "overhead" else run_trace_memory(args)
        data["parts"][part] = {"fingerprint": fp, "result": res}
        if out is not None:  # after each part: a crash later keeps what was measured
            # re-read first: another run may have written other parts meanwhile (parts run as separate jobs)
            now = json.loads(out.read_text()) if out.exists() else {"parts": {}}
            now["parts"][part] = data["parts"][part]
            write_json_atomic(out, now)
            print(f"wrote {out}", flush=True)
    return data


if __name__ == "__main__":
    if os.environ.get("MALLOC_MMAP_THRESHOLD_") is None and sys.platform.startswith("linux"):
        os.execve(sys.executable, [sys.executable, *sys.argv], {**os.environ, "MALLOC_MMAP_THRESHOLD_": "65536"})
    main()
    sys.exit(0)
