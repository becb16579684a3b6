r"""Smoothed energy guidance (SEG) on the shapes world, measured over seeds.

Every setting samples the **same initial latents** (one per seed) as its baseline (SEG scale
``s = 0`` at the same CFG scale ``w``), so a change is caused by SEG alone. Per image:

* ``change``: mean absolute pixel difference to the baseline image, in 0-255 grey levels
  ``|x_SEG - x_base|`` averaged over ``H x W x 3``;
* detector verdicts (:func:`~ebca_viz.shapes.detect.score_pair` on two-object prompts):
  ``both_present`` (prompt accuracy), ``clean`` (the detected objects are exactly the two requested
  ones, nothing else) and ``two_objects`` (exactly two objects detected, whatever they are);
* optionally the self-attention energy of the blurred branch ``E = -sum_i lse_j(beta q_i . k_j)``
  (trace ``seg_energies``), mean over steps and SEG layers, and its gap to the unblurred branch.

Guidance (published convention, :mod:`ebca_viz.seg`)::

    w > 1:   eps = eps_u + w (eps_c - eps_u) + s (eps_c - eps_blur)
    w = 1:   eps = eps_c + s (eps_c - eps_blur)          (SEG is the only guidance)

Why the sigma range matters on this model: its self-attention grids are 8 x 8 (``down_blocks.0``,
``up_blocks.1``) and 4 x 4 (``down_blocks.1``, mid, ``up_blocks.0``). The published blur caps the
kernel at ``w + 1`` taps (even ``w``) with reflect padding, so on a 4 x 4 grid every
``sigma >= 2`` is the same 5-tap, almost flat kernel (:func:`blur_residual`), and only the exact
mean (``sigma > 9999``) removes all spatial structure.
"""
from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from typing import Optional, Sequence

import numpy as np
import torch

from .. import claims
from ..shapes import world
from ..shapes.detect import detect, score_pair
from ..errors import InvalidSetting, NotFound

INF = math.inf
METRICS = ("both_present", "clean", "two_objects")
# Shapes-world defaults: choose_default(sweep_seg(pipe)) on the tuning split (48 samples per setting,
# seeds 100000+, 25 steps). The mid block alone (4x4) moves the samples by < 2.5 grey levels at s <= 3;
# all layers at sigma 1, s 3 change them by ~5 and had the best both-present rate at w = 1 and w = 3
# (0.35 vs 0.29 / 0.31 without SEG: within the noise); s = 10 lowered it (-23 points without CFG).
from ..shapes.regime import SHAPES  # noqa: E402

SHAPES_SEG = dict(scale=SHAPES.seg_scale, sigma=SHAPES.seg_sigma, layers=SHAPES.seg_layers)  # regime.SHAPES


# ---------------------------------------------------------------------------------------------
# settings and grids
# ---------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class SEGSetting:
    """One SEG run: scale ``s`` (0 = no SEG), blur ``sigma`` (``inf``: spatial mean), layers, CFG ``w``."""

    scale: float
    sigma: float = INF
    layers: tuple = ("mid",)
    guidance: float = 3.0

    def __post_init__(self):
        if not isinstance(self.scale, (int, float)) or isinstance(self.scale, bool) or self.scale < 0:
            raise InvalidSetting(f"scale must be a number >= 0 (0 = no SEG), got {self.scale!r}")
        if not isinstance(self.sigma, (int, float)) or isinstance(self.sigma, bool) or not self.sigma > 0:
            raise InvalidSetting(f"sigma must be > 0 (math.inf for the spatial mean), got {self.sigma!r}")
        if isinstance(self.layers, str):
            raise InvalidSetting("layers must be a tuple such as ('mid',) or ('down', 'mid', 'up'), not a string")
        object.__setattr__(self, "layers", tuple(self.layers))
        if not isinstance(self.guidance, (int, float)) or self.guidance < 1:
            raise InvalidSetting(f"guidance must be >= 1 (1 = no CFG), got {self.guidance!r}")

    @property
    def is_baseline(self) -> bool:
        return self.scale == 0

    def baseline(self) -> "SEGSetting":
        """The ``s = 0`` run at the same CFG (one per CFG scale: layers and sigma do not matter)."""
        return SEGSetting(0.0, INF, (), self.guidance)

    def config(self):
        from ..config import SEGConfig

        return SEGConfig(scale=float(self.scale), sigma=float(self.sigma) if math.isfinite(self.sigma) else 9999999.0,
                         layers=list(self.layers))

    @property
    def label(self) -> str:
        cfg = "no CFG" if self.guidance == 1 else f"CFG {self.guidance:g}"
        if self.is_baseline:
            return f"{cfg}, no SEG"
        lay = "all" if set(self.layers) == {"down", "mid", "up"} else "+".join(self.layers)
        return f"{cfg}, s {self.scale:g}, sigma {fmt_sigma(self.sigma)}, {lay}"


