r"""Notebook 10 ("transformers"): the DiT world asked the UNet worlds' questions.

* :func:`describe` -- what the adapter knows about a diffusion transformer (layers and kinds, text
  segments and the tokenizer that names each, the image-token grid, the CFG layout), as lines to print;
* :func:`sample` -- seeded DiT sampling (the package's seed rule, :func:`ebca_viz.sampling.initial_latents`)
  with a method installed (None, an ``EBCAConfig``, a ``SEGConfig``) and optionally a trace per batch;
* :func:`box_mass` / :func:`map_alignment` -- do a word's maps point at the object the word names?
  For each word, the share of its spatially normalised map inside the detected object's box vs inside
  the other object's box (paired over seeds);
* :func:`seg_change` -- vanilla vs SEG on the same initial latents: mean ``|pixel difference|`` per seed;
* :func:`load_dit_benchmark` / :func:`live_benchmark` -- vanilla vs EBCU vs EBCU + up-weight on the DiT
  world (the shipped ``results.json`` of :func:`ebca_viz.shapes.dit_eval.benchmark`, or a small live sample);
* :func:`plot_world_bars` -- the DiT world next to the UNet neglect world, one bar chart with intervals.

Box mass of word ``t`` and box ``b`` (pixels ``(x0, y0, x1, y1)``, exclusive ends) on a map ``M_t`` of
``(h, w)`` cells resized to the ``S x S`` image by nearest neighbour::

    mass(t, b) = sum_{(y, x) in b} M_t[y, x] / sum_{y, x} M_t[y, x]         in [0, 1]
"""
from __future__ import annotations

import contextlib
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional, Sequence

import numpy as np
import torch

from .. import claims
from ..errors import InvalidSetting

ROOT = Path(__file__).resolve().parents[2]
#: where the DiT world's benchmark (``dit_eval.benchmark``'s ``results.json``) may ship, first found wins
DIT_RESULT_PATHS = ("docs/dit_world_benchmark.json", "docs/neglect_world_dit_benchmark.json",
                    "ebca_viz/weights/neglect_world_dit/benchmark.json", "ebca_viz/weights/neglect_world_dit/results.json")
METHODS = ("vanilla", "EBCU", "EBCU + up-weight")


# -- what the adapter says ---------------------------------------------------------------------------
def describe(pipe, probe_cfg: Optional[float] = None) -> list:
    """Lines describing a DiT (or UNet) pipeline as its adapter sees it: family and denoiser class, the
    attention layers by kind, the text segments with the tokenizer class naming each, the image-token grid
    (``sample_size / patch_size`` per side); with ``probe_cfg`` (a guidance scale) the CFG layout the adapter
    reads inside a one-step call at that scale (PixArt keeps its CFG decision in a local of ``__call__``)."""
    from ..adapters import adapter_for

    ad = adapter_for(pipe)
    layers = ad.layers()
    kinds = {k: sum(li.kind == k for li in layers) for k in ("self", "cross", "joint", "single")}
    out = [f"family {ad.family!r}: {type(ad.model).__name__} ({type(ad).__name__}), "
           f"{sum(p.numel() for p in ad.model.parameters()):,} parameters"]
    out.append(f"{len(layers)} attention layers: " + ", ".join(f"{n} {k}" for k, n in kinds.items() if n)
               + f"; {len(ad.text_layers())} see text (first: {layers[0].key} = {layers[0].kind}, "
               f"second: {layers[1].key} = {layers[1].kind})")
    for s in ad.text_segments(pipe):
        tok = getattr(pipe, s.tokenizer_attr, None)
        out.append(f"text segment {s.name!r}: positions {s.start}..{s.start + s.length - 1} ({s.length}), named by "
                   f"pipe.{s.tokenizer_attr} = {type(tok).__name__}")
    cfg = ad.model.config
    p = getattr(cfg, "patch_size", 1) or 1
    ss = getattr(cfg, "sample_size", None)
    if ss:
        out.append(f"latent {ss} x {ss} x {cfg.in_channels}, patch {p}: {ss // p} x {ss // p} = {(ss // p) ** 2} image "
                   "tokens per layer")
    if probe_cfg is not None:
        got = []
        h = ad.model.register_forward_pre_hook(lambda m, a: got.append(ad.cfg_layout(pipe)) if not got else None)
        try:
            sample(pipe, ["a"], [0], steps=1, guidance=probe_cfg)
        finally:
            h.remove()
        out.append(f"CFG at guidance {probe_cfg:g}, read from the running pipeline: {got[0]}")
    return out


