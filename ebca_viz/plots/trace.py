r"""The figures of :mod:`ebca_viz.plots`, read from a recording (:func:`ebca_viz.trace`).
"""
from __future__ import annotations

from typing import Optional

import numpy as np

from ..tokens import trace_prompt_positions, trace_tokens
from .base import FS, FS_TITLE, MAX_WIDTH_IN, ExplainerFigure, image_array, new_figure, short_layer, to_numpy
from .energy import plot_energy_curves
from .maps import animate_maps, plot_attention_maps
from .trajectories import plot_context_trajectories


TRACE_STEP_LABEL = "recorded UNet call (0 = noisiest)"

def _trace_layer_labels(tr) -> list:
    return [f"L{i} {short_layer(k)}" for i, k in enumerate(tr.layers)]


def plot_trace_maps(tr, by: str = "layer", token=None, image=None, **kw) -> ExplainerFigure:
    """Attention-map grid from a trace: ``by="layer"`` (rows = layers, mean over steps), ``"step"``
    (rows = steps, mean over layers) or ``"mean"`` (one row). ``token``: positions/words (default:
    the prompt's words). Other keywords go to :func:`plot_attention_maps`."""
    if by not in ("layer", "step", "mean"):
        raise ValueError("by must be 'layer', 'step' or 'mean'")
    idx = tr.token_index(token) if token is not None else trace_prompt_positions(tr)
    m = tr.maps(aggregate=by)
    if by == "mean":
        m, rows = m[None], ["mean"]
    elif by == "layer":
        rows = _trace_layer_labels(tr)
    else:
        rows = [f"step {s}" for s in tr.steps]
    kw.setdefault("title", f"cross-attention maps by {by}")
    return plot_attention_maps(m, tokens=trace_tokens(tr), image=image, row_labels=rows, token_indices=idx, **kw)


def plot_trace_energies(tr, reference=None, kind: str = "posterior", **kw) -> ExplainerFigure:
    """:func:`plot_energy_curves` of a trace: energy ``kind`` entering (``before``) and leaving
    (``after``) every layer; ``reference``: a vanilla trace of the same run (dashed)."""
    b, a = tr.energies(kind, "before"), tr.energies(kind, "after")
    ref = None if reference is None else reference.energies(kind, "before")
    labels = {"posterior": "E(K;Q) + E(K)", "context": "E(K;Q)", "prior": "E(K)", "query": "E(Q;K)"}
    kw.setdefault("energy_label", labels.get(kind, kind))
    kw.setdefault("step_label", TRACE_STEP_LABEL)
    return plot_energy_curves(b, a, reference=ref, layer_names=tr.layers, **kw)


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


def plot_trace_seg(tr, title: str = "SEG: self-attention energy per step") -> ExplainerFigure:
    """Blurred vs reference (unblurred) self-attention energy per step, mean over SEG layers."""
    bl = to_numpy(tr.seg_energies("blurred")).mean(-1)
    ref = to_numpy(tr.seg_energies("reference")).mean(-1)
    fig = new_figure(figsize=(6, 3.4))
    ax = fig.subplots()
    ax.plot(np.arange(len(bl)), bl, "o-", ms=3, label="blurred branch")
    ax.plot(np.arange(len(ref)), ref, "s--", ms=3, label="reference (unblurred)")
    ax.set_xlabel(TRACE_STEP_LABEL)
    ax.set_ylabel("sum -lse(Q K^T)")
    ax.set_title(title, fontsize=FS)
    ax.legend(fontsize=FS)
    fig.tight_layout()
    return fig


#: what each guidance map measures (colour-bar label of :func:`plot_guidance`)
GUIDANCE_UNITS = {
    "cfg": "CFG: w \u00b7 \u2016\u03b5_c \u2212 \u03b5_u\u2016\u2082 per latent pixel",
    "seg": "SEG: s \u00b7 \u2016\u03b5_c \u2212 \u03b5_blur\u2016\u2082 per latent pixel",
}

