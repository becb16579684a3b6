r"""Energy-based cross-attention (EBCA) on an unmodified diffusers UNet.

Per cross-attention layer ``n`` (in execution order; SD 1.x has 16: 6 down, 1 mid, 9 up)::

    O_n     = softmax_j(S) V                                   S = beta Q K^T,  K = C_n W_k^T
    dK      = gamma_attn * w_tok * softmax_i(S)^T (m * Q) - gamma_norm * softmax_j(c |k_j|^2) k_j
    C_{n+1} = C_n + dK W_k                                     (the next layer attends to C_{n+1})

and, with editorial prompts (EBCQ), ``O = (O_n + sum_s sigma_s alpha_s O_s) / (1 + sum_s sigma_s alpha_s)``.

How it plugs into diffusers: every cross-attention layer gets an
:class:`EnergyCrossAttnProcessor` (via ``unet.set_attn_processor``); all of them
share one :class:`EBCAController`, a *method* of the UNet's one
:class:`~ebca_viz.denoiser_hook.DenoiserHook`: its ``before_call`` stage resets the
cascading context to the prompt embeddings at every UNet call (= every sampling step;
the step index and the CFG layout come parsed in the call); the processors (the
per-layer stage) ignore the ``encoder_hidden_states`` the blocks hand them (always the
caller's embeddings) and read the controller's current context instead; ``after_call``
ends the call. The caller's tensors are never modified.
"""
from __future__ import annotations

import contextlib
from typing import Iterator, Optional

import torch
import torch.nn.functional as F

from .attach import Installation, cross_attention_keys, grid_hw, module_of, resolve_target
from .attn_io import attend, queries, tokens_in, tokens_out
from .config import MIN_EBCQ_DENOMINATOR, EBCAConfig, ResolvedConfig, config_from
from .energy import context_update
from .denoiser_hook import EBCA, CrossAttnEvent, DenoiserCall, DenoiserHook, Participant, StepClock, install, installed, notify
from .errors import InvalidSetting, StateError, UnsupportedModel
from .guards import FiniteGuard, guidance_text
from .hints import Target


