"""``python -m ebca_viz seg``: see :mod:`ebca_viz.tasks.cli`."""
from ..cli import add_seg_arguments as add_arguments, run_seg as run

__all__ = ["add_arguments", "run"]
