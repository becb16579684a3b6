r"""Sweeps: prompts x seeds x settings, ONE JSON result file per job, resumable, multi-GPU.

A job is ``(prompt set, prompt index, seed, setting)``; its result file is
``{out}/{setting}/{prompt_set}/{index:03d}_seed{seed}.json`` (plus the ``.png`` when images are
kept). A job whose JSON exists is skipped, so an interrupted sweep resumes where it stopped.

Settings are written ``name[:key=value,key=value]``:

* ``vanilla``                                   -- no update (diffusers' attention)
* ``ebcu:gamma_attn=0.01,gamma_norm=0.02``      -- EBCU (any :func:`~ebca_viz.tasks.multiconcept` argument:
  ``gamma_stop``, ``token_indices=5;7``, ``token_upweight=2.5;2.5``, ``prior_form=paper`` ...)
* ``ae`` / ``ae:max_iter_to_alter=25``          -- diffusers' Attend-and-Excite (:mod:`.ae`): its own
  defaults, ``attn_res`` read from the UNet, subject tokens ``token_indices=objects`` (default)
  or ``token_indices=circle;triangle``. A setting is A&E when its name is ``ae``, ``ae<digits>``
  or starts with ``ae-`` / ``ae_``.

``token_indices`` (EBCU and A&E) takes positions, words (``circle;triangle``, resolved by the
pipeline's tokenizer per prompt) or ``objects``: the object nouns of a shapes-world prompt
(``"a red circle and a blue triangle"`` -> ``circle;triangle``); with ``objects`` one
``token_upweight`` value applies to every object.

Several GPUs: ``accelerate launch -m ebca_viz sweep ...`` -- every process takes its share of the
jobs with ``accelerate.PartialState().split_between_processes(jobs)`` (the full job list is
split, then each process skips what is already done in its share). Several CPU processes:
``torchrun --nproc_per_node N -m ebca_viz sweep ...`` (gloo). Without a launcher it runs all jobs
in one process (CPU or one GPU).
"""
from __future__ import annotations

import json
import os
import re
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional, Sequence
from ..errors import InvalidSetting, RefusedFile

PROMPT_SET_ALIASES = {
    "animal_animal": "animals", "animals": "animals", "animal-animal": "animals",
    "animal_object": "animals_objects", "animals_objects": "animals_objects", "animal-object": "animals_objects",
    "object_object": "objects", "objects": "objects", "object-object": "objects",
}
SHAPES_SETS = {"shapes_pairs": "all", "shapes_tune": "tune", "shapes_report": "report", "shapes_single": "single"}
EBCA_KEYS_FLOAT = ("gamma_attn", "gamma_norm", "gamma_stop", "guidance_scale")
EBCA_KEYS_LIST_INT = ("token_indices",)
EBCA_KEYS_LIST_FLOAT = ("token_upweight",)
CONFIG_KEYS = ("prior_form", "update_uncond", "edit_context")
AE_KEYS = ("token_indices", "max_iter_to_alter", "scale_factor", "thresholds", "attn_res", "guidance_scale")
OBJECTS = "objects"  # token_indices=objects: the object nouns of each (shapes-world) prompt


def is_ae_name(name: str) -> bool:
    """Whether a setting name selects Attend-and-Excite: ``ae``, ``ae2``, ``ae-...``, ``ae_...``."""
    return re.fullmatch(r"ae(\d*|[-_].*)", name) is not None


def _token_list(v: str) -> list:
    """``"3;7"`` -> [3, 7]; ``"circle;triangle"`` -> words; ``"objects"`` -> ``"objects"``."""
    if v.strip() == OBJECTS:
        return OBJECTS
    out = []
    for x in v.split(";"):
        x = x.strip()
        if not x:
            raise InvalidSetting.of("token_indices", v, "separate words or positions by single ';', e.g. circle;triangle",
                                     why="empty token")
        out.append(int(x) if re.fullmatch(r"\d+", x) else x)
    return out