# -- sampling ----------------------------------------------------------------------------------------
def latent_shape(pipe) -> tuple:
    """``(C, h, w)`` of a DiT pipeline's initial latents at its default size."""
    tr = pipe.transformer
    hw = int(tr.config.sample_size)
    return int(tr.config.in_channels), hw, hw


def sample(pipe, prompts: Sequence[str], seeds: Sequence[int], method=None, steps: int = 20, guidance: float = 3.0,
           trace=None, batch: int = 64):
    """Images ``(N, S, S, 3) uint8`` of a DiT pipeline (PixArt / SD3 / Flux), prompt ``k`` from the seed rule's
    latent ``z_T[k]`` (:func:`ebca_viz.sampling.initial_latents`: the same latents for every method, so runs are
    paired). ``method``: as :func:`ebca_viz.sampling.installed`. ``trace``: None or ``True`` / quantities: then
    ``(images, traces)``, one :class:`~ebca_viz.tracing.Trace` per batch."""
    from ..sampling import initial_latents, installed

    if isinstance(prompts, str) or len(prompts) != len(seeds):
        raise InvalidSetting.of("seeds", list(seeds), "give one seed per prompt (two lists of the same length)",
                                f"{len(seeds)} seeds for {1 if isinstance(prompts, str) else len(prompts)} prompt(s)")
    shape = latent_shape(pipe)
    f = 2 ** (len(pipe.vae.config.block_out_channels) - 1)
    kw = dict(height=shape[1] * f, width=shape[2] * f, output_type="np")
    fam = type(pipe).__name__
    if fam.startswith("PixArt"):
        kw.update(use_resolution_binning=False, clean_caption=False)
    images, traces = [], []
    for i in range(0, len(prompts), batch):
        lat = initial_latents(seeds[i:i + batch], shape).to(pipe.device, pipe.transformer.dtype)
        with contextlib.ExitStack() as stack:
            if trace is not None:
                from ..tracing import trace as record

                traces.append(stack.enter_context(record(pipe, quantities=None if trace is True else trace)))
            stack.enter_context(installed(pipe, method))
            stack.enter_context(torch.no_grad())
            im = pipe(list(prompts[i:i + batch]), latents=lat, num_inference_steps=steps, guidance_scale=guidance,
                      **kw).images
        images.append(np.clip(np.rint(im * 255), 0, 255).astype(np.uint8))
    images = np.concatenate(images)
    return (images, traces) if trace is not None else images


# -- maps by word ------------------------------------------------------------------------------------
def box_mass(m: torch.Tensor, box: tuple, size: int) -> float:
    """Share of a non-negative map ``m (h, w)`` inside ``box (x0, y0, x1, y1)`` (image pixels, exclusive ends)
    after nearest-neighbour resizing to ``size x size``; see the module docstring."""
    m = torch.as_tensor(m, dtype=torch.float64)
    if m.ndim != 2 or (m < 0).any():
        raise InvalidSetting.of("m", tuple(m.shape), "pass one word's map, e.g. tr.maps(token='circle')[0]",
                                "a non-negative (h, w) map is needed")
    up = torch.nn.functional.interpolate(m[None, None], size=(size, size), mode="nearest")[0, 0]
    tot = float(up.sum())
    if tot <= 0:
        return float("nan")
    x0, y0, x1, y1 = (int(v) for v in box)
    return float(up[y0:y1, x0:x1].sum()) / tot


def find_object(dets, colour: str, shape: str):
    """The largest detection with ``(colour, shape)``; else the largest with that shape; else None."""
    for want in ((colour, shape), (None, shape)):
        hit = [d for d in dets if d.shape == want[1] and (want[0] is None or d.colour == want[0])]
        if hit:
            return max(hit, key=lambda d: d.area)
    return None


@dataclass
class Alignment:
    """Per-word box masses over the seeds where both named objects were found (:func:`map_alignment`)."""

    words: tuple
    seeds: list
    own: dict  # word -> [mass in its own object's box] over the usable seeds
    other: dict  # word -> [mass in the other object's box]
    usable: list  # seeds where both objects were found
    maps: dict = field(default_factory=dict)  # seed -> (2, h, w) maps of the two words
    images: dict = field(default_factory=dict)  # seed -> (S, S, 3) uint8
    boxes: dict = field(default_factory=dict)  # seed -> (box of word 0, box of word 1)

    @property
    def n(self) -> int:
        return len(self.usable)

    def diff(self) -> claims.Mean:
        """Paired ``own - other`` over usable seeds and both words (a seed contributes its two words' mean)."""
        a = np.mean([self.own[w] for w in self.words], 0)
        b = np.mean([self.other[w] for w in self.words], 0)
        return claims.paired_diff(a, b)

    def similarity(self, seeds: Optional[Sequence[int]] = None) -> claims.Mean:
        """Pearson correlation of the two words' maps (over the grid cells), mean over ``seeds`` (default: every
        traced seed): near 1 when both words look at the same places, i.e. the maps do not tell them apart."""
        rs = []
        for sd in (self.seeds if seeds is None else seeds):
            a, b = (x.flatten().double() for x in self.maps[sd][:2])
            rs.append(float(torch.corrcoef(torch.stack([a, b]))[0, 1]))
        return claims.Mean(float(np.mean(rs)), float(np.std(rs, ddof=1)) if len(rs) > 1 else 0.0, len(rs), (-1.0, 1.0))

    def word_means(self) -> dict:
        return {w: (claims.mean(self.own[w]), claims.mean(self.other[w])) for w in self.words}


