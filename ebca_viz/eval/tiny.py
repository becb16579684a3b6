"""Tiny random CLIP and BLIP models built in code (transformers configs, the offline CLIP
tokenizer): every code path of the metrics runs offline; the numbers mean nothing."""
from __future__ import annotations

import torch


def _text_cfg(tok, hidden=32):
    return dict(vocab_size=len(tok), hidden_size=hidden, intermediate_size=2 * hidden, num_hidden_layers=2,
                num_attention_heads=4, max_position_embeddings=77, bos_token_id=tok.bos_token_id,
                eos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id)


def _vision_cfg(hidden=32):
    return dict(hidden_size=hidden, intermediate_size=2 * hidden, num_hidden_layers=2, num_attention_heads=4,
                image_size=32, patch_size=8)


def tiny_clip_scorer(seed: int = 0, templates=("a photo of {}.",)):
    """A :class:`~ebca_viz.eval.clip_metrics.CLIPScorer` on a random 32-dim CLIP (32x32 images)."""
    from transformers import CLIPConfig, CLIPImageProcessor, CLIPModel

    from ..models import load_tokenizer
    from .clip_metrics import CLIPScorer

    tok = load_tokenizer()
    torch.manual_seed(seed)
    model = CLIPModel(CLIPConfig(text_config=_text_cfg(tok), vision_config=_vision_cfg(), projection_dim=32))
    ip = CLIPImageProcessor(size={"shortest_edge": 32}, crop_size={"height": 32, "width": 32})
    return CLIPScorer(model, tok, ip, templates=templates)


def tiny_captioner(seed: int = 0, max_new_tokens: int = 6):
    """A :class:`~ebca_viz.models.captioner.Captioner` on a random BLIP (32x32 images)."""
    from transformers import BlipConfig, BlipForConditionalGeneration, BlipImageProcessor

    from ..models import load_tokenizer
    from ..models.captioner import Captioner

    tok = load_tokenizer()
    torch.manual_seed(seed)
    tc = dict(_text_cfg(tok), sep_token_id=tok.eos_token_id)
    model = BlipForConditionalGeneration(BlipConfig(text_config=tc, vision_config=_vision_cfg(), projection_dim=32))
    ip = BlipImageProcessor(size={"height": 32, "width": 32})
    return Captioner(model, image_processor=ip, tokenizer=tok, max_new_tokens=max_new_tokens)