def _parse_ae(spec: str, name: str, rest: str) -> "Setting":
    kw: dict = {"method": "ae", "token_indices": OBJECTS}
    for item in filter(None, (x.strip() for x in rest.split(","))):
        k, eq, v = item.partition("=")
        k, v = k.strip(), v.strip()
        if not eq:
            raise InvalidSetting(f"setting {spec!r}: {item!r} is not key=value; fix: write e.g. "
                                 f"'{name}:token_indices=circle;triangle'")
        if k not in AE_KEYS:
            raise InvalidSetting(f"setting {spec!r}: unknown Attend-and-Excite key {k!r}; known: {list(AE_KEYS)}")
        try:
            if k == "token_indices":
                kw[k] = _token_list(v)
            elif k == "max_iter_to_alter":
                kw[k] = int(v)
            elif k in ("scale_factor", "guidance_scale"):
                kw[k] = float(v)
            elif k == "thresholds":  # "0:0.05;10:0.5;20:0.8"
                kw[k] = {int(a): float(b) for a, b in (t.split(":") for t in v.split(";"))}
            elif k == "attn_res":  # "8x8"
                h, w = (int(x) for x in v.lower().split("x"))
                kw[k] = [h, w]
        except ValueError:
            raise InvalidSetting(f"setting {spec!r}: bad value {v!r} for {k} (e.g. token_indices=objects or 3;7 or "
                             "circle;triangle, max_iter_to_alter=25, thresholds=0:0.05;10:0.5;20:0.8, "
                             "attn_res=8x8)") from None
    if kw.get("max_iter_to_alter", 0) < 0 or kw.get("scale_factor", 0) < 0:
        raise InvalidSetting(f"setting {spec!r}: max_iter_to_alter and scale_factor must be >= 0")
    return Setting(name, kw)


@dataclass(frozen=True)
class Setting:
    """A named setting: ``label`` (file-safe), ``kwargs`` for :func:`~ebca_viz.tasks.multiconcept`."""

    label: str
    kwargs: dict = field(default_factory=dict, hash=False, compare=False)


@dataclass(frozen=True)
class Job:
    prompt_set: str
    index: int
    prompt: str
    seed: int
    setting: Setting

    def relpath(self) -> str:
        return f"{self.setting.label}/{self.prompt_set}/{self.index:03d}_seed{self.seed}.json"


def parse_seeds(spec) -> list[int]:
    """``"0-63"``, ``"0,1,5"``, ``"0-3,10"``, an int or a list of ints -> sorted unique seeds."""
    if isinstance(spec, int) and not isinstance(spec, bool):
        return [spec]
    if isinstance(spec, (list, tuple)):
        out = []
        for s in spec:
            out += parse_seeds(s)
        return sorted(set(out))
    if not isinstance(spec, str) or not spec.strip():
        raise InvalidSetting(f"seeds: expected e.g. '0-63' or '0,1,5', got {spec!r}")
    out = []
    for part in spec.split(","):
        m = re.fullmatch(r"\s*(\d+)\s*(?:-\s*(\d+)\s*)?", part)
        if not m:
            raise InvalidSetting(f"seeds: cannot read {part!r} in {spec!r}; write ranges like '0-63' or lists like '0,1,5'")
        a, b = int(m.group(1)), int(m.group(2) or m.group(1))
        if b < a:
            raise InvalidSetting(f"seeds: range {part!r} is empty (end before start); fix: write it as '{b}-{a}'")
        out += range(a, b + 1)
    return sorted(set(out))


