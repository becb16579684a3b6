r"""Multi-concept text-to-image with EBCU (paper Algorithms 1-2) and token up-weighting.

Per cross-attention layer ``n`` of every sampling step ``i``::

    C_{n+1} = C_n + (gamma_attn(i) * w_tok * softmax_i(S)^T Q - gamma_norm(i) * softmax_j(|k_j|^2) k_j) W_k

with ``gamma(i) = gamma`` for ``i < int(T * gamma_stop)`` and 0 after (the published
``reverse_step`` schedule with ``gamma_tau = gamma_stop``; default 1.0 = on for the whole run).
``token_upweight[m]`` multiplies the attention term of token ``token_indices[m]`` (0 = start of
text; "A cat wearing a shirt": 5 = "shirt") in the conditional half.
"""
from __future__ import annotations

from typing import Optional, Sequence

from ..config import EBCAConfig
from ..tokens import token_labels
from ..schedule import Schedule
from .common import TaskResult, check_prompt, check_size, check_steps, sample_with_energy
from ..errors import InvalidSetting


def multiconcept(pipe, prompt: str, *, gamma_attn: float = 0.01, gamma_norm: float = 0.02,
                 gamma_stop: float = 1.0, token_indices: Optional[Sequence[int]] = None,
                 token_upweight: Optional[Sequence[float]] = None, seed: int = 0,
                 num_inference_steps: int = 50, guidance_scale: float = 7.5, negative_prompt: Optional[str] = None,
                 height: Optional[int] = None, width: Optional[int] = None, observers=None,
                 config: Optional[dict] = None, **pipe_kwargs) -> TaskResult:
    """Sample ``prompt`` with EBCU on the main context.

    Args:
        pipe: a Stable Diffusion (1.x/2.x/XL) pipeline.
        gamma_attn, gamma_norm: EBCU step sizes (published example "A lion with a crown": 0.01, 0.02).
        gamma_stop: fraction of the run after which the update stops (published ``gamma_tau``).
        token_indices, token_upweight: token up-weighting (e.g. ``[5]`` or ``["shirt"]``, ``[2.5]``).
        seed: seed of the ``torch.Generator`` drawing the initial latents.
        observers: objects with ``on_cross_attention(event)`` added to the controller.
        config: extra :class:`~ebca_viz.EBCAConfig` fields (``prior_form``, ``update_uncond``, ...).
        pipe_kwargs: passed to ``pipe(...)``.

    Returns:
        :class:`TaskResult` with one image per prompt.
    """
    check_prompt(prompt)
    check_steps(num_inference_steps)
    if isinstance(gamma_stop, bool) or not isinstance(gamma_stop, (int, float)) or not 0.0 <= gamma_stop <= 1.0:
        raise InvalidSetting(f"gamma_stop is the fraction of the run after which the update stops, in [0, 1]; "
                         f"got {gamma_stop!r} (1.0 = on for the whole run)")
    h, w = check_size(pipe, height, width)
    if token_indices is not None:  # words ("shirt") -> positions, with the pipeline's own tokenizer(s)
        from ..config import token_positions

        token_indices = token_positions(pipe, prompt, token_indices)
    _check_token_positions(pipe, prompt, token_indices)
    cfg = EBCAConfig(
        gamma_attn=Schedule.window(gamma_attn, stop=gamma_stop) if isinstance(gamma_attn, (int, float)) else gamma_attn,
        gamma_norm=Schedule.window(gamma_norm, stop=gamma_stop) if isinstance(gamma_norm, (int, float)) else gamma_norm,
        token_indices=token_indices, token_upweight=token_upweight, **(config or {}),
    )
    cfg.validate()  # before anything touches the pipeline
    images, info = sample_with_energy(
        pipe, cfg, observers, seed, prompt, negative_prompt=negative_prompt, num_inference_steps=num_inference_steps,
        guidance_scale=guidance_scale, height=h, width=w, **pipe_kwargs)
    settings = dict(prompt=prompt, negative_prompt=negative_prompt, gamma_attn=gamma_attn, gamma_norm=gamma_norm,
                    gamma_stop=gamma_stop, token_indices=token_indices, token_upweight=token_upweight,
                    num_inference_steps=num_inference_steps, guidance_scale=guidance_scale, height=h, width=w,
                    config=config or {})
    return TaskResult("multiconcept", images, settings, seed, info)


def _check_token_positions(pipe, prompt: str, token_indices) -> None:
    """Up-weighted positions must be words of the prompt: 0 is start-of-text, and positions from the
    end-of-text token on are padding (their weight would act on no word)."""
    tok = getattr(pipe, "tokenizer", None)
    if tok is None or token_indices is None:
        return
    idx = [token_indices] if isinstance(token_indices, int) else list(token_indices)
    n = len(tok(prompt).input_ids)  # <sot> w_1 .. w_k <eot>
    bad = [i for i in idx if isinstance(i, int) and not 1 <= i <= n - 2]
    if bad:
        shown = ", ".join(token_labels(tok, prompt))
        raise InvalidSetting(f"token_indices {bad} are not words of the prompt (positions: {shown}; from {n - 1} on "
                         "is end-of-text / padding): use 1.." + str(n - 2))