def fmt_sigma(s: float) -> str:
    return "inf" if not math.isfinite(s) or s > 9999 else f"{s:g}"


def layer_grids(pipe) -> list:
    """``[{"key", "block", "grid"}]`` of every self-attention layer: ``down_blocks.i`` runs at the latent
    size ``/ 2^i``, the mid block at ``/ 2^(n-1)``, ``up_blocks.i`` at ``/ 2^(n-1-i)`` (``n`` resolutions)."""
    from ..attach import block_of, self_attention_keys

    unet = pipe.unet
    hw = unet.config.sample_size
    n = len(unet.config.block_out_channels)
    out = []
    for key in self_attention_keys(unet):
        block = block_of(key)
        i = int(key.split(".")[1]) if block != "mid" else n - 1
        f = 2 ** (i if block == "down" else (n - 1 if block == "mid" else n - 1 - i))
        out.append(dict(key=key, block=block, grid=(-(-hw // f), -(-hw // f))))
    return out


def effective_kernel(sigma: float, width: int) -> int:
    """Taps of the published blur on a ``width``-wide grid: ``min(ceil(6 sigma)+1 (odd), w - (w % 2 - 1))``."""
    from ..seg import kernel_size_for

    if width < 1:
        raise InvalidSetting(f"width must be >= 1, got {width}")
    if not math.isfinite(sigma) or sigma > 9999:
        return width  # the exact mean
    return min(kernel_size_for(sigma), width - (width % 2 - 1))


def blur_residual(width: int, sigma: float, channels: int = 512, seed: int = 0) -> float:
    r"""How much spatial structure the blur leaves: ``||G q - mean q|| / ||q - mean q||`` for white-noise
    queries ``q (1, 1, w*w, channels)`` (1 = untouched, 0 = every query is the spatial mean)."""
    from ..seg import blur_queries

    if width < 2:
        raise InvalidSetting(f"width must be >= 2 for a spatial blur, got {width}")
    q = torch.randn(1, 1, width * width, channels, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)
    infinite = not math.isfinite(sigma) or sigma > 9999
    qb = blur_queries(q, (width, width), 1.0 if infinite else sigma, infinite)
    c = lambda x: x - x.mean(dim=2, keepdim=True)  # noqa: E731
    return float(c(qb).norm() / c(q).norm())


# ---------------------------------------------------------------------------------------------
# sampling and scoring
# ---------------------------------------------------------------------------------------------
def prompt_items(split: str, n: int, seed_base: int):
    """``n`` (two-object prompt, seed) pairs cycling through the prompts of ``split``."""
    if n < 1:
        raise InvalidSetting(f"n must be >= 1, got {n}")
    pairs = world.two_object_prompts(split)
    items = [pairs[k % len(pairs)] for k in range(n)]
    return items, [world.caption_for(list(p)) for p in items], [seed_base + k for k in range(n)]


def sample_seg(pipe, prompts, seeds, setting: SEGSetting, steps: int = 25, batch: int = 32,
               energies: bool = False):
    """Images ``(n, H, W, 3) uint8`` sampled by :func:`ebca_viz.sampling.sample` (its per-seed
    latents); with ``energies`` also ``(n, 2)`` self-attention energies (blurred, reference branch),
    each the mean over steps and SEG layers (None for s = 0)."""
    from ..sampling import sample

    if len(prompts) != len(seeds):
        raise InvalidSetting(f"prompts ({len(prompts)}) and seeds ({len(seeds)}) must have the same length")
    method = None if setting.is_baseline else setting.config()
    traced = energies and not setting.is_baseline
    out = sample(pipe, list(prompts), list(seeds), method=method, steps=steps, guidance=setting.guidance,
                 batch=batch, trace=["seg"] if traced else None)
    if not energies:
        return out
    if not traced:
        return out, None
    images, traces = out
    e = [torch.stack([tr.seg_energies(b, image=None).float().mean(dim=(1, 2)) for b in ("blurred", "reference")], -1)
         for tr in traces]
    return images, torch.cat(e).numpy()


def verdicts(items, images) -> list:
    """Per image the :func:`score_pair` result plus ``clean`` and ``two_objects``, and ``title`` (short)."""
    out = []
    for it, im in zip(items, images):
        found = detect(im)
        r = score_pair(it, found)
        r["clean"] = sorted(d.key for d in found) == sorted(it) and r["category"] != "unsure"
        r["two_objects"] = len(found) == 2
        r["both_present"] = r["category"] == "both_present"
        r["title"] = ("clean" if r["clean"] else r["category"].replace("_", " ")) + f" ({len(found)} obj)"
        out.append(r)
    return out


@dataclass
class SettingResult:
    """One setting over the seeds: images, detector verdicts, rates, change vs its baseline."""

    setting: SEGSetting
    images: np.ndarray  # (n, H, W, 3) uint8
    verdicts: list
    rates: dict  # metric -> claims.Rate
    change: Optional[claims.Mean] = None  # mean |pixel diff| to the baseline (0-255)
    changed: Optional[claims.Rate] = None  # images whose change > 1 grey level
    vs_base: dict = field(default_factory=dict)  # metric -> claims.Mean paired difference
    energy_blur: Optional[claims.Mean] = None
    energy_ref: Optional[claims.Mean] = None
    energy_gap: Optional[claims.Mean] = None  # paired: blurred - reference
    change_values: Optional[np.ndarray] = None  # (n,) per-image change, for paired comparisons
    energy_values: Optional[np.ndarray] = None  # (n, 2) per-image energies (blurred, reference)

    @property
    def n(self) -> int:
        return len(self.verdicts)

    def row(self) -> dict:
        out = dict(setting=self.setting.label, scale=self.setting.scale, sigma=fmt_sigma(self.setting.sigma),
                   layers=list(self.setting.layers), guidance=self.setting.guidance, n=self.n,
                   **{k: self.rates[k].to_json() for k in METRICS})
        if self.change is not None:
            out["change"] = self.change.to_json()
            out["changed"] = self.changed.to_json()
            out.update({f"{k}_vs_base": v.to_json() for k, v in self.vs_base.items()})
        if self.energy_gap is not None:
            out["energy_blur"], out["energy_gap"] = self.energy_blur.to_json(), self.energy_gap.to_json()
        return out


@dataclass
class SEGStudy:
    items: list
    prompts: list
    seeds: list
    steps: int
    results: dict = field(default_factory=dict)  # SEGSetting -> SettingResult (baselines included)
    seconds: float = 0.0

    @property
    def n(self) -> int:
        return len(self.items)

    def __getitem__(self, setting: SEGSetting) -> SettingResult:
        if setting not in self.results:
            raise NotFound.of("setting", setting.label, f"pick a measured setting: {[s.label for s in self.results]}",
                              why="not measured")
        return self.results[setting]

    def base(self, setting: SEGSetting) -> SettingResult:
        return self[setting.baseline()]

    def table(self) -> str:
        """Markdown, one row per setting: detector rates and the change vs the same-CFG baseline."""
        lines = ["| setting | n | " + " | ".join(METRICS) + " | both present vs no SEG (paired) | pixel change vs no SEG |",
                 "|" + "---|" * (len(METRICS) + 4)]
        for r in self.results.values():
            cells = [f"{100 * r.rates[k].p:.0f} % [{100 * r.rates[k].lo:.0f}, {100 * r.rates[k].hi:.0f}]" for k in METRICS]
            d = "—" if r.change is None else (f"{100 * r.vs_base['both_present'].value:+.1f} pts "
                                              f"[{100 * r.vs_base['both_present'].lo:+.1f}, {100 * r.vs_base['both_present'].hi:+.1f}]")
            c = "—" if r.change is None else f"{r.change.value:.2f} [{r.change.lo:.2f}, {r.change.hi:.2f}]"
            lines.append(f"| {r.setting.label} | {r.n} | " + " | ".join(cells) + f" | {d} | {c} |")
        return "\n".join(lines)

    def rows(self) -> list:
        return [r.row() for r in self.results.values()]

    def seed_rows(self, settings: Sequence[SEGSetting], idx: Sequence[int]) -> dict:
        """``{label: (images (k, H, W, 3), titles)}`` of the images ``idx`` of each setting, for
        :func:`plot_seed_grid`; titles are the detector verdicts."""
        out = {}
        for s in settings:
            r = self[s]
            out[s.label] = (r.images[list(idx)], [r.verdicts[i]["title"] for i in idx])
        return out

    def change_curve(self, settings: Sequence[SEGSetting]) -> list:
        """Mean pixel change vs the baseline (:class:`claims.Mean`) of each setting, in order."""
        return [self[s].change for s in settings]


def _score(setting, items, images, energies, base: Optional[SettingResult]) -> SettingResult:
    v = verdicts(items, images)
    ind = {k: np.array([x[k] for x in v], bool) for k in METRICS}
    res = SettingResult(setting, images, v, {k: claims.rate(ind[k]) for k in METRICS})
    if base is not None:
        diff = np.abs(images.astype(np.float64) - base.images.astype(np.float64)).mean(axis=(1, 2, 3))
        res.change, res.changed, res.change_values = claims.mean(diff), claims.rate(diff > 1.0), diff
        bind = {k: np.array([x[k] for x in base.verdicts], bool) for k in METRICS}
        res.vs_base = {k: claims.paired_diff(ind[k].astype(float), bind[k].astype(float)) for k in METRICS}
    if energies is not None:
        res.energy_blur, res.energy_ref = claims.mean(energies[:, 0]), claims.mean(energies[:, 1])
        res.energy_gap = claims.paired_diff(energies[:, 0], energies[:, 1])
        res.energy_values = energies
    return res


def measure_seg(pipe, settings: Sequence[SEGSetting], n: int = 32, split: str = "report", seed_base: int = 0,
            steps: int = 25, batch: int = 32, energies: bool = True, progress: bool = False) -> SEGStudy:
    """Sample ``n`` two-object prompts of ``split`` with every setting (and each one's ``s = 0``
    baseline at the same CFG) on the same latents; score, compare to the baseline, read energies."""
    if n < 2:
        raise InvalidSetting(f"n must be >= 2 samples, got {n}")
    if not settings:
        raise InvalidSetting("settings is empty: pass e.g. [SEGSetting(3.0, math.inf, ('mid',), 3.0)]")
    t0 = time.time()
    items, prompts, seeds = prompt_items(split, n, seed_base)
    study = SEGStudy(items, prompts, seeds, steps)
    order = []
    for s in settings:
        for x in (s.baseline(), s):
            if x not in order:
                order.append(x)
    it = order
    if progress:
        from tqdm.auto import tqdm

        it = tqdm(order, desc=f"SEG: {n} seeds x {len(order)} settings")
    for s in it:
        out = sample_seg(pipe, prompts, seeds, s, steps=steps, batch=batch, energies=energies)
        ims, en = out if energies else (out, None)
        study.results[s] = _score(s, items, ims, en, None if s.is_baseline else study.results[s.baseline()])
    study.seconds = time.time() - t0
    return study


def sweep_seg(pipe, scales=(1.0, 3.0, 10.0), sigmas=(1.0, INF), layer_sets=(("mid",), ("down", "mid", "up")),
              guidances=(1.0, 3.0), n: int = 48, steps: int = 25, seed_base: int = 100_000, split: str = "tune",
              batch: int = 48) -> list:
    """The small sweep behind :data:`SHAPES_SEG`, on the tuning split and its own seeds (not the
    notebook's): one row per setting, ``{"setting", "n", metric: Rate json, "change", "*_vs_base"}``."""
    settings = [SEGSetting(s, sg, tuple(ls), g) for g in guidances for ls in layer_sets for sg in sigmas for s in scales]
    study = measure_seg(pipe, settings, n=n, split=split, seed_base=seed_base, steps=steps, batch=batch, energies=False)
    return study.rows()


def choose_default(rows: list) -> dict:
    """The rule behind :data:`SHAPES_SEG` applied to :func:`sweep_seg` rows: the (scale, sigma, layers)
    with the highest both-present rate averaged over the CFG scales swept; ties (within 1e-9) go to
    the larger mean pixel change (the more visible effect). Returns ``dict(scale, sigma, layers)``."""
    groups = {}
    for r in rows:
        if r["scale"] == 0:
            continue
        key = (r["scale"], r["sigma"], tuple(r["layers"]))
        groups.setdefault(key, []).append(r)
    if not groups:
        raise InvalidSetting("rows hold no SEG setting (scale > 0): pass the output of sweep_seg(pipe)")
    def score(item):
        rs = item[1]
        return (round(float(np.mean([r["both_present"]["p"] for r in rs])), 9), float(np.mean([r["change"]["mean"] for r in rs])))
    (scale, sigma, layers), _ = max(groups.items(), key=score)
    return dict(scale=scale, sigma=INF if sigma == "inf" else float(sigma), layers=layers)


# ---------------------------------------------------------------------------------------------
# plots (data in, Figure out)
# ---------------------------------------------------------------------------------------------
def _xs(sigmas):
    s = np.array([float(v) if math.isfinite(v) and v <= 9999 else np.nan for v in sigmas])
    inf_x = np.nanmax(s) * 2.5 if np.isfinite(s).any() else 1.0
    return np.where(np.isnan(s), inf_x, s), inf_x


def plot_vs_sigma(sigmas, curves: dict, ylabel: str, title: str, zero_line: bool = True):
    """One line per label: ``curves[label] = [claims.Mean or Rate per sigma]`` with 95 % error bars;
    sigma on a log axis, ``inf`` drawn at the right edge."""
    from ..plots import new_figure

    xs, inf_x = _xs(sigmas)
    fig = new_figure(figsize=(7.6, 4.0))
    ax = fig.subplots()
    for lab, vals in curves.items():
        y = np.array([getattr(v, "value", getattr(v, "p", np.nan)) for v in vals], float)
        lo, hi = np.array([v.lo for v in vals]), np.array([v.hi for v in vals])
        ax.errorbar(xs, y, yerr=[y - lo, hi - y], fmt="o-", ms=4, capsize=3, label=lab)
    ax.set_xscale("log")
    ax.set_xticks(xs)
    ax.set_xticklabels([fmt_sigma(v) for v in sigmas], fontsize=10)
    ax.minorticks_off()
    if zero_line:
        ax.axhline(0, color="0.6", lw=0.8)
    ax.set_xlabel("sigma (blur of the self-attention queries)", fontsize=10)
    ax.set_ylabel(ylabel, fontsize=10)
    ax.tick_params(labelsize=10)
    ax.set_title(title, fontsize=10)
    ax.legend(fontsize=10, loc="center left", bbox_to_anchor=(1.01, 0.5))
    fig.tight_layout()
    return fig


def plot_seed_grid(rows: dict, seeds, base_key=None, diff_gain: float = 4.0, title: Optional[str] = None,
                   size: float = 1.45, prompts: Optional[Sequence[str]] = None, fontsize: float = 10):
    """Rows = settings, columns = the same seeds. ``rows[label] = (images (n, H, W, 3), titles)``.
    With ``base_key`` a difference row ``|x - x_base| x diff_gain`` follows each non-base row (one
    colour bar for them). ``prompts``: per column the prompt, written above it with its seed. Images
    upscaled with nearest neighbour."""
    import textwrap

    from ..plots import new_figure

    labels = list(rows)
    n = len(seeds)
    plan = []
    for lab in labels:
        plan.append((lab, "img"))
        if base_key is not None and lab != base_key:
            plan.append((lab, "diff"))
    fig = new_figure(figsize=(size * n + 2.6, (size + 0.3) * len(plan) + 1.3))
    axes = np.asarray(fig.subplots(len(plan), n, squeeze=False))
    base = rows[base_key][0].astype(np.float32) if base_key is not None else None
    shown = None
    for r, (lab, kind) in enumerate(plan):
        ims, tit = rows[lab]
        for c in range(n):
            a = axes[r, c]
            if kind == "img":
                a.imshow(ims[c], interpolation="nearest")
                t = tit[c]
            else:
                d = np.abs(ims[c].astype(np.float32) - base[c]).mean(-1)
                shown = a.imshow(np.clip(d * diff_gain, 0, 255), cmap="magma", vmin=0, vmax=255, interpolation="nearest")
                t = f"mean {d.mean():.1f}"
            if r == 0:
                head = f"seed {seeds[c]}" + (f"\n{textwrap.fill(prompts[c], 16)}" if prompts is not None else "")
                t = head + "\n" + t
            a.set_title(t, fontsize=fontsize, pad=2)
            a.set_xticks([])
            a.set_yticks([])
            if c == 0:
                a.set_ylabel(textwrap.fill(lab if kind == "img" else f"|diff| x{diff_gain:g}", 14), fontsize=fontsize)
    if title:
        fig.suptitle(textwrap.fill(title, int(fig.get_figwidth() * 8)), fontsize=fontsize + 1)
    fig.tight_layout(rect=(0, 0, 0.88 if shown is not None else 1, 1 - (0.7 / fig.get_figheight() if title else 0)))
    if shown is not None:
        cax = fig.add_axes((0.9, 0.05, 0.02, 0.18))
        cb = fig.colorbar(shown, cax=cax)
        cb.set_label(f"|diff| x {diff_gain:g}, grey levels", fontsize=fontsize)
        cb.ax.tick_params(labelsize=fontsize)
    return fig


def plot_blur_residual(widths=(4, 8), sigmas=(0.3, 0.5, 1.0, 2.0, 3.0, 5.0, 10.0, INF)):
    """:func:`blur_residual` vs sigma, one line per grid width (how far the published blur is from the mean)."""
    from ..plots import new_figure

    xs, _ = _xs(sigmas)
    fig = new_figure(figsize=(7.6, 4.6))
    ax = fig.subplots()
    for w in widths:
        ax.plot(xs, [blur_residual(w, s) for s in sigmas], "o-", ms=4,
                label=f"{w}x{w} grid (kernel taps: " + ",".join(str(effective_kernel(s, w)) for s in sigmas) + ")")
    ax.set_xscale("log")
    ax.set_xticks(xs)
    ax.set_xticklabels([fmt_sigma(v) for v in sigmas], fontsize=10)
    ax.minorticks_off()
    ax.set_ylim(-0.03, 1.05)
    ax.set_xlabel("sigma", fontsize=10)
    ax.set_ylabel("||G q - mean|| / ||q - mean||", fontsize=10)
    ax.tick_params(labelsize=10)
    ax.set_title("structure left in the queries after the published blur", fontsize=10)
    ax.legend(fontsize=10, loc="upper center", bbox_to_anchor=(0.5, -0.2), ncol=1)
    fig.tight_layout()
    return fig


# ---------------------------------------------------------------------------------------------
# shipped results: benchmarks/shapes_seg.py writes docs/shapes_seg.json (notebook 07)
# ---------------------------------------------------------------------------------------------
SHIPPED_PATH = "docs/shapes_seg.json"


def notebook_settings(cfg: float, sigmas=(0.1, 0.5, 1.0, 10.0, INF), scales=(1.0, None, 10.0), default=None) -> dict:
    """Notebook 07's settings: per CFG ``w`` in ``(1, cfg)`` a sigma sweep at the default scale and a
    scale sweep at the default sigma (``None`` in ``scales``: the default). ``{"by_sigma": {w: [...]},
    "by_scale": {w: [...]}, "all": [...]}`` of :class:`SEGSetting`."""
    d = default or SHAPES_SEG
    layers, s_def, sig_def = tuple(d["layers"]), d["scale"], d["sigma"]
    gs = [1.0, float(cfg)]
    by_sigma = {g: [SEGSetting(s_def, sg, layers, g) for sg in sigmas] for g in gs}
    by_scale = {g: [SEGSetting(s_def if s is None else s, sig_def, layers, g) for s in scales] for g in gs}
    allset = list(dict.fromkeys(s for g in gs for s in by_sigma[g] + by_scale[g]))
    return {"by_sigma": by_sigma, "by_scale": by_scale, "all": allset}


def _setting_json(s: SEGSetting) -> dict:
    return dict(scale=s.scale, sigma=fmt_sigma(s.sigma), layers=list(s.layers), guidance=s.guidance)


def _setting_from(d: dict) -> SEGSetting:
    return SEGSetting(float(d["scale"]), INF if d["sigma"] == "inf" else float(d["sigma"]), tuple(d["layers"]),
                      float(d["guidance"]))


def study_json(study: SEGStudy) -> dict:
    """A :class:`SEGStudy` as JSON: per setting the per-image verdicts, pixel changes and energies."""
    res = []
    for s, r in study.results.items():
        res.append(dict(setting=_setting_json(s),
                        verdicts=[{k: bool(v[k]) for k in METRICS} | {"title": v["title"]} for v in r.verdicts],
                        change_values=None if r.change_values is None else [float(x) for x in r.change_values],
                        energy_values=None if r.energy_values is None else np.asarray(r.energy_values, float).tolist()))
    return dict(items=[list(map(list, it)) for it in study.items], prompts=study.prompts, seeds=study.seeds,
                steps=study.steps, seconds=study.seconds, results=res)


def study_from_json(d: dict) -> SEGStudy:
    """The :class:`SEGStudy` of :func:`study_json` back (no images): rates, paired differences, changes,
    energies recomputed from the per-image values."""
    st = SEGStudy([tuple(map(tuple, it)) for it in d["items"]], d["prompts"], d["seeds"], d["steps"], seconds=d["seconds"])
    for e in d["results"]:
        s = _setting_from(e["setting"])
        v = e["verdicts"]
        ind = {k: np.array([x[k] for x in v], bool) for k in METRICS}
        r = SettingResult(s, None, v, {k: claims.rate(ind[k]) for k in METRICS})
        if e["change_values"] is not None:
            diff = np.asarray(e["change_values"], float)
            base = st.results[s.baseline()]
            r.change, r.changed, r.change_values = claims.mean(diff), claims.rate(diff > 1.0), diff
            bind = {k: np.array([x[k] for x in base.verdicts], bool) for k in METRICS}
            r.vs_base = {k: claims.paired_diff(ind[k].astype(float), bind[k].astype(float)) for k in METRICS}
        if e["energy_values"] is not None:
            en = np.asarray(e["energy_values"], float)
            r.energy_blur, r.energy_ref = claims.mean(en[:, 0]), claims.mean(en[:, 1])
            r.energy_gap, r.energy_values = claims.paired_diff(en[:, 0], en[:, 1]), en
        st.results[s] = r
    return st


def shipped_fingerprint(weights: str, n: int, steps: int, cfg: float) -> dict:
    """What determines ``docs/shapes_seg.json``: weights, settings, seeds, steps."""
    return {"weights_sha256": weights,
            "settings": {"steps": steps, "guidance": cfg, "default": {k: (list(v) if isinstance(v, tuple) else v)
                                                                         for k, v in SHAPES_SEG.items()},
                         "settings": [_setting_json(s) for s in notebook_settings(cfg)["all"]]},
            "seeds": {"report": [0, n], "split": "report"}}


def load_shipped(pipe=None, cfg: Optional[float] = None, path=None) -> tuple:
    """``(SEGStudy, file)`` from ``docs/shapes_seg.json``, checked against this run (weights, CFG)."""
    from . import shipped

    f = shipped.load_for_run(SHIPPED_PATH, path, pipe, guidance=cfg)
    return study_from_json(f["results"]), f


def resample(pipe, study: SEGStudy, settings: Sequence[SEGSetting], idx: Sequence[int]) -> SEGStudy:
    """Re-sample the images ``idx`` of ``study`` (same prompts, seeds, steps) for ``settings`` (and
    their baselines) live: a :class:`SEGStudy` with images, to show and to compare with the shipped one."""
    idx = list(idx)
    live = SEGStudy([study.items[i] for i in idx], [study.prompts[i] for i in idx], [study.seeds[i] for i in idx],
                    study.steps)
    order = []
    for s in settings:
        for x in (s.baseline(), s):
            if x not in order:
                order.append(x)
    t0 = time.time()
    for s in order:
        ims, en = sample_seg(pipe, live.prompts, live.seeds, s, steps=study.steps, energies=True)
        live.results[s] = _score(s, live.items, ims, en, None if s.is_baseline else live.results[s.baseline()])
    live.seconds = time.time() - t0
    return live
