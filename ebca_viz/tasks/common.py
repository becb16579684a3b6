"""What every task shares: the result object, input checks, seeding, and restoring the pipeline.

Every task function follows one pattern::

    check inputs (no change to the pipeline yet)
    with restored(pipe):                 # snapshot processors / hooks / scheduler, put back on exit
        with energy_attention(pipe, cfg) as ctl:     # or smoothed_energy_guidance
            ctl.observers += observers
            images = pipe(...)
    return TaskResult(images, settings, seed, info)

so a task runs *inside* whatever the caller wrapped around the pipeline (e.g. a recorder that
hooks the pipe) and leaves the pipeline exactly as it found it, also when sampling raises.
"""
from __future__ import annotations

import time

import contextlib
import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional, Sequence

import torch
from ..errors import InvalidSetting, InvalidType, MissingFile


@dataclass
class TaskResult:
    """What a task returns.

    Attributes:
        task: task name (``"multiconcept"``, ``"synedit"``, ``"realedit"``, ``"inpaint"``, ``"seg"``).
        images: list of ``PIL.Image`` (one per generated image).
        settings: every setting the run used (JSON-serialisable).
        seed: the seed of the ``torch.Generator``.
        info: what the controller reports (layers, steps, ...) and task extras (caption, timings).
        extras: non-JSON artefacts (inverted latents, source image, masks, ...).
    """

    task: str
    images: list
    settings: dict
    seed: int
    info: dict = field(default_factory=dict)
    extras: dict = field(default_factory=dict)

    @property
    def image(self):
        return self.images[0]

    def to_json(self) -> dict:
        return {"task": self.task, "seed": self.seed, "settings": jsonable(self.settings), "info": jsonable(self.info)}

    def save(self, out: str | Path, stem: Optional[str] = None) -> list[Path]:
        """Write ``{stem}.png`` (``{stem}_{i}.png`` for several images) and ``{stem}.json``."""
        out = Path(out)
        out.mkdir(parents=True, exist_ok=True)
        stem = stem or f"{self.task}_seed{self.seed}"
        paths = []
        for i, im in enumerate(self.images):
            p = out / (f"{stem}.png" if len(self.images) == 1 else f"{stem}_{i}.png")
            im.save(p)
            paths.append(p)
        for k, v in self.extras.items():
            if hasattr(v, "save") and hasattr(v, "size"):  # PIL images among the extras (source, mask)
                p = out / f"{stem}_{k}.png"
                v.save(p)
                paths.append(p)
        meta = self.to_json()
        meta["files"] = [p.name for p in paths]
        p = out / f"{stem}.json"
        p.write_text(json.dumps(meta, indent=2))
        return paths + [p]


