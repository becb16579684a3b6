"""Configuration of the energy-based methods, validated before anything touches a pipeline.

Every switch where the paper and the published code differ is named here; the
defaults reproduce the published code (its hyperparameters were tuned on it).

================================  ===========================  ===============================
switch                            published code (default)      paper
================================  ===========================  ===============================
``EBCAConfig.prior_form``         ``"published"``: softmax of  ``"paper"``: softmax of
                                  ``|k|^2`` in the norm term    ``1/2 |k|^2`` (= grad of E(K))
``EBCAConfig.update_uncond``      ``True``: both CFG halves     ``False``: conditional half only
                                  are updated
``EBCAConfig.edit_context``       ``"accumulate"``: editorial  ``"reset"``: editorial contexts
                                  contexts updated in place,    cascade within one UNet call and
                                  across layers and steps       restart every step
``SEGConfig.convention``          ``"published"``               ``"paper"``
================================  ===========================  ===============================
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Optional, Sequence, Union

import torch

from .energy import PRIOR_FORMS
from .errors import InvalidSetting, InvalidType
from .schedule import Schedule, ScheduleLike, as_schedule

EDIT_CONTEXT_MODES = ("accumulate", "reset")
# EBCQ divides by 1 + sum_s sigma_s alpha_s: below this magnitude the edit would be amplified more than
# 1 / MIN_EBCQ_DENOMINATOR = 20x, which is never a composition; refused before sampling.
MIN_EBCQ_DENOMINATOR = 0.05
SEG_CONVENTIONS = ("published", "paper")


def _direction(d, name: str) -> int:
    table = {1: 1, -1: -1, "+": 1, "-": -1, "conjunction": 1, "negation": -1, "and": 1, "not": -1}
    if isinstance(d, bool) or not isinstance(d, (int, float, str)) or d not in table:
        raise InvalidSetting(f"{name} must be +1 / 'conjunction' or -1 / 'negation', got {d!r}")
    return table[d]


@dataclass
class Edit:
    """One editorial prompt for EBCQ (composition of queries).

    ``O = (O_main + sum_s sigma_s alpha_s O_s) / (1 + sum_s sigma_s alpha_s)``

    Args:
        prompt: editorial text (encoded with the pipeline's text encoder), or
        embeds: its embedding ``(1 or B, N, D_ctx)`` (needed on a bare UNet).
        alpha: weight ``alpha_s`` (number, per-step list or Schedule).
        direction: ``+1`` conjunction, ``-1`` negation.
        gamma_attn, gamma_norm: step sizes of the editorial context's own EBCU.
        start: fraction of the run before which ``alpha`` and the gammas are 0
            (the published scripts' ``alpha_tau`` / ``gamma_tau``; ignored for an
            argument already given as a Schedule or list).
    """

    prompt: Optional[str] = None
    embeds: Optional[torch.Tensor] = None
    alpha: ScheduleLike = 1.0
    direction: Union[int, str] = 1
    gamma_attn: ScheduleLike = 0.0
    gamma_norm: ScheduleLike = 0.0
    start: float = 0.0

    def resolved(self, i: int) -> "ResolvedEdit":
        name = f"edits[{i}]"
        if (self.prompt is None) == (self.embeds is None):
            raise InvalidSetting(f"{name}: give exactly one of prompt= (text) or embeds= (a tensor)")
        if self.prompt is not None and not isinstance(self.prompt, str):
            raise InvalidType(f"{name}.prompt must be a string, got {type(self.prompt).__name__}")
        if self.embeds is not None and (not torch.is_tensor(self.embeds) or self.embeds.ndim != 3):
            raise InvalidSetting(f"{name}.embeds must be a (1 or B, N, D) tensor")
        if not (isinstance(self.start, (int, float)) and 0.0 <= self.start <= 1.0):
            raise InvalidSetting(f"{name}.start is a fraction of the run in [0, 1], got {self.start!r}")

        def sched(x, what, nonneg=True):
            if isinstance(x, (int, float)) and not isinstance(x, bool) and self.start > 0:
                x = Schedule.window(float(x), start=self.start)
            return as_schedule(x, f"{name}.{what}", nonnegative=nonneg)

        return ResolvedEdit(
            prompt=self.prompt,
            embeds=self.embeds,
            alpha=sched(self.alpha, "alpha"),
            sign=_direction(self.direction, f"{name}.direction"),
            gamma_attn=sched(self.gamma_attn, "gamma_attn"),
            gamma_norm=sched(self.gamma_norm, "gamma_norm"),
        )


@dataclass
class ResolvedEdit:
    prompt: Optional[str]
    embeds: Optional[torch.Tensor]
    alpha: Schedule
    sign: int
    gamma_attn: Schedule
    gamma_norm: Schedule


@dataclass
class EBCAConfig:
    """Energy-based cross-attention (EBCU + EBCQ) settings.

    Args:
        gamma_attn, gamma_norm: step sizes of the main context's Bayesian update
            (number, per-step list, or :class:`~ebca_viz.Schedule`).
        token_indices, token_upweight: multiply the attention term of these token
            positions (0 = start-of-text) in the conditional half. Words (``["shirt"]``) are
            resolved with the pipeline's own tokenizer(s) against ``prompt`` before sampling
            (:func:`token_positions`); a word that is not in the prompt or splits into several
            tokens is a clear error. A position past the prompt's end-of-text (padding) is
            refused before the first step when the pipeline encodes the prompt (its text encoder's
            token ids are read); a bare UNet, or a pipeline given ``prompt_embeds``, has no token
            ids, so there only positions past the context length are refused.
        prompt: the prompt the run samples, needed only to resolve words in ``token_indices``.
        query_mask: inpainting mask ``(H, W)``, ``(1|B, 1, H, W)``; 1 where the
            text should act. Resized to each layer's grid (bilinear, align_corners).
        edits: editorial prompts (:class:`Edit`) for EBCQ.
        edit_context: ``"accumulate"`` (published) or ``"reset"``.
        prior_form: ``"published"`` or ``"paper"`` (see module docstring).
        update_uncond: update the unconditional CFG half too (published: True).
        cfg: whether the UNet batch is ``[uncond; cond]``. ``None``: read it from the
            pipeline (``do_classifier_free_guidance``); on a bare UNet, True.
        num_inference_steps: run length for start/stop schedules on a bare UNet
            (a pipeline's scheduler provides it).
    """

    gamma_attn: ScheduleLike = 0.0
    gamma_norm: ScheduleLike = 0.0
    token_indices: Optional[Sequence[int]] = None
    token_upweight: Optional[Sequence[float]] = None
    query_mask: Optional[torch.Tensor] = None
    edits: Sequence[Edit] = field(default_factory=list)
    edit_context: str = "accumulate"
    prior_form: str = "published"
    update_uncond: bool = True
    cfg: Optional[bool] = None
    num_inference_steps: Optional[int] = None
    prompt: Optional[str] = None

    @classmethod
    def paper(cls, **kw) -> "EBCAConfig":
        """The paper's forms for every switch (prior 1/2, conditional half only, reset edits)."""
        base = dict(prior_form="paper", update_uncond=False, edit_context="reset")
        base.update(kw)
        return cls(**base)

    def validate(self) -> "ResolvedConfig":
        """Check every field; returns the resolved schedules. Raises ``ValueError``/``TypeError``."""
        ga = as_schedule(self.gamma_attn, "gamma_attn")
        gn = as_schedule(self.gamma_norm, "gamma_norm")
        if self.prior_form not in PRIOR_FORMS:
            raise InvalidSetting(f"prior_form must be one of {PRIOR_FORMS}, got {self.prior_form!r}")
        if self.edit_context not in EDIT_CONTEXT_MODES:
            raise InvalidSetting(f"edit_context must be one of {EDIT_CONTEXT_MODES}, got {self.edit_context!r}")
        if not isinstance(self.update_uncond, bool):
            raise InvalidType("update_uncond must be True or False")
        if self.cfg is not None and not isinstance(self.cfg, bool):
            raise InvalidType("cfg must be None (auto), True or False")
        if self.num_inference_steps is not None and (
            isinstance(self.num_inference_steps, bool)
            or not isinstance(self.num_inference_steps, int)
            or self.num_inference_steps < 1
        ):
            raise InvalidSetting(f"num_inference_steps must be a positive int, got {self.num_inference_steps!r}")
        ti, tw = self.token_indices, self.token_upweight
        if (ti is None) != (tw is None):
            raise InvalidSetting("token_indices and token_upweight go together: give both or neither")
        if ti is not None:
            # a scalar is one index / one weight for every index (documented)
            for x in ([ti] if isinstance(ti, str) else ti if isinstance(ti, (list, tuple)) else []):
                if isinstance(x, str) and x.strip().isdigit():  # "5": a position typed as text, not a word
                    raise InvalidType(f"token_indices must be an int or a list of ints and words; {x!r} is a "
                                           f"number written as a string: pass {int(x)}")
            ti = [ti] if isinstance(ti, (int, str)) and not isinstance(ti, bool) else ti
            if isinstance(tw, (int, float)) and not isinstance(tw, bool):
                tw = [tw] * len(ti) if hasattr(ti, "__len__") else tw
            if isinstance(ti, bytes) or not hasattr(ti, "__iter__"):
                raise InvalidType(f"token_indices must be an int, a word or a list of them, got {ti!r}")
            if isinstance(tw, (str, bytes)) or not hasattr(tw, "__iter__"):
                raise InvalidType(f"token_upweight must be a number or a list of numbers, got {tw!r}")
            ti, tw = list(ti), list(tw)
            if len(ti) != len(tw):
                raise InvalidSetting(
                    f"token_indices has {len(ti)} entries but token_upweight has {len(tw)}: give one weight per index"
                )
            for i in ti:
                if isinstance(i, str):
                    if not i.strip():
                        raise InvalidSetting("token_indices: an empty word; give a word of the prompt or a position")
                    continue
                if isinstance(i, bool) or not isinstance(i, int) or i < 0:
                    raise InvalidSetting(f"token_indices must be non-negative ints (0 = start-of-text) or words of the "
                                       f"prompt, got {i!r}")
            words = [i for i in ti if isinstance(i, str)]
            if words and self.prompt is None:
                raise InvalidSetting(
                    f"token_indices gives words {words}: also give prompt= (the prompt you sample) so that they are "
                    "resolved with the pipeline's tokenizer, or pass positions from "
                    "ebca_viz.config.token_positions(pipe, prompt, words)")
            if self.prompt is not None and not isinstance(self.prompt, str):
                raise InvalidType(f"prompt must be a string, got {type(self.prompt).__name__}")
            dup = sorted({i for i in ti if ti.count(i) > 1})
            if dup:
                raise InvalidSetting(f"token_indices lists {dup} more than once (their weights would multiply): "
                                 "give each index once with its combined weight")
            for w in tw:
                if isinstance(w, bool) or not isinstance(w, (int, float)) or not math.isfinite(w) or w < 0:
                    raise InvalidSetting(f"token_upweight must be finite numbers >= 0, got {w!r}")
        m = self.query_mask
        if m is not None:
            if not torch.is_tensor(m) or m.ndim not in (2, 4) or (m.ndim == 4 and m.shape[1] != 1):
                raise InvalidSetting("query_mask must be a tensor of shape (H, W) or (1 or B, 1, H, W)")
            if not torch.isfinite(m).all() or m.min() < 0 or m.max() > 1:
                raise InvalidSetting("query_mask values must lie in [0, 1] (1 = where the text acts)")
            if m.ndim == 2:
                m = m[None, None]
        if isinstance(self.edits, Edit):
            raise InvalidType("edits must be a list of Edit, e.g. edits=[Edit(prompt='...')]")
        if self.edits is None:  # documented: None = no editorial prompts
            self.edits = []
        if isinstance(self.edits, (str, bytes)) or not hasattr(self.edits, "__iter__"):
            raise InvalidType(f"edits must be a list of Edit, got {type(self.edits).__name__}")
        edits = [e.resolved(i) if isinstance(e, Edit) else _not_edit(i, e) for i, e in enumerate(self.edits)]
        return ResolvedConfig(self, ga, gn, ti, tw, m, edits)


def _not_edit(i, e):
    raise InvalidType(f"edits[{i}] must be an ebca_viz.Edit, got {type(e).__name__}")


@dataclass
class ResolvedConfig:
    source: EBCAConfig
    gamma_attn: Schedule
    gamma_norm: Schedule
    token_indices: Optional[list]
    token_upweight: Optional[list]
    query_mask: Optional[torch.Tensor]
    edits: list

    def with_words_resolved(self, pipe) -> "ResolvedConfig":
        """Words in ``token_indices`` replaced by their positions in ``source.prompt`` (pipeline's tokenizers)."""
        ti = self.token_indices
        if not ti or not any(isinstance(i, str) for i in ti):
            return self
        if pipe is None:
            raise InvalidSetting(f"token_indices gives words {[i for i in ti if isinstance(i, str)]}, but a bare UNet has "
                               "no tokenizer: give token positions (ints)")
        pos = token_positions(pipe, self.source.prompt, ti)
        dup = sorted({i for i in pos if pos.count(i) > 1})
        if dup:
            raise InvalidSetting(f"token_indices {ti} name position(s) {dup} more than once (as {pos}): give each once")
        import dataclasses

        return dataclasses.replace(self, token_indices=pos)

    def schedules(self) -> dict:
        """Every schedule of the config by its parameter name (``gamma_attn``, ``edits[0].alpha``, ...)."""
        out = {"gamma_attn": self.gamma_attn, "gamma_norm": self.gamma_norm}
        for i, e in enumerate(self.edits):
            out.update({f"edits[{i}].alpha": e.alpha, f"edits[{i}].gamma_attn": e.gamma_attn,
                        f"edits[{i}].gamma_norm": e.gamma_norm})
        return out

    def needs_num_steps(self) -> bool:
        return any(s.needs_num_steps() for s in self.schedules().values())

    def check_lengths(self, num_steps: Optional[int]) -> None:
        """Per-step lists must hold one value per step of a ``num_steps`` run (checked before sampling;
        a longer list is fine, its tail unused). ``num_steps`` None (unknown): nothing to check yet."""
        if num_steps is None:
            return
        for name, s in self.schedules().items():
            if s.kind == "steps" and len(s.values) < num_steps:
                raise InvalidSetting(
                    f"{name} is a per-step schedule (a list) of {len(s.values)} values, but the run has {num_steps} steps "
                    f"(num_inference_steps): give one value per step ({num_steps} values), or a number, or "
                    f"ebca_viz.Schedule.window(value, start=, stop=) to switch it on for part of the run")

    def check_denominators(self, num_steps: Optional[int], steps: int) -> None:
        """Per-step lists cover the run (:meth:`check_lengths`), and ``1 + sum_s sigma_s alpha_s`` does
        not vanish at any step (a user error, not a NaN image)."""
        self.check_lengths(num_steps)
        if not self.edits:
            return
        for i in range(steps):
            den = 1.0 + sum(e.sign * e.alpha(i, num_steps) for e in self.edits)
            if abs(den) < MIN_EBCQ_DENOMINATOR:
                terms = " + ".join(f"({e.sign:+d})*{e.alpha(i, num_steps):g}" for e in self.edits)
                raise InvalidSetting(
                    f"edits: the EBCQ denominator 1 + {terms} = {den:.3g} at step {i} is within "
                    f"{MIN_EBCQ_DENOMINATOR} of 0 ("
                    + ("a division by zero" if abs(den) < 1e-12 else f"it would amplify the edit {1 / abs(den):.3g}x")
                    + "); "
                    f"change an edit's alpha or direction so that |1 + sum(direction * alpha)| >= {MIN_EBCQ_DENOMINATOR}"
                )


def _tokenizers(pipe) -> list:
    toks = [getattr(pipe, n, None) for n in ("tokenizer", "tokenizer_2")]
    return [t for t in toks if t is not None]


def token_positions(pipe, prompt: str, words) -> list:
    """Positions of ``words`` in ``prompt`` as the pipeline's own tokenizer(s) see it (0 = start-of-text).

    ``words``: a word or a list of words and/or positions (ints pass through). Each word must be one
    token of the prompt, once, within the tokenizer's length (77): otherwise an error says why (not in
    the prompt, past the limit, split into several tokens, repeated) and which positions to use.
    SDXL's two tokenizers must agree. ``token_positions(pipe, "A cat wearing a shirt", "shirt") == [5]``.
    """
    if not isinstance(prompt, str):
        raise InvalidType(f"prompt must be a string, got {type(prompt).__name__}")
    items = [words] if isinstance(words, (str, int)) and not isinstance(words, bool) else list(words)
    toks = _tokenizers(pipe)
    if any(isinstance(w, str) for w in items) and not toks:
        raise InvalidSetting("token words need the pipeline's tokenizer; this target has none: give positions (ints)")
    out = []
    for w in items:
        if not isinstance(w, str):
            out.append(w)
            continue
        found = []
        for tok in toks:
            found.append(_word_position(tok, prompt, w))
        if len(set(found)) > 1:
            raise InvalidSetting(f"token_indices: {w!r} is at positions {found} for the pipeline's two tokenizers: "
                               "give the position you mean")
        out.append(found[0])
    return out


def _word_position(tok, prompt: str, word: str) -> int:
    pieces = tok.tokenize(word.strip())
    ids = tok(prompt, truncation=True).input_ids  # what the text encoder sees (<= model_max_length)
    full = [tok.bos_token_id] + tok.convert_tokens_to_ids(tok.tokenize(prompt))
    labels = tok.convert_ids_to_tokens(ids)
    end = ids.index(tok.eos_token_id, 1) if tok.eos_token_id in ids[1:] else len(ids)
    listing = ", ".join(f"{i} {labels[i]}" for i in range(end + 1 if end < len(ids) else len(ids)))
    if len(pieces) != 1:
        piece_ids = tok.convert_tokens_to_ids(pieces)
        at = [i for i in range(len(ids) - len(pieces) + 1) if ids[i:i + len(pieces)] == piece_ids]
        where = f" at positions {list(range(at[0], at[0] + len(pieces)))}" if at else ""
        raise InvalidSetting(f"token_indices: {word!r} splits into {len(pieces)} tokens {pieces}{where}; fix: pass one "
                           f"token's position instead of the word (the prompt's tokens: {listing})")
    pid = tok.convert_tokens_to_ids(pieces[0])
    hits = [i for i, x in enumerate(ids) if x == pid]
    if not hits:
        if pid in full:
            raise InvalidSetting(f"token_indices: {word!r} is token {full.index(pid)} of the prompt, past the tokenizer's "
                               f"{tok.model_max_length}-token limit (the text encoder never sees it); fix: shorten the prompt")
        raise InvalidSetting(f"token_indices: {word!r} is not a word of the prompt {prompt!r} (its tokens: {listing}); "
                           "fix: pass one of its words or a token position")
    if len(hits) > 1:
        raise InvalidSetting(f"token_indices: {word!r} appears {len(hits)} times in the prompt, at positions {hits}: "
                           "give the position you mean")
    return hits[0]


@dataclass
class SEGConfig:
    """Smoothed Energy Guidance settings.

    Args:
        scale: SEG guidance scale ``s`` (published default 3.0).
        sigma: Gaussian blur of the queries over the spatial grid; ``> inf_threshold``
            (or ``math.inf``) means every query becomes the spatial mean (published default 9999999).
        layers: which self-attention layers: block names among ``"down"``, ``"mid"``,
            ``"up"`` and/or full processor keys (``"mid_block.attentions.0.transformer_blocks.0.attn1.processor"``).
        convention: ``"published"`` (``eps_u + w(eps_c-eps_u) + s(eps_c-eps_blur)``, an extra
            blurred conditional branch) or ``"paper"`` (with CFG the unconditional branch is
            blurred: ``eps_ublur + w(eps_c - eps_ublur)``). Without CFG both give
            ``eps_c + s(eps_c - eps_blur) = eps_blur + (s+1)(eps_c - eps_blur)``.
        cfg: like :attr:`EBCAConfig.cfg`.
    """

    scale: float = 3.0
    sigma: float = 9999999.0
    layers: Sequence[str] = ("mid",)
    convention: str = "published"
    inf_threshold: float = 9999.0
    cfg: Optional[bool] = None

    def validate(self) -> "SEGConfig":
        for nm in ("scale", "sigma", "inf_threshold"):
            v = getattr(self, nm)
            if isinstance(v, bool) or not isinstance(v, (int, float)) or math.isnan(v):
                raise InvalidType(f"{nm} must be a number, got {v!r}")
        if self.scale < 0 or math.isinf(self.scale):
            raise InvalidSetting(f"scale must be a finite number >= 0, got {self.scale}")
        if self.sigma <= 0:
            raise InvalidSetting(f"sigma must be > 0 (use math.inf for the exact spatial mean), got {self.sigma}")
        if self.convention not in SEG_CONVENTIONS:
            raise InvalidSetting(f"convention must be one of {SEG_CONVENTIONS}, got {self.convention!r}")
        if self.inf_threshold <= 0:
            raise InvalidSetting(f"inf_threshold must be > 0 (sigmas above it mean 'blur to the spatial mean'), "
                             f"got {self.inf_threshold}")
        if isinstance(self.layers, str) or self.layers is None or not hasattr(self.layers, "__len__"):
            raise InvalidType(f"layers must be a list, e.g. layers=['mid'] or a list of processor keys, got {self.layers!r}")
        if len(self.layers) == 0:
            raise InvalidSetting("layers is empty: name at least one of 'down', 'mid', 'up' or a processor key")
        if self.cfg is not None and not isinstance(self.cfg, bool):
            raise InvalidType("cfg must be None (auto), True or False")
        return self

    @property
    def infinite(self) -> bool:
        return self.sigma > self.inf_threshold


def config_from(cls, config, kwargs: dict):
    """``config`` (an instance of ``cls``) or ``cls(**kwargs)``, for ``apply_*(target, config=None, **kwargs)``."""
    if config is None:
        return cls(**kwargs)
    if kwargs:
        raise InvalidType("pass either config= or keyword settings, not both")
    if not isinstance(config, cls):
        raise InvalidType(f"config must be an ebca_viz.{cls.__name__}, got {type(config).__name__}")
    return config
