r"""The preregistered comparison (docs/preregistration.md): vanilla / EBCU / EBCU + up-weighting / A&E.

    # tuning split: run the grid, pick each method's setting by the preregistered rule
    OMP_NUM_THREADS=1 python benchmarks/neglect_comparison.py --model neglect-world --split tune --select
    # report split (only after docs/preregistration.md is committed without DRAFT):
    OMP_NUM_THREADS=1 python benchmarks/neglect_comparison.py --model neglect-world --split report
    # several processes (each takes its share of the jobs; the main one writes the table):
    OMP_NUM_THREADS=1 torchrun --nproc_per_node 2 benchmarks/neglect_comparison.py --model shapes-world --split report
    accelerate launch --multi_gpu --num_processes 4 benchmarks/neglect_comparison.py ...   # GPUs
    # one session at a time: stop after 300 jobs, rerun the same command later to go on
    ... --max-jobs 300

Every image is one job of the sweep engine (:func:`ebca_viz.eval.sweep.run_sweep`): one JSON + PNG
per (method, sample) under ``--out``, written atomically; a rerun skips finished jobs, so an
interrupted run resumes without recomputing them (a result made with other weights, steps or
settings is refused, not reused). Samples: two-object sample ``k`` is prompt ``k mod 48`` of the
world's two-object report prompts with seed ``SEEDS[split] + k``; single-object sample ``k`` is
prompt ``k mod 12`` with seed ``SEEDS[split] + SINGLE_OFFSET + k``; all methods share each sample's
seed (paired design).

Aggregation re-runs the detector (:func:`ebca_viz.shapes.detect.detect`, ``score_pair`` /
``score_single``) on the saved PNGs, so the table always uses the detector of the code commit in its
fingerprint. Per method: n, the rate of every verdict that appears (``unsure`` its own column) and
of ``extra`` with the Wilson 95 % interval, the paired difference (same seeds, t interval) of
both-present and missing to vanilla and to A&E, single-object accuracy likewise, and seconds per
image (median of this run's jobs). Written atomically with a fingerprint (weights sha256, settings,
seeds, code commit) to ``docs/neglect_comparison_<model>.json`` / ``.md`` (report split) or
``docs/neglect_tuning_<model>.json`` / ``.md`` (tuning split, with the selection).
"""
from __future__ import annotations

import argparse
import hashlib
import json
import os
import subprocess
import sys
import time
import uuid
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

MODELS = ("shapes-world", "neglect-world")
SEEDS = {"tune": 1_000_000, "report": 2_000_000}  # never used before this benchmark (docs/preregistration.md)
SINGLE_OFFSET = 500_000
N_DEFAULT = {("tune", "shapes-world"): 96, ("tune", "neglect-world"): 96,
             ("report", "shapes-world"): 192, ("report", "neglect-world"): 480}
N_SINGLE_DEFAULT = {"tune": 0, "report": 96}
STEPS, GUIDANCE = 25, 3.0  # the worlds' regime (ebca_viz/shapes/regime.py): DDIM 25 steps, CFG 3

# ---- the preregistered grid ---------------------------------------------------------------------
EBCU_GAMMAS = (0.1, 0.3, 1.0)  # gamma_attn = gamma_norm
UPWEIGHTS = (1.5, 2.5, 4.0)  # on the object nouns (token_indices=objects), at the chosen EBCU gammas
METHODS = ("vanilla", "EBCU", "EBCU + up-weight", "A&E")


def _tag(x: float) -> str:
    return f"{x:g}".replace(".", "p").replace("-", "m")


def ebcu_spec(g: float) -> str:
    return f"ebcu-g{_tag(g)}:gamma_attn={g:g},gamma_norm={g:g}"


def upweight_spec(g: float, w: float) -> str:
    return f"ebcuw-g{_tag(g)}-w{_tag(w)}:gamma_attn={g:g},gamma_norm={g:g},token_indices=objects,token_upweight={w:g}"


