"""Run the notebooks in full mode and time every cell: the numbers behind notebooks/README.md.

    python benchmarks/notebook_times.py                       # every notebook, full mode
    python benchmarks/notebook_times.py 00 01 --fast          # a few, fast mode (CI settings)

Writes ``docs/notebook_times.json`` (atomically, with a fingerprint of the notebooks' sources and the
machine's load while it ran), saves the executed notebooks under ``outputs/notebooks/`` and every
figure they show as ``outputs/notebooks/NN_figK.png`` (to look at, as a student would), and prints
a table: per notebook the total cell time, the slowest cell and whether it is under the 60 s limit.
"""
from __future__ import annotations

import argparse
import base64
import hashlib
import json
import os
import platform
import sys
import time
from datetime import datetime, timezone
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
NB = ROOT / "notebooks"
CELL_LIMIT_S = 60.0
SERIES_LIMIT_S = 600.0


def _seconds(cell) -> float:
    ex = cell.get("metadata", {}).get("execution", {})
    a, b = ex.get("iopub.execute_input"), ex.get("shell.execute_reply")
    if not (a and b):
        return 0.0
    p = lambda s: datetime.fromisoformat(s.replace("Z", "+00:00"))  # noqa: E731
    return (p(b) - p(a)).total_seconds()


def run_one(path: Path, out_dir: Path, timeout: int) -> dict:
    import nbclient
    import nbformat

    book = nbformat.read(path, as_version=4)
    load0 = os.getloadavg()[0]
    t0 = time.perf_counter()
    error = None
    try:
        nbclient.NotebookClient(book, timeout=timeout, kernel_name="python3",
                                resources={"metadata": {"path": str(NB)}}).execute()
    except Exception as e:  # a failing notebook is reported (and fails the run), the others still run
        error = f"{type(e).__name__}: " + str(e).strip().splitlines()[-1][:300]
    wall = time.perf_counter() - t0
    out_dir.mkdir(parents=True, exist_ok=True)
    nbformat.write(book, out_dir / path.name)
    cells, k = [], 0
    for i, c in enumerate(book.cells):
        if c.cell_type != "code":
            continue
        first = next((ln for ln in c.source.splitlines() if ln.strip() and not ln.startswith("#")), "")[:70]
        cells.append({"index": i, "seconds": round(_seconds(c), 2), "first_line": first})
        for o in c.get("outputs", []):
            png = o.get("data", {}).get("image/png")
            if png:
                k += 1
                (out_dir / f"{path.stem[:2]}_fig{k}.png").write_bytes(base64.b64decode(png))
    total = sum(c["seconds"] for c in cells)
    slow = max(cells, key=lambda c: c["seconds"]) if cells else {"seconds": 0.0, "first_line": ""}
    return {"notebook": path.name, "error": error, "total_s": round(total, 1), "wall_s": round(wall, 1), "figures": k,
            "slowest_s": slow["seconds"], "slowest_cell": slow["first_line"], "cells": cells,
            "load_before": round(load0, 2), "load_after": round(os.getloadavg()[0], 2)}


def fingerprint(paths) -> str:
    h = hashlib.sha256()
    for p in paths:
        h.update(p.name.encode())
        h.update(p.with_suffix(".py").read_bytes() if p.with_suffix(".py").exists() else p.read_bytes())
    return h.hexdigest()[:16]


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("only", nargs="*", help="notebook numbers (e.g. 00 07); default: all")
    ap.add_argument("--fast", action="store_true", help="EBCA_VIZ_FAST=1 (CI settings)")
    ap.add_argument("--out", default=str(ROOT / "docs" / "notebook_times.json"))
    ap.add_argument("--timeout", type=int, default=600, help="per-cell timeout (s)")
    args = ap.parse_args(argv)
    os.environ["EBCA_VIZ_FAST"] = "1" if args.fast else ""
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ["PYTHONPATH"] = str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", "")
    paths = sorted(NB.glob("[0-9][0-9]_*.ipynb"))
    if args.only:
        paths = [p for p in paths if p.name[:2] in args.only]
        if not paths:
            ap.error(f"no notebook numbered {args.only} in {NB}")
    out_dir = ROOT / "outputs" / "notebooks"
    try:
        from tqdm import tqdm
    except ImportError:  # pragma: no cover
        tqdm = lambda x, **k: x  # noqa: E731
    rows = [run_one(p, out_dir, args.timeout) for p in tqdm(paths, desc="notebooks", unit="nb")]
    series = sum(r["total_s"] for r in rows)
    result = {"mode": "fast" if args.fast else "full", "series_total_s": round(series, 1),
              "cell_limit_s": CELL_LIMIT_S, "series_limit_s": SERIES_LIMIT_S,
              "all_cells_under_limit": all(r["slowest_s"] <= CELL_LIMIT_S for r in rows),
              "errors": {r["notebook"]: r["error"] for r in rows if r["error"]},
              "machine": {"cpus": os.cpu_count(), "platform": platform.platform(), "python": sys.version.split()[0],
                          "omp_num_threads": os.environ.get("OMP_NUM_THREADS", "")},
              "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
              "fingerprint": fingerprint(paths), "notebooks": rows}
    out = Path(args.out)
    if args.only:
        out = out.with_name(out.stem + "_partial.json")
    tmp = out.with_suffix(".tmp")
    tmp.write_text(json.dumps(result, indent=1) + "\n")
    tmp.replace(out)
    print(f"{'notebook':34s} {'cells s':>8s} {'slowest s':>10s}  figures  load  slowest cell")
    for r in rows:
        flag = ("" if r["slowest_s"] <= CELL_LIMIT_S else "  OVER 60 s") + (f"  FAILED: {r['error']}" if r["error"] else "")
        print(f"{r['notebook']:34s} {r['total_s']:8.1f} {r['slowest_s']:10.1f}  {r['figures']:7d}  "
              f"{r['load_before']:4.1f}  {r['slowest_cell'][:40]}{flag}")
    print(f"series: {series:.1f} s of cell time ({series / 60:.1f} min; limit {SERIES_LIMIT_S / 60:.0f} min); written {out}")
    return 0 if not result["errors"] and result["all_cells_under_limit"] and (args.fast or args.only or series <= SERIES_LIMIT_S) else 1


if __name__ == "__main__":
    sys.exit(main())
