"""The PixArt adapter: ``PixArtTransformer2DModel`` (PixArt-Alpha / PixArt-Sigma).

Each block: ``attn1`` self-attention over the image tokens, ``attn2`` cross-attention from image tokens
to the caption (T5 states projected by ``caption_projection``; the same text for every block), with
the T5 padding masked (``encoder_attention_mask``). One call:
``transformer(hidden_states (B2, C, H, W), encoder_hidden_states (B2, N, 4096), timestep, added_cond_kwargs)``;
the image-token grid is ``(H / p, W / p)`` (patch ``p`` = 2), non-square allowed. CFG: ``[uncond; cond]``
rows (the pipeline's local ``do_classifier_free_guidance``).
"""
from __future__ import annotations

from typing import Optional

import torch

from .base import DenoiserAdapter, TextSegment


class PixArtAdapter(DenoiserAdapter):
    family = "pixart"
    model_class = "PixArtTransformer2DModel"
    call_args = ("hidden_states", "encoder_hidden_states", "timestep", "added_cond_kwargs", "cross_attention_kwargs",
                 "attention_mask", "encoder_attention_mask")  # encoder_attention_mask (B2, N): 1 = a token, 0 = T5 padding

    def layer_kind(self, key, attn):
        return "cross" if key.split(".")[-2] == "attn2" else "self"

    text_embedder_name = "caption_projection"

    def default_text_length(self, pipe=None):
        return 300

    def latent_grid(self, sample, parts=None):
        if sample is None or sample.ndim != 4:
            return None
        p = self.model.config.patch_size
        return (int(sample.shape[-2]) // p, int(sample.shape[-1]) // p)

    def eps_grid(self, eps, parts):
        """The noise prediction: the first ``in_channels`` of the output (PixArt also predicts a variance)."""
        if not torch.is_tensor(eps) or eps.ndim != 4:
            return None
        c = self.model.config.in_channels
        return eps[:, :c] if eps.shape[1] == 2 * c else eps

    def text_segments(self, pipe=None, n_text: Optional[int] = None):
        pipe = pipe if pipe is not None else self.pipe
        n = n_text if n_text is not None else getattr(getattr(pipe, "tokenizer", None), "model_max_length", 300)
        return [TextSegment("t5", 0, int(n), "tokenizer")]
