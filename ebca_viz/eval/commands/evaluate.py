"""``python -m ebca_viz evaluate``: see :mod:`ebca_viz.eval.cli`."""
from ..cli import add_evaluate_arguments as add_arguments, run_evaluate as run

__all__ = ["add_arguments", "run"]
