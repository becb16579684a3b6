r"""What notebooks need besides figures: pick a model, sample under a trace, read one layer.

* :func:`load_model` -- ``(pipe, name)``: the shipped shapes-world model offline, ``"sd15"`` & co. with weights;
* :func:`sample_traced` -- the one "sample a prompt from a seed under a trace" helper (optionally
  with EBCA or SEG installed): ``(image, trace, seconds)``;
* :func:`capture_attention` -- the tensors one cross-attention layer saw at one step;
* :func:`setup` / :func:`finish` -- the first and last cell of every notebook: load the model named by
  ``MODEL`` (``EBCA_VIZ_MODEL`` wins), read its regime, time every cell; at the end print the table of
  the notebook's checks and its cell times.

Fast mode (``EBCA_VIZ_FAST=1``: fewer steps and samples, ``steps = pick(25, 4)``) is
:mod:`ebca_viz.util`. The figures themselves are in :mod:`ebca_viz.plots`; they take what these return.
"""
from __future__ import annotations

import os
import time
from dataclasses import dataclass
from typing import Any, Optional, Sequence

import torch

from .util import default_device, fast_mode, pick
from .errors import InvalidSetting


def default_model() -> str:
    """``"shapes-world"`` when its weights ship with this copy, else ``"tiny"``."""
    try:
        from .models.shapes_world import weights_available
    except ImportError:
        return "tiny"
    return "shapes-world" if weights_available() else "tiny"


def load_model(name: str = "shapes-world", device: Optional[str] = None, verbose: bool = True):
    """``(pipe, name)`` for the notebooks: ``"shapes-world"`` (or ``"auto"``) falls back to the random
    ``"tiny"`` model when the shapes-world weights are not in this copy
    (:func:`default_model`); any other name goes to
    :func:`ebca_viz.models.load_pipeline` (``"sd15"`` needs its weights on disk). GPU when visible."""
    # quiet transformers' import-time notices (e.g. "requires torchvision") unless the user chose a level
    os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
    from .models import load_pipeline

    if name in ("auto", "shapes-world"):
        name = default_model()
        if name != "shapes-world" and verbose:
            print("shapes-world weights are not in this copy: using the random-weight 'tiny' model "
                  "(every code path runs, the pictures are noise)")
    if name == "neglect-world-dit":
        from .models.worlds import shipped_worlds

        if name not in shipped_worlds():
            name = "tiny-pixart"
            if verbose:
                print("neglect-world-dit weights are not in this copy: using the random-weight 'tiny-pixart' model "
                      "(every code path runs, the pictures are noise)")
    device = device or default_device()
    pipe = load_pipeline(name, device=device)
    pipe.set_progress_bar_config(disable=True)
    if verbose:
        if getattr(pipe, "unet", None) is None:
            from .adapters import adapter_for

            ad = adapter_for(pipe)
            print(f"model {name!r} on {device}: {type(ad.model).__name__} with {len(ad.text_layers())} "
                  "attention layers that see text")
        else:
            print(f"model {name!r} on {device}: UNet with {len(_cross_keys(pipe))} cross-attention layers")
    return pipe, name


def lesson_kind(pipe) -> str:
    """:func:`ebca_viz.models.model_kind`, except that a PixArt pipeline with the toy worlds' VAE drawing 32 x 32
    images (the DiT world of :mod:`ebca_viz.shapes.train_dit`, whatever folder it was loaded from; its tokenizer
    may be the package's T5 one, so ``model_kind`` can say ``"tiny-pixart"``) is ``"neglect-world-dit"``."""
    import json

    from .models import model_kind
    from .models.worlds import WEIGHTS_ROOT

    kind = model_kind(pipe)
    if kind in ("pixart", "tiny-pixart"):
        f = 2 ** (len(pipe.vae.config.block_out_channels) - 1)
        ref = WEIGHTS_ROOT / "neglect_world" / "vae" / "config.json"
        vae = json.loads(ref.read_text()) if ref.is_file() else {}
        same_vae = bool(vae) and all(list(vae.get(k) or []) == list(pipe.vae.config.get(k) or [])
                                     for k in ("block_out_channels", "down_block_types"))
        if same_vae and int(pipe.transformer.config.sample_size) * f == 32:
            return "neglect-world-dit"
    return kind


