r"""Tiny diffusion-transformer pipelines built in code: PixArt-Sigma, SD3 and Flux.

Same classes and wiring as the real models (diffusers' ``PixArtSigmaPipeline`` /
``StableDiffusion3Pipeline`` / ``FluxPipeline`` with ``PixArtTransformer2DModel`` /
``SD3Transformer2DModel`` / ``FluxTransformer2DModel``, ``AutoencoderKL``, the transformers text
encoders ``T5EncoderModel`` / ``CLIPTextModel(WithProjection)``), random weights from a seed,
offline tokenizers built in code. Numbers, not pictures: every code path of a real model runs.

Text sequences the transformer sees (``N`` = ``max_sequence_length`` of the call):

* PixArt-Sigma: ``[t5_0 .. t5_{N-1}]`` (T5 last hidden state, padded, with an attention mask);
* SD3: ``[clip_0 .. clip_76, t5_0 .. t5_{N-1}]`` -- the two CLIP encoders' penultimate states
  concatenated along the feature axis (one 77-position segment named by ``tokenizer``; ``tokenizer_2``
  splits the prompt the same way here), zero-padded to the T5 width, then the T5 states;
* Flux: ``[t5_0 .. t5_{N-1}]``; CLIP only gives the pooled vector (``pooled_projections``).

Sizes: images ``h x w`` pixels with ``h, w`` multiples of 8 (VAE factor 2 here, patch 2 for PixArt /
SD3, Flux's 2x2 packing), non-square allowed; e.g. 16 x 24 pixels -> a 4 x 6 token grid.
PixArt-Sigma's aspect-ratio binning only knows the real sample sizes: call the tiny PixArt pipeline
with ``use_resolution_binning=False``.

The T5 tokenizer (:func:`t5_tokenizer`) is a ``T5Tokenizer`` (transformers' tokenizers-backed T5,
a Unigram model with ``<pad>`` = 0, ``</s>`` = 1, ``<unk>`` = 2) whose pieces are ``"▁" + word``
for the words of the shipped CLIP vocabulary plus single letters: known words are one token, any
other word splits into letters, and it appends ``</s>`` as T5 does.
"""
from __future__ import annotations

import json

import torch

T5_MAX_LENGTH = 32  # the tiny T5 tokenizer's model_max_length (pipelines pass max_sequence_length)


def t5_tokenizer(model_max_length: int = T5_MAX_LENGTH):
    """A small T5 tokenizer built in code (see the module docstring); offline."""
    from transformers import T5Tokenizer

    from .tokenizer import TOKENIZER_DIR

    words = [k[: -len("</w>")] for k in json.loads((TOKENIZER_DIR / "vocab.json").read_text(encoding="utf-8"))
             if k.endswith("</w>") and len(k) > len("</w>")]
    words = sorted({w.lower() for w in words if w.isalpha()})
    letters = [chr(c) for c in range(ord("a"), ord("z") + 1)] + [str(d) for d in range(10)] + list(",.!?'-")
    vocab = [("<pad>", 0.0), ("</s>", 0.0), ("<unk>", 0.0), ("▁", -2.0)]
    vocab += [("▁" + w, -1.0) for w in words]
    vocab += [(c, -8.0) for c in letters] + [("▁" + c, -8.0) for c in letters if ("▁" + c, -1.0) not in vocab]
    return T5Tokenizer(vocab=vocab, extra_ids=0, model_max_length=model_max_length)


def tiny_t5(seed: int = 0, d_model: int = 32, vocab_size: int = None):
    """A 2-layer ``T5EncoderModel`` with random weights and its tokenizer."""
    from transformers import T5Config, T5EncoderModel

    tok = t5_tokenizer()
    torch.manual_seed(seed)
    cfg = T5Config(vocab_size=vocab_size or len(tok), d_model=d_model, d_kv=8, d_ff=2 * d_model, num_layers=2,
                   num_heads=4, relative_attention_num_buckets=8, relative_attention_max_distance=16,
                   pad_token_id=tok.pad_token_id, eos_token_id=tok.eos_token_id, decoder_start_token_id=0)
    return T5EncoderModel(cfg).eval(), tok


def tiny_clip(seed: int = 0, hidden: int = 32, projection: bool = True, projection_dim: int = 32):
    """A 2-layer CLIP text encoder (with projection for SD3) on the shipped offline CLIP tokenizer."""
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTextModelWithProjection

    from .tokenizer import load_tokenizer

    tok = load_tokenizer()
    torch.manual_seed(seed)
    cfg = CLIPTextConfig(
        vocab_size=len(tok), hidden_size=hidden, intermediate_size=2 * hidden, num_hidden_layers=2,
        num_attention_heads=4, max_position_embeddings=77, projection_dim=projection_dim,
        bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id,
    )
    return (CLIPTextModelWithProjection if projection else CLIPTextModel)(cfg).eval(), tok


def tiny_dit_vae(seed: int = 0, latent_channels: int = 4, shift_factor: float | None = None):
    """``AutoencoderKL`` with factor 2 (two blocks); ``shift_factor`` as SD3 / Flux read it."""
    from diffusers import AutoencoderKL

    torch.manual_seed(seed)
    return AutoencoderKL(
        in_channels=3, out_channels=3, latent_channels=latent_channels, block_out_channels=(8, 16),
        down_block_types=("DownEncoderBlock2D", "DownEncoderBlock2D"),
        up_block_types=("UpDecoderBlock2D", "UpDecoderBlock2D"), norm_num_groups=4, sample_size=16,
        shift_factor=shift_factor, scaling_factor=1.0 if shift_factor is not None else 0.18215,
    )


