r"""What a trace holds: the stored tensors of the recorded UNet calls, under a byte budget.

A :class:`TraceStorage` is filled step by step by the recorder (:mod:`ebca_viz.tracing.recorder`) or
at once from a file (:mod:`ebca_viz.tracing.files`); either way it is built by the same
constructor. While recording, each step's items live in a per-step dict; when recording ends they
are stacked once (:meth:`TraceStorage.consolidate`) and the per-step copies are freed, so the record holds
each value once and :attr:`TraceStorage.nbytes` is what the budget reserved.

Stored items (``S`` recorded steps, ``L`` layers, ``B`` images, ``N`` tokens, ``D`` context width,
``(H, W)`` = :attr:`map_grid`), fp32 unless said otherwise:

* ``energies (S, L, 2, 4, B)``: before/after x E(Q;K), E(K;Q), E(K), posterior;
* ``norms (S, L, 3, B, N)``: ``|c_in|``, ``|c_out|``, ``|c_out - c_prompt|``;
* ``seg (S, n_seg, 2, B)``: blurred / reference self-attention energy;
* ``guidance (S, 2, B, h, w)``: CFG / SEG guidance magnitude per latent pixel (``(h, w)`` = the
  latent grid, :attr:`latent_hw`), NaN where that guidance did not act (see
  :meth:`ebca_viz.tracing.derived.Trace.guidance`);
* ``map_step_sum (S, B, N, H, W)``, ``map_step_count (S,)``: maps summed over layers;
* ``map_layer_sum (L, B, N, H, W)``, ``map_layer_count (L,)``: maps summed over steps;
* ``layer_maps (S, L, B, N, H, W)``, ``contexts (S, L, B, N, D)``, ``prompt_embeds (S, B, N, D)``
  in the storage ``dtype``.
"""
from __future__ import annotations

import math
from typing import Optional

import torch

from .budget import DEFAULT_BUDGET, Budget

NAN_FILLED = ("energies", "norms", "seg", "guidance")  # items whose unrecorded entries read NaN (the rest 0)


