r"""Text-guided inpainting with masked EBCU, on the SD inpainting pipeline or as RePaint on plain SD.

Mask convention (diffusers'): white / 1 = the region to inpaint, black / 0 = keep. The EBCU
attention term only sees the queries of the inpainted region::

    dK = gamma_attn * softmax_i(S)^T (m_n * Q) - gamma_norm * softmax_j(|k_j|^2) k_j

``m_n`` = the latent-resolution mask (1 = inpaint; nearest-neighbour from the image mask, as the
pipelines build it) resized to layer ``n``'s grid (bilinear, ``align_corners=True``).

* ``repaint=False``: ``StableDiffusionInpaintPipeline`` (9-channel UNet: latents, mask, masked image).
* ``repaint=True``: RePaint (Lugmayr et al. 2022, Algorithm 1 with resampling) in latent space on a
  plain SD pipeline (4-channel UNet), text-conditioned with classifier-free guidance, sampled with
  diffusers' ``RePaintScheduler`` (swapped in for the call, the pipeline's own scheduler restored
  after it, also on errors). ``z_0 = s_vae E(x)`` (``vae.config.scaling_factor``), ``m`` the latent
  mask above, ``m_known = 1 - m`` (``RePaintScheduler.step``'s ``mask``: 1 = KNOWN -- the
  opposite polarity of the EBCU query mask). For every entry ``t`` of the jump-expanded schedule
  ``RePaintScheduler.set_timesteps(T, jump_length, jump_n_sample)``::

      t < t_prev (forward):  eps = eps_u + w (eps_c - eps_u)             (one UNet call, CFG batch)
                             z   <- m_known * q(z_{t'} | z_0) + m * DDIM_{eta=0}(z_t, eps)
      t > t_prev (jump):     z   <- q(z_t | z_{t_prev}), noise added step by step  (``undo_step``, no UNet call)

  with ``t'`` the next timestep of the plain grid (``t' < 0``: alpha_bar = 1, so the known region of
  the final latents *is* ``z_0``). Resampling: after every ``jump_length`` forward steps the
  sample is re-noised ``jump_length`` steps and denoised again, ``jump_n_sample - 1`` times (only at
  plain positions ``j = 0, jump_length, 2 jump_length, ... < T - jump_length`` counted from the clean
  end, as ``RePaintScheduler`` builds it). Defaults ``jump_length = jump_n_sample = 10`` are the
  published pipeline's (50 steps -> 410 UNet calls, 360 jump-backs).

  ``jump_n_sample=1`` (or ``jump_length >= T``) has no jumps: T UNet calls, one per plain timestep,
  which is the earlier "RePaint without resampling" of this package with two documented
  differences: the grid is ``RePaintScheduler``'s ``t_k = k * (1000 // T)`` (no ``steps_offset``;
  the earlier DDIM path used ``t_k + 1``) and the last step lands on alpha_bar = 1 exactly
  (DDIM: ``alphas_cumprod[0]``, then the known region was overwritten with ``z_0``). Both are the
  same update equations (DDIM eta = 0 in the inpainted region, re-noised ``z_0`` in the known
  one); the random draws differ, so the images are not bit-identical to the earlier path.

  EBCA during jumps: the controller would take a rising timestep for a new run, so every UNet
  call is pinned with ``ctl.set_step(k, T)`` where ``k = T - 1 - t // (1000 // T)`` is the
  position of ``t`` in the *plain* schedule (0 = noisiest). A gamma schedule (start/stop
  fractions) therefore sees the noise level, not the call count: after a jump the steps that are
  denoised again get the same gammas as the first time. ``num_steps`` is ``T``.
  ``controller_info``'s ``unet_calls`` is the real number of UNet calls. EBCQ edits (passed via
  ``config``) in ``edit_context="accumulate"`` mode keep accumulating over *every* UNet call of the
  run, re-denoised ones included: jumps do not roll the editorial contexts back, so with the
  defaults they receive about 410/50 = 8x as many updates as in a plain 50-step run (``"reset"``
  mode is unaffected). Observers see one event per layer per UNet call; a ``ebca_viz.trace``
  records every call but, detecting runs by rising timesteps itself, splits the record into one
  "run" per jump (``run_starts``).

  The published RePaint path feeds the *known* region (its inverted mask) to the update -- a bug;
  ``update_region="known"`` reproduces it.

Paste-back (``paste_back=True``, the default, both paths): the known region of the final latents is
``z_0``, but the VAE decoder mixes neighbouring latents, so decoded known pixels near the mask take
the inpainted colours (on shapes world a 4x4-pixel latent cell bleeds ~4 px). As diffusers'
inpainting pipelines do with ``padding_mask_crop`` (``VaeImageProcessor.apply_overlay``), the
source's known pixels are composited back **in pixel space**::

    x_out = a * x_decoded + (1 - a) * x_source,   a = min(d, F + 1) / (F + 1)

with ``d`` the chessboard distance (pixels) of a pixel to the known region (``d = 0`` outside the
mask) and ``F = paste_feather`` (default ``max(1, round(min(H, W) / 16))``): the blend ramps up
*inside* the mask only, so every pixel outside the mask equals the source exactly.
``extras["decoded"]`` keeps the images before paste-back; ``info["paste_back"]`` says what was done.
``paste_back=False`` returns the decoded images, as the published pipelines did.
"""
from __future__ import annotations

