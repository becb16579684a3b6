"""``python -m ebca_viz sweep``: see :mod:`ebca_viz.eval.cli`."""
from ..cli import add_sweep_arguments as add_arguments, run_sweep as run

__all__ = ["add_arguments", "run"]
