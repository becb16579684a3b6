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


def autocorr_loss(eps: torch.Tensor, generator: Optional[torch.Generator] = None) -> torch.Tensor:
    """Auto-correlation of ``eps (B, C, H, W)`` at a random roll, over a 2x average-pooling pyramid."""
    loss = eps.new_zeros(())
    for i in range(eps.shape[0]):
        for j in range(eps.shape[1]):
            x = eps[i : i + 1, j : j + 1]
            while True:
                r = int(torch.randint(max(x.shape[2] // 2, 1), (1,), generator=generator).item())
                loss = loss + (x * torch.roll(x, shifts=r, dims=2)).mean() ** 2
                loss = loss + (x * torch.roll(x, shifts=r, dims=3)).mean() ** 2
                if x.shape[2] <= 8:
                    break
                x = F.avg_pool2d(x, kernel_size=2)
    return loss


def kl_loss(eps: torch.Tensor) -> torch.Tensor:
    """KL-style penalty pulling ``eps`` towards zero mean and unit variance."""
    m, v = eps.mean(), eps.var()
    return v + m**2 - 1 - torch.log(v + 1e-7)


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
    raise ValueError(f"unsupported prediction_type {kind!r}")


def regularize_noise(eps, sample, t, sched, lambda_autocorr=20.0, lambda_kl=20.0, num_reg_steps=5,
                     num_autocorr_rolls=5, generator=None):
    """pix2pix-zero's noise regularisation of one prediction (gradient steps on ``L_ac``, ``L_kl``)."""
    with torch.enable_grad():
        for _ in range(num_reg_steps):
            if lambda_autocorr > 0:
                for _ in range(num_autocorr_rolls):
                    var = eps.detach().clone().requires_grad_(True)
                    autocorr_loss(_epsilon(sched, var, sample.detach(), t), generator).backward()
                    eps = eps - lambda_autocorr * var.grad.detach() / num_autocorr_rolls
            if lambda_kl > 0:
                var = eps.detach().clone().requires_grad_(True)
                kl_loss(_epsilon(sched, var, sample.detach(), t)).backward()
                eps = eps - lambda_kl * var.grad.detach()
            eps = eps.detach()
    return eps


@torch.no_grad()
def encode_image(pipe, image, height: int, width: int, generator=None) -> torch.Tensor:
    """PIL RGB -> ``(1, 4, height/f, width/f)`` latents (a sample of the VAE posterior, times the scaling factor)."""
    x = pipe.image_processor.preprocess(image, height=height, width=width)
    x = x.to(device=pipe.device, dtype=pipe.vae.dtype)
    dist = pipe.vae.encode(x).latent_dist
    z = dist.sample(generator=generator) if generator is not None else dist.mean
    return z * pipe.vae.config.scaling_factor


@torch.no_grad()
def ddim_invert(pipe, image, prompt: str, *, num_inference_steps: int = 50, height: Optional[int] = None,
                width: Optional[int] = None, lambda_autocorr: float = 20.0, lambda_kl: float = 20.0,
                num_reg_steps: int = 5, num_autocorr_rolls: int = 5, generator: Optional[torch.Generator] = None,
                progress=None) -> torch.Tensor:
    """Invert ``image`` to the latents at the first DDIM sampling timestep; returns ``(1, 4, h, w)``.

    Unconditional-free (no CFG): the UNet sees only the ``prompt`` embedding. The pipeline's
    scheduler is not changed (a ``DDIMInverseScheduler`` is built from its config).
    """
    from diffusers import DDIMInverseScheduler

    from .common import check_size

    check_steps(num_inference_steps)
    image = load_rgb(image)
    h, w = check_size(pipe, height, width)
    inv = DDIMInverseScheduler.from_config(pipe.scheduler.config)
    inv.set_timesteps(num_inference_steps, device=pipe.device)
    z = encode_image(pipe, image, h, w, generator)
    enc = pipe.encode_prompt(prompt, pipe.device, 1, False)
    ctx = enc[0]
    unet_kw = {}
    if len(enc) == 4 and enc[2] is not None:  # SDXL: pooled text embeds + time ids
        pooled = enc[2]
        tid = torch.tensor([[h, w, 0, 0, h, w]], device=pipe.device, dtype=ctx.dtype)
        unet_kw["added_cond_kwargs"] = {"text_embeds": pooled, "time_ids": tid}
    ctl = find_controller(pipe.unet)
    rng = torch.Generator().manual_seed(int(torch.randint(2**31 - 1, (1,), generator=generator, device=generator.device).item())) \
        if generator is not None else None
    with (ctl.pause() if ctl is not None else contextlib.nullcontext()):
        for t in inv.timesteps:
            zin = inv.scale_model_input(z, t)
            eps = pipe.unet(zin, t, encoder_hidden_states=ctx, **unet_kw).sample
            eps = regularize_noise(eps, zin, t, inv, lambda_autocorr, lambda_kl, num_reg_steps,
                                   num_autocorr_rolls, rng)
            z = inv.step(eps, t, z).prev_sample
            if progress is not None:
                progress()
    return z