def jsonable(x: Any):
    """Settings -> JSON (tensors become shapes, Schedules dicts, dataclasses dicts)."""
    from dataclasses import asdict, is_dataclass

    if isinstance(x, dict):
        return {str(k): jsonable(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [jsonable(v) for v in x]
    if torch.is_tensor(x):
        return {"tensor_shape": list(x.shape)} if x.numel() > 16 else x.tolist()
    if is_dataclass(x) and not isinstance(x, type):
        return jsonable({k: v for k, v in asdict(x).items() if v is not None})
    if isinstance(x, float) and not math.isfinite(x):
        return str(x)
    if isinstance(x, (str, int, float, bool)) or x is None:
        return x
    if hasattr(x, "size") and hasattr(x, "mode"):  # PIL
        return {"image_size": list(x.size), "mode": x.mode}
    return repr(x)


# ---- pipeline state ------------------------------------------------------------------------------

def _snapshot(pipe):
    unet = pipe.unet
    return dict(
        procs=dict(unet.attn_processors),
        scheduler=getattr(pipe, "scheduler", None),
    )


@contextlib.contextmanager
def restored(pipe):
    """Put the pipeline back as it was on exit (attention processors, scheduler), also when the
    block raises. Processors and hooks installed *before* (by the caller, e.g. a recorder) are
    left in place; the hooks of the energy / SEG installations are removed by their own ``with``."""
    snap = _snapshot(pipe)
    try:
        yield
    finally:
        unet = pipe.unet  # hooks: energy_attention / SEG remove their own; a caller's stay untouched
        if dict(unet.attn_processors) != snap["procs"]:
            unet.set_attn_processor(snap["procs"])
        if snap["scheduler"] is not None and pipe.scheduler is not snap["scheduler"]:
            pipe.scheduler = snap["scheduler"]


def controller_info(ctl) -> dict:
    """What an EBCA controller reports about its run."""
    if ctl is None:
        return {}
    return {
        "cross_attention_layers": len(ctl.layer_names),
        "unet_calls": ctl.step + 1,
        "num_steps": ctl.num_steps,
        "cfg": ctl.cfg_on,
        "edit_context": ctl.config.edit_context,
        "prior_form": ctl.config.prior_form,
        "update_uncond": ctl.config.update_uncond,
    }


def add_observers(ctl, observers) -> None:
    if observers is None:
        return
    if not isinstance(observers, (list, tuple)):
        observers = [observers]
    ctl.observers.extend(observers)


def sample_with_energy(pipe, cfg, observers, seed: int, prompt, **call_kwargs) -> tuple[list, dict]:
    """``pipe(prompt, generator=seed, **call_kwargs)`` with EBCA installed for the call (the
    pipeline's state restored after it, also on errors); ``(images, controller info + seconds)``."""
    from ..ebca import energy_attention

    gen = make_generator(seed, pipe.device)
    t0 = time.perf_counter()
    with restored(pipe), energy_attention(pipe, cfg) as ctl:
        add_observers(ctl, observers)
        out = pipe(prompt, generator=gen, **call_kwargs)
        info = controller_info(ctl)
    info["seconds"] = round(time.perf_counter() - t0, 3)
    return list(out.images), info


# ---- inputs ----------------------------------------------------------------------------------------

def make_generator(seed: int, device=None) -> torch.Generator:
    """A ``torch.Generator`` on the pipeline's device (CPU generator for CPU/MPS)."""
    if isinstance(seed, bool) or not isinstance(seed, int):
        raise InvalidType(f"seed must be an int, got {type(seed).__name__} {seed!r}")
    dev = torch.device(device) if device is not None else torch.device("cpu")
    return torch.Generator("cuda" if dev.type == "cuda" else "cpu").manual_seed(seed)


def check_prompt(prompt, name: str = "prompt") -> str:
    if not isinstance(prompt, str):
        raise InvalidType(f"{name} must be a string, got {type(prompt).__name__}")
    return prompt


def check_steps(n, name: str = "num_inference_steps") -> int:
    if isinstance(n, bool) or not isinstance(n, int) or n < 1:
        raise InvalidSetting(f"{name} must be a positive int, got {n!r}")
    return n


def default_size(pipe) -> int:
    """Default image side of a pipeline: ``unet.sample_size * vae_scale_factor`` (512 for SD 1.5)."""
    return int(pipe.unet.config.sample_size) * int(getattr(pipe, "vae_scale_factor", 8))


def check_size(pipe, height, width, *, square: bool = False) -> tuple[int, int]:
    s = default_size(pipe)
    h = s if height is None else height
    w = s if width is None else width
    f = int(getattr(pipe, "vae_scale_factor", 8))
    for nm, v in (("height", h), ("width", w)):
        if isinstance(v, bool) or not isinstance(v, int) or v < f or v % f:
            raise InvalidSetting(f"{nm} must be a positive multiple of the VAE factor {f}, got {v!r}")
    if square and h != w:
        raise InvalidSetting(
            f"height/width: SEG blurs square latent grids only, got height={h}, width={w}: "
            f"pass height == width (e.g. {max(h, w)})"
        )
    return h, w


def load_rgb(image, name: str = "image"):
    """A PIL RGB image from a PIL image or a file path.

    A path is opened and converted to RGB (as the published scripts do); a PIL image must
    already be RGB (``image.convert("RGB")``), anything else is a ``TypeError``.
    """
    from PIL import Image

    if isinstance(image, (str, Path)):
        p = Path(image).expanduser()
        if not p.exists():
            raise MissingFile(f"{name}: no such file {str(p)!r}; fix: give the path of an image file (PNG, JPEG, ...)")
        if p.is_dir():
            raise InvalidSetting(f"{name}: {str(p)!r} is a directory; give an image file (PNG, JPEG, ...)")
        from PIL import UnidentifiedImageError

        try:
            return Image.open(p).convert("RGB")
        except (UnidentifiedImageError, OSError) as e:
            raise InvalidSetting(f"{name}: {str(p)!r} is not an image file PIL can read ({type(e).__name__}); "
                                 "fix: convert it to PNG or JPEG") from None
    if not isinstance(image, Image.Image):
        raise InvalidType(
            f"{name} must be a PIL.Image.Image in RGB mode or a file path, got {type(image).__name__}; "
            "for an array use PIL.Image.fromarray(array).convert('RGB')"
        )
    if image.mode != "RGB":
        raise InvalidSetting(f"{name} must be an RGB image, got mode {image.mode!r}: pass {name}.convert('RGB')")
    return image


def check_out_dir(path, name: str = "--out") -> Path:
    """Create the output folder now and prove it is writable, before any sampling (a clear error for a
    path under a file or in a read-only place)."""
    import os
    import tempfile

    p = Path(path).expanduser()
    try:
        p.mkdir(parents=True, exist_ok=True)
        fd, probe = tempfile.mkstemp(dir=p, prefix=".write-test-")
        os.close(fd)
        os.unlink(probe)
    except OSError as e:
        raise InvalidSetting(f"{name}: cannot write to {str(p)!r} ({type(e).__name__}: {e.strerror or e}); "
                         "choose a writable folder") from None
    return p


def sample_image():
    """A photo that ships with an installed package, for offline demos: scikit-image's cat
    (``skimage.data.chelsea()``) when scikit-image is installed, else matplotlib's
    ``grace_hopper.jpg`` (no extra dependency). Returns ``(PIL RGB image, name)``."""
    from PIL import Image

    try:
        from skimage import data as skdata  # optional

        return Image.fromarray(skdata.chelsea()).convert("RGB"), "skimage.data.chelsea"
    except ImportError:
        pass
    from matplotlib import cbook

    with cbook.get_sample_data("grace_hopper.jpg") as f:
        return Image.open(f).convert("RGB"), "matplotlib grace_hopper.jpg"


def center_crop_square(image):
    w, h = image.size
    s = min(w, h)
    return image.crop(((w - s) // 2, (h - s) // 2, (w - s) // 2 + s, (h - s) // 2 + s))


def edits_from_lists(prompts: Sequence[str], directions=None, alphas=None, starts=None,
                     gamma_attn=None, gamma_norm=None, gamma_starts=None) -> list:
    """Parallel lists (the published scripts' ``--editing_prompt --editing_direction --alpha
    --alpha_tau --gamma_attn_compose --gamma_norm_compose --gamma_tau``) -> ``[Edit, ...]``.

    ``directions``: ``+1``/``-1`` (or ``"+"``/``"-"``; the published ``0`` means negation).
    ``starts``: start fraction of ``alpha``; ``gamma_starts``: of the editorial gammas
    (default: the same as ``starts``). Each list must have one entry per prompt (or be None).
    """
    from ..config import Edit
    from ..schedule import Schedule

    if isinstance(prompts, str):
        prompts = [prompts]
    n = len(prompts)
    lists = dict(directions=directions, alphas=alphas, starts=starts, gamma_attn=gamma_attn,
                 gamma_norm=gamma_norm, gamma_starts=gamma_starts)
    defaults = dict(directions=1, alphas=1.0, starts=0.0, gamma_attn=0.0, gamma_norm=0.0, gamma_starts=None)
    cols = {}
    for k, v in lists.items():
        if v is None:
            cols[k] = [defaults[k]] * n
        else:
            v = [v] if isinstance(v, (int, float, str)) else list(v)
            if len(v) != n:
                raise InvalidSetting(
                    f"edit lists: {n} editing prompt(s) but {len(v)} value(s) in {k}: give one value of {k} per editing prompt"
                )
            cols[k] = v
    out = []
    for i in range(n):
        d = cols["directions"][i]
        d = -1 if d in (0, "0") else d
        ga, gn, gs = cols["gamma_attn"][i], cols["gamma_norm"][i], cols["gamma_starts"][i]
        start = float(cols["starts"][i])
        if gs is not None and float(gs) != start:  # gammas on their own window (e.g. the AFHQ example)
            ga, gn = Schedule.window(float(ga), start=float(gs)), Schedule.window(float(gn), start=float(gs))
        out.append(Edit(prompt=prompts[i], direction=d, alpha=cols["alphas"][i], start=start,
                        gamma_attn=ga, gamma_norm=gn))
    return out