import contextlib
import inspect
import numbers
import time
from typing import Optional

import numpy as np
import torch
import torch.nn.functional as F

from ..config import EBCAConfig
from ..ebca import energy_attention
from .common import (TaskResult, add_observers, check_prompt, check_size, check_steps, controller_info, load_rgb,
                     make_generator, restored)
from ..errors import InvalidSetting, InvalidType, UnsupportedModel

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
        raise InvalidType(f"mask_image must be a PIL image, a numpy array or a tensor, got {type(mask).__name__}")
    if m.ndim != 2:
        raise InvalidSetting(f"mask_image must be one single-channel (H, W) mask, got shape {tuple(m.shape)}")
    if not torch.isfinite(m).all() or m.min() < 0 or m.max() > 1:
        raise InvalidSetting("mask_image values must lie in [0, 1] (or 0..255 for an 8-bit image)")
    w, h = image_size
    if tuple(m.shape) != (h, w):
        raise InvalidSetting(
            f"mask_image has size {m.shape[1]}x{m.shape[0]} (WxH) but the image is {w}x{h}: resize the mask to the "
            "image, e.g. mask.resize(image.size, PIL.Image.NEAREST)"
        )
    m = (m >= 0.5).float()[None, None]
    if m.sum() == 0:
        raise InvalidSetting("mask_image is empty (all black): paint the region to inpaint white (1)")
    return m