def _cross_keys(pipe):
    from .attach import cross_attention_keys

    return cross_attention_keys(pipe.unet)


def capture_attention(pipe, prompt: str, step: int = 0, layer: int = 0, seed: int = 0, num_inference_steps: int = 4,
                      guidance_scale: float = 7.5) -> dict:
    """What one cross-attention layer saw at one sampling step of a plain run (conditional half, image 0).

    Returns a dict: ``q (1, H, P, d)``, ``k (1, H, N, d)``, ``context (1, N, D)``, ``w_k (H d, D)``
    (``attn.to_k.weight``), ``scale`` (beta), ``heads``, ``grid (h, w)``, ``name``; all fp32, detached.
    """
    from .config import EBCAConfig
    from .ebca import energy_attention

    got = {}

    class _Grab:
        def on_cross_attention(self, ev):
            if ev.step == step and ev.layer == layer and not got:
                n = ev.n_uncond
                got.update(q=ev.query[n:n + 1].detach().float().clone(), k=ev.key[n:n + 1].detach().float().clone(),
                           context=ev.context_in[n:n + 1].detach().float().clone(),
                           w_k=ev.attn.to_k.weight.detach().float().clone(), scale=float(ev.attn.scale),
                           heads=int(ev.attn.heads), grid=tuple(ev.grid), name=ev.name)

    g = torch.Generator("cpu").manual_seed(seed)
    with energy_attention(pipe, EBCAConfig()) as ctl, torch.no_grad():
        ctl.observers.append(_Grab())
        pipe(prompt, num_inference_steps=max(num_inference_steps, step + 1), guidance_scale=guidance_scale, generator=g)
    if not got:
        n_layers = len(_cross_keys(pipe))
        raise InvalidSetting(f"layer {layer} / step {step} was not reached (the UNet has {n_layers} layers); "
                             f"fix: pass layer in 0..{n_layers - 1} and step >= 0")
    return got


@dataclass
class Sampled:
    """One traced sampling run: the image, the :class:`~ebca_viz.tracing.Trace`, wall seconds."""

    image: Any
    trace: Any
    seconds: float

    def __iter__(self):  # image, tr, seconds = sample_traced(...)
        return iter((self.image, self.trace, self.seconds))


def sample_traced(pipe, prompt: str, seed: int = 0, steps: int = 25, guidance_scale: float = 7.5, ebca=None,
                  seg=None, quantities: Optional[Sequence[str]] = None, observers: Sequence = (),
                  **pipe_kwargs) -> Sampled:
    """Sample ``prompt`` from ``seed`` while :func:`ebca_viz.trace` records: one
    :func:`ebca_viz.sampling.sample` call (its seed rule; the image is a PIL image).

    ``ebca``: an :class:`~ebca_viz.EBCAConfig` to sample with energy attention (its controller gets
    ``observers``); ``seg``: an :class:`~ebca_viz.SEGConfig` for smoothed energy guidance; neither:
    vanilla. ``quantities`` as in :func:`ebca_viz.trace`; other keywords (``latents``, ``height``,
    ``width``, ``negative_prompts`` or any pipeline argument) go to :func:`~ebca_viz.sampling.sample`.
    """
    from PIL import Image

    from .sampling import sample

    if ebca is not None and seg is not None:
        raise InvalidSetting("sample_traced: pass ebca= or seg=, not both (EBCA and SEG in one run are not supported)")
    from .models import model_kind

    if model_kind(pipe) == "shapes-world":  # a shipped world (shapes / neglect): refuse words it never saw
        from .shapes.vocabulary import check_prompt

        check_prompt("shapes-world", prompt)
    if observers and ebca is None:
        raise InvalidSetting("sample_traced: observers= subscribe to the EBCA controller; pass ebca= as well")
    t0 = time.perf_counter()
    images, traces = sample(pipe, [prompt], [seed], method=ebca if ebca is not None else seg, observers=observers,
                            steps=steps, guidance=guidance_scale, trace=True if quantities is None else quantities,
                            **pipe_kwargs)
    return Sampled(Image.fromarray(images[0]), traces[0], time.perf_counter() - t0)


