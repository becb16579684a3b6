r"""Real-image editing: DDIM inversion of a photo, then sampling with EBCQ edits.

1. source prompt ``c_src``: given by the user, or the caption of an image captioner (BLIP);
2. ``z_T = DDIM-invert(image; c_src)`` (:func:`~ebca_viz.tasks.inversion.ddim_invert`: no CFG,
   noise regularisation; the energy processors are not installed / paused meanwhile);
3. DDIM sampling from ``z_T`` with ``prompt = negative_prompt = c_src`` and CFG 7.5, so the two
   CFG halves agree and the edit comes from the editorial prompts only::

       O = (O_src + sum_s sigma_s alpha_s(i) O_s) / (1 + sum_s sigma_s alpha_s(i))

   (both CFG halves: the unconditional half pairs ``c_src`` with each edit), each editorial
   context updated by its own EBCU after its start fraction. EBCU on the main context is off in
   the published examples (``gamma_attn = gamma_norm = 0``: img-to-img translation).
"""
from __future__ import annotations

import time
from typing import Optional

from ..config import EBCAConfig
from ..ebca import energy_attention
from .common import (TaskResult, add_observers, check_size, check_steps, controller_info, load_rgb, make_generator,
                     restored)
from .editing import as_edits, edit_settings
from .inversion import ddim_invert
from ..errors import InvalidSetting, InvalidType


def source_caption(image, source_prompt: Optional[str] = None, captioner=None) -> tuple[str, str]:
    """``(source prompt, where it came from)``: the given prompt, else ``captioner(image)``, else the
    default BLIP captioner if its weights are available; otherwise a ``ValueError`` with the fix."""
    if source_prompt is not None:
        if not isinstance(source_prompt, str) or not source_prompt.strip():
            raise InvalidSetting("source_prompt must be a non-empty string describing the photo, e.g. 'a photo of a cat'")
        return source_prompt, "user"
    if captioner is None:
        from ..models.captioner import BLIP_ID, load_captioner

        try:
            captioner = load_captioner()
        except (FileNotFoundError, ImportError) as e:
            raise InvalidSetting(
                f"source_prompt: no source prompt was given and no image captioner is available ({BLIP_ID} "
                f"could not be loaded: {str(e).split('. Cause')[0]}). Pass source_prompt='a photo of ...' "
                "(CLI: --source-prompt) or captioner=ebca_viz.eval.load_captioner(<local BLIP folder>)"
            ) from None
    cap = captioner(image)
    if not isinstance(cap, str):
        raise InvalidType(f"captioner must return a string for one image, got {type(cap).__name__}")
    return cap, type(captioner).__name__


def real_edit(pipe, image, edits, *, source_prompt: Optional[str] = None, captioner=None,
              gamma_attn: float = 0.0, gamma_norm: float = 0.0, seed: int = 0, num_inference_steps: int = 50,
              guidance_scale: float = 7.5, height: Optional[int] = None, width: Optional[int] = None,
              lambda_autocorr: float = 20.0, lambda_kl: float = 20.0, num_reg_steps: int = 5,
              num_autocorr_rolls: int = 5, observers=None, config: Optional[dict] = None,
              progress=None) -> TaskResult:
    """Edit a photo with editorial prompts (e.g. cat -> dog: ``+"dog"``, ``-"cat"``).

    Args:
        pipe: an SD 1.x/2.x pipeline (its scheduler is swapped for DDIM during the call and restored).
        image: PIL RGB image or a file path (resized to the model's resolution).
        edits: list of :class:`~ebca_viz.Edit` / dicts.
        source_prompt: the photo's caption; if None, ``captioner(image)`` or the default BLIP.
        seed: seeds the VAE posterior sample and the autocorrelation rolls of the inversion.
        progress: called once per UNet call of the inversion (e.g. ``tqdm.update``).
    Returns:
        :class:`TaskResult`; ``info["source_prompt"]``, ``extras["inverted_latents"]``, ``extras["source"]``.
    """
    from diffusers import DDIMScheduler

    image = load_rgb(image)
    check_steps(num_inference_steps)
    h, w = check_size(pipe, height, width)
    edits = as_edits(edits)
    if not edits:
        raise InvalidSetting("edits is empty: give at least one editorial prompt, e.g. Edit(prompt='dog', alpha=0.75)")
    cfg = EBCAConfig(gamma_attn=gamma_attn, gamma_norm=gamma_norm, edits=edits, **(config or {}))
    rc = cfg.validate()
    rc.check_denominators(num_inference_steps, num_inference_steps + 1)
    src, src_from = source_caption(image, source_prompt, captioner)
    gen = make_generator(seed, pipe.device)
    t0 = time.perf_counter()
    with restored(pipe):
        pipe.scheduler = DDIMScheduler.from_config(pipe.scheduler.config)
        latents = ddim_invert(pipe, image, src, num_inference_steps=num_inference_steps, height=h, width=w,
                              lambda_autocorr=lambda_autocorr, lambda_kl=lambda_kl, num_reg_steps=num_reg_steps,
                              num_autocorr_rolls=num_autocorr_rolls, generator=gen, progress=progress)
        t_inv = time.perf_counter() - t0
        with energy_attention(pipe, cfg) as ctl:
            add_observers(ctl, observers)
            out = pipe(src, negative_prompt=src, latents=latents, num_inference_steps=num_inference_steps,
                       guidance_scale=guidance_scale, height=h, width=w, generator=gen)
            info = controller_info(ctl)
    info.update(source_prompt=src, source_prompt_from=src_from, seconds_inversion=round(t_inv, 3),
                seconds=round(time.perf_counter() - t0, 3))
    settings = dict(source_prompt=src, edits=edit_settings(edits), gamma_attn=gamma_attn, gamma_norm=gamma_norm,
                    num_inference_steps=num_inference_steps, guidance_scale=guidance_scale, height=h, width=w,
                    inversion=dict(scheduler="DDIMInverseScheduler", cfg=False, lambda_autocorr=lambda_autocorr,
                                   lambda_kl=lambda_kl, num_reg_steps=num_reg_steps,
                                   num_autocorr_rolls=num_autocorr_rolls),
                    config=config or {})
    return TaskResult("realedit", list(out.images), settings, seed, info,
                      extras={"source": image.resize((w, h)), "inverted_latents": latents})
