"""The shapes-world Stable Diffusion pipeline: architecture, export and offline loading.

A genuine ``diffusers.StableDiffusionPipeline`` at toy scale:

* ``AutoencoderKL`` f=4: image ``(B, 3, 32, 32)`` in [-1, 1] <-> latents ``(B, 4, 8, 8)``
  (times ``vae.config.scaling_factor``, measured after the VAE was trained).
* ``UNet2DConditionModel`` with ``CrossAttnDownBlock2D`` / ``UNetMidBlock2DCrossAttn`` /
  ``CrossAttnUpBlock2D``: cross-attention at 8x8 and 4x4 latent grids, epsilon prediction.
* ``CLIPTextModel`` (small, trained jointly with the UNet): context ``(B, 77, D_ctx)``.
* the package's offline ``CLIPTokenizer`` (77 tokens, SD-style padding) and a DDIM scheduler with
  SD 1.x betas (:data:`ebca_viz.models.tiny.SD_SCHEDULER`).

Weights ship as fp16 safetensors with JSON configs in ``ebca_viz/weights/shapes_world/``
(``unet/``, ``vae/``, ``text_encoder/``, each ``config.json`` + ``*.safetensors``); nothing is
unpickled and nothing is downloaded.
"""
from __future__ import annotations

import json
from pathlib import Path

import torch
from ..errors import MissingFile, RefusedFile

WEIGHTS_DIR = Path(__file__).resolve().parent.parent / "weights" / "shapes_world"
WEIGHT_FILES = {"unet": "diffusion_pytorch_model.safetensors", "vae": "diffusion_pytorch_model.safetensors",
                "text_encoder": "model.safetensors"}


def vae_config(image_size: int = 32, channels=(32, 64, 64)) -> dict:
    """AutoencoderKL with ``len(channels) - 1`` downsamplings (f = 4 for three blocks)."""
    n = len(channels)
    return dict(
        in_channels=3, out_channels=3, latent_channels=4, block_out_channels=tuple(channels),
        down_block_types=("DownEncoderBlock2D",) * n, up_block_types=("UpDecoderBlock2D",) * n,
        layers_per_block=1, norm_num_groups=min(16, channels[0]), sample_size=image_size,
    )


def unet_config(latent_size: int = 8, channels=(64, 128), layers_per_block: int = 1, context_dim: int = 64,
                heads: int = 4) -> dict:
    """UNet2DConditionModel with cross-attention in every block (``attention_head_dim`` is, as in
    SD 1.x configs, the number of heads)."""
    n = len(channels)
    return dict(
        sample_size=latent_size, in_channels=4, out_channels=4, layers_per_block=layers_per_block,
        block_out_channels=tuple(channels), down_block_types=("CrossAttnDownBlock2D",) * n,
        up_block_types=("CrossAttnUpBlock2D",) * n, cross_attention_dim=context_dim, attention_head_dim=heads,
        norm_num_groups=min(32, channels[0]),
    )


def text_config(tokenizer, hidden: int = 64, layers: int = 2, heads: int = 4):
    from transformers import CLIPTextConfig

    return CLIPTextConfig(
        vocab_size=len(tokenizer), hidden_size=hidden, intermediate_size=2 * hidden, num_hidden_layers=layers,
        num_attention_heads=heads, max_position_embeddings=tokenizer.model_max_length,
        bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id,
    )


