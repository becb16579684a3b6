r"""Recorder: what every cross-attention layer saw and did, per sampling step.

::

    with ebca_viz.trace(pipe) as tr:                     # with or without energy_attention / SEG
        image = pipe("A lion with a crown", num_inference_steps=50).images[0]
    tr.maps(token="crown")                               # (token, H, W)
    tr.energies(kind="posterior", when="after")          # (step, layer)
    tr.save("lion.safetensors"); tr2 = ebca_viz.load_trace("lion.safetensors")

Named dimensions of the accessors (each returns a plain CPU tensor in this order):
``step`` (recorded sampling steps, :attr:`Trace.steps`), ``layer`` (recorded
cross-attention layers in execution order, :attr:`Trace.layers`), ``token`` (context
positions, 0 = start-of-text, labels in :attr:`Trace.tokens`), ``H, W`` (the common map
grid :attr:`Trace.map_grid`), ``D`` (context width). ``image=i`` (default 0) picks one image
of the batch; ``image=None`` keeps a leading ``image`` dimension.

What is recorded, for one layer with queries ``Q (H heads, P pixels)``, context
``C_in`` (what the layer attended to), ``C_out`` (what the next layer receives; equal to
``C_in`` without EBCU), scores ``S = beta Q K^T`` -- all on the **conditional** rows of
the UNet batch (the images; with CFG the second half):

* **maps**: ``M[t, p] = mean_heads softmax_t(S)[p, t]`` on the layer grid ``(h, w)``, resized
  to ``map_grid`` (area average down, bilinear up; both convex, so ``sum_t M[t, p] = 1`` at
  every pixel survives). Kept as running sums per layer (over steps) and per step (over
  layers); every ``(step, layer)`` map only with ``quantities=[..., "layer_maps"]``.
  ``normalize="spatial"`` in :meth:`Trace.maps` rescales each token's map to sum to 1 over pixels.
* **energies** (docs/method.md, heads averaged, ``alpha`` = :attr:`Trace.alpha`, default 0), for
  ``K = K(C_in)`` (``when="before"``) and ``K = K(C_out)`` (``when="after"``):
  ``E(Q;K) = alpha/2 sum_i |q_i|^2 - sum_i lse_j S_ij`` (``kind="query"``),
  ``E(K;Q) = alpha/2 sum_j |k_j|^2 - sum_j lse_i S_ij`` (``"context"``),
  ``E(K) = lse_j 1/2 |k_j|^2`` heads concatenated (``"prior"``), ``E(K;Q) + E(K)`` (``"posterior"``).
* **context_norms**: ``|c_in,t|``, ``|c_out,t|`` and the drift ``|c_out,t - c_prompt,t|`` per token.
* **contexts** (opt-in): ``C_out`` per layer and the prompt embedding per step.
* **seg**: with :func:`~ebca_viz.smoothed_energy_guidance` installed, the self-attention energy
  ``E = -sum_i lse_j(beta q_i . k_j)`` (heads averaged; ``beta`` = the layer's scale, i.e. the
  logits its softmax uses) of the blurred rows and of the reference rows: the conditional branch
  (published convention), or, with the paper's convention and CFG, the unconditional half's own
  queries before it is blurred in place.

How it attaches (no class is patched, everything is undone on exit, also on errors):
a forward pre-hook (prepended, so it sees the caller's batch before SEG appends its branch)
and a forward hook on the UNet instance count steps; if an :class:`~ebca_viz.EBCAController`
is installed -- before the trace or later inside it -- the trace subscribes as its observer
and records the cascading contexts; otherwise it puts a
:class:`~ebca_viz.tracing.processor.RecordingCrossAttnProcessor` (plain diffusers attention)
on the recorded layers (:attr:`Trace.mode` says which of the two the latest call used). A
forward hook on the pipeline's text encoder reads the token ids for the labels (the call whose
output is the context's conditional rows). Several sampling runs in one trace continue the
``step`` axis (:attr:`Trace.run_starts`); step filters apply within each run.

Memory: everything is stored on the CPU; ``dtype`` (default fp16) applies to the large items
(``layer_maps``, ``contexts``), running sums and scalars are fp32. On a GPU one step's items are
staged on the device and copied to the host once per UNet call; the per-layer running sums stay
on the device until the trace ends (they are counted in the budget all the same). Every item is
reserved against ``budget_bytes`` before it is allocated (:mod:`ebca_viz.tracing.budget`); with a
pipeline the whole run is projected at its first UNet call. :meth:`Trace.estimate_bytes` gives
the figure before sampling. Defaults on SD 1.5 (16 layers, 77 tokens, 32x32 map grid, 50 steps,
one image): about 22 MB.
"""
from __future__ import annotations

import json
from pathlib import Path
import math
from typing import Optional

import torch
import torch.nn.functional as F

from ..attach import _exec_order, cross_attention_keys, module_of, resolve_target, self_attention_keys, unet_call_parts
from ..events import EBCA, SEG, TRACE, StepClock, first_timestep, kind_of, read_cfg, token_words
from ..energy import attention_scores, merge_heads
from .budget import DEFAULT_BUDGET, Budget, TraceBudgetError, check_budget_args, mib
from .filters import QUANTITIES, StepFilter, select_layers, select_quantities
from ..attn_io import layer_keys
from .processor import RecordingCrossAttnProcessor

FORMAT = "ebca_viz.trace/1"
ENERGY_KINDS = ("query", "context", "prior", "posterior")
WHEN = ("before", "after")
MAP_GRID_CAP = 32  # default common grid: the largest recorded layer grid, at most 32 per side
_DTYPES = {"float16": torch.float16, "bfloat16": torch.bfloat16, "float32": torch.float32}


# ---------------------------------------------------------------------------------------------
# quantities of one layer call
# ---------------------------------------------------------------------------------------------
def layer_energies(q: torch.Tensor, k: torch.Tensor, scores: torch.Tensor, alpha: float = 0.0) -> torch.Tensor:
    """``q (B,H,P,d)``, ``k (B,H,N,d)``, ``S (B,H,P,N)`` -> ``(4, B)``: E(Q;K), E(K;Q), E(K), posterior.

    Same definitions as :mod:`ebca_viz.energy` (fp32), from scores already computed.
    """
    s = scores.float()
    eq = -torch.logsumexp(s, dim=-1).sum(-1)  # (B, H)
    ek = -torch.logsumexp(s, dim=-2).sum(-1)
    if alpha:
        eq = eq + 0.5 * alpha * q.float().pow(2).sum(dim=(-1, -2))
        ek = ek + 0.5 * alpha * k.float().pow(2).sum(dim=(-1, -2))
    eq, ek = eq.mean(1), ek.mean(1)
    prior = torch.logsumexp(0.5 * merge_heads(k.float()).pow(2).sum(-1), dim=-1)
    return torch.stack([eq, ek, prior, ek + prior])


