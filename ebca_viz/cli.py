"""Command line: ``python -m ebca_viz <command> ...`` (also installed as ``ebca-viz``).

Each command lives in its own module exposing ``add_arguments(parser)`` and ``run(args) -> int``;
register it in :data:`COMMANDS` (name -> (module path, one-line help)).
"""
from __future__ import annotations

import argparse
import importlib
import sys

COMMANDS: dict[str, tuple[str, str]] = {
    "demo": ("ebca_viz.demo", "vanilla vs EBCU from the same seed: images, an energy plot and a JSON summary"),
    "multiconcept": ("ebca_viz.tasks.commands.multiconcept", "multi-concept text-to-image with EBCU and token up-weighting"),
    "synedit": ("ebca_viz.tasks.commands.synedit", "synthetic-image editing: EBCU + EBCQ editorial prompts"),
    "realedit": ("ebca_viz.tasks.commands.realedit", "real-image editing: DDIM inversion, then EBCQ edits"),
    "inpaint": ("ebca_viz.tasks.commands.inpaint", "text-guided inpainting with masked EBCU (SD inpainting or RePaint)"),
    "seg": ("ebca_viz.tasks.commands.seg", "smoothed energy guidance sampling (SD 1.x/2.x, SDXL), with or without CFG"),
    "sweep": ("ebca_viz.eval.commands.sweep", "prompts x seeds x settings, one JSON per job, resumable, accelerate-able"),
    "evaluate": ("ebca_viz.eval.commands.evaluate", "aggregate a sweep: mean +- standard error per setting"),
    "gallery": ("ebca_viz.gallery", "the explainer's figures as small PNGs (docs/gallery for the README)"),
}


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m ebca_viz", description=__doc__.splitlines()[0])
    sub = p.add_subparsers(dest="command", metavar="command")
    for name, (mod, help_) in COMMANDS.items():
        sp = sub.add_parser(name, help=help_, description=help_)
        importlib.import_module(mod).add_arguments(sp)
        sp.set_defaults(_module=mod)
    return p


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help()
        return 2
    from .errors import is_user_error

    try:
        return int(importlib.import_module(args._module).run(args) or 0)
    except (ValueError, TypeError, FileNotFoundError) as e:
        if not is_user_error(e):  # raised inside a library or by a failing operation: a bug, keep the traceback
            raise
        print(f"error: {e}", file=sys.stderr)  # the package's own validation: one clear line
        return 2
