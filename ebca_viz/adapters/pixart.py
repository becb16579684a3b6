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

from .base import DenoiserAdapter, TextSegment


class PixArtAdapter(DenoiserAdapter):
    family = "pixart"
    model_class = "PixArtTransformer2DModel"
    call_args = ("hidden_states", "encoder_hidden_states", "timestep", "added_cond_kwargs")

    def layer_kind(self, key, attn):
        return "cross" if key.split(".")[-2] == "attn2" else "self"

    def latent_grid(self, sample, parts=None):
        if sample is None or sample.ndim != 4:
            return None
        p = self.model.config.patch_size
        return (int(sample.shape[-2]) // p, int(sample.shape[-1]) // p)

    def text_segments(self, pipe=None, n_text: Optional[int] = None):
        pipe = pipe if pipe is not None else self.pipe
        n = n_text if n_text is not None else getattr(getattr(pipe, "tokenizer", None), "model_max_length", 300)
        return [TextSegment("t5", 0, int(n), "tokenizer")]