def parse_setting(spec: str) -> Setting:
    """``"vanilla"`` or ``"ebcu:gamma_attn=0.01,gamma_norm=0.02"`` -> :class:`Setting`."""
    if isinstance(spec, Setting):
        return spec
    if not isinstance(spec, str) or not spec.strip():
        raise InvalidSetting(f"setting: expected 'vanilla' or 'ebcu:gamma_attn=0.01,gamma_norm=0.02', got {spec!r}")
    name, _, rest = spec.strip().partition(":")
    if not re.fullmatch(r"[A-Za-z0-9_\-]+", name):
        raise InvalidSetting(f"setting {spec!r}: the name before ':' must be letters, digits, '-' or '_'")
    if is_ae_name(name):
        return _parse_ae(spec, name, rest)
    kw: dict = {"gamma_attn": 0.0, "gamma_norm": 0.0} if name == "vanilla" else {}
    if name == "vanilla" and rest:
        raise InvalidSetting(f"setting {spec!r}: 'vanilla' takes no parameters; name it e.g. 'ebcu:gamma_attn=...'")
    config = {}
    for item in filter(None, (x.strip() for x in rest.split(","))):
        k, eq, v = item.partition("=")
        k = k.strip()
        if not eq:
            raise InvalidSetting(f"setting {spec!r}: {item!r} is not key=value; fix: write e.g. "
                                 "'ebcu:gamma_attn=0.01,gamma_norm=0.02'")
        try:
            if k in EBCA_KEYS_FLOAT:
                kw[k] = float(v)
            elif k in EBCA_KEYS_LIST_INT:
                kw[k] = _token_list(v)
            elif k in EBCA_KEYS_LIST_FLOAT:
                kw[k] = [float(x) for x in v.split(";")]
            elif k in CONFIG_KEYS:
                config[k] = {"true": True, "false": False}.get(v.lower(), v) if k == "update_uncond" else v
            else:
                raise InvalidSetting(
                    f"setting {spec!r}: unknown key {k!r}; known: "
                    f"{list(EBCA_KEYS_FLOAT + EBCA_KEYS_LIST_INT + EBCA_KEYS_LIST_FLOAT + CONFIG_KEYS)}"
                )
        except ValueError as e:
            if "unknown key" in str(e):
                raise
            raise InvalidSetting(f"setting {spec!r}: bad value {v!r} for {k}; fix: give a number (e.g. {k}=0.01)") from None
    if name != "vanilla" and "gamma_attn" not in kw and "gamma_norm" not in kw:
        kw.update(gamma_attn=0.01, gamma_norm=0.02)  # the paper's multi-concept setting
    if config:
        kw["config"] = config
    from ..config import EBCAConfig

    ti, tw = kw.get("token_indices"), kw.get("token_upweight")
    if ti is not None and tw is not None:  # words / objects are resolved per prompt: check the rest with stand-ins
        if ti == OBJECTS or len(tw) == 1:
            tw = tw[:1] * (2 if ti == OBJECTS else len(ti))
        ti = [1 + k for k in range(len(tw))] if ti == OBJECTS else [x if isinstance(x, int) else 1 for x in ti]
    EBCAConfig(gamma_attn=kw.get("gamma_attn", 0.0), gamma_norm=kw.get("gamma_norm", 0.0),
               token_indices=ti, token_upweight=tw, **config).validate()
    return Setting(name, kw)


