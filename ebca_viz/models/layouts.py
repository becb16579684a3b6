"""Random-weight pipelines with the *published layouts* of SD 1.5, SD 2.1-base, SD 1.5-inpainting and
SDXL-base, scaled down in width only.

A layout is a dict with the published component configs (``unet``, ``vae``, ``text_encoder``,
optional ``text_encoder_2``, ``tokenizer``/``tokenizer_2`` pad tokens, ``scheduler``, the
``pipeline`` class name). :func:`scale_layout` divides every *width* by ``factor`` (block channels,
cross-attention and text hidden sizes, MLP sizes, projection sizes, SDXL's time-id embedding) and
lowers the group-norm group count to keep divisibility; depths, block types, head counts, transformer
depths, linear/conv projections, activations, vocabulary and the scheduler are the published ones, so
the scaled model has exactly the module tree of the real one (:func:`module_layout` compares them).
The default resolution (``sample_size``) is scaled too so that ``pipe(prompt)`` without a size runs
at 64 px.

:func:`build_pipeline` assembles a pipeline from a layout and CLIP tokenizers
(:func:`ebca_viz.models.clip_bpe.clip_tokenizer`); ``pipe.save_pretrained(folder)`` then gives a
folder that loads like a real checkpoint.
"""
from __future__ import annotations

import copy

import torch
from ..errors import InvalidSetting

WIDTH_KEYS_UNET = ("cross_attention_dim", "addition_time_embed_dim", "projection_class_embeddings_input_dim")
WIDTH_KEYS_TEXT = ("hidden_size", "intermediate_size", "projection_dim")


def _div(x: int, factor: int, what: str) -> int:
    if x % factor:
        raise InvalidSetting(f"{what}={x} is not divisible by the scale factor {factor}; fix: use a multiple of "
                           f"{factor}, e.g. {what}={max(factor, x - x % factor)}")
    return x // factor


def scale_layout(layout: dict, factor: int = 8, norm_groups: int = 8) -> dict:
    """The layout with every width divided by ``factor`` (and group norms of ``norm_groups`` groups)."""
    out = copy.deepcopy(layout)
    u = out["unet"]
    u["block_out_channels"] = [_div(c, factor, "unet.block_out_channels") for c in u["block_out_channels"]]
    for k in WIDTH_KEYS_UNET:
        if u.get(k) is not None:
            u[k] = _div(u[k], factor, f"unet.{k}")
    u["norm_num_groups"] = norm_groups
    u["sample_size"] = 8  # 64 px with the VAE's factor 8 (a resolution, not part of the layout)
    v = out["vae"]
    v["block_out_channels"] = [_div(c, factor, "vae.block_out_channels") for c in v["block_out_channels"]]
    v["norm_num_groups"] = norm_groups
    v["sample_size"] = 64
    for te in ("text_encoder", "text_encoder_2"):
        if te in out:
            for k in WIDTH_KEYS_TEXT:
                out[te][k] = _div(out[te][k], factor, f"{te}.{k}")
    out["scale_factor"] = factor
    return out


def _cfg(d: dict) -> dict:
    return {k: v for k, v in d.items() if not k.startswith("_")}


def build_unet(cfg: dict):
    from diffusers import UNet2DConditionModel

    return UNet2DConditionModel(**_cfg(cfg))


def build_vae(cfg: dict):
    from diffusers import AutoencoderKL

    return AutoencoderKL(**_cfg(cfg))


def build_text_encoder(cfg: dict):
    import transformers

    cls = getattr(transformers, cfg.get("_class_name", "CLIPTextModel"))
    return cls(transformers.CLIPTextConfig(**_cfg(cfg))).eval()


def build_scheduler(cfg: dict):
    import diffusers

    return getattr(diffusers, cfg["_class_name"]).from_config(_cfg(cfg))


def module_layout(module: torch.nn.Module) -> list[tuple[str, str]]:
    """``(name, class name)`` of every submodule, in order: the layout a checkpoint's keys follow."""
    return [(n, type(m).__name__) for n, m in module.named_modules()]


def parameter_layout(module: torch.nn.Module) -> list[tuple[str, int]]:
    """``(name, ndim)`` of every parameter and buffer."""
    return [(n, p.ndim) for n, p in list(module.named_parameters()) + list(module.named_buffers())]


def build_pipeline(layout: dict, tokenizer, tokenizer_2=None, seed: int = 0):
    """A random-weight pipeline of ``layout``'s class from its component configs.

    ``tokenizer`` (and ``tokenizer_2`` for SDXL) must have the layout's vocabulary and pad token
    (:func:`ebca_viz.models.clip_bpe.clip_tokenizer`).
    """
    import diffusers

    for name, tok in (("tokenizer", tokenizer), ("tokenizer_2", tokenizer_2)):
        want = layout.get(name)
        if want is None:
            continue
        if tok is None:
            raise InvalidSetting(f"{name}: the {layout['pipeline']} layout needs a second tokenizer (tokenizer_2=)")
        if tok.pad_token != want["pad_token"] or len(tok) != layout["text_encoder"]["vocab_size"]:
            raise InvalidSetting(f"{name}: the layout pads with {want['pad_token']!r} over {layout['text_encoder']['vocab_size']}"
                             f" tokens; this tokenizer pads with {tok.pad_token!r} over {len(tok)}; fix: pass the "
                             "tokenizer the layout was built with")
    cls = getattr(diffusers, layout["pipeline"])
    torch.manual_seed(seed)
    parts = dict(vae=build_vae(layout["vae"]), text_encoder=build_text_encoder(layout["text_encoder"]),
                 tokenizer=tokenizer, unet=build_unet(layout["unet"]), scheduler=build_scheduler(layout["scheduler"]))
    if "text_encoder_2" in layout:
        parts.update(text_encoder_2=build_text_encoder(layout["text_encoder_2"]), tokenizer_2=tokenizer_2,
                     force_zeros_for_empty_prompt=layout.get("force_zeros_for_empty_prompt", True))
    else:
        parts.update(safety_checker=None, feature_extractor=None, requires_safety_checker=False)
    pipe = cls(**parts)
    pipe.set_progress_bar_config(disable=True)
    return pipe


__all__ = ["scale_layout", "build_pipeline", "build_unet", "build_vae", "build_text_encoder", "build_scheduler",
           "module_layout", "parameter_layout"]
