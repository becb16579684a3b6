r"""What each EBCU context update does to the three energies, and how that depends on the step size.

One layer ``n``, conditional rows (the images), heads ``H``, ``beta`` the layer's scale, context
``C_in`` entering the layer, ``C_out = C_in + dC`` leaving it (:mod:`ebca_viz.energy`)::

    dC = (gamma_attn A - gamma_norm R) W_k          A = softmax_i(S)^T Q,  R = softmax_j(c |k_j|^2) k_j

Per update the recorder stores, for the three terms ``kind`` in ``("context", "prior", "posterior")``
(``E(K;Q)``, ``E(K)``, ``E(K;Q) + E(K)``, alpha = 0, heads averaged as in :mod:`ebca_viz.tracing`):

* ``before[kind]``: the energy of ``C_in``; ``after[kind]``: of ``C_out``; ``prompt[kind]``: of the
  step's prompt embedding seen through the same layer (its queries, its ``W_k``). So
  ``before - prompt`` is what the updates of the earlier layers did to this layer's energy
  (the cascade) and ``after - before`` what this layer's own update did. Shape ``(S, L, B)``.
* ``first_order[kind]``: the first-order prediction of ``after - before``,
  ``<dE/dC, dC> = <dE/dK, dC W_k^T>`` with the closed-form gradients
  ``dE(K;Q)/dK = -(beta/H) A`` and ``dE(K)/dK = softmax_j(1/2 |k_j|^2) k_j`` (paper prior).
  Since ``dK = -(gamma_attn H / beta) dE(K;Q)/dK - gamma_norm R``, the step is a descent
  direction of the posterior (on the shapes world at gamma 0.3/0.3: in 100 % of 5600 updates) and,
  to first order, lowers ``E(K)`` too (93.7 %); ``E(K)`` nevertheless rose in 78.0 % of them: its
  rise is the second-order (step-size) term, see ``sweep``. Notebook 01 measures and checks these.
* ``sweep[kind]``: ``E(C_in + s dC) - E(C_in)`` for every factor ``s`` of :attr:`UpdateRecord.scales`
  (both gammas multiplied by ``s``, the layer's inputs held fixed: the step-size sweep of one
  update), shape ``(S, L, B, G)``. For small ``s`` it equals ``s * first_order`` (a descent
  direction lowers the energy by ``~ s |<dE/dC, dC>|``); for large ``s`` the curvature term
  ``O(s^2)`` wins, the update overshoots and the energy rises.

Everything is float64, computed from the run's own queries and contexts; nothing changes the
sampling. The unconditional CFG half is updated as well (published default) but not recorded.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Optional, Sequence

import numpy as np
import torch

from . import claims
from .energy import attention_scores, attention_term, context_energy, merge_heads, norm_term, prior_energy, split_heads
from .errors import InvalidSetting

KINDS = ("context", "prior", "posterior")
#: default step-size factors (x the run's gammas); 1.0 is the run itself
DEFAULT_SCALES = (1 / 300, 1 / 100, 1 / 30, 0.1, 0.2, 1 / 3, 0.5, 2 / 3, 1.0, 1.5, 2.0, 3.0, 5.0, 10.0)


def _terms(q: torch.Tensor, c: torch.Tensor, w_k: torch.Tensor, heads: int, scale: float) -> torch.Tensor:
    """``(3, B)`` E(K;Q), E(K), posterior of context ``c (B,N,D)`` for queries ``q (B,H,P,d)``."""
    k = split_heads(c @ w_k.T, heads)
    ek, pk = context_energy(q, k, scale), prior_energy(merge_heads(k))
    return torch.stack([ek, pk, ek + pk])


def first_order_change(q: torch.Tensor, c: torch.Tensor, d_c: torch.Tensor, w_k: torch.Tensor, heads: int,
                       scale: float) -> torch.Tensor:
    """``(3, B)``: ``<dE/dC, dC>`` for E(K;Q), E(K) (paper prior) and their sum, closed form.

    ``q (B,H,P,d)``, ``c, d_c (B,N,D)``, ``w_k (H d, D)``; ``dE(K;Q)/dK = -(beta/H) A``,
    ``dE(K)/dK = softmax_j(1/2|k_j|^2) k_j`` (checked against autograd in the tests).
    """
    k = split_heads(c @ w_k.T, heads)
    d_k = d_c @ w_k.T  # change of the keys, (B, N, H d)
    g_ctx = -(scale / heads) * attention_term(attention_scores(q, k, scale), q)
    g_pri = norm_term(merge_heads(k), "paper")
    a, b = (g_ctx * d_k).sum((-1, -2)), (g_pri * d_k).sum((-1, -2))
    return torch.stack([a, b, a + b])


def sweep_changes(q: torch.Tensor, c: torch.Tensor, d_c: torch.Tensor, w_k: torch.Tensor, heads: int, scale: float,
                  scales: Sequence[float]) -> torch.Tensor:
    """``(3, B, G)``: ``E(c + s d_c) - E(c)`` for E(K;Q), E(K), posterior and every ``s`` in ``scales``.

    The keys are linear in ``s`` (``K(s) = K + s dK``, ``dK = d_c W_k^T``), so are the scores
    ``S(s) = S + s dS`` and ``|k_j(s)|^2 = |k_j|^2 + 2 s k_j.dk_j + s^2 |dk_j|^2``: two matmuls for
    the whole sweep. ``q (B,H,P,d)``, ``c, d_c (B,N,D)``, ``w_k (H d, D)``.
    """
    k, d_k = c @ w_k.T, d_c @ w_k.T  # (B, N, H d)
    s0 = attention_scores(q, split_heads(k, heads), scale)  # (B, H, P, N)
    ds = attention_scores(q, split_heads(d_k, heads), scale)
    e_ctx0 = -torch.logsumexp(s0, dim=-2).sum(-1).mean(1)  # (B,)
    a, b, cc = (k * k).sum(-1), 2 * (k * d_k).sum(-1), (d_k * d_k).sum(-1)  # (B, N)
    e_pri0 = torch.logsumexp(0.5 * a, dim=-1)
    rows = []
    for s in scales:
        s = float(s)
        ctx = -torch.logsumexp(s0 + s * ds, dim=-2).sum(-1).mean(1) - e_ctx0
        pri = torch.logsumexp(0.5 * (a + s * b + s * s * cc), dim=-1) - e_pri0
        rows.append(torch.stack([ctx, pri, ctx + pri]))
    return torch.stack(rows, -1)


class UpdateRecorder:
    """Observer of an :class:`~ebca_viz.EBCAController`: ``ctl.observers.append(rec)`` inside
    ``with energy_attention(pipe, config) as ctl``; then :meth:`record`. Can run next to a trace."""

    def __init__(self, scales: Sequence[float] = DEFAULT_SCALES):
        s = np.asarray(scales, np.float64)
        if s.ndim != 1 or s.size == 0 or not np.all(np.isfinite(s)) or np.any(s <= 0):
            raise InvalidSetting(f"scales must be a non-empty list of positive step-size factors, got {scales!r}")
        self.scales = s
        self._rows: dict = {}  # (step, layer) -> dict of (3, B) / (3, B, G) arrays
        self._prompt = None
        self.layer_names: list = []
        self.gammas: dict = {}

    def on_forward_start(self, ctl) -> None:
        self._prompt = ctl.context[ctl.n_uncond:].detach().double()
        self.gammas[ctl.step] = (float(ctl.now.get("gamma_attn", 0.0)), float(ctl.now.get("gamma_norm", 0.0)))
        if not self.layer_names:
            self.layer_names = list(ctl.layer_names)

    @torch.no_grad()
    def on_cross_attention(self, ev) -> None:
        if ev.context_out is ev.context_in:
            return  # no update at this layer/step
        n = ev.n_uncond
        q = ev.query[n:].double()
        c_in, c_out = ev.context_in[n:].double(), ev.context_out[n:].double()
        w_k, h, beta = ev.attn.to_k.weight.detach().double(), int(ev.attn.heads), float(ev.attn.scale)
        d_c = c_out - c_in
        before = _terms(q, c_in, w_k, h, beta)
        row = {
            "before": before,
            "after": _terms(q, c_out, w_k, h, beta),
            "prompt": _terms(q, self._prompt.to(q.device), w_k, h, beta),
            "first_order": first_order_change(q, c_in, d_c, w_k, h, beta),
            "sweep": sweep_changes(q, c_in, d_c, w_k, h, beta, self.scales),
        }
        self._rows[(ev.step, ev.layer)] = {k: v.cpu().numpy() for k, v in row.items()}

    def record(self) -> "UpdateRecord":
        if not self._rows:
            raise InvalidSetting("no context update was recorded: run sampling with nonzero gamma_attn/gamma_norm "
                             "inside `with energy_attention(...)` after appending this recorder to ctl.observers")
        steps = sorted({s for s, _ in self._rows})
        L = len(self.layer_names) or 1 + max(l for _, l in self._rows)
        any_row = next(iter(self._rows.values()))
        B, G = any_row["before"].shape[1], self.scales.size
        out = {k: np.full((3, len(steps), L, B), np.nan) for k in ("before", "after", "prompt", "first_order")}
        sweep = np.full((3, len(steps), L, B, G), np.nan)
        for (s, l), row in self._rows.items():
            i = steps.index(s)
            for k in out:
                out[k][:, i, l] = row[k]
            sweep[:, i, l] = row["sweep"]
        split = lambda a: {kind: a[j] for j, kind in enumerate(KINDS)}  # noqa: E731
        return UpdateRecord(
            steps=steps, layers=self.layer_names or [str(i) for i in range(L)], scales=self.scales,
            gammas=np.array([self.gammas.get(s, (np.nan, np.nan)) for s in steps]),
            before=split(out["before"]), after=split(out["after"]), prompt=split(out["prompt"]),
            first_order=split(out["first_order"]), sweep=split(sweep),
        )


@dataclass
class UpdateRecord:
    """Energies of every recorded update (see the module docstring). Arrays ``(S, L, B)``;
    ``sweep[kind]`` ``(S, L, B, G)``; ``gammas (S, 2)`` the run's (gamma_attn, gamma_norm) per step;
    NaN where a layer did not update."""

    steps: list
    layers: list
    scales: np.ndarray
    gammas: np.ndarray
    before: dict
    after: dict
    prompt: dict
    first_order: dict
    sweep: dict = field(repr=False)

    def _kind(self, kind):
        if kind not in KINDS:
            raise InvalidSetting(f"kind must be one of {KINDS}, got {kind!r}")
        return kind

    @property
    def updated(self) -> np.ndarray:
        """``(S, L, B)`` bool: an update happened there."""
        return np.isfinite(self.before["posterior"])

    def change(self, kind: str = "posterior") -> np.ndarray:
        """``after - before`` ``(S, L, B)`` (negative: the update lowered that energy)."""
        k = self._kind(kind)
        return self.after[k] - self.before[k]

    def lowered(self, kind: str = "posterior") -> np.ndarray:
        """``(S, L, B)`` bool, True where the update lowered ``kind``."""
        return self.change(kind) < 0

    def rate(self, kind: str = "posterior", rose: bool = False, layer: Optional[int] = None) -> claims.Rate:
        """Updates that lowered (``rose=True``: raised) ``kind``, over all recorded updates (or one layer)."""
        ch = self.change(kind)
        if layer is not None:
            ch = ch[:, layer]
        ch = ch[np.isfinite(ch)]
        return claims.rate(ch > 0 if rose else ch < 0)

    def layer_rates(self, kind: str = "posterior") -> list:
        """One :class:`~ebca_viz.claims.Rate` per layer (updates that lowered ``kind``)."""
        return [self.rate(kind, layer=l) for l in range(len(self.layers))]

    def gamma_attn(self) -> float:
        """The run's gamma_attn (the first step's; the sweep multiplies it by :attr:`scales`)."""
        return float(self.gammas[0, 0])

    def sweep_rates(self, kind: str = "posterior", layer: Optional[int] = None) -> list:
        """Per step-size factor: a Rate of the updates that the scaled step would have lowered."""
        sw = self.sweep[self._kind(kind)]
        if layer is not None:
            sw = sw[:, layer]
        sw = sw.reshape(-1, sw.shape[-1])
        sw = sw[np.isfinite(sw).all(1)]
        return [claims.rate(sw[:, g] < 0) for g in range(sw.shape[1])]

    def scale_index(self, scale: float) -> int:
        """Index of ``scale`` in :attr:`scales` (ValueError when it was not swept)."""
        hit = np.flatnonzero(np.isclose(self.scales, scale, rtol=1e-9, atol=0))
        if hit.size == 0:
            raise InvalidSetting.of("scale", scale,
                                    f"pick one of the swept factors {self.scales.tolist()}, or add it to scales=",
                                     why="not swept")
        return int(hit[0])

    def first_order_ratio(self, kind: str = "posterior") -> np.ndarray:
        """``(S, L, B, G)``: actual change / first-order prediction ``s * <dE/dC, dC>`` (1 where the
        linearisation holds, 0 at the break-even step, negative where the scaled step raised ``kind``)."""
        k = self._kind(kind)
        pred = self.first_order[k][..., None] * self.scales
        with np.errstate(divide="ignore", invalid="ignore"):
            return self.sweep[k] / pred

    def to_json(self) -> dict:
        """The measured rates (for ``summary.json``)."""
        return {
            "posterior_lowered": self.rate("posterior").to_json(),
            "context_lowered": self.rate("context").to_json(),
            "prior_rose": self.rate("prior", rose=True).to_json(),
            "posterior_lowered_per_layer": [r.to_json() for r in self.layer_rates()],
            "updates": int(self.updated.sum()),
        }


def record_updates(pipe, prompts, config, seeds: Sequence[int] = (0,), steps: int = 25, guidance_scale: float = 3.0,
                   scales: Sequence[float] = DEFAULT_SCALES):
    """Sample ``prompts`` (one per seed, or one string for all) under EBCU ``config`` on the fixed
    per-seed latents of :func:`ebca_viz.sampling.sample` (one batch); returns
    ``(images (B, H, W, 3) uint8, UpdateRecord)``."""
    from .sampling import sample

    seeds = list(seeds)
    if not seeds:
        raise InvalidSetting("seeds must hold at least one seed")
    prompts = [prompts] * len(seeds) if isinstance(prompts, str) else list(prompts)
    if len(prompts) != len(seeds):
        raise InvalidSetting(f"prompts: give one string or one prompt per seed ({len(seeds)}), got {len(prompts)}")
    rec = UpdateRecorder(scales)
    images = sample(pipe, prompts, seeds, method=config, observers=[rec], steps=steps, guidance=guidance_scale,
                    batch=len(seeds))
    return images, rec.record()


def sweep_step_size(pipe=None, gamma_attn: float = None, gamma_norm: float = None, n: int = 32, steps: int = None,
                    guidance_scale: float = None, scales: Sequence[float] = DEFAULT_SCALES, seed_base: int = 0) -> dict:
    """Repo-wide sweep hook: fraction of EBCU updates that lower the posterior energy per step-size
    factor, on the shapes world with its regime (``ebca_viz.shapes.regime.SHAPES``) unless given.

    Returns ``{"gamma_attn": [...], "gamma_norm": [...], "posterior_lowered": [Rate.to_json(), ...],
    "run": UpdateRecord.to_json()}``."""
    from .config import EBCAConfig
    from .shapes.regime import SHAPES

    if pipe is None:
        from .models import load_pipeline

        pipe = load_pipeline("shapes-world")
        pipe.set_progress_bar_config(disable=True)
    ga = SHAPES.gamma_attn if gamma_attn is None else gamma_attn
    gn = SHAPES.gamma_norm if gamma_norm is None else gamma_norm
    _, rec = record_updates(pipe, "a red circle and a blue square", EBCAConfig(gamma_attn=ga, gamma_norm=gn),
                            seeds=range(seed_base, seed_base + n), steps=steps or SHAPES.steps,
                            guidance_scale=SHAPES.guidance if guidance_scale is None else guidance_scale, scales=scales)
    return {"gamma_attn": (ga * rec.scales).tolist(), "gamma_norm": (gn * rec.scales).tolist(),
            "posterior_lowered": [r.to_json() for r in rec.sweep_rates()], "run": rec.to_json()}


#: the step sizes the tour sweeps (gamma_attn = gamma_norm), from tiny to three times the shapes world's 0.3
TOUR_GAMMAS = (0.003, 0.01, 0.02, 0.03, 0.05, 0.07, 0.1, 0.15, 0.2, 0.3, 0.5, 1.0)
#: the tour's rule: the largest swept gamma at which at least this share of the updates lowered the posterior
DESCENT_LEVEL = 0.95


@torch.no_grad()
def repeated_updates(q: torch.Tensor, c: torch.Tensor, w_k: torch.Tensor, heads: int, scale: float,
                     gamma_attn: float, gamma_norm: float, n_steps: int = 30,
                     prior_form: str = "published") -> np.ndarray:
    r"""Energies of one layer's context along ``n_steps`` repeated EBCU updates (the layer's inputs fixed).

    ``c_{t+1} = c_t + dC(c_t)`` with ``dC = (gamma_attn A - gamma_norm R) W_k`` (:func:`ebca_viz.energy.context_update`,
    ``prior_form`` as the processors use it). ``q (B,H,P,d)``, ``c (B,N,D)``, ``w_k (H d, D)``; computed in float64.

    Returns ``(n_steps + 1, 3)``: E(K;Q), E(K) (paper prior, as everywhere in this module) and their sum at
    ``c_0 .. c_n`` (summed over the batch).
    """
    from .energy import context_update

    if n_steps < 1:
        raise InvalidSetting(f"n_steps must be >= 1, got {n_steps}")
    q, c, w_k = q.double(), c.double(), w_k.double()
    out = []
    for t in range(n_steps + 1):
        out.append(_terms(q, c, w_k, heads, scale).sum(-1))
        if t < n_steps:
            k = split_heads(c @ w_k.T, heads)
            c = c + context_update(attention_scores(q, k, scale), q, k, w_k, gamma_attn, gamma_norm,
                                   prior_form=prior_form)
    return torch.stack(out).cpu().numpy()


def tuning_updates(pipe, config, n: int = 8, steps: int = 25, guidance_scale: float = 3.0,
                   gammas: Sequence[float] = TOUR_GAMMAS, seed_base: int = 100_000):
    """:func:`record_updates` on the shapes world's **tuning** two-object prompts and seeds (split ``"tune"``,
    seeds ``seed_base + i``: those of ``benchmarks/shapes_sweep.py``, disjoint from the reported ones), with the
    step-size sweep evaluated at ``gammas`` (gamma_attn; gamma_norm scaled alike).

    Returns ``(images, UpdateRecord, prompts)``; ``record.gamma_attn() * record.scales == gammas``."""
    from .experiments.multiconcept import prompt_items

    if n < 1:
        raise InvalidSetting(f"n must be >= 1 seed, got {n}")
    ga = float(config.gamma_attn)
    if ga <= 0:
        raise InvalidSetting(f"config.gamma_attn must be > 0 to record updates, got {ga}")
    g = np.asarray(gammas, np.float64)
    if g.ndim != 1 or g.size == 0 or np.any(g <= 0):
        raise InvalidSetting(f"gammas must be a non-empty list of positive step sizes, got {gammas!r}")
    _, prompts, seeds = prompt_items("tune", n, seed_base)
    images, rec = record_updates(pipe, prompts, config, seeds=seeds, steps=steps, guidance_scale=guidance_scale,
                                 scales=g / ga)
    return images, rec, prompts


def largest_descending_gamma(gammas: Sequence[float], rates: Sequence, level: float = DESCENT_LEVEL):
    """The tour's rule: the largest swept gamma whose share of descending updates ``rate.p >= level``.

    ``gammas (G,)``, ``rates``: one :class:`~ebca_viz.claims.Rate` per gamma (:meth:`UpdateRecord.sweep_rates`).
    Returns ``(index, gamma)``, or ``(None, None)`` when no swept gamma reaches ``level``."""
    g = [float(x) for x in gammas]
    if len(g) != len(rates):
        raise InvalidSetting(f"gammas ({len(g)}) and rates ({len(rates)}) differ in length; "
                             "fix: pass one rate per gamma")
    if not 0 < level <= 1:
        raise InvalidSetting(f"level must be in (0, 1], got {level}")
    ok = [i for i in range(len(g)) if rates[i].p >= level]
    if not ok:
        return None, None
    i = max(ok, key=lambda j: g[j])
    return i, g[i]


__all__ = ["KINDS", "DEFAULT_SCALES", "sweep_changes", "UpdateRecorder", "UpdateRecord", "record_updates", "first_order_change",
           "sweep_step_size", "TOUR_GAMMAS", "DESCENT_LEVEL", "repeated_updates", "tuning_updates",
           "largest_descending_gamma"]
