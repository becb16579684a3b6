"""The real CLIP tokenizer (49,408 tokens), built from CLIP's BPE merge list.

Stable Diffusion 1.x/2.x/XL all tokenize with OpenAI CLIP's byte-level BPE: 256 byte symbols, the
same 256 with ``</w>`` (end of word), the first 48,894 merges of ``bpe_simple_vocab_16e6.txt.gz``,
then ``<|startoftext|>`` (49406) and ``<|endoftext|>`` (49407). Real checkpoints carry that
vocabulary in their ``tokenizer/`` folder; :func:`clip_tokenizer` rebuilds it from the merge list
(as ``open_clip/tokenizer.py`` and OpenAI's ``clip/simple_tokenizer.py`` do), so that test models
with real layouts tokenize exactly like the published ones without a download. The merge list is
not shipped with the package; the tests carry a copy (``tests/data/clip_bpe``, MIT, from the
open-clip-torch wheel).
"""
from __future__ import annotations

import gzip
import json
from pathlib import Path

from .tokenizer_build import bytes_to_unicode
from ..errors import InvalidSetting, MissingFile, RefusedFile

N_MERGES = 49152 - 256 - 2  # CLIP keeps the first 48,894 merges
VOCAB_SIZE = 49408
SOT, EOT = "<|startoftext|>", "<|endoftext|>"


def write_clip_vocab(bpe_gz: str | Path, out_dir: str | Path) -> Path:
    """Write CLIP's ``vocab.json`` and ``merges.txt`` (what ``CLIPTokenizer`` reads) into ``out_dir``."""
    bpe_gz, out_dir = Path(bpe_gz), Path(out_dir)
    if not bpe_gz.is_file():
        raise MissingFile.of("bpe_gz", str(bpe_gz), "pass the path of CLIP's bpe_simple_vocab_16e6.txt.gz",
                             why="no such file")
    lines = gzip.open(bpe_gz, "rt", encoding="utf-8").read().split("\n")
    merges = [tuple(m.split()) for m in lines[1:N_MERGES + 1]]
    if len(merges) != N_MERGES or any(len(m) != 2 for m in merges):
        raise RefusedFile(f"bpe_gz: {bpe_gz} is not CLIP's merge list (expected {N_MERGES} pairs after the header)")
    base = list(bytes_to_unicode().values())
    tokens = base + [b + "</w>" for b in base] + ["".join(m) for m in merges] + [SOT, EOT]
    vocab = {t: i for i, t in enumerate(tokens)}
    if len(vocab) != VOCAB_SIZE:
        raise InvalidSetting.of("bpe_gz", str(bpe_gz), "pass CLIP's own bpe_simple_vocab_16e6.txt.gz (not another "
                                "BPE file)", why=f"gives {len(vocab)} distinct tokens, CLIP has {VOCAB_SIZE}")
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "vocab.json").write_text(json.dumps(vocab, ensure_ascii=False), encoding="utf-8")
    (out_dir / "merges.txt").write_text("#version: 0.2\n" + "\n".join(" ".join(m) for m in merges) + "\n",
                                        encoding="utf-8")
    return out_dir


def clip_tokenizer(bpe_gz: str | Path, out_dir: str | Path, pad_token: str = EOT, model_max_length: int = 77):
    """A ``transformers.CLIPTokenizer`` with CLIP's vocabulary; ``pad_token="!"`` for SD 2.x /
    SDXL's second tokenizer (OpenCLIP pads with id 0), ``"<|endoftext|>"`` for SD 1.x."""
    from transformers import CLIPTokenizer

    d = write_clip_vocab(bpe_gz, out_dir)
    return CLIPTokenizer.from_pretrained(str(d), pad_token=pad_token, model_max_length=model_max_length)
