"""Old import path: the BLIP captioner lives in :mod:`ebca_viz.models.captioner` (with every other
model loader). Re-exported so that ``from ebca_viz.eval.captioner import ...`` keeps working."""
from ..models.captioner import BLIP_ID, Captioner, load_captioner  # noqa: F401
