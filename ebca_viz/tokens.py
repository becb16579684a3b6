r"""Readable token labels and prompt positions, of a tokenizer's prompt or of a trace.
"""
from __future__ import annotations

from typing import Optional, Sequence

from .errors import InvalidSetting

_SPECIAL = {"<|startoftext|>": "<sot>", "<|endoftext|>": "<eot>"}


def token_words(tokenizer, ids) -> list:
    """The tokenizer's word for each id, without CLIP's end-of-word mark ``</w>``."""
    return [tokenizer.convert_ids_to_tokens(int(i)).replace("</w>", "") for i in ids]


def word_labels(words: Sequence[str], n: Optional[int] = None, with_index: bool = True) -> list:
    """Readable labels of token positions from their words: ``["0 <sot>", "1 a", "2 red", ..., "k <eot>"]``.

    ``n`` pads (``<pad>``) or truncates to ``n`` labels."""
    out = [_SPECIAL.get(w, w) for w in words]
    if n is not None:
        out = (out + ["<pad>"] * n)[:n]
    return [f"{i} {w}" for i, w in enumerate(out)] if with_index else out


def token_labels(tokenizer_or_pipe, prompt: str, n: Optional[int] = None, with_index: bool = True) -> list:
    """Readable labels of a prompt's token positions: ``["0 <sot>", "1 a", "2 red", ..., "k <eot>"]``
    (as the pipeline's tokenizer splits it, no padding; ``n`` pads with ``<pad>`` / truncates)."""
    tok = getattr(tokenizer_or_pipe, "tokenizer", tokenizer_or_pipe)
    return word_labels(token_words(tok, tok(prompt).input_ids), n=n, with_index=with_index)


def prompt_token_indices(tokenizer_or_pipe, prompt: str) -> list:
    """Positions of the prompt's words (excluding start/end-of-text): ``[1, ..., k]``."""
    tok = getattr(tokenizer_or_pipe, "tokenizer", tokenizer_or_pipe)
    return list(range(1, len(tok(prompt).input_ids) - 1))


def trace_tokens(tr) -> list:
    """``"i word"`` labels of a trace's token positions (``<sot>``, ``<eot>`` for the special tokens)."""
    toks = tr.tokens
    if toks is None:
        n = tr.maps(aggregate="mean").shape[0] if "maps" in tr.quantities else 0
        return [f"{i}" for i in range(n)]
    return word_labels(toks)


def trace_prompt_positions(tr, include_sot: bool = False, include_eot: bool = False) -> list:
    """Positions of the prompt's words in a trace (up to the first end-of-text)."""
    toks = tr.tokens
    if toks is None:
        raise InvalidSetting("this trace has no token labels (bare UNet?): pass token positions explicitly")
    if getattr(getattr(tr, "record", None), "text_segments", None):  # a DiT: every segment's words, no padding
        ends = ("<|endoftext|>", "</s>")
        return [i for i, (w, p) in enumerate(zip(toks, tr.padding)) if not p and (
            (w not in ends and w != "<|startoftext|>") or (include_sot and w == "<|startoftext|>")
            or (include_eot and w in ends))]
    end = toks.index("<|endoftext|>", 1) if "<|endoftext|>" in toks[1:] else len(toks)
    idx = list(range(0 if include_sot else 1, end))
    if include_eot and end < len(toks):
        idx.append(end)
    return idx


__all__ = ['token_labels', 'prompt_token_indices', 'trace_tokens', 'trace_prompt_positions']