AE_SPEC = "ae"  # diffusers' defaults; attn_res from the UNet, token_indices=objects


def method_of(label: str) -> str:
    from ebca_viz.eval.sweep import is_ae_name

    if label == "vanilla":
        return "vanilla"
    if is_ae_name(label):
        return "A&E"
    return "EBCU + up-weight" if label.startswith("ebcuw") else "EBCU"


def step_key(spec: str) -> tuple:
    """Tie-break of the selection rule: the smaller step first (gamma_attn, then up-weight)."""
    from ebca_viz.eval.sweep import parse_setting

    kw = parse_setting(spec).kwargs
    return (kw.get("gamma_attn", 0.0), (kw.get("token_upweight") or [0.0])[0])


# ---- samples and jobs ---------------------------------------------------------------------------
def samples(split: str, n_pair: int, n_single: int) -> list:
    """``[(prompt_set, index, prompt, seed), ...]``: two-object then single-object samples."""
    from ebca_viz.shapes import world

    pairs, singles = world.two_object_prompts("report"), world.single_prompts()
    base = SEEDS[split]
    out = [("pairs", k, world.caption_for(list(pairs[k % len(pairs)])), base + k) for k in range(n_pair)]
    out += [("single", k, world.caption_for([singles[k % len(singles)]]), base + SINGLE_OFFSET + k)
            for k in range(n_single)]
    return out


def weights_sha256(pipe) -> str:
    """The package's weights hash (:func:`ebca_viz.experiments.shipped.weights_sha256`), the one
    docs/preregistration.md states for each world."""
    from ebca_viz.experiments.shipped import weights_sha256 as sha

    return sha(pipe)


def code_commit() -> str:
    try:
        head = subprocess.run(["git", "-C", str(ROOT), "rev-parse", "HEAD"], capture_output=True, text=True,
                              check=True).stdout.strip()
        dirty = subprocess.run(["git", "-C", str(ROOT), "status", "--porcelain", "--untracked-files=no"],
                               capture_output=True, text=True).stdout.strip()
        return head + ("-dirty" if dirty else "")
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


def file_sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()[:16]


def results_digest(res: dict) -> str:
    """The file's digest: :func:`ebca_viz.experiments.neglect.digest` (sha256 of the canonical JSON of
    everything but the digest itself)."""
    from ebca_viz.experiments.neglect import digest

    return digest(res)


def atomic_write(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + f".tmp{os.getpid()}")
    tmp.write_text(text)
    os.replace(tmp, path)


def check_preregistration(docs: Path) -> None:
    """The report split runs only once docs/preregistration.md is committed and no longer a DRAFT."""
    pre = ROOT / "docs" / "preregistration.md"
    if not pre.exists():
        raise SystemExit(f"--split report: {pre} does not exist; commit the preregistration first")
    if "DRAFT" in pre.read_text()[:400]:
        raise SystemExit(f"--split report: {pre} is still marked DRAFT; the lead commits the final version "
                         "before any report run (or pass --allow-draft for a dry run to a scratch --out/--docs)")
    r = subprocess.run(["git", "-C", str(ROOT), "log", "-1", "--format=%H", "--", "docs/preregistration.md"],
                       capture_output=True, text=True)
    if not r.stdout.strip():
        raise SystemExit("--split report: docs/preregistration.md is not committed; commit it before the report run")


# ---- aggregation --------------------------------------------------------------------------------
PAIR_ORDER = ("both_present", "missing", "swapped", "wrong_binding", "unsure")
SINGLE_ORDER = ("correct", "wrong", "unsure")


