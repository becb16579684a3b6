r"""Smoothed Energy Guidance on diffusion transformers (PixArt, SD3, Flux): the image-token queries
of the chosen blocks are blurred on the 2-D patch grid, nothing else.

Same energy argument as the UNet SEG (``ebca_viz/seg.py``): blurring the attention logits over the
spatial query axis equals blurring the queries that form them, ``(G Q') K'^T = G (Q' K'^T)``, so
the queries blurred are ``Q'``, exactly as they enter the logits (after the layer's ``norm_q`` and,
on Flux, after the rotary embedding)::

    PixArt attn1 (self)        q = norm_q(to_q x)                     (B2, H, P, d)   all P image tokens
    SD3 attn (joint)           q = [norm_q(to_q x); norm_added_q(add_q_proj c)]     blur the first P (image)
    SD3.5 attn2 (dual, self)   q = norm_q(to_q x)                     (B2, H, P, d)
    Flux attn (double stream)  q = rope([norm_added_q(add_q_proj c); norm_q(to_q x)])   blur the last P
    Flux attn (single stream)  q = rope(norm_q(to_q [c; x]))          (B2, N+P, H, d) blur the last P

    q_blur = G_sigma * q   over the (h, w) patch grid (non-square grids too), reflect padding,
             kernel ceil(6 sigma)+1 made odd, capped by min(h, w); sigma > inf_threshold: the grid mean

Text queries and every key / value are untouched; cross-attention (PixArt attn2) is never selected.

Guidance (``s`` = SEG scale), published convention: one extra branch, a copy of the conditional
rows with the blur on. ``combine`` returns both CFG halves shifted by the same SEG term::

    [eps_u + s (eps_c - eps_blur);  eps_c + s (eps_c - eps_blur)]
      -> the pipeline's own CFG line: eps_u + w (eps_c - eps_u) + s (eps_c - eps_blur)   for every w

so the CFG scale never has to be read (PixArt's pipeline does not store it). Without CFG: one row
set, ``eps_c + s (eps_c - eps_blur)``. Flux with true CFG (``true_cfg_scale > 1`` and a negative
prompt) calls the transformer twice per step, conditional first: the first call carries the branch
and returns ``eps_c + Delta``; the second call at the same timestep (the unconditional one) gets
``eps_u + Delta`` added, so ``eps_u + w (eps_c - eps_u) + Delta`` again, ``Delta = s (eps_c - eps_blur)``.
Paper convention with CFG: the unconditional rows are blurred in place (no extra branch; on Flux
the second call of a step, the unconditional one, is blurred).

Cost: one extra branch (the conditional rows once more) per denoiser call, the floor of SEG's
published form; zero with the paper convention and CFG.
"""
from __future__ import annotations

from typing import Optional

import torch
import torch.nn.functional as F

from .attn_io import context_qkv_heads, joint_out, qkv_heads, tokens_in, tokens_out
from .config import SEGConfig
from .denoiser_hook import SEG, Participant, SelfAttnEvent, branch_difference, notify
from .energy import blur_token_grid, merge_heads
from .errors import InvalidSetting, StateError

FAMILIES = ("pixart", "sd3", "flux")


def blur_grid(q: torch.Tensor, grid: tuple, sigma: float, infinite: bool) -> torch.Tensor:
    """``q (b, H, P, d)`` with ``P = h w`` tokens in row-major grid order -> blurred ``(b, H, P, d)``.

    Per channel 2-D Gaussian (:func:`ebca_viz.energy.gaussian_blur_2d`: reflect padding, the kernel capped by
    ``min(h, w)``) or, ``infinite``, the mean over the grid. Non-square grids are blurred as they are."""
    b, heads, P, d = q.shape
    h, w = grid
    if h * w != P:
        raise InvalidSetting(f"SEG: the layer has {P} image tokens but the patch grid is {h}x{w} = {h * w}; fix: pass "
                             "SEGConfig.layers whose tokens are the image patches (self-attention of the image stream)")
    return blur_token_grid(q, h, w, sigma, infinite)


