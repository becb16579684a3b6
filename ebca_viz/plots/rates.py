r"""Measured rates, paired effects and distributions, with their intervals (:mod:`ebca_viz.claims`).
"""
from __future__ import annotations

from typing import Mapping, Sequence

import numpy as np

from .base import new_figure


def plot_rate_bars(series: Mapping[str, Mapping], categories: Sequence[str], ylabel: str, title: str = "",
                   width: float = 9.0, height: float = 3.8, fontsize: float = 10, ylim=None, legend: str = "right"):
    """Grouped bars: for each ``series`` (label -> ``{category: claims.Rate}``) the rate of every category,
    in %, with the 95 % (Wilson) interval as error bars. ``legend``: ``"right"`` (outside the axes) or a
    matplotlib ``loc`` inside them. ``width`` inches (9 = not shrunk in a notebook)."""
    names = list(series)
    fig = new_figure(figsize=(width, height))
    ax = fig.subplots()
    w = 0.8 / len(names)
    for j, name in enumerate(names):
        r = series[name]
        p = np.array([r[k].p for k in categories])
        lo = np.clip(p - np.array([r[k].lo for k in categories]), 0, None)
        hi = np.clip(np.array([r[k].hi for k in categories]) - p, 0, None)
        ax.bar(np.arange(len(categories)) + (j - (len(names) - 1) / 2) * w, 100 * p, w,
               yerr=100 * np.stack([lo, hi]), capsize=2, label=name)
    ax.set_xticks(range(len(categories)), [c.replace("_", "\n") for c in categories], fontsize=fontsize)
    ax.tick_params(labelsize=fontsize)
    ax.set_ylabel(ylabel, fontsize=fontsize)
    if ylim is not None:
        ax.set_ylim(*ylim)
    ax.set_title(title, fontsize=fontsize)
    if legend == "right":
        ax.legend(fontsize=fontsize, loc="upper left", bbox_to_anchor=(1.0, 1.0), frameon=False)
    else:
        ax.legend(fontsize=fontsize, loc=legend, ncol=1)
    fig.tight_layout()
    return fig


def plot_effects(effects: dict, title: str = "EBCU - vanilla on the same seeds", width: float = 8.0,
                 fontsize: float = 10):
    """Paired differences with their 95 % intervals, one row each: ``{label: claims.Mean}`` (in points).

    Blue: the interval excludes 0 (a measured change); grey: it contains 0 (a null result)."""
    labels = list(effects)
    fig = new_figure(figsize=(width, 0.9 + 0.7 * len(labels)))
    ax = fig.subplots()
    for i, k in enumerate(labels):
        m = effects[k]
        col = "C0" if m.excludes_zero else "C7"  # blue: the interval excludes 0; grey: a null result
        ax.errorbar(100 * m.value, i, xerr=[[100 * (m.value - m.lo)], [100 * (m.hi - m.value)]], fmt="o",
                    color=col, capsize=4, ms=7)
        ax.annotate(f"{100 * m.value:+.1f} pts [{100 * m.lo:+.1f}, {100 * m.hi:+.1f}]", (100 * m.hi, i),
                    xytext=(6, 0), textcoords="offset points", va="center", fontsize=fontsize)
    ax.axvline(0, color="k", lw=0.8)
    ax.set_yticks(range(len(labels)), labels, fontsize=fontsize)  # put line breaks in the labels yourself
    ax.set_ylim(-0.6, len(labels) - 0.4)
    ax.invert_yaxis()
    lo = min(100 * effects[k].lo for k in labels)
    hi = max(100 * effects[k].hi for k in labels)
    ax.set_xlim(min(lo - 2, -2), max(hi + 0.55 * (hi - lo) + 4, 4))
    ax.tick_params(axis="x", labelsize=fontsize)
    ax.set_xlabel("percentage points (95 % CI)", fontsize=fontsize)
    ax.set_title(title, fontsize=fontsize)
    fig.tight_layout()
    return fig


def plot_histograms_vs_normal(counts: Sequence, titles: Sequence[str], lim: float = 4.0, xlabel: str = "value",
                              label: str = "values", fontsize: float = 10):
    """One panel per histogram: ``counts`` (equal bins over ``[-lim, lim]``) as a density against the
    standard normal density (what white noise would give)."""
    fig = new_figure(figsize=(4.4 * len(counts), 3.6))
    axes = np.atleast_1d(fig.subplots(1, len(counts)))
    x = np.linspace(-lim, lim, 200)
    for ax, c, t in zip(axes, counts, titles):
        c = np.asarray(c, float)
        edges = np.linspace(-lim, lim, len(c) + 1)
        ax.stairs(c / (c.sum() * (edges[1] - edges[0])), edges, fill=True, alpha=0.6, label=label)
        ax.plot(x, np.exp(-x ** 2 / 2) / np.sqrt(2 * np.pi), "k-", lw=1.2, label="N(0, 1)")
        ax.set_title(t, fontsize=fontsize)
        ax.set_xlabel(xlabel, fontsize=fontsize)
        ax.set_ylabel("density", fontsize=fontsize)
        ax.tick_params(labelsize=fontsize)
        ax.legend(fontsize=fontsize)
    fig.tight_layout()
    return fig


__all__ = ["plot_rate_bars", "plot_effects", "plot_histograms_vs_normal"]
