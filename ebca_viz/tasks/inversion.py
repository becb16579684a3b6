r"""DDIM inversion with noise regularisation (pix2pix-zero style), as the published real-image editing.

Image ``x`` -> ``z_0 = s_vae * E(x)`` (a VAE posterior sample), then for the inverse DDIM
timesteps ``t_1 < t_2 < ... < t_T`` (``DDIMInverseScheduler``, no CFG, the source caption as
context)::

    eps   = eps_theta(z, t_k, c)
    repeat num_reg_steps times:                                   (5)
        eps -= lambda_ac * grad_eps L_ac(eps) / R   R rolls each  (lambda_ac = 20, R = 5)
        eps -= lambda_kl * grad_eps L_kl(eps)                      (lambda_kl = 20)
    z     = DDIM step from t_{k-1} to t_k  (deterministic, eta = 0)

with the regularisers of pix2pix-zero::

    L_ac(eps) = sum over channels and pyramid levels (avg-pool 2x until <= 8 px) of
                mean(eps * roll(eps, r, H))^2 + mean(eps * roll(eps, r, W))^2,  r ~ U{0..H/2-1}
    L_kl(eps) = var(eps) + mean(eps)^2 - 1 - log(var(eps) + 1e-7)

so the predicted noise stays close to an i.i.d. standard normal. The final ``z`` is at the first
timestep of the DDIM sampling schedule (``DDIMScheduler.from_config(same config)``).

The EBCA processors must not act during inversion: if an energy controller is installed on the
UNet it is paused (``ctl.pause()``); the task functions simply invert before installing it.
"""
from __future__ import annotations

import contextlib
from typing import Optional

import torch
import torch.nn.functional as F

from ..ebca import find_controller
from .common import check_steps, load_rgb
from ..errors import InvalidSetting, UnsupportedModel


def _roll_each(x: torch.Tensor, r: torch.Tensor, dim: int) -> torch.Tensor:
    """``torch.roll`` of every ``(b, c)`` slice of ``x (B, C, H, W)`` by its own shift ``r[b, c]`` along ``dim`` (2 or 3)."""
    n = x.shape[dim]
    idx = (torch.arange(n, device=x.device)[None, None, :] - r[..., None]) % n  # (B, C, n): out[i] = x[i - r]
    idx = idx[..., :, None] if dim == 2 else idx[..., None, :]
    return x.gather(dim, idx.expand_as(x))


