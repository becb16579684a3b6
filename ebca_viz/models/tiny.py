"""Tiny Stable Diffusion pipelines built in code, for tests and offline demos.

Same classes and wiring as SD 1.x (``UNet2DConditionModel`` with cross-attention in
down, mid and up blocks, ``AutoencoderKL``, ``CLIPTextModel``, the shipped offline CLIP
tokenizer, a DDIM scheduler with SD's betas), random weights from a seed. Numbers,
not pictures: a random model draws noise, but every code path of a real one runs.
"""
from __future__ import annotations

import torch

SD_SCHEDULER = dict(
    num_train_timesteps=1000, beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear",
    clip_sample=False, set_alpha_to_one=False, steps_offset=1,
)

TINY_UNET = dict(
    sample_size=8,
    in_channels=4,
    out_channels=4,
    layers_per_block=1,
    block_out_channels=(32, 64),
    down_block_types=("CrossAttnDownBlock2D", "CrossAttnDownBlock2D"),
    up_block_types=("CrossAttnUpBlock2D", "CrossAttnUpBlock2D"),
    cross_attention_dim=32,
    attention_head_dim=8,
    norm_num_groups=8,
)


def tiny_unet(seed: int = 0, in_channels: int = 4, **overrides):
    from diffusers import UNet2DConditionModel

    cfg = dict(TINY_UNET, in_channels=in_channels)
    cfg.update(overrides)
    torch.manual_seed(seed)
    return UNet2DConditionModel(**cfg)


def tiny_text_encoder(seed: int = 0, hidden: int = 32):
    from transformers import CLIPTextConfig, CLIPTextModel

    from .tokenizer import load_tokenizer

    tok = load_tokenizer()
    torch.manual_seed(seed)
    cfg = CLIPTextConfig(
        vocab_size=len(tok), hidden_size=hidden, intermediate_size=2 * hidden, num_hidden_layers=2,
        num_attention_heads=4, max_position_embeddings=77, bos_token_id=tok.bos_token_id,
        eos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id,
    )
    return CLIPTextModel(cfg).eval(), tok


def tiny_vae(seed: int = 0):
    from diffusers import AutoencoderKL

    torch.manual_seed(seed)
    return AutoencoderKL(
        in_channels=3, out_channels=3, latent_channels=4, block_out_channels=(8, 16),
        down_block_types=("DownEncoderBlock2D", "DownEncoderBlock2D"),
        up_block_types=("UpDecoderBlock2D", "UpDecoderBlock2D"), norm_num_groups=4, sample_size=16,
    )


def tiny_pipeline(seed: int = 0, inpainting: bool = False, **unet_overrides):
    """A random-weight SD pipeline: 16x16 images, 8x8x4 latents (VAE f=2), 32-dim context, 77 tokens.

    ``inpainting=True`` gives a ``StableDiffusionInpaintPipeline`` (UNet with 9 input channels).
    """
    from diffusers import DDIMScheduler, StableDiffusionInpaintPipeline, StableDiffusionPipeline

    te, tok = tiny_text_encoder(seed)
    cls = StableDiffusionInpaintPipeline if inpainting else StableDiffusionPipeline
    pipe = cls(
        vae=tiny_vae(seed), text_encoder=te, tokenizer=tok,
        unet=tiny_unet(seed, in_channels=9 if inpainting else 4, **unet_overrides),
        scheduler=DDIMScheduler(**SD_SCHEDULER), safety_checker=None, feature_extractor=None,
        requires_safety_checker=False,
    )
    pipe.set_progress_bar_config(disable=True)
    return pipe


SD15_UNET = dict(
    sample_size=64, in_channels=4, out_channels=4, layers_per_block=2,
    block_out_channels=(320, 640, 1280, 1280),
    down_block_types=("CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "DownBlock2D"),
    up_block_types=("UpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D"),
    cross_attention_dim=768, attention_head_dim=8, norm_num_groups=32,
)


def sd15_unet(seed: int = 0):
    """Stable Diffusion 1.5's UNet architecture (860M parameters, 16 cross-attention layers) with
    random weights, built from its config: for benchmarks and shape checks, no download."""
    from diffusers import UNet2DConditionModel

    torch.manual_seed(seed)
    return UNet2DConditionModel(**SD15_UNET)


TINY_SDXL_UNET = dict(
    TINY_UNET,
    cross_attention_dim=64,  # = hidden of text_encoder (32) + hidden of text_encoder_2 (32), concatenated
    use_linear_projection=True,
    addition_embed_type="text_time",
    addition_time_embed_dim=8,
    projection_class_embeddings_input_dim=32 + 6 * 8,  # pooled text (projection_dim) + 6 time ids x 8
)


def tiny_sdxl_pipeline(seed: int = 0, **unet_overrides):
    """A random-weight SDXL pipeline (``StableDiffusionXLPipeline``): 16x16 images, 8x8x4 latents.

    Same wiring as SDXL: two CLIP text encoders (the second with a projection, whose pooled
    output and 6 micro-conditioning time ids feed the UNet's ``text_time`` added embedding),
    penultimate hidden states of both concatenated into a 64-dim context, the offline tokenizer
    for both.
    """
    from diffusers import EulerDiscreteScheduler, StableDiffusionXLPipeline, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTextModelWithProjection

    from .tokenizer import load_tokenizer

    tok = load_tokenizer()

    def cfg(hidden):
        return CLIPTextConfig(
            vocab_size=len(tok), hidden_size=hidden, intermediate_size=2 * hidden, num_hidden_layers=2,
            num_attention_heads=4, max_position_embeddings=77, projection_dim=32,
            bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id,
        )

    torch.manual_seed(seed)
    te1 = CLIPTextModel(cfg(32)).eval()
    te2 = CLIPTextModelWithProjection(cfg(32)).eval()
    unet_cfg = dict(TINY_SDXL_UNET)
    unet_cfg.update(unet_overrides)
    torch.manual_seed(seed)
    unet = UNet2DConditionModel(**unet_cfg)
    sched = EulerDiscreteScheduler(
        num_train_timesteps=1000, beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear",
        steps_offset=1, timestep_spacing="leading",
    )
    pipe = StableDiffusionXLPipeline(
        vae=tiny_vae(seed), text_encoder=te1, text_encoder_2=te2, tokenizer=tok, tokenizer_2=tok,
        unet=unet, scheduler=sched, force_zeros_for_empty_prompt=True,
    )
    pipe.set_progress_bar_config(disable=True)
    return pipe