def verdicts(out: Path, jobs) -> dict:
    """``{label: {(prompt_set, index): record}}`` re-detected from the saved PNGs; records:
    ``category``, ``extra`` (pairs), ``seconds``, ``run_id``."""
    import numpy as np
    from PIL import Image

    from ebca_viz.eval.detector import parse_shapes_prompt
    from ebca_viz.eval.sweep import read_result
    from ebca_viz.shapes import detect

    res: dict = {}
    for j in jobs:
        path = out / j.relpath()
        rec = read_result(path) if path.exists() else None
        png = path.with_suffix(".png")
        if rec is None or not png.exists():
            continue
        req = parse_shapes_prompt(j.prompt)
        found = detect.detect(np.asarray(Image.open(png).convert("RGB")))
        if len(req) == 2:
            s = detect.score_pair(tuple(req), found)
            v = dict(category=s["category"], extra=bool(s.get("extra", False)))
        else:
            s = detect.score_single(req[0], found)
            cat = s.get("category") or ("correct" if s["correct"] else "wrong")
            v = dict(category=cat)
        v.update(seconds=rec.get("seconds_sample"), run_id=rec.get("run_id"), threads=rec.get("torch_threads"),
                 prompt=j.prompt, seed=j.seed)
        res.setdefault(j.setting.label, {})[(j.prompt_set, j.index)] = v
    return res


def _rate(flags) -> dict:
    from ebca_viz import claims

    return claims.rate(flags).to_json()


def _paired(a, b) -> dict:
    from ebca_viz import claims

    return claims.paired_diff(a, b).to_json() if len(a) >= 2 else None


def summarize(v: dict, labels: list, keys: list, ref_labels: dict) -> dict:
    """Rates and paired differences over the samples every label has (complete samples only)."""
    import numpy as np

    common = sorted(set.intersection(*[set(v.get(lab, {})) for lab in labels])) if labels else []
    out = {"n_complete": len(common), "methods": {}}
    pair_keys = [k for k in common if k[0] == "pairs"]
    single_keys = [k for k in common if k[0] == "single"]
    cats_pair = [c for c in PAIR_ORDER if c in ("both_present", "missing")
                 or any(v[lab][k]["category"] == c for lab in labels for k in pair_keys)]
    cats_pair += sorted({v[lab][k]["category"] for lab in labels for k in pair_keys} - set(cats_pair))
    cats_single = [c for c in SINGLE_ORDER if c in ("correct",)
                   or any(v[lab][k]["category"] == c for lab in labels for k in single_keys)]
    cats_single += sorted({v[lab][k]["category"] for lab in labels for k in single_keys} - set(cats_single))
    out["pair_categories"], out["single_categories"] = cats_pair, cats_single
    # every sample's verdict per method (same order for every method: the paired design), so that a
    # reader (notebooks 02 and 08) can recompute every rate, re-sample seeds live and pick demo seeds
    smp = {k: v[labels[0]][k] for k in common} if labels else {}
    out["samples"] = [dict(set=k[0], index=k[1], prompt=smp[k].get("prompt"), seed=smp[k].get("seed")) for k in common]
    out["per_sample"] = {lab: [dict(category=v[lab][k]["category"], **({"extra": v[lab][k]["extra"]} if k[0] == "pairs" else {}))
                               for k in common] for lab in labels}
    ind = {}
    v = {lab: v.get(lab, {}) for lab in labels}  # a method with no result yet (an interrupted run): empty
    for lab in labels:
        m = {"label": lab, "method": method_of(lab), "n_pair": len(pair_keys), "n_single": len(single_keys),
             "n_results": len(v[lab])}
        if pair_keys:
            cat = [v[lab][k]["category"] for k in pair_keys]
            m["pair"] = {c: _rate([x == c for x in cat]) for c in cats_pair}
            m["pair"]["extra"] = _rate([v[lab][k]["extra"] for k in pair_keys])
            ind[lab] = {"both_present": np.array([x == "both_present" for x in cat], float),
                        "missing": np.array([x == "missing" for x in cat], float)}
        if single_keys:
            cat = [v[lab][k]["category"] for k in single_keys]
            m["single"] = {c: _rate([x == c for x in cat]) for c in cats_single}
            ind.setdefault(lab, {})["single_correct"] = np.array([x == "correct" for x in cat], float)
        secs = [v[lab][k]["seconds"] for k in v[lab] if v[lab][k]["seconds"] is not None]
        runs = {v[lab][k]["run_id"] for k in v[lab]}
        m["seconds_per_image"] = dict(median=float(np.median(secs)) if secs else None,
                                      mean=float(np.mean(secs)) if secs else None, n=len(secs), runs=len(runs),
                                      threads=sorted({v[lab][k]["threads"] for k in v[lab]} - {None}))
        by_run: dict = {}
        for k in v[lab]:
            if v[lab][k]["seconds"] is not None:
                by_run.setdefault(str(v[lab][k]["run_id"]), []).append(v[lab][k]["seconds"])
        m["seconds_per_image"]["median_by_run"] = {r: dict(median=float(np.median(x)), n=len(x)) for r, x in by_run.items()}
        out["methods"][lab] = m
    van = ref_labels.get("vanilla")
    if van in v:  # cost relative to vanilla on the same sample (same run, same load): median of per-sample ratios
        for lab in labels:
            r = [v[lab][k]["seconds"] / v[van][k]["seconds"] for k in v[lab]
                 if k in v[van] and v[lab][k]["seconds"] and v[van][k]["seconds"] and v[lab][k]["run_id"] == v[van][k]["run_id"]]
            out["methods"][lab]["seconds_per_image"]["x_vanilla"] = float(np.median(r)) if r else None
    for ref_name, ref in ref_labels.items():
        if ref is None or ref not in ind:
            continue
        for lab in labels:
            if lab == ref:
                continue
            out["methods"][lab][f"vs_{ref_name}"] = {k: _paired(ind[lab][k], ind[ref][k]) for k in ind[lab]}
    return out


