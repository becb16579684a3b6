"""``python -m ebca_viz synedit``: see :mod:`ebca_viz.tasks.cli`."""
from ..cli import add_synedit_arguments as add_arguments, run_synedit as run

__all__ = ["add_arguments", "run"]
