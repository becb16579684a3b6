"""Writes the explainer notebooks (``notebooks/NN_*.ipynb``) with nbformat, outputs stripped.

    python notebooks/build_notebooks.py          # rewrite every notebook
    python notebooks/build_notebooks.py --check  # exit 1 if a committed notebook differs

The notebooks hold the story (markdown with the equations) next to short calls; the logic lives
in ``ebca_viz``. One source file per notebook: ``notebooks/src/nbNN_name.py`` defines ``CELLS``
(``src/common.py`` holds the setup cell). Each one starts with ``MODEL = "shapes-world"  # or "sd15"``: the shapes-world toy
model offline (the random ``tiny`` model when its weights are absent), real Stable Diffusion with
one edit. ``EBCA_VIZ_FAST=1`` makes them use few steps and samples (CI).
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import importlib

import nbformat
from nbformat.v4 import new_notebook

HERE = Path(__file__).resolve().parent
SRC = HERE / "src"


def load_sources() -> dict:
    """``{"00_tour": cells, ...}`` from ``src/nbNN_*.py``, in order."""
    sys.path.insert(0, str(SRC))
    try:
        out = {}
        for f in sorted(SRC.glob("nb[0-9][0-9]_*.py")):
            mod = importlib.import_module(f.stem)
            mod = importlib.reload(mod)
            out[f.stem[2:]] = mod.CELLS
        return out
    finally:
        sys.path.remove(str(SRC))


def build(name: str, cells: list) -> nbformat.NotebookNode:
    nb = new_notebook(cells=cells)
    nb.metadata["kernelspec"] = {"display_name": "Python 3 (ipykernel)", "language": "python", "name": "python3"}
    nb.metadata["language_info"] = {"name": "python"}
    for i, c in enumerate(nb.cells):
        c["id"] = f"{name[:2]}-{i:02d}"
    return nb


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--check", action="store_true", help="fail if a committed notebook is not what this script writes")
    p.add_argument("--out", default=str(HERE))
    args = p.parse_args(argv)
    bad = []
    for name, cells in load_sources().items():
        path = Path(args.out) / f"{name}.ipynb"
        text = nbformat.writes(build(name, cells)) + "\n"
        if args.check:
            if not path.exists() or path.read_text() != text:
                bad.append(path.name)
        else:
            path.write_text(text)
    if bad:
        print("out of date (run python notebooks/build_notebooks.py):", ", ".join(bad))
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
