r"""The one "sample and score": seeded initial latents -> a pipeline call with a method installed ->
``uint8`` images -> detector verdicts. Notebooks, the command line, the benchmarks and the panel all
sample through :func:`sample`; the shapes-world detector judges through :func:`score`.

**The seed rule** (:func:`initial_latents`): sample ``k`` starts from
``z_T[k] = randn((C, h, w), generator=torch.Generator("cpu").manual_seed(seeds[k]))`` in float32, then
moved to the pipeline's device and dtype. One generator per seed, so the initial latents never depend
on the batch an image is sampled in (the arithmetic of a batch of 1 vs 4 may still move a pixel by one
grey level on CPU; 2 vs 4 gave identical images, ``tests/test_sampling.py``). This is also what diffusers draws for
``pipe(prompt, generator=[torch.Generator("cpu").manual_seed(s) for s in seeds])`` on a float32
pipeline, so ``pipe(prompt, generator=torch.Generator().manual_seed(seed))`` and
``sample(pipe, [prompt], [seed])`` give the same image. The same generators (advanced past the draw)
are handed to the pipeline for a stochastic scheduler's noise (DDIM with ``eta = 0`` draws none).

**A method** (``method=``): None (vanilla), an :class:`~ebca_viz.EBCAConfig` (EBCU / EBCQ through
:func:`ebca_viz.energy_attention`), an :class:`~ebca_viz.SEGConfig` (:func:`ebca_viz.smoothed_energy_guidance`)
or any callable ``method(pipe) -> context manager`` (e.g. Attend-and-Excite or your own installer). It is
installed per batch and removed after it, also when sampling raises.

    images = sample(pipe, ["a red circle and a blue square"] * 4, [0, 1, 2, 3], method=EBCAConfig(...),
                    steps=25, guidance=3.0)            # (4, H, W, 3) uint8
    verdicts = score(images, [(("red", "circle"), ("blue", "square"))] * 4)
"""
from __future__ import annotations

import contextlib
from typing import Callable, Optional, Sequence

import numpy as np
import torch

from .errors import InvalidSetting, InvalidType


def latent_shape(pipe, height: Optional[int] = None, width: Optional[int] = None) -> tuple:
    """``(C, h, w)`` of the pipeline's initial latents for an image of ``height x width`` pixels
    (default: the denoiser's ``sample_size`` times the VAE factor ``f = 2 ** (len(vae blocks) - 1)``)."""
    f = 2 ** (len(pipe.vae.config.block_out_channels) - 1)
    hw = int(pipe.unet.config.sample_size)
    h = hw if height is None else int(height) // f
    w = hw if width is None else int(width) // f
    return int(pipe.unet.config.in_channels), h, w


def initial_latents(seeds: Sequence[int], shape: Sequence[int]) -> torch.Tensor:
    """``(len(seeds), *shape)`` float32 standard normal latents, one CPU generator per seed (the seed
    rule above: batch-independent)."""
    return torch.stack([torch.randn(tuple(shape), generator=torch.Generator().manual_seed(int(s))) for s in seeds])


def _text(param: str, value, fix: str, why: str) -> str:
    """An error message in the vocabulary's form: ``"param=value: why; fix: fix"``."""
    return str(InvalidSetting.of(param, value, fix, why))


def _check(prompts, seeds, latents, steps, batch, negative_prompts) -> None:
    if isinstance(prompts, str):
        raise InvalidType(_text("prompts", prompts, "write [prompt] * n", "a list of strings (one per image) is needed"))
    n = len(prompts)
    if n < 1:
        raise InvalidSetting(_text("prompts", prompts, "give at least one prompt", "it is empty"))
    if seeds is None and latents is None:
        raise InvalidSetting(_text("seeds", seeds, "give one seed per prompt (or latents=)", "no seeds and no latents"))
    if seeds is not None and len(seeds) != n:
        raise InvalidSetting(_text("seeds", seeds, "give one seed per prompt", f"{len(seeds)} seeds for {n} prompts"))
    if latents is not None and latents.shape[0] != n:
        raise InvalidSetting(_text("latents", latents, "give one per prompt", f"{latents.shape[0]} latents for {n} prompts"))
    if negative_prompts is not None and len(negative_prompts) != n:
        raise InvalidSetting(_text("negative_prompts", negative_prompts, "give one per prompt",
                                f"{len(negative_prompts)} for {n} prompts"))
    for name, v in (("steps", steps), ("batch", batch)):
        if isinstance(v, bool) or not isinstance(v, int) or v < 1:
            raise InvalidSetting(_text(name, v, f"pass an int >= 1, e.g. {name}=4", "must be an int >= 1"))


@contextlib.contextmanager
def installed(pipe, method=None, observers: Sequence = ()):
    """Install ``method`` (see the module docstring) on ``pipe`` for the ``with`` block; yields what the
    installer yields (the EBCA controller for an :class:`~ebca_viz.EBCAConfig`). ``observers`` subscribe
    to the EBCA controller (refused for any other method)."""
    from .config import EBCAConfig, SEGConfig

    if observers and not isinstance(method, EBCAConfig):
        raise InvalidSetting(_text("observers", list(observers), "pass method=EBCAConfig(...) as well",
                                "observers subscribe to the EBCA controller"))
    if method is None:
        cm = contextlib.nullcontext()
    elif isinstance(method, EBCAConfig):
        from .ebca import energy_attention

        cm = energy_attention(pipe, method)
    elif isinstance(method, SEGConfig):
        from .seg import smoothed_energy_guidance

        cm = smoothed_energy_guidance(pipe, method)
    elif callable(method):
        cm = method(pipe)
    else:
        raise InvalidType(_text("method", method, "pass None, an EBCAConfig, a SEGConfig or a callable pipe -> context "
                             "manager", "not a method"))
    with cm as ctl:
        if observers:
            ctl.observers.extend(observers)
        yield ctl


