"""Shapes-world misalignment benchmark (vanilla vs EBCU vs EBCU + token up-weighting).

    python benchmarks/shapes_misalignment.py --n 200 --out outputs/shapes_benchmark

Thin wrapper around ``python -m ebca_viz.shapes.benchmark``; see that module for the options.
"""
import os
import sys

os.environ.setdefault("HF_HUB_OFFLINE", "1")
sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

from ebca_viz.shapes.benchmark import main  # noqa: E402

if __name__ == "__main__":
    main()
