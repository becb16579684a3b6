"""Old import path: the shapes-world loader lives in :mod:`ebca_viz.models.shapes_world` (with every
other model loader). Re-exported so that ``from ebca_viz.shapes.model import ...`` keeps working."""
from ..models.shapes_world import *  # noqa: F401,F403
from ..models.shapes_world import WEIGHTS_DIR, load_components, load_shapes_pipeline, weights_available  # noqa: F401