def resolve_prompts(sets: Sequence[str] | str, limit: Optional[int] = None) -> list[tuple[str, int, str]]:
    """Prompt set names (``animal_animal``/``animals``, ``animal_object``, ``object_object``, ``all``; the
    shapes-world sets ``shapes_pairs``, ``shapes_tune``, ``shapes_report``, ``shapes_single``) or
    ``file:PATH`` (one prompt a line) -> ``[(set, index, prompt), ...]``; ``limit`` = first N of each set."""
    from ..data import load_ae_prompts

    if limit is not None and (isinstance(limit, bool) or not isinstance(limit, int) or limit < 1):
        raise InvalidSetting(f"limit must be a positive number of prompts per set (or None for all), got {limit!r}")
    if isinstance(sets, str):
        sets = [sets]
    data = load_ae_prompts()
    out = []
    for s in sets:
        if s == "all":
            names = list(data)
        elif s.startswith("file:"):
            lines = [x.strip() for x in Path(s[5:]).read_text().splitlines() if x.strip()]
            out += [(Path(s[5:]).stem, i, p) for i, p in enumerate(lines[:limit])]
            continue
        elif s in SHAPES_SETS:
            from ..shapes import world  # the shapes-world prompts: scored by the detector hook

            pairs = world.two_object_prompts(SHAPES_SETS[s]) if SHAPES_SETS[s] != "single" else \
                [(p,) for p in world.single_prompts()]
            out += [(s, i, world.caption_for(list(p))) for i, p in enumerate(pairs[:limit])]
            continue
        elif s in PROMPT_SET_ALIASES:
            names = [PROMPT_SET_ALIASES[s]]
        else:
            raise InvalidSetting(f"prompts: unknown prompt set {s!r}; choose from {sorted(PROMPT_SET_ALIASES)}, "
                             f"{sorted(SHAPES_SETS)}, 'all' "
                             "or file:PATH")
        for n in names:
            out += [(n, i, p) for i, p in enumerate(data[n][:limit])]
    if not out:
        raise InvalidSetting.of("prompts", sets, "name a prompt set with prompts in it (e.g. 'animals') or a non-empty "
                                 "file:PATH", why="no prompts selected")
    return out


def make_jobs(prompts, seeds, settings) -> list[Job]:
    """Every (prompt, seed, setting), in a deterministic order."""
    settings = [parse_setting(s) for s in settings]
    labels = [s.label for s in settings]
    if len(set(labels)) != len(labels):
        raise InvalidSetting(f"settings: names must be unique, got {labels} (name them e.g. 'ebcu1:...', 'ebcu2:...')")
    return [Job(ps, i, p, seed, st) for st in settings for (ps, i, p) in prompts for seed in seeds]


def paired_jobs(samples, settings) -> list[Job]:
    """One job per (sample, setting) for ``samples = [(prompt_set, index, prompt, seed), ...]`` (each
    sample its own seed), ordered sample by sample so that every setting of a sample runs next to
    the others (timings under changing load stay comparable; a split between processes gives each
    process whole samples). Every setting of a sample shares its seed: a paired design."""
    settings = [parse_setting(s) for s in settings]
    labels = [s.label for s in settings]
    if len(set(labels)) != len(labels):
        raise InvalidSetting(f"settings: names must be unique, got {labels}")
    keys = [(ps, i, seed) for ps, i, _, seed in samples]
    if len(set(keys)) != len(keys):
        raise InvalidSetting("samples: (prompt set, index, seed) must be unique")
    return [Job(ps, i, p, seed, st) for (ps, i, p, seed) in samples for st in settings]


def fingerprint_of(job: Job, *, steps: int, guidance_scale: float, model: str, clip_scorer=None, captioner=None,
                   detector: bool = True, height=None, width=None) -> dict:
    """Everything that determines a job's result: model, setting, steps, CFG, size, metrics, version."""
    from .. import __version__

    def name(x):
        return None if x is None else str(getattr(x, "name", None) or getattr(x, "model_id", None) or type(x).__name__)

    kw = dict(job.setting.kwargs)
    return {"model": model, "setting": job.setting.label, "setting_kwargs": json.loads(json.dumps(kw, default=str)),
            "prompt": job.prompt, "seed": job.seed, "steps": steps, "guidance_scale": kw.get("guidance_scale", guidance_scale),
            "height": height, "width": width, "clip_scorer": name(clip_scorer), "captioner": name(captioner),
            "detector": bool(detector), "ebca_viz": __version__}


def fingerprint(d: dict) -> str:
    import hashlib

    return hashlib.sha256(json.dumps(d, sort_keys=True).encode()).hexdigest()[:20]


class SweepMismatchError(RefusedFile):
    """A result file in ``--out`` was produced by a different model / setting / step count."""


def read_result(path: Path) -> Optional[dict]:
    """The parsed result, or None when the file is corrupt (empty, half-written, not a result)."""
    try:
        rec = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    if not isinstance(rec, dict) or not {"job", "metrics", "fingerprint"} <= set(rec):
        return None
    return rec