def build_models(image_size: int = 32, vae_channels=(32, 64, 64), unet_channels=(64, 128), layers_per_block: int = 1,
                 text_hidden: int = 64, text_layers: int = 2, heads: int = 4, seed: int = 0):
    """Fresh random ``(vae, unet, text_encoder, tokenizer)``."""
    from diffusers import AutoencoderKL, UNet2DConditionModel
    from transformers import CLIPTextModel

    from .tokenizer import load_tokenizer

    tok = load_tokenizer()
    torch.manual_seed(seed)
    vae = AutoencoderKL(**vae_config(image_size, vae_channels))
    f = 2 ** (len(vae_channels) - 1)
    unet = UNet2DConditionModel(**unet_config(image_size // f, unet_channels, layers_per_block, text_hidden, heads))
    te = CLIPTextModel(text_config(tok, text_hidden, text_layers, heads))
    return vae, unet, te, tok


def assemble(vae, unet, text_encoder, tokenizer=None):
    """A ``StableDiffusionPipeline`` (DDIM, SD betas, no safety checker) from the three models."""
    from diffusers import DDIMScheduler, StableDiffusionPipeline

    from .tiny import SD_SCHEDULER
    from .tokenizer import load_tokenizer

    pipe = StableDiffusionPipeline(
        vae=vae.eval(), text_encoder=text_encoder.eval(), tokenizer=tokenizer or load_tokenizer(), unet=unet.eval(),
        scheduler=DDIMScheduler(**SD_SCHEDULER), safety_checker=None, feature_extractor=None,
        requires_safety_checker=False,
    )
    pipe.set_progress_bar_config(disable=True)
    return pipe


def save_component(model, folder, dtype=torch.float16) -> None:
    """``folder/config.json`` + ``folder/<weights>.safetensors`` (tensors cast to ``dtype``)."""
    from safetensors.torch import save_file

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    if hasattr(model, "save_config"):  # diffusers model
        model.save_config(folder)
        name = WEIGHT_FILES["unet"]
    else:  # transformers model
        model.config.to_json_file(str(folder / "config.json"))
        name = WEIGHT_FILES["text_encoder"]
    sd = {k: v.detach().to("cpu", dtype if v.is_floating_point() else v.dtype).contiguous()
          for k, v in model.state_dict().items()}
    save_file(sd, str(folder / name), metadata={"format": "pt"})


def export_pipeline(vae, unet, text_encoder, folder, dtype=torch.float16, extra: dict | None = None) -> Path:
    """Write the three components (fp16 safetensors + JSON configs) and ``scheduler_config.json``."""
    from .tiny import SD_SCHEDULER

    folder = Path(folder)
    for name, m in (("vae", vae), ("unet", unet), ("text_encoder", text_encoder)):
        save_component(m, folder / name, dtype)
    sched = dict(SD_SCHEDULER, _class_name="DDIMScheduler")
    (folder / "scheduler_config.json").write_text(json.dumps(sched, indent=1) + "\n")
    if extra:
        (folder / "training.json").write_text(json.dumps(extra, indent=1) + "\n")
    return folder


def _load_state(folder: Path, name: str, dtype) -> dict:
    from safetensors.torch import load_file

    return {k: (v.to(dtype) if v.is_floating_point() else v) for k, v in load_file(str(folder / name)).items()}


def load_components(folder=WEIGHTS_DIR, dtype=torch.float32):
    """``(vae, unet, text_encoder)`` from a folder written by :func:`export_pipeline`."""
    from diffusers import AutoencoderKL, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel

    folder = Path(folder)
    if not (folder / "unet" / WEIGHT_FILES["unet"]).exists():
        raise MissingFile(f"no shapes-world weights in {folder} (expected unet/, vae/, text_encoder/)")
    out = []
    for name, cls in (("vae", AutoencoderKL), ("unet", UNet2DConditionModel)):
        m = cls.from_config(cls.load_config(str(folder / name)))
        m.load_state_dict(_load_state(folder / name, WEIGHT_FILES[name], dtype), strict=True)
        out.append(m.to(dtype).eval())
    te = CLIPTextModel(CLIPTextConfig.from_json_file(str(folder / "text_encoder" / "config.json")))
    missing, unexpected = te.load_state_dict(_load_state(folder / "text_encoder", WEIGHT_FILES["text_encoder"], dtype),
                                             strict=False)
    if unexpected or [k for k in missing if not k.endswith("position_ids")]:
        raise RefusedFile.of("folder", str(folder), "load a folder written by ebca_viz.shapes.train (text_encoder/ and "
                             "unet/ from the same run)", why=f"text encoder weights do not match: missing {missing}, "
                             f"unexpected {unexpected}")
    out.append(te.to(dtype).eval())
    return tuple(out)


def weights_available(folder=WEIGHTS_DIR) -> bool:
    """True when the trained shapes-world weights are present (the demo, notebooks and gallery
    default to this model, else to the random ``"tiny"`` one)."""
    folder = Path(folder)
    return all((folder / c / "config.json").is_file() and (folder / c / f).is_file() for c, f in WEIGHT_FILES.items())


def load_shapes_pipeline(device="cpu", dtype=torch.float32, folder=None):
    """The trained shapes-world ``StableDiffusionPipeline`` (32x32 RGB images), fully offline.

    ``pipe("a red circle and a blue square", num_inference_steps=25, guidance_scale=3.0,
    height=32, width=32)``; ``height``/``width`` default to ``unet.config.sample_size * 4 = 32``.
    """
    from diffusers.utils import logging as dlog

    level = dlog.get_verbosity()
    dlog.set_verbosity_error()  # the casts' "modules that should be kept in float32: []" notice (none are)
    try:
        vae, unet, te = load_components(folder or WEIGHTS_DIR, torch.float32)
        return assemble(vae, unet, te).to(device=device, dtype=dtype)
    finally:
        dlog.set_verbosity(level)
