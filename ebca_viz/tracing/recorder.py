r"""Recorder: what every cross-attention layer saw and did, per UNet call (sampling step).

::

    with ebca_viz.trace(pipe) as tr:                     # with or without energy_attention / SEG
        image = pipe("A lion with a crown", num_inference_steps=50).images[0]
    tr.maps(token="crown")                               # (token, H, W)
    tr.energies(kind="posterior", when="after")          # (step, layer)
    tr.save("lion.safetensors"); tr2 = ebca_viz.load_trace("lion.safetensors")

The accessors and their named dimensions are in :mod:`ebca_viz.tracing.trace_data`.

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
* **guidance** (where guidance acts): per step, on the latent grid ``(h, w)``, the magnitude of
  what each guidance term adds to the noise prediction, L2 over the latent channels ``c``
  (``eps_u`` unconditional, ``eps_c`` conditional, ``eps_blur`` SEG's blurred branch, ``w`` the
  pipeline's ``guidance_scale``, ``s`` SEG's ``scale``; the terms of :func:`ebca_viz.seg.seg_combine`)::

      cfg[y, x] = w * || eps_c[:, y, x] - eps_u[:, y, x] ||_2      (eps = eps_u + w (eps_c - eps_u) [+ SEG])
      seg[y, x] = s * || eps_c[:, y, x] - eps_blur[:, y, x] ||_2   (SEG's published term, with or without CFG)

  read from the UNet's own output (the hook's ``observe_output`` stage, before a guidance method
  combines its branches: no extra UNet call; a method names its term in ``guidance_terms``). NaN where a term did not act: no CFG (``guidance_scale <= 1``) has no CFG
  map; no SEG, or SEG's ``convention="paper"`` with CFG (it blurs the unconditional half in place,
  ``eps = eps_ublur + w (eps_c - eps_ublur)``, so it has no term of its own and the CFG map is
  taken against the blurred ``eps_ublur``), has no SEG map. ``guidance_rescale`` is not applied.

How it attaches (no class is patched, everything is undone on exit, also on errors): the
recorder is an *observer* of the UNet's one :class:`~ebca_viz.denoiser_hook.DenoiserHook` and
never names a method. ``before_call`` reads the parsed call (the caller's batch, step, new run:
the hook's :class:`~ebca_viz.denoiser_hook.StepClock`; the ``step`` axis counts UNet calls, one more than
``num_inference_steps`` with PNDM); ``observe_output`` reads the UNet's own rows before a guidance
method combines them; ``after_call`` stores the step. If an installed method sends
``on_cross_attention`` events for the recorded layers (its ``emits``) -- installed before the trace or
later inside it -- the hook subscribes the trace to it and the trace records what the method hands
out (the cascading contexts of EBCA); otherwise it puts a
:class:`~ebca_viz.tracing.processor.RecordingCrossAttnProcessor` (plain diffusers attention)
on the recorded layers (:attr:`Trace.mode` is that method's ``kind``, or ``"plain"``). A
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
one image): about 24 MB (of which the guidance maps, ``2 x 64 x 64`` fp32 per step, 1.7 MB).
"""
from __future__ import annotations

import math
from typing import Optional, Sequence

import torch

from ..adapters import adapter_for, denoiser_of
from ..attach import _exec_order
from ..attn_io import layer_keys
from ..denoiser_hook import TRACE, DenoiserHook, Participant, first_timestep
from ..energy import attention_scores, layer_energies, self_attention_energy
from ..tokens import token_words
from .budget import DEFAULT_BUDGET, Budget, check_budget_args, mib
from .trace_data import GUIDANCE_KINDS, Trace
from .filters import StepFilter, select_layers, select_quantities
from .dit_recording import DiTRecording
from .processor import RecordingCrossAttnProcessor, RecordingJointAttnProcessor
from .quantities import (
    check_map_grid,
    resize_map,
    resolve_map_grid,
    unet_calls,
)
from .trace_data import NAN_FILLED, TraceStorage
from ..errors import InvalidSetting, InvalidType, StateError, UnsupportedModel
from ..hints import LayerSpec, StepSpec, Target