def pending(jobs: Sequence[Job], out: Path, fingerprints: Optional[dict] = None, log=print) -> list[Job]:
    """Jobs without a valid result. A corrupt result is redone (and said); a result whose fingerprint
    differs from ``fingerprints[job]`` is refused with :class:`SweepMismatchError`."""
    todo = []
    for j in jobs:
        path = out / j.relpath()
        if not path.exists():
            todo.append(j)
            continue
        rec = read_result(path)
        if rec is None:
            log(f"sweep: {path} is corrupt or from an older version (empty, half-written or no fingerprint): redoing it")
            todo.append(j)
            continue
        if fingerprints is not None and rec["fingerprint"] != fingerprint(fingerprints[j]):
            old = rec.get("fingerprint_of", {})
            diff = {k: (old.get(k), v) for k, v in fingerprints[j].items() if old.get(k) != v}
            raise SweepMismatchError(
                f"{path} was made with other settings {diff} (old, new); the results would be mislabelled: "
                "write to a new --out folder, or delete the old results")
    return todo


def _write_json(path: Path, obj: dict) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(f".tmp{os.getpid()}")
    tmp.write_text(json.dumps(obj, indent=1))
    os.replace(tmp, path)  # atomic: a crash never leaves a half-written result that would be skipped


def object_words(prompt: str) -> list:
    """The object nouns of a shapes-world prompt (``token_indices=objects``), in prompt order."""
    from .detector import parse_shapes_prompt

    req = parse_shapes_prompt(prompt)
    if req is None:
        raise InvalidSetting(f"token_indices=objects needs a shapes-world prompt ('a red circle and a blue triangle'); "
                         f"{prompt!r} is not one: give the words, e.g. token_indices=cat;frog")
    return [s for _, s in req]


def job_kwargs(job: Job) -> dict:
    """The setting's arguments for this job's prompt: ``objects`` -> the prompt's object words, one
    ``token_upweight`` value repeated for every token."""
    kw = dict(job.setting.kwargs)
    if kw.get("token_indices") == OBJECTS:
        kw["token_indices"] = object_words(job.prompt)
    ti, tw = kw.get("token_indices"), kw.get("token_upweight")
    if ti is not None and tw is not None and len(tw) == 1 and len(ti) > 1:
        kw["token_upweight"] = list(tw) * len(ti)
    return kw


def generate(pipe, job: Job, *, steps: int, guidance_scale: float):
    """One image for ``job``: EBCU / vanilla through :func:`~ebca_viz.tasks.multiconcept`, A&E through
    :func:`.ae.attend_and_excite`. Returns ``(PIL image, settings dict)``."""
    kw = job_kwargs(job)
    kw.setdefault("guidance_scale", guidance_scale)
    if kw.pop("method", None) == "ae":
        from .ae import attend_and_excite

        images, info = attend_and_excite(pipe, job.prompt, seed=job.seed, num_inference_steps=steps, **kw)
        return images[0], dict(info, method="attend_and_excite", prompt=job.prompt,
                               num_inference_steps=steps, guidance_scale=kw["guidance_scale"])
    from ..tasks.multiconcept import multiconcept

    res = multiconcept(pipe, job.prompt, seed=job.seed, num_inference_steps=steps, **kw)
    return res.image, res.to_json()["settings"]