class EBCAController(Participant):
    """Shared state of one EBCA installation: settings, step counter, cascading contexts, observers.

    A method of the denoiser hook (:mod:`ebca_viz.denoiser_hook`): ``before_call`` prepares the
    cascade, the processors run it per layer, ``after_call`` ends the call; no ``combine`` (the
    pipeline's own CFG line is EBCA's). Observers (``observers``) get ``on_forward_start(ctl)``,
    ``on_cross_attention(event)`` and ``on_forward_end(ctl)``.
    """

    role, kind, title = "method", EBCA, "energy attention (EBCA)"
    needs_caller_batch = True  # the cascading context is sized to the caller's rows
    cfg_bare_unet = True  # the published code's default for a bare UNet

    def __init__(self, config: EBCAConfig, resolved: ResolvedConfig, pipe: Optional[object], unet: torch.nn.Module,
                 edit_embeds: list):
        self.config = config
        self.rc = resolved
        self.pipe = pipe
        self.unet = unet
        self.edit_embeds = edit_embeds  # per edit: (1 or B, N, D)
        self.layer_names = cross_attention_keys(unet)
        self.layer_index = {k: i for i, k in enumerate(self.layer_names)}
        self.emits = {"on_cross_attention": list(self.layer_names)}
        self.observers: list = []
        self.installation: Optional[Installation] = None
        self.paused = False
        self.managed = False  # True inside `with energy_attention(...)`
        # run / step state (the clock is the denoiser hook's while installed)
        self._own_clock = StepClock()
        self._seen_call = False
        self.num_steps: Optional[int] = None
        self._edit_state: Optional[list] = None  # [uncond (B,N,D) or None, cond_1, ..., cond_S]
        self._text_ends: list = []  # end-of-text positions of the prompts encoded since the last run began
        # per-forward state
        self.in_forward = False
        self.context: Optional[torch.Tensor] = None
        self.cfg_on = True
        self.n_uncond = 0
        self.latent_hw: Optional[tuple] = None
        self.now: dict = {}
        self.guard = FiniteGuard("EBCA", self.describe)
        # diffusion transformers with SD's cross-attention form (PixArt): the layers attend to a projection of
        # the denoiser's text input (caption_projection), so the cascade starts at the first layer's context
        self.adapter = None
        self.lazy_context = False
        self.project = None  # raw text states (B, N, D_text) -> the layers' context (B, N, D)
        self.edit_masks: list = []  # per edit: (1, N) T5 attention mask of its prompt, or None
        self._call_ehs = None

    def describe(self) -> str:
        """The settings a non-finite value is blamed on (for :class:`~ebca_viz.guards.NonFiniteError`)."""
        rc = self.rc
        parts = [f"gamma_attn={rc.gamma_attn.max_abs():g}", f"gamma_norm={rc.gamma_norm.max_abs():g}"]
        if rc.token_upweight:
            parts.append(f"token_upweight={rc.token_upweight}")
        for i, e in enumerate(rc.edits):
            parts.append(f"edits[{i}].alpha={e.alpha.max_abs():g}, edits[{i}].gamma_attn={e.gamma_attn.max_abs():g}")
        parts.append(guidance_text(self.pipe))
        parts.append(f"dtype={self.unet.dtype}")
        return ", ".join(parts)

    @property
    def cfg_setting(self):
        """``EBCAConfig.cfg``; else on a DiT the family's CFG layout of the call under way (PixArt keeps it in a
        local of its pipeline's ``__call__``); else None (the pipeline's flag / the bare-UNet default)."""
        if self.config.cfg is not None or self.adapter is None or self.pipe is None:
            return self.config.cfg
        return bool(self.adapter.cfg_layout(self.pipe)["cfg"])

    @property
    def clock(self) -> StepClock:
        """The step clock of the UNet's denoiser hook (shared by every participant), else a private one."""
        hook = DenoiserHook.of(self.unet)
        return hook.clock if hook is not None and self in hook.participants else self._own_clock

    @property
    def step(self) -> int:
        """Index of the current UNet call within its sampling run (-1 before the first)."""
        return self.clock.step

    # -- public controls ---------------------------------------------------------------------
    def new_run(self) -> None:
        """Forget the step counter and the accumulated editorial contexts (done automatically when
        the timestep goes up, i.e. at the start of a new sampling loop)."""
        self.clock.reset()
        self._edit_state = None

    def set_step(self, step: int, num_steps: Optional[int] = None) -> None:
        """Pin the step index of the next UNet call (for hand-written sampling loops)."""
        self.clock.pin(step)
        if num_steps is not None:
            self.num_steps = num_steps

    @contextlib.contextmanager
    def pause(self) -> Iterator[None]:
        """Run UNet calls with plain attention (e.g. during DDIM inversion): no update, no step counted."""
        self.paused = True
        try:
            yield
        finally:
            self.paused = False

    def remove(self) -> None:
        if self.installation is not None:
            self.installation.remove()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.remove()

    # -- hooks ----------------------------------------------------------------------------------
    def before_call(self, call: DenoiserCall) -> None:
        """Stage 2 of the denoiser hook: reset the cascade to the call's context (paused calls never get here)."""
        sample, ehs = call.sample, call.context
        if ehs is None or ehs.ndim != 3:
            raise InvalidSetting("EBCA needs encoder_hidden_states of shape (batch, tokens, dim) in the UNet call")
        new_run, self._seen_call = call.new_run or not self._seen_call, True
        if new_run:  # a new sampling run (or the first call this installation sees)
            self._edit_state = None
            self.num_steps = self._read_num_steps()
            self.rc.check_denominators(self.num_steps, (self.num_steps or 0) + 1)
            self._check_padding()
        self.cfg_on = call.cfg  # read_cfg(pipe, config.cfg, bare_unet=True), decided by the hook
        b2 = ehs.shape[0]
        if self.cfg_on and b2 % 2:
            raise InvalidSetting(
                f"cfg=True needs an even UNet batch [uncond; cond], got {b2}; pass cfg=False to EBCAConfig "
                "when the UNet is called without classifier-free guidance"
            )
        self.n_uncond = b2 // 2 if self.cfg_on else 0
        self.latent_hw = tuple(sample.shape[-2:]) if sample is not None and sample.ndim == 4 else None
        ti = self.rc.token_indices
        if ti and max(ti) >= ehs.shape[1]:
            raise InvalidSetting(
                f"token_indices {ti} out of range: the context has {ehs.shape[1]} tokens (valid: 0..{ehs.shape[1] - 1})"
            )
        s, n = self.step, self.num_steps
        self.now = {
            "gamma_attn": self.rc.gamma_attn(s, n),
            "gamma_norm": self.rc.gamma_norm(s, n),
            "edits": [(e.alpha(s, n), e.gamma_attn(s, n), e.gamma_norm(s, n)) for e in self.rc.edits],
        }
        self._token_weight = None
        if ti:
            w = torch.ones(b2, ehs.shape[1], 1, dtype=ehs.dtype, device=ehs.device)
            for i, u in zip(ti, self.rc.token_upweight):
                w[self.n_uncond :, i] = w[self.n_uncond :, i] * u
            self._token_weight = w
        self.context, self._call_ehs = None, ehs
        if not self.lazy_context:
            self.start_context(ehs)
        self.in_forward = True
        notify(self.observers, "on_forward_start", self)

    def start_context(self, ctx: torch.Tensor) -> None:
        """Start the cascade of this call at ``ctx`` (B2, N, D): the call's ``encoder_hidden_states`` (UNet),
        or what the first cross-attention layer receives (PixArt: ``caption_projection`` of the T5 states)."""
        # the cascade runs in fp32 (fp16 overflows at large step sizes); each layer attends with its own dtype
        self.context = ctx if ctx.dtype in (torch.float32, torch.float64) else ctx.float()
        if self.rc.edits:  # the editorial contexts keep the pipeline's dtype, as before the DiT path (fp32 updates)
            self._prepare_edits(ctx)

    def after_call(self, call: DenoiserCall, output: object) -> None:
        """Stage 5: the call is over (also when it raised: ``output`` is None)."""
        was = self.in_forward
        self.in_forward = False
        self.context, self._call_ehs = None, None
        if was:
            notify(self.observers, "on_forward_end", self)

    def watch_text_encoders(self) -> list:
        """Forward pre-hooks on the pipeline's text encoder(s) that note where each encoded prompt's
        end-of-text token is (from its token ids), so that :meth:`_check_padding` can refuse token
        positions on padding. Returns the hook handles (removed with the installation)."""
        handles = []
        if self.pipe is None or not self.rc.token_indices:
            return handles
        for enc_name, tok_name in (("text_encoder", "tokenizer"), ("text_encoder_2", "tokenizer_2")):
            enc, tok = getattr(self.pipe, enc_name, None), getattr(self.pipe, tok_name, None)
            eos = getattr(tok, "eos_token_id", None)
            if not isinstance(enc, torch.nn.Module) or eos is None:
                continue

            def note(module, args, kwargs, eos=eos):
                ids = args[0] if args else kwargs.get("input_ids")
                if torch.is_tensor(ids) and ids.ndim == 2:
                    for row in ids.tolist():
                        if eos in row[1:]:  # a truncated prompt without end-of-text has no padding
                            self._text_ends.append(row.index(eos, 1))

            handles.append(enc.register_forward_pre_hook(note, with_kwargs=True))
        return handles

    def _check_padding(self) -> None:
        """Refuse ``token_indices`` past the end-of-text of every prompt encoded for this run (padding)."""
        ends, self._text_ends = self._text_ends, []
        ti = [i for i in (self.rc.token_indices or []) if isinstance(i, int)]
        if not ends or not ti:
            return
        end = max(ends)  # lenient: the longest prompt of the batch (the negative prompt included)
        bad = [i for i in ti if i > end]
        if bad:
            raise InvalidSetting(
                f"token_indices {bad} point at padding: the prompt's last word is at position {end - 1} (0 = "
                f"start-of-text, {end} = end-of-text); give positions 1..{end - 1}, or words with "
                "EBCAConfig(token_indices=['word'], prompt=...) resolved by the pipeline's tokenizer")

    def _read_num_steps(self) -> Optional[int]:
        if self.config.num_inference_steps is not None:
            return self.config.num_inference_steps
        sched = getattr(self.pipe, "scheduler", None) if self.pipe is not None else None
        n = getattr(sched, "num_inference_steps", None)
        if n is None and self.rc.needs_num_steps():
            raise InvalidSetting(
                "start/stop schedules need the run length: pass num_inference_steps to EBCAConfig "
                "(a bare UNet has no scheduler to read it from)"
            )
        return n

    def _prepare_edits(self, ehs: torch.Tensor) -> None:
        """Initial editorial contexts: at every call (reset) or once per run (accumulate, published)."""
        if self.config.edit_context == "accumulate" and self._edit_state is not None:
            return
        b2, n = ehs.shape[0], self.n_uncond
        b = b2 - n
        state = [ehs[:n].clone() if n else None]
        for i, e in enumerate(self.edit_embeds):
            if self.project is not None:  # PixArt: T5 states of the edit prompt, cut to the call's length, projected
                with torch.no_grad():
                    e = self.project(e[:, : ehs.shape[1]].to(device=ehs.device, dtype=self.adapter.model.dtype))
            e = e.to(device=ehs.device, dtype=ehs.dtype)
            if e.shape[1:] != ehs.shape[1:]:
                raise InvalidSetting(f"edits[{i}] embeddings have shape {tuple(e.shape[1:])}, the prompt's "
                                     f"{tuple(ehs.shape[1:])}; fix: encode the edit with the pipeline's own text "
                                     "encoder, or pass it as a prompt string")
            if e.shape[0] not in (1, b):
                raise InvalidSetting(f"edits[{i}] embeddings have batch {e.shape[0]}; the UNet batch holds {b} images (use 1 or {b})")
            state.append(e.expand(b, -1, -1).clone())
        self._edit_state = state

    def edit_mask(self, s: int, mask: Optional[torch.Tensor]) -> Optional[torch.Tensor]:
        """Additive key mask ``(B2, H, 1, N)`` for edit ``s``: the call's own rows for the unconditional slot,
        the edit prompt's T5 padding for its conditional rows (PixArt); ``mask`` unchanged otherwise."""
        m = self.edit_masks[s] if s < len(self.edit_masks) else None
        if mask is None or m is None:
            return mask
        n, N = self.n_uncond, mask.shape[-1]
        m = m[:, :N].to(device=mask.device)
        bias = ((1 - m.to(mask.dtype)) * -10000.0)[:, None, None, :].expand(mask.shape[0] - n, *mask.shape[1:])
        return torch.cat([mask[:n], bias])

    def edit_context(self, s: int) -> torch.Tensor:
        """Current context of edit ``s`` for the whole UNet batch: ``[uncond slot; edit_s]`` ``(B2, N, D)``."""
        u, c = self._edit_state[0], self._edit_state[s + 1]
        return c if u is None else torch.cat([u, c])

    def apply_edit_updates(self, updates: list) -> None:
        """Published rule: edit s's conditional slot += its update; the shared unconditional slot
        += the mean of the per-edit unconditional updates (mean over all S edits)."""
        n, S = self.n_uncond, len(self.edit_embeds)
        for s, d in updates:
            self._edit_state[s + 1] = self._edit_state[s + 1] + d[n:].to(self._edit_state[s + 1].dtype)
            if n and self.config.update_uncond:
                self._edit_state[0] = self._edit_state[0] + d[:n].to(self._edit_state[0].dtype) / S


