r"""The memory budget of a trace: host bytes are reserved *before* anything is allocated.

A trace stores everything on the CPU. Each item (one step's energies, one step's maps,
the per-layer running sums, ...) is reserved here with its exact size
``prod(shape) * itemsize`` before its buffer exists. When the reservation would take the
total over ``budget_bytes``:

* ``on_budget="error"``: :class:`TraceBudgetError` is raised, naming ``budget_bytes`` and
  the ways to shrink the record -- nothing has been allocated for that item, so this is
  never an out-of-memory crash;
* ``on_budget="drop"``: the item is not stored, and neither is any later item (the record
  stays a complete prefix of the run); what was dropped is listed in :attr:`Budget.dropped`.
"""
from __future__ import annotations

import math
from typing import Optional
from ..errors import InvalidSetting, InvalidType, StateError

ON_BUDGET = ("error", "drop")
DEFAULT_BUDGET = 256 * 2**20  # 256 MiB


def default_trace_bytes(layers: int, tokens: int, map_grid: tuple, steps: int, latent_hw: tuple,
                        images: int = 1) -> int:
    r"""Host bytes of a trace with the default quantities (``maps, energies, context_norms, guidance``; no SEG),
    ``L`` = ``layers`` recorded text layers, ``N`` = ``tokens``, ``G = H W`` = the map grid, ``S`` = ``steps``
    recorded denoiser calls, ``B`` = ``images``, ``(h, w)`` = ``latent_hw`` (the grid of the guidance maps), all fp32::

        fixed    = 4 L (B N G + 1)                                   per-layer map sums + counts
        per step = 4 (2 B h w  +  8 L B  +  3 L B N  +  B N G  +  1)  guidance, energies, norms, step map sum + count
        total    = fixed + S * per step

    (the same sum as :meth:`ebca_viz.tracing.trace_data.TraceStorage.bytes_for`; ``tests/test_dit_trace.py``
    checks it against what a trace stores).
    """
    L, N, B, G = int(layers), int(tokens), int(images), math.prod(map_grid)
    h, w = latent_hw
    fixed = 4 * L * (B * N * G + 1)
    per_step = 4 * (2 * B * h * w + 8 * L * B + 3 * L * B * N + B * N * G + 1)
    return fixed + int(steps) * per_step


#: FLUX.1 (dev or schnell layout) at 1024 x 1024, 28 steps, one image, the default trace: every one of its
#: 19 double-stream + 38 single-stream layers, the 512 T5 positions, the token grid 64 x 64 (VAE factor 8,
#: 2x2 packing) and the maps on the default 32 x 32 grid. The layer maps and contexts are off by default.
FLUX_1024 = dict(layers=19 + 38, tokens=512, map_grid=(32, 32), steps=28, latent_hw=(64, 64), images=1)
#: its size: 189,032,660 bytes = 180.3 MiB, under the default budget (256 MiB)
FLUX_1024_DEFAULT_BYTES = default_trace_bytes(**FLUX_1024)


class TraceBudgetError(StateError):
    """A trace would exceed its ``budget_bytes``."""


def mib(n: float) -> str:
    return f"{n / 2**20:.1f} MiB"


def check_budget_args(budget_bytes, on_budget) -> Optional[int]:
    if budget_bytes is not None:
        if isinstance(budget_bytes, bool) or not isinstance(budget_bytes, (int, float)):
            raise InvalidType(f"budget_bytes must be a number of bytes (or None for no limit), got {budget_bytes!r}")
        if not math.isfinite(budget_bytes) or budget_bytes <= 0:
            raise InvalidSetting(f"budget_bytes must be a positive number of bytes (or None for no limit), got {budget_bytes!r}")
        budget_bytes = int(budget_bytes)
    if on_budget not in ON_BUDGET:
        raise InvalidSetting(f"on_budget must be one of {ON_BUDGET}, got {on_budget!r}")
    return budget_bytes


FIX = (
    "raise budget_bytes=..., or record less: fewer quantities= (the large ones are 'layer_maps' and "
    "'contexts'), fewer layers= or steps=, a coarser map_grid=, or pass on_budget='drop' to keep what fits"
)


class Budget:
    """Byte accounting for one trace."""

    def __init__(self, budget_bytes: Optional[int], on_budget: str):
        self.limit = budget_bytes
        self.on_budget = on_budget
        self.used = 0
        self.full = False
        self.dropped: list = []  # [{"step": int|None, "item": str, "bytes": int}]

    def fits(self, nbytes: int) -> bool:
        return self.limit is None or self.used + nbytes <= self.limit

    def check_projection(self, nbytes: int, what: str) -> None:
        """Raise (in ``"error"`` mode) if a whole run's projected storage cannot fit."""
        if self.on_budget == "error" and not self.fits(nbytes):
            raise TraceBudgetError(
                f"trace: {what} needs {mib(nbytes)} on the host, over budget_bytes={self.limit} "
                f"({mib(self.limit)}; {mib(self.used)} already used). Nothing was allocated. Fix: {FIX}"
            )

    def reserve(self, nbytes: int, item: str, step: Optional[int]) -> bool:
        """Reserve ``nbytes`` for ``item``; ``False`` means: do not store it (drop mode)."""
        if not self.full and self.fits(nbytes):
            self.used += nbytes
            return True
        if self.on_budget == "error":
            where = f" for step {step}" if step is not None else ""
            raise TraceBudgetError(
                f"trace: storing {item}{where} needs {mib(nbytes)} more, over budget_bytes={self.limit} "
                f"({mib(self.limit)}; {mib(self.used)} already used). Nothing was allocated. Fix: {FIX}"
            )
        self.full = True
        self.dropped.append({"step": step, "item": item, "bytes": int(nbytes)})
        return False