def run_job(pipe, job: Job, out: Path, *, steps: int, clip_scorer=None, captioner=None, detector: bool = True,
            save_images: bool = True, guidance_scale: float = 7.5, model: str = "", fp: Optional[dict] = None,
            run_id: Optional[str] = None) -> dict:
    """Generate one image (:func:`generate`), score it, write its JSON (atomically).

    The record holds ``seconds_sample`` (wall time of the sampling call), the torch thread count and
    ``run_id`` (which invocation made it: timings of one run are comparable, across runs not)."""
    import torch

    t0 = time.perf_counter()
    img, settings = generate(pipe, job, steps=steps, guidance_scale=guidance_scale)
    rec = {"job": {"prompt_set": job.prompt_set, "index": job.index, "prompt": job.prompt, "seed": job.seed,
                   "setting": job.setting.label}, "settings": settings, "model": model,
           "metrics": {}, "seconds_sample": round(time.perf_counter() - t0, 3),
           "torch_threads": torch.get_num_threads(), "run_id": run_id}
    fp = fp or fingerprint_of(job, steps=steps, guidance_scale=guidance_scale, model=model, clip_scorer=clip_scorer,
                              captioner=captioner, detector=detector)
    rec["fingerprint_of"], rec["fingerprint"] = fp, fingerprint(fp)
    caption = captioner(img) if captioner is not None else None
    if caption is not None:
        rec["caption"] = caption
    if clip_scorer is not None:
        rec["metrics"].update(clip_scorer.scores(img, job.prompt, caption))
    if detector:
        from .detector import detector_scores

        d = detector_scores(img, job.prompt)
        if d is not None:
            rec["metrics"]["detector"] = d
    path = out / job.relpath()
    if save_images:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(f".tmp{os.getpid()}.png")
        img.save(tmp)
        os.replace(tmp, path.with_suffix(".png"))
        rec["image"] = path.with_suffix(".png").name
    _write_json(path, rec)
    return rec


def run_sweep(pipe, jobs: Sequence[Job], out: str | Path, *, steps: int = 50, clip_scorer=None, captioner=None,
              detector: bool = True, save_images: bool = True, guidance_scale: float = 7.5, model: str = "",
              state=None, progress: bool = False, extra_fingerprint: Optional[dict] = None,
              run_id: Optional[str] = None, on_job=None) -> dict:
    """Run the pending jobs (those without a JSON) of this process's share; returns counts.

    ``state``: an ``accelerate.PartialState`` (``split_between_processes``); None = all jobs here.
    ``extra_fingerprint``: more that determines every result (e.g. ``{"weights": sha256}``): a result
    made with other values is refused (:class:`SweepMismatchError`). ``run_id`` is written into each
    new record; ``on_job(job)`` is called after each job run here (e.g. to stop after N).
    """
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    # split the full, deterministic job list (processes start at different times, so lists of what
    # is still pending could differ between them), then skip what is done within this share
    if state is not None and getattr(state, "num_processes", 1) > 1:
        with state.split_between_processes(list(jobs)) as share:
            share = list(share)
    else:
        share = list(jobs)
    fps = {j: {**fingerprint_of(j, steps=steps, guidance_scale=guidance_scale, model=model, clip_scorer=clip_scorer,
                                captioner=captioner, detector=detector), **(extra_fingerprint or {})} for j in share}
    mine = pending(share, out, fps)
    skipped = len(share) - len(mine)
    it = mine
    if progress:
        from tqdm.auto import tqdm

        rank = getattr(state, "process_index", 0) if state is not None else 0
        it = tqdm(mine, desc=f"sweep[{rank}]", position=rank, leave=True)
    done = 0
    for job in it:
        done_now = read_result(out / job.relpath())
        if done_now is not None and done_now["fingerprint"] == fingerprint(fps[job]):  # another process finished it
            skipped += 1
            continue
        run_job(pipe, job, out, steps=steps, clip_scorer=clip_scorer, captioner=captioner, detector=detector,
                save_images=save_images, guidance_scale=guidance_scale, model=model, fp=fps[job], run_id=run_id)
        done += 1
        if on_job is not None:
            on_job(job)
    manifest = {"jobs": len(jobs), "steps": steps, "model": model,
                "settings": {s.label: s.kwargs for s in {j.setting for j in jobs}},
                "fingerprints": {j.relpath(): fingerprint(f) for j, f in fps.items()}}
    if state is None or getattr(state, "is_main_process", True):
        _write_json(out / "sweep.json", manifest)
    return {"total": len(jobs), "run": done, "skipped": skipped, "this_process": len(mine)}

