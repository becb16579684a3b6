"""The offline CLIP tokenizer shipped with ebca_viz (see ``tokenizer_build.py``)."""
from __future__ import annotations

from pathlib import Path

TOKENIZER_DIR = Path(__file__).resolve().parent / "tokenizer"


def load_tokenizer(model_max_length: int = 77):
    """A ``transformers.CLIPTokenizer`` built from the vocabulary shipped in the package.

    Known prompt words (Attend-and-Excite sets, shapes world, common words) are single
    tokens, so position 0 is start-of-text and word ``k`` of a prompt is token ``k``.
    Padding uses ``<|endoftext|>`` as in SD 1.x.
    """
    from transformers import CLIPTokenizer

    return CLIPTokenizer.from_pretrained(str(TOKENIZER_DIR), model_max_length=model_max_length)
