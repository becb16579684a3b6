"""Models: tiny pipelines built in code, the shipped worlds (shapes-world, neglect-world), real hub ids."""
from .hub import HUB_IDS, available_models, load_pipeline, model_kind
from .tiny import tiny_pipeline, tiny_sdxl_pipeline, tiny_unet
from .tokenizer import load_tokenizer
from .worlds import load_world, shipped_worlds

__all__ = ["HUB_IDS", "available_models", "load_pipeline", "model_kind", "tiny_pipeline", "tiny_sdxl_pipeline", "tiny_unet", "load_tokenizer", "load_world", "shipped_worlds"]