def self_attention_energy(q: torch.Tensor, k: torch.Tensor, scale: float, max_elems: int = 2**24) -> torch.Tensor:
    """``E = -sum_i lse_j(beta q_i . k_j)``, heads averaged: ``(B,H,P,d), (B,H,P,d) -> (B,)``.

    Computed in query chunks so that no more than ``max_elems`` scores exist at once
    (a 64x64 self-attention layer would otherwise need a 4096 x 4096 matrix per head).
    """
    b, h, p, _ = q.shape
    chunk = max(1, max_elems // max(1, b * h * k.shape[2]))
    total = torch.zeros(b, h, dtype=torch.float32, device=q.device)
    kt = k.float().transpose(-1, -2)
    for i in range(0, p, chunk):
        s = torch.matmul(q[:, :, i : i + chunk].float(), kt) * scale
        total -= torch.logsumexp(s, dim=-1).sum(-1)
    return total.mean(1)


def resize_map(m: torch.Tensor, grid: tuple) -> torch.Tensor:
    """``(..., h, w) -> (..., gh, gw)``: area average when shrinking, bilinear when growing.

    Both are convex combinations of pixels, so a map that sums to 1 over tokens at every pixel
    still does.
    """
    h, w = m.shape[-2:]
    if (h, w) == tuple(grid):
        return m
    lead = m.shape[:-2]
    x = m.reshape(-1, 1, h, w)
    if h >= grid[0] and w >= grid[1]:
        x = F.adaptive_avg_pool2d(x, grid)
    else:
        x = F.interpolate(x, size=grid, mode="bilinear", align_corners=False)
    return x.reshape(*lead, *grid)


def predicted_grid(unet, key: str, latent_hw: tuple) -> tuple:
    """Grid of a layer from its block position (each down block but the last halves, with ceil)."""
    parts = key.split(".")
    n_down = len(unet.down_blocks)
    if parts[0] == "down_blocks":
        f = 2 ** int(parts[1])
    elif parts[0] == "up_blocks":
        f = 2 ** (len(unet.up_blocks) - 1 - int(parts[1]))
    else:
        f = 2 ** (n_down - 1)
    return (-(-latent_hw[0] // f), -(-latent_hw[1] // f))


def unet_calls(pipe, num_steps: int) -> int:
    """UNet calls of a ``num_steps`` run: the length of the timesteps a fresh copy of the pipeline's
    scheduler sets (PNDM: ``num_steps + 1``; Heun: ``2 num_steps - 1``); ``num_steps`` without one."""
    sched = getattr(pipe, "scheduler", None) if pipe is not None else None
    if sched is None or not hasattr(sched, "set_timesteps") or not hasattr(sched, "config"):
        return num_steps
    try:
        fresh = type(sched).from_config(sched.config)
        fresh.set_timesteps(num_steps)
        return len(fresh.timesteps)
    except Exception:  # a scheduler that needs more arguments: count the sampling steps
        return num_steps


def _resolve_map_grid(map_grid, grids: list) -> tuple:
    if map_grid is not None:
        return map_grid
    h, w = max(grids, key=lambda g: g[0] * g[1])
    s = min(1.0, MAP_GRID_CAP / max(h, w))
    return (max(1, round(h * s)), max(1, round(w * s)))


def _check_map_grid(map_grid):
    if map_grid is None:
        return None
    if isinstance(map_grid, int) and not isinstance(map_grid, bool):
        map_grid = (map_grid, map_grid)
    if (
        not isinstance(map_grid, (tuple, list))
        or len(map_grid) != 2
        or not all(isinstance(x, int) and not isinstance(x, bool) and x > 0 for x in map_grid)
    ):
        raise ValueError(f"map_grid must be None (auto), a positive int or (height, width), got {map_grid!r}")
    return tuple(map_grid)


# ---------------------------------------------------------------------------------------------
# the recorder
# ---------------------------------------------------------------------------------------------
class Trace:
    """Recording of one (or several consecutive) sampling runs; see the module docstring.

    Create it with :func:`trace`; use it as a context manager. Accessors work during and after
    the ``with`` block and on a trace loaded with :func:`load_trace`.
    """

    def __init__(
        self, target, layers=None, steps=None, quantities=None, map_grid=None, dtype=torch.float16,
        budget_bytes=DEFAULT_BUDGET, on_budget="error", num_steps=None, cfg=None, alpha=0.0,
    ):
        self.pipe, self.unet = resolve_target(target)
        all_keys = cross_attention_keys(self.unet)
        if not all_keys:
            raise TypeError("unsupported architecture: this UNet has no cross-attention layers")
        self.layers = select_layers(all_keys, layers)
        self.quantities = select_quantities(quantities)
        self._steps_filter = StepFilter(steps)
        self.steps_spec = steps
        self.map_grid = _check_map_grid(map_grid)
        if not isinstance(dtype, torch.dtype) or not dtype.is_floating_point:
            raise TypeError(f"dtype must be a floating torch dtype such as torch.float16, got {dtype!r}")
        self.dtype = dtype
        self.budget = Budget(check_budget_args(budget_bytes, on_budget), on_budget)
        if num_steps is not None and (isinstance(num_steps, bool) or not isinstance(num_steps, int) or num_steps < 1):
            raise ValueError(f"num_steps must be a positive int (the run length), got {num_steps!r}")
        self.num_steps = num_steps
        if cfg is not None and not isinstance(cfg, bool):
            raise TypeError("cfg must be None (auto), True or False")
        self.cfg = cfg
        if isinstance(alpha, bool) or not isinstance(alpha, (int, float)) or not math.isfinite(alpha):
            raise ValueError(f"alpha must be a finite number (docs/method.md uses 0), got {alpha!r}")
        self.alpha = float(alpha)
        self._pos = {k: i for i, k in enumerate(self.layers)}
        self._all_index = {k: i for i, k in enumerate(all_keys)}
        # run state
        self.clock = StepClock()  # .step: within the run; .calls: over all runs
        self.n_uncond = 0
        self.b2 = 0
        self.latent_hw = None
        self.wants_events = False
        self._selected = None
        self._stage: dict = {}
        self._seg_ctl = None
        # record
        self.grids: dict = {}
        self.execution_order: list = []
        self.seg_layers: list = []
        self.timesteps: list = []  # per UNet call (global step)
        self.run_starts: list = []  # global step at which each run started
        self.token_labels: Optional[list] = None  # per image: list of N labels
        self.mode: Optional[str] = None  # "ebca" (observer of a controller) or "plain" (own processors)
        self._shape = None  # (B, N, D, latent_hw)
        self._sums: dict = {}  # running per-layer map sums (device until the end)
        self._records: dict = {}  # global step -> {item: CPU tensor}
        self._stacked_cache = None
        self._frozen: Optional[dict] = None  # loaded traces: stacked tensors
        # installation
        self._state = "new"
        self._handles: list = []
        self._own: dict = {}  # key -> (our processor, the processor it replaced)
        self._subscribed: list = []
        self._te_calls: list = []

    @property
    def step(self) -> int:
        """Global index of the current UNet call (over all runs of this trace; -1 before the first)."""
        return self.clock.calls - 1

    # -- lifecycle -----------------------------------------------------------------------------
    def __enter__(self) -> "Trace":
        self.start()
        return self

    def __exit__(self, *exc):
        self.stop()
        return False

    def start(self) -> "Trace":
        if self._state != "new":
            raise RuntimeError("this trace has already been used; create a new one with ebca_viz.trace(...)")
        unet = self.unet
        for p in unet.attn_processors.values():
            if kind_of(p) == TRACE and p.sink is not None:
                raise RuntimeError("another trace is already recording this UNet; leave its `with` first")
        self._state = "active"
        try:
            ctl = self._discover()
            if ctl is None:
                self._install_processors()
            self._handles.append(unet.register_forward_pre_hook(self._pre, with_kwargs=True, prepend=True))
            self._handles.append(unet.register_forward_hook(self._post, with_kwargs=True, always_call=True))
            te = getattr(self.pipe, "text_encoder", None) if self.pipe is not None else None
            if isinstance(te, torch.nn.Module) and getattr(self.pipe, "tokenizer", None) is not None:
                self._handles.append(te.register_forward_hook(self._te_hook, with_kwargs=True))
        except BaseException:
            self.stop()
            raise
        return self

    def stop(self) -> None:
        """Detach: remove hooks, unsubscribe, put back the processors this trace replaced."""
        if self._state != "active":
            return
        self._state = "done"
        self.wants_events = False
        for h in self._handles:
            h.remove()
        self._handles.clear()
        for ctl in self._subscribed:
            while self in ctl.observers:
                ctl.observers.remove(self)
        self._subscribed.clear()
        if self._own:
            current = dict(self.unet.attn_processors)
            for k, (mine, orig) in self._own.items():
                mine.sink = None  # inert if someone else still holds it
                if current.get(k) is mine:
                    current[k] = orig
            self.unet.set_attn_processor(current)
            self._own.clear()
        self._te_calls.clear()
        self._stage.clear()
        self._sums = {k: v.cpu() for k, v in self._sums.items()}
        self._stacked_cache = None
        nothing = not self._records and (not self._sums or float(self._sums["count"].sum()) == 0)
        self._consolidate()
        if self.budget.dropped:
            import warnings

            kept = len(self._meta_steps)
            warnings.warn(f"trace: budget_bytes={self.budget.limit} ({mib(self.budget.limit)}) held {kept} of the "
                          f"{len(self.timesteps)} UNet calls; dropped {len(self.budget.dropped)} items from "
                          f"{self.budget.dropped[0]['item']} on (tr.dropped lists them)", UserWarning, stacklevel=3)
        if self.timesteps and nothing and self.steps_spec is not None:
            import warnings

            warnings.warn(f"trace recorded nothing: the steps filter {self.steps_spec!r} matched none of the "
                          f"{len(self.timesteps)} UNet calls of this run (steps are 0..{len(self.timesteps) - 1})",
                          UserWarning, stacklevel=3)

    def _install_processors(self):
        from ..attach import custom_processors

        custom = custom_processors(self.unet, self.layers)
        if custom:
            k, cls = next(iter(custom.items()))
            raise ValueError(
                f"trace: {len(custom)} cross-attention layers run a custom processor ({cls} on {k}); recording "
                "would replace it, so the traced image would not be the one your processor makes. Trace a UNet "
                "with diffusers' processors (unet.set_default_attn_processor()), or inside ebca_viz.energy_attention")
        current = dict(self.unet.attn_processors)
        for k in self.layers:
            self._own[k] = (RecordingCrossAttnProcessor(self, k, self._all_index[k]), current[k])
        current.update({k: v[0] for k, v in self._own.items()})
        self.unet.set_attn_processor(current)
        self.mode = "plain"

    def _discover(self):
        """Subscribe to EBCA / SEG controllers found on the UNet (they may appear mid-trace)."""
        ctl = None
        if not hasattr(self, "_cross_modules"):
            self._cross_modules = [module_of(self.unet, k) for k in self.layers]
            self._self_modules = [module_of(self.unet, k) for k in self_attention_keys(self.unet)]
        for m in self._cross_modules:
            if kind_of(m.processor) == EBCA:
                ctl = m.processor.ctl
                break
        if ctl is not None and self not in ctl.observers:
            if any(isinstance(o, Trace) for o in ctl.observers):
                raise RuntimeError("another trace is already recording this UNet; leave its `with` first")
            ctl.observers.append(self)
            self._subscribed.append(ctl)
        if ctl is not None:
            self.mode = "ebca"
        elif self._own:
            self.mode = "plain"
        seg = None
        if "seg" in self.quantities:
            for m in self._self_modules:
                if kind_of(m.processor) == SEG:
                    seg = m.processor.ctl
                    break
            if seg is not None and self not in seg.observers:
                seg.observers.append(self)
                self._subscribed.append(seg)
        self._seg_ctl = seg
        return ctl

    # -- hooks ---------------------------------------------------------------------------------
    def _te_hook(self, module, args, kwargs, output):
        ids = args[0] if args else kwargs.get("input_ids")
        if isinstance(output, (tuple, list)):
            last, hidden = output[0], (output[2] if len(output) > 2 else None)
        else:
            last, hidden = getattr(output, "last_hidden_state", None), getattr(output, "hidden_states", None)
        cands = [last] + ([hidden[-2]] if isinstance(hidden, (tuple, list)) and len(hidden) > 1 else [])
        cands = [h.detach() for h in cands if torch.is_tensor(h) and h.ndim == 3]
        if torch.is_tensor(ids) and cands:
            self._te_calls = (self._te_calls + [(ids.detach().cpu(), cands)])[-8:]

    def _pre(self, module, args, kwargs):
        self.wants_events = False
        self._stage = {}
        sample, t, ehs = unet_call_parts(args, kwargs)
        ctl = self._discover()
        if ctl is not None and ctl.paused:
            return None
        if not torch.is_tensor(ehs) or ehs.ndim != 3 or not torch.is_tensor(sample) or sample.ndim != 4:
            return None
        new_run = self.clock.tick(t)
        self.timesteps.append(first_timestep(t))
        b2 = ehs.shape[0]
        # the controller's own decision where one is installed (its explicit cfg=, else the pipeline's)
        setting = self.cfg if self.cfg is not None or ctl is None else ctl.config.cfg
        cfg = read_cfg(self.pipe, setting, bare_unet=ctl is not None)
        if cfg and b2 % 2:
            raise ValueError(f"trace: cfg=True needs an even UNet batch [uncond; cond], got {b2}; pass cfg=False to trace()")
        self.b2, self.n_uncond = b2, (b2 // 2 if cfg else 0)
        self.latent_hw = tuple(sample.shape[-2:])
        B, N, D = b2 - self.n_uncond, ehs.shape[1], ehs.shape[2]
        if new_run:
            self._start_run(ehs, (B, N, D, self.latent_hw))
        if self._selected is not None and self.clock.step not in self._selected:
            return None
        self._begin_step(ehs)
        return None

    def _start_run(self, ehs, shape):
        self.run_starts.append(self.step)
        if self._shape is None:
            self._shape = shape
        elif shape != self._shape:
            raise ValueError(
                f"trace: this run has (images, tokens, dim, latent) = {shape}, the first run {self._shape}; "
                "one trace records runs of one shape -- use a new trace"
            )
        T = self.num_steps
        if T is None and self.pipe is not None:
            T = getattr(getattr(self.pipe, "scheduler", None), "num_inference_steps", None)
        self._run_T = T
        self._selected = self._steps_filter.resolve(T)
        B, N, D, latent = shape
        if self.map_grid is None:
            self.map_grid = _resolve_map_grid(None, [predicted_grid(self.unet, k, latent) for k in self.layers])
        self._read_tokens(ehs)
        if T is not None:
            calls = T
            if self.num_steps is None:  # the scheduler's own timesteps: PNDM calls the UNet T + 1 times
                ts = getattr(getattr(self.pipe, "scheduler", None), "timesteps", None)
                calls = len(ts) if ts is not None and len(ts) >= T else T
            n_sel = calls if self._selected is None else len([s for s in self._selected if 0 <= s < calls])
            need = self._bytes(n_sel, B, N, D, len(self._seg_layer_keys()), fixed=not self._sums)
            self.budget.check_projection(need, f"recording {n_sel} steps of {len(self.layers)} layers")
        if "maps" in self.quantities and not self._sums and "maps:layers" not in [d["item"] for d in self.budget.dropped]:
            shp = (len(self.layers), B, N) + self.map_grid
            sums = 4 * (math.prod(shp) + len(self.layers))
            per_step = self._bytes(1, B, N, D, len(self._seg_layer_keys()), fixed=False)
            if self.budget.on_budget == "drop" and not self.budget.fits(sums + per_step):
                # the per-layer running sums would leave no room for a single step: keep steps instead
                self.budget.dropped.append({"step": None, "item": "maps:layers", "bytes": int(sums)})
            elif self.budget.reserve(sums, "maps:layers", None):
                dev = ehs.device
                self._sums = {"sum": torch.zeros(shp, device=dev), "count": torch.zeros(len(self.layers), device=dev)}

    def _seg_layer_keys(self):
        if self._seg_ctl is None:
            return []
        return sorted(self._seg_ctl.keys, key=_exec_order)

    def _item_shapes(self, B, N, D, n_seg):
        """``item -> (shape, dtype)`` stored per recorded step."""
        L, g, dt = len(self.layers), self.map_grid, self.dtype
        out = {}
        if "energies" in self.quantities:
            out["energies"] = ((L, 2, 4, B), torch.float32)
        if "context_norms" in self.quantities:
            out["norms"] = ((L, 3, B, N), torch.float32)
        if "seg" in self.quantities and n_seg:
            out["seg"] = ((n_seg, 2, B), torch.float32)
        if "maps" in self.quantities:
            out["map_step_sum"] = ((B, N) + g, torch.float32)
            out["map_step_count"] = ((), torch.float32)
        if "layer_maps" in self.quantities:
            out["layer_maps"] = ((L, B, N) + g, dt)
        if "contexts" in self.quantities:
            out["contexts"] = ((L, B, N, D), dt)
            out["prompt_embeds"] = ((B, N, D), dt)
        return out

    def _bytes(self, n_steps, B, N, D, n_seg, fixed=True) -> int:
        shapes = self._item_shapes(B, N, D, n_seg).values()
        per = sum(math.prod(s) * torch.empty((), dtype=d).element_size() for s, d in shapes)
        total = n_steps * per
        if fixed and "maps" in self.quantities:
            total += 4 * len(self.layers) * (B * N * math.prod(self.map_grid) + 1)  # sums + counts
        return total

    def _begin_step(self, ehs):
        B, N, D, _ = self._shape
        seg_keys = self._seg_layer_keys()
        if seg_keys and not self.seg_layers:
            self.seg_layers = seg_keys
        if seg_keys and seg_keys != self.seg_layers:
            seg_keys = []  # a different SEG installation in the same trace: not recorded
        dev = ehs.device
        stage = {}
        items = self._item_shapes(B, N, D, len(seg_keys))
        nb = sum(math.prod(shape) * torch.empty((), dtype=dt).element_size() for shape, dt in items.values())
        # one reservation per step: a step is stored whole or not at all (the record stays a complete prefix)
        if items and self.budget.reserve(nb, "step (" + ", ".join(items) + ")", self.step):
            for item, (shape, dt) in items.items():
                fill = float("nan") if item in ("energies", "norms", "seg") else 0.0
                stage[item] = torch.full(shape, fill, dtype=dt, device=dev)
        if "prompt_embeds" in stage:
            stage["prompt_embeds"].copy_(ehs[self.n_uncond : self.b2])
        self._prompt = ehs[self.n_uncond : self.b2].float()
        self._stage = stage
        # after a drop nothing more is stored (not even into the running sums): the record is a prefix
        self.wants_events = bool(stage) or (bool(self._sums) and not self.budget.full)

    def _post(self, module, args, kwargs, output):
        stage, self._stage = self._stage, {}
        was, self.wants_events = self.wants_events, False
        if not was or output is None or not stage:
            return None
        self._records[self.step] = {k: v.cpu() for k, v in stage.items()}
        self._stacked_cache = None
        return None

    def _read_tokens(self, ehs):
        """Token labels of the conditional rows, from the text-encoder call whose output they are."""
        calls, self._te_calls = self._te_calls, []
        tok = getattr(self.pipe, "tokenizer", None) if self.pipe is not None else None
        if tok is None or not calls:
            return
        cond = ehs[self.n_uncond : self.b2]
        B = cond.shape[0]
        for ids, cands in reversed(calls):
            for hs in cands:  # last hidden state (SD 1.x/2.x) or the penultimate one (SDXL: a prefix of the context)
                p, d = hs.shape[0], hs.shape[-1]
                if hs.shape[1] != cond.shape[1] or d > cond.shape[-1] or B % p:
                    continue
                ref = hs.to(device=cond.device, dtype=cond.dtype).repeat_interleave(B // p, dim=0)
                if torch.allclose(ref, cond[..., :d], rtol=1e-3, atol=1e-4):
                    ids = ids.repeat_interleave(B // p, dim=0)
                    self.token_labels = [token_words(tok, row.tolist()) for row in ids]
                    return

    # -- observer interface (EBCAController, SEGController, own processors) -----------------------
    @torch.no_grad()
    def on_cross_attention(self, ev) -> None:
        if not self.wants_events:
            return
        li = self._pos.get(ev.name)
        if li is None:
            return
        st = self._stage
        rows = slice(self.n_uncond, self.b2)
        if ev.name not in self.grids:
            self.grids[ev.name] = tuple(ev.grid)
        if ev.name not in self.execution_order:
            self.execution_order.append(ev.name)
        B = self.b2 - self.n_uncond
        if "map_step_sum" in st or "layer_maps" in st or self._sums:
            h, w = ev.grid
            m = ev.probs[rows].mean(1, dtype=torch.float32).transpose(1, 2).reshape(B, -1, h, w)
            m = resize_map(m, self.map_grid)
            if self._sums:
                self._sums["sum"][li] += m
                self._sums["count"][li] += 1
            if "map_step_sum" in st:
                st["map_step_sum"] += m
                st["map_step_count"] += 1
            if "layer_maps" in st:
                st["layer_maps"][li] = m.to(self.dtype)
        if "energies" in st:
            q, k = ev.query[rows], ev.key[rows]
            before = layer_energies(q, k, ev.scores[rows], self.alpha)
            if ev.context_out is ev.context_in:
                after = before
            else:
                k2 = layer_keys(ev.attn, ev.context_out[rows].to(ev.context_in.dtype))
                after = layer_energies(q, k2, attention_scores(q.float(), k2.float(), ev.attn.scale), self.alpha)
            st["energies"][li, 0] = before
            st["energies"][li, 1] = after
        if "norms" in st or "contexts" in st:
            cin, cout = ev.context_in[rows].float(), ev.context_out[rows].float()
            if "norms" in st:
                st["norms"][li, 0] = cin.norm(dim=-1)
                st["norms"][li, 1] = cout.norm(dim=-1)
                st["norms"][li, 2] = (cout - self._prompt).norm(dim=-1)
            if "contexts" in st:
                st["contexts"][li] = cout.to(self.dtype)

    @torch.no_grad()
    def on_seg_attention(self, ev) -> None:
        """Energy of the blurred rows and of the reference: the conditional rows the extra branch was
        copied from (published convention, or no CFG), or, where the unconditional half is blurred in
        place (paper convention with CFG), that half's own queries before the blur."""
        st = self._stage
        if not self.wants_events or "seg" not in st or ev.name not in self.seg_layers:
            return
        i = self.seg_layers.index(ev.name)
        rows, scale = ev.rows, ev.attn.scale
        st["seg"][i, 0] = self_attention_energy(ev.query[rows], ev.key[rows], scale)
        b = rows.stop - rows.start
        if rows.start >= b:  # an appended branch: its source, the conditional rows just before it
            ref = slice(rows.start - b, rows.start)
            st["seg"][i, 1] = self_attention_energy(ev.query[ref], ev.key[ref], scale)
        else:  # blurred in place
            st["seg"][i, 1] = self_attention_energy(ev.unblurred_query, ev.key[rows], scale)

    # -- memory ----------------------------------------------------------------------------------
    @property
    def nbytes(self) -> int:
        """Host bytes reserved by this trace (all stored tensors; equals their summed ``nbytes``)."""
        return self.budget.used

    @property
    def dropped(self) -> list:
        """Items not stored because of ``on_budget="drop"``: ``[{"step", "item", "bytes"}]``."""
        return list(self.budget.dropped)

    def estimate_bytes(self, num_steps: int = 50, height: Optional[int] = None, width: Optional[int] = None,
                       batch: int = 1, tokens: Optional[int] = None, seg_layers: Optional[int] = None) -> int:
        """Host bytes this trace will store for one run, before sampling.

        Args:
            num_steps: sampling steps of the run; the UNet calls are counted with the pipeline's
                scheduler (PNDM, SD 1.5's default, makes ``num_steps + 1``), and the ``steps`` filter
                is applied to them.
            height, width: image size in pixels for a pipeline (divided by its VAE factor);
                for a bare UNet, the latent size. Default: the UNet's ``sample_size``.
            batch: images per run (the conditional rows: prompts x images per prompt).
            tokens: context length (default: the tokenizer's ``model_max_length``, else 77).
            seg_layers: SEG-blurred layers (default: those of an installed SEG, else 0).
        """
        if self.unet is None:
            raise RuntimeError("a loaded trace has no UNet to estimate for; use ebca_viz.estimate_bytes(pipe, ...)")
        for nm, v in (("num_steps", num_steps), ("batch", batch)):
            if isinstance(v, bool) or not isinstance(v, int) or v < 1:
                raise ValueError(f"{nm} must be a positive int, got {v!r}")
        for nm, v in (("height", height), ("width", width), ("tokens", tokens), ("seg_layers", seg_layers)):
            if v is not None and (isinstance(v, bool) or not isinstance(v, int) or v < (0 if nm == "seg_layers" else 1)):
                raise ValueError(f"{nm} must be a positive int (or None for the default), got {v!r}")
        f = getattr(self.pipe, "vae_scale_factor", 1) if self.pipe is not None else 1
        s = self.unet.config.sample_size
        s = s if isinstance(s, (tuple, list)) else (s, s)
        lh = -(-height // f) if height else s[0]
        lw = -(-width // f) if width else s[1]
        if tokens is None:
            tok = getattr(self.pipe, "tokenizer", None) if self.pipe is not None else None
            tokens = getattr(tok, "model_max_length", 77) or 77
        D = self.unet.config.cross_attention_dim
        D = D[0] if isinstance(D, (tuple, list)) else D
        if seg_layers is None:
            self._discover_seg_only()
            seg_layers = len(self._seg_layer_keys())
        grid = self.map_grid or _resolve_map_grid(None, [predicted_grid(self.unet, k, (lh, lw)) for k in self.layers])
        saved, self.map_grid = self.map_grid, grid
        try:
            sel = self._steps_filter.resolve(num_steps)
            calls = unet_calls(self.pipe, num_steps)
            n = calls if sel is None else len([x for x in sel if 0 <= x < calls])
            return self._bytes(n, batch, tokens, D, seg_layers)
        finally:
            self.map_grid = saved

    def _discover_seg_only(self):
        if self._seg_ctl is None and "seg" in self.quantities:
            for k in self_attention_keys(self.unet):
                p = module_of(self.unet, k).processor
                if kind_of(p) == SEG:
                    self._seg_ctl = p.ctl
                    return

    # -- stacked view ----------------------------------------------------------------------------
    @property
    def steps(self) -> list:
        """Global step indices (UNet calls since the trace began) that hold data: the ``step`` axis."""
        if self._frozen is not None:
            return list(self._meta["steps"])
        if getattr(self, "_done_stacked", None) is not None:
            return list(self._meta_steps)
        return sorted(self._records)

    @property
    def step_timesteps(self) -> list:
        """Scheduler timestep of each recorded step (aligned with :attr:`steps`)."""
        return [self.timesteps[s] for s in self.steps] if self._frozen is None else list(self._meta["step_timesteps"])

    @property
    def tokens(self) -> Optional[list]:
        """Token labels of image 0 (``None`` when the prompt was not seen, e.g. a bare UNet)."""
        return None if self.token_labels is None else self.token_labels[0]

    def _consolidate(self) -> None:
        """Stack the per-step records once and free them: the trace then holds each value once, so the
        accessors add nothing to what the budget accounted."""
        self._meta_steps = sorted(self._records)
        if self._shape is None or self.map_grid is None:  # nothing was recorded (e.g. an error before step 0)
            return
        stacked = self._stacked()
        self._records = {}
        self._done_stacked = stacked

    def _stacked(self) -> dict:
        if self._frozen is not None:
            return self._frozen
        if getattr(self, "_done_stacked", None) is not None:
            return self._done_stacked
        if self._stacked_cache is not None:
            return self._stacked_cache
        steps = self.steps
        out = {}
        if self._shape is not None:
            B, N, D, _ = self._shape
            for item, (shape, dt) in self._item_shapes(B, N, D, len(self.seg_layers)).items():
                have = [self._records[s].get(item) for s in steps]
                if not any(x is not None for x in have):
                    continue
                fill = float("nan") if item in ("energies", "norms", "seg") else 0.0
                blank = torch.full(shape, fill, dtype=dt)
                out[item] = torch.stack([x if x is not None else blank for x in have]) if steps else None
            if self._sums:
                out["map_layer_sum"] = self._sums["sum"].cpu()
                out["map_layer_count"] = self._sums["count"].cpu()
        out = {k: v for k, v in out.items() if v is not None}
        self._stacked_cache = out
        return out

    def _need(self, item, quantity):
        t = self._stacked().get(item)
        if t is None:
            why = "it was dropped (on_budget='drop')" if quantity in self.quantities else f"add {quantity!r} to quantities="
            raise ValueError(f"this trace has no {quantity!r} data: {why}")
        return t

    @staticmethod
    def _image(t: torch.Tensor, image, dim: int) -> torch.Tensor:
        """Select ``image`` along ``dim``, or move that dim to the front when ``image`` is None."""
        if image is None:
            return t.movedim(dim, 0)
        n = t.shape[dim]
        if isinstance(image, bool) or not isinstance(image, int) or not -n <= image < n:
            raise ValueError(f"image must be an index into the {n} recorded images (or None for all), got {image!r}")
        return t.select(dim, image)

    def _layer_idx(self, layers) -> list:
        if layers is None:
            return list(range(len(self.layers)))
        return [self.layers.index(k) for k in select_layers(self.layers, layers)]

    def _step_idx(self, steps) -> list:
        if steps is None:
            return list(range(len(self.steps)))
        if isinstance(steps, int):
            steps = [steps]
        idx = []
        for s in steps:
            if s not in self.steps:
                raise ValueError(f"steps: step {s!r} was not recorded; recorded steps are {self.steps}")
            idx.append(self.steps.index(s))
        return idx

    def token_index(self, token) -> list:
        """Positions for ``token``: an int, a word (matched against :attr:`tokens`), or a list of them."""
        if token is None:
            return None
        items = token if isinstance(token, (list, tuple)) else [token]
        out = []
        for t in items:
            if isinstance(t, str):
                labels = [x.lower() for x in (self.tokens or [])]
                if self.tokens is None:
                    raise ValueError(f"token={t!r}: this trace has no token labels (bare UNet?); use token positions (ints)")
                if t.lower() not in labels:
                    shown = [x for x in self.tokens if x != "<|endoftext|>"]
                    raise ValueError(f"token={t!r} is not in the prompt's tokens {shown}")
                out.append(labels.index(t.lower()))
            elif isinstance(t, int) and not isinstance(t, bool):
                n = len(self.tokens) if self.tokens else None
                if n is not None and not 0 <= t < n:
                    raise ValueError(f"token={t} is out of range: the context has {n} positions (0..{n - 1}, "
                                     "0 = start-of-text)")
                out.append(t)
            else:
                raise TypeError(f"token must be an int position, a word or a list of them, got {t!r}")
        return out

    # -- accessors -------------------------------------------------------------------------------
    def maps(self, token=None, aggregate: Optional[str] = "mean", layers=None, steps=None, image: Optional[int] = 0,
             normalize: Optional[str] = None) -> torch.Tensor:
        """Cross-attention maps on the common grid :attr:`map_grid`, fp32.

        Definition: ``M[t, y, x] = mean_heads softmax_t(beta q_{yx} . k_t)`` on the conditional rows,
        resized to the common grid; at every pixel ``sum_t M = 1`` over all tokens (and stays so
        under every mean below). ``normalize="spatial"`` instead divides each token's map by its
        sum over pixels (then ``sum_{y,x} M[t] = 1``).

        aggregate:
            ``"mean"`` -> ``(token, H, W)`` mean over recorded steps and layers; ``"sum"`` likewise, summed;
            ``"layer"`` -> ``(layer, token, H, W)`` mean over steps; ``"step"`` -> ``(step, token, H, W)``
            mean over layers; ``None`` -> ``(step, layer, token, H, W)`` (needs ``"layer_maps"``).
        layers / steps: restrict to some recorded layers (names, globs, blocks, ints) / steps
            (values of :attr:`steps`). Restricting both for a mean needs ``"layer_maps"``.
        """
        if aggregate not in ("mean", "sum", "layer", "step", None):
            raise ValueError(f"aggregate must be 'mean', 'sum', 'layer', 'step' or None, got {aggregate!r}")
        if normalize not in (None, "spatial"):
            raise ValueError(f"normalize must be None (per pixel over tokens) or 'spatial', got {normalize!r}")
        li, si = self._layer_idx(layers), self._step_idx(steps)
        all_l, all_s = len(li) == len(self.layers), len(si) == len(self.steps)
        st = self._stacked()
        need_full = (
            aggregate is None
            or (aggregate == "layer" and not all_s)
            or (aggregate == "step" and not all_l)
            or (aggregate in ("mean", "sum") and not all_l and not all_s)
        )
        use_layer_sums = aggregate == "layer" or (aggregate in ("mean", "sum") and all_s)
        if not need_full and ("map_layer_sum" if use_layer_sums else "map_step_sum") not in st and "layer_maps" in st:
            need_full = True  # the running sums were dropped; the full maps are there
        if need_full:
            full = self._need("layer_maps", "layer_maps")[si][:, li].float()  # (S, L, B, N, H, W)
            if aggregate is None:
                m = full
            elif aggregate == "layer":
                m = full.mean(0)
            elif aggregate == "step":
                m = full.mean(1)
            else:
                m = full.flatten(0, 1).mean(0) if aggregate == "mean" else full.flatten(0, 1).sum(0)
        else:
            # running sums: per layer (summed over steps) or per step (summed over layers), with counts
            kind, idx = ("layer", li) if use_layer_sums else ("step", si)
            s = self._need(f"map_{kind}_sum", "maps")[idx]  # (L|S, B, N, H, W)
            c = st[f"map_{kind}_count"][idx]
            if aggregate == kind:
                m = s / c.view(-1, 1, 1, 1, 1)
            else:  # a mean/sum over the selected rows
                m = s.sum(0) / (c.sum() if aggregate == "mean" else 1.0)
        bdim = m.ndim - 4
        m = self._image(m, image, bdim)
        if normalize == "spatial":
            m = m / m.sum(dim=(-1, -2), keepdim=True).clamp_min(1e-30)
        ti = self.token_index(token)
        if ti is not None:
            m = m.index_select(m.ndim - 3, torch.tensor(ti))
        return m

    def energies(self, kind: str = "posterior", when: str = "after", image: Optional[int] = 0, layers=None) -> torch.Tensor:
        """``(step, layer)`` energies (fp32). kind: ``"query"`` E(Q;K), ``"context"`` E(K;Q), ``"prior"`` E(K),
        ``"posterior"`` E(K;Q)+E(K); when: ``"before"`` (keys of the context the layer received),
        ``"after"`` (of its updated context), ``"delta"`` (after - before). NaN where nothing was recorded."""
        if kind not in ENERGY_KINDS:
            raise ValueError(f"kind must be one of {ENERGY_KINDS}, got {kind!r}")
        if when not in WHEN + ("delta",):
            raise ValueError(f"when must be 'before', 'after' or 'delta', got {when!r}")
        e = self._need("energies", "energies")[:, self._layer_idx(layers), :, ENERGY_KINDS.index(kind)]  # (S,L,2,B)
        e = e[:, :, 1] - e[:, :, 0] if when == "delta" else e[:, :, WHEN.index(when)]
        return self._image(e, image, 2)

    def context_norms(self, when: str = "after", image: Optional[int] = 0, layers=None) -> torch.Tensor:
        """``(step, layer, token)``: ``|c_t|`` of the context a layer received (``"before"``) or passed on (``"after"``)."""
        if when not in WHEN:
            raise ValueError(f"when must be 'before' or 'after', got {when!r}")
        n = self._need("norms", "context_norms")[:, self._layer_idx(layers), WHEN.index(when)]  # (S, L, B, N)
        return self._image(n, image, 2)

    def drift(self, image: Optional[int] = 0, layers=None) -> torch.Tensor:
        """``(step, layer, token)``: ``|c_out,t - c_prompt,t|``, distance of each token's context after the
        layer from the prompt embedding of that step (0 without EBCU)."""
        n = self._need("norms", "context_norms")[:, self._layer_idx(layers), 2]
        return self._image(n, image, 2)

    def contexts(self, image: Optional[int] = 0, layers=None) -> torch.Tensor:
        """``(step, layer, token, D)`` context after each layer (in ``dtype``); needs ``"contexts"``."""
        c = self._need("contexts", "contexts")[:, self._layer_idx(layers)]
        return self._image(c, image, 2)

    def prompt_embeds(self, image: Optional[int] = 0) -> torch.Tensor:
        """``(step, token, D)`` the prompt embedding each step started from; needs ``"contexts"``."""
        return self._image(self._need("prompt_embeds", "contexts"), image, 1)

    def seg_energies(self, branch: str = "blurred", image: Optional[int] = 0) -> torch.Tensor:
        """``(step, seg_layer)`` self-attention energy of the ``"blurred"`` or ``"reference"`` branch, or
        ``"delta"`` (blurred - reference); layers in :attr:`seg_layers`. Needs SEG installed while sampling."""
        if branch not in ("blurred", "reference", "delta"):
            raise ValueError(f"branch must be 'blurred', 'reference' or 'delta', got {branch!r}")
        e = self._stacked().get("seg")
        if e is None:
            raise ValueError(
                "this trace has no SEG data: install smoothed_energy_guidance while tracing (and keep 'seg' in quantities)"
            )
        e = e[:, :, 0] - e[:, :, 1] if branch == "delta" else e[:, :, 0 if branch == "blurred" else 1]
        return self._image(e, image, 2)

    def summary(self) -> str:
        st = self._stacked()
        lines = [
            f"Trace ({self.mode or 'not run'}): {len(self.steps)} steps x {len(self.layers)} layers, "
            f"map grid {self.map_grid}, {mib(self.nbytes)} of budget "
            f"{'none' if self.budget.limit is None else mib(self.budget.limit)}",
        ]
        for k, v in st.items():
            lines.append(f"  {k:15s} {tuple(v.shape)} {str(v.dtype).replace('torch.', '')}")
        if self.dropped:
            lines.append(f"  dropped {len(self.dropped)} items from step {self.dropped[0]['step']} on")
        return "\n".join(lines)

    def __repr__(self):
        return self.summary()

    # -- persistence -----------------------------------------------------------------------------
    def _meta_dict(self) -> dict:
        B = self._meta.get("images") if self._frozen is not None else (None if self._shape is None else self._shape[0])
        return {
            "format": FORMAT,
            "layers": self.layers,
            "execution_order": self.execution_order,
            "grids": {k: list(v) for k, v in self.grids.items()},
            "seg_layers": self.seg_layers,
            "steps": self.steps,
            "step_timesteps": self.step_timesteps,
            "timesteps": list(self.timesteps),
            "run_starts": list(self.run_starts),
            "token_labels": self.token_labels,
            "quantities": list(self.quantities),
            "map_grid": None if self.map_grid is None else list(self.map_grid),
            "dtype": str(self.dtype).replace("torch.", ""),
            "budget_bytes": self.budget.limit,
            "on_budget": self.budget.on_budget,
            "used_bytes": self.budget.used,
            "dropped": self.dropped,
            "alpha": self.alpha,
            "mode": self.mode,
            "images": B,
            "n_uncond": self.n_uncond,
        }

    def save(self, path) -> None:
        """Write a ``.safetensors`` file: the stacked tensors plus JSON metadata (no pickle)."""
        from safetensors.torch import save_file

        tensors = {k: v.contiguous() for k, v in self._stacked().items()}
        save_file(tensors, str(path), metadata={"ebca_viz.trace": json.dumps(self._meta_dict())})


class TraceFileError(ValueError):
    """A trace file that cannot be read, or whose header disagrees with its tensors."""


_META_KEYS = ("format", "layers", "execution_order", "grids", "seg_layers", "steps", "step_timesteps", "timesteps",
              "run_starts", "token_labels", "quantities", "map_grid", "dtype", "budget_bytes", "on_budget",
              "used_bytes", "dropped", "alpha", "mode", "images", "n_uncond")


def _read_header(path: Path) -> None:
    """Refuse, before safetensors parses anything, what is not a safetensors file."""
    if not path.exists():
        raise TraceFileError(f"{path}: no such file")
    if path.is_dir():
        raise TraceFileError(f"{path} is a directory; pass the .safetensors file written by Trace.save")
    size = path.stat().st_size
    with open(path, "rb") as f:
        head = f.read(8)
    if size == 0:
        raise TraceFileError(f"{path} is empty (0 bytes): the file was not written completely")
    if head[:1] == b"\x80" or head[:4] == b"PK\x03\x04":
        raise TraceFileError(f"{path} looks like a pickle / torch.save file; ebca_viz reads only safetensors "
                             "traces (Trace.save) and never unpickles")
    if len(head) < 8:
        raise TraceFileError(f"{path} is truncated ({size} bytes): not a safetensors file")
    n = int.from_bytes(head, "little")
    if n > size - 8:
        raise TraceFileError(f"{path}: its header claims {n} bytes but the file has {size - 8} after the length "
                             "field (truncated or not a safetensors file)")


def _check_tensors(path, m: dict, tensors: dict) -> None:
    """The header's layer / step / image / seg counts, map grid and dtypes against every tensor."""
    S, L, B, n_seg = len(m["steps"]), len(m["layers"]), m["images"], len(m["seg_layers"])
    g = tuple(m["map_grid"] or ())
    dt = _DTYPES.get(m["dtype"])
    if dt is None:
        raise TraceFileError(f"{path}: unknown storage dtype {m['dtype']!r} in the header")
    f32 = torch.float32
    # item -> (leading dims after the step axis, dtype, number of trailing free dims (tokens, D))
    spec = {"energies": ((S, L, 2, 4, B), f32), "norms": ((S, L, 3, B), f32), "seg": ((S, n_seg, 2, B), f32),
            "map_step_sum": ((S, B), f32), "map_step_count": ((S,), f32), "layer_maps": ((S, L, B), dt),
            "contexts": ((S, L, B), dt), "prompt_embeds": ((S, B), dt), "map_layer_sum": ((L, B), f32),
            "map_layer_count": ((L,), f32)}
    tokens = set()
    for name, t in tensors.items():
        if name not in spec:
            raise TraceFileError(f"{path}: unexpected tensor {name!r} (not written by Trace.save)")
        lead, want_dt = spec[name]
        if tuple(t.shape[:len(lead)]) != lead:
            raise TraceFileError(
                f"{path}: tensor {name!r} has shape {tuple(t.shape)}, but the header describes {S} steps, "
                f"{L} layers, {B} images, {n_seg} SEG layers (leading dims {lead}): header and data disagree")
        if t.dtype != want_dt:
            raise TraceFileError(f"{path}: tensor {name!r} is {t.dtype}, the header says {want_dt}")
        if name in ("norms", "map_step_sum", "layer_maps", "map_layer_sum", "contexts", "prompt_embeds"):
            tokens.add(int(t.shape[len(lead)]))
        if name in ("map_step_sum", "layer_maps", "map_layer_sum") and tuple(t.shape[len(lead) + 1:]) != g:
            raise TraceFileError(f"{path}: tensor {name!r} maps are {tuple(t.shape[len(lead) + 1:])}, the header's "
                                 f"map_grid is {g}")
    if len(tokens) > 1:
        raise TraceFileError(f"{path}: tensors disagree on the number of tokens: {sorted(tokens)}")
    if len(m["step_timesteps"]) != S:
        raise TraceFileError(f"{path}: {S} steps but {len(m['step_timesteps'])} step timesteps in the header")


def load_trace(path) -> Trace:
    """Read a trace written by :meth:`Trace.save`; every accessor works on it (it cannot record).

    Refuses with :class:`TraceFileError` (naming the file and what is wrong) anything else: a
    directory, an empty, truncated or pickled file, non-JSON or incomplete metadata, or tensors whose
    shapes or dtypes disagree with the header."""
    from safetensors import safe_open

    path = Path(path)
    _read_header(path)
    try:
        with safe_open(str(path), framework="pt") as f:
            meta = (f.metadata() or {}).get("ebca_viz.trace")
            if meta is None:
                raise TraceFileError(f"{path} is not an ebca_viz trace (no 'ebca_viz.trace' metadata)")
            tensors = {k: f.get_tensor(k) for k in f.keys()}
    except TraceFileError:
        raise
    except Exception as e:  # safetensors' own parse errors
        raise TraceFileError(f"{path}: not a readable safetensors trace ({type(e).__name__}: {e})") from None
    try:
        m = json.loads(meta)
    except json.JSONDecodeError as e:
        raise TraceFileError(f"{path}: the trace metadata is not JSON ({e})") from None
    if not isinstance(m, dict):
        raise TraceFileError(f"{path}: the trace metadata is not a JSON object")
    if m.get("format") != FORMAT:
        raise TraceFileError(f"{path}: unsupported trace format {m.get('format')!r} (this version reads {FORMAT})")
    missing = [k for k in _META_KEYS if k not in m]
    if missing:
        raise TraceFileError(f"{path}: the trace metadata lacks {missing}")
    _check_tensors(path, m, tensors)
    tr = Trace.__new__(Trace)
    tr._meta = m
    tr._frozen = tensors
    tr.pipe = tr.unet = None
    tr.layers = m["layers"]
    tr.execution_order = m["execution_order"]
    tr.grids = {k: tuple(v) for k, v in m["grids"].items()}
    tr.seg_layers = m["seg_layers"]
    tr.timesteps = m["timesteps"]
    tr.run_starts = m["run_starts"]
    tr.token_labels = m["token_labels"]
    tr.quantities = tuple(m["quantities"])
    tr.map_grid = None if m["map_grid"] is None else tuple(m["map_grid"])
    tr.dtype = _DTYPES.get(m["dtype"], torch.float16)
    tr.budget = Budget(m["budget_bytes"], m["on_budget"])
    tr.budget.used = m["used_bytes"]
    tr.budget.dropped = m["dropped"]
    tr.alpha = m["alpha"]
    tr.mode = m["mode"]
    tr.n_uncond = m["n_uncond"]
    tr._state = "loaded"
    tr._stacked_cache = None
    return tr


def trace(target, layers=None, steps=None, quantities=None, map_grid=None, dtype=torch.float16,
          budget_bytes=DEFAULT_BUDGET, on_budget: str = "error", num_steps: Optional[int] = None,
          cfg: Optional[bool] = None, alpha: float = 0.0) -> Trace:
    """Record cross-attention maps, energies and context trajectories while sampling.

    ``with ebca_viz.trace(pipe) as tr: pipe(prompt)`` -- see :mod:`ebca_viz.tracing` for the definitions.

    Args:
        target: a Stable Diffusion pipeline or a bare ``UNet2DConditionModel``.
        layers: cross-attention layers: processor keys, globs, ``"down"/"mid"/"up"``, ints; default all.
        steps: ints, ranges, slices, fractions in [0, 1], ``(start, stop)`` fraction windows; default all.
        quantities: names from :data:`~ebca_viz.tracing.filters.QUANTITIES` or ``"all"``; default
            ``("maps", "energies", "context_norms", "seg")``.
        map_grid: common map grid ``(H, W)`` or int; default: the largest recorded layer grid, capped at 32.
        dtype: storage dtype of the large items (``layer_maps``, ``contexts``).
        budget_bytes: host-memory budget (default 256 MiB; None: unlimited).
        on_budget: ``"error"`` (raise :class:`~ebca_viz.tracing.budget.TraceBudgetError` before allocating)
            or ``"drop"`` (stop storing, list what was dropped in :attr:`Trace.dropped`).
        num_steps: run length, for fraction/negative step filters on a bare UNet.
        cfg: whether the UNet batch is ``[uncond; cond]``; default: the pipeline's flag, else the EBCA
            controller's setting, else False.
        alpha: the ``alpha`` of the query/context energies (docs/method.md: 0).
    """
    return Trace(target, layers, steps, quantities, map_grid, dtype, budget_bytes, on_budget, num_steps, cfg, alpha)


def estimate_bytes(target, num_steps: int = 50, height: Optional[int] = None, width: Optional[int] = None,
                   batch: int = 1, tokens: Optional[int] = None, **trace_kwargs) -> int:
    """Host bytes ``trace(target, **trace_kwargs)`` would store for one run (nothing is installed)."""
    return Trace(target, **trace_kwargs).estimate_bytes(num_steps, height, width, batch, tokens)


__all__ = ["Trace", "trace", "load_trace", "TraceFileError", "estimate_bytes", "TraceBudgetError", "QUANTITIES", "layer_energies",
           "self_attention_energy"]