TINY_PIXART = dict(
    num_attention_heads=2, attention_head_dim=16, in_channels=4, out_channels=8, num_layers=2,
    cross_attention_dim=32, caption_channels=32, sample_size=8, patch_size=2, norm_type="ada_norm_single",
    norm_elementwise_affine=False, norm_eps=1e-6, use_additional_conditions=False, attention_bias=True,
    num_embeds_ada_norm=1000, interpolation_scale=None,
)


def tiny_pixart_pipeline(seed: int = 0, **transformer_overrides):
    """A random-weight ``PixArtSigmaPipeline``: 16x16 images (sample_size 8 latents, patch 2: a 4x4 token
    grid), T5 text encoder (32-dim), DPM-Solver++ as PixArt-Sigma ships. Call it with
    ``use_resolution_binning=False`` and a ``max_sequence_length`` (e.g. 16)."""
    from diffusers import DPMSolverMultistepScheduler, PixArtSigmaPipeline, PixArtTransformer2DModel

    te, tok = tiny_t5(seed, d_model=32)
    cfg = dict(TINY_PIXART)
    cfg.update(transformer_overrides)
    torch.manual_seed(seed)
    tr = PixArtTransformer2DModel(**cfg)
    sched = DPMSolverMultistepScheduler(beta_start=0.0001, beta_end=0.02, beta_schedule="linear",
                                        num_train_timesteps=1000, prediction_type="epsilon", solver_order=2,
                                        algorithm_type="dpmsolver++")
    pipe = PixArtSigmaPipeline(tokenizer=tok, text_encoder=te, vae=tiny_dit_vae(seed), transformer=tr,
                               scheduler=sched)
    pipe.set_progress_bar_config(disable=True)
    return pipe


TINY_SD3 = dict(
    sample_size=8, patch_size=2, in_channels=4, num_layers=2, attention_head_dim=16, num_attention_heads=2,
    joint_attention_dim=64, caption_projection_dim=32, pooled_projection_dim=64, out_channels=4,
    pos_embed_max_size=16,
)


def tiny_sd3_pipeline(seed: int = 0, **transformer_overrides):
    """A random-weight ``StableDiffusion3Pipeline``: two CLIP encoders (32-dim each, projection 32: pooled
    64), a T5 encoder (64-dim = ``joint_attention_dim``), ``SD3Transformer2DModel`` with 2 joint blocks
    (the last one ``context_pre_only``), flow-matching Euler. Text sequence: 77 CLIP + ``max_sequence_length``
    T5 positions (pass e.g. ``max_sequence_length=16``)."""
    from diffusers import FlowMatchEulerDiscreteScheduler, SD3Transformer2DModel, StableDiffusion3Pipeline

    te1, tok1 = tiny_clip(seed, 32)
    te2, tok2 = tiny_clip(seed + 1, 32)
    te3, tok3 = tiny_t5(seed, d_model=64)
    cfg = dict(TINY_SD3)
    cfg.update(transformer_overrides)
    torch.manual_seed(seed)
    tr = SD3Transformer2DModel(**cfg)
    pipe = StableDiffusion3Pipeline(
        transformer=tr, scheduler=FlowMatchEulerDiscreteScheduler(shift=3.0),
        vae=tiny_dit_vae(seed, latent_channels=4, shift_factor=0.0), text_encoder=te1, tokenizer=tok1,
        text_encoder_2=te2, tokenizer_2=tok2, text_encoder_3=te3, tokenizer_3=tok3,
    )
    pipe.set_progress_bar_config(disable=True)
    return pipe


TINY_FLUX = dict(
    patch_size=1, in_channels=16, num_layers=1, num_single_layers=2, attention_head_dim=16,
    num_attention_heads=2, joint_attention_dim=32, pooled_projection_dim=32, guidance_embeds=False,
    axes_dims_rope=(4, 6, 6),
)


def tiny_flux_pipeline(seed: int = 0, guidance_embeds: bool = False, **transformer_overrides):
    """A random-weight ``FluxPipeline``: CLIP (pooled only, 32-dim), T5 (32-dim), ``FluxTransformer2DModel``
    with 1 double-stream and 2 single-stream blocks; VAE with 4 latent channels packed 2x2 into 16.
    ``guidance_embeds=True`` is FLUX.1-dev's guidance-distilled layout, False schnell's."""
    from diffusers import FlowMatchEulerDiscreteScheduler, FluxPipeline, FluxTransformer2DModel

    te1, tok1 = tiny_clip(seed, 32, projection=False)
    te2, tok2 = tiny_t5(seed, d_model=32)
    cfg = dict(TINY_FLUX, guidance_embeds=guidance_embeds)
    cfg.update(transformer_overrides)
    torch.manual_seed(seed)
    tr = FluxTransformer2DModel(**cfg)
    sched = FlowMatchEulerDiscreteScheduler(shift=3.0, use_dynamic_shifting=True, base_shift=0.5, max_shift=1.15,
                                            base_image_seq_len=256, max_image_seq_len=4096)
    pipe = FluxPipeline(scheduler=sched, vae=tiny_dit_vae(seed, latent_channels=4, shift_factor=0.0),
                        text_encoder=te1, tokenizer=tok1, text_encoder_2=te2, tokenizer_2=tok2, transformer=tr)
    pipe.set_progress_bar_config(disable=True)
    return pipe


TINY_DIT = {"tiny-pixart": tiny_pixart_pipeline, "tiny-sd3": tiny_sd3_pipeline, "tiny-flux": tiny_flux_pipeline}


__all__ = ["t5_tokenizer", "tiny_t5", "tiny_clip", "tiny_dit_vae", "tiny_pixart_pipeline", "tiny_sd3_pipeline",
           "tiny_flux_pipeline", "TINY_DIT"]
