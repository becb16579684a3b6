"""Test models with the real layouts (SD 1.5, SD 2.1-base, SD 1.5-inpainting, SDXL-base) and the real
CLIP tokenizer, built once per session into folders that load like downloaded checkpoints.

The published configs are ``tests/data/layouts/*.json``; the scaled models divide their widths by 8
(:func:`ebca_viz.models.layouts.scale_layout`). The CLIP merge list is ``tests/data/clip_bpe`` (MIT,
from the open-clip-torch 3.3.0 wheel; see ``tests/data/clip_bpe/ORIGIN.md``).
"""
from __future__ import annotations

import json
from pathlib import Path

DATA = Path(__file__).resolve().parent / "data"
BPE_GZ = DATA / "clip_bpe" / "bpe_simple_vocab_16e6.txt.gz"
LAYOUTS = ("sd15", "sd21-base", "sd15-inpainting", "sdxl-base")
# folder names that say nothing true about the model inside (loading must read model_index.json)
FOLDER_NAMES = {"sd15": "xl-inpainting-v2", "sd21-base": "sd15-copy", "sd15-inpainting": "my model",
                "sdxl-base": "sd21-finetune"}


def full_layout(name: str) -> dict:
    return json.loads((DATA / "layouts" / f"{name}.json").read_text())


def clip_tokenizers(root: Path) -> dict:
    """``{"<|endoftext|>": SD 1.x tokenizer, "!": SD 2.x / SDXL-second tokenizer}``."""
    from ebca_viz.models.clip_bpe import clip_tokenizer

    eot = clip_tokenizer(BPE_GZ, root / "clip-eot")
    bang = clip_tokenizer(BPE_GZ, root / "clip-bang", pad_token="!")
    return {eot.pad_token: eot, bang.pad_token: bang}


def build_folders(root: Path, toks: dict | None = None, seed: int = 0) -> dict:
    """``{layout name: folder}``: each scaled pipeline saved with ``save_pretrained`` (safetensors)."""
    from ebca_viz.models.layouts import build_pipeline, scale_layout

    toks = toks or clip_tokenizers(root / "tokenizers")
    out = {}
    for name in LAYOUTS:
        lay = scale_layout(full_layout(name))
        t2 = toks[lay["tokenizer_2"]["pad_token"]] if "tokenizer_2" in lay else None
        pipe = build_pipeline(lay, toks[lay["tokenizer"]["pad_token"]], t2, seed=seed)
        folder = root / FOLDER_NAMES[name]
        pipe.save_pretrained(folder, safe_serialization=True)
        out[name] = folder
    return out
