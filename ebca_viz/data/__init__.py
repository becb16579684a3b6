"""Data shipped with ebca_viz (the Attend-and-Excite prompt sets used by the EBCA paper)."""
from __future__ import annotations

import json
from importlib import resources


def load_ae_prompts() -> dict[str, list[str]]:
    """Attend-and-Excite prompt sets: ``{"animals": [...], "animals_objects": [...], "objects": [...]}``."""
    return json.loads(resources.files(__package__).joinpath("ae_prompts.json").read_text())
