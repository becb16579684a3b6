r"""Synthetic-image editing: EBCU on the main prompt + EBCQ editorial prompts (paper Algorithm 3).

Per cross-attention layer, with editorial prompts ``s = 1..S``::

    O = (O_main + sum_s sigma_s alpha_s(i) O_s) / (1 + sum_s sigma_s alpha_s(i))

``sigma_s = +1`` (conjunction) or ``-1`` (negation); ``alpha_s(i) = alpha_s`` for
``i >= int(T * start_s)`` and 0 before (the published ``step`` schedule with ``alpha_tau``:
here a *start* fraction, so it cannot be confused with the multi-concept ``gamma_tau``, which
is a stop fraction). Each editorial context has its own EBCU with ``gamma_attn_s``, ``gamma_norm_s``.
"""
from __future__ import annotations

from typing import Optional, Sequence

from ..config import EBCAConfig, Edit
from .common import TaskResult, check_prompt, check_size, check_steps, sample_with_energy
from ..errors import InvalidType


def as_edits(edits) -> list:
    """``[Edit | dict, ...]`` -> ``[Edit, ...]`` (dicts are ``Edit`` fields: ``prompt``, ``alpha``,
    ``direction``, ``start``, ``gamma_attn``, ``gamma_norm``)."""
    if isinstance(edits, (Edit, dict)):
        edits = [edits]
    if edits is None or isinstance(edits, str):
        raise InvalidType("edits must be a list of ebca_viz.Edit (or dicts of Edit fields), e.g. "
                        "[Edit(prompt='boat on a river', alpha=1.3, start=0.2)]")
    out = []
    for i, e in enumerate(edits):
        if isinstance(e, dict):
            try:
                e = Edit(**e)
            except TypeError as err:
                raise InvalidType(f"edits[{i}]: {err}; fix: use the fields of ebca_viz.Edit (token, alpha, direction, ...)") from None
        if not isinstance(e, Edit):
            raise InvalidType(f"edits[{i}] must be an ebca_viz.Edit or a dict, got {type(e).__name__}")
        out.append(e)
    return out


def edit_settings(edits: Sequence[Edit]) -> list:
    return [dict(prompt=e.prompt, alpha=e.alpha, direction=e.direction, start=e.start,
                 gamma_attn=e.gamma_attn, gamma_norm=e.gamma_norm) for e in edits]


def synthetic_edit(pipe, prompt: str, edits, *, gamma_attn: float = 0.0, gamma_norm: float = 0.0,
                   seed: int = 0, num_inference_steps: int = 50, guidance_scale: float = 7.5,
                   negative_prompt: Optional[str] = None, height: Optional[int] = None, width: Optional[int] = None,
                   observers=None, config: Optional[dict] = None, **pipe_kwargs) -> TaskResult:
    """Sample ``prompt`` composed with editorial prompts.

    Args:
        edits: list of :class:`~ebca_viz.Edit` (or dicts); see :func:`~ebca_viz.tasks.common.edits_from_lists`
            for the published scripts' parallel lists.
        gamma_attn, gamma_norm: constant EBCU step sizes of the main context (published: constant schedule).
        config: extra :class:`~ebca_viz.EBCAConfig` fields (``edit_context="reset"`` for the paper's form, ...).
    """
    check_prompt(prompt)
    check_steps(num_inference_steps)
    h, w = check_size(pipe, height, width)
    edits = as_edits(edits)
    cfg = EBCAConfig(gamma_attn=gamma_attn, gamma_norm=gamma_norm, edits=edits, **(config or {}))
    rc = cfg.validate()
    rc.check_denominators(num_inference_steps, num_inference_steps + 1)
    images, info = sample_with_energy(
        pipe, cfg, observers, seed, prompt, negative_prompt=negative_prompt, num_inference_steps=num_inference_steps,
        guidance_scale=guidance_scale, height=h, width=w, **pipe_kwargs)
    settings = dict(prompt=prompt, negative_prompt=negative_prompt, edits=edit_settings(edits), gamma_attn=gamma_attn,
                    gamma_norm=gamma_norm, num_inference_steps=num_inference_steps, guidance_scale=guidance_scale,
                    height=h, width=w, config=config or {})
    return TaskResult("synedit", images, settings, seed, info)