def sample(pipe, prompts: Sequence[str], seeds: Optional[Sequence[int]] = None, *, method=None, steps: int = 25,
           guidance: float = 3.0, batch: int = 64, latents: Optional[torch.Tensor] = None,
           negative_prompts: Optional[Sequence[str]] = None, height: Optional[int] = None,
           width: Optional[int] = None, observers: Sequence = (), trace=None,
           on_step: Optional[Callable[[int, int], None]] = None, progress: bool = False, **pipe_kwargs):
    """Images ``(N, H, W, 3) uint8`` for ``N = len(prompts)``: prompt ``k`` from seed ``seeds[k]``.

    Args:
        pipe: a diffusers text-to-image pipeline (Stable Diffusion family), on its device.
        prompts: ``N`` strings; seeds: ``N`` ints (the seed rule of :func:`initial_latents`).
        method: None, an ``EBCAConfig``, a ``SEGConfig`` or ``method(pipe) -> context manager``
            (:func:`installed`); observers: subscribed to the EBCA controller.
        steps / guidance: sampling steps and the CFG scale.
        batch: images per pipeline call (the latents do not depend on it).
        latents: ``(N, C, h, w)`` initial latents instead of the seed rule's (e.g. inverted ones);
            seeds may then be None.
        negative_prompts: ``N`` strings for CFG's unconditional branch (default: the empty prompt).
        height / width: pixels (default: the model's size).
        trace: None, or the ``quantities`` of :func:`ebca_viz.trace` (``True``: its default): then the
            return value is ``(images, traces)`` with one :class:`~ebca_viz.tracing.Trace` per batch.
        on_step: ``on_step(done, total)`` after every denoising step, counted over all batches
            (``total = steps * number of batches``); an exception raised in it stops sampling (a cancel
            button) with every hook and processor removed.
        progress: a tqdm bar over the batches.
        pipe_kwargs: passed to every ``pipe(...)`` call.

    Each image is ``rint(255 * x)`` of the pipeline's ``output_type="np"`` output ``x`` in [0, 1]
    (what diffusers' own PIL conversion gives).
    """
    _check(prompts, seeds, latents, steps, batch, negative_prompts)
    n = len(prompts)
    shape = latent_shape(pipe, height, width) if latents is None else tuple(latents.shape[1:])
    f = 2 ** (len(pipe.vae.config.block_out_channels) - 1)
    size = dict(height=shape[1] * f, width=shape[2] * f)
    starts = list(range(0, n, batch))
    total = steps * len(starts)
    it = starts
    if progress:
        from tqdm.auto import tqdm

        it = tqdm(starts, desc=f"{n} images", leave=False)
    images, traces = [], []
    for b, i in enumerate(it):
        sl = slice(i, i + batch)
        gens = None if seeds is None else [torch.Generator().manual_seed(int(s)) for s in seeds[sl]]
        if latents is None:
            lat = torch.stack([torch.randn(shape, generator=g) for g in gens])  # = initial_latents(seeds[sl], shape)
        else:
            lat = latents[sl]
        kw = dict(pipe_kwargs)
        if gens is not None:
            kw["generator"] = gens
        if negative_prompts is not None:
            kw["negative_prompt"] = list(negative_prompts[sl])
        if on_step is not None:
            def cb(p, k, t, cb_kw, done=b * steps):
                on_step(done + k + 1, total)
                return cb_kw

            kw["callback_on_step_end"] = cb
        with contextlib.ExitStack() as stack:
            if trace is not None:
                from .tracing import trace as record

                traces.append(stack.enter_context(record(pipe, quantities=None if trace is True else trace)))
            stack.enter_context(installed(pipe, method, observers))
            stack.enter_context(torch.no_grad())
            im = pipe(list(prompts[sl]), latents=lat.to(pipe.device, pipe.unet.dtype), num_inference_steps=steps,
                      guidance_scale=guidance, output_type="np", **size, **kw).images
        images.append(np.clip(np.rint(im * 255), 0, 255).astype(np.uint8))
    images = np.concatenate(images)
    return (images, traces) if trace is not None else images


def _request(item) -> tuple:
    """An item as a request: ``(c, s)`` or ``((c, s),)`` -> one object; ``((c1, s1), (c2, s2))`` -> two."""
    item = tuple(item)
    if len(item) == 2 and all(isinstance(x, str) for x in item):
        return (item,)
    if len(item) in (1, 2) and all(len(x) == 2 and all(isinstance(y, str) for y in x) for x in item):
        return tuple(tuple(x) for x in item)
    raise InvalidSetting(_text("items", item, "write (colour, shape) or ((colour, shape), (colour, shape))",
                            "not a shapes-world request"))


def score(images, items) -> list:
    """The shapes-world detector's verdict per image: ``items[k]`` is what image ``k``'s prompt asked
    for, ``(colour, shape)`` (one object, :func:`~ebca_viz.shapes.detect.score_single`) or
    ``((c1, s1), (c2, s2))`` (two, :func:`~ebca_viz.shapes.detect.score_pair`). ``images``:
    ``(N, H, W, 3) uint8`` (or N such arrays). Returns ``N`` dicts, each with ``category``."""
    from .shapes.detect import detect, score_pair, score_single

    if len(images) != len(items):
        raise InvalidSetting(_text("items", items, "give one item per image", f"{len(items)} items for {len(images)} images"))
    out = []
    for im, it in zip(images, items):
        req = _request(it)
        found = detect(np.asarray(im))
        out.append(score_single(req[0], found) if len(req) == 1 else score_pair(req, found))
    return out


__all__ = ["latent_shape", "initial_latents", "installed", "sample", "score"]
