r"""Real-image editing on the shapes world, measured: DDIM inversion, reconstruction, and the EBCQ edit.

Every "photo" is a shapes-world scene with known ground truth (:mod:`ebca_viz.shapes.world`) that
contains a red circle, alone or next to a green / yellow object. For each scene ``x``:

1. **Inversion** (:func:`~ebca_viz.tasks.inversion.ddim_invert`, pix2pix-zero style, no CFG, the
   caption ``c`` as context): ``z_0 = s_vae E(x)`` -> ``z_T``, the noise prediction regularised at
   every step by the auto-correlation and KL penalties (:class:`InversionSetting`).
2. **Reconstruction**: DDIM sampling from ``z_T`` with ``prompt = negative prompt = c`` and no edit.
   Both CFG halves then see the same context, so ``eps_u + w (eps_c - eps_u) = eps_c`` for any CFG
   ``w``: the reconstruction is the deterministic DDIM trajectory run backwards. It is compared to
   the input (mean |difference| in [0, 255], PSNR) and to the floor no inversion can beat, the
   VAE's own round trip ``D(z_0)`` of the same ``z_0``; the detector says whether the regenerated
   scene has the input's ground-truth objects.
3. **Edit** (EBCQ, :mod:`ebca_viz.ebca`) from the same ``z_T``, e.g. ``+"a blue circle"``,
   ``-"a red circle"``: in the conditional half of CFG every cross-attention output becomes
   ``O = (O_c + alpha_+ O_+ - alpha_- O_-) / (1 + alpha_+ - alpha_-)`` after the start fraction;
   the unconditional half pairs ``c`` with every edit, i.e. stays ``O_c``. So here CFG scales the
   edit alone: ``eps = eps_c + w (eps_edit - eps_c)``. The detector finds the object at the red
   circle's place (best bbox IoU): the colour must be blue, the shape a circle, the box IoU >= 0.5,
   no red circle left, and the other object (two-object scenes) kept.

Statistics of ``z_T`` per image: mean, std and the lag-1 spatial auto-correlation (mean of the
horizontal and vertical neighbour correlations per channel). All rates are Wilson 95 % intervals,
all means t intervals, differences between settings paired over the same scenes
(:mod:`ebca_viz.claims`).
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field, replace
from typing import Optional, Sequence

import numpy as np
import torch

from .. import claims
from ..shapes import world
from ..shapes.benchmark import same_scene
from ..shapes.detect import _iou, detect
from . import shipped
from ..errors import InvalidSetting

TARGET = ("red", "circle")
EDITED = ("blue", "circle")
OTHER_COLOURS = ("green", "yellow")


# ---- settings -----------------------------------------------------------------------------------

@dataclass(frozen=True)
class InversionSetting:
    """The knobs of :func:`~ebca_viz.tasks.inversion.ddim_invert` (pix2pix-zero's defaults).

    ``steps = None``: as many inversion steps as sampling steps (the published code)."""

    name: str = "pix2pix-zero"
    lambda_autocorr: float = 20.0
    lambda_kl: float = 20.0
    num_reg_steps: int = 5
    num_autocorr_rolls: int = 5
    min_shift: int = 0
    posterior: str = "sample"

    def kwargs(self) -> dict:
        return dict(lambda_autocorr=self.lambda_autocorr, lambda_kl=self.lambda_kl, num_reg_steps=self.num_reg_steps,
                    num_autocorr_rolls=self.num_autocorr_rolls, min_shift=self.min_shift, posterior=self.posterior)

    def to_json(self) -> dict:
        return dict(name=self.name, **self.kwargs())


PIX2PIX_ZERO = InversionSetting()
NO_REG = InversionSetting("no regularisation", lambda_autocorr=0.0, lambda_kl=0.0)


@dataclass(frozen=True)
class EditSetting:
    """The EBCQ edit ``+positive`` (weight ``alpha``), optionally ``-negative`` (``alpha_neg``), from ``start``."""

    positive: str = "a blue circle"
    negative: Optional[str] = "a red circle"
    alpha: float = 0.75
    alpha_neg: float = 0.65
    start: float = 0.5

    @property
    def name(self) -> str:
        s = f"+'{self.positive}' {self.alpha:g}"
        if self.negative:
            s += f", -'{self.negative}' {self.alpha_neg:g}"
        return s + f", start {self.start:g}"

    def edits(self) -> list:
        from ..config import Edit

        out = [Edit(prompt=self.positive, alpha=self.alpha, direction=+1, start=self.start)]
        if self.negative:
            out.append(Edit(prompt=self.negative, alpha=self.alpha_neg, direction=-1, start=self.start))
        return out

    def positive_only(self) -> "EditSetting":
        return replace(self, negative=None)

    def to_json(self) -> dict:
        return dict(positive=self.positive, negative=self.negative, alpha=self.alpha, alpha_neg=self.alpha_neg,
                    start=self.start)


PAPER_EDIT = EditSetting()  # the paper's cat -> dog weights (0.75 / 0.65, start 0.5) on red -> blue


# ---- scenes -------------------------------------------------------------------------------------

def edit_scenes(n: int, seed: int = 0, size: int = world.IMAGE_SIZE) -> list:
    """``n`` scenes that contain a red circle: even indices alone, odd ones next to a green or yellow
    circle / square / triangle (caption order random). Deterministic from ``seed``."""
    if n < 1:
        raise InvalidSetting(f"n must be >= 1 scenes, got {n}")
    rng = np.random.default_rng(seed)
    out = []
    for k in range(n):
        pairs = [TARGET]
        if k % 2:
            other = (OTHER_COLOURS[int(rng.integers(2))], world.SHAPES[int(rng.integers(3))])
            pairs = [TARGET, other] if rng.random() < 0.5 else [other, TARGET]
        out.append(world.make_scene(rng, pairs=pairs, size=size))
    return out


def _pil(scenes):
    from PIL import Image

    return [Image.fromarray(s.image) for s in scenes]


# ---- the three operations -----------------------------------------------------------------------

def invert(pipe, scenes, setting: InversionSetting = PIX2PIX_ZERO, steps: int = 25, seed: int = 0) -> torch.Tensor:
    """``z_T (B, 4, h, w)`` of the scenes (batched :func:`~ebca_viz.tasks.inversion.ddim_invert`)."""
    from ..tasks.inversion import ddim_invert

    return ddim_invert(pipe, _pil(scenes), [s.caption for s in scenes], num_inference_steps=steps,
                       generator=torch.Generator().manual_seed(seed), **setting.kwargs())


@torch.no_grad()
def vae_roundtrip(pipe, scenes, setting: InversionSetting = PIX2PIX_ZERO, seed: int = 0) -> np.ndarray:
    """``D(z_0)`` of the very ``z_0`` the inversion starts from (same posterior sample): ``(B, H, W, 3) uint8``."""
    from ..tasks.inversion import encode_image

    size = scenes[0].image.shape[0]
    gen = torch.Generator().manual_seed(seed) if setting.posterior == "sample" else None
    z0 = encode_image(pipe, _pil(scenes), size, size, gen)
    return world.from_tensor(pipe.vae.decode(z0 / pipe.vae.config.scaling_factor).sample)


@torch.no_grad()
def regenerate(pipe, z_T: torch.Tensor, captions: Sequence[str], steps: int = 25, guidance: float = 3.0,
               edit: Optional[EditSetting] = None, batch: int = 64) -> np.ndarray:
    """DDIM sampling from ``z_T`` with prompt = negative prompt = caption, under the edit's EBCQ if
    given: ``(B, H, W, 3) uint8``. The pipeline's scheduler is DDIM during the call and restored."""
    from diffusers import DDIMScheduler

    from ..config import EBCAConfig
    from ..sampling import sample
    from ..tasks.common import restored

    if len(captions) != z_T.shape[0]:
        raise InvalidSetting(f"captions: {len(captions)} captions for {z_T.shape[0]} latents; "
                             f"fix: pass one caption per latent of z_T ({z_T.shape[0]})")
    with restored(pipe):
        pipe.scheduler = DDIMScheduler.from_config(pipe.scheduler.config)
        return sample(pipe, list(captions), latents=z_T, negative_prompts=list(captions), steps=steps,
                      guidance=guidance, batch=batch, method=EBCAConfig(edits=edit.edits()) if edit is not None else None)


# ---- metrics ------------------------------------------------------------------------------------

def latent_stats(z: torch.Tensor) -> dict:
    """Per image of ``z (B, C, h, w)``: ``mean``, ``std`` and ``lag1`` (the lag-1 spatial
    auto-correlation ``corr(z[y, x], z[y, x+1])`` and ``corr(z[y, x], z[y+1, x])`` per channel,
    averaged), each a ``(B,)`` array. White noise: 0, 1, 0."""
    z = z.detach().float().cpu()
    b = z.shape[0]
    flat = z.reshape(b, -1)

    def corr(a, c):
        a = a - a.mean(dim=(2, 3), keepdim=True)
        c = c - c.mean(dim=(2, 3), keepdim=True)
        return (a * c).mean(dim=(2, 3)) / (a.std(dim=(2, 3), unbiased=False) * c.std(dim=(2, 3), unbiased=False) + 1e-8)

    lag = 0.5 * (corr(z[..., :, :-1], z[..., :, 1:]) + corr(z[..., :-1, :], z[..., 1:, :]))  # (B, C)
    return dict(mean=flat.mean(1).numpy(), std=flat.std(1).numpy(), lag1=lag.mean(1).numpy())


def pixel_error(a: np.ndarray, b: np.ndarray) -> dict:
    """Per image ``(B,)``: mean |a - b| in [0, 255] and PSNR in dB (peak 255, capped at 60 dB)."""
    d = a.astype(np.float64) - b.astype(np.float64)
    mae = np.abs(d).mean(axis=(1, 2, 3))
    mse = (d ** 2).mean(axis=(1, 2, 3))
    psnr = np.minimum(10 * np.log10(255.0 ** 2 / np.maximum(mse, 1e-12)), 60.0)
    return dict(mae=mae, psnr=psnr)


def verdict(image) -> str:
    """Short detector verdict for a title: ``"red circle + green square"`` or ``"nothing"``."""
    found = detect(image)
    return " + ".join(f"{d.colour} {d.shape}" for d in found) if found else "nothing"


def _target(scene):
    return next(o for o in scene.objects if (o.colour, o.shape) == TARGET)


def _centre(b) -> np.ndarray:
    return np.array([(b[0] + b[2]) / 2, (b[1] + b[3]) / 2], np.float64)


def _best(found, bbox):
    """The detection with the largest bbox IoU with ``bbox`` (None when nothing overlaps)."""
    ious = [_iou(d.bbox, bbox) for d in found]
    return found[int(np.argmax(ious))] if ious and max(ious) > 0 else None


def score_edit(scene, image, want: tuple = EDITED) -> dict:
    """Judge one edited image against the input scene's ground truth.

    The object at the red circle's place is the detection with the largest bbox IoU with it (any
    colour). ``colour`` / ``shape``: it has ``want``'s colour / shape; ``position``: IoU >= 0.5;
    ``no_source``: no red circle is detected; ``other_kept``: the other object (two-object scenes)
    is detected with its colour and shape at IoU >= 0.5; ``success`` all of these.
    ``iou`` (0 when nothing overlaps) and ``shift`` (centre distance in pixels, NaN then)."""
    gt = _target(scene)
    found = detect(image)
    ious = [_iou(d.bbox, gt.bbox) for d in found]
    j = int(np.argmax(ious)) if found and max(ious) > 0 else None
    d = found[j] if j is not None else None
    iou = ious[j] if j is not None else 0.0
    others = [o for o in scene.objects if o is not gt]
    other_kept = all(any(f.key == (o.colour, o.shape) and _iou(f.bbox, o.bbox) >= 0.5 for f in found) for o in others)
    r = dict(colour=d is not None and d.colour == want[0], shape=d is not None and d.shape == want[1],
             position=iou >= 0.5, no_source=TARGET not in [f.key for f in found], other_kept=other_kept,
             iou=iou, shift=float(np.linalg.norm(_centre(d.bbox) - _centre(gt.bbox))) if d is not None else float("nan"),
             two_objects=bool(others))
    r["success"] = r["colour"] and r["shape"] and r["position"] and r["no_source"] and r["other_kept"]
    # where the blue went instead: the detection best overlapping the other object is blue
    r["other_turned_blue"] = any(_best(found, o.bbox) is not None and _best(found, o.bbox).colour == want[0]
                                 for o in others)
    return r


EDIT_KEYS = ("success", "colour", "shape", "position", "no_source", "other_kept", "other_turned_blue")


# ---- measurements -------------------------------------------------------------------------------

@dataclass
class ReconstructionResult:
    """Inversion + regeneration without edit over ``n`` scenes; per-image arrays and their summaries."""

    setting: InversionSetting
    steps: int
    scenes: list = field(repr=False)
    z: torch.Tensor = field(repr=False)  # (n, 4, h, w)
    inputs: np.ndarray = field(repr=False)  # (n, H, W, 3) uint8
    recon: np.ndarray = field(repr=False)
    vae: np.ndarray = field(repr=False)
    mae: claims.Mean = None  # reconstruction vs input, [0, 255]
    mae_vae: claims.Mean = None  # VAE round trip vs input (the floor)
    mae_excess: claims.Mean = None  # paired: mae - mae_vae
    psnr: claims.Mean = None
    psnr_vae: claims.Mean = None
    correct: claims.Rate = None  # detector: regenerated scene == ground truth
    correct_vae: claims.Rate = None
    z_mean: claims.Mean = None
    z_std: claims.Mean = None
    z_lag1: claims.Mean = None
    per_image: dict = field(default_factory=dict, repr=False)
    seconds: float = 0.0

    @property
    def n(self) -> int:
        return len(self.scenes)

    def row(self) -> dict:
        return dict(setting=self.setting.name, n=self.n, steps=self.steps, **{
            k: getattr(self, k).to_json() for k in ("mae", "mae_vae", "mae_excess", "psnr", "correct", "correct_vae",
                                                    "z_mean", "z_std", "z_lag1")})


def measure_reconstruction(pipe, scenes, setting: InversionSetting = PIX2PIX_ZERO, steps: int = 25,
                           seed: int = 0, z: Optional[torch.Tensor] = None) -> ReconstructionResult:
    """Invert every scene (or take ``z``), regenerate without edit, compare with the input and the VAE floor."""
    if len(scenes) < 2:
        raise InvalidSetting(f"scenes: need >= 2 scenes for intervals, got {len(scenes)}")
    t0 = time.time()
    z = invert(pipe, scenes, setting, steps, seed) if z is None else z
    caps = [s.caption for s in scenes]
    inputs = np.stack([s.image for s in scenes])
    recon = regenerate(pipe, z, caps, steps)
    vae = vae_roundtrip(pipe, scenes, setting, seed)
    e, ev = pixel_error(recon, inputs), pixel_error(vae, inputs)
    zs = latent_stats(z)
    ok = np.array([same_scene(s, im) for s, im in zip(scenes, recon)])
    ok_v = np.array([same_scene(s, im) for s, im in zip(scenes, vae)])
    return ReconstructionResult(
        setting, steps, scenes, z, inputs, recon, vae, mae=claims.mean(e["mae"]), mae_vae=claims.mean(ev["mae"]),
        mae_excess=claims.paired_diff(e["mae"], ev["mae"]), psnr=claims.mean(e["psnr"]),
        psnr_vae=claims.mean(ev["psnr"]), correct=claims.rate(ok), correct_vae=claims.rate(ok_v),
        z_mean=claims.mean(zs["mean"]), z_std=claims.mean(zs["std"]), z_lag1=claims.mean(zs["lag1"]),
        per_image=dict(mae=e["mae"], mae_vae=ev["mae"], psnr=e["psnr"], psnr_vae=ev["psnr"], correct=ok, correct_vae=ok_v,
                       **zs),
        seconds=time.time() - t0)


def reconstruction_from(setting: InversionSetting, steps: int, scenes, per_image: dict, **arrays) -> ReconstructionResult:
    """:class:`ReconstructionResult` from per-image arrays (``mae``, ``mae_vae``, ``psnr``, ``psnr_vae``,
    ``correct``, ``correct_vae``, ``mean``, ``std``, ``lag1``), e.g. shipped ones; ``arrays``: ``z``,
    ``inputs``, ``recon``, ``vae`` when at hand (else None)."""
    p = {k: np.asarray(v) for k, v in per_image.items()}
    return ReconstructionResult(
        setting, steps, scenes, arrays.get("z"), arrays.get("inputs"), arrays.get("recon"), arrays.get("vae"),
        mae=claims.mean(p["mae"]), mae_vae=claims.mean(p["mae_vae"]), mae_excess=claims.paired_diff(p["mae"], p["mae_vae"]),
        psnr=claims.mean(p["psnr"]), psnr_vae=claims.mean(p["psnr_vae"]), correct=claims.rate(p["correct"]),
        correct_vae=claims.rate(p["correct_vae"]), z_mean=claims.mean(p["mean"]), z_std=claims.mean(p["std"]),
        z_lag1=claims.mean(p["lag1"]), per_image=p)


def measure_latents(pipe, scenes, setting: InversionSetting, steps: int = 25, seed: int = 0) -> dict:
    """``z_T`` statistics only (no regeneration): ``{"mean", "std", "lag1"} -> claims.Mean`` and ``"z"``."""
    z = invert(pipe, scenes, setting, steps, seed)
    out = {k: claims.mean(v) for k, v in latent_stats(z).items()}
    out["z"] = z
    return out


@dataclass
class EditResult:
    """One edit over ``n`` scenes: rates over all scenes and split by one / two objects."""

    setting: EditSetting
    images: np.ndarray = field(repr=False)  # (n, H, W, 3) uint8
    scores: list = field(repr=False)  # per image: score_edit dict
    rates: dict = field(default_factory=dict)  # key -> Rate, all scenes
    single: dict = field(default_factory=dict)  # key -> Rate, one-object scenes
    pair: dict = field(default_factory=dict)  # key -> Rate, two-object scenes
    iou: claims.Mean = None
    shift: Optional[claims.Mean] = None  # centre shift (pixels) where the object was found

    @property
    def n(self) -> int:
        return len(self.scores)

    def indicator(self, key: str, subset: Optional[str] = None) -> np.ndarray:
        keep = [(subset is None) or (s["two_objects"] == (subset == "pair")) for s in self.scores]
        return np.array([s[key] for s, k in zip(self.scores, keep) if k], bool)

    def row(self) -> dict:
        out = dict(setting=self.setting.name, n=self.n, **self.setting.to_json(), iou=self.iou.to_json())
        for grp, d in (("all", self.rates), ("single", self.single), ("pair", self.pair)):
            out.update({f"{grp}_{k}": v.to_json() for k, v in d.items()})
        return out


def measure_edit(pipe, scenes, z: torch.Tensor, edit: EditSetting = PAPER_EDIT, steps: int = 25,
                 guidance: float = 3.0) -> EditResult:
    """Regenerate every scene from its ``z_T`` under ``edit`` and score it (:func:`score_edit`)."""
    ims = regenerate(pipe, z, [s.caption for s in scenes], steps, guidance, edit)
    return edit_result(edit, ims, [score_edit(s, im) for s, im in zip(scenes, ims)])


def edit_result(edit: EditSetting, images, scores: Sequence[dict]) -> EditResult:
    """:class:`EditResult` from per-scene :func:`score_edit` dicts (``images`` may be None: shipped scores)."""
    r = EditResult(edit, images, list(scores))
    for key in EDIT_KEYS:
        r.rates[key] = claims.rate(r.indicator(key))
        for sub, d in (("single", r.single), ("pair", r.pair)):
            x = r.indicator(key, sub)
            if x.size:
                d[key] = claims.rate(x)
    r.iou = claims.mean([s["iou"] for s in r.scores])
    shifts = [s["shift"] for s in r.scores if s["shift"] is not None and np.isfinite(s["shift"])]
    r.shift = claims.mean(shifts) if len(shifts) else None
    return r


def inversion_table(results: Sequence[ReconstructionResult]) -> str:
    """Markdown: one row per inversion setting (z_T stats, reconstruction error, detector verdict)."""
    lines = ["| inversion | n | z_T std | z_T mean | z_T lag-1 corr | |recon - input| | over VAE floor | recon = GT |",
             "|---|---|---|---|---|---|---|---|"]
    for r in results:
        lines.append(f"| {r.setting.name} | {r.n} | {r.z_std.fmt(3)} | {r.z_mean.fmt(2)} | {r.z_lag1.fmt(2)} | "
                     f"{r.mae.fmt(3)} | {r.mae_excess.fmt(2)} | {r.correct} |")
    return "\n".join(lines)


def edit_table(results: Sequence[EditResult], keys=("success", "colour", "shape", "position", "no_source",
                                                    "other_kept")) -> str:
    """Markdown: one row per (edit, scene kind) with every rate as 'p % [lo, hi]'."""
    lines = ["| edit | scenes | n | " + " | ".join(keys) + " |", "|---|---|---|" + "---|" * len(keys)]
    for r in results:
        for grp, d in (("one object", r.single), ("two objects", r.pair)):
            if not d:
                continue
            cells = [f"{100 * d[k].p:.0f} % [{100 * d[k].lo:.0f}, {100 * d[k].hi:.0f}]" for k in keys]
            lines.append(f"| {r.setting.name} | {grp} | {d[keys[0]].n} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


# ---- sweeps (on scenes separate from the reported ones) -----------------------------------------

SWEEP_SEED = 1000  # the sweep's scenes: edit_scenes(n, SWEEP_SEED); the notebook reports seed 0


def sweep_inversion(pipe, settings: Optional[Sequence[InversionSetting]] = None, n: int = 32, steps: int = 25,
                    seed: int = SWEEP_SEED, steps_list: Optional[Sequence[int]] = None) -> list:
    """z_T statistics and reconstruction per inversion setting (and per number of steps) -> list of dict rows."""
    settings = list(settings or [PIX2PIX_ZERO, NO_REG, InversionSetting("KL only", lambda_autocorr=0.0),
                                 InversionSetting("auto-corr only", lambda_kl=0.0),
                                 InversionSetting("pix2pix-zero, no zero roll", min_shift=1)])
    scenes = edit_scenes(n, seed)
    rows = []
    for st in steps_list or [steps]:
        for s in settings:
            rows.append(measure_reconstruction(pipe, scenes, s, st).row())
    return rows


def sweep_edit(pipe, alphas=(0.5, 0.75, 1.0, 1.5), starts=(0.2, 0.5), n: int = 64, steps: int = 25,
               guidance: float = 3.0, seed: int = SWEEP_SEED, inversion: InversionSetting = PIX2PIX_ZERO,
               negative_ratio: float = 0.65 / 0.75) -> list:
    """Edit rates per ``(alpha, start)``, with and without the negative prompt (``alpha_neg =
    negative_ratio * alpha``, the paper's 0.65 / 0.75) -> list of dict rows (``single_*`` / ``pair_*``)."""
    scenes = edit_scenes(n, seed)
    z = invert(pipe, scenes, inversion, steps)
    rows = []
    for start in starts:
        for a in alphas:
            es = EditSetting(alpha=a, alpha_neg=round(negative_ratio * a, 3), start=start)
            for e in (es, es.positive_only()):
                rows.append(measure_edit(pipe, scenes, z, e, steps, guidance).row())
    return rows


# ---- figures ------------------------------------------------------------------------------------

def _diff_map(a, b) -> np.ndarray:
    return np.abs(a.astype(np.float32) - b.astype(np.float32)).mean(-1)


def plot_examples(rec: ReconstructionResult, edits: Sequence[EditResult], idx: Sequence[int], size: float = 1.75,
                  fontsize: float = 10):
    """Per scene (column): input, reconstruction, |recon - input|, then per edit the edited image and
    |edit - input|; titles carry the detector verdict (and the edit's score). Images upscaled with
    nearest neighbour; one colour bar for the difference maps (grey levels of 255)."""
    import textwrap

    from ..plots import new_figure

    rows = 3 + 2 * len(edits)
    fig = new_figure(figsize=(size * len(idx) + 2.4, (size + 0.5) * rows + 0.3))
    axes = np.atleast_2d(fig.subplots(rows, len(idx), squeeze=False))
    shown = None
    for c, i in enumerate(idx):
        panels = [(rec.inputs[i], verdict(rec.inputs[i]).replace(" + ", "\n"), None),
                  (rec.recon[i], verdict(rec.recon[i]).replace(" + ", "\n") + ("" if rec.per_image["correct"][i] else " (wrong)"), None),
                  (_diff_map(rec.recon[i], rec.inputs[i]), f"mean {rec.per_image['mae'][i]:.1f}", "magma")]
        for e in edits:
            sc = e.scores[i]
            tag = "success" if sc["success"] else "fails: " + ", ".join(k.replace("_", " ") for k in EDIT_KEYS[1:6] if not sc[k])
            tag = "\n".join(textwrap.wrap(tag, 20))
            panels.append((e.images[i], verdict(e.images[i]).replace(" + ", "\n") + "\n" + tag, None))
            d = _diff_map(e.images[i], rec.inputs[i])
            panels.append((d, f"mean {d.mean():.1f}", "magma"))
        for r, (im, t, cmap) in enumerate(panels):
            ax = axes[r, c]
            h = ax.imshow(im, cmap=cmap, vmin=0 if cmap else None, vmax=255 if cmap else None, interpolation="nearest")
            if cmap:
                shown = h
            ax.set_xticks([]); ax.set_yticks([])
            ax.set_title(t, fontsize=fontsize)
    labels = ["input", "reconstruction", "|recon - input|"] + \
        [x for e in edits for x in (("+ and -" if e.setting.negative else "+ only"), "|edit - input|")]
    for r, lab in enumerate(labels):
        axes[r, 0].set_ylabel(lab, fontsize=fontsize)
    fig.tight_layout(rect=(0, 0, 0.88, 1))
    cax = fig.add_axes((0.9, 0.05, 0.02, 0.15))
    cb = fig.colorbar(shown, cax=cax)
    cb.set_label("|difference|, grey levels", fontsize=fontsize)
    cb.ax.tick_params(labelsize=fontsize)
    return fig


def latent_hist(z, bins: int = 40, lim: float = 4.0) -> list:
    """Counts of all values of ``z`` in ``bins`` equal bins over ``[-lim, lim]`` (what a shipped file keeps)."""
    v = (z.detach().float().cpu().numpy() if hasattr(z, "detach") else np.asarray(z)).ravel()
    return np.histogram(v, bins=bins, range=(-lim, lim))[0].astype(int).tolist()


def plot_latents(results: Sequence[ReconstructionResult], bins: int = 40, hists: Optional[Sequence] = None,
                 fontsize: float = 10):
    """Histogram of all z_T values per inversion setting against N(0, 1), with the measured stats.
    ``hists``: per result the counts of :func:`latent_hist` (shipped results carry no ``z``)."""
    from ..plots import plot_histograms_vs_normal

    counts = [hists[j] if hists is not None else latent_hist(r.z, bins) for j, r in enumerate(results)]
    titles = [f"{r.setting.name} (n = {r.n})\nstd {r.z_std.value:.2f} [{r.z_std.lo:.2f}, {r.z_std.hi:.2f}], "
              f"lag-1 corr {r.z_lag1.value:.2f}" for r in results]
    return plot_histograms_vs_normal(counts, titles, xlabel="value of z_T", label="z_T values", fontsize=fontsize)


def plot_edit_rates(results: Sequence[EditResult], keys=EDIT_KEYS[:6], subset: str = "single", fontsize: float = 10):
    """Bars: each criterion's rate per edit on ``subset`` ("single" / "pair") scenes, 95 % intervals."""
    from ..plots import plot_rate_bars

    series = {("+ and -: " if r.setting.negative else "+ only: ") + r.setting.name: getattr(r, subset) for r in results}
    n = getattr(results[0], subset)[keys[0]].n
    return plot_rate_bars(series, keys, "% of scenes (95 % CI)", width=8.4, fontsize=fontsize, ylim=(0, 125),
                          title=f"{'one-object' if subset == 'single' else 'two-object'} scenes, n = {n}",
                          legend="upper center")


# ---- shipped results: benchmarks/shapes_realedit.py writes docs/shapes_realedit.json ----------------------
SHIPPED_PATH = "docs/shapes_realedit.json"
NOZERO = InversionSetting("pix2pix-zero, no zero roll", min_shift=1)
PARTS = (NO_REG, InversionSetting("KL only", lambda_autocorr=0.0), InversionSetting("auto-corr only", lambda_kl=0.0))


def shipped_fingerprint(weights: str, n: int, n_parts: int, steps: int, guidance: float) -> dict:
    """What determines ``docs/shapes_realedit.json``: weights, scenes (``edit_scenes(n, 0)``), settings."""
    return {"weights_sha256": weights,
            "settings": {"steps": steps, "guidance": guidance, "inversion": PIX2PIX_ZERO.to_json(),
                         "nozero": NOZERO.to_json(), "parts": [p.to_json() for p in PARTS], "edit": PAPER_EDIT.to_json()},
            "seeds": {"scenes": [0, n], "parts": n_parts, "inversion_seed": 0}}


def run_shipped(pipe, n: int = 64, n_parts: int = 32, steps: int = 25, guidance: float = 3.0, log=print) -> dict:
    """Notebook 05's measurements at full size: reconstruction (published inversion and no zero roll),
    z_T of the three regulariser parts on the first ``n_parts`` scenes, the edit with and without its
    negative prompt. Per-scene values, JSON."""
    t = time.time()
    scenes = edit_scenes(n, seed=0)
    out = {}
    for key, st in (("rec", PIX2PIX_ZERO), ("nozero", NOZERO)):
        r = measure_reconstruction(pipe, scenes, st, steps=steps)
        out[key] = dict(setting=st.to_json(), per_image=shipped.finite_json(r.per_image), hist=latent_hist(r.z))
        if key == "rec":
            z = r.z
        log(f"{key}: {time.time() - t:.0f} s")
    out["parts"] = {p.name: shipped.finite_json(latent_stats(invert(pipe, scenes[:n_parts], p, steps))) for p in PARTS}
    log(f"parts: {time.time() - t:.0f} s")
    for key, e in (("both", PAPER_EDIT), ("pos", PAPER_EDIT.positive_only())):
        out[key] = dict(setting=e.to_json(), scores=[shipped.finite_json(sc) for sc in measure_edit(pipe, scenes, z, e, steps, guidance).scores])
        log(f"{key}: {time.time() - t:.0f} s")
    return out


def load_shipped(pipe=None, guidance: Optional[float] = None, path=None) -> dict:
    """``docs/shapes_realedit.json`` checked against this run (weights of ``pipe``, CFG), as objects:
    ``rec``, ``nozero`` (:class:`ReconstructionResult` without images), ``hist`` (their z_T histograms),
    ``parts`` (name -> ``{"std", "mean", "lag1"}`` Means), ``both``, ``pos`` (:class:`EditResult`
    without images), ``steps``, ``file`` (the raw dict)."""
    f = shipped.load_for_run(SHIPPED_PATH, path, pipe, guidance=guidance)
    R, fp = f["results"], f["fingerprint"]
    steps, n = fp["settings"]["steps"], fp["seeds"]["scenes"][1]
    scenes = edit_scenes(n, seed=0)
    out = dict(steps=steps, file=f, hist={})
    for key in ("rec", "nozero"):
        st = InversionSetting(**R[key]["setting"])
        out[key] = reconstruction_from(st, steps, scenes, R[key]["per_image"])
        out["hist"][key] = R[key]["hist"]
    out["parts"] = {k: {m: claims.mean(v[m]) for m in ("std", "mean", "lag1")} for k, v in R["parts"].items()}
    for key in ("both", "pos"):
        sc = [dict(d, shift=float("nan") if d["shift"] is None else d["shift"]) for d in R[key]["scores"]]
        out[key] = edit_result(EditSetting(**R[key]["setting"]), None, sc)
    return out


__all__ = ["InversionSetting", "EditSetting", "PIX2PIX_ZERO", "NO_REG", "PAPER_EDIT", "edit_scenes", "invert",
           "vae_roundtrip", "regenerate", "latent_stats", "pixel_error", "same_scene", "verdict", "score_edit",
           "ReconstructionResult", "EditResult", "measure_reconstruction", "measure_latents", "measure_edit", "inversion_table",
           "edit_table", "sweep_inversion", "sweep_edit", "plot_examples", "plot_latents", "plot_edit_rates",
           "EDIT_KEYS", "SWEEP_SEED", "edit_result", "reconstruction_from", "latent_hist", "run_shipped", "load_shipped",
           "shipped_fingerprint", "NOZERO", "PARTS"]
