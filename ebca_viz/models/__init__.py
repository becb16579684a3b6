"""Models: tiny pipelines built in code, the shipped shapes-world model, real hub ids."""
from .hub import HUB_IDS, available_models, load_pipeline, model_kind
from .tiny import tiny_pipeline, tiny_sdxl_pipeline, tiny_unet
from .tokenizer import load_tokenizer

__all__ = ["HUB_IDS", "available_models", "load_pipeline", "model_kind", "tiny_pipeline", "tiny_sdxl_pipeline", "tiny_unet", "load_tokenizer"]
