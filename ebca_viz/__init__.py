"""ebca_viz: energy-based attention in text-to-image diffusion, made visible.

Core entry points::

    import ebca_viz as ev
    with ev.energy_attention(pipe, ev.EBCAConfig(gamma_attn=0.01, gamma_norm=0.02)):
        image = pipe("A lion with a crown").images[0]
    with ev.smoothed_energy_guidance(pipe, ev.SEGConfig(scale=3.0, sigma=10.0)):
        image = pipe("a photo of a cat").images[0]
"""
from .config import EBCAConfig, Edit, SEGConfig
from .ebca import (
    CrossAttnEvent,
    EBCAController,
    EnergyCrossAttnProcessor,
    apply_energy_attention,
    energy_attention,
    find_controller,
)
from .schedule import Schedule
from .seg import SEGSelfAttnProcessor, apply_seg, smoothed_energy_guidance
from .tracing import Trace, TraceBudgetError, estimate_bytes, load_trace, trace  # the package is ebca_viz.tracing

__version__ = "0.1.0"

__all__ = [
    "EBCAConfig", "Edit", "SEGConfig", "Schedule", "energy_attention", "apply_energy_attention",
    "smoothed_energy_guidance", "apply_seg", "EBCAController", "EnergyCrossAttnProcessor",
    "SEGSelfAttnProcessor", "CrossAttnEvent", "find_controller",
    "trace", "load_trace", "estimate_bytes", "Trace", "TraceBudgetError",
]
