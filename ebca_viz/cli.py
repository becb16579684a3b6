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
    try:
        return int(importlib.import_module(args._module).run(args) or 0)
    except (ValueError, TypeError, FileNotFoundError) as e:  # user errors: one clear line, no traceback
        print(f"error: {e}", file=sys.stderr)
        return 2