def latent_mask(mask: torch.Tensor, height: int, width: int, factor: int) -> torch.Tensor:
    """``(1, 1, H, W)`` image mask -> ``(1, 1, height/f, width/f)`` (nearest, as diffusers' inpaint pipeline)."""
    m = F.interpolate(mask, size=(height, width), mode="nearest")
    return F.interpolate(m, size=(height // factor, width // factor), mode="nearest")


JUMP_LENGTH = 10  # published: energy_repaint_stable_diffusion.py __call__ defaults (jump_length, jump_n_sample)
JUMP_N_SAMPLE = 10


def check_jump(v, name: str) -> int:
    """``jump_length`` / ``jump_n_sample``: a positive int (``1`` = no resampling for ``jump_n_sample``)."""
    if isinstance(v, bool) or not isinstance(v, numbers.Integral) or v < 1:
        raise InvalidSetting(f"{name} must be a positive int (published: 10), got {v!r}")
    return int(v)


def repaint_plan(timesteps, num_inference_steps: int, num_train_timesteps: int = 1000) -> list:
    """The jump-expanded ``RePaintScheduler.timesteps`` -> one entry per element:
    ``("step", t, k)`` (a UNet call at ``t``; ``k`` = its position in the plain schedule, 0 = noisiest)
    or ``("undo", t_from, None)`` (re-noise from ``t_from`` one plain step up, no UNet call)."""
    stride = num_train_timesteps // num_inference_steps
    ts = [int(t) for t in timesteps]
    plan, t_last = [], (ts[0] + 1 if ts else 0)
    for t in ts:
        if t >= t_last:
            plan.append(("undo", t_last, None))
        else:
            plan.append(("step", t, num_inference_steps - 1 - t // stride))
        t_last = t
    return plan


def default_feather(height: int, width: int) -> int:
    """Paste-back blend width in pixels: ``max(1, round(min(H, W) / 16))`` (2 at 32 px, 32 at 512 px)."""
    return max(1, int(round(min(height, width) / 16)))


def paste_alpha(mask: torch.Tensor, feather: int) -> torch.Tensor:
    """``(1, 1, H, W)`` binary mask (1 = inpaint) -> blend weight ``a = min(d, F + 1) / (F + 1)`` of the
    generated image, ``d`` = chessboard distance to the known region (0 outside the mask), computed as
    the mean of ``F + 1`` successive 3x3 erosions (the image border counts as inside)."""
    if isinstance(feather, bool) or not isinstance(feather, numbers.Integral) or feather < 0:
        raise InvalidSetting(f"paste_feather must be an int >= 0 (pixels; 0 = hard paste), got {feather!r}")
    e, acc = mask.float(), torch.zeros_like(mask, dtype=torch.float32)
    for _ in range(int(feather) + 1):
        acc = acc + e
        e = -F.max_pool2d(-e, 3, stride=1, padding=1)  # erosion; max_pool pads with -inf = no effect
    return acc / (int(feather) + 1)


def paste_known(generated, source, mask: torch.Tensor, feather: int):
    """Composite the source's known pixels onto ``generated`` (PIL RGB, same size as ``source``):
    ``a * generated + (1 - a) * source`` with ``a = paste_alpha(mask, feather)``; uint8, rounded.
    Outside the mask (``a = 0``) the result is the source, bit for bit."""
    from PIL import Image

    g = np.asarray(generated.convert("RGB"), np.float32)
    x = np.asarray(source.convert("RGB"), np.float32)
    if g.shape != x.shape:
        raise InvalidSetting.of("generated", generated, f"pass images of the same size (resize to {source.size})",
                                 why=f"generated image {g.shape} and source {x.shape} differ in size")
    m = F.interpolate(mask.float(), size=g.shape[:2], mode="nearest")
    a = paste_alpha(m, feather)[0, 0].numpy()[..., None]
    out = np.where(a > 0, a * g + (1 - a) * x, x)
    return Image.fromarray(np.clip(np.rint(out), 0, 255).astype(np.uint8))


def inpaint(pipe, image, mask_image, prompt: str, *, repaint: Optional[bool] = None, gamma_attn: float = 0.025,
            gamma_norm: float = 0.025, update_region: str = "inpaint", seed: int = 0, num_inference_steps: int = 50,
            guidance_scale: float = 7.5, negative_prompt: Optional[str] = None, height: Optional[int] = None,
            width: Optional[int] = None, jump_length: int = JUMP_LENGTH, jump_n_sample: int = JUMP_N_SAMPLE,
            observers=None, config: Optional[dict] = None, paste_back: bool = True,
            paste_feather: Optional[int] = None) -> TaskResult:
    """Inpaint the white region of ``mask_image`` with ``prompt``; EBCU restricted to that region.

    Args:
        pipe: ``StableDiffusionInpaintPipeline`` (``repaint=False``) or a plain SD 1.x/2.x pipeline
            (``repaint=True``); ``repaint=None`` picks by the UNet's input channels (9: inpainting, 4: RePaint).
        image: PIL RGB image or path; mask_image: same size, white = inpaint.
        update_region: ``"inpaint"`` (correct) or ``"known"`` (the published RePaint path's inverted mask).
        jump_length, jump_n_sample: RePaint resampling (``repaint=True`` only; see the module docstring):
            after every ``jump_length`` steps jump back ``jump_length`` steps, ``jump_n_sample - 1`` times.
            Published: 10 and 10. ``jump_n_sample=1``: no resampling (one UNet call per step).
        paste_back: composite the source's known pixels back (pixel space, feathered inside the mask;
            see the module docstring). Default True; False = the published pipelines' decoded output.
        paste_feather: blend width in pixels (default :func:`default_feather`; 0 = hard paste).

    Returns:
        :class:`TaskResult`; with ``repaint=True`` ``extras["latents"]`` are the final latents (before
        decoding) and ``extras["known_latents"]`` the encoded image ``z_0``; ``info["repaint"]`` counts
        the UNet calls and jump-backs.
    """
    image = load_rgb(image)
    check_prompt(prompt)
    check_steps(num_inference_steps)
    jump_length = check_jump(jump_length, "jump_length")
    jump_n_sample = check_jump(jump_n_sample, "jump_n_sample")
    if update_region not in UPDATE_REGIONS:
        raise InvalidSetting(f"update_region must be one of {UPDATE_REGIONS}, got {update_region!r}")
    in_ch = pipe.unet.config.in_channels
    if repaint is None:
        repaint = in_ch == 4
    if not repaint and in_ch != 9:
        raise UnsupportedModel(
            f"pipe: {type(pipe).__name__} with a {in_ch}-channel UNet is not an inpainting model; load "
            "'sd15-inpainting' (or 'tiny-inpainting'), or pass repaint=True (CLI: --repaint) for the RePaint variant on plain SD"
        )
    if repaint and in_ch != 4:
        raise UnsupportedModel(f"repaint=True needs a plain text-to-image UNet (4 input channels), this one has {in_ch}; "
                         "use repaint=False with an inpainting pipeline")
    if repaint and (getattr(pipe.unet.config, "addition_embed_type", None) is not None
                    or getattr(pipe.unet.config, "time_cond_proj_dim", None) is not None):
        raise UnsupportedModel(f"repaint=True runs SD 1.x/2.x pipelines (text conditioning only); {type(pipe).__name__}'s UNet "
                         "needs added conditions (SDXL / LCM)")
    if not isinstance(paste_back, bool):
        raise InvalidSetting(f"paste_back must be True or False, got {paste_back!r}")
    h, w = check_size(pipe, height, width)
    feather = default_feather(h, w) if paste_feather is None else paste_feather
    paste_alpha(torch.zeros(1, 1, 3, 3), feather)  # validates paste_feather before any sampling
    m_img = mask_to_tensor(mask_image, image.size)
    f = int(pipe.vae_scale_factor)
    m_lat = latent_mask(m_img, h, w, f)  # 1 = inpaint
    region = m_lat if update_region == "inpaint" else 1.0 - m_lat
    extra = dict(config or {})
    if repaint:  # the hand-written loop does not set pipe._guidance_scale for the controller to read
        extra.setdefault("cfg", guidance_scale > 1.0)
    cfg = EBCAConfig(gamma_attn=gamma_attn, gamma_norm=gamma_norm, query_mask=region, **extra)
    cfg.validate()
    from PIL import Image

    src = image.resize((w, h), Image.BICUBIC)
    mask_pil = Image.fromarray((F.interpolate(m_img, size=(h, w), mode="nearest")[0, 0].numpy() * 255).astype(np.uint8))
    gen = make_generator(seed, pipe.device)
    extras = {"source": src, "mask": mask_pil, "latent_mask": m_lat}
    t0 = time.perf_counter()
    with restored(pipe):
        kw = dict(negative_prompt=negative_prompt, num_inference_steps=num_inference_steps,
                  guidance_scale=guidance_scale, height=h, width=w, generator=gen)
        if not repaint:
            with energy_attention(pipe, cfg) as ctl:
                add_observers(ctl, observers)
                out = pipe(prompt, image=src, mask_image=mask_pil, **kw)
                info = controller_info(ctl)
            images = list(out.images)
        else:
            images, latents, z0, info = _repaint(pipe, cfg, observers, prompt, src, m_lat, gen, jump_length,
                                                 jump_n_sample, **kw)
            extras.update(latents=latents, known_latents=z0)
    m_full = F.interpolate(m_img, size=(h, w), mode="nearest")
    if paste_back:
        extras["decoded"] = images
        images = [paste_known(im, src, m_full, feather) for im in images]
    info["paste_back"] = {"on": paste_back, "space": "pixel", "feather_px": int(feather) if paste_back else None,
                          "exact_outside_mask": paste_back}
    info["seconds"] = round(time.perf_counter() - t0, 3)
    settings = dict(paste_back=paste_back, paste_feather=int(feather) if paste_back else None, prompt=prompt, negative_prompt=negative_prompt, repaint=repaint, gamma_attn=gamma_attn,
                    gamma_norm=gamma_norm, update_region=update_region, num_inference_steps=num_inference_steps,
                    guidance_scale=guidance_scale, height=h, width=w, mask_fraction=float(m_lat.mean()),
                    config=config or {})
    if repaint:
        settings.update(jump_length=jump_length, jump_n_sample=jump_n_sample, scheduler="RePaintScheduler", eta=0.0)
    return TaskResult("inpaint", images, settings, seed, info, extras=extras)


@contextlib.contextmanager
def _guidance_scale_set(pipe, value: float):
    """``pipe.do_classifier_free_guidance`` (read by observers such as a trace) reflects this call."""
    had = "_guidance_scale" in vars(pipe)
    old = vars(pipe).get("_guidance_scale")
    pipe._guidance_scale = value
    try:
        yield
    finally:
        if had:
            pipe._guidance_scale = old
        else:
            vars(pipe).pop("_guidance_scale", None)


@torch.no_grad()
def _repaint(pipe, cfg, observers, prompt, src, m_lat, gen, jump_length, jump_n_sample, *, negative_prompt,
             num_inference_steps, guidance_scale, height, width, generator):
    """RePaint sampling loop (see the module docstring). Runs inside the caller's ``restored(pipe)``."""
    from diffusers import RePaintScheduler
    from diffusers.utils.torch_utils import randn_tensor

    from .inversion import encode_image

    device = pipe.device
    pred_type = pipe.scheduler.config.get("prediction_type", "epsilon")
    if pred_type not in ("epsilon", "v_prediction", "sample"):
        raise UnsupportedModel(f"repaint=True: unsupported prediction_type {pred_type!r}; fix: use a scheduler with "
                               "prediction_type epsilon, v_prediction or sample, or repaint=False")
    accepted = inspect.signature(RePaintScheduler.__init__).parameters
    conf = {k: v for k, v in pipe.scheduler.config.items() if k in accepted}  # drop DDIM-only keys (steps_offset, ...)
    conf.update(clip_sample=False, eta=0.0)  # latents are not in [-1, 1]; eta 0 as the published pipeline
    sched = RePaintScheduler.from_config(conf)
    sched.set_timesteps(num_inference_steps, jump_length, jump_n_sample, device)
    T = sched.num_inference_steps
    plan = repaint_plan(sched.timesteps, T, sched.config.num_train_timesteps)
    pipe.scheduler = sched  # restored by the caller's restored(pipe)

    do_cfg = guidance_scale > 1.0
    z0 = encode_image(pipe, src, height, width, generator)
    dtype = pipe.unet.dtype
    z0 = z0.to(device=device, dtype=dtype)
    keep = (1.0 - m_lat).to(device=device, dtype=dtype)  # RePaintScheduler.step's mask: 1 = KNOWN
    cond, uncond = pipe.encode_prompt(prompt, device, 1, do_cfg, negative_prompt)
    ctx = torch.cat([uncond, cond]) if do_cfg else cond
    latents = randn_tensor(z0.shape, generator=generator, device=device, dtype=dtype) * sched.init_noise_sigma

    n_calls = n_undo = 0
    call_steps = []  # plain-schedule position k of every UNet call
    with _guidance_scale_set(pipe, guidance_scale), energy_attention(pipe, cfg) as ctl:
        add_observers(ctl, observers)
        ctl.new_run()
        ctl.rc.check_denominators(T, T)
        with pipe.progress_bar(total=len(plan)) as bar:
            for kind, t, k in plan:
                if kind == "undo":
                    latents = sched.undo_step(latents, t, generator)
                    n_undo += 1
                else:
                    ctl.set_step(k, T)  # a jump's rising timestep is not a new run; gammas see plain position k
                    x = torch.cat([latents] * 2) if do_cfg else latents
                    tt = torch.tensor(t, device=device)
                    out = pipe.unet(sched.scale_model_input(x, tt), tt, encoder_hidden_states=ctx).sample
                    if do_cfg:
                        u, c = out.chunk(2)
                        out = u + guidance_scale * (c - u)
                    eps = _to_epsilon(out, latents, sched.alphas_cumprod[t], pred_type)
                    latents = sched.step(eps, t, latents, z0, keep, generator=generator).prev_sample
                    n_calls += 1
                    call_steps.append(k)
                bar.update()
        info = controller_info(ctl)
    info["unet_calls"] = n_calls
    info["repaint"] = {"jump_length": jump_length, "jump_n_sample": jump_n_sample, "schedule_length": len(plan),
                       "unet_calls": n_calls, "undo_steps": n_undo, "plain_steps": T,
                      "call_steps": call_steps}
    vae = pipe.vae
    img = vae.decode((latents / vae.config.scaling_factor).to(vae.dtype), return_dict=False)[0]
    img, nsfw = pipe.run_safety_checker(img, device, ctx.dtype)
    denorm = [True] * img.shape[0] if nsfw is None else [not x for x in nsfw]
    images = pipe.image_processor.postprocess(img, output_type="pil", do_denormalize=denorm)
    if hasattr(pipe, "maybe_free_model_hooks"):
        pipe.maybe_free_model_hooks()
    return list(images), latents, z0, info


def _to_epsilon(out, sample, alpha_bar, kind):
    if kind == "epsilon":
        return out
    a = alpha_bar.to(out.device, out.dtype)
    if kind == "v_prediction":
        return a**0.5 * out + (1 - a) ** 0.5 * sample
    return (sample - a**0.5 * out) / (1 - a) ** 0.5


def repaint(pipe, image, mask_image, prompt: str, **kwargs) -> TaskResult:
    """:func:`inpaint` with ``repaint=True`` (plain SD pipeline, RePaint with resampling jumps)."""
    return inpaint(pipe, image, mask_image, prompt, repaint=True, **kwargs)
