"""The UNet adapter: ``UNet2DConditionModel`` (Stable Diffusion 1.x / 2.x / XL), ebca_viz's original model.

Attention layers: ``attn1`` self-attention, ``attn2`` cross-attention (``is_cross_attention``), execution
order down, mid, up. One call: ``unet(sample (B2, C, h, w), timestep, encoder_hidden_states (B2, N, D))``.
Text: one CLIP segment (SDXL: the two CLIP encoders' states concatenated along features, same positions).
"""
from __future__ import annotations

from typing import Optional

from .base import DenoiserAdapter, TextSegment


class UNetAdapter(DenoiserAdapter):
    family = "unet"
    model_class = "UNet2DConditionModel"
    call_args = ("sample", "timestep", "encoder_hidden_states")

    def layer_kind(self, key, attn):
        return "cross" if getattr(attn, "is_cross_attention", False) else "self"

    def exec_order(self, key):
        from ..attach import _exec_order

        return _exec_order(key)

    def latent_grid(self, sample, parts=None):
        return tuple(int(x) for x in sample.shape[-2:]) if sample is not None and sample.ndim == 4 else None

    def layer_grid(self, key, latent_hw):
        """From the block position: each down block but the last halves the grid (with ceil)."""
        parts = key.split(".")
        if parts[0] == "down_blocks":
            f = 2 ** int(parts[1])
        elif parts[0] == "up_blocks":
            f = 2 ** (len(self.model.up_blocks) - 1 - int(parts[1]))
        else:
            f = 2 ** (len(self.model.down_blocks) - 1)
        return (-(-latent_hw[0] // f), -(-latent_hw[1] // f))

    def text_segments(self, pipe=None, n_text: Optional[int] = None):
        pipe = pipe if pipe is not None else self.pipe
        tok = getattr(pipe, "tokenizer", None)
        n = n_text if n_text is not None else (getattr(tok, "model_max_length", 77) or 77)
        return [TextSegment("clip", 0, int(n), "tokenizer")]