@dataclass
class Lesson:
    """What a notebook's setup cell hands to the rest of the notebook.

    ``pipe`` the loaded pipeline; ``model`` its name; ``kind`` (:func:`ebca_viz.models.model_kind`:
    ``"shapes-world"``, ``"tiny*"``, ``"sd"`` or a DiT's (:func:`lesson_kind`), read from the pipeline, never from the name);
    ``real`` (a Stable Diffusion checkpoint); ``regime`` (:func:`ebca_viz.shapes.regime.regime_for`:
    this model's own settings); ``steps`` / ``cfg`` (sampling steps for this mode, guidance scale)."""

    pipe: Any
    model: str
    kind: str
    real: bool
    regime: Any
    steps: int
    cfg: float

    def __iter__(self):  # pipe, MODEL, KIND, REAL, R, STEPS, CFG = setup(MODEL)
        return iter((self.pipe, self.model, self.kind, self.real, self.regime, self.steps, self.cfg))


class CellTimer:
    """Wall time of every executed cell (IPython's ``pre_run_cell`` / ``post_run_cell`` events)."""

    def __init__(self):
        self.times: list = []  # [(execution_count or index, seconds, first line of the cell)]
        self._t0 = None
        self._first = ""

    def pre(self, info=None):
        self._t0 = time.perf_counter()
        src = getattr(info, "raw_cell", "") or ""
        self._first = next((ln.strip() for ln in src.splitlines() if ln.strip()), "")[:60]

    def post(self, result=None):
        if self._t0 is not None:
            self.times.append((len(self.times) + 1, time.perf_counter() - self._t0, self._first))
            self._t0 = None

    @property
    def total(self) -> float:
        return float(sum(t for _, t, _ in self.times))


_TIMER: Optional[CellTimer] = None

#: width of JupyterLab's output area in a 1280 px window with the file browser open (CSS px); a wider
#: figure is shrunk to it, and its text with it
CONTAINER_PX = 850
#: the smallest text a figure may show, in points at its displayed size
MIN_DISPLAY_PT = 9.0
#: one :class:`FigureAudit` per figure displayed since :func:`setup`
FIGURES: list = []


@dataclass
class FigureAudit:
    """What a reader sees of one displayed figure: its width in CSS px and its smallest text in points
    at the displayed size (``font pt * dpi / 96 * min(1, CONTAINER_PX / width_px)``)."""

    index: int
    width_px: float
    min_pt: float
    smallest: str  # the smallest text itself (to find it)

    @property
    def ok(self) -> bool:
        return self.min_pt >= MIN_DISPLAY_PT


def text_audit(fig, container_px: float = CONTAINER_PX, index: int = 0) -> FigureAudit:
    """Smallest visible text of a matplotlib figure at its displayed size (see :class:`FigureAudit`)."""
    dpi = float(fig.dpi)
    width_px = float(fig.get_figwidth()) * dpi
    scale = min(1.0, container_px / width_px) if width_px > 0 else 1.0
    best, which = float("inf"), ""
    for t in fig.findobj(lambda a: hasattr(a, "get_text") and hasattr(a, "get_fontsize")):
        if not t.get_visible() or not str(t.get_text()).strip():
            continue
        pt = float(t.get_fontsize()) * dpi / 96.0 * scale
        if pt < best:
            best, which = pt, str(t.get_text())[:40]
    return FigureAudit(index, width_px, best if best < float("inf") else float("nan"), which)


