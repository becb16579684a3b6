"""``python -m ebca_viz``: see :mod:`ebca_viz.cli`."""
import sys

from .cli import main

if __name__ == "__main__":
    sys.exit(main())
