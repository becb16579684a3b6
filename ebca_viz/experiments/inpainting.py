r"""Text-guided inpainting on the shapes world, measured: known-region fidelity and prompt following.

Scenes (:func:`make_cases`): one object drawn by :mod:`ebca_viz.shapes.world`; the mask is a
``S/2 x S/2`` box (rows ``S/4 .. 3S/4``) in the half of the image that does *not* hold the object's
centre, so the object is known and must survive. The prompt asks for a different colour
(``"a <colour> <shape>"``, cycling through the single-object prompts).

Per scene, with ``x`` the source, ``y`` the result and ``K`` the known pixels (mask 0):

* ``mae_out = mean_{K} |y - x|`` in [0, 255] (and ``max_out``), for the pasted result and for the
  raw decoded one (``extras["decoded"]``);
* the floor: the same error of the VAE round trip ``D(E(x))`` (posterior mode), the best a latent
  method can do without paste-back;
* ``follows``: the detector finds the prompted ``(colour, shape)`` with its box centre inside the mask.

Conditions share seeds (paired): the prompt with no update (gamma 0), with masked EBCU at each
gamma given, and a control (the empty prompt) whose ``follows`` is the chance rate.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import torch

from .. import claims
from ..shapes import world
from ..shapes.detect import detect

CONTROL = "control: empty prompt"


@dataclass
class Case:
    source: np.ndarray  # (S, S, 3) uint8
    mask: np.ndarray  # (S, S) uint8, 255 = inpaint
    prompt: str
    target: tuple  # (colour, shape) asked for
    kept: tuple  # (colour, shape) of the known object
    seed: int


def make_cases(n: int, seed: int = 0, size: int = world.IMAGE_SIZE) -> list:
    """``n`` scenes with masks and prompts (see the module docstring); deterministic from ``seed``."""
    if n < 1:
        raise ValueError(f"n must be >= 1, got {n}")
    rng = np.random.default_rng(seed)
    prompts = world.single_prompts()
    out = []
    for i in range(n):
        sc = world.make_scene(rng, size=size, p_two=0.0)
        obj = sc.objects[0]
        kept = (obj.colour, obj.shape)
        cands = [p for p in prompts if p[0] != kept[0]]
        target = cands[i % len(cands)]
        m = np.zeros((size, size), np.uint8)
        x0 = 0 if (obj.bbox[0] + obj.bbox[2]) / 2 >= size / 2 else size // 2
        m[size // 4: 3 * size // 4, x0: x0 + size // 2] = 255
        out.append(Case(sc.image, m, world.caption_for([target]), target, kept, seed * 1000 + i))
    return out


def vae_roundtrip(pipe, images) -> np.ndarray:
    """``(B, S, S, 3) uint8`` -> ``D(E(x))`` (posterior mode), uint8."""
    x = world.to_tensor(images).to(pipe.device, pipe.vae.dtype)
    with torch.no_grad():
        r = pipe.vae.decode(pipe.vae.encode(x).latent_dist.mode()).sample
    return ((r.float().clamp(-1, 1) + 1) * 127.5).round().byte().permute(0, 2, 3, 1).cpu().numpy()


def outside_error(y: np.ndarray, x: np.ndarray, mask: np.ndarray) -> tuple:
    """(mean, max) of ``|y - x|`` over the known pixels (mask 0), all channels, in [0, 255]."""
    d = np.abs(y.astype(np.float64) - x.astype(np.float64))[mask == 0]
    return float(d.mean()), float(d.max())


def follows(image: np.ndarray, target: tuple, mask: np.ndarray) -> bool:
    """The detector finds ``target`` with its box centre inside the mask."""
    for d in detect(image):
        if d.key == tuple(target):
            cx, cy = (d.bbox[0] + d.bbox[2]) // 2, (d.bbox[1] + d.bbox[3]) // 2
            if mask[min(cy, mask.shape[0] - 1), min(cx, mask.shape[1] - 1)] > 0:
                return True
    return False


@dataclass
class Condition:
    name: str
    follows: claims.Rate
    kept: claims.Rate  # the known object is still detected
    mae_out: claims.Mean  # pasted result
    max_out: float
    raw_mae_out: claims.Mean  # decoded, before paste-back
    raw_max_out: float
    images: np.ndarray  # (n, S, S, 3) pasted
    raw: np.ndarray  # (n, S, S, 3) decoded
    verdicts: list  # per image: follows (bool)


@dataclass
class InpaintResult:
    cases: list
    floor_mae: claims.Mean  # VAE round trip, outside the mask
    floor_max: float
    roundtrip: np.ndarray
    conditions: dict = field(default_factory=dict)
    settings: dict = field(default_factory=dict)

    def vs(self, a: str, b: str) -> claims.Mean:
        """Paired difference of ``follows`` (a - b, same scenes and seeds)."""
        return claims.paired_diff(self.conditions[a].verdicts, self.conditions[b].verdicts)


def measure(pipe, n: int = 32, steps: int = 25, guidance: float = 3.0, gammas=(0.025,), jump_length: int = 5,
            jump_n_sample: int = 2, seed: int = 0, paste_feather=None) -> InpaintResult:
    """Run every condition on the same :func:`make_cases` scenes (see the module docstring)."""
    from PIL import Image

    from ..tasks.inpainting import inpaint

    size = int(pipe.unet.config.sample_size) * int(pipe.vae_scale_factor)
    cases = make_cases(n, seed, size=size)
    src = np.stack([c.source for c in cases])
    rt = vae_roundtrip(pipe, src)
    fl = [outside_error(rt[i], c.source, c.mask) for i, c in enumerate(cases)]
    res = InpaintResult(cases, claims.mean([f[0] for f in fl]), max(f[1] for f in fl), rt,
                        settings=dict(n=n, steps=steps, guidance=guidance, jump_length=jump_length,
                                      jump_n_sample=jump_n_sample, gammas=list(gammas)))
    conds = [("no update (gamma 0)", 0.0, None)] + [(f"masked EBCU (gamma {g:g})", g, None) for g in gammas] \
        + [(CONTROL, 0.0, "")]
    for name, g, prompt in conds:
        ims, raws = [], []
        for c in cases:
            r = inpaint(pipe, Image.fromarray(c.source), Image.fromarray(c.mask), c.prompt if prompt is None else prompt,
                        repaint=True, gamma_attn=g, gamma_norm=g, seed=c.seed, num_inference_steps=steps,
                        guidance_scale=guidance, jump_length=jump_length, jump_n_sample=jump_n_sample,
                        paste_feather=paste_feather)
            ims.append(np.asarray(r.image))
            raws.append(np.asarray(r.extras["decoded"][0]))
        ims, raws = np.stack(ims), np.stack(raws)
        e = [outside_error(ims[i], c.source, c.mask) for i, c in enumerate(cases)]
        er = [outside_error(raws[i], c.source, c.mask) for i, c in enumerate(cases)]
        v = [follows(ims[i], c.target, c.mask) for i, c in enumerate(cases)]
        kept = [any(d.key == c.kept for d in detect(ims[i])) for i, c in enumerate(cases)]
        res.conditions[name] = Condition(name, claims.rate(v), claims.rate(kept), claims.mean([x[0] for x in e]),
                                         max(x[1] for x in e), claims.mean([x[0] for x in er]),
                                         max(x[1] for x in er), ims, raws, v)
    return res


def plot_examples(res: InpaintResult, condition: str, k: int = 4):
    """Rows: source / mask / result / |result - source| outside the mask / the same for the raw
    decoded image; detector verdict in the result's title."""
    from ..viz import new_figure

    c = res.conditions[condition]
    k = min(k, len(res.cases))
    fig = new_figure(figsize=(2.0 * k, 10))
    axs = fig.subplots(5, k, squeeze=False)
    for j in range(k):
        case = res.cases[j]
        out = (case.mask == 0)[..., None]
        dp = (np.abs(c.images[j].astype(int) - case.source.astype(int)) * out).max(-1)
        dr = (np.abs(c.raw[j].astype(int) - case.source.astype(int)) * out).max(-1)
        panels = [(case.source, f"source: {case.kept[0]} {case.kept[1]}"), (case.mask, "mask (white = inpaint)"),
                  (c.images[j], f"'{case.prompt}': {'found' if c.verdicts[j] else 'NOT found'}"),
                  (dp, f"|pasted - src| outside, max {dp.max()}"), (dr, f"|decoded - src| outside, max {dr.max()}")]
        for i, (im, t) in enumerate(panels):
            ax = axs[i, j]
            if im.ndim == 2 and i >= 3:
                ax.imshow(im, cmap="magma", vmin=0, vmax=255)
            else:
                ax.imshow(im, cmap="gray" if im.ndim == 2 else None, interpolation="nearest")
            ax.set_title(t, fontsize=7)
            ax.axis("off")
    fig.suptitle(condition, fontsize=9)
    fig.tight_layout()
    return fig


