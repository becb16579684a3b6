r"""Text-guided inpainting with masked EBCU, on the SD inpainting pipeline or as RePaint on plain SD.

Mask convention (diffusers'): white / 1 = the region to inpaint, black / 0 = keep. The EBCU
attention term only sees the queries of the inpainted region::

    dK = gamma_attn * softmax_i(S)^T (m_n * Q) - gamma_norm * softmax_j(|k_j|^2) k_j

``m_n`` = the latent-resolution mask (1 = inpaint; nearest-neighbour from the image mask, as the
pipelines build it) resized to layer ``n``'s grid (bilinear, ``align_corners=True``).

* ``repaint=False``: ``StableDiffusionInpaintPipeline`` (9-channel UNet: latents, mask, masked image).
* ``repaint=True``: a plain SD pipeline; after every step the known region is replaced by the
  original re-noised to the next timestep (RePaint without resampling jumps)::

      z_{t'} <- (1 - m) * z_{t'} + m_known * add_noise(z_0, eps, t'),   m_known = 1 - m,  z_0 = s_vae E(x)

  and at the end the known region is ``z_0`` itself (DDIM sampling: the pipeline's scheduler is
  swapped for ``DDIMScheduler`` during the call and restored). The published RePaint path feeds the *known*
  region (its inverted mask) to the update -- a bug; ``update_region="known"`` reproduces it.
"""
from __future__ import annotations

import time
from typing import Optional

import numpy as np
import torch
import torch.nn.functional as F

from ..config import EBCAConfig
from ..ebca import energy_attention
from .common import (TaskResult, add_observers, check_prompt, check_size, check_steps, controller_info, load_rgb,
                     make_generator, restored)

UPDATE_REGIONS = ("inpaint", "known")


def mask_to_tensor(mask, image_size: tuple) -> torch.Tensor:
    """Mask (PIL image, ``(H, W)`` array, or tensor ``(H, W)``/``(1, H, W)``/``(1, 1, H, W)`` in [0, 1])
    -> binarised ``(1, 1, H, W)`` float tensor (1 = inpaint). ``image_size = (W, H)`` must match."""
    from PIL import Image

    if isinstance(mask, Image.Image):
        m = torch.from_numpy(np.asarray(mask.convert("L"), dtype=np.float32) / 255.0)
    elif isinstance(mask, np.ndarray):
        a = mask.astype(np.float32)
        if a.ndim == 3 and a.shape[-1] in (1, 3):
            a = a.mean(-1)
        m = torch.from_numpy(a / 255.0 if a.max() > 1 else a)
    elif torch.is_tensor(mask):
        m = mask.detach().float().cpu()
        while m.ndim > 2 and m.shape[0] == 1:
            m = m[0]
    else:
        raise TypeError(f"mask_image must be a PIL image, a numpy array or a tensor, got {type(mask).__name__}")
    if m.ndim != 2:
        raise ValueError(f"mask_image must be one single-channel (H, W) mask, got shape {tuple(m.shape)}")
    if not torch.isfinite(m).all() or m.min() < 0 or m.max() > 1:
        raise ValueError("mask_image values must lie in [0, 1] (or 0..255 for an 8-bit image)")
    w, h = image_size
    if tuple(m.shape) != (h, w):
        raise ValueError(
            f"mask_image has size {m.shape[1]}x{m.shape[0]} (WxH) but the image is {w}x{h}: resize the mask to the "
            "image, e.g. mask.resize(image.size, PIL.Image.NEAREST)"
        )
    m = (m >= 0.5).float()[None, None]
    if m.sum() == 0:
        raise ValueError("mask_image is empty (all black): paint the region to inpaint white (1)")
    return m


