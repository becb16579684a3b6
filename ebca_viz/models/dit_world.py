"""Loading a DiT toy world (a ``PixArtSigmaPipeline`` exported by :mod:`ebca_viz.shapes.train_dit`), offline."""
from __future__ import annotations

from pathlib import Path

import torch

from ..errors import MissingFile


def dit_weights_available(folder) -> bool:
    """True when ``folder`` holds an exported DiT world (``model_index.json`` + the four components)."""
    folder = Path(folder)
    return (folder / "model_index.json").is_file() and all(
        any((folder / c).glob("*.safetensors")) for c in ("transformer", "text_encoder", "vae")) and (
        folder / "tokenizer").is_dir()


def load_dit_pipeline(folder, device="cpu", dtype=torch.float32):
    """The ``PixArtSigmaPipeline`` of an exported folder, offline, safetensors only (fp16 -> ``dtype``)."""
    from diffusers import PixArtSigmaPipeline
    from diffusers.utils import logging as dlog

    folder = Path(folder)
    if not dit_weights_available(folder):
        raise MissingFile(f"no DiT world in {folder} (expected model_index.json, transformer/, text_encoder/, "
                                "vae/ with safetensors, tokenizer/)")
    from transformers.utils import logging as tlog

    level, tlevel = dlog.get_verbosity(), tlog.get_verbosity()
    dbar, tbar = dlog.is_progress_bar_enabled(), tlog.is_progress_bar_enabled()
    dlog.set_verbosity_error(), tlog.set_verbosity_error(), dlog.disable_progress_bar(), tlog.disable_progress_bar()
    try:
        pipe = PixArtSigmaPipeline.from_pretrained(str(folder), torch_dtype=dtype, local_files_only=True,
                                                   use_safetensors=True)
    finally:
        dlog.set_verbosity(level), tlog.set_verbosity(tlevel)
        dlog.enable_progress_bar() if dbar else None
        tlog.enable_progress_bar() if tbar else None
    pipe.set_progress_bar_config(disable=True)
    return pipe.to(device)


__all__ = ["dit_weights_available", "load_dit_pipeline"]
