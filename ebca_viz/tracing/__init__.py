"""The recorder behind :func:`ebca_viz.trace` (the function keeps the short name; this package is
``ebca_viz.tracing``). See :mod:`ebca_viz.tracing.recorder` for what is recorded."""
from .budget import TraceBudgetError
from .filters import QUANTITIES
from .recorder import Trace, TraceFileError, estimate_bytes, layer_energies, load_trace, self_attention_energy, trace

__all__ = ["Trace", "trace", "load_trace", "TraceFileError", "estimate_bytes", "TraceBudgetError", "QUANTITIES",
           "layer_energies", "self_attention_energy"]
