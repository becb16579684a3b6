r"""Attend-and-Excite (Chefer et al. 2023) as diffusers ships it, on any loaded SD-1.x-style pipeline.

:func:`attend_and_excite` builds ``StableDiffusionAttendAndExcitePipeline(**pipe.components)`` (the
same modules, nothing copied or reloaded) and calls it with **diffusers' own defaults**
(:data:`AE_DEFAULTS`: ``max_iter_to_alter=25``, ``thresholds={0: 0.05, 10: 0.5, 20: 0.8}``,
``scale_factor=20``) adapted only in

* ``attn_res`` -- the ``(h, w)`` grid of the cross-attention maps A&E aggregates
  (:func:`ae_attn_res`): diffusers' default ``ceil(width / 32)`` when the UNet has cross-attention at
  that grid (SD 1.x/2.x at 512 px: 16 x 16), else the finest grid at which the UNet has
  cross-attention (the shapes worlds, 32 x 32 px, f = 4 VAE: 8 x 8, the latent grid itself);
* ``token_indices`` -- the prompt positions of the subject words, from the pipeline's tokenizer
  exactly as EBCU's up-weighting resolves words (:func:`ebca_viz.config.token_positions`); a position
  on start-of-text, end-of-text or padding is refused, naming the token (:func:`ae_token_indices`).

A&E's step at denoising step ``i < max_iter_to_alter``: with ``A_s`` the Gaussian-smoothed
``(h, w)`` softmax(100 x attention) map of subject token ``s`` (averaged over the layers and heads
at ``attn_res``), ``L = max_s (1 - max A_s)`` and ``z_t <- z_t - alpha_i dL/dz_t`` with
``alpha_i = scale_factor * sqrt(linspace(1, 0.5, T)[i])``; at the threshold steps the update is
repeated (<= 20 times) until ``L <= 1 - threshold``. Then the usual CFG step.

The UNet's attention processors are put back after the call, also when it raises (diffusers'
pipeline restores them only on success).
"""
from __future__ import annotations

import math
import time
from typing import Optional, Sequence

from ..errors import InvalidSetting, UnsupportedModel

#: diffusers' ``StableDiffusionAttendAndExcitePipeline.__call__`` defaults (0.42), unchanged here
AE_DEFAULTS = dict(max_iter_to_alter=25, thresholds={0: 0.05, 10: 0.5, 20: 0.8}, scale_factor=20)


def cross_attention_grids(unet, height_latent: int, width_latent: int) -> dict:
    """``{(h, w): number of cross-attention layers}`` of a ``UNet2DConditionModel`` at a latent size.

    Read from ``unet.config``: down block ``i`` works at the latent grid halved ``i`` times
    (``ceil``, as the stride-2 convolutions do), up blocks mirror the down path, the mid block sits
    at the coarsest grid. A block counts when its type has cross-attention (``CrossAttn`` in the
    name); its layer count is ``layers_per_block`` (down), ``layers_per_block + 1`` (up), 1 (mid).
    """
    cfg = unet.config
    lpb = cfg.layers_per_block if isinstance(cfg.layers_per_block, int) else max(cfg.layers_per_block)
    grids, h, w = [], int(height_latent), int(width_latent)
    for i in range(len(cfg.down_block_types)):
        grids.append((h, w))
        if i < len(cfg.down_block_types) - 1:
            h, w = math.ceil(h / 2), math.ceil(w / 2)
    out: dict = {}
    for typ, g in zip(cfg.down_block_types, grids):
        if "CrossAttn" in typ:
            out[g] = out.get(g, 0) + lpb
    for typ, g in zip(cfg.up_block_types, reversed(grids)):
        if "CrossAttn" in typ:
            out[g] = out.get(g, 0) + lpb + 1
    if cfg.mid_block_type and "CrossAttn" in cfg.mid_block_type:
        out[grids[-1]] = out.get(grids[-1], 0) + 1
    return out