def latent_mask(mask: torch.Tensor, height: int, width: int, factor: int) -> torch.Tensor:
    """``(1, 1, H, W)`` image mask -> ``(1, 1, height/f, width/f)`` (nearest, as diffusers' inpaint pipeline)."""
    m = F.interpolate(mask, size=(height, width), mode="nearest")
    return F.interpolate(m, size=(height // factor, width // factor), mode="nearest")


def inpaint(pipe, image, mask_image, prompt: str, *, repaint: Optional[bool] = None, gamma_attn: float = 0.025,
            gamma_norm: float = 0.025, update_region: str = "inpaint", seed: int = 0, num_inference_steps: int = 50,
            guidance_scale: float = 7.5, negative_prompt: Optional[str] = None, height: Optional[int] = None,
            width: Optional[int] = None, observers=None, config: Optional[dict] = None) -> TaskResult:
    """Inpaint the white region of ``mask_image`` with ``prompt``; EBCU restricted to that region.

    Args:
        pipe: ``StableDiffusionInpaintPipeline`` (``repaint=False``) or a plain SD pipeline (``repaint=True``);
            ``repaint=None`` picks by the UNet's input channels (9: inpainting, 4: RePaint).
        image: PIL RGB image or path; mask_image: same size, white = inpaint.
        update_region: ``"inpaint"`` (correct) or ``"known"`` (the published RePaint path's inverted mask).
    """
    image = load_rgb(image)
    check_prompt(prompt)
    check_steps(num_inference_steps)
    if update_region not in UPDATE_REGIONS:
        raise ValueError(f"update_region must be one of {UPDATE_REGIONS}, got {update_region!r}")
    in_ch = pipe.unet.config.in_channels
    if repaint is None:
        repaint = in_ch == 4
    if not repaint and in_ch != 9:
        raise ValueError(
            f"pipe: {type(pipe).__name__} with a {in_ch}-channel UNet is not an inpainting model; load "
            "'sd15-inpainting' (or 'tiny-inpainting'), or pass repaint=True (CLI: --repaint) for the RePaint variant on plain SD"
        )
    if repaint and in_ch != 4:
        raise ValueError(f"repaint=True needs a plain text-to-image UNet (4 input channels), this one has {in_ch}; "
                         "use repaint=False with an inpainting pipeline")
    h, w = check_size(pipe, height, width)
    m_img = mask_to_tensor(mask_image, image.size)
    f = int(pipe.vae_scale_factor)
    m_lat = latent_mask(m_img, h, w, f)  # 1 = inpaint
    region = m_lat if update_region == "inpaint" else 1.0 - m_lat
    cfg = EBCAConfig(gamma_attn=gamma_attn, gamma_norm=gamma_norm, query_mask=region, **(config or {}))
    cfg.validate()
    from PIL import Image

    src = image.resize((w, h), Image.BICUBIC)
    mask_pil = Image.fromarray((F.interpolate(m_img, size=(h, w), mode="nearest")[0, 0].numpy() * 255).astype(np.uint8))
    gen = make_generator(seed, pipe.device)
    t0 = time.perf_counter()
    with restored(pipe):
        kw = dict(negative_prompt=negative_prompt, num_inference_steps=num_inference_steps,
                  guidance_scale=guidance_scale, height=h, width=w, generator=gen)
        if not repaint:
            with energy_attention(pipe, cfg) as ctl:
                add_observers(ctl, observers)
                out = pipe(prompt, image=src, mask_image=mask_pil, **kw)
                info = controller_info(ctl)
        else:
            from diffusers import DDIMScheduler

            from .inversion import encode_image

            if not isinstance(pipe.scheduler, DDIMScheduler):  # a multistep solver's history would mix the
                pipe.scheduler = DDIMScheduler.from_config(pipe.scheduler.config)  # re-noised region in
            z0 = encode_image(pipe, src, h, w, gen)
            cb = _RepaintCallback(z0, m_lat.to(pipe.device, z0.dtype), gen)
            with energy_attention(pipe, cfg) as ctl:
                add_observers(ctl, observers)
                out = pipe(prompt, callback_on_step_end=cb, callback_on_step_end_tensor_inputs=["latents"], **kw)
                info = controller_info(ctl)
    info["seconds"] = round(time.perf_counter() - t0, 3)
    settings = dict(prompt=prompt, negative_prompt=negative_prompt, repaint=repaint, gamma_attn=gamma_attn,
                    gamma_norm=gamma_norm, update_region=update_region, num_inference_steps=num_inference_steps,
                    guidance_scale=guidance_scale, height=h, width=w, mask_fraction=float(m_lat.mean()),
                    config=config or {})
    return TaskResult("inpaint", list(out.images), settings, seed, info,
                      extras={"source": src, "mask": mask_pil, "latent_mask": m_lat})


class _RepaintCallback:
    """``callback_on_step_end``: re-noise the known region from the original to the next timestep."""

    def __init__(self, z0: torch.Tensor, inpaint_mask: torch.Tensor, generator):
        self.z0 = z0
        self.keep = 1.0 - inpaint_mask  # 1 = known region
        self.gen = generator

    def __call__(self, pipe, i, t, kw):
        from diffusers.utils.torch_utils import randn_tensor

        lat = kw["latents"]
        ts = pipe.scheduler.timesteps
        if i + 1 < len(ts):
            noise = randn_tensor(self.z0.shape, generator=self.gen, device=lat.device, dtype=lat.dtype)
            known = pipe.scheduler.add_noise(self.z0.to(lat.dtype), noise, ts[i + 1 : i + 2])
        else:
            known = self.z0.to(lat.dtype)
        return {"latents": self.keep * known + (1.0 - self.keep) * lat}


def repaint(pipe, image, mask_image, prompt: str, **kwargs) -> TaskResult:
    """:func:`inpaint` with ``repaint=True`` (plain SD pipeline, known region re-noised every step)."""
    return inpaint(pipe, image, mask_image, prompt, repaint=True, **kwargs)