def _watch_figures(ip) -> None:
    """Audit every figure IPython turns into a PNG (IPython's formatter extension point, ``for_type``)."""
    import matplotlib.pyplot as plt
    from matplotlib.figure import Figure

    plt.close(plt.figure())  # loads the inline backend, which registers its PNG formatter, before we wrap it

    fmt = ip.display_formatter.formatters["image/png"]
    try:
        orig = fmt.lookup_by_type(Figure)
    except KeyError:
        return
    orig = getattr(orig, "_ebca_orig", orig)

    def audited(fig, *args, **kwargs):
        FIGURES.append(text_audit(fig, index=len(FIGURES) + 1))
        return orig(fig, *args, **kwargs)

    audited._ebca_orig = orig
    fmt.for_type(Figure, audited)


def _ipython():
    try:
        from IPython import get_ipython
    except ImportError:
        return None
    return get_ipython()


def setup(model: str = "shapes-world", verbose: bool = True) -> Lesson:
    """The setup cell of every notebook: ``pipe, MODEL, KIND, REAL, R, STEPS, CFG = setup(MODEL)``.

    Loads ``model`` (the environment variable ``EBCA_VIZ_MODEL`` wins when set; see :func:`load_model`),
    reads the model's regime, makes passing checks quiet (they are shown as one table by
    :func:`finish`) and starts timing every cell."""
    global _TIMER
    from . import claims
    from .shapes.regime import regime_for

    model = os.environ.get("EBCA_VIZ_MODEL", model)
    claims.reset_log()
    claims.QUIET = True
    FIGURES.clear()
    ip = _ipython()
    if ip is not None:
        _watch_figures(ip)
        if _TIMER is not None:
            for ev, fn in (("pre_run_cell", _TIMER.pre), ("post_run_cell", _TIMER.post)):
                try:
                    ip.events.unregister(ev, fn)
                except ValueError:
                    pass
        _TIMER = CellTimer()
        _TIMER._t0, _TIMER._first = time.perf_counter(), "setup(MODEL)"  # this cell's post event ends it
        ip.events.register("pre_run_cell", _TIMER.pre)
        ip.events.register("post_run_cell", _TIMER.post)
    pipe, name = load_model(model, verbose=verbose)
    kind = lesson_kind(pipe)
    regime = regime_for(kind)
    steps, cfg = pick(regime.steps, regime.fast_steps), regime.guidance
    if verbose:
        print(f"model {name!r}: {kind}")
        print(f"{steps} sampling steps, CFG {cfg}{' (fast mode)' if fast_mode() else ''}")
    return Lesson(pipe, name, kind, kind == "sd", regime, steps, cfg)


def finish() -> dict:
    """The last cell of every notebook: the table of the checks that passed, and the cell times.

    Returns ``{"checks": n, "cell_seconds": [...], "total_s": ...}``."""
    from . import claims

    if FIGURES:
        small = [f for f in FIGURES if not f.ok]
        claims.check(not small, f"every figure's text is at least {MIN_DISPLAY_PT:g} pt at its displayed size "
                     f"({len(FIGURES)} figures)", *[f"figure {f.index}: {f.min_pt:.1f} pt ({f.smallest!r})" for f in small])
    print(claims.checks_table())
    times = list(_TIMER.times) if _TIMER is not None else []
    # the cell running finish() itself has not ended yet: it is not in the list
    total = float(sum(t for _, t, _ in times))
    if times:
        slow = max(times, key=lambda x: x[1])
        print(f"\ncell time: {total:.1f} s in {len(times)} cells before this one "
              f"(slowest: cell {slow[0]}, {slow[1]:.1f} s: {slow[2]!r})")
    return {"checks": len(claims.CHECK_LOG), "cell_seconds": [round(t, 2) for _, t, _ in times], "total_s": total}


__all__ = ["default_model", "load_model", "Sampled",
           "sample_traced", "capture_attention", "Lesson", "lesson_kind", "setup", "finish", "CellTimer",
           "FigureAudit", "text_audit"]