def _pct(r: dict) -> str:
    return f"{100 * r['p']:.1f} % [{100 * r['lo']:.1f}, {100 * r['hi']:.1f}]"


def _pts(d) -> str:
    return "—" if d is None else f"{100 * d['mean']:+.1f} pts [{100 * d['lo']:+.1f}, {100 * d['hi']:+.1f}]"


def markdown(res: dict) -> str:
    s = res["summary"]
    fp = res["fingerprint"]
    lines = [f"# {res['title']}", "",
             f"Model `{fp['model']}` (weights sha256 `{fp['weights_sha256'][:16]}…`), split `{fp['split']}`, "
             f"DDIM {fp['steps']} steps, CFG {fp['guidance_scale']:g}, two-object seeds "
             f"{fp['seeds']['pairs']}, single-object seeds {fp['seeds']['single']}, code `{fp['code_commit'][:12]}`, "
             f"detector `{fp['detector_sha']}`. Rates with Wilson 95 % intervals; differences are paired "
             f"(same prompt and seed) means with t 95 % intervals. Complete samples: {s['n_complete']} of "
             f"{res['n_samples']}" + ("" if res["complete"] else " (**incomplete run**: rerun the command to resume)")
             + ".", ""]
    labels = list(s["methods"])
    if not res["complete"]:
        lines += ["Results so far: " + ", ".join(f"`{x}` {s['methods'][x]['n_results']}" for x in labels)
                  + f" of {res['n_samples']} each.", ""]
    if any("pair" in s["methods"][x] for x in labels):
        cats = s["pair_categories"] + ["extra"]
        lines += ["## Two-object prompts", "", "| method | setting | n | " + " | ".join(c.replace("_", " ") for c in cats)
                  + " | s / image | x vanilla |", "|" + "---|" * (len(cats) + 5)]
        for lab in labels:
            m = s["methods"][lab]
            sec = m["seconds_per_image"]["median"]
            lines.append(f"| {m['method']} | `{lab}` | {m['n_pair']} | " + " | ".join(_pct(m["pair"][c]) for c in cats)
                         + (f" | {sec:.2f} |" if sec is not None else " | — |")
                         + (f" {m['seconds_per_image']['x_vanilla']:.2f} |" if m["seconds_per_image"].get("x_vanilla")
                            else " — |"))
        lines += ["", "| method | both present vs vanilla | missing vs vanilla | both present vs A&E | missing vs A&E |",
                  "|---|---|---|---|---|"]
        for lab in labels:
            m = s["methods"][lab]
            va, ae = m.get("vs_vanilla", {}), m.get("vs_ae", {})
            lines.append(f"| {m['method']} | {_pts(va.get('both_present'))} | {_pts(va.get('missing'))} | "
                         f"{_pts(ae.get('both_present'))} | {_pts(ae.get('missing'))} |")
    if any("single" in s["methods"][x] for x in labels):
        cats = s["single_categories"]
        lines += ["", "## Single-object prompts", "", "| method | n | " + " | ".join(cats)
                  + " | correct vs vanilla | correct vs A&E |", "|" + "---|" * (len(cats) + 4)]
        for lab in labels:
            m = s["methods"][lab]
            lines.append(f"| {m['method']} | {m['n_single']} | " + " | ".join(_pct(m["single"][c]) for c in cats)
                         + f" | {_pts(m.get('vs_vanilla', {}).get('single_correct'))} | "
                         f"{_pts(m.get('vs_ae', {}).get('single_correct'))} |")
    if res.get("selection"):
        lines += ["", "## Selection (preregistered rule: highest Wilson lower bound of both-present on the tuning "
                      "split; ties -> the smaller step)", "", "| method | chosen setting | both present |", "|---|---|---|"]
        for meth, sel in res["selection"].items():
            bp = sel.get("both_present")
            lines.append(f"| {meth} | `{sel['spec']}` | {_pct(bp) if bp else '—'} |")
    timing = {m["seconds_per_image"]["runs"] for m in s["methods"].values()}
    lines += ["", f"Seconds per image: median wall time of one sampling call (batch 1, torch threads "
                  f"{sorted({t for m in s['methods'].values() for t in m['seconds_per_image']['threads']})}), "
                  f"over the jobs of {max(timing) if timing else 0} run(s); methods interleave sample by sample, so "
                  "they share the machine's load; 'x vanilla' is the median ratio to vanilla on the same sample "
                  "in the same run (robust to load that changes between runs).", ""]
    return "\n".join(lines)