class TraceStorage:
    """The stored part of a trace: settings, run metadata and tensors, with its :class:`Budget`."""

    def __init__(self, layers, quantities, map_grid: Optional[tuple] = None, dtype=torch.float16,
                 budget: Optional[Budget] = None, alpha: float = 0.0):
        self.layers = list(layers)
        self.quantities = tuple(quantities)
        self.map_grid = map_grid
        self.dtype = dtype
        self.budget = budget if budget is not None else Budget(DEFAULT_BUDGET, "error")
        self.alpha = alpha
        # run metadata
        self.grids: dict = {}
        self.execution_order: list = []
        self.seg_layers: list = []
        self.timesteps: list = []  # per UNet call (global step)
        self.run_starts: list = []  # global step at which each run started
        self.token_labels: Optional[list] = None  # per image: list of N labels
        self.mode: Optional[str] = None  # "ebca" (observer of a controller) or "plain" (own processors)
        self.family: str = "unet"  # the denoiser family (ebca_viz.adapters): "unet" | "pixart" | "sd3" | "flux"
        self.layer_kinds: dict = {}  # layer -> "cross" | "joint" | "single"
        self.text_segments: Optional[list] = None  # DiT: [{"name", "start", "length", "tokenizer"}] of the text positions
        self.n_uncond = 0
        self.shape: Optional[tuple] = None  # (B, N, D, latent_hw) of the runs
        self.images: Optional[int] = None  # B
        self.latent_hw: Optional[tuple] = None  # (h, w) of the latents (the grid of the guidance maps)
        # tensors
        self.sums: dict = {}  # running per-layer map sums {"sum", "count"} (on the device while recording)
        self._per_step: dict = {}  # global step -> {item: CPU tensor}, while recording
        self._stacked: Optional[dict] = None  # after consolidate() / restore()
        self._steps: Optional[list] = None
        self._cache: Optional[dict] = None

    # -- sizes -------------------------------------------------------------------------------------
    def item_shapes(self, B, N, D, n_seg, latent_hw: Optional[tuple] = None) -> dict:
        """``item -> (shape, dtype)`` stored per recorded step (``latent_hw``: default :attr:`latent_hw`)."""
        L, g, dt = len(self.layers), self.map_grid, self.dtype
        out = {}
        if "guidance" in self.quantities:
            hw = tuple(latent_hw if latent_hw is not None else self.latent_hw)
            out["guidance"] = ((2, B) + hw, torch.float32)
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

    def bytes_for(self, n_steps, B, N, D, n_seg, fixed=True, latent_hw: Optional[tuple] = None) -> int:
        """Bytes of ``n_steps`` recorded steps (plus the per-layer running sums with ``fixed``)."""
        shapes = self.item_shapes(B, N, D, n_seg, latent_hw).values()
        per = sum(math.prod(s) * torch.empty((), dtype=d).element_size() for s, d in shapes)
        total = n_steps * per
        if fixed and "maps" in self.quantities:
            total += 4 * len(self.layers) * (B * N * math.prod(self.map_grid) + 1)  # sums + counts
        return total

    @property
    def nbytes(self) -> int:
        """Host bytes reserved (all stored tensors; equals their summed ``nbytes``)."""
        return self.budget.used

    # -- writing -------------------------------------------------------------------------------------
    def add_step(self, step: int, items: dict) -> None:
        """Store one UNet call's items (moved to the CPU)."""
        self._per_step[step] = {k: v.cpu() for k, v in items.items()}
        self._cache = None

    def consolidate(self) -> None:
        """Stack the per-step items once and free them: the record then holds each value once, so the
        accessors add nothing to what the budget accounted."""
        self.sums = {k: v.cpu() for k, v in self.sums.items()}
        self._cache = None
        self._steps = sorted(self._per_step)
        if self.shape is None or self.map_grid is None:  # nothing was recorded (e.g. an error before step 0)
            return
        stacked = self.stacked()
        self._per_step = {}
        self._stacked = stacked

    def restore(self, meta: dict, tensors: dict) -> None:
        """Fill a new record with a saved one's run metadata and stacked tensors."""
        self.grids = {k: tuple(v) for k, v in meta["grids"].items()}
        self.execution_order = meta["execution_order"]
        self.seg_layers = meta["seg_layers"]
        self.timesteps = meta["timesteps"]
        self.run_starts = meta["run_starts"]
        self.token_labels = meta["token_labels"]
        self.mode = meta["mode"]
        self.n_uncond = meta["n_uncond"]
        self.images = meta["images"]
        self.latent_hw = None if meta.get("latent_hw") is None else tuple(meta["latent_hw"])
        self.family = meta.get("family", "unet")
        self.layer_kinds = dict(meta.get("layer_kinds") or {})
        self.text_segments = meta.get("text_segments")
        self.budget.used = meta["used_bytes"]
        self.budget.dropped = meta["dropped"]
        self._steps = list(meta["steps"])
        self._stacked = tensors

    # -- reading -------------------------------------------------------------------------------------
    @property
    def steps(self) -> list:
        """Global step indices (UNet calls since the trace began) that hold data: the ``step`` axis."""
        return list(self._steps) if self._steps is not None else sorted(self._per_step)

    @property
    def step_timesteps(self) -> list:
        """Scheduler timestep of each recorded step (aligned with :attr:`steps`)."""
        return [self.timesteps[s] for s in self.steps]

    @property
    def per_step(self) -> dict:
        """The per-step items not yet stacked (empty once recording has ended)."""
        return self._per_step

    def stacked(self) -> dict:
        """``item -> tensor`` with a leading ``step`` axis (the running sums without it)."""
        if self._stacked is not None:
            return self._stacked
        if self._cache is not None:
            return self._cache
        steps = self.steps
        out = {}
        if self.shape is not None:
            B, N, D, _ = self.shape
            for item, (shape, dt) in self.item_shapes(B, N, D, len(self.seg_layers)).items():
                have = [self._per_step[s].get(item) for s in steps]
                if not any(x is not None for x in have):
                    continue
                blank = torch.full(shape, float("nan") if item in NAN_FILLED else 0.0, dtype=dt)
                out[item] = torch.stack([x if x is not None else blank for x in have]) if steps else None
            if self.sums:
                out["map_layer_sum"] = self.sums["sum"].cpu()
                out["map_layer_count"] = self.sums["count"].cpu()
        out = {k: v for k, v in out.items() if v is not None}
        self._cache = out
        return out
