"""The Flux adapter: ``FluxTransformer2DModel`` (FLUX.1 schnell / dev).

``transformer_blocks.i.attn``: double-stream *joint* attention (text and image projected separately, one
softmax over ``[text (N); image (P)]`` keys); ``single_transformer_blocks.i.attn``: *single-stream*
attention over one sequence ``[text (N); image (P)]`` (the first ``N`` positions are text). Execution order:
all double-stream blocks, then the single-stream ones. One call:
``transformer(hidden_states (B, P, 4C) packed 2x2 latents, encoder_hidden_states (B, N, D), pooled_projections,
timestep, img_ids (P, 3), txt_ids (N, 3), guidance)``; the token grid ``(h, w)`` is read from ``img_ids``
(rows ``[0, y, x]``), non-square allowed. Text: T5 (``tokenizer_2``) only; CLIP gives the pooled vector.
CFG: FLUX.1-dev is guidance-distilled (``guidance`` is an input, one call); "true CFG"
(``true_cfg_scale > 1`` with a negative prompt) makes two calls per step, cond then uncond.
"""
from __future__ import annotations

from typing import Optional

import torch

from .base import DenoiserAdapter, TextSegment, isqrt_grid, pipeline_local


class FluxAdapter(DenoiserAdapter):
    family = "flux"
    model_class = "FluxTransformer2DModel"
    call_args = ("hidden_states", "encoder_hidden_states", "pooled_projections", "timestep", "img_ids", "txt_ids",
                 "guidance")

    def layer_kind(self, key, attn):
        return "single" if key.startswith("single_transformer_blocks.") else "joint"

    def exec_order(self, key):
        nums = [int(p) for p in key.split(".") if p.isdigit()]
        return (1 if key.startswith("single_") else 0, nums, key)

    def latent_grid(self, sample, parts=None):
        ids = (parts or {}).get("extras", {}).get("img_ids")
        if torch.is_tensor(ids) and ids.shape[-1] >= 3:
            ids = ids.reshape(-1, ids.shape[-1])
            return (int(ids[:, 1].max()) + 1, int(ids[:, 2].max()) + 1)
        if torch.is_tensor(sample) and sample.ndim == 3:
            return isqrt_grid(int(sample.shape[1]))
        return None

    def latent_hw(self, parts):
        return self.latent_grid(parts.get("sample"), parts)

    def layer_grid(self, key, latent_hw):
        return tuple(latent_hw)

    def eps_grid(self, eps, parts):
        hw = self.latent_grid(parts.get("sample"), parts)
        if not torch.is_tensor(eps) or eps.ndim != 3 or hw is None or hw[0] * hw[1] != eps.shape[1]:
            return None
        return eps.transpose(1, 2).reshape(eps.shape[0], eps.shape[2], *hw)

    def text_segments(self, pipe=None, n_text: Optional[int] = None):
        pipe = pipe if pipe is not None else self.pipe
        n = n_text if n_text is not None else 512
        return [TextSegment("t5", 0, int(n), "tokenizer_2")]

    def cfg_layout(self, pipe=None):
        pipe = pipe if pipe is not None else self.pipe
        if pipeline_local(pipe, "do_true_cfg"):
            return {"cfg": False, "style": "separate"}
        return {"cfg": False, "style": "distilled" if self.model.config.guidance_embeds else "none"}

    def call_role(self, parts, previous_t):
        t = parts.get("timestep")
        t = float(t.flatten()[0]) if torch.is_tensor(t) and t.numel() else t
        if previous_t is None or t is None or float(t) != previous_t:
            return "cond"
        return "uncond" if self.cfg_layout()["style"] == "separate" else "cond"
