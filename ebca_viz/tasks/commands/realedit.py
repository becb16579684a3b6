"""``python -m ebca_viz realedit``: see :mod:`ebca_viz.tasks.cli`."""
from ..cli import add_realedit_arguments as add_arguments, run_realedit as run

__all__ = ["add_arguments", "run"]
