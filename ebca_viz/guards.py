"""Finiteness guards: a NaN or an overflow raises a clear error naming the setting, never a black image.

Installed with every EBCA / SEG installation (:func:`ebca_viz.denoiser_hook.install`), as an observer
of the one denoiser hook of the UNet and a pre-hook on the pipeline's VAE decoder. Three places:

* the **context cascade** (EBCU): each cross-attention layer hands its updated context to
  :meth:`FiniteGuard.note_context`, which keeps the lazy flag ``isfinite(C_{n+1}).all()`` (a 0-d
  tensor, no device sync); the flags are reduced once at the end of the UNet call;
* the **noise prediction**: the UNet output after every hook (with SEG that is the guided
  prediction), and the latents entering the next call, which carry the pipeline's CFG result
  ``eps_u + w (eps_c - eps_u)`` into the scheduler's step;
* the **final latents**: the input of ``vae.decoder``.

Cost: one ``isfinite(...).all()`` reduction per tensor and one host sync per UNet call (the hooks
already read the timestep on the host); ``benchmarks/overhead.py`` measures it.
"""
from __future__ import annotations

from typing import Callable

import torch
from .errors import NonFinite


_ENABLED = [True]


class disabled:
    """``with guards.disabled(): ...`` installs EBCA / SEG without the guards (benchmarks/overhead.py
    measures their cost this way; do not use it to silence a NonFiniteError)."""

    def __enter__(self):
        self._was, _ENABLED[0] = _ENABLED[0], False

    def __exit__(self, *exc):
        _ENABLED[0] = self._was
        return False


def enabled() -> bool:
    return _ENABLED[0]


class NonFiniteError(NonFinite):
    """A tensor of the sampling loop became NaN or infinite; the message names the setting."""


def _finite(x) -> bool:
    return bool(torch.isfinite(x).all()) if torch.is_tensor(x) and x.is_floating_point() else True


class FiniteGuard:
    """Hooks that check the sampling loop's tensors; ``describe()`` returns the settings to blame."""

    def __init__(self, what: str, describe: Callable[[], str]):
        self.what = what  # "EBCA" / "SEG"
        self.describe = describe
        self.calls = 0
        self._flags: list = []  # (layer name, lazy 0-d bool tensor) for this UNet call

    # -- the context cascade --------------------------------------------------------------------
    def note_context(self, name: str, ctx: torch.Tensor) -> None:
        self._flags.append((name, torch.isfinite(ctx).all()))

    def _check_contexts(self) -> None:
        flags, self._flags = self._flags, []
        if not flags:
            return
        if bool(torch.stack([f for _, f in flags]).all()):
            return
        first = next(n for n, f in flags if not bool(f))
        raise NonFiniteError(
            f"{self.what}: the context update became NaN/inf at layer {first}, UNet call {self.calls} "
            f"({self.describe()}): the step sizes are too large for this model and dtype; lower them")

    # -- stages of the denoiser hook (ebca_viz.denoiser_hook) ------------------------------------
    role, kind, during_pause = "observer", "guard", True  # installed after its method: sees the final output

    def before_call(self, call):
        self._flags = []
        if not _finite(call.sample):
            raise NonFiniteError(
                f"{self.what}: the latents entering UNet call {self.calls} are NaN/inf: the previous step's "
                f"guided noise prediction overflowed ({self.describe()}); lower the guidance or the strengths")

    def after_call(self, call, output):
        if output is None:  # the call raised: nothing to check
            self._flags = []
            return
        self.calls += 1
        self._check_contexts()
        eps = output[0] if isinstance(output, tuple) else getattr(output, "sample", output)
        if not _finite(eps):
            raise NonFiniteError(
                f"{self.what}: the noise prediction of UNet call {self.calls - 1} is NaN/inf "
                f"({self.describe()}); lower the strengths")

    def decoder_pre(self, module, args):
        z = args[0] if args else None
        if not _finite(z):
            raise NonFiniteError(
                f"{self.what}: the final latents are NaN/inf ({self.describe()}); lower the guidance or the strengths")
        return None

    def register_decoder(self, vae=None) -> list:
        """The hook handle on ``vae.decoder`` (the caller removes it); the UNet checks run as stages of
        the denoiser hook."""
        dec = getattr(vae, "decoder", None) if vae is not None else None
        if isinstance(dec, torch.nn.Module):
            return [dec.register_forward_pre_hook(self.decoder_pre)]
        return []


def guidance_text(pipe) -> str:
    g = getattr(pipe, "_guidance_scale", None) if pipe is not None else None
    return f"guidance_scale={g:g}" if isinstance(g, (int, float)) else "guidance_scale=?"


__all__ = ["FiniteGuard", "NonFiniteError", "disabled", "enabled", "guidance_text"]