def ae_attn_res(pipe, height: int, width: int) -> tuple:
    """The ``(h, w)`` attention grid A&E aggregates for this pipeline at ``height x width`` pixels.

    diffusers' default ``(ceil(w / 32), ceil(h / 32))`` (16 x 16 for SD at 512 px) when the UNet has
    cross-attention at that grid; otherwise (a model whose VAE or UNet differs from SD's, e.g. the
    shapes worlds: f = 4, latent 8 x 8, cross-attention at 8 x 8 and 4 x 4) the finest grid with
    cross-attention. Read from the UNet (:func:`cross_attention_grids`), never hard-coded.
    """
    f = int(getattr(pipe, "vae_scale_factor", 8))
    grids = cross_attention_grids(pipe.unet, height // f, width // f)
    if not grids:
        raise UnsupportedModel("attend_and_excite: this UNet has no cross-attention layers (A&E needs them)")
    default = (math.ceil(height / 32), math.ceil(width / 32))
    return default if default in grids else max(grids, key=lambda g: g[0] * g[1])


def ae_token_indices(pipe, prompt: str, tokens) -> list:
    """Prompt positions of the A&E subject tokens.

    ``tokens``: words of the prompt and/or positions (ints), as for EBCU's up-weighting
    (:func:`ebca_viz.config.token_positions`: a word must be one token, once). Positions must be words
    of the prompt: 0 (start-of-text) and every position from end-of-text on (padding) are refused,
    naming the token there -- A&E drops position 0 and shifts every index by one, so 0 would silently
    excite the last padding token.
    """
    from ..config import token_positions

    if tokens is None or (isinstance(tokens, (list, tuple)) and not tokens):
        raise InvalidSetting("attend_and_excite: token_indices is required: the subject words of the prompt "
                           "(e.g. ['circle', 'triangle']) or their positions")
    idx = token_positions(pipe, prompt, tokens)
    tok = pipe.tokenizer
    ids = tok(prompt, padding="max_length", max_length=tok.model_max_length, truncation=True).input_ids
    n_words = len(tok(prompt, truncation=True).input_ids) - 2  # <sot> w_1 .. w_n <eot>
    names = [t.replace("</w>", "") for t in tok.convert_ids_to_tokens(ids)]
    for i in idx:
        if isinstance(i, bool) or not isinstance(i, int):
            raise InvalidSetting(f"attend_and_excite: token index {i!r} is neither a word nor a position; fix: pass "
                               f"words of the prompt or their positions 1..{n_words}")
        if not 1 <= i <= n_words:
            what = ("start-of-text" if i == 0 else "end-of-text" if i == n_words + 1 else
                    "padding" if i < len(names) else "past the tokenizer's length")
            word = names[i] if 0 <= i < len(names) else "-"
            listing = ", ".join(f"{k} {names[k]}" for k in range(1, n_words + 1))
            raise InvalidSetting(f"attend_and_excite: token index {i} is {word!r} ({what}), not a word of the prompt "
                               f"{prompt!r}; A&E excites words: use one of {listing}")
    if len(set(idx)) != len(idx):
        raise InvalidSetting(f"attend_and_excite: token indices {idx} repeat a position; fix: name each word once")
    return idx


def ae_pipeline(pipe):
    """``StableDiffusionAttendAndExcitePipeline`` sharing ``pipe``'s modules (no copy, no download)."""
    import logging

    from diffusers import StableDiffusionAttendAndExcitePipeline

    comps = {k: v for k, v in pipe.components.items()
             if k in ("vae", "text_encoder", "tokenizer", "unet", "scheduler", "safety_checker", "feature_extractor")}
    comps.setdefault("safety_checker", None)
    comps.setdefault("feature_extractor", None)
    lg = logging.getLogger("diffusers.pipelines.pipeline_utils")
    old = lg.level
    lg.setLevel(logging.ERROR)  # the "deprecated pipeline" / "no safety checker" notices, once per job
    try:
        ae = StableDiffusionAttendAndExcitePipeline(**comps, requires_safety_checker=False)
    finally:
        lg.setLevel(old)
    ae.set_progress_bar_config(disable=True)
    return ae


def attend_and_excite(pipe, prompt: str, *, token_indices, seed: int = 0, num_inference_steps: int = 50,
                      guidance_scale: float = 7.5, height: Optional[int] = None, width: Optional[int] = None,
                      attn_res: Optional[Sequence[int]] = None, output_type: str = "pil", **ae_kwargs):
    """Sample ``prompt`` with diffusers' Attend-and-Excite on ``pipe``'s modules.

    Args:
        token_indices: subject words and/or positions (:func:`ae_token_indices`).
        attn_res: ``(h, w)``; None = :func:`ae_attn_res` (must be a grid where the UNet has cross-attention).
        ae_kwargs: A&E's own parameters (``max_iter_to_alter``, ``thresholds``, ``scale_factor``);
            unset ones keep diffusers' defaults (:data:`AE_DEFAULTS`).

    Returns:
        ``(images, info)``: the pipeline's output images (PIL, or latents ``(1, C, h, w)`` with
        ``output_type="latent"``) and ``info`` (``token_indices``, ``attn_res``, A&E settings, ``seconds``).
    """
    from ..tasks.common import check_prompt, check_size, check_steps, make_generator, restored

    check_prompt(prompt)
    check_steps(num_inference_steps)
    h, w = check_size(pipe, height, width)
    unknown = set(ae_kwargs) - set(AE_DEFAULTS)
    if unknown:
        raise InvalidSetting(f"attend_and_excite: unknown A&E parameter(s) {sorted(unknown)}; known: "
                           f"{sorted(AE_DEFAULTS)} (+ attn_res, token_indices)")
    idx = ae_token_indices(pipe, prompt, token_indices)
    f = int(getattr(pipe, "vae_scale_factor", 8))
    grids = cross_attention_grids(pipe.unet, h // f, w // f)
    res = tuple(int(x) for x in attn_res) if attn_res is not None else ae_attn_res(pipe, h, w)
    if res not in grids:
        raise InvalidSetting(f"attend_and_excite: attn_res {res} is not a grid with cross-attention in this UNet at "
                           f"{h}x{w} px; choose one of {sorted(grids)} (or None: {ae_attn_res(pipe, h, w)})")
    kw = {**AE_DEFAULTS, **ae_kwargs}
    ae = ae_pipeline(pipe)
    t0 = time.perf_counter()
    with restored(pipe):
        out = ae(prompt, token_indices=idx, num_inference_steps=num_inference_steps, guidance_scale=guidance_scale,
                 height=h, width=w, generator=make_generator(seed, pipe.device), attn_res=res,
                 output_type=output_type, **kw)
    info = dict(token_indices=idx, attn_res=list(res), seconds=round(time.perf_counter() - t0, 3),
                **{k: ({str(a): b for a, b in v.items()} if isinstance(v, dict) else v) for k, v in kw.items()})
    return out.images, info


__all__ = ["AE_DEFAULTS", "attend_and_excite", "ae_attn_res", "ae_token_indices", "ae_pipeline",
           "cross_attention_grids"]
