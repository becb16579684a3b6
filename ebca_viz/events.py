r"""What every observer of the attention layers needs, in one place.

EBCA (:mod:`ebca_viz.ebca`), SEG (:mod:`ebca_viz.seg`) and the recorder (:mod:`ebca_viz.tracing`)
all use these pieces, so that "is this call guided?", "which step is this?" and "what does
position 5 of the prompt say?" have one answer each:

* :class:`CrossAttnEvent` / :class:`SelfAttnEvent` -- what one attention call hands to observers
  (named tensors, shapes in the field comments; ``B2`` = UNet batch, ``[uncond; cond]`` with CFG);
* :class:`Observer` -- the protocol: ``on_forward_start(ctl)``, ``on_cross_attention(event)``,
  ``on_seg_attention(event)``, ``on_forward_end(ctl)``, every one optional; :func:`notify` calls
  the ones an observer has (like diffusers' ``callback_on_step_end``, an observer only reads);
* :func:`read_cfg` -- whether a UNet call is ``[uncond; cond]``: the explicit setting, else the
  pipeline's ``do_classifier_free_guidance``, else the caller's stated default for a bare UNet;
* :class:`StepClock` -- step index within a sampling run; a timestep that goes *up* starts a new run;
* kind tags -- every ebca_viz processor has a ``kind`` (``"ebca"``, ``"seg"``, ``"trace"``);
  :func:`installed` finds the one of a kind on a UNet (no class-name strings);
* :func:`token_words` / :func:`token_labels` -- the labels of a prompt's token positions.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Optional, Protocol, Sequence

import torch

#: kind tags of ebca_viz's attention processors
EBCA, SEG, TRACE = "ebca", "seg", "trace"


# ---------------------------------------------------------------------------------------------
# events
# ---------------------------------------------------------------------------------------------
@dataclass
class CrossAttnEvent:
    """What one cross-attention call hands to observers (the recorder).

    Shapes: ``B2`` = UNet batch (``[uncond; cond]`` with CFG), ``H`` heads, ``P`` = h*w pixels,
    ``N`` tokens, ``d`` head dim, ``D`` context dim.
    """

    name: str  # processor key
    layer: int  # position in execution order
    step: int
    attn: torch.nn.Module
    query: torch.Tensor  # (B2, H, P, d)
    key: torch.Tensor  # (B2, H, N, d), keys of the context this layer attended to
    scores: torch.Tensor  # (B2, H, P, N), S = beta Q K^T
    probs: torch.Tensor  # (B2, H, P, N), softmax over tokens
    context_in: torch.Tensor  # (B2, N, D)
    context_out: torch.Tensor  # (B2, N, D), what the next layer receives (is context_in without EBCU)
    grid: tuple  # (h, w)
    n_uncond: int  # rows [0, n_uncond) are the unconditional half
    controller: Any  # the EBCAController, or None (the recorder's own processor)


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


class Observer(Protocol):
    """What a controller calls on the objects in its ``observers`` list; every method is optional.

    ``on_forward_start(ctl)`` / ``on_forward_end(ctl)``: around each UNet call (EBCA);
    ``on_cross_attention(event: CrossAttnEvent)``: each cross-attention layer (EBCA, the recorder's processor);
    ``on_seg_attention(event: SelfAttnEvent)``: each SEG-blurred self-attention layer.
    Observers read; they must not modify the tensors they are handed.
    """

    def on_cross_attention(self, event: CrossAttnEvent) -> None: ...


def notify(observers: Sequence, method: str, arg) -> None:
    """Call ``observer.<method>(arg)`` on every observer that has it."""
    for o in observers:
        f = getattr(o, method, None)
        if f is not None:
            f(arg)


# ---------------------------------------------------------------------------------------------
# classifier-free guidance and the step clock
# ---------------------------------------------------------------------------------------------
def read_cfg(pipe, setting: Optional[bool], bare_unet: bool) -> bool:
    """Whether UNet calls carry ``[uncond; cond]`` halves.

    ``setting`` (an explicit ``cfg=``) wins; else the pipeline's ``do_classifier_free_guidance``
    (set by diffusers for the call under way); else ``bare_unet``, the documented default of the
    caller for a bare UNet (EBCA: True, as its published code; SEG and the recorder: False).
    """
    if setting is not None:
        return bool(setting)
    if pipe is not None and hasattr(pipe, "do_classifier_free_guidance"):
        return bool(pipe.do_classifier_free_guidance)
    return bare_unet


def first_timestep(t) -> float:
    if torch.is_tensor(t):
        return float(t.flatten()[0]) if t.numel() else 0.0
    return float(t)


class StepClock:
    """Step index within a sampling run, from the timesteps of successive UNet calls.

    Samplers walk the timestep down, so a call whose timestep is *higher* than the previous one
    starts a new run (PNDM repeats one timestep: not a new run). :meth:`tick` advances the clock,
    ``step`` is then 0 for the first call of a run; ``calls`` counts every tick.
    """

    def __init__(self):
        self.step = -1
        self.calls = 0
        self._last_t: Optional[float] = None

    def reset(self) -> None:
        """The next call starts a new run."""
        self.step = -1
        self._last_t = None

    def pin(self, step: int) -> None:
        """The next call is ``step`` of the current run (hand-written sampling loops)."""
        self.step = step - 1
        self._last_t = float("inf")

    def tick(self, t) -> bool:
        """Advance for a UNet call at timestep ``t``; True when it starts a new run."""
        tval = first_timestep(t)
        new_run = self._last_t is None or tval > self._last_t
        if new_run:
            self.step = -1
        self._last_t = tval
        self.step += 1
        self.calls += 1
        return new_run


# ---------------------------------------------------------------------------------------------
# kind tags
# ---------------------------------------------------------------------------------------------
def kind_of(processor) -> Optional[str]:
    """``"ebca" | "seg" | "trace"`` for ebca_viz's processors, None for any other."""
    return getattr(type(processor), "kind", None) if type(processor).__module__.startswith("ebca_viz.") else None


def installed(unet, kind: str, keys: Optional[Sequence[str]] = None):
    """The first processor of ``kind`` on ``unet`` (among ``keys``, default all), or None."""
    procs = unet.attn_processors
    for k in procs if keys is None else keys:
        if kind_of(procs[k]) == kind:
            return procs[k]
    return None


# ---------------------------------------------------------------------------------------------
# token labels
# ---------------------------------------------------------------------------------------------
_SPECIAL = {"<|startoftext|>": "<sot>", "<|endoftext|>": "<eot>"}


def token_words(tokenizer, ids) -> list:
    """The tokenizer's word for each id, without CLIP's end-of-word mark ``</w>``."""
    return [tokenizer.convert_ids_to_tokens(int(i)).replace("</w>", "") for i in ids]


def token_labels(words: Sequence[str], n: Optional[int] = None, with_index: bool = True) -> list:
    """Readable labels of token positions: ``["0 <sot>", "1 a", "2 red", ..., "k <eot>"]``.

    ``n`` pads (``<pad>``) or truncates to ``n`` labels."""
    out = [_SPECIAL.get(w, w) for w in words]
    if n is not None:
        out = (out + ["<pad>"] * n)[:n]
    return [f"{i} {w}" for i, w in enumerate(out)] if with_index else out


def prompt_token_labels(tokenizer_or_pipe, prompt: str, n: Optional[int] = None, with_index: bool = True) -> list:
    """:func:`token_labels` of a prompt as the pipeline's tokenizer splits it (no padding)."""
    tok = getattr(tokenizer_or_pipe, "tokenizer", tokenizer_or_pipe)
    return token_labels(token_words(tok, tok(prompt).input_ids), n=n, with_index=with_index)
