r"""A trace's data: the stored tensors (:class:`TraceStorage`) and the reader's view of them (:class:`Trace`).

**What is stored**, under a byte budget: a :class:`TraceStorage` is filled step by step by the recorder
(:mod:`ebca_viz.tracing.recorder`) or at once from a file (:func:`load_trace`), by the same constructor. While recording, each step's items live in a per-step dict; when recording ends they
are stacked once (:meth:`TraceStorage.consolidate`) and the per-step copies are freed, so the record holds
each value once and :attr:`TraceStorage.nbytes` is what the budget reserved.

Stored items (``S`` recorded steps, ``L`` layers, ``B`` images, ``N`` tokens, ``D`` context width,
``(H, W)`` = :attr:`map_grid`), fp32 unless said otherwise:

* ``energies (S, L, 2, 4, B)``: before/after x E(Q;K), E(K;Q), E(K), posterior;
* ``norms (S, L, 3, B, N)``: ``|c_in|``, ``|c_out|``, ``|c_out - c_prompt|``;
* ``seg (S, n_seg, 2, B)``: blurred / reference self-attention energy;
* ``guidance (S, 2, B, h, w)``: CFG / SEG guidance magnitude per latent pixel (``(h, w)`` = the
  latent grid, :attr:`latent_hw`), NaN where that guidance did not act (:meth:`Trace.guidance`);
* ``map_step_sum (S, B, N, H, W)``, ``map_step_count (S,)``: maps summed over layers;
* ``map_layer_sum (L, B, N, H, W)``, ``map_layer_count (L,)``: maps summed over steps;
* ``layer_maps (S, L, B, N, H, W)``, ``contexts (S, L, B, N, D)``, ``prompt_embeds (S, B, N, D)``
  in the storage ``dtype``.

**What a reader sees**: :class:`Trace`'s derived quantities (maps, energies, context norms, drift,
trajectories, SEG energies, guidance maps). Named dimensions of the accessors (each returns a plain CPU tensor in this order):
``step`` (recorded UNet calls, :attr:`Trace.steps`), ``layer`` (recorded cross-attention layers in
execution order, :attr:`Trace.layers`), ``token`` (context positions, 0 = start-of-text, labels in
:attr:`Trace.tokens`), ``H, W`` (the common map grid :attr:`Trace.map_grid`), ``D`` (context
width). ``image=i`` (default 0) picks one image of the batch; ``image=None`` keeps a leading
``image`` dimension. The definitions are in :mod:`ebca_viz.tracing.recorder` and ``docs/method.md``.
"""
from __future__ import annotations

import math
from typing import Optional

import torch

from ..errors import InvalidSetting, InvalidType, StateError
from ..hints import LayerSpec, PathLike, StepSpec, TokenSpec
from .budget import DEFAULT_BUDGET, Budget, mib
from .files import DTYPES, read_trace_file, save_trace
from .filters import select_layers

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


ENERGY_KINDS = ("query", "context", "prior", "posterior")
GUIDANCE_KINDS = ("cfg", "seg")
WHEN = ("before", "after")


def _from_record(name: str, doc: str) -> property:
    return property(lambda self: getattr(self.record, name), doc=doc)


