r"""Text-guided inpainting on the shapes world, measured: known-region fidelity and prompt following.

Scenes (:func:`make_cases`): one known object drawn by :mod:`ebca_viz.shapes.world`, a box mask,
and a prompt asking for a second object of another colour. Designs:

* ``"side-full"`` (default): the known object lies wholly in one half (left or right, at random;
  its box keeps a 1 px margin from the centre line), the mask is the whole *other* half
  (``S/2 x S``), so the mask never touches the known object;
* ``"side"``: the same, the mask only the ``S/2 x S/2`` box (rows ``S/4 .. 3S/4``) of the other half;
* ``"legacy"``: the first design of this experiment: a random one-object scene, the mask in the half
  not holding the object's centre (it may cut into the object).

Prompts (``prompt=``):

* ``"scene"`` (default): the caption of the desired scene, both objects, in random order
  (``"a green square and a red circle"``): the model was trained on captions naming *every* object
  in the picture, so this is the prompt of a scene it knows. Real-SD users also describe the whole image;
* ``"object"``: the new object only (``"a red circle"``), the first version of this experiment. With
  a known object in the picture that caption describes a scene the model never saw, and RePaint
  mostly leaves the box empty (``benchmarks/shapes_inpaint_sweep.py``, ``docs/shapes_inpaint.md``).

Each case also holds ``other``: an object of a third colour and another shape, for the
"another object" control (same prompt style, ``other`` in place of ``target``).

Per scene, with ``x`` the source, ``y`` the result and ``K`` the known pixels (mask 0):

* ``mae_out = mean_{K} |y - x|`` in [0, 255] (and ``max_out``), for the pasted result and for the
  raw decoded one (``extras["decoded"]``);
* the floor: the same error of the VAE round trip ``D(E(x))`` (posterior mode), the best a latent
  method can do without paste-back;
* ``follows``: the detector finds the prompted ``(colour, shape)`` with its box centre inside the mask;
* ``kept``: the detector still finds the known object.

Conditions share scenes and seeds (paired): the prompt with no update (gamma 0), with masked EBCU
at each gamma given, and controls: the empty prompt and a prompt asking for another object; their
``follows`` (of the *target*) is how often the target appears without being asked for.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Optional

import numpy as np
from .. import claims
from ..shapes import world
from ..shapes.benchmark import vae_roundtrip_images
from ..shapes.detect import detect
from ..errors import InvalidSetting

CONTROL = "control: empty prompt"
OTHER = "control: another object"
DESIGNS = ("side-full", "side", "legacy")
PROMPTS = ("scene", "object")
CONTROLS = ("empty", "other")
# Report scenes: seed 0 (Case.seed 0..n-1); the sweep tunes on seed 100 (Case.seed 100000+): disjoint.
REPORT_SEED = 0
TUNE_SEED = 100


@dataclass
class Case:
    source: np.ndarray  # (S, S, 3) uint8
    mask: np.ndarray  # (S, S) uint8, 255 = inpaint
    prompt: str
    target: tuple  # (colour, shape) asked for
    kept: tuple  # (colour, shape) of the known object
    seed: int
    other: tuple = None  # (colour, shape) of the "another object" control
    control_prompt: str = None  # the prompt of that control


def _prompt(style: str, kept: tuple, new: tuple, kept_first: bool) -> str:
    if style == "object":
        return world.caption_for([new])
    return world.caption_for([kept, new] if kept_first else [new, kept])


def _other(kept: tuple, target: tuple, i: int) -> tuple:
    """A third colour and another shape (deterministic in ``i``)."""
    cands = [p for p in world.single_prompts() if p[0] not in (kept[0], target[0]) and p[1] != target[1]]
    return cands[i % len(cands)]


def make_cases(n: int, seed: int = REPORT_SEED, size: int = world.IMAGE_SIZE, design: str = "side-full",
               prompt: str = "scene") -> list:
    """``n`` scenes with masks and prompts (see the module docstring); deterministic from ``seed``."""
    if isinstance(n, bool) or not isinstance(n, int) or n < 1:
        raise InvalidSetting(f"n must be an int >= 1, got {n!r}")
    if design not in DESIGNS:
        raise InvalidSetting(f"design must be one of {DESIGNS}, got {design!r}")
    if prompt not in PROMPTS:
        raise InvalidSetting(f"prompt must be one of {PROMPTS}, got {prompt!r}")
    rng = np.random.default_rng(seed)
    singles = world.single_prompts()
    out = []
    for i in range(n):
        m = np.zeros((size, size), np.uint8)
        if design == "legacy":  # the first version, unchanged draws: make_scene, then the target cycles
            sc = world.make_scene(rng, size=size, p_two=0.0)
            obj = sc.objects[0]
            kept = (obj.colour, obj.shape)
            cands = [p for p in singles if p[0] != kept[0]]
            target = cands[i % len(cands)]
            x0 = 0 if (obj.bbox[0] + obj.bbox[2]) / 2 >= size / 2 else size // 2
            m[size // 4: 3 * size // 4, x0: x0 + size // 2] = 255
            image, kept_first = sc.image, bool(i % 2)
        else:
            k = size / world.IMAGE_SIZE
            kept = singles[int(rng.integers(len(singles)))]
            cands = [p for p in singles if p[0] != kept[0]]
            target = cands[int(rng.integers(len(cands)))]
            left = bool(rng.random() < 0.5)
            s = float(rng.uniform(world.SIZE_RANGE[0] * k, world.SIZE_RANGE[1] * k))
            cx = float(rng.uniform(k + s / 2, size / 2 - k - s / 2))  # box in [k, S/2 - k]
            cy = float(rng.uniform(k + s / 2, size - k - s / 2))
            kept_first = bool(rng.random() < 0.5)  # training captions list the objects in random order
            image, _ = world.render([world.ObjectSpec(kept[1], kept[0], cx if left else size - cx, cy, s)], size)
            x0 = size // 2 if left else 0
            rows = slice(0, size) if design == "side-full" else slice(size // 4, 3 * size // 4)
            m[rows, x0: x0 + size // 2] = 255
        other = _other(kept, target, i)
        out.append(Case(image, m, _prompt(prompt, kept, target, kept_first), target, kept, seed * 1000 + i,
                        other, _prompt(prompt, kept, other, kept_first)))
    return out


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
    prompts: list = None  # per image: the prompt this condition used
    asked: claims.Rate = None  # the object this condition's prompt asks for ("another object" control: ``other``) found in the mask
    asked_verdicts: list = None
    raw_errors: list = None  # per scene: mean |decoded - source| outside the mask (shipped results carry no images)


@dataclass
class InpaintResult:
    cases: list
    floor_mae: claims.Mean  # VAE round trip, outside the mask
    floor_max: float
    roundtrip: np.ndarray
    conditions: dict = field(default_factory=dict)
    settings: dict = field(default_factory=dict)
    floor_errors: list = None  # per scene: the VAE round trip's mean error outside the mask
    changes: dict = field(default_factory=dict)  # condition -> per scene mean |decoded - decoded without update|

    def vs(self, a: str, b: str) -> claims.Mean:
        """Paired difference of ``follows`` (a - b, same scenes and seeds)."""
        return claims.paired_diff(self.conditions[a].verdicts, self.conditions[b].verdicts)


def _run_condition(pipe, cases, name, prompts, gamma, steps, guidance, jump_length, jump_n_sample, paste_feather,
                   asked=None):
    """``asked``: per case the (colour, shape) the prompt asks for (None: the target; "" for none)."""
    from PIL import Image

    from ..tasks.inpainting import inpaint

    ims, raws = [], []
    for c, prompt in zip(cases, prompts):
        r = inpaint(pipe, Image.fromarray(c.source), Image.fromarray(c.mask), prompt, repaint=True, gamma_attn=gamma,
                    gamma_norm=gamma, seed=c.seed, num_inference_steps=steps, guidance_scale=guidance,
                    jump_length=jump_length, jump_n_sample=jump_n_sample, paste_feather=paste_feather)
        ims.append(np.asarray(r.image))
        raws.append(np.asarray(r.extras["decoded"][0]))
    ims, raws = np.stack(ims), np.stack(raws)
    e = [outside_error(ims[i], c.source, c.mask) for i, c in enumerate(cases)]
    er = [outside_error(raws[i], c.source, c.mask) for i, c in enumerate(cases)]
    v = [follows(ims[i], c.target, c.mask) for i, c in enumerate(cases)]
    kept = [any(d.key == c.kept for d in detect(ims[i])) for i, c in enumerate(cases)]
    if asked is None:
        av = list(v)
    elif asked == "":
        av = None
    else:
        av = [follows(ims[i], asked[i], c.mask) for i, c in enumerate(cases)]
    return Condition(name, claims.rate(v), claims.rate(kept), claims.mean([x[0] for x in e]), max(x[1] for x in e),
                     claims.mean([x[0] for x in er]), max(x[1] for x in er), ims, raws, v, list(prompts),
                     claims.rate(av) if av is not None else None, av)


def measure_inpainting(pipe, n: int = 32, steps: int = 25, guidance: float = 3.0, gammas=(0.025,), jump_length: int = 5,
            jump_n_sample: int = 2, seed: int = REPORT_SEED, paste_feather=None, design: str = "side-full",
            prompt: str = "scene", controls=CONTROLS, cases=None) -> InpaintResult:
    """Run every condition on the same :func:`make_cases` scenes (see the module docstring).

    ``controls``: any of ``"empty"`` (:data:`CONTROL`) and ``"other"`` (:data:`OTHER`); ``cases``:
    your own :class:`Case` list instead of ``make_cases(n, seed, design=design, prompt=prompt)``.
    Defaults (design ``"side-full"``, prompt ``"scene"``, RePaint 5/2, CFG 3): chosen by the sweep
    ``benchmarks/shapes_inpaint_sweep.py`` on tuning scenes (``docs/shapes_inpaint.md``)."""
    bad = [c for c in controls if c not in CONTROLS]
    if bad:
        raise InvalidSetting(f"controls must be a subset of {CONTROLS}, got {list(controls)!r}")
    size = int(pipe.unet.config.sample_size) * int(pipe.vae_scale_factor)
    if cases is None:
        cases = make_cases(n, seed, size=size, design=design, prompt=prompt)
    elif not cases or any(c.source.shape[:2] != (size, size) for c in cases):
        raise InvalidSetting(f"cases must be a non-empty list of Case with {size}x{size} images (this pipeline's size)")
    src = np.stack([c.source for c in cases])
    rt = vae_roundtrip_images(pipe, src)
    fl = [outside_error(rt[i], c.source, c.mask) for i, c in enumerate(cases)]
    res = InpaintResult(cases, claims.mean([f[0] for f in fl]), max(f[1] for f in fl), rt,
                        settings=dict(n=len(cases), steps=steps, guidance=guidance, jump_length=jump_length,
                                      jump_n_sample=jump_n_sample, gammas=list(gammas), design=design,
                                      prompt=prompt, seed=seed, controls=list(controls)))
    conds = [("no update (gamma 0)", 0.0, [c.prompt for c in cases], None)]
    conds += [(f"masked EBCU (gamma {g:g})", g, [c.prompt for c in cases], None) for g in gammas]
    if "empty" in controls:
        conds.append((CONTROL, 0.0, [""] * len(cases), ""))
    if "other" in controls:
        conds.append((OTHER, 0.0, [c.control_prompt for c in cases], [c.other for c in cases]))
    for name, g, prompts, asked in conds:
        res.conditions[name] = _run_condition(pipe, cases, name, prompts, g, steps, guidance, jump_length,
                                              jump_n_sample, paste_feather, asked)
    return res


def sweep_inpaint(pipe, n: int = 16, steps: int = 25, seed: int = TUNE_SEED) -> dict:
    """The tuning sweep behind :func:`measure_inpainting`'s defaults, on tuning scenes (``seed`` 100, disjoint
    from the report scenes, seed 0). Rows: prompt following per scene design x prompt style, then
    RePaint resampling and CFG at the chosen design, and the two controls. Choice rule: the design x
    prompt with the highest ``follows`` rate; resampling (5/2) and CFG (3, the model's regime) are
    kept unless another row's 95 % lower bound lies above their rate (as ``benchmarks/shapes_sweep.py``).
    Returns ``{"rows", "chosen", "criterion"}``."""
    import time

    rows = []

    def row(setting, design, prompt, jl=5, jn=2, guidance=3.0, control=None):
        t0 = time.perf_counter()
        size = int(pipe.unet.config.sample_size) * int(pipe.vae_scale_factor)
        cases = make_cases(n, seed, size=size, design=design, prompt=prompt)
        prompts = [c.prompt for c in cases] if control is None else \
            ([""] * n if control == "empty" else [c.control_prompt for c in cases])
        asked = None if control is None else ("" if control == "empty" else [x.other for x in cases])
        c = _run_condition(pipe, cases, setting, prompts, 0.0, steps, guidance, jl, jn, None, asked)
        r = dict(setting=setting, design=design, prompt=prompt, jump_length=jl, jump_n_sample=jn, guidance=guidance,
                 control=control or "-", n=n, follows=c.follows.to_json(), kept=c.kept.to_json(),
                 mae_out=c.mae_out.to_json(), asked=c.asked.to_json() if c.asked else None, seconds=round(time.perf_counter() - t0, 1), verdicts=c.verdicts)
        rows.append(r)
        return r

    for design in ("legacy", "side", "side-full"):
        for prompt in ("object", "scene"):
            row(f"{design}, {prompt} prompt", design, prompt)
    grid = [r for r in rows]
    best = max(grid, key=lambda r: r["follows"]["p"])
    d, pr = best["design"], best["prompt"]
    current = best
    tried = [row(f"{d}, {pr}: no resampling (1/1)", d, pr, jl=1, jn=1),
             row(f"{d}, {pr}: resampling 5/4", d, pr, jl=5, jn=4),
             row(f"{d}, {pr}: CFG 1.5", d, pr, guidance=1.5),
             row(f"{d}, {pr}: CFG 5", d, pr, guidance=5.0)]
    better = [r for r in tried if r["follows"]["lo"] > current["follows"]["p"]]
    pick = max(better, key=lambda r: r["follows"]["p"]) if better else current
    row(f"{d}, {pr}: control, empty prompt", d, pr, control="empty")
    row(f"{d}, {pr}: control, another object", d, pr, control="other")
    chosen = dict(design=d, prompt=pr, jump_length=pick["jump_length"], jump_n_sample=pick["jump_n_sample"],
                  guidance=pick["guidance"])
    for r in rows:
        r.pop("verdicts")
    return {"rows": rows, "chosen": chosen,
            "criterion": "follows (prompted object inside the mask): best design x prompt; resampling 5/2 and CFG 3 "
                         "kept unless another row's 95 % lower bound is above their rate"}


def _result_title(c, case, j) -> str:
    t = f"{case.target[0]} {case.target[1]}: {'found' if c.verdicts[j] else 'NOT found'}"
    if c.name == OTHER and c.asked_verdicts is not None and case.other is not None:
        t = f"asked, {case.other[0]} {case.other[1]}: {'found' if c.asked_verdicts[j] else 'NOT found'}\n" \
            f"target, {case.target[0]} {case.target[1]}: {'found' if c.verdicts[j] else 'no'}"
    prompt = c.prompts[j] if c.prompts else case.prompt
    prompt = prompt.replace(" and ", " and\n", 1) if len(prompt) > 28 else prompt
    return f"'{prompt}'\n{t}"


def plot_examples(res: InpaintResult, condition: str, k: int = 4, size: float = 2.6, fontsize: float = 10):
    """Rows: source / mask / result (detector verdicts in its title) / ``|decoded - source|`` outside
    the mask (before paste-back; the pasted result's error there is printed in that title: 0 with
    paste-back, so it gets no all-black panel of its own)."""
    from ..plots import new_figure

    c = res.conditions[condition]
    k = min(k, len(res.cases))
    fig = new_figure(figsize=(size * k + 0.9, 4 * size + 3.2))
    axs = fig.subplots(4, k, squeeze=False)
    shown = None
    for j in range(k):
        case = res.cases[j]
        out = (case.mask == 0)[..., None]
        dp = (np.abs(c.images[j].astype(int) - case.source.astype(int)) * out).max(-1)
        dr = (np.abs(c.raw[j].astype(int) - case.source.astype(int)) * out).max(-1)
        panels = [(case.source, f"source: {case.kept[0]} {case.kept[1]}"), (case.mask, "mask (white = inpaint)"),
                  (c.images[j], _result_title(c, case, j)),
                  (dr, f"|decoded - src| outside, max {dr.max()}\n(pasted result: max {dp.max()})")]
        for i, (im, t) in enumerate(panels):
            ax = axs[i, j]
            if i == 3:
                shown = ax.imshow(im, cmap="magma", vmin=0, vmax=64, interpolation="nearest")
            else:
                ax.imshow(im, cmap="gray" if im.ndim == 2 else None, interpolation="nearest",
                          **({"vmin": 0, "vmax": 1} if im.ndim == 2 else {}))
            ax.set_title(t, fontsize=fontsize)
            ax.set_xticks([])
            ax.set_yticks([])  # a frame, so the mask's white half reads against the page
    fig.suptitle(f"{condition}: the first {k} scenes (found = in the mask)", fontsize=fontsize + 1)
    fig.tight_layout(rect=(0, 0, 0.9, 1 - 0.45 / fig.get_figheight()))
    fig.subplots_adjust(hspace=0.75)  # four-line titles over the result row
    cax = fig.add_axes((0.91, 0.04, 0.015, 0.17))
    cb = fig.colorbar(shown, cax=cax, extend="max")
    cb.set_label("grey levels", fontsize=fontsize)
    cb.ax.tick_params(labelsize=fontsize)
    return fig


# ---- the demo, the report and the shipped results (notebook 06) --------------------------------------
DEMO_GAMMAS = {"no update (gamma 0)": 0.0, "masked EBCU (gamma 0.025)": 0.025}


def run_pair(pipe, photo, mask, prompt: str, seed: int, gammas: Optional[dict] = None, **kw) -> dict:
    """``{name: (InpaintingResult, Trace)}``: one :func:`~ebca_viz.tasks.inpaint` run per ``gammas``
    entry (default :data:`DEMO_GAMMAS`), each under a trace; ``kw`` go to ``inpaint``."""
    from .. import trace
    from ..tasks.inpainting import inpaint

    runs = {}
    for name, g in (gammas or DEMO_GAMMAS).items():
        with trace(pipe) as tr:
            res = inpaint(pipe, photo, mask, prompt, gamma_attn=g, gamma_norm=g, seed=seed, **kw)
        runs[name] = (res, tr)
    return runs


def demo_panels(runs: dict, fontsize_note: bool = True):
    """The demo figure's panels and what they say, from :func:`run_pair` output.

    Returns ``(panels, lines, exact)``: ``panels`` ``{title: image}`` (source, mask, gamma 0 decoded
    and pasted; the masked-EBCU image only when it differs visibly: mean |diff| >= 1 grey level),
    ``lines`` the printed numbers (error outside the mask, the EBCU-vs-gamma-0 difference, said as a
    null result when it is one), ``exact``: with paste-back every known pixel equals the source's."""
    first = next(iter(runs.values()))[0]
    src = np.asarray(first.extras["source"]).astype(int)
    keep = np.asarray(first.extras["mask"]) == 0
    panels = {"source": first.extras["source"], "mask\n(white = inpaint)": first.extras["mask"]}
    lines = []
    for k, (r, _) in runs.items():
        for label, im in (("decoded", r.extras["decoded"][0]), ("pasted", r.image)):
            err = np.abs(np.asarray(im).astype(int) - src)[keep]
            lines.append(f"{k}, {label}: outside the mask mean |diff| {err.mean():.2f}, max {err.max()} (of 255)")
    (r0, _), (r1, _) = list(runs.values())[:2]
    raw_err = np.abs(np.asarray(r0.extras["decoded"][0]).astype(int) - src)[keep].max()
    panels[f"gamma 0, decoded\nmax error out: {raw_err}"] = r0.extras["decoded"][0]
    panels["gamma 0, pasted\nmax error out: 0"] = r0.image
    d01 = np.abs(np.asarray(r1.image).astype(int) - np.asarray(r0.image).astype(int))
    name1 = list(runs)[1]
    if d01.mean() >= 1.0:
        panels[f"{name1}, pasted\nmean |diff| to gamma 0: {d01.mean():.1f}"] = r1.image
        lines.append(f"{name1} vs gamma 0 on this scene: mean |diff| {d01.mean():.2f}, max {d01.max()} (of 255): shown")
    else:
        lines.append(f"{name1} vs gamma 0 on this scene: mean |diff| {d01.mean():.3f}, max {d01.max()} of 255 -- a null "
                     "result on this scene: side by side the two images look identical, so only gamma 0 is shown "
                     "(the measurement below compares them over every report scene)")
    exact = max(np.abs(np.asarray(r.image).astype(int) - src)[keep].max() for r, _ in runs.values()) == 0
    return panels, lines, exact


def report_lines(M: "InpaintResult", g_list) -> list:
    """The measured numbers of :func:`measure_inpainting` (or :func:`load_shipped`) as printable lines."""
    N = len(M.cases)
    out = [f"{N} report scenes (seed {M.settings['seed']}), {M.settings['steps']} steps, CFG {M.settings['guidance']:g}, "
           f"RePaint {M.settings['jump_length']}/{M.settings['jump_n_sample']}",
           f"VAE round trip (floor), outside the mask: mean |diff| {M.floor_mae.fmt(3)} of 255, max {M.floor_max:.0f}"]
    for name, c in M.conditions.items():
        out.append(f"{name}: prompted object inside the mask {c.follows}; known object kept {c.kept}")
        out.append(f"    outside the mask: pasted {c.mae_out.fmt(3)} (max {c.max_out:.0f}); decoded only "
                   f"{c.raw_mae_out.fmt(3)} (max {c.raw_max_out:.0f})")
    return out


def ebcu_null_lines(M: "InpaintResult", gammas) -> tuple:
    """Per gamma: the masked-EBCU vs no-update paired difference in prompt following and the pixel
    change, as printed lines; returns ``(lines, {gamma: paired Mean})``."""
    base = M.conditions["no update (gamma 0)"]
    lines, diffs = [], {}
    N = len(M.cases)
    for g in gammas:
        cg = M.conditions[f"masked EBCU (gamma {g:g})"]
        d = M.vs(cg.name, base.name)
        diffs[g] = d
        verdict = "a measurable change" if d.excludes_zero else "no measurable change (a null result)"
        lines.append(f"masked EBCU gamma {g:g} vs no update, prompted object found: {cg.follows.k}/{N} vs {base.follows.k}/{N}, "
                     f"{100 * d.value:+.0f} pts (95 % CI {100 * d.lo:+.0f} to {100 * d.hi:+.0f} pts, n = {d.n}): {verdict}")
        ch = claims.mean(M.changes[cg.name])
        moved = "does change the pixels measurably" if ch.lo > 0 else "changes the pixels too little to measure"
        lines.append(f"    the update {moved}: mean |diff| to no update (decoded) {ch.fmt(3)} of 255")
    return lines, diffs


SHIPPED_PATH = "docs/shapes_inpaint_report.json"
REPORT_GAMMAS = (0.025, 0.3)


def shipped_fingerprint(weights: str, n: int, steps: int, guidance: float, gammas=REPORT_GAMMAS, jump_length: int = 5,
                        jump_n_sample: int = 2) -> dict:
    """What determines ``docs/shapes_inpaint_report.json``: weights, scenes, settings."""
    return {"weights_sha256": weights,
            "settings": {"steps": steps, "guidance": guidance, "gammas": list(gammas), "jump_length": jump_length,
                         "jump_n_sample": jump_n_sample, "design": "side-full", "prompt": "scene",
                         "controls": list(CONTROLS)},
            "seeds": {"report": [REPORT_SEED, n]}}


def _cond_json(c: Condition) -> dict:
    return dict(name=c.name, verdicts=[bool(v) for v in c.verdicts], kept=c.kept.to_json(), mae_out=c.mae_out.to_json(),
                max_out=c.max_out, raw_mae_out=c.raw_mae_out.to_json(), raw_max_out=c.raw_max_out,
                prompts=c.prompts, asked_verdicts=None if c.asked_verdicts is None else [bool(v) for v in c.asked_verdicts],
                raw_errors=c.raw_errors)


def run_shipped(pipe, n: int = 32, steps: int = 25, guidance: float = 3.0, gammas=REPORT_GAMMAS, log=print) -> dict:
    """Notebook 06's measurement at full size (:func:`measure_inpainting` on ``n`` report scenes), as JSON with
    per-scene verdicts and errors."""
    import time

    t = time.perf_counter()
    M = measure_inpainting(pipe, n=n, steps=steps, guidance=guidance, gammas=gammas, jump_length=5, jump_n_sample=2, seed=REPORT_SEED)
    base = M.conditions["no update (gamma 0)"]
    conds = {}
    for name, c in M.conditions.items():
        c.raw_errors = [outside_error(c.raw[i], cs.source, cs.mask)[0] for i, cs in enumerate(M.cases)]
        conds[name] = _cond_json(c)
        conds[name]["change_vs_no_update"] = np.abs(c.raw.astype(float) - base.raw.astype(float)).mean((1, 2, 3)).tolist()
    log(f"inpainting report: {time.perf_counter() - t:.0f} s")
    return dict(settings=dict(M.settings, size=int(M.cases[0].source.shape[0])), floor_errors=[outside_error(M.roundtrip[i], c.source, c.mask)[0]
                                                   for i, c in enumerate(M.cases)],
                floor_max=M.floor_max, conditions=conds)


def load_shipped(pipe=None, guidance: Optional[float] = None, path=None) -> tuple:
    """``(InpaintResult, file)``: ``docs/shapes_inpaint_report.json`` checked against this run (weights
    of ``pipe``, CFG), its conditions rebuilt from the per-scene values (no images)."""
    from . import shipped

    f = shipped.load_for_run(SHIPPED_PATH, path, pipe, guidance=guidance)
    R = f["results"]
    st = R["settings"]
    cases = make_cases(st["n"], st["seed"], size=st.get("size", world.IMAGE_SIZE), design=st["design"], prompt=st["prompt"])
    M = InpaintResult(cases, claims.mean(R["floor_errors"]), R["floor_max"], None, settings=st,
                      floor_errors=R["floor_errors"])

    def mean(d):
        return claims.Mean(d["mean"], d["sd"], d["n"])

    for name, c in R["conditions"].items():
        av = c["asked_verdicts"]
        M.conditions[name] = Condition(name, claims.rate(c["verdicts"]), claims.Rate(c["kept"]["k"], c["kept"]["n"]),
                                       mean(c["mae_out"]), c["max_out"], mean(c["raw_mae_out"]), c["raw_max_out"],
                                       None, None, c["verdicts"], c["prompts"],
                                       claims.rate(av) if av is not None else None, av, c["raw_errors"])
        M.changes[name] = c["change_vs_no_update"]
    return M, f


def plot_repaint_energies(tr, call_steps, reference=None, kind: str = "posterior"):
    """Mean energy decrease per update over RePaint's UNet calls (x: "UNet call (RePaint, with
    jumps)", the plain sampling step ``k`` of each call on a second panel). ``call_steps`` is
    ``info["repaint"]["call_steps"]``."""
    from ..plots import new_figure, to_numpy

    b, a = to_numpy(tr.energies(kind, "before")), to_numpy(tr.energies(kind, "after"))
    drop = (b - a).mean(1)
    k = np.asarray(call_steps)
    if len(k) != len(drop):
        raise InvalidSetting(f"call_steps has {len(k)} entries but the trace {len(drop)} UNet calls: pass the "
                         "info['repaint']['call_steps'] of the traced run")
    fig = new_figure(figsize=(9, 3.6))
    ax1, ax2 = fig.subplots(1, 2)
    x = np.arange(len(drop))
    ax1.plot(x, drop, "-", color="C1", lw=1)
    jumps = np.nonzero(np.diff(k) <= 0)[0] + 1
    for j in jumps:
        ax1.axvline(j - 0.5, color="gray", lw=0.5, ls=":")
    ax1.set_xlabel("UNet call (RePaint; dotted = jump back)", fontsize=10)
    ax1.set_ylabel("energy drop per update\n(mean over layers)", fontsize=10)
    ax1.set_title(f"{len(drop)} UNet calls over {int(k.max()) + 1} sampling steps", fontsize=10)
    ax2.plot(k, drop, "o", ms=3, color="C1", alpha=0.6)
    ax2.set_xlabel("sampling step of the call (0 = noisiest)", fontsize=10)
    ax2.set_title("the same, against the noise level", fontsize=10)
    for ax in (ax1, ax2):
        ax.tick_params(labelsize=10)
    fig.tight_layout()
    return fig


__all__ = ["Case", "make_cases", "sweep_inpaint", "OTHER", "DESIGNS", "PROMPTS", "CONTROLS", "outside_error", "follows", "Condition", "InpaintResult", "measure_inpainting",
           "plot_examples", "plot_repaint_energies", "CONTROL", "run_pair", "demo_panels", "report_lines", "ebcu_null_lines",
           "run_shipped", "load_shipped", "shipped_fingerprint", "DEMO_GAMMAS", "REPORT_GAMMAS"]