class Recorder(DiTRecording, Participant):
    """The observer that fills a :class:`~ebca_viz.tracing.trace_data.TraceStorage` while a pipeline samples.

    Made by :func:`trace` (which wraps it in a :class:`~ebca_viz.tracing.trace_data.Trace`); it owns the
    hooks, the recording processors and the subscriptions, and undoes all of them in :meth:`stop`.
    """

    role, kind, title = "observer", TRACE, "a trace"

    def __init__(self, pipe, unet, record: TraceStorage, steps=None, num_steps: Optional[int] = None,
                 cfg: Optional[bool] = None, guidance_scale: Optional[float] = None, adapter=None):
        self.pipe, self.unet, self.record = pipe, unet, record  # unet: the denoiser (pipe.unet or pipe.transformer)
        self.adapter = adapter if adapter is not None else adapter_for(pipe if pipe is not None else unet)
        self.dit = self.adapter.family != "unet"
        self._steps_filter = StepFilter(steps)
        self.steps_spec = steps
        if num_steps is not None and (isinstance(num_steps, bool) or not isinstance(num_steps, int) or num_steps < 1):
            raise InvalidSetting(f"num_steps must be a positive int (the run length), got {num_steps!r}")
        self.num_steps = num_steps
        if cfg is not None and not isinstance(cfg, bool):
            raise InvalidType("cfg must be None (auto), True or False")
        self.cfg = cfg
        if guidance_scale is not None and (isinstance(guidance_scale, bool) or not isinstance(guidance_scale, (int, float))
                                           or not math.isfinite(guidance_scale)):
            raise InvalidSetting(f"guidance_scale must be None (the pipeline's) or a finite number, got {guidance_scale!r}")
        self.guidance_scale = None if guidance_scale is None else float(guidance_scale)
        text_layers = self.adapter.text_layers()
        all_keys = [li.key for li in text_layers]
        self.kinds = {li.key: li.kind for li in text_layers}
        self._pos = {k: i for i, k in enumerate(record.layers)}
        self._all_index = {k: i for i, k in enumerate(all_keys)}
        # run state
        self.run_step = -1  # step within the current run (the hook's clock)
        self.calls = 0  # UNet calls recorded by this trace, over all runs
        self.b2 = 0
        self.latent_hw = None
        self.wants_events = False
        self._selected = None
        self._stage: dict = {}
        self._methods: tuple = ()  # the methods of the latest call (DenoiserCall.methods)
        self._prompt = None
        # installation
        self._state = "new"
        self._handles: list = []
        self._own: dict = {}  # key -> (our processor, the processor it replaced)
        self._te_calls: list = []
        self.tokenizers: dict = {}  # DiT: tokenizer attribute -> the tokenizer that labelled its segment
        self._te_by_attr: dict = {}  # DiT: tokenizer attribute -> [(ids, [hidden states])] of its text encoder
        self._key_mask = None  # (B, N) bool: the text keys a masked cross-attention attends to (PixArt)
        self.n_text = 0  # text positions of the current call (Flux's single-stream blocks: the first n_text)
        self._rows = slice(0, 0)
        self._block_in: dict = {}  # DiT: block path -> the text stream it received this call

    @property
    def step(self) -> int:
        """Global index of the current UNet call (over all runs of this trace; -1 before the first)."""
        return self.calls - 1

    # -- lifecycle -----------------------------------------------------------------------------
    def start(self) -> "Recorder":
        if self._state != "new":
            raise StateError("this trace has already been used; create a new one with ebca_viz.trace(...)")
        unet = self.unet
        hook = DenoiserHook.of(unet)
        others = [p for p in unet.attn_processors.values()
                  if isinstance(p, (RecordingCrossAttnProcessor, RecordingJointAttnProcessor)) and p.sink is not None]
        if others or (hook is not None and any(isinstance(o, Recorder) for o in hook.participants)):
            raise StateError("another trace is already recording this UNet; leave its `with` first")
        self._state = "active"
        try:
            self._methods = tuple(hook.methods) if hook is not None else ()
            if self._event_source() is None:
                self._install_processors()
            self._update_mode()
            self._handles.append(DenoiserHook.add(unet, self, self.pipe))
            if self.dit:
                self._install_dit_hooks()
            else:
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
            h.remove()  # the hook also takes the trace out of every method's observers
        self._handles.clear()
        if self._own:
            current = dict(self.unet.attn_processors)
            for k, (mine, orig) in self._own.items():
                mine.sink = None
                if hasattr(mine, "pending"):
                    mine.pending = None  # inert if someone else still holds it
                if current.get(k) is mine:
                    current[k] = orig
            self.unet.set_attn_processor(current)
            self._own.clear()
        self._te_calls.clear()
        self._te_by_attr.clear()
        self._block_in.clear()
        self._stage.clear()
        nothing = not self.record.per_step and (not self.record.sums or float(self.record.sums["count"].sum()) == 0)
        self.record.consolidate()
        if self.record.budget.dropped:
            import warnings

            kept = len(self.record.steps)
            warnings.warn(f"trace: budget_bytes={self.record.budget.limit} ({mib(self.record.budget.limit)}) held {kept} of the "
                          f"{len(self.record.timesteps)} UNet calls; dropped {len(self.record.budget.dropped)} items from "
                          f"{self.record.budget.dropped[0]['item']} on (tr.dropped lists them)", UserWarning, stacklevel=4)
        if self.record.timesteps and nothing and self.steps_spec is not None:
            import warnings

            warnings.warn(f"trace recorded nothing: the steps filter {self.steps_spec!r} matched none of the "
                          f"{len(self.record.timesteps)} UNet calls of this run (steps are 0..{len(self.record.timesteps) - 1})",
                          UserWarning, stacklevel=4)

    def _install_processors(self):
        from ..attach import custom_processors

        custom = custom_processors(self.unet, self.record.layers)
        if custom:
            k, cls = next(iter(custom.items()))
            raise InvalidSetting(
                f"trace: {len(custom)} cross-attention layers run a custom processor ({cls} on {k}); recording "
                "would replace it, so the traced image would not be the one your processor makes. Trace a UNet "
                "with diffusers' processors (unet.set_default_attn_processor()), or inside ebca_viz.energy_attention")
        current = dict(self.unet.attn_processors)
        for k in self.record.layers:
            kind = self.kinds[k]
            if kind == "cross":
                mine = RecordingCrossAttnProcessor(self, k, self._all_index[k])
            else:
                layout = "sd3" if self.adapter.family == "sd3" else ("single" if kind == "single" else "flux")
                mine = RecordingJointAttnProcessor(self, k, self._all_index[k], layout)
            self._own[k] = (mine, current[k])
        current.update({k: v[0] for k, v in self._own.items()})
        self.unet.set_attn_processor(current)
        self.record.mode = "plain"

    def _event_source(self):
        """The method that sends ``on_cross_attention`` events for the recorded layers, or None."""
        for m in self._methods:
            if set(getattr(m, "emits", {}).get("on_cross_attention", ())) & set(self.record.layers):
                return m
        return None

    def _update_mode(self) -> None:
        src = self._event_source()
        if src is not None:
            self.record.mode = src.kind
        elif self._own:
            self.record.mode = "plain"

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

    def before_call(self, call) -> None:
        """Stage 1 of the denoiser hook: the caller's batch, before any method adds a branch."""
        self.wants_events = False
        self._stage = {}
        self._methods = call.methods
        self._update_mode()
        sample, t, ehs = call.sample, call.timestep, call.context
        if getattr(call, "role", "cond") == "uncond":  # Flux true CFG: the negative prompt's call is not recorded
            return
        if not torch.is_tensor(ehs) or ehs.ndim != 3 or not torch.is_tensor(sample) or call.latent_hw is None:
            return
        new_run = call.new_run or self.calls == 0  # the first call this trace sees starts a run
        self.run_step, self.calls = call.step, self.calls + 1
        self.record.timesteps.append(first_timestep(t))
        b2 = ehs.shape[0]
        # an explicit trace(cfg=) for the recorded rows, else the hook's decision (the method's, else the pipeline's)
        cfg = self.cfg if self.cfg is not None else call.cfg
        if cfg and b2 % 2:
            raise InvalidSetting(f"trace: cfg=True needs an even UNet batch [uncond; cond], got {b2}; pass cfg=False to trace()")
        self.b2, self.record.n_uncond = b2, (b2 // 2 if cfg else 0)
        self._rows = slice(self.record.n_uncond, b2)
        self.latent_hw = tuple(call.latent_hw)
        self._parts = call.parts
        self.n_text = int(ehs.shape[1])
        self._key_mask = self._read_key_mask(call, b2)
        B, N, D = b2 - self.record.n_uncond, ehs.shape[1], self.adapter.text_width(ehs.shape[2])
        if new_run:
            self._start_run(ehs, (B, N, D, self.latent_hw))
        if self._selected is not None and self.run_step not in self._selected:
            return
        self._begin_step(ehs)

    def _start_run(self, ehs, shape):
        self.record.run_starts.append(self.step)
        if self.record.shape is None:
            self.record.shape = shape
            self.record.images = shape[0]
            self.record.latent_hw = tuple(shape[3])
        elif shape != self.record.shape:
            raise InvalidSetting(
                f"trace: this run has (images, tokens, dim, latent) = {shape}, the first run {self.record.shape}; "
                "one trace records runs of one shape -- use a new trace"
            )
        T = self.num_steps
        if T is None and self.pipe is not None:
            T = getattr(getattr(self.pipe, "scheduler", None), "num_inference_steps", None)
        self._selected = self._steps_filter.resolve(T)
        B, N, D, latent = shape
        if self.record.map_grid is None:
            self.record.map_grid = resolve_map_grid(None, [self.adapter.layer_grid(k, latent) for k in self.record.layers])
        if self.dit:
            self._read_dit_tokens(ehs)
        else:
            self._read_tokens(ehs)
        if T is not None:
            calls = T
            if self.num_steps is None:  # the scheduler's own timesteps: PNDM calls the UNet T + 1 times
                ts = getattr(getattr(self.pipe, "scheduler", None), "timesteps", None)
                calls = len(ts) if ts is not None and len(ts) >= T else T
            n_sel = calls if self._selected is None else len([s for s in self._selected if 0 <= s < calls])
            need = self.record.bytes_for(n_sel, B, N, D, len(self._seg_layer_keys()), fixed=not self.record.sums)
            self.record.budget.check_projection(need, f"recording {n_sel} steps of {len(self.record.layers)} layers")
        if "maps" in self.record.quantities and not self.record.sums and "maps:layers" not in [d["item"] for d in self.record.budget.dropped]:
            shp = (len(self.record.layers), B, N) + self.record.map_grid
            sums = 4 * (math.prod(shp) + len(self.record.layers))
            per_step = self.record.bytes_for(1, B, N, D, len(self._seg_layer_keys()), fixed=False)
            if self.record.budget.on_budget == "drop" and not self.record.budget.fits(sums + per_step):
                # the per-layer running sums would leave no room for a single step: keep steps instead
                self.record.budget.dropped.append({"step": None, "item": "maps:layers", "bytes": int(sums)})
            elif self.record.budget.reserve(sums, "maps:layers", None):
                dev = ehs.device
                self.record.sums = {"sum": torch.zeros(shp, device=dev), "count": torch.zeros(len(self.record.layers), device=dev)}

    def _seg_layer_keys(self):
        """Self-attention layers some method sends ``on_seg_attention`` events for ("seg" quantity)."""
        if "seg" not in self.record.quantities:
            return []
        keys = [k for m in self._methods for k in getattr(m, "emits", {}).get("on_seg_attention", ())]
        return sorted(dict.fromkeys(keys), key=_exec_order)

    def _begin_step(self, ehs):
        B, N, D, _ = self.record.shape
        seg_keys = self._seg_layer_keys()
        if seg_keys and not self.record.seg_layers:
            self.record.seg_layers = seg_keys
        if seg_keys and seg_keys != self.record.seg_layers:
            seg_keys = []  # a different SEG installation in the same trace: not recorded
        dev = ehs.device
        stage = {}
        items = self.record.item_shapes(B, N, D, len(seg_keys))
        nb = sum(math.prod(shape) * torch.empty((), dtype=dt).element_size() for shape, dt in items.values())
        # one reservation per step: a step is stored whole or not at all (the record stays a complete prefix)
        if items and self.record.budget.reserve(nb, "step (" + ", ".join(items) + ")", self.step):
            for item, (shape, dt) in items.items():
                fill = float("nan") if item in NAN_FILLED else 0.0
                stage[item] = torch.full(shape, fill, dtype=dt, device=dev)
        if not self.dit:  # a DiT's text stream is read where its embedder makes it (_text_embedded)
            if "prompt_embeds" in stage:
                stage["prompt_embeds"].copy_(ehs[self.record.n_uncond : self.b2])
            self._prompt = ehs[self.record.n_uncond : self.b2].float()
        self._stage = stage
        # after a drop nothing more is stored (not even into the running sums): the record is a prefix
        self.wants_events = bool(stage) or (bool(self.record.sums) and not self.record.budget.full)

    def after_call(self, call, output) -> None:
        """Stage 6: store the step (nothing when the call raised)."""
        stage, self._stage = self._stage, {}
        was, self.wants_events = self.wants_events, False
        if not was or output is None or not stage:
            return
        self.record.add_step(self.step, stage)

    def _cfg_scale(self) -> Optional[float]:
        """``w`` of the CFG map: ``guidance_scale=`` given to :func:`trace`, else the pipeline's (per call)."""
        if self.guidance_scale is not None:
            return self.guidance_scale
        w = getattr(self.pipe, "guidance_scale", None) if self.pipe is not None else None
        if w is None and self.pipe is not None:  # PixArt keeps it as a local of its __call__
            from ..adapters import pipeline_local

            w = pipeline_local(self.pipe, "guidance_scale")
        return float(w) if isinstance(w, (int, float)) and not isinstance(w, bool) else None

    @torch.no_grad()
    def observe_output(self, call, eps) -> None:
        """Stage 3: fill this step's ``guidance`` item from the UNet's own rows ``[eps_u; eps_c; branches]``
        (module docstring), before a guidance method combines them; reads only. The CFG map is the
        pipeline's term; every other map is a term a method names in ``guidance_terms(call, eps)`` as
        ``{kind: (scale, difference)}`` (kinds outside ``GUIDANCE_KINDS`` are not stored)."""
        g = self._stage.get("guidance")
        eps = self.adapter.eps_grid(eps, call.parts) if torch.is_tensor(eps) else None
        if g is None or eps is None or tuple(eps.shape[-2:]) != tuple(g.shape[-2:]):
            return
        nu, b2 = self.record.n_uncond, self.b2
        cond = eps[nu:b2].float()
        if nu:
            w = self._cfg_scale()
            if w is not None:
                g[0] = w * torch.linalg.vector_norm(cond - eps[:nu].float(), dim=1)
        for m in call.methods:
            terms = getattr(m, "guidance_terms", None)
            for kind, (scale, diff) in (terms(call, eps) if terms is not None else {}).items():
                if kind in GUIDANCE_KINDS and kind != "cfg" and diff.shape == cond.shape:
                    g[GUIDANCE_KINDS.index(kind)] = scale * torch.linalg.vector_norm(diff.float(), dim=1)

    def _read_tokens(self, ehs):
        """Token labels of the conditional rows, from the text-encoder call whose output they are."""
        calls, self._te_calls = self._te_calls, []
        tok = getattr(self.pipe, "tokenizer", None) if self.pipe is not None else None
        if tok is None or not calls:
            return
        cond = ehs[self.record.n_uncond : self.b2]
        B = cond.shape[0]
        for ids, cands in reversed(calls):
            for hs in cands:  # last hidden state (SD 1.x/2.x) or the penultimate one (SDXL: a prefix of the context)
                p, d = hs.shape[0], hs.shape[-1]
                if hs.shape[1] != cond.shape[1] or d > cond.shape[-1] or B % p:
                    continue
                ref = hs.to(device=cond.device, dtype=cond.dtype).repeat_interleave(B // p, dim=0)
                if torch.allclose(ref, cond[..., :d], rtol=1e-3, atol=1e-4):
                    ids = ids.repeat_interleave(B // p, dim=0)
                    self.record.token_labels = [token_words(tok, row.tolist()) for row in ids]
                    return

    # -- events (from the methods the hook subscribed this trace to, or from its own processors) ----
    @torch.no_grad()
    def on_cross_attention(self, ev) -> None:
        if not self.wants_events:
            return
        li = self._pos.get(ev.name)
        if li is None:
            return
        st = self._stage
        rows = slice(self.record.n_uncond, self.b2)
        if ev.name not in self.record.grids:
            self.record.grids[ev.name] = tuple(ev.grid)
        if ev.name not in self.record.execution_order:
            self.record.execution_order.append(ev.name)
        B = self.b2 - self.record.n_uncond
        if "map_step_sum" in st or "layer_maps" in st or self.record.sums:
            h, w = ev.grid
            m = ev.probs[rows].mean(1, dtype=torch.float32).transpose(1, 2).reshape(B, -1, h, w)
            m = resize_map(m, self.record.map_grid)
            if self.record.sums:
                self.record.sums["sum"][li] += m
                self.record.sums["count"][li] += 1
            if "map_step_sum" in st:
                st["map_step_sum"] += m
                st["map_step_count"] += 1
            if "layer_maps" in st:
                st["layer_maps"][li] = m.to(self.record.dtype)
        if "energies" in st:
            q, k = ev.query[rows], ev.key[rows]
            before = self._energies_before(ev, q, k, ev.scores[rows])
            if ev.context_out is ev.context_in or self.kinds.get(ev.name, "cross") != "cross":
                after = before
            else:
                k2 = layer_keys(ev.attn, ev.context_out[rows].to(ev.context_in.dtype))
                after = layer_energies(q, k2, attention_scores(q.float(), k2.float(), ev.attn.scale), self.record.alpha)
            st["energies"][li, 0] = before
            st["energies"][li, 1] = after
        if "norms" in st or "contexts" in st:
            cin, cout = ev.context_in[rows].float(), ev.context_out[rows].float()
            if "norms" in st:
                st["norms"][li, 0] = cin.norm(dim=-1)
                st["norms"][li, 1] = cout.norm(dim=-1)
                st["norms"][li, 2] = (cout - self._prompt).norm(dim=-1)
            if "contexts" in st:
                st["contexts"][li] = cout.to(self.record.dtype)

    @torch.no_grad()
    def on_seg_attention(self, ev) -> None:
        """Energy of the blurred rows and of the reference: the conditional rows the extra branch was
        copied from (published convention, or no CFG), or, where the unconditional half is blurred in
        place (paper convention with CFG), that half's own queries before the blur."""
        st = self._stage
        if not self.wants_events or "seg" not in st or ev.name not in self.record.seg_layers:
            return
        i = self.record.seg_layers.index(ev.name)
        rows, scale = ev.rows, ev.attn.scale
        st["seg"][i, 0] = self_attention_energy(ev.query[rows], ev.key[rows], scale)
        b = rows.stop - rows.start
        if rows.start >= b:  # an appended branch: its source, the conditional rows just before it
            ref = slice(rows.start - b, rows.start)
            st["seg"][i, 1] = self_attention_energy(ev.query[ref], ev.key[ref], scale)
        else:  # blurred in place
            st["seg"][i, 1] = self_attention_energy(ev.unblurred_query, ev.key[rows], scale)

    # -- memory ----------------------------------------------------------------------------------
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
            raise StateError("a loaded trace has no UNet to estimate for; use ebca_viz.estimate_bytes(pipe, ...)")
        for nm, v in (("num_steps", num_steps), ("batch", batch)):
            if isinstance(v, bool) or not isinstance(v, int) or v < 1:
                raise InvalidSetting(f"{nm} must be a positive int, got {v!r}")
        for nm, v in (("height", height), ("width", width), ("tokens", tokens), ("seg_layers", seg_layers)):
            if v is not None and (isinstance(v, bool) or not isinstance(v, int) or v < (0 if nm == "seg_layers" else 1)):
                raise InvalidSetting(f"{nm} must be a positive int (or None for the default), got {v!r}")
        f = getattr(self.pipe, "vae_scale_factor", 1) if self.pipe is not None else 1
        if self.adapter.family == "flux":  # latents packed 2x2 into tokens: the token grid is the output grid
            f *= 2
        s = getattr(self.unet.config, "sample_size", None)
        if s is None and not (height and width):
            raise InvalidSetting(f"estimate_bytes: a {type(self.unet).__name__} has no default size; pass height= and width=")
        s = s if isinstance(s, (tuple, list)) else (s, s)
        lh = -(-height // f) if height else s[0]
        lw = -(-width // f) if width else s[1]
        if tokens is None:
            tok = getattr(self.pipe, "tokenizer", None) if self.pipe is not None else None
            tokens = self.adapter.default_text_length(self.pipe) if self.dit else (getattr(tok, "model_max_length", 77) or 77)
        D = self.unet.config.cross_attention_dim if not self.dit else self.adapter.text_width(0)
        D = D[0] if isinstance(D, (tuple, list)) else D
        if seg_layers is None:
            hook = DenoiserHook.of(self.unet)
            self._methods = tuple(hook.methods) if hook is not None and self._state == "new" else self._methods
            seg_layers = len(self._seg_layer_keys())
        grid = self.record.map_grid or resolve_map_grid(None, [self.adapter.layer_grid(k, (lh, lw)) for k in self.record.layers])
        saved, self.record.map_grid = self.record.map_grid, grid
        try:
            sel = self._steps_filter.resolve(num_steps)
            calls = unet_calls(self.pipe, num_steps)
            n = calls if sel is None else len([x for x in sel if 0 <= x < calls])
            return self.record.bytes_for(n, batch, tokens, D, seg_layers, latent_hw=(lh, lw))
        finally:
            self.record.map_grid = saved


def trace(target: Target, layers: LayerSpec = None, steps: StepSpec = None, quantities: Optional[Sequence[str]] = None,
          map_grid: Optional[tuple] = None, dtype: torch.dtype = torch.float16, budget_bytes: int = DEFAULT_BUDGET, on_budget: str = "error", num_steps: Optional[int] = None,
          cfg: Optional[bool] = None, alpha: float = 0.0, guidance_scale: Optional[float] = None) -> Trace:
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
        guidance_scale: ``w`` of the CFG guidance map; default: the pipeline's ``guidance_scale`` of each
            call (a bare UNet with ``cfg=True`` and no ``guidance_scale`` records no CFG map).
    """
    adapter = adapter_for(target)
    pipe, unet = denoiser_of(target)
    all_keys = [li.key for li in adapter.text_layers()]
    if not all_keys:
        raise UnsupportedModel("this UNet has no cross-attention layers; fix: trace an SD UNet or a PixArt/SD3/Flux DiT")
    if not isinstance(dtype, torch.dtype) or not dtype.is_floating_point:
        raise InvalidType(f"dtype must be a floating torch dtype such as torch.float16, got {dtype!r}")
    if isinstance(alpha, bool) or not isinstance(alpha, (int, float)) or not math.isfinite(alpha):
        raise InvalidSetting(f"alpha must be a finite number (docs/method.md uses 0), got {alpha!r}")
    record = TraceStorage(select_layers(all_keys, layers, adapter.kinds()), select_quantities(quantities), check_map_grid(map_grid), dtype,
                    Budget(check_budget_args(budget_bytes, on_budget), on_budget), float(alpha))
    record.family = adapter.family
    record.layer_kinds = {k: adapter.kinds()[k] for k in record.layers}
    return Trace(record, Recorder(pipe, unet, record, steps, num_steps, cfg, guidance_scale, adapter=adapter))


def estimate_bytes(target: Target, num_steps: int = 50, height: Optional[int] = None, width: Optional[int] = None,
                   batch: int = 1, tokens: Optional[int] = None, **trace_kwargs) -> int:
    """Host bytes ``trace(target, **trace_kwargs)`` would store for one run (nothing is installed)."""
    return trace(target, **trace_kwargs).estimate_bytes(num_steps, height, width, batch, tokens)