def plot_repaint_energies(tr, call_steps, reference=None, kind: str = "posterior"):
    """Mean energy decrease per update over RePaint's UNet calls (x: "UNet call (RePaint, with
    jumps)", the plain sampling step ``k`` of each call on a second panel). ``call_steps`` is
    ``info["repaint"]["call_steps"]``."""
    from ..viz import new_figure, to_numpy

    b, a = to_numpy(tr.energies(kind, "before")), to_numpy(tr.energies(kind, "after"))
    drop = (b - a).mean(1)
    k = np.asarray(call_steps)
    if len(k) != len(drop):
        raise ValueError(f"call_steps has {len(k)} entries but the trace {len(drop)} UNet calls: pass the "
                         "info['repaint']['call_steps'] of the traced run")
    fig = new_figure(figsize=(11, 3.4))
    ax1, ax2 = fig.subplots(1, 2)
    x = np.arange(len(drop))
    ax1.plot(x, drop, "-", color="C1", lw=1)
    jumps = np.nonzero(np.diff(k) <= 0)[0] + 1
    for j in jumps:
        ax1.axvline(j - 0.5, color="gray", lw=0.5, ls=":")
    ax1.set_xlabel("UNet call (RePaint, with jumps; dotted = jump back)")
    ax1.set_ylabel("E_entering - E_leaving, mean over layers")
    ax1.set_title(f"{len(drop)} UNet calls over {int(k.max()) + 1} sampling steps", fontsize=9)
    ax2.plot(k, drop, "o", ms=3, color="C1", alpha=0.6)
    ax2.set_xlabel("sampling step of the call (0 = noisiest)")
    ax2.set_title("the same, against the noise level", fontsize=9)
    fig.tight_layout()
    return fig


__all__ = ["Case", "make_cases", "vae_roundtrip", "outside_error", "follows", "Condition", "InpaintResult", "measure",
           "plot_examples", "plot_repaint_energies", "CONTROL"]
