"""``python -m ebca_viz multiconcept``: see :mod:`ebca_viz.tasks.cli`."""
from ..cli import add_multiconcept_arguments as add_arguments, run_multiconcept as run

__all__ = ["add_arguments", "run"]
