"""The recorder behind :func:`ebca_viz.trace` (the function keeps the short name; this package is
``ebca_viz.tracing``), one file per job:

* :mod:`~ebca_viz.tracing.recorder` -- the observer: hooks, recording processor, what is recorded;
* :mod:`~ebca_viz.tracing.filters` -- which layers, steps and quantities;
* :mod:`~ebca_viz.tracing.quantities` -- maps on a common grid (a layer call's energies are :mod:`ebca_viz.energy`'s);
* :mod:`~ebca_viz.tracing.trace_data` -- the stored tensors (:class:`TraceStorage`, under :mod:`~ebca_viz.tracing.budget`)
  and :class:`Trace`: maps, energies, context norms, drift, trajectories, guidance maps (:meth:`Trace.guidance`: where CFG and SEG act, per step and latent pixel);
* :mod:`~ebca_viz.tracing.files` -- a trace file (safetensors + JSON), written and checked; :func:`load_trace` is in ``trace_data``;
* :mod:`~ebca_viz.tracing.html` -- a trace as one HTML page; :mod:`~ebca_viz.tracing.explore` -- its command.
"""
from .budget import TraceBudgetError
from .trace_data import Trace, load_trace
from .files import TraceFileError
from .filters import QUANTITIES
from ..energy import layer_energies, self_attention_energy
from .recorder import Recorder, estimate_bytes, trace

__all__ = ["Trace", "Recorder", "trace", "load_trace", "TraceFileError", "estimate_bytes", "TraceBudgetError",
           "QUANTITIES", "layer_energies", "self_attention_energy"]