def select(v: dict, specs: list) -> dict:
    """The preregistered rule within each method: highest Wilson lower bound of both-present on the
    tuning split; ties (equal bounds) -> the smaller step (:func:`step_key`)."""
    from ebca_viz.eval.sweep import parse_setting

    best: dict = {}
    for spec in specs:
        lab = parse_setting(spec).label
        meth = method_of(lab)
        if meth == "vanilla" or lab not in v:
            continue
        keys = [k for k in v[lab] if k[0] == "pairs"]
        r = _rate([v[lab][k]["category"] == "both_present" for k in keys])
        cand = (-round(r["lo"], 12), step_key(spec))
        if meth not in best or cand < best[meth]["_key"]:
            best[meth] = dict(spec=spec, label=lab, both_present=r, _key=cand)
    return {m: {k: x for k, x in b.items() if k != "_key"} for m, b in best.items()}


# ---- main ---------------------------------------------------------------------------------------
def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", required=True, help=f"a world: {', '.join(MODELS)} (or any shapes-vocabulary pipeline)")
    p.add_argument("--split", required=True, choices=sorted(SEEDS))
    p.add_argument("--n-pairs", type=int, default=None,
                   help="two-object samples per method (default: the preregistered n; not --n: torchrun would read it)")
    p.add_argument("--n-single", type=int, default=None, help="single-object samples per method")
    p.add_argument("--setting", action="append", default=None,
                   help="sweep setting (repeatable); default: tune = the grid, report = the tuning selection")
    p.add_argument("--select", action="store_true",
                   help="tune split: vanilla + EBCU grid, pick EBCU, then the up-weight grid at it, pick (A&E: defaults)")
    p.add_argument("--with-ae", action="store_true", help="tune split: run A&E (defaults) too, for the record")
    p.add_argument("--steps", type=int, default=STEPS)
    p.add_argument("--guidance", type=float, default=GUIDANCE)
    p.add_argument("--out", default=None, help="job folder (default outputs/neglect_comparison/<model>/<split>)")
    p.add_argument("--docs", default=str(ROOT / "docs"), help="where the table goes")
    p.add_argument("--max-jobs", type=int, default=None, help="stop after this many new jobs (resume later)")
    p.add_argument("--threads", type=int, default=int(os.environ.get("OMP_NUM_THREADS", "1")))
    p.add_argument("--allow-draft", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--no-progress", action="store_true")
    return p.parse_args(argv)


class _Stop(Exception):
    pass


def main(argv=None) -> dict:
    a = parse_args(argv)
    import torch

    from ebca_viz.eval.sweep import paired_jobs, parse_setting, run_sweep
    from ebca_viz.models import load_pipeline

    torch.set_num_threads(a.threads)
    docs = Path(a.docs)
    out = Path(a.out or ROOT / "outputs" / "neglect_comparison" / a.model / a.split)
    n_pair = a.n_pairs if a.n_pairs is not None else N_DEFAULT.get((a.split, a.model), N_DEFAULT[(a.split, "shapes-world")])
    n_single = a.n_single if a.n_single is not None else N_SINGLE_DEFAULT[a.split]
    if a.split == "report":
        if a.select:
            raise SystemExit("--select picks settings on the tuning split only: use --split tune")
        if not a.allow_draft:
            check_preregistration(docs)
    try:
        from accelerate import PartialState

        state = PartialState(cpu=not torch.cuda.is_available())
        device = state.device
    except ImportError:  # pragma: no cover
        state, device = None, torch.device("cpu")
    main_proc = state is None or state.is_main_process
    log = (lambda m: print(f"[{time.strftime('%H:%M:%S')}] {m}", flush=True)) if main_proc else (lambda m: None)
    pipe = load_pipeline(a.model, device=device)
    pipe.set_progress_bar_config(disable=True)
    wsha = weights_sha256(pipe)
    tuning_file = docs / f"neglect_tuning_{a.model}.json"
    selection = None
    if a.setting:
        specs = list(a.setting)
    elif a.split == "tune":
        specs = ["vanilla"] + [ebcu_spec(g) for g in EBCU_GAMMAS] + ([AE_SPEC] if a.with_ae else [])
    else:
        if not tuning_file.exists():
            raise SystemExit(f"--split report needs the tuning selection {tuning_file} (run --split tune --select) "
                             "or explicit --setting arguments")
        tun = json.loads(tuning_file.read_text())
        if not tun.get("complete") or not tun.get("selection") or "EBCU + up-weight" not in tun["selection"]:
            raise SystemExit(f"{tuning_file} is incomplete or has no selection: finish --split tune --select first")
        if tun["fingerprint"]["weights_sha256"] != wsha:
            raise SystemExit(f"{tuning_file} was tuned on other weights ({tun['fingerprint']['weights_sha256'][:16]}… "
                             f"vs {wsha[:16]}…): tune again")
        selection = tun["selection"]
        specs = ["vanilla", selection["EBCU"]["spec"], selection["EBCU + up-weight"]["spec"], AE_SPEC]
    smp = samples(a.split, n_pair, n_single)
    extra_fp = {"weights_sha256": wsha}
    run_id = f"{time.strftime('%Y%m%dT%H%M%S')}-{os.getpid()}-{uuid.uuid4().hex[:8]}"  # two runs in one second differ
    budget = {"left": a.max_jobs, "ran": 0}

    def on_job(_):
        budget["ran"] += 1
        if budget["left"] is not None:
            budget["left"] -= 1
            if budget["left"] <= 0:
                raise _Stop

    counts = {"run": 0, "skipped": 0, "total": 0}
    stopped = False

    def sweep(spec_list):
        nonlocal stopped
        jobs = paired_jobs(smp, spec_list)
        if stopped:
            return jobs
        try:
            c = run_sweep(pipe, jobs, out, steps=a.steps, guidance_scale=a.guidance, model=a.model, state=state,
                          detector=True, save_images=True, progress=not a.no_progress, extra_fingerprint=extra_fp,
                          run_id=run_id, on_job=on_job)
            counts["skipped"] += c["skipped"]
        except _Stop:
            stopped = True
        counts["total"] += len(jobs)
        counts["run"] = budget["ran"]
        if state is not None and getattr(state, "num_processes", 1) > 1:
            state.wait_for_everyone()
        return jobs

    t0 = time.time()
    jobs = sweep(specs)
    if a.split == "tune" and a.select and not a.setting and not stopped:
        v = verdicts(out, jobs)
        sel = select(v, specs)
        g = parse_setting(sel["EBCU"]["spec"]).kwargs["gamma_attn"]
        log(f"EBCU: chose {sel['EBCU']['spec']} (both present {_pct(sel['EBCU']['both_present'])}); "
            f"up-weight grid at gamma {g:g}")
        up_specs = [upweight_spec(g, w) for w in UPWEIGHTS]
        specs = specs + up_specs
        jobs = jobs + sweep(up_specs)
    res = None
    if main_proc:
        v = verdicts(out, jobs)
        labels = [parse_setting(s).label for s in specs]
        ae_label = next((lab for lab in labels if method_of(lab) == "A&E"), None)
        summary = summarize(v, labels, ["both_present", "missing"], {"vanilla": "vanilla", "ae": ae_label})
        if a.split == "tune" and a.select and not stopped:
            selection = select(v, specs)
            selection["A&E"] = dict(spec=AE_SPEC, label="ae", both_present=summary["methods"]["ae"]["pair"]["both_present"]) \
                if "ae" in summary["methods"] else dict(spec=AE_SPEC, label="ae", both_present=None, note="defaults")
            selection = {k: s for k, s in selection.items() if s.get("both_present") is not None}
        from ebca_viz.shapes import detect

        fp = dict(model=a.model, weights_sha256=wsha, split=a.split, steps=a.steps, guidance_scale=a.guidance,
                  settings={parse_setting(s).label: s for s in specs}, n_pair=n_pair, n_single=n_single,
                  seeds=dict(pairs=f"{SEEDS[a.split]}..{SEEDS[a.split] + n_pair - 1}" if n_pair else "none",
                             single=f"{SEEDS[a.split] + SINGLE_OFFSET}..{SEEDS[a.split] + SINGLE_OFFSET + n_single - 1}"
                             if n_single else "none"),
                  code_commit=code_commit(), detector_sha=file_sha(Path(detect.__file__)))
        import ebca_viz

        res = dict(title=("Preregistered comparison" if a.split == "report" else "Tuning split") + f": {a.model}",
                   fingerprint=fp, fingerprint_sha=hashlib.sha256(json.dumps(fp, sort_keys=True).encode()).hexdigest()[:20],
                   version=ebca_viz.__version__, n_samples=len(smp),
                   complete=summary["n_complete"] == len(smp) and not stopped, summary=summary,
                   selection=selection, counts=counts, wall_s=round(time.time() - t0, 1), out=str(out))
        res = json.loads(json.dumps(res, default=str))  # what the file will hold (paths, tuples as JSON has them)
        res["digest"] = results_digest(res)  # over everything else: ebca_viz.experiments.neglect refuses a mismatch
        stem = f"neglect_comparison_{a.model}" if a.split == "report" else f"neglect_tuning_{a.model}"
        atomic_write(docs / f"{stem}.json", json.dumps(res, indent=1, default=str) + "\n")
        atomic_write(docs / f"{stem}.md", markdown(res))
        log(f"{counts['run']} job(s) run, {counts['skipped']} already done (this process); wrote {docs / stem}.json/.md"
            + ("" if res["complete"] else " (incomplete: rerun to resume)"))
        if not a.no_progress:
            print(markdown(res))
    return res if res is not None else {"counts": counts}


if __name__ == "__main__":
    main()
