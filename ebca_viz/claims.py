r"""Result sentences backed by numbers: rates and means with 95 % intervals, and checks that fail.

Every result sentence in the notebooks, the demo, the gallery and the README is printed from an
object of this module and guarded by :func:`check`, so that a claim which stops holding fails
the notebook (and CI) instead of staying on the page::

    r = claims.rate(successes)                       # 0/1 array, n = len
    print(f"the edit turns the circle blue in {r}")   # "29/32 = 90.6 % (95 % CI 75.8-96.8 %)"
    claims.check(r.lo > 0.5, "the edit works in most seeds", r)

* :class:`Rate` ``k / n`` with the **Wilson** score interval (exact enough at n = 32 and
  well-behaved at k = 0 or k = n, unlike the normal approximation):

  .. math:: \frac{\hat p + z^2/2n \pm z\sqrt{\hat p(1-\hat p)/n + z^2/4n^2}}{1 + z^2/n},\quad z = 1.96

* :class:`Mean` mean of ``n`` values with the t interval ``mean ± t_{0.975, n-1} s / sqrt(n)``;
  :func:`paired_diff` is the mean of per-seed differences (same initial latents), the right
  interval for "A vs B on the same seeds".

A null result is reported as such: ``Mean.excludes_zero`` is False, and the sentence says so.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Sequence

import numpy as np
from .errors import InvalidSetting

Z95 = 1.959963984540054


class ClaimError(AssertionError):
    """A result sentence no longer holds for the numbers computed in this run."""


def _t975(df: int) -> float:
    """Two-sided 95 % Student-t quantile (table for small df, normal beyond)."""
    table = {1: 12.706, 2: 4.303, 3: 3.182, 4: 2.776, 5: 2.571, 6: 2.447, 7: 2.365, 8: 2.306, 9: 2.262,
             10: 2.228, 11: 2.201, 12: 2.179, 13: 2.160, 14: 2.145, 15: 2.131, 16: 2.120, 17: 2.110,
             18: 2.101, 19: 2.093, 20: 2.086, 25: 2.060, 30: 2.042, 40: 2.021, 60: 2.000, 120: 1.980}
    if df < 1:
        return float("nan")
    if df in table:
        return table[df]
    keys = sorted(table)
    for lo, hi in zip(keys, keys[1:]):
        if lo < df < hi:  # interpolate in 1/df
            w = (1 / df - 1 / hi) / (1 / lo - 1 / hi)
            return table[hi] + w * (table[lo] - table[hi])
    return Z95 + (table[120] - Z95) * 120 / df


@dataclass(frozen=True)
class Rate:
    """``k`` successes out of ``n`` with the Wilson 95 % interval ``[lo, hi]``."""

    k: int
    n: int

    def __post_init__(self):
        if self.n <= 0:
            raise InvalidSetting("a rate needs n >= 1 samples")
        if not 0 <= self.k <= self.n:
            raise InvalidSetting.of("k", self.k, f"pass a count of successes between 0 and n = {self.n}",
                                    why=f"must lie in [0, n] for n = {self.n} samples")

    @property
    def p(self) -> float:
        return self.k / self.n

    @property
    def interval(self) -> tuple[float, float]:
        n, p, z = self.n, self.p, Z95
        den = 1 + z * z / n
        mid = (p + z * z / (2 * n)) / den
        half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / den
        return max(0.0, mid - half), min(1.0, mid + half)

    @property
    def lo(self) -> float:
        return self.interval[0]

    @property
    def hi(self) -> float:
        return self.interval[1]

    def __str__(self) -> str:
        lo, hi = self.interval
        return f"{self.k}/{self.n} = {100 * self.p:.1f} % (95 % CI {100 * lo:.1f}-{100 * hi:.1f} %)"

    def to_json(self) -> dict:
        lo, hi = self.interval
        return dict(k=self.k, n=self.n, p=self.p, lo=lo, hi=hi)


@dataclass(frozen=True)
class Mean:
    """Mean of ``n`` values with the t-based 95 % interval ``[lo, hi]``."""

    value: float
    sd: float
    n: int
    bounds: tuple = (-math.inf, math.inf)  # the range the mean can take (e.g. -1..1 for paired 0/1 data)

    @property
    def half_width(self) -> float:
        if self.n < 2:
            return float("inf")
        return _t975(self.n - 1) * self.sd / math.sqrt(self.n)

    @property
    def lo(self) -> float:
        return max(self.bounds[0], self.value - self.half_width)

    @property
    def hi(self) -> float:
        return min(self.bounds[1], self.value + self.half_width)

    @property
    def excludes_zero(self) -> bool:
        return self.lo > 0 or self.hi < 0

    def fmt(self, digits: int = 3, scale: float = 1.0, unit: str = "") -> str:
        v, lo, hi = self.value * scale, self.lo * scale, self.hi * scale
        return f"{v:.{digits}g}{unit} (95 % CI {lo:.{digits}g} to {hi:.{digits}g}{unit}, n = {self.n})"

    def __str__(self) -> str:
        return self.fmt()

    def to_json(self) -> dict:
        return dict(mean=self.value, sd=self.sd, n=self.n, lo=self.lo, hi=self.hi)


def rate(successes: Sequence) -> Rate:
    """:class:`Rate` of a 0/1 (or bool) sequence."""
    x = np.asarray(successes).astype(bool).ravel()
    return Rate(int(x.sum()), int(x.size))


def mean(values: Sequence) -> Mean:
    """:class:`Mean` of the finite values given; a non-finite value is an error (it would hide a bug)."""
    x = np.asarray(values, np.float64).ravel()
    if x.size == 0:
        raise InvalidSetting.of("values", x, "pass at least one measured value", why="the mean of no values")
    if not np.isfinite(x).all():
        raise InvalidSetting.of("values", x, "remove the NaN/inf samples (or fix the run that produced them) first",
                                 why=f"{int((~np.isfinite(x)).sum())} of {x.size} values are not finite")
    return Mean(float(x.mean()), float(x.std(ddof=1)) if x.size > 1 else 0.0, int(x.size))


def paired_diff(a: Sequence, b: Sequence) -> Mean:
    """Mean of ``a_i - b_i`` (same seeds) with its 95 % interval."""
    a, b = np.asarray(a, np.float64).ravel(), np.asarray(b, np.float64).ravel()
    if a.shape != b.shape:
        raise InvalidSetting.of("b", b, "pass a and b with one value per seed each, in the same seed order",
                                 why=f"paired samples differ in length: a has {a.size}, b has {b.size}")
    m = mean(a - b)
    if np.isin(a, (0.0, 1.0)).all() and np.isin(b, (0.0, 1.0)).all():  # rates: the difference lies in [-1, 1]
        m = Mean(m.value, m.sd, m.n, bounds=(-1.0, 1.0))
    return m


#: the checks that passed since the last :func:`reset_log` (a notebook's setup resets it):
#: ``[(claim, measured text), ...]``, shown as one table by :func:`checks_table`.
CHECK_LOG: list = []
#: when True, passing checks print nothing (notebooks: :func:`ebca_viz.notebook.setup` sets it and
#: :func:`ebca_viz.notebook.finish` prints the table instead of scattered lines)
QUIET = False


def reset_log() -> None:
    """Forget the checks recorded so far (called when a notebook starts)."""
    CHECK_LOG.clear()


def check(condition: bool, claim: str, *numbers, quiet: bool | None = None) -> None:
    """Fail with :class:`ClaimError` (an ``AssertionError``) when ``condition`` is false.

    ``claim`` is the sentence the text states; ``numbers`` (rates, means, floats) are shown in the
    error, so the failure says what was measured instead. A passing check is recorded in
    :data:`CHECK_LOG` (the notebook's closing table, :func:`checks_table`) and printed as one line
    unless ``quiet`` (default: the module flag :data:`QUIET`)."""
    shown = "; ".join(f"{x:.4g}" if isinstance(x, float) else str(x) for x in numbers)
    if not bool(condition):
        raise ClaimError(f"claim no longer holds: {claim}" + (f" (measured: {shown})" if shown else ""))  # internal invariant: the docs no longer match the numbers
    CHECK_LOG.append((claim, shown))
    if not (QUIET if quiet is None else quiet):
        print(f"check passed: {claim}")


def checks_table(log: Sequence | None = None) -> str:
    """The passed checks as one plain-text table (``#``, claim, what was measured)."""
    rows = list(CHECK_LOG if log is None else log)
    if not rows:
        return "no checks ran"
    lines = [f"{len(rows)} checks passed (each would have stopped the notebook if its claim had failed):"]
    for i, (claim, shown) in enumerate(rows, 1):
        lines.append(f"{i:>3}. {claim}" + (f"  [{shown}]" if shown else ""))
    return "\n".join(lines)


__all__ = ["Rate", "Mean", "ClaimError", "rate", "mean", "paired_diff", "check", "checks_table", "reset_log", "CHECK_LOG"]