class EnergyCrossAttnProcessor:
    """Cross-attention processor that attends with, and then updates, the cascading context.

    With every strength at zero it computes exactly ``softmax(beta Q K^T) V`` like diffusers'
    ``AttnProcessor2_0`` (explicit scores instead of SDPA, since the update needs them).
    """

    kind = EBCA

    def __init__(self, controller: EBCAController, name: str):
        self.ctl = controller
        self.name = name

    def __call__(self, attn, hidden_states, encoder_hidden_states=None, attention_mask=None, temb=None, *args, **kw):
        ctl = self.ctl
        if encoder_hidden_states is None:
            raise InvalidSetting(f"{self.name}: EnergyCrossAttnProcessor was called without a context "
                                 "(self-attention?); "
                                 "fix: install it on cross-attention layers only, as apply_energy_attention does")
        active = ctl.in_forward
        if active and ctl.context is None:  # PixArt: the cascade starts at the first layer's (projected) context
            ctl.start_context(encoder_hidden_states)
        ctx = ctl.context if active else encoder_hidden_states
        if active and ctx.shape != encoder_hidden_states.shape:
            raise RuntimeError(f"{self.name}: the cascading context {tuple(ctx.shape)} does not match the layer's input")  # internal invariant
        t = tokens_in(attn, hidden_states, temb, attention_mask, n_keys=ctx.shape[1])
        b2, P, _ = t.x.shape
        q = queries(attn, t.x)
        out, k, scores, probs = attend(attn, q, ctx.to(q.dtype), t.mask)
        half = q.dtype not in (torch.float32, torch.float64)  # then the update is computed in fp32

        new_ctx = ctx
        if active:
            now, n = ctl.now, ctl.n_uncond
            # a key mask (PixArt's T5 padding): the energies run over the attended tokens only
            valid = None if t.mask is None else (t.mask[:, 0, 0, :] > -1.0)
            w_k = attn.to_k.weight.detach()
            grid = None
            # ---- EBCQ: compose the editorial outputs, update the editorial contexts ----------
            if ctl.rc.edits:
                num, den, updates = out, 1.0, []
                for s, (e, (alpha, ga, gn)) in enumerate(zip(ctl.rc.edits, now["edits"])):
                    if alpha == 0.0 and ga == 0.0 and gn == 0.0:
                        continue
                    mask_s = ctl.edit_mask(s, t.mask)
                    out_s, k_s, s_s, _ = attend(attn, q, ctl.edit_context(s), mask_s)
                    valid_s = None if mask_s is None else (mask_s[:, 0, 0, :] > -1.0)
                    if alpha != 0.0:
                        num = num + (e.sign * alpha) * out_s
                        den += e.sign * alpha
                    if ga != 0.0 or gn != 0.0:
                        if half:
                            d = context_update(s_s.float(), q.float(), k_s.float(), w_k.float(), ga, gn,
                                               prior_form=ctl.config.prior_form, key_valid=valid_s)
                        else:
                            d = context_update(s_s, q, k_s, w_k, ga, gn, prior_form=ctl.config.prior_form,
                                               key_valid=valid_s)
                        updates.append((s, d))
                        ctl.guard.note_context(f"{self.name} (edits[{s}])", d)
                if abs(den) < MIN_EBCQ_DENOMINATOR:
                    raise InvalidSetting(f"edits: the EBCQ denominator 1 + sum(direction*alpha) = {den:.3g} at step "
                                     f"{ctl.step} is within {MIN_EBCQ_DENOMINATOR} of 0; change an edit's alpha or direction")
                out = num / den
                if updates:
                    ctl.apply_edit_updates(updates)
            # ---- EBCU on the main context ----------------------------------------------------
            ga, gn = now["gamma_attn"], now["gamma_norm"]
            if ga != 0.0 or gn != 0.0:
                qm = q
                if ctl.rc.query_mask is not None:
                    grid = grid_hw(P, ctl.latent_hw)
                    qm = q * self._layer_mask(ctl.rc.query_mask, grid, b2, q)
                if half:
                    d = context_update(scores.float(), qm.float(), k.float(), w_k.float(), ga, gn,
                                       prior_form=ctl.config.prior_form, token_weight=ctl._token_weight,
                                       key_valid=valid)
                else:
                    d = context_update(
                        scores, qm, k, w_k, ga, gn, prior_form=ctl.config.prior_form, token_weight=ctl._token_weight,
                        key_valid=valid)
                if n and not ctl.config.update_uncond:
                    d[:n] = 0
                new_ctx = ctx + d.to(ctx.dtype)
                ctl.context = new_ctx
                ctl.guard.note_context(self.name, new_ctx)
            if ctl.observers:
                ev = CrossAttnEvent(
                    name=self.name, layer=ctl.layer_index.get(self.name, -1), step=ctl.step, attn=attn,
                    query=q, key=k, scores=scores, probs=probs, context_in=ctx, context_out=new_ctx,
                    grid=grid or grid_hw(P, ctl.latent_hw), n_uncond=n, controller=ctl,
                )
                notify(ctl.observers, "on_cross_attention", ev)

        return tokens_out(attn, out, t)

    @staticmethod
    def _layer_mask(mask, grid, b2, q):
        """Mask ``(1|B, 1, H, W)`` -> ``(1|B2, 1, P, 1)`` at the layer grid (bilinear, align_corners=True)."""
        m = F.interpolate(mask.to(device=q.device, dtype=torch.float32), size=grid, mode="bilinear", align_corners=True)
        m = m.flatten(2).unsqueeze(-1).to(q.dtype)  # (Bm, 1, P, 1)
        if m.shape[0] not in (1, b2):
            b = m.shape[0]
            if b2 % b:
                raise InvalidSetting(f"query_mask has batch {b}, not 1 or a divisor of the UNet batch {b2}; "
                                     "fix: pass a mask with batch 1 (all images) or one mask per image")
            m = m.repeat(b2 // b, 1, 1, 1)  # [uncond; cond] halves see the same per-image mask
        return m


def _encode_edit_prompts(pipe, rc: ResolvedConfig, masks: Optional[list] = None) -> list:
    """Edit prompts' text states as the denoiser takes them; ``masks`` (PixArt) receives each prompt's T5
    attention mask (None for given embeds)."""
    embeds = []
    for i, e in enumerate(rc.edits):
        if e.embeds is not None:
            embeds.append(e.embeds.detach())
            if masks is not None:
                masks.append(None)
            continue
        if pipe is None or not hasattr(pipe, "encode_prompt"):
            raise InvalidSetting(f"edits[{i}] gives a prompt, but a bare UNet has no text encoder: pass embeds= instead")
        with torch.no_grad():  # keywords: SDXL's second positional argument is prompt_2
            out = pipe.encode_prompt(prompt=e.prompt, device=pipe._execution_device, num_images_per_prompt=1,
                                     do_classifier_free_guidance=False)
        embeds.append(out[0].detach())  # SDXL: both encoders' hidden states, the cross-attention context
        if masks is not None:
            masks.append(out[1].detach())  # PixArt: (prompt_embeds, prompt_attention_mask, ...)
    return embeds


def apply_energy_attention(target: Target, config: Optional[EBCAConfig] = None, **kwargs) -> EBCAController:
    """Install EBCA on a pipeline or a bare ``UNet2DConditionModel``; returns the controller.

    Call ``controller.remove()`` (or use :func:`energy_attention`) to restore the original
    processors. Keyword arguments build an :class:`EBCAConfig` when ``config`` is None.
    Validation happens before anything is changed: on a bad argument the pipeline is untouched.
    """
    config = config_from(EBCAConfig, config, kwargs)
    rc = config.validate()
    adapter = _dit_adapter(target)
    if adapter is not None:
        pipe, unet = adapter.pipe, adapter.model
    else:
        pipe, unet = resolve_target(target)
    rc = rc.with_words_resolved(pipe)  # token_indices given as words: their positions in config.prompt
    keys = cross_attention_keys(unet)
    if not keys:
        raise UnsupportedModel("unsupported architecture: this UNet has no cross-attention layers; fix: pass a text-"
                               "conditioned UNet pipeline (Stable Diffusion 1.x/2.x/XL) or its .unet")
    old = find_controller(unet)
    if old is not None and not old.managed:
        # re-running a notebook cell that called apply_energy_attention without `with`: replace it
        import warnings

        warnings.warn("replacing the energy attention installed by an earlier apply_energy_attention() call "
                      "(call controller.remove() when done, or use `with energy_attention(...)`)", UserWarning,
                      stacklevel=2)
        old.remove()
    ctl = EBCAController(config, rc, pipe, unet, [])
    if adapter is not None:  # PixArt: the cascade starts at caption_projection(T5 states), masked T5 padding
        ctl.adapter, ctl.lazy_context, ctl.project = adapter, True, _pixart_projection(unet)
    why = DenoiserHook.refusal(unet, ctl)  # before the edit prompts are encoded
    if why:
        raise StateError(why)
    edit_embeds = _encode_edit_prompts(pipe, rc, ctl.edit_masks if adapter is not None else None)
    for i, e in enumerate(edit_embeds):
        if not bool(torch.isfinite(e).all()):
            raise InvalidSetting(f"edits[{i}] embeddings contain NaN/inf: pass finite embeds (or a prompt)")
    ctl.edit_embeds = edit_embeds
    ctl.installation = install(unet, {k: EnergyCrossAttnProcessor(ctl, k) for k in keys}, [ctl], pipe, ctl.guard)
    ctl.installation.add_hooks(ctl.watch_text_encoders())  # padding positions refused at the first step
    return ctl


JOINT_REFUSAL = (
    "energy attention (EBCU/EBCQ) on {family}: {cls} has no cross-attention whose context the update could "
    "cascade. Its text tokens are a stream of their own: each joint block projects them to queries, keys and "
    "values (add_q_proj / add_k_proj / add_v_proj), attends over [image; text] in one softmax and updates the "
    "text stream itself (to_add_out, its feed-forward), so the next block's keys are not C W_k^T of a context "
    "the update could replace -- the Bayesian context update's C_(n+1) = C_n + dK W_k has no C_n there. "
    "ebca_viz applies EBCU/EBCQ to denoisers with SD-style cross-attention: Stable Diffusion UNets and PixArt "
    "(attn2 over the T5 caption); SEG and traces do run on {family}")


def _dit_adapter(target):
    """The adapter of a DiT target (PixArt), None for UNets / unknown targets; SD3 and Flux are refused."""
    from .adapters import adapter_for

    try:
        ad = adapter_for(target)
    except Exception:
        return None
    if ad.family in ("sd3", "flux"):
        raise UnsupportedModel(JOINT_REFUSAL.format(family={"sd3": "SD3", "flux": "Flux"}[ad.family],
                                                cls=type(ad.model).__name__))
    return ad if ad.family == "pixart" else None


def _pixart_projection(model):
    """PixArt's own map from T5 states to the cross-attention context: ``caption_projection``, ``(B, N, D_t5) ->
    (B, N, D)`` (the transformer's forward applies it before the blocks; identity when it has none)."""
    proj = getattr(model, "caption_projection", None)
    return proj if proj is not None else (lambda e: e)


@contextlib.contextmanager
def energy_attention(target: Target, config: Optional[EBCAConfig] = None,
                     **kwargs) -> Iterator[EBCAController]:
    """``with energy_attention(pipe, EBCAConfig(gamma_attn=0.01, gamma_norm=0.02)) as ctl: pipe(prompt)``

    Installs EBCA for the duration of the block and restores diffusers' processors and removes
    every hook on exit, also when sampling raises.
    """
    ctl = apply_energy_attention(target, config, **kwargs)
    ctl.managed = True
    try:
        yield ctl
    finally:
        ctl.remove()


def find_controller(unet: torch.nn.Module) -> Optional[EBCAController]:
    """The EBCA controller installed on ``unet``, if any."""
    p = installed(unet, EBCA)
    return None if p is None else p.ctl


__all__ = [
    "EBCAController",
    "EnergyCrossAttnProcessor",
    "CrossAttnEvent",
    "apply_energy_attention",
    "energy_attention",
    "find_controller",
    "module_of",
]
