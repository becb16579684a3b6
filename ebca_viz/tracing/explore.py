"""``python -m ebca_viz explore TRACE --out PAGE.html``: a saved trace as one self-contained HTML page
(:mod:`ebca_viz.tracing.html` builds the page, :func:`~ebca_viz.tracing.trace_data.load_trace` reads the file)."""
from __future__ import annotations

from pathlib import Path

from ..errors import InvalidSetting
from .trace_data import load_trace
from .html import check_html_path, trace_to_html


def add_explore_arguments(p) -> None:
    p.add_argument("trace", help="a .safetensors trace written by Trace.save")
    p.add_argument("--out", required=True, help="the HTML page to write (its folder must exist)")
    p.add_argument("--image", default=None, help="the final image (PNG/JPEG) to draw beside the maps (optional)")
    p.add_argument("--title", default=None, help="the page's title (default: the trace's file name)")


def run_explore(args) -> int:
    check_html_path(args.out, "--out")  # before any work
    if args.image is not None and not Path(args.image).is_file():
        raise InvalidSetting.of("--image", args.image, "give the path of an image file (PNG, JPEG) or omit --image",
                                 why="not a file")
    tr = load_trace(args.trace)
    trace_to_html(tr, args.out, image=args.image, title=args.title or Path(args.trace).name)
    return 0


__all__ = ["add_explore_arguments", "run_explore"]
