"""``python -m ebca_viz inpaint``: see :mod:`ebca_viz.tasks.cli`."""
from ..cli import add_inpaint_arguments as add_arguments, run_inpaint as run

__all__ = ["add_arguments", "run"]
