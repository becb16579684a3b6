"""The SD3 adapter: ``SD3Transformer2DModel`` (Stable Diffusion 3 / 3.5, MMDiT).

Each block's ``attn`` is *joint* attention: text and image tokens are projected separately and attend
together in one softmax over ``[image (P); text (N)]`` keys (diffusers' ``JointAttnProcessor2_0``);
SD3.5's ``dual_attention_layers`` add an image-only ``attn2`` (self). The last block is ``context_pre_only``
(its text stream ends there). One call:
``transformer(hidden_states (B2, C, H, W), encoder_hidden_states (B2, N, D), pooled_projections, timestep)``.
Text sequence: ``[CLIP (77); T5 (max_sequence_length)]``: the 77 CLIP positions carry both CLIP
encoders' penultimate states side by side (named by ``tokenizer``; ``tokenizer_2`` splits a prompt into
the same positions for SD3's CLIP-L/G pair), the T5 positions are named by ``tokenizer_3``.
"""
from __future__ import annotations

from typing import Optional

from .base import DenoiserAdapter, TextSegment


class SD3Adapter(DenoiserAdapter):
    family = "sd3"
    model_class = "SD3Transformer2DModel"
    call_args = ("hidden_states", "encoder_hidden_states", "pooled_projections", "timestep")

    def layer_kind(self, key, attn):
        return "joint" if key.split(".")[-2] == "attn" and getattr(attn, "add_k_proj", None) is not None else "self"

    def latent_grid(self, sample, parts=None):
        if sample is None or sample.ndim != 4:
            return None
        p = self.model.config.patch_size
        return (int(sample.shape[-2]) // p, int(sample.shape[-1]) // p)

    def clip_length(self, pipe=None) -> int:
        pipe = pipe if pipe is not None else self.pipe
        return int(getattr(pipe, "tokenizer_max_length", None) or getattr(getattr(pipe, "tokenizer", None),
                                                                           "model_max_length", 77) or 77)

    def text_segments(self, pipe=None, n_text: Optional[int] = None):
        pipe = pipe if pipe is not None else self.pipe
        c = self.clip_length(pipe)
        n = n_text if n_text is not None else c + 256
        segs = [TextSegment("clip", 0, min(c, int(n)), "tokenizer")]
        if n > c:
            segs.append(TextSegment("t5", c, int(n) - c, "tokenizer_3"))
        return segs