def blur_image_rows(q: torch.Tensor, rows: slice, start: int, grid: tuple, config: SEGConfig, seq_dim: int = 2):
    """``q`` with the image tokens ``[start, start + h w)`` of batch rows ``rows`` blurred (a new tensor).

    ``seq_dim`` = 2 for ``(B2, H, S, d)`` (diffusers' SDPA layout), 1 for Flux's ``(B2, S, H, d)``.
    Returns ``(q_out, unblurred (len(rows), H, P, d))``."""
    P = grid[0] * grid[1]
    sel = q[rows].narrow(seq_dim, start, P)
    if seq_dim == 1:
        sel = sel.transpose(1, 2)
    qb = blur_grid(sel, grid, config.sigma, config.infinite)
    if seq_dim == 1:
        qb = qb.transpose(1, 2)
    out = q.clone()
    idx = [slice(None)] * q.ndim
    idx[0], idx[seq_dim] = rows, slice(start, start + P)
    out[tuple(idx)] = qb
    return out, sel


class DiTSEGController(Participant):
    """SEG's guidance stage on a DiT (module docstring): marks the blurred rows and the patch grid of
    each call, and folds the branch back so that the pipeline's own CFG line yields the formula.
    Same participant as the UNet's :class:`ebca_viz.seg.SEGController` (kind ``"seg"``, one extra branch)."""

    role, kind, title = "method", SEG, "SEG"
    adds_branch = True  # the blurred branch (published convention)
    cfg_bare_unet = False

    def __init__(self, config: SEGConfig, pipe, model, keys: list, family: str, grid_of):
        self.config, self.pipe, self.unet, self.keys = config, pipe, model, keys
        self.emits = {"on_seg_attention": list(keys)}
        self.blur_rows: Optional[slice] = None
        self.observers: list = []
        self.installation = None
        self._expanded = None  # (cfg_on, b) while a call has an appended branch
        self.family = family
        self.grid_of = grid_of  # DenoiserCall -> (h, w) image-token grid
        self.grid: Optional[tuple] = None
        self.calls = 0  # denoiser forwards seen (with the branch they ran as one forward each)
        self._pending = None  # Flux true CFG: Delta from the conditional call of the step
        self._second = False  # this call repeats the previous call's timestep (Flux: the uncond call)
        self.adapter = None

    @property
    def cfg_setting(self):
        """``SEGConfig.cfg``, else the family's CFG layout for the call under way (PixArt keeps its decision in a
        local of the pipeline's ``__call__``; Flux's true CFG is two calls, never ``[uncond; cond]`` rows)."""
        if self.config.cfg is not None:
            return False if self.family == "flux" else self.config.cfg
        if self.adapter is None or self.pipe is None:
            return None
        return bool(self.adapter.cfg_layout(self.pipe)["cfg"])

    def _true_cfg(self) -> bool:
        """Flux called with true CFG (two calls per step): ``SEGConfig.cfg=True``, or the pipeline's own
        ``do_true_cfg`` read by the adapter (``style == "separate"``)."""
        if self.family != "flux":
            return False
        if self.config.cfg is not None:
            return bool(self.config.cfg)
        return self.adapter is not None and self.pipe is not None and \
            self.adapter.cfg_layout(self.pipe)["style"] == "separate"

    def before_call(self, call) -> None:
        self.blur_rows, self._expanded = None, None
        self.calls += 1
        self.grid = tuple(self.grid_of(call))
        # Flux true CFG: the denoiser hook marks the second (unconditional) call of a step (adapter.call_role)
        self._second = self.family == "flux" and getattr(call, "role", "cond") == "uncond"
        if not self._second:
            self._pending = None
        cfg, b2 = call.cfg, call.batch
        if cfg and b2 % 2:
            raise InvalidSetting(f"SEG: cfg=True needs an even batch [uncond; cond], got {b2} rows")
        if self.config.convention == "paper" and (cfg or self._true_cfg()):
            if self.family == "flux" and not cfg:  # true CFG: the second call of a step is the unconditional one
                self.blur_rows = slice(0, b2) if self._second else None
            else:
                self.blur_rows = slice(0, b2 // 2)
            return
        if self._second:  # Flux true CFG, published: the uncond call gets the conditional call's Delta
            return
        self.blur_rows = call.add_branch("blur", "cond")
        self._expanded = (cfg, b2 - call.n_uncond)

    def combine(self, call, eps: torch.Tensor):
        if self._second and self._pending is not None and self._expanded is None:
            delta = self._pending
            self._pending = None
            if delta.shape == eps[: call.batch].shape:
                return eps[: call.batch] + delta.to(eps.dtype)
            return None
        if self._expanded is None:
            return None
        c, blur = eps[call.rows["cond"]], eps[call.branches["blur"]]
        delta = float(self.config.scale) * (c - blur)
        if self.family == "flux" and not call.n_uncond:
            self._pending = delta
        if call.n_uncond:
            return torch.cat([eps[call.rows["uncond"]] + delta, c + delta])
        return c + delta


    def guidance_terms(self, call, eps: torch.Tensor) -> dict:
        """``{"seg": (s, eps_c - eps_blur)}`` from the denoiser's rows (read by a trace); {} without a branch."""
        d = branch_difference(call, eps, "blur", self._expanded)
        return {} if d is None else {"seg": (float(self.config.scale), d)}

    def after_call(self, call, output) -> None:
        self.blur_rows, self._expanded = None, None

    def remove(self):
        if self.installation is not None:
            self.installation.remove()


def _event(ctl, name, attn, q, k, rows, unblurred):
    if ctl.observers:
        notify(ctl.observers, "on_seg_attention",
               SelfAttnEvent(name=name, attn=attn, query=q, key=k, rows=rows, grid=ctl.grid, unblurred_query=unblurred))


class SEGDiTSelfAttnProcessor:
    """PixArt ``attn1`` (``AttnProcessor2_0`` math) with the marked rows' queries blurred on the patch grid."""

    kind = SEG

    def __init__(self, controller: DiTSEGController, name: str):
        self.ctl, self.name = controller, name

    def __call__(self, attn, hidden_states, encoder_hidden_states=None, attention_mask=None, temb=None, *args, **kw):
        if encoder_hidden_states is not None:
            raise InvalidSetting(f"{self.name}: SEG applies to self-attention layers only; "
                                 "fix: install it on self-attention layers, as apply_seg does")
        t = tokens_in(attn, hidden_states, temb, attention_mask)
        x = t.x
        q, k, v = qkv_heads(attn, x)
        rows = self.ctl.blur_rows
        if rows is not None:
            q, unblurred = blur_image_rows(q, rows, 0, self.ctl.grid, self.ctl.config)
            _event(self.ctl, self.name, attn, q, k, rows, unblurred)
        out = F.scaled_dot_product_attention(q, k, v, attn_mask=t.mask, dropout_p=0.0, is_causal=False)
        out = merge_heads(out).to(q.dtype)
        return tokens_out(attn, attn.to_out[1](attn.to_out[0](out)), t)


class SEGJointAttnProcessor:
    """SD3 ``JointAttnProcessor2_0`` (joint, and the image-only ``attn2`` of SD3.5's dual-attention blocks)
    with the marked rows' *image* queries blurred; the text (context) queries are not."""

    kind = SEG

    def __init__(self, controller: DiTSEGController, name: str):
        self.ctl, self.name = controller, name

    def __call__(self, attn, hidden_states, encoder_hidden_states=None, attention_mask=None, *args, **kwargs):
        residual = hidden_states
        b = hidden_states.shape[0]
        query, key, value = qkv_heads(attn, hidden_states)
        d = key.shape[-1]
        rows = self.ctl.blur_rows
        if rows is not None:
            query, unblurred = blur_image_rows(query, rows, 0, self.ctl.grid, self.ctl.config)
            _event(self.ctl, self.name, attn, query, key, rows, unblurred)
        if encoder_hidden_states is not None:
            cq, ck, cv = context_qkv_heads(attn, encoder_hidden_states)
            query, key, value = (torch.cat(z, dim=2) for z in ((query, cq), (key, ck), (value, cv)))
        out = F.scaled_dot_product_attention(query, key, value, dropout_p=0.0, is_causal=False)
        out = out.transpose(1, 2).reshape(b, -1, attn.heads * d).to(query.dtype)
        return joint_out(attn, out, residual.shape[1], encoder_hidden_states is not None)


class SEGFluxAttnProcessor:
    """Flux ``FluxAttnProcessor`` (double- and single-stream) with the marked rows' image queries
    (the last ``h w`` positions of ``[text; image]``) blurred after the rotary embedding."""

    kind = SEG

    def __init__(self, controller: DiTSEGController, name: str):
        self.ctl, self.name = controller, name

    def __call__(self, attn, hidden_states, encoder_hidden_states=None, attention_mask=None, image_rotary_emb=None):
        from diffusers.models.attention_dispatch import dispatch_attention_fn
        from diffusers.models.embeddings import apply_rotary_emb
        from diffusers.models.transformers.transformer_flux import _get_qkv_projections

        query, key, value, eq, ek, ev = _get_qkv_projections(attn, hidden_states, encoder_hidden_states)
        query, key, value = (z.unflatten(-1, (-1, attn.head_dim)) for z in (query, key, value))
        query, key = attn.norm_q(query), attn.norm_k(key)
        if attn.added_kv_proj_dim is not None:
            eq, ek, ev = (z.unflatten(-1, (-1, attn.head_dim)) for z in (eq, ek, ev))
            eq, ek = attn.norm_added_q(eq), attn.norm_added_k(ek)
            query, key, value = (torch.cat(z, dim=1) for z in ((eq, query), (ek, key), (ev, value)))
        if image_rotary_emb is not None:
            query = apply_rotary_emb(query, image_rotary_emb, sequence_dim=1)
            key = apply_rotary_emb(key, image_rotary_emb, sequence_dim=1)
        rows = self.ctl.blur_rows
        if rows is not None:
            P = self.ctl.grid[0] * self.ctl.grid[1]
            S = query.shape[1]
            query, unblurred = blur_image_rows(query, rows, S - P, self.ctl.grid, self.ctl.config, seq_dim=1)
            if self.ctl.observers:
                _event(self.ctl, self.name, attn, query[:, S - P:].transpose(1, 2), key.transpose(1, 2), rows,
                       unblurred)
        out = dispatch_attention_fn(query, key, value, attn_mask=attention_mask)
        out = out.flatten(2, 3).to(query.dtype)
        if encoder_hidden_states is not None:
            n = encoder_hidden_states.shape[1]
            ctx, out = out.split_with_sizes([n, out.shape[1] - n], dim=1)
            out = attn.to_out[1](attn.to_out[0](out.contiguous()))
            return out, attn.to_add_out(ctx.contiguous())
        return out


PROCESSORS = {"pixart": SEGDiTSelfAttnProcessor, "sd3": SEGJointAttnProcessor, "flux": SEGFluxAttnProcessor}


def seg_dit_keys(model, layers, layer_kinds: dict) -> list:
    """Processor keys SEG blurs on a DiT, from ``SEGConfig.layers``.

    ``layer_kinds``: processor key -> ``"self" | "cross" | "joint" | "single"`` (cross is never chosen).
    A spec is an ``int`` ``i`` (every non-cross attention of ``transformer_blocks.i``, as diffusers'
    ``seg_guidance_layers``), ``"mid"`` (the middle block of ``transformer_blocks``), or a processor key
    (``"single_transformer_blocks.3.attn.processor"``)."""
    eligible = [k for k, kind in layer_kinds.items() if kind != "cross"]
    n_blocks = len(getattr(model, "transformer_blocks", ()))
    chosen = []
    for spec in layers:
        if spec == "mid" or (isinstance(spec, int) and not isinstance(spec, bool)):
            i = n_blocks // 2 if spec == "mid" else spec
            if not 0 <= i < n_blocks:
                raise InvalidSetting(f"SEGConfig.layers: block {spec!r} is out of range: this "
                                   f"{type(model).__name__} has transformer_blocks 0..{n_blocks - 1}; "
                                   f"fix: pass a block in 0..{n_blocks - 1} or 'mid'")
            chosen += [k for k in eligible if k.startswith(f"transformer_blocks.{i}.")]
        elif spec in eligible:
            chosen.append(spec)
        else:
            why = ("is a cross-attention layer (SEG blurs self/joint attention)" if layer_kinds.get(spec) == "cross"
                   else "is neither a block index, 'mid', nor a self/joint attention processor key of this "
                        f"{type(model).__name__}")
            raise InvalidSetting(f"SEGConfig.layers: {spec!r} {why}; e.g. layers=[{n_blocks // 2}] or "
                               f"layers=[{eligible[0] if eligible else 'none'!r}]")
    if not chosen:
        raise InvalidSetting(f"SEGConfig.layers {list(layers)} select no self/joint attention layer of this "
                           f"{type(model).__name__}")
    return list(dict.fromkeys(chosen))


__all__ = ["DiTSEGController", "SEGDiTSelfAttnProcessor", "SEGJointAttnProcessor", "SEGFluxAttnProcessor",
           "blur_grid", "blur_image_rows", "seg_dit_keys"]


def dit_adapter(target):
    """The adapter of a DiT pipeline / denoiser (PixArt, SD3, Flux), or None for anything else (UNets and
    unknown targets keep their own path and messages)."""
    from .adapters import adapter_for

    try:
        ad = adapter_for(target)
    except Exception:
        return None
    return ad if ad.family in FAMILIES else None


def apply_seg_dit(adapter, config: SEGConfig) -> DiTSEGController:
    """Install SEG on a DiT (``adapter`` from :func:`dit_adapter`); returns the controller (``remove()`` undoes it)."""
    from .attach import custom_processors
    from .denoiser_hook import DenoiserHook, install
    from .guards import FiniteGuard, guidance_text

    pipe, model, family = adapter.pipe, adapter.model, adapter.family
    keys = seg_dit_keys(model, config.layers, adapter.kinds())

    def grid_of(call):
        g = getattr(call, "token_grid", None) or adapter.latent_grid(call.sample, adapter.parse_call(call.args,
                                                                                                  call.kwargs))
        if g is None:
            raise InvalidSetting(f"SEG: cannot read the image-token grid of this {type(model).__name__} call")
        return g

    ctl = DiTSEGController(config, pipe, model, keys, family, grid_of)
    ctl.adapter = adapter
    why = DenoiserHook.refusal(model, ctl)
    if why:
        raise StateError(why)
    custom = custom_processors(model, keys)
    if custom:
        k, cls = next(iter(custom.items()))
        raise InvalidSetting(
            f"SEG: {len(custom)} attention layers run a custom processor ({cls} on {k}); SEG would replace it, so "
            f"the guided image would not be the one your processor makes. Use diffusers' processors "
            f"(transformer.set_default_attn_processor() where the family has one) or choose other layers with "
            "SEGConfig(layers=[...])")
    cfg = config
    guard = FiniteGuard("SEG", lambda: f"scale={cfg.scale:g}, sigma={cfg.sigma:g}, {guidance_text(pipe)}, "
                                       f"dtype={model.dtype}")
    proc = PROCESSORS[family]
    ctl.installation = install(model, {k: proc(ctl, k) for k in keys}, [ctl], pipe, guard)
    return ctl
