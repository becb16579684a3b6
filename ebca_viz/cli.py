"""Command line: ``python -m ebca_viz <command> ...`` (also installed as ``ebca-viz``).

One table, :data:`COMMANDS`: name -> (module, its ``add_arguments``-style function, its ``run``-style
function, one-line help). A command's module is imported only when the parser is built or it runs.
"""
from __future__ import annotations

import argparse
import importlib
import sys

_T, _E = "ebca_viz.tasks.cli", "ebca_viz.eval.cli"
COMMANDS: dict[str, tuple[str, str, str, str]] = {
    "demo": ("ebca_viz.demo", "add_arguments", "run",
             "vanilla vs EBCU from the same seed: images, an energy plot and a JSON summary"),
    "multiconcept": (_T, "add_multiconcept_arguments", "run_multiconcept",
                     "multi-concept text-to-image with EBCU and token up-weighting"),
    "synedit": (_T, "add_synedit_arguments", "run_synedit", "synthetic-image editing: EBCU + EBCQ editorial prompts"),
    "realedit": (_T, "add_realedit_arguments", "run_realedit", "real-image editing: DDIM inversion, then EBCQ edits"),
    "inpaint": (_T, "add_inpaint_arguments", "run_inpaint",
                "text-guided inpainting with masked EBCU (SD inpainting or RePaint)"),
    "seg": (_T, "add_seg_arguments", "run_seg",
            "smoothed energy guidance sampling (SD 1.x/2.x, SDXL), with or without CFG"),
    "sweep": (_E, "add_sweep_arguments", "run_sweep",
              "prompts x seeds x settings, one JSON per job, resumable, accelerate-able"),
    "evaluate": (_E, "add_evaluate_arguments", "run_evaluate", "aggregate a sweep: mean +- standard error per setting"),
    "explore": ("ebca_viz.tracing.explore", "add_explore_arguments", "run_explore",
                "a saved trace as one self-contained HTML page (opens in a browser, no kernel, no network)"),
    "gallery": ("ebca_viz.gallery", "add_arguments", "run",
                "the explainer's figures as small PNGs (docs/gallery for the README)"),
}


def _function(name: str, which: int):
    mod, *fns = COMMANDS[name][:3]
    return getattr(importlib.import_module(mod), fns[which])


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m ebca_viz", description=__doc__.splitlines()[0])
    sub = p.add_subparsers(dest="command", metavar="command")
    for name, (*_, help_) in COMMANDS.items():
        sp = sub.add_parser(name, help=help_, description=help_)
        _function(name, 0)(sp)
    return p


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help()
        return 2
    from .errors import EbcaVizError

    try:
        return int(_function(args.command, 1)(args) or 0)
    except EbcaVizError as e:  # the package's own errors (ebca_viz.errors): one clear line, exit code 2
        print(f"error: {e}", file=sys.stderr)
        return 2
    # anything else (a library's error, a bug) propagates and Python prints its traceback
