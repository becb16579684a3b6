"""Step schedules for strengths (gamma_attn, gamma_norm, alpha, ...).

A schedule maps a sampling step ``i`` (0 = noisiest, one per UNet call) and the
run length ``T`` (``num_inference_steps``) to a value.

The published EBCA scripts use two schedulers whose single parameter ``tau``
means opposite things: ``reverse_step`` (on for ``i < int(T*tau)``, then off;
used for the main prompt in text-to-image) and ``step`` (off for
``i < int(T*tau)``, then on; used for editing). Here both are one
:meth:`Schedule.window` with explicit ``start``/``stop`` fractions, so the
confusion cannot happen::

    reverse_step(tau)  ==  Schedule.window(g, stop=tau)
    step(tau)          ==  Schedule.window(g, start=tau)

Boundaries follow the published code exactly: active iff
``int(T*start) <= i < int(T*stop)`` (Python ``int`` truncation). Schedulers
such as PNDM call the UNet ``T + 1`` times; step ``T`` is then active only for
a constant schedule, as in the published code; a per-step list with exactly one
value per denoising step reuses its last value for that extra call.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Sequence, Union
from .errors import InvalidSetting, InvalidType


@dataclass(frozen=True)
class Schedule:
    """A value per sampling step. Build with :meth:`constant`, :meth:`window` or :meth:`steps`."""

    kind: str
    value: float = 0.0
    start: float = 0.0
    stop: float = 1.0
    values: tuple = ()

    KINDS = ("constant", "window", "steps")

    def __post_init__(self):
        if self.kind not in self.KINDS:
            raise InvalidSetting(f"Schedule kind must be one of {self.KINDS}, got {self.kind!r}: build one with "
                             "Schedule.constant(v), Schedule.window(v, start=, stop=) or Schedule.steps([...])")
        for nm in ("value", "start", "stop"):
            v = getattr(self, nm)
            if isinstance(v, bool) or not isinstance(v, (int, float)):
                raise InvalidType(f"Schedule {nm} must be a number, got {v!r}")

    @staticmethod
    def _num(v, what: str) -> float:
        if isinstance(v, bool) or not isinstance(v, (int, float)):
            raise InvalidType(f"Schedule.{what} must be a number, got {type(v).__name__} {v!r}")
        return float(v)

    # -- constructors ---------------------------------------------------------
    @classmethod
    def constant(cls, value: float) -> "Schedule":
        return cls("constant", value=cls._num(value, "constant(value)"))

    @classmethod
    def window(cls, value: float, start: float = 0.0, stop: float = 1.0) -> "Schedule":
        """``value`` for ``int(T*start) <= i < int(T*stop)``, else 0."""
        return cls("window", value=cls._num(value, "window(value)"), start=cls._num(start, "window(start)"),
                   stop=cls._num(stop, "window(stop)"))

    @classmethod
    def steps(cls, values: Sequence[float]) -> "Schedule":
        """Explicit per-step values ``values[i]``; the list must cover every UNet call of the run."""
        if isinstance(values, (str, bytes)) or not hasattr(values, "__iter__"):
            raise InvalidType(f"Schedule.steps takes a list of numbers, got {type(values).__name__}")
        return cls("steps", values=tuple(cls._num(v, "steps(values)") for v in values))

    # -- evaluation -----------------------------------------------------------
    def needs_num_steps(self) -> bool:
        return self.kind == "window"

    def __call__(self, step: int, num_steps: int | None) -> float:
        if self.kind == "constant":
            return self.value
        if self.kind == "steps":
            n = len(self.values)
            if step == n and num_steps == n and n > 0:  # PNDM's extra call: reuse the last value
                return self.values[-1]
            if step >= n:
                want = f"{num_steps} (one per denoising step)" if num_steps else "one per denoising step"
                raise InvalidSetting(
                    f"per-step schedule has {n} values but sampling reached step {step}: give {want}, "
                    "or use ebca_viz.Schedule.window(value, start=, stop=)"
                )
            return self.values[step]
        if num_steps is None:
            raise InvalidSetting(
                "a start/stop schedule needs the number of sampling steps: pass num_inference_steps "
                "to the config (a bare UNet has no scheduler to read it from)"
            )
        if step == num_steps and num_steps > 0:  # PNDM's extra call: the last step's value, as for "steps"
            step = num_steps - 1
        lo, hi = int(num_steps * self.start), int(num_steps * self.stop)
        return self.value if lo <= step < hi else 0.0

    def table(self, num_steps: int) -> list[float]:
        """Values for steps ``0..num_steps-1`` (for plots and checks)."""
        return [self(i, num_steps) for i in range(num_steps)]

    def max_abs(self) -> float:
        if self.kind == "steps":
            return max((abs(v) for v in self.values), default=0.0)
        return abs(self.value)


ScheduleLike = Union[float, int, Schedule, Sequence[float]]


def as_schedule(x: ScheduleLike, name: str, *, nonnegative: bool = True) -> Schedule:
    """Coerce a float, a per-step list or a :class:`Schedule`; ``name`` is used in errors."""
    if isinstance(x, Schedule):
        s = x
    elif isinstance(x, (bool, str, bytes)):
        raise InvalidType(f"{name} must be a number, a per-step list or a Schedule, not {type(x).__name__} {x!r}")
    elif isinstance(x, (int, float)):
        s = Schedule.constant(float(x))
    elif isinstance(x, (list, tuple)):
        if not all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in x):
            raise InvalidType(f"{name}: a per-step list must hold numbers only, got {x!r}")
        s = Schedule.steps(x)
    else:
        try:  # 1-d tensors / arrays
            s = Schedule.steps([float(v) for v in x])  # type: ignore[union-attr]
        except (TypeError, ValueError):
            raise InvalidType(
                f"{name} must be a number, a per-step list or ebca_viz.Schedule, got {type(x).__name__}"
            ) from None
    vals = s.values if s.kind == "steps" else (s.value,)
    if any(not math.isfinite(v) for v in vals):
        raise InvalidSetting(f"{name} must be finite, got {x!r}")
    if nonnegative and any(v < 0 for v in vals):
        raise InvalidSetting(f"{name} must be >= 0 (it is a step size), got {x!r}; use 0 to switch it off")
    if s.kind == "window":
        if not (0.0 <= s.start <= 1.0 and 0.0 <= s.stop <= 1.0):
            raise InvalidSetting(f"{name}: start and stop are fractions of the run in [0, 1], got {s.start}, {s.stop}")
        if s.start > s.stop:
            raise InvalidSetting(f"{name}: start ({s.start}) must not exceed stop ({s.stop})")
    return s
