r"""Context trajectories through the layer cascade: norms, drift and PCA paths.
"""
from __future__ import annotations

from typing import Optional, Sequence

import numpy as np

from ..tokens import trace_prompt_positions, trace_tokens
from .base import FS, FS_TITLE, ExplainerFigure, new_figure, to_numpy
from ..errors import InvalidSetting


def pca_2d(x) -> np.ndarray:
    """Project points ``(..., D)`` onto their two principal components -> ``(..., 2)``."""
    a = to_numpy(x)
    flat = a.reshape(-1, a.shape[-1])
    c = flat - flat.mean(0, keepdims=True)
    _, _, vt = np.linalg.svd(c, full_matrices=False)
    return (c @ vt[:2].T).reshape(*a.shape[:-1], 2)


def plot_context_trajectories(contexts=None, tokens: Optional[Sequence[str]] = None, token_indices=None,
                              norms=None, drift=None, title: Optional[str] = None,
                              relative: bool = True) -> ExplainerFigure:
    """How the context vectors move through the layers.

    Args:
        contexts: ``(L+1, N, D)``: the prompt embedding (row 0) then the context leaving each layer
            (one step, conditional half). Gives all three panels.
        norms: ``(L+1, N)`` per-token norms ``|c_j|`` (used when ``contexts`` is None).
        drift: ``(L+1, N)`` per-token distance from the prompt embedding ``|c_j - c_j^0|``.
        token_indices: which tokens to draw (default: all ``N``, at most 12).

        relative: project the displacements ``c_j^l - c_j^0`` (every path starts at the origin, the
            PCA shows how the tokens move) instead of the positions (dominated by token identity).

    Panels: norm per token over layers; drift from the prompt embedding; 2-D PCA projection of
    every token's path (circle = prompt embedding, arrow head = last layer).
    """
    if contexts is not None:
        c = to_numpy(contexts)
        if c.ndim != 3:
            raise InvalidSetting(f"contexts must be (L+1, N, D), got shape {c.shape}")
        norms = np.linalg.norm(c, axis=-1)
        drift = np.linalg.norm(c - c[:1], axis=-1)
    elif norms is None:
        raise InvalidSetting("give contexts (L+1, N, D) or norms (L+1, N)")
    else:
        c = None
        norms = to_numpy(norms)
        drift = None if drift is None else to_numpy(drift)
    N = norms.shape[1]
    idx = list(range(min(N, 12))) if token_indices is None else list(token_indices)
    panels = 1 + (drift is not None) + (c is not None)
    fig = new_figure(figsize=(4.2 * panels, 3.6))
    axes = np.atleast_1d(fig.subplots(1, panels))
    lab = lambda j: tokens[j] if tokens is not None and j < len(tokens) else f"token {j}"  # noqa: E731
    x = np.arange(norms.shape[0])
    for k, j in enumerate(idx):
        axes[0].plot(x, norms[:, j], "-", color=f"C{k % 10}", label=lab(j))
    axes[0].set_xlabel("layer (0 = prompt embedding)")
    axes[0].set_ylabel("|c_j|")
    axes[0].set_title("context norm per token")
    axes[0].legend(fontsize=FS, ncol=2)
    p = 1
    if drift is not None:
        for k, j in enumerate(idx):
            axes[p].plot(x, drift[:, j], "-", color=f"C{k % 10}")
        axes[p].set_xlabel("layer (0 = prompt embedding)")
        axes[p].set_ylabel("|c_j - c_j^0|")
        axes[p].set_title("drift from the prompt embedding")
        p += 1
    if c is not None:
        sel = c[:, idx]
        pts = pca_2d(sel - sel[:1] if relative else sel)  # (L+1, n, 2)
        if relative:
            pts = pts - pts[:1]
        ax = axes[p]
        for k in range(len(idx)):
            col = f"C{k % 10}"
            ax.plot(pts[:, k, 0], pts[:, k, 1], "-", color=col, lw=1)
            ax.plot(pts[0, k, 0], pts[0, k, 1], "o", color=col, ms=4)
            if len(pts) > 1:
                ax.annotate("", xy=pts[-1, k], xytext=pts[-2, k],
                            arrowprops=dict(arrowstyle="->", color=col, lw=1.2))
        ax.set_xlabel("PC 1")
        ax.set_ylabel("PC 2")
        ax.set_title("token paths (PCA of c - c^0)" if relative else "token paths (PCA)")
    if title:
        fig.suptitle(title, fontsize=FS_TITLE)
    fig.tight_layout()
    return fig


