r"""Readable token labels and prompt positions, of a tokenizer's prompt or of a trace.
"""
from __future__ import annotations

from typing import Optional

from .events import prompt_token_labels
from .events import token_labels as event_token_labels
from .errors import InvalidSetting


def token_labels(tokenizer_or_pipe, prompt: str, n: Optional[int] = None, with_index: bool = True) -> list:
    """Readable labels of a prompt's token positions: ``["0 <sot>", "1 a", "2 red", ..., "k <eot>"]``
    (:func:`ebca_viz.events.prompt_token_labels`; ``n`` pads with ``<pad>`` / truncates)."""
    return prompt_token_labels(tokenizer_or_pipe, prompt, n=n, with_index=with_index)


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
    return event_token_labels(toks)


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