def map_alignment(pipe, objects=(("red", "circle"), ("blue", "square")), seeds: Sequence[int] = range(8),
                  steps: int = 20, guidance: float = 3.0) -> Alignment:
    """Trace ``"a <c1> <s1> and a <c2> <s2>"`` once per seed (one batch), detect the objects
    (:func:`ebca_viz.shapes.detect.detect`) and measure each shape word's map mass in the box of the object it
    names and in the other object's box (:func:`box_mass`; maps: ``tr.maps(token=word, image=i)``, mean over
    steps and cross-attention layers, spatially normalised)."""
    from ..shapes.detect import detect

    (c1, s1), (c2, s2) = objects
    prompt = f"a {c1} {s1} and a {c2} {s2}"
    seeds = list(seeds)
    ims, trs = sample(pipe, [prompt] * len(seeds), seeds, steps=steps, guidance=guidance, trace=True, batch=len(seeds))
    tr = trs[0]
    words = (s1, s2)
    al = Alignment(words, seeds, {w: [] for w in words}, {w: [] for w in words}, [])
    size = ims.shape[1]
    for i, sd in enumerate(seeds):
        m = tr.maps(token=list(words), image=i, normalize="spatial")  # (2, h, w)
        al.maps[sd], al.images[sd] = m, ims[i]
        dets = list(detect(ims[i]))
        o1, o2 = find_object(dets, c1, s1), find_object(dets, c2, s2)
        if o1 is None or o2 is None or o1 is o2:
            continue
        al.usable.append(sd)
        al.boxes[sd] = (o1.bbox, o2.bbox)
        for j, (own, oth) in enumerate(((o1, o2), (o2, o1))):
            al.own[words[j]].append(box_mass(m[j], own.bbox, size))
            al.other[words[j]].append(box_mass(m[j], oth.bbox, size))
    return al


# -- SEG ---------------------------------------------------------------------------------------------
def seg_change(pipe, prompt: str, seeds: Sequence[int], config, steps: int = 20, guidance: float = 3.0):
    """``(vanilla images, SEG images, mean |difference| per seed (grey levels 0-255))``, same latents."""
    seeds = list(seeds)
    a = sample(pipe, [prompt] * len(seeds), seeds, steps=steps, guidance=guidance)
    b = sample(pipe, [prompt] * len(seeds), seeds, method=config, steps=steps, guidance=guidance)
    d = np.abs(a.astype(np.float64) - b.astype(np.float64)).reshape(len(seeds), -1).mean(1)
    return a, b, d


# -- EBCU benchmark ----------------------------------------------------------------------------------
@dataclass
class WorldRates:
    """Both-present rates (Wilson 95 %) and paired differences to vanilla of one world's benchmark."""

    source: str  # file path, or "live"
    n: int
    rates: dict  # method -> claims.Rate
    diffs: dict  # method -> claims.Mean (method - vanilla, paired)
    chosen: dict = field(default_factory=dict)
    fingerprint: dict = field(default_factory=dict)


def _rate_from(p: float, n: int) -> claims.Rate:
    return claims.Rate(int(round(p * n)), int(n))


def _mean_from(diff: float, se: float, n: int) -> claims.Mean:
    return claims.Mean(float(diff), float(se) * math.sqrt(n), int(n), (-1.0, 1.0))


def find_dit_benchmark(root: Path = ROOT) -> Optional[Path]:
    """The first of :data:`DIT_RESULT_PATHS` under ``root`` that exists, else None."""
    for p in DIT_RESULT_PATHS:
        if (Path(root) / p).is_file():
            return Path(root) / p
    return None