def plot_guidance(tr, kind: str = "cfg", steps=4, image: int = 0, sample=None, factor: Optional[int] = None,
                  title: Optional[str] = None) -> ExplainerFigure:
    r"""Where guidance acts (:meth:`ebca_viz.Trace.guidance`): the map of what the guidance term added to
    the noise prediction at a few recorded steps, and its mean over pixels at every step.

    Top row: ``sample`` (if given), then the ``(h, w)`` maps of ``kind`` (``"cfg"``: ``w ||eps_c - eps_u||_2``,
    ``"seg"``: ``s ||eps_c - eps_blur||_2``, L2 over the latent channels) nearest-neighbour upscaled by
    ``factor`` to image pixels, on one shared colour scale from 0 (the colour bar, in noise-prediction
    units). Bottom: the mean magnitude over pixels per recorded step, for every kind the trace holds
    (the chosen one solid, the shown steps marked). Text is :data:`FS` / :data:`FS_TITLE` pt on a
    :data:`MAX_WIDTH_IN` wide figure (never shrunk in JupyterLab's output area).

    Args:
        tr: a trace recorded with ``"guidance"`` in its quantities (the default).
        kind: ``"cfg"`` or ``"seg"``.
        steps: how many recorded steps to map (evenly spaced, first and last included), or a list of
            values of :attr:`ebca_viz.Trace.steps`.
        image: which image of the batch.
        sample: the sampled image (PIL or ``(H, W[, 3])`` array), shown first for reference.
        factor: image pixels per latent pixel; default ``sample`` width / latent width, else 8 (SD's VAE).
    """
    g = to_numpy(tr.guidance(kind, image=image)).astype(np.float64)  # (S, h, w); raises if kind never acted
    S, h, w = g.shape
    rec = list(tr.steps)
    if isinstance(steps, int) and not isinstance(steps, bool):
        if steps < 1:
            raise ValueError(f"steps must be a positive number of steps or a list of recorded steps, got {steps}")
        idx = sorted(set(np.linspace(0, S - 1, min(steps, S)).round().astype(int).tolist()))
    else:
        idx = []
        for st in steps:
            if st not in rec:
                raise ValueError(f"steps: step {st!r} was not recorded; recorded steps are {rec}")
            idx.append(rec.index(st))
    img = None if sample is None else image_array(sample)
    if factor is None:
        factor = max(1, img.shape[1] // w) if img is not None else 8
    if isinstance(factor, bool) or not isinstance(factor, int) or factor < 1:
        raise ValueError(f"factor must be a positive int (image pixels per latent pixel), got {factor!r}")
    shown = [np.kron(g[i], np.ones((factor, factor))) for i in idx]  # nearest-neighbour upscale
    finite = np.concatenate([m[np.isfinite(m)] for m in shown]) if shown else np.zeros(0)
    vmax = float(finite.max()) if finite.size and finite.max() > 0 else 1.0
    n = len(idx) + (img is not None)
    fig = new_figure(figsize=(MAX_WIDTH_IN, 5.2))
    gs = fig.add_gridspec(2, n, height_ratios=[1.1, 1])
    top = []
    if img is not None:
        ax = fig.add_subplot(gs[0, 0])
        ax.imshow(img, interpolation="nearest")
        ax.set_title("sample", fontsize=FS)
        top.append(ax)
    ts = tr.step_timesteps
    im = None
    for i, m in zip(idx, shown):
        ax = fig.add_subplot(gs[0, len(top)])
        im = ax.imshow(m, cmap="magma", vmin=0.0, vmax=vmax, interpolation="nearest")
        ax.set_title(f"step {rec[i]} (t={ts[i]:.0f})", fontsize=FS)
        top.append(ax)
    for ax in top:
        ax.set_xticks([])
        ax.set_yticks([])
    cb = fig.colorbar(im, ax=top, aspect=12, pad=0.02)
    cb.set_label(GUIDANCE_UNITS[kind].split(": ")[1].replace(" per latent pixel", ""), fontsize=FS)
    cb.ax.tick_params(labelsize=FS)
    ax = fig.add_subplot(gs[1, :])
    x = np.asarray(rec)
    for k in tr.guidance_kinds:
        gk = to_numpy(tr.guidance(k, image=image)).astype(np.float64).reshape(S, -1)
        mean = np.array([np.nan if not np.isfinite(r).any() else np.nanmean(r) for r in gk])
        style = dict(lw=2.0, color="C0") if k == kind else dict(lw=1.2, ls="--", color="C1")
        ax.plot(x, mean, label=k.upper(), **style)
        if k == kind:
            ax.plot(x[idx], mean[idx], "o", color="C0", ms=5, label="steps mapped above")
    ax.set_xlabel(TRACE_STEP_LABEL, fontsize=FS)
    ax.set_ylabel("mean over pixels\n(colour-bar units)", fontsize=FS)
    ax.tick_params(labelsize=FS)
    ax.set_ylim(bottom=0)
    ax.legend(fontsize=FS, loc="best")
    fig.suptitle(title or f"where guidance acts: {GUIDANCE_UNITS[kind]}", fontsize=FS_TITLE)
    return fig


def animate_trace(tr, token=None, **kw):
    """:func:`animate_maps` of a trace's per-step maps (mean over layers), the prompt's words by default."""
    idx = tr.token_index(token) if token is not None else trace_prompt_positions(tr)
    return animate_maps(tr.maps(aggregate="step"), tokens=trace_tokens(tr), token_indices=idx,
                        step_labels=[f"step {s}" for s in tr.steps], **kw)


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


__all__ = ["plot_trace_drift", 'TRACE_STEP_LABEL', 'plot_trace_maps', 'plot_trace_energies', 'trace_context_path', 'plot_trace_contexts', 'plot_trace_seg', 'GUIDANCE_UNITS', 'plot_guidance', 'animate_trace']
