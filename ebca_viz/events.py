"""What every observer of the attention layers needs (EBCA, SEG and the recorder share it)."""
from __future__ import annotations

from dataclasses import dataclass

import torch


@dataclass
class SelfAttnEvent:
    """One call of a SEG-blurred self-attention layer, handed to ``observer.on_seg_attention``.

    ``B2`` = UNet batch (with SEG's extra branch, if any), ``H`` heads, ``P`` pixels, ``d`` head dim.
    """

    name: str  # processor key
    attn: torch.nn.Module
    query: torch.Tensor  # (B2, H, P, d) queries as attended: rows `rows` blurred
    key: torch.Tensor  # (B2, H, P, d) keys (never blurred)
    rows: slice  # the blurred rows
    grid: tuple  # (h, w)
    unblurred_query: torch.Tensor  # (len(rows), H, P, d) the blurred rows' queries before the blur