def load_dit_benchmark(path, pipe=None) -> WorldRates:
    """The DiT world's benchmark as ``benchmarks/train_dit_world.py benchmark --ship-to`` writes it (the
    fingerprinted :func:`ebca_viz.experiments.shipped.write` wrapper around :func:`ebca_viz.shapes.dit_eval.benchmark`'s
    result; refused when its digest fails or, with ``pipe``, when it was made with other weights): both-present
    rate per method on the two-object report split, paired difference to vanilla (its stored mean and SE)."""
    from . import shipped

    path = Path(path)
    data = shipped.load(path, {"weights_sha256": shipped.weights_sha256(pipe)} if pipe is not None else None)
    res = data["results"]
    pair = res["report"]["pair"]
    n = int(res["report"].get("n_pair") or pair["vanilla"]["both_present"]["n"])
    rates, diffs = {}, {}
    for m in METHODS:
        if m not in pair:
            raise InvalidSetting(f"{path}: method {m!r} is missing (it has {list(pair)}); re-run "
                                 "`python benchmarks/train_dit_world.py benchmark`")
        bp = pair[m]["both_present"]
        rates[m] = _rate_from(bp["p"], bp["n"])
        if m != "vanilla":
            vv = bp["vs_vanilla"]
            diffs[m] = _mean_from(vv["diff"], vv["se"], bp["n"])
    return WorldRates(str(path), n, rates, diffs, dict(res.get("chosen", {})), dict(data["fingerprint"]))


def live_benchmark(pipe, n: int, gamma_attn: float, gamma_norm: float, upweight: float, steps: int = 20,
                   guidance: float = 3.0, seed_base: int = 0) -> WorldRates:
    """The benchmark's report split re-sampled live at small ``n`` (first ``n`` report prompts and seeds of
    :func:`ebca_viz.shapes.dit_eval.benchmark`): vanilla, EBCU, EBCU + up-weight on the shape nouns
    (:data:`ebca_viz.shapes.dit_eval.SHAPE_TOKENS`), detector verdicts, paired differences."""
    from ..shapes import neglect
    from ..shapes.benchmark import make_config, prompt_set, score_images
    from ..shapes.dit_eval import SHAPE_TOKENS

    items, prompts, seeds = (x[:n] for x in prompt_set(neglect.two_object_prompts("report"), n, seed_base))
    cfgs = {"vanilla": None, "EBCU": make_config(gamma_attn, gamma_norm),
            "EBCU + up-weight": make_config(gamma_attn, gamma_norm, upweight, tokens=SHAPE_TOKENS)}
    scores = {m: score_images(items, sample(pipe, prompts, seeds, method=c, steps=steps, guidance=guidance), True)
              for m, c in cfgs.items()}
    rates = {m: claims.rate(s["both_present"]) for m, s in scores.items()}
    diffs = {m: claims.paired_diff(scores[m]["both_present"], scores["vanilla"]["both_present"]) for m in METHODS[1:]}
    return WorldRates("live", len(items), rates, diffs,
                      dict(gamma_attn=gamma_attn, gamma_norm=gamma_norm, upweight=upweight, token_indices=SHAPE_TOKENS))


def unet_rates(report) -> WorldRates:
    """The UNet neglect world's :class:`~ebca_viz.experiments.neglect.ComparisonReport` as :class:`WorldRates`."""
    rates = {m: report.rate(m) for m in METHODS}
    diffs = {m: report.diff(m) for m in METHODS[1:]}
    return WorldRates(f"docs/neglect_comparison_{report.model}.json", report.pairs.n, rates, diffs)


def plot_world_bars(worlds: dict, title: str = "both requested objects present (95 % Wilson interval)"):
    """One bar chart: for each method a bar per world (``{label: WorldRates}``), with its interval."""
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(8, 4.2))
    k = len(worlds)
    wd = 0.8 / k
    colours = ("#4c72b0", "#dd8452", "#55a868")
    for j, (lab, wr) in enumerate(worlds.items()):
        xs = np.arange(len(METHODS)) + (j - (k - 1) / 2) * wd
        ps = [wr.rates[m].p for m in METHODS]
        err = [[max(0.0, p - wr.rates[m].lo) for p, m in zip(ps, METHODS)],
               [max(0.0, wr.rates[m].hi - p) for p, m in zip(ps, METHODS)]]
        ax.bar(xs, ps, wd * 0.95, yerr=err, capsize=4, color=colours[j % 3], label=f"{lab} (n = {wr.n})")
        for x, p, m in zip(xs, ps, METHODS):
            ax.text(x, wr.rates[m].hi + 0.015, f"{100 * p:.0f} %", ha="center", va="bottom", fontsize=10)
    ax.set_xticks(np.arange(len(METHODS)), METHODS, fontsize=11)
    ax.set_ylabel("rate", fontsize=11)
    ax.set_ylim(0, 1)
    ax.tick_params(labelsize=10)
    ax.set_title(title, fontsize=11)
    ax.legend(fontsize=10, loc="upper left")
    fig.tight_layout()
    plt.close(fig)
    return fig


