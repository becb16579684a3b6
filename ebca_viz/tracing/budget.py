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