# -- read from a recording (ebca_viz.trace) ----------------------------------------

def trace_context_path(tr, step: int = -1, image: int = 0):
    """``(L+1, N, D)``: the prompt embedding of ``step`` then the context after every layer
    (needs ``quantities`` with ``"contexts"``)."""
    i = tr.steps.index(tr.steps[step]) if step < 0 else tr.steps.index(step)
    c = tr.contexts(image=image)[i].float()
    p = tr.prompt_embeds(image=image)[i].float()
    return np.concatenate([to_numpy(p)[None], to_numpy(c)])


def plot_trace_contexts(tr, step: int = -1, token=None, **kw) -> ExplainerFigure:
    """:func:`plot_context_trajectories` of one recorded step: with ``"contexts"`` recorded all three
    panels (norms, drift, PCA paths); else norms and drift from ``"context_norms"``."""
    idx = tr.token_index(token) if token is not None else trace_prompt_positions(tr, include_sot=False)
    toks = trace_tokens(tr)
    labels = [toks[i] for i in idx]
    if "contexts" in tr.quantities:
        c = trace_context_path(tr, step)[:, idx]
        return plot_context_trajectories(c, tokens=labels, **kw)
    i = step if step < 0 else tr.steps.index(step)
    nb = to_numpy(tr.context_norms("before"))[i]  # (L, N)
    na = to_numpy(tr.context_norms("after"))[i]
    d = to_numpy(tr.drift())[i]
    norms = np.concatenate([nb[:1], na])[:, idx]
    drift = np.concatenate([np.zeros_like(d[:1]), d])[:, idx]
    return plot_context_trajectories(norms=norms, drift=drift, tokens=labels, **kw)


def plot_trace_drift(traces: dict, tokens: list, positions: list, title: Optional[str] = None, width: float = 8.0,
               fontsize: float = 10):
    """Per-token drift ``|c_j - c_j^0|`` through the layers (mean over recorded steps), one line style per
    run: ``traces`` ``{label: Trace}`` (each recorded ``"context_norms"`` or ``"contexts"``);
    ``positions`` the token positions to draw, ``tokens`` their labels."""
    fig = new_figure(figsize=(width, 3.6))
    ax = fig.subplots()
    styles = ["-", "--", ":", "-."]
    for s, (label, tr) in enumerate(traces.items()):
        d = to_numpy(tr.drift()).mean(0)  # (L, N): mean over steps
        for k, j in enumerate(positions):
            ax.plot(np.arange(1, d.shape[0] + 1), d[:, j], styles[s % 4], color=f"C{k % 10}", lw=1.6,
                    label=f"{tokens[k]} ({label})")
    ax.set_xlabel("cross-attention layer", fontsize=fontsize)
    ax.set_ylabel("drift |c_j - c_j^0| (mean over steps)", fontsize=fontsize)
    ax.tick_params(labelsize=fontsize)
    ax.legend(fontsize=fontsize - 1 if fontsize > 10 else fontsize, loc="upper left", bbox_to_anchor=(1.0, 1.0),
              frameon=False)
    if title:
        ax.set_title(title, fontsize=fontsize)
    fig.tight_layout()
    return fig



__all__ = ['pca_2d', 'plot_context_trajectories', 'trace_context_path', 'plot_trace_contexts', 'plot_trace_drift']