def autocorr_loss(eps: torch.Tensor, generator: Optional[torch.Generator] = None, min_shift: int = 0) -> torch.Tensor:
    r"""Auto-correlation of ``eps (B, C, H, W)`` at a random roll, over a 2x average-pooling pyramid.

    ``L = sum_{b,c} sum_levels mean(x * roll(x, r, H))^2 + mean(x * roll(x, r, W))^2`` with one
    ``r ~ U{min_shift .. max(h/2, 1) - 1}`` per ``(b, c)`` and level (``h`` the level's height); the
    pyramid halves ``x`` by 2x2 average pooling until ``h <= 8``. pix2pix-zero draws ``r`` from
    ``0 .. h/2 - 1`` (``min_shift = 0``): a roll of 0 makes the term ``mean(x^2)^2``, which pulls the
    variance DOWN rather than decorrelating; ``min_shift = 1`` leaves that term out.
    """
    if min_shift < 0:
        raise InvalidSetting(f"min_shift must be >= 0 (0 = pix2pix-zero, 1 = never roll by 0), got {min_shift}")
    b, c = eps.shape[:2]
    heights = [eps.shape[2]]
    while heights[-1] > 8:
        heights.append(heights[-1] // 2)
    # one draw per (b, c, level), in pix2pix-zero's order (image, channel, level), so that a run is
    # reproducible against its loop implementation; the arithmetic below is batched
    draws = torch.empty(b, c, len(heights), dtype=torch.long)
    for i in range(b):
        for j in range(c):
            for lv, h in enumerate(heights):
                hi = max(h // 2, 1)
                draws[i, j, lv] = torch.randint(min(min_shift, hi - 1), hi, (1,), generator=generator)
    draws = draws.to(eps.device)
    loss = eps.new_zeros(())
    x = eps
    for lv in range(len(heights)):
        if lv:
            x = F.avg_pool2d(x, kernel_size=2)
        r = draws[..., lv]
        loss = loss + ((x * _roll_each(x, r, 2)).mean(dim=(2, 3)) ** 2).sum()
        loss = loss + ((x * _roll_each(x, r, 3)).mean(dim=(2, 3)) ** 2).sum()
    return loss


def kl_loss(eps: torch.Tensor) -> torch.Tensor:
    """KL-style penalty pulling each image of ``eps (B, ...)`` towards zero mean and unit variance:
    ``sum_b var_b + mean_b^2 - 1 - log(var_b)`` (one image: pix2pix-zero's penalty)."""
    x = eps.flatten(1)
    m, v = x.mean(dim=1), x.var(dim=1)
    return (v + m**2 - 1 - torch.log(v + 1e-7)).sum()


def _epsilon(sched, model_output, sample, t):
    """The noise prediction under the scheduler's ``prediction_type``."""
    kind = sched.config.prediction_type
    a = sched.alphas_cumprod[int(t)].to(model_output.device, model_output.dtype)
    if kind == "epsilon":
        return model_output
    if kind == "sample":
        return (sample - a**0.5 * model_output) / (1 - a) ** 0.5
    if kind == "v_prediction":
        return a**0.5 * model_output + (1 - a) ** 0.5 * sample
    raise UnsupportedModel(f"prediction_type={kind!r} is unsupported; fix: use a scheduler with prediction_type "
                           "epsilon, sample or v_prediction")


def regularize_noise(eps, sample, t, sched, lambda_autocorr=20.0, lambda_kl=20.0, num_reg_steps=5,
                     num_autocorr_rolls=5, generator=None, min_shift: int = 0):
    """pix2pix-zero's noise regularisation of one prediction ``eps (B, C, h, w)`` (gradient steps on
    ``L_ac``, ``L_kl``; ``min_shift`` as in :func:`autocorr_loss`)."""
    with torch.enable_grad():
        for _ in range(num_reg_steps):
            if lambda_autocorr > 0:
                for _ in range(num_autocorr_rolls):
                    var = eps.detach().clone().requires_grad_(True)
                    autocorr_loss(_epsilon(sched, var, sample.detach(), t), generator, min_shift).backward()
                    eps = eps - lambda_autocorr * var.grad.detach() / num_autocorr_rolls
            if lambda_kl > 0:
                var = eps.detach().clone().requires_grad_(True)
                kl_loss(_epsilon(sched, var, sample.detach(), t)).backward()
                eps = eps - lambda_kl * var.grad.detach()
            eps = eps.detach()
    return eps


@torch.no_grad()
def encode_image(pipe, image, height: int, width: int, generator=None) -> torch.Tensor:
    """PIL RGB (or a list of them) -> ``(B, 4, height/f, width/f)`` latents: a sample of the VAE
    posterior with ``generator``, else its mean; times the scaling factor."""
    x = pipe.image_processor.preprocess(image, height=height, width=width)
    x = x.to(device=pipe.device, dtype=pipe.vae.dtype)
    dist = pipe.vae.encode(x).latent_dist
    z = dist.sample(generator=generator) if generator is not None else dist.mean
    return z * pipe.vae.config.scaling_factor


@torch.no_grad()
def ddim_invert(pipe, image, prompt, *, num_inference_steps: int = 50, height: Optional[int] = None,
                width: Optional[int] = None, lambda_autocorr: float = 20.0, lambda_kl: float = 20.0,
                num_reg_steps: int = 5, num_autocorr_rolls: int = 5, generator: Optional[torch.Generator] = None,
                progress=None, min_shift: int = 0, posterior: str = "sample") -> torch.Tensor:
    """Invert ``image`` to the latents at the first DDIM sampling timestep; returns ``(B, 4, h, w)``.

    ``image``: one PIL image (B = 1) or a list of B; ``prompt``: one caption or a list of B.
    Unconditional-free (no CFG): the UNet sees only the ``prompt`` embedding. The pipeline's
    scheduler is not changed (a ``DDIMInverseScheduler`` is built from its config).
    ``posterior``: ``"sample"`` (with ``generator``; the published code) or ``"mean"`` of the VAE
    posterior. ``min_shift``: smallest auto-correlation roll (0 = pix2pix-zero, see :func:`autocorr_loss`).
    """
    from diffusers import DDIMInverseScheduler

    from .common import check_size

    check_steps(num_inference_steps)
    if posterior not in ("sample", "mean"):
        raise InvalidSetting(f"posterior must be 'sample' (VAE posterior sample, published) or 'mean', got {posterior!r}")
    images = [load_rgb(im) for im in image] if isinstance(image, (list, tuple)) else [load_rgb(image)]
    prompts = [prompt] * len(images) if isinstance(prompt, str) else list(prompt)
    if len(prompts) != len(images) or not all(isinstance(p, str) for p in prompts):
        raise InvalidSetting(f"prompt must be one string or a list of {len(images)} strings (one per image), "
                         f"got {len(prompts)} items")
    h, w = check_size(pipe, height, width)
    inv = DDIMInverseScheduler.from_config(pipe.scheduler.config)
    inv.set_timesteps(num_inference_steps, device=pipe.device)
    z = encode_image(pipe, images if len(images) > 1 else images[0], h, w,
                     generator if posterior == "sample" else None)
    # keywords: SDXL's second positional argument is prompt_2 (positionally, device went there)
    enc = pipe.encode_prompt(prompt=prompts, device=pipe.device, num_images_per_prompt=1,
                             do_classifier_free_guidance=False)
    ctx = enc[0]
    unet_kw = {}
    if len(enc) == 4 and enc[2] is not None:  # SDXL: pooled text embeds + time ids
        pooled = enc[2]
        tid = torch.tensor([[h, w, 0, 0, h, w]], device=pipe.device, dtype=ctx.dtype).repeat(len(prompts), 1)
        unet_kw["added_cond_kwargs"] = {"text_embeds": pooled, "time_ids": tid}
    ctl = find_controller(pipe.unet)
    rng = torch.Generator().manual_seed(int(torch.randint(2**31 - 1, (1,), generator=generator, device=generator.device).item())) \
        if generator is not None else None
    with (ctl.pause() if ctl is not None else contextlib.nullcontext()):
        for t in inv.timesteps:
            zin = inv.scale_model_input(z, t)
            eps = pipe.unet(zin, t, encoder_hidden_states=ctx, **unet_kw).sample
            eps = regularize_noise(eps, zin, t, inv, lambda_autocorr, lambda_kl, num_reg_steps,
                                   num_autocorr_rolls, rng, min_shift)
            z = inv.step(eps, t, z).prev_sample
            if progress is not None:
                progress()
    return z