class Trace:
    """Recording of one (or several consecutive) sampling runs; see :mod:`ebca_viz.tracing.recorder`.

    Made by :func:`ebca_viz.trace` (with a recorder: use it as a context manager) or by
    :func:`ebca_viz.load_trace` (without one); both build it with this constructor. Accessors work
    during and after the ``with`` block and on a loaded trace.
    """

    def __init__(self, record: TraceStorage, recorder: Optional[object] = None):
        if not isinstance(record, TraceStorage):
            raise InvalidType(f"Trace(record): record must be an ebca_viz.tracing.trace_data.TraceStorage, got {type(record).__name__}; "
                            "make a trace with ebca_viz.trace(pipe) or ebca_viz.load_trace(path)")
        self.record = record
        self.recorder = recorder

    layers = _from_record("layers", "recorded cross-attention layers (processor keys), execution order")
    quantities = _from_record("quantities", "what is recorded (see ebca_viz.tracing.filters.QUANTITIES)")
    map_grid = _from_record("map_grid", "the common map grid (H, W)")
    dtype = _from_record("dtype", "storage dtype of the large items")
    alpha = _from_record("alpha", "alpha of the query/context energies")
    budget = _from_record("budget", "the byte budget (ebca_viz.tracing.budget.Budget)")
    grids = _from_record("grids", "layer -> its own grid (h, w)")
    execution_order = _from_record("execution_order", "layers in the order they ran")
    seg_layers = _from_record("seg_layers", "SEG-blurred self-attention layers recorded")
    timesteps = _from_record("timesteps", "scheduler timestep of every UNet call")
    run_starts = _from_record("run_starts", "global step at which each sampling run started")
    token_labels = _from_record("token_labels", "per image: the label of each token position")
    mode = _from_record("mode", "'ebca' (observer of a controller) or 'plain' (own processors)")
    n_uncond = _from_record("n_uncond", "unconditional rows of the UNet batch")
    steps = _from_record("steps", "global step indices (UNet calls since the trace began) that hold data")
    step_timesteps = _from_record("step_timesteps", "scheduler timestep of each recorded step")
    nbytes = _from_record("nbytes", "host bytes held (what the budget reserved)")
    latent_hw = _from_record("latent_hw", "(h, w) of the latents: the grid of the guidance maps")

    @property
    def dropped(self) -> list:
        """Items not stored because of ``on_budget="drop"``: ``[{"step", "item", "bytes"}]``."""
        return list(self.record.budget.dropped)

    @property
    def tokens(self) -> Optional[list]:
        """Token labels of image 0 (``None`` when the prompt was not seen, e.g. a bare UNet)."""
        return None if self.token_labels is None else self.token_labels[0]

    # -- recording (delegated to the recorder) ----------------------------------------------------
    def _need_recorder(self, what):
        if self.recorder is None:
            raise StateError(f"a loaded trace has no recorder: {what} needs a trace made by ebca_viz.trace(pipe)")
        return self.recorder

    def __enter__(self) -> "Trace":
        self.start()
        return self

    def __exit__(self, *exc):
        self.stop()
        return False

    def start(self) -> "Trace":
        self._need_recorder("start()").start()
        return self

    def stop(self) -> None:
        """Detach the recorder: hooks removed, processors restored, the record stacked."""
        if self.recorder is not None:
            self.recorder.stop()

    def estimate_bytes(self, num_steps: int = 50, height: Optional[int] = None, width: Optional[int] = None,
                       batch: int = 1, tokens: Optional[int] = None, seg_layers: Optional[int] = None) -> int:
        """Host bytes this trace will store for one run, before sampling (see
        :meth:`ebca_viz.tracing.recorder.Recorder.estimate_bytes`)."""
        if self.recorder is None:
            raise StateError("a loaded trace has no UNet to estimate for; use ebca_viz.estimate_bytes(pipe, ...)")
        return self.recorder.estimate_bytes(num_steps, height, width, batch, tokens, seg_layers)

    def save(self, path: PathLike) -> None:
        """Write a ``.safetensors`` file: the stacked tensors plus JSON metadata (no pickle), atomically."""
        save_trace(self.record, path)

    def to_html(self, path: PathLike, image: Optional[object] = None, title: Optional[str] = None, image_index: int = 0,
                quiet: bool = False) -> str:
        """Write this trace as one self-contained HTML page (no kernel, no network) and return its path.

        Linked views: step / layer sliders, token chips, the attention map per token (beside the final
        ``image`` when given: PIL image, uint8 array or file path), the energy terms through the cascade
        and over steps, the context trajectories (see :mod:`ebca_viz.tracing.html`). Prints the page's
        size unless ``quiet``. A path whose folder does not exist is refused before any work."""
        from .html import trace_to_html

        return trace_to_html(self, path, image=image, title=title, image_index=image_index, quiet=quiet)

    def _stacked(self) -> dict:
        return self.record.stacked()

    # -- helpers -------------------------------------------------------------------------------
    def _need(self, item, quantity):
        t = self.record.stacked().get(item)
        if t is None:
            why = "it was dropped (on_budget='drop')" if quantity in self.quantities else f"add {quantity!r} to quantities="
            raise InvalidSetting(f"this trace has no {quantity!r} data: {why}; fix: record it, e.g. ev.trace(pipe, quantities=[...]) with this quantity")
        return t

    @staticmethod
    def _image(t: torch.Tensor, image, dim: int) -> torch.Tensor:
        """Select ``image`` along ``dim``, or move that dim to the front when ``image`` is None."""
        if image is None:
            return t.movedim(dim, 0)
        n = t.shape[dim]
        if isinstance(image, bool) or not isinstance(image, int) or not -n <= image < n:
            raise InvalidSetting(f"image must be an index into the {n} recorded images (or None for all), got {image!r}")
        return t.select(dim, image)

    def _layer_idx(self, layers) -> list:
        if layers is None:
            return list(range(len(self.layers)))
        return [self.layers.index(k) for k in select_layers(self.layers, layers, self.record.layer_kinds)]

    def _step_idx(self, steps) -> list:
        if steps is None:
            return list(range(len(self.steps)))
        if isinstance(steps, int):
            steps = [steps]
        idx = []
        for s in steps:
            if s not in self.steps:
                raise InvalidSetting(f"steps: step {s!r} was not recorded; recorded steps are {self.steps}; fix: pass one of the recorded steps")
            idx.append(self.steps.index(s))
        return idx

    @property
    def text_segments(self) -> list:
        """The text positions by segment: ``[{"name", "start", "length", "tokenizer"}]`` (``tokenizer``: the
        pipeline attribute that names them). A UNet trace: one ``"clip"`` segment over every position."""
        segs = self.record.text_segments
        if segs:
            return [dict(s) for s in segs]
        n = len(self.tokens) if self.tokens else 0
        return [{"name": "clip", "start": 0, "length": n, "tokenizer": "tokenizer"}]

    @property
    def padding(self) -> Optional[list]:
        """Per position (image 0): True where it is padding -- T5's ``<pad>``, and in a CLIP segment every
        position after its first end-of-text (CLIP pads with end-of-text). None without token labels."""
        toks = self.tokens
        if toks is None:
            return None
        pad = [False] * len(toks)
        for seg in self.text_segments:
            a, n = seg["start"], seg["length"]
            seen_end = False
            for i in range(a, min(a + n, len(toks))):
                w = toks[i]
                if w == "<pad>" or seen_end:
                    pad[i] = True
                if w == "<|endoftext|>":
                    seen_end = True
        return pad

    def _word_positions(self, t: str) -> list:
        """A word's positions in a segmented (DiT) trace: its first non-padding position in every text segment
        that has it. A word no segment has: an error that says, per tokenizer, how that tokenizer splits it;
        one that some segments lack: a warning naming them."""
        import warnings


        toks, pad = self.tokens, self.padding
        hits, missing = [], []
        for seg in self.text_segments:
            a = seg["start"]
            found = [i for i in range(a, min(a + seg["length"], len(toks))) if not pad[i] and toks[i].lower() == t.lower()]
            (hits if found else missing).append(found[0] if found else seg)
        if missing:
            toks_of = getattr(self.recorder, "tokenizers", None) or {}  # those that labelled the run

            def split(seg):
                tok = toks_of.get(seg["tokenizer"])
                if tok is None:
                    return f"{seg['name']} segment ({seg['tokenizer']})"
                pieces = [p for p in (w.replace("</w>", "").lstrip("▁") for w in tok.tokenize(t)) if p]
                return f"{seg['name']} segment ({seg['tokenizer']}, {type(tok).__name__}: splits it into {pieces})"

            why = "; ".join(split(seg) for seg in missing)
            if not hits:
                words = [w for w, p in zip(toks, pad) if not p]
                raise InvalidSetting(f"token={t!r} is not a token of this prompt in any text segment: {why}. The prompt's "
                                   f"tokens are {words}; pass a word as its tokenizer splits it, or positions (ints)")
            warnings.warn(f"token={t!r} is not a single token in the {why}; using the segment(s) that have it",
                          UserWarning, stacklevel=4)
        return hits

    def token_index(self, token: TokenSpec) -> list:
        """Positions for ``token``: an int, a word (matched against :attr:`tokens`), or a list of them.

        In a DiT trace with several text segments (SD3: CLIP then T5) a word gives one position per segment
        that has it (each segment labelled by its own tokenizer; padding never matches)."""
        if token is None:
            return None
        items = token if isinstance(token, (list, tuple)) else [token]
        out = []
        for t in items:
            if isinstance(t, str) and self.record.text_segments and self.tokens is not None:
                out.extend(self._word_positions(t))
                continue
            if isinstance(t, str):
                labels = [x.lower() for x in (self.tokens or [])]
                if self.tokens is None:
                    raise InvalidSetting(f"token={t!r}: this trace has no token labels (bare UNet?); use token positions (ints)")
                if t.lower() not in labels:
                    shown = [x for x in self.tokens if x != "<|endoftext|>"]
                    raise InvalidSetting(f"token={t!r} is not in the prompt's tokens {shown}; fix: pass a word of the prompt (as the tokenizer splits it) or a position")
                out.append(labels.index(t.lower()))
            elif isinstance(t, int) and not isinstance(t, bool):
                n = len(self.tokens) if self.tokens else None
                if n is not None and not 0 <= t < n:
                    raise InvalidSetting(f"token={t} is out of range: the context has {n} positions (0..{n - 1}, "
                                     "0 = start-of-text); fix: pass a position inside that range")
                out.append(t)
            else:
                raise InvalidType(f"token must be an int position, a word or a list of them, got {t!r}")
        return out

    # -- accessors -------------------------------------------------------------------------------
    def maps(self, token: TokenSpec = None, aggregate: Optional[str] = "mean", layers: LayerSpec = None, steps: StepSpec = None, image: Optional[int] = 0,
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
            raise InvalidSetting(f"aggregate must be 'mean', 'sum', 'layer', 'step' or None, got {aggregate!r}")
        if normalize not in (None, "spatial"):
            raise InvalidSetting(f"normalize must be None (per pixel over tokens) or 'spatial', got {normalize!r}")
        li, si = self._layer_idx(layers), self._step_idx(steps)
        all_l, all_s = len(li) == len(self.layers), len(si) == len(self.steps)
        st = self.record.stacked()
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

    def energies(self, kind: str = "posterior", when: str = "after", image: Optional[int] = 0, layers: LayerSpec = None) -> torch.Tensor:
        """``(step, layer)`` energies (fp32). kind: ``"query"`` E(Q;K), ``"context"`` E(K;Q), ``"prior"`` E(K),
        ``"posterior"`` E(K;Q)+E(K); when: ``"before"`` (keys of the context the layer received),
        ``"after"`` (of its updated context), ``"delta"`` (after - before). NaN where nothing was recorded."""
        if kind not in ENERGY_KINDS:
            raise InvalidSetting(f"kind must be one of {ENERGY_KINDS}, got {kind!r}")
        if when not in WHEN + ("delta",):
            raise InvalidSetting(f"when must be 'before', 'after' or 'delta', got {when!r}")
        e = self._need("energies", "energies")[:, self._layer_idx(layers), :, ENERGY_KINDS.index(kind)]  # (S,L,2,B)
        e = e[:, :, 1] - e[:, :, 0] if when == "delta" else e[:, :, WHEN.index(when)]
        return self._image(e, image, 2)

    def context_norms(self, when: str = "after", image: Optional[int] = 0, layers: LayerSpec = None) -> torch.Tensor:
        """``(step, layer, token)``: ``|c_t|`` of the context a layer received (``"before"``) or passed on (``"after"``)."""
        if when not in WHEN:
            raise InvalidSetting(f"when must be 'before' or 'after', got {when!r}")
        n = self._need("norms", "context_norms")[:, self._layer_idx(layers), WHEN.index(when)]  # (S, L, B, N)
        return self._image(n, image, 2)

    def drift(self, image: Optional[int] = 0, layers: LayerSpec = None) -> torch.Tensor:
        """``(step, layer, token)``: ``|c_out,t - c_prompt,t|``, distance of each token's context after the
        layer from the prompt embedding of that step (0 without EBCU)."""
        n = self._need("norms", "context_norms")[:, self._layer_idx(layers), 2]
        return self._image(n, image, 2)

    def contexts(self, image: Optional[int] = 0, layers: LayerSpec = None) -> torch.Tensor:
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
            raise InvalidSetting(f"branch must be 'blurred', 'reference' or 'delta', got {branch!r}")
        e = self.record.stacked().get("seg")
        if e is None:
            raise InvalidSetting(
                "this trace has no SEG data: install smoothed_energy_guidance while tracing (and keep 'seg' in quantities)"
            )
        e = e[:, :, 0] - e[:, :, 1] if branch == "delta" else e[:, :, 0 if branch == "blurred" else 1]
        return self._image(e, image, 2)

    @property
    def guidance_kinds(self) -> list:
        """The guidance kinds (``"cfg"``, ``"seg"``) with a map at some recorded step ([] without ``"guidance"``)."""
        g = self.record.stacked().get("guidance")
        if g is None:
            return []
        return [k for i, k in enumerate(GUIDANCE_KINDS) if bool(torch.isfinite(g[:, i]).any())]

    def guidance(self, kind: str = "cfg", steps: StepSpec = None, image: Optional[int] = 0) -> torch.Tensor:
        r"""``(step, h, w)``: where guidance acts -- per latent pixel, the magnitude of what one guidance
        term added to the noise prediction, L2 over the latent channels ``c`` (fp32, on the latent grid
        :attr:`latent_hw`; upscale to the image with nearest neighbour, factor = the VAE's 8)::

            kind="cfg":  w * || eps_c[:, y, x] - eps_u[:, y, x] ||_2      (w = guidance_scale)
            kind="seg":  s * || eps_c[:, y, x] - eps_blur[:, y, x] ||_2   (s = SEG's scale)

        the terms of ``eps = eps_u + w (eps_c - eps_u) + s (eps_c - eps_blur)`` (:func:`ebca_viz.seg.seg_combine`;
        without CFG only the SEG term). Read from the UNet's output rows at each recorded step
        (the ``steps=`` filter of :func:`ebca_viz.trace` applies; here ``steps`` restricts to some of
        :attr:`steps`). NaN at steps where that term did not act. Raises ``ValueError`` when it acted at
        no recorded step: ``"cfg"`` without classifier-free guidance (``guidance_scale <= 1``, or a
        bare UNet without ``guidance_scale=``), ``"seg"`` without SEG or with SEG's paper convention
        under CFG (no term of its own: it blurs ``eps_u``, and the CFG map is then taken against it).
        """
        if kind not in GUIDANCE_KINDS:
            raise InvalidSetting(f"kind must be one of {GUIDANCE_KINDS}, got {kind!r}")
        g = self._need("guidance", "guidance")[:, GUIDANCE_KINDS.index(kind)]  # (S, B, h, w)
        if not bool(torch.isfinite(g).any()):
            why = ("the run sampled without classifier-free guidance (guidance_scale <= 1; a bare UNet needs "
                   "cfg=True and guidance_scale= in trace())" if kind == "cfg" else
                   "SEG was not installed while sampling (ebca_viz.smoothed_energy_guidance), or it ran with "
                   "convention='paper' and CFG, where SEG has no term of its own (its blurred unconditional "
                   "branch is inside the CFG map)")
            raise InvalidSetting(f"this trace has no {kind!r} guidance map: {why}; fix: record 'guidance' and sample with that guidance switched on")
        return self._image(g[self._step_idx(steps)], image, 1)

    def summary(self) -> str:
        st = self.record.stacked()
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


def load_trace(path: PathLike) -> Trace:
    """Read a trace written by :meth:`Trace.save`; every accessor works on it (it cannot record).

    Refuses with :class:`~ebca_viz.tracing.files.TraceFileError` (naming the file and what is wrong)
    anything else: a directory, an empty, truncated or pickled file, non-JSON or incomplete metadata,
    or tensors whose shapes or dtypes disagree with the header (:func:`~ebca_viz.tracing.files.read_trace_file`)."""
    m, tensors = read_trace_file(path)
    rec = TraceStorage(m["layers"], m["quantities"], None if m["map_grid"] is None else tuple(m["map_grid"]),
                       DTYPES[m["dtype"]], Budget(m["budget_bytes"], m["on_budget"]), m["alpha"])
    rec.restore(m, tensors)
    return Trace(rec)