def plot_word_maps(al: Alignment, seed_list: Sequence[int], title: str = ""):
    """Rows: seeds; columns: the sample (boxes of the found objects drawn), then each word's map (its own colour
    bar; spatially normalised, so a cell's value is its share of the word's attention)."""
    import matplotlib.pyplot as plt
    from matplotlib.patches import Rectangle

    rows = len(seed_list)
    fig, axs = plt.subplots(rows, 3, figsize=(8.5, 2.7 * rows + 0.6), squeeze=False)
    for r, sd in enumerate(seed_list):
        im = al.images[sd]
        axs[r, 0].imshow(im, interpolation="nearest")
        axs[r, 0].set_title(f"seed {sd}", fontsize=10)
        boxes = al.boxes.get(sd)
        for j, w in enumerate(al.words):
            m = al.maps[sd][j].numpy()
            S = im.shape[0]
            h, wd = m.shape
            ax = axs[r, j + 1]
            hm = ax.imshow(m, cmap="magma", interpolation="nearest", extent=(0, S, S, 0))
            cb = fig.colorbar(hm, ax=ax, fraction=0.046, pad=0.04)
            cb.ax.tick_params(labelsize=10)
            if boxes:
                for b, col in zip(boxes, ("cyan", "lime")):
                    for a in (axs[r, 0], ax):
                        a.add_patch(Rectangle((b[0] - 0.5, b[1] - 0.5), b[2] - b[0], b[3] - b[1], fill=False,
                                              edgecolor=col, lw=1.5))
                ms = box_mass(al.maps[sd][j], boxes[j], S)
                ax.set_title(f"'{w}': {100 * ms:.0f} % in its box", fontsize=10)
            else:
                ax.set_title(f"'{w}' ({h}x{wd} map)", fontsize=10)
        for a in axs[r]:
            a.set_xticks([]), a.set_yticks([])
    if title:
        fig.suptitle(title, fontsize=11)
    fig.tight_layout()
    plt.close(fig)
    return fig


def plot_pair(a: np.ndarray, b: np.ndarray, titles=("vanilla", "SEG"), scale: int = 4):
    """Two samples side by side and their ``|difference|`` (x4, clipped), nearest-neighbour."""
    import matplotlib.pyplot as plt

    d = np.clip(np.abs(a.astype(np.int16) - b.astype(np.int16)) * scale, 0, 255).astype(np.uint8)
    fig, axs = plt.subplots(1, 3, figsize=(8, 3.1))
    for ax, im, t in zip(axs, (a, b, d), (*titles, f"|difference| x{scale}")):
        ax.imshow(im, interpolation="nearest")
        ax.set_title(t, fontsize=11)
        ax.set_xticks([]), ax.set_yticks([])
    fig.tight_layout()
    plt.close(fig)
    return fig




# -- token labels per segment ------------------------------------------------------------------------
def segment_labels(tr, pipe, prompt: str) -> list:
    """Per text segment of a DiT trace: ``{"name", "tokenizer" (class), "words" (the trace's labels, padding and
    special tokens left out), "expected" (the segment's own tokenizer's pieces of ``prompt``), "padding" (positions
    marked padding), "length", "match"}``."""
    special = {"<|startoftext|>", "<|endoftext|>", "</s>", "<pad>", "<s>"}
    toks, pad = tr.tokens, tr.padding
    rows = []
    for seg in tr.text_segments:
        a, n = seg["start"], seg["length"]
        tok = getattr(pipe, seg["tokenizer"])
        words = [w for w, p in zip(toks[a:a + n], pad[a:a + n]) if not p and w not in special]
        expected = [x for x in (p.replace("</w>", "").lstrip("▁") for p in tok.tokenize(prompt)) if x]
        rows.append(dict(name=seg["name"], tokenizer=type(tok).__name__, attr=seg["tokenizer"], words=words,
                         expected=expected, padding=int(sum(pad[a:a + n])), length=n, match=words == expected))
    return rows


__all__ = ["describe", "sample", "latent_shape", "box_mass", "find_object", "Alignment", "map_alignment",
           "seg_change", "WorldRates", "find_dit_benchmark", "load_dit_benchmark", "live_benchmark", "unet_rates",
           "plot_world_bars", "plot_word_maps", "plot_pair", "segment_labels", "DIT_RESULT_PATHS", "METHODS"]
