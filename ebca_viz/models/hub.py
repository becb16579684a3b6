"""Loading pipelines by name: the offline models shipped or built here, and the real hub ids.

Real Stable Diffusion weights come from the Hugging Face hub (or a local folder) and
are not part of this package; when they are not available the error says how to get them.
"""
from __future__ import annotations

import os
from pathlib import Path

import torch

from ..errors import InvalidSetting, InvalidType, MissingFile, RefusedFile, UnsupportedModel

HUB_IDS = {
    "sd14": "CompVis/stable-diffusion-v1-4",
    "sd15": "stable-diffusion-v1-5/stable-diffusion-v1-5",
    "sd21-base": "stabilityai/stable-diffusion-2-1-base",
    "sd15-inpainting": "stable-diffusion-v1-5/stable-diffusion-inpainting",
    "sdxl": "stabilityai/stable-diffusion-xl-base-1.0",
    # diffusion transformers (ebca_viz.adapters: PixArt, SD3, Flux)
    "sd35-medium": "stabilityai/stable-diffusion-3.5-medium",
    "sd35-large": "stabilityai/stable-diffusion-3.5-large",
    "flux-schnell": "black-forest-labs/FLUX.1-schnell",
    "flux-dev": "black-forest-labs/FLUX.1-dev",
    "pixart-sigma": "PixArt-alpha/PixArt-Sigma-XL-2-1024-MS",
}
#: the pipeline class of each DiT hub name (a folder's model_index.json decides for a folder)
DIT_PIPELINES = {"sd35-medium": "StableDiffusion3Pipeline", "sd35-large": "StableDiffusion3Pipeline",
                 "flux-schnell": "FluxPipeline", "flux-dev": "FluxPipeline", "pixart-sigma": "PixArtSigmaPipeline"}
OFFLINE = ("tiny", "tiny-inpainting", "tiny-sdxl", "tiny-pixart", "tiny-sd3", "tiny-flux", "shapes-world",
           "neglect-world", "neglect-world-dit")


def available_models() -> list[str]:
    return list(OFFLINE) + list(HUB_IDS)


_DTYPE_NAMES = {"float16": torch.float16, "fp16": torch.float16, "half": torch.float16, "bfloat16": torch.bfloat16,
                "bf16": torch.bfloat16, "float32": torch.float32, "fp32": torch.float32, "float": torch.float32}


def check_dtype(dtype):
    """``None``, a floating ``torch.dtype`` or its name (``"float16"``, ``"bf16"``, ...)."""
    if dtype is None:
        return None
    if isinstance(dtype, str):
        key = dtype.lower().replace("torch.", "")
        if key not in _DTYPE_NAMES:
            raise InvalidSetting(f"dtype {dtype!r} is not a floating dtype name; use one of {sorted(_DTYPE_NAMES)}")
        return _DTYPE_NAMES[key]
    if not isinstance(dtype, torch.dtype) or not dtype.is_floating_point:
        raise InvalidSetting(f"dtype must be a floating torch dtype (torch.float32, torch.float16, torch.bfloat16), "
                         f"got {dtype!r}")
    return dtype


def check_device(device) -> torch.device:
    """A device this machine has; a clear error for ``"cuda:99"`` or CUDA on a CPU-only machine."""
    try:
        dev = torch.device(device)
    except (RuntimeError, TypeError) as e:
        raise InvalidSetting(f"device {device!r} is not a device name; use 'cpu', 'cuda' or 'cuda:0' ({e})") from None
    if dev.type == "cuda":
        n = torch.cuda.device_count() if torch.cuda.is_available() else 0
        if n == 0:
            raise InvalidSetting(f"device {device!r}: this machine has no CUDA device; use device='cpu'")
        if dev.index is not None and dev.index >= n:
            raise InvalidSetting(f"device {device!r}: this machine has {n} CUDA device(s) (cuda:0..cuda:{n - 1}); "
                               "fix: use one of those, or device='cpu'")
    elif dev.type not in ("cpu", "mps", "xpu"):
        raise InvalidSetting(f"device {device!r}: unsupported device type {dev.type!r}; use 'cpu' or 'cuda'")
    return dev


def _folder_class(folder: Path):
    """The pipeline class named by a local folder's ``model_index.json`` (diffusers' own record)."""
    import json

    import diffusers

    index = folder / "model_index.json"
    if not index.is_file():
        return None
    name = json.loads(index.read_text()).get("_class_name")
    cls = getattr(diffusers, str(name), None)
    if cls is None:
        raise UnsupportedModel(f"{folder}: model_index.json names the pipeline class {name!r}, which this diffusers "
                         "does not have; fix: upgrade diffusers (pip install -U diffusers) or correct _class_name")
    return cls


_TOKENIZER_FILES = ("tokenizer.json", "vocab.json", "spiece.model", "tokenizer_config.json")
_SCHEDULER_FILES = ("scheduler_config.json",)


def check_folder_complete(folder: Path) -> None:
    """Refuse a pipeline folder with parts missing, naming every one: each component that ``model_index.json``
    lists (and does not set to null) needs its folder with a config, and a model needs its safetensors weights
    (one file or a sharded set with its ``*.safetensors.index.json``)."""
    import json

    index = folder / "model_index.json"
    if not index.is_file():
        return
    spec = json.loads(index.read_text())
    missing = []
    for name, val in spec.items():
        if name.startswith("_") or not isinstance(val, (list, tuple)) or len(val) != 2 or val[0] is None or val[1] is None:
            continue
        lib, cls = val
        sub = folder / name
        if not sub.is_dir():
            missing.append(f"{name}/ ({lib}.{cls}): the folder is missing")
            continue
        files = {f.name for f in sub.iterdir()}
        if "Tokenizer" in cls:
            if not files & set(_TOKENIZER_FILES):
                missing.append(f"{name}/ ({cls}): no tokenizer files (one of {list(_TOKENIZER_FILES)})")
        elif "Scheduler" in cls:
            if not files & set(_SCHEDULER_FILES):
                missing.append(f"{name}/ ({cls}): no scheduler_config.json")
        elif "Processor" in cls or "FeatureExtractor" in cls:
            continue
        else:
            if "config.json" not in files:
                missing.append(f"{name}/ ({cls}): no config.json")
            shards = [json.loads((sub / f).read_text()).get("weight_map", {}) for f in files
                      if f.endswith(".safetensors.index.json")]
            need = {v for m in shards for v in m.values()}
            if need:
                absent = sorted(need - files)
                if absent:
                    missing.append(f"{name}/ ({cls}): {len(absent)} of its {len(need)} weight shards are missing "
                                   f"({', '.join(absent[:3])}{', ...' if len(absent) > 3 else ''})")
            elif not any(f.endswith(".safetensors") for f in files):
                missing.append(f"{name}/ ({cls}): no safetensors weights")
    if missing:
        raise MissingFile(f"{folder}: the pipeline folder is incomplete ({spec.get('_class_name')} per its "
                           f"model_index.json): " + "; ".join(missing) + ". Download the missing parts again "
                           "(huggingface-cli download <hub id> --local-dir <folder>) or save the pipeline with "
                           "pipe.save_pretrained(folder, safe_serialization=True)")


def _check_safetensors(folder: Path) -> None:
    """Refuse folders where some weights are pickle ``.bin`` files only (loading them would unpickle).

    Checked per component folder (``unet/``, ``text_encoder/``, ...): a ``.bin`` file whose folder holds
    no ``.safetensors`` is refused, naming the files, even when other components are safetensors (with
    ``use_safetensors=True`` diffusers would then fail with an unrelated "not found" error)."""
    bins = sorted(f for f in folder.rglob("*.bin")
                  if f.name != "training_args.bin" and not any(f.parent.glob("*.safetensors")))
    if bins:
        names = ", ".join(str(f.relative_to(folder)) for f in bins[:4]) + (", ..." if len(bins) > 4 else "")
        raise RefusedFile(
            f"{folder}: these weights are only pickle weights ({names}), no safetensors beside them: ebca_viz refuses pickled "
            "weights (it never unpickles a file, which could run code) and does not download a replacement. If "
            "you trust these files, convert them once to safetensors: python -c \"from diffusers import "
            f"DiffusionPipeline as P; P.from_pretrained('{folder}', use_safetensors=False).save_pretrained("
            f"'{folder}-safetensors', safe_serialization=True)\" then load_pipeline('{folder}-safetensors')")


def _dtype_kwarg() -> str:
    """``dtype`` where diffusers takes it (it deprecates ``torch_dtype`` with a FutureWarning on every
    load), ``torch_dtype`` on older diffusers."""
    from diffusers.pipelines import pipeline_utils

    return "dtype" if hasattr(pipeline_utils, "_resolve_dtype") else "torch_dtype"


def _pipeline_class(name_or_id: str):
    import diffusers

    s = name_or_id.lower()
    if name_or_id in DIT_PIPELINES:
        return getattr(diffusers, DIT_PIPELINES[name_or_id])
    if "flux" in s:
        return diffusers.FluxPipeline
    if "stable-diffusion-3" in s or "sd3" in s:
        return diffusers.StableDiffusion3Pipeline
    if "pixart-sigma" in s:
        return diffusers.PixArtSigmaPipeline
    if "pixart" in s:
        return diffusers.PixArtAlphaPipeline
    if "inpaint" in s:
        return diffusers.StableDiffusionInpaintPipeline
    if "xl" in s:
        return diffusers.StableDiffusionXLPipeline
    return diffusers.StableDiffusionPipeline


def load_pipeline(name: str = "tiny", device: str | torch.device = "cpu", dtype: torch.dtype | None = None,
                  **kwargs):
    """A diffusers pipeline by short name, hub id or local folder.

    * ``"tiny"``, ``"tiny-inpainting"``, ``"tiny-sdxl"``: random-weight pipelines built in code (tests).
    * ``"shapes-world"``, ``"neglect-world"``: the toy worlds trained and shipped with the package
      (:mod:`.worlds`); another name ending in ``-world`` is refused, listing the worlds that ship.
    * ``"tiny-pixart"``, ``"tiny-sd3"``, ``"tiny-flux"``: random-weight diffusion transformers built in code
      (:mod:`.tiny_dit`).
    * ``"sd14"``, ``"sd15"``, ``"sd21-base"``, ``"sd15-inpainting"``, ``"sdxl"``, ``"sd35-medium"``,
      ``"sd35-large"``, ``"flux-schnell"``, ``"flux-dev"``, ``"pixart-sigma"`` (:data:`HUB_IDS`), any hub id
      or a local folder: ``from_pretrained`` (fp16 on CUDA by default), safetensors only. A folder's pipeline
      class is the one its ``model_index.json`` names; a folder with parts missing is refused, naming them.
    """
    if not isinstance(name, str):
        raise InvalidType(f"name must be a string (one of {available_models()}, a hub id or a folder)")
    dtype = check_dtype(dtype)
    device = check_device(device)
    if name in ("tiny", "tiny-inpainting"):
        from .tiny import tiny_pipeline

        pipe = tiny_pipeline(inpainting=name.endswith("inpainting")).to(device)
        return pipe if dtype in (None, torch.float32) else pipe.to(dtype=dtype)
    if name == "tiny-sdxl":
        from .tiny import tiny_sdxl_pipeline

        pipe = tiny_sdxl_pipeline().to(device)
        return pipe if dtype in (None, torch.float32) else pipe.to(dtype=dtype)
    if name in ("tiny-pixart", "tiny-sd3", "tiny-flux"):
        from .tiny_dit import TINY_DIT

        pipe = TINY_DIT[name]().to(device)
        return pipe if dtype in (None, torch.float32) else pipe.to(dtype=dtype)
    from .worlds import WORLDS, load_world, world_folder

    if name in WORLDS:
        return load_world(name, device=device, dtype=dtype or torch.float32)
    if name not in HUB_IDS and "/" not in name and not Path(name).expanduser().exists():
        if name.endswith("-world"):
            world_folder(name)  # raises: unknown world, listing the worlds that ship
        from .worlds import shipped_worlds

        raise InvalidSetting(f"unknown model or world {name!r}: the worlds that ship: {shipped_worlds()}; other "
                           f"offline models: {[m for m in OFFLINE if m not in WORLDS]}; hub names: {list(HUB_IDS)}; "
                           "or a hub id 'org/name' or a local folder; fix: pass one of those")
    repo = HUB_IDS.get(name, name)
    if dtype is None:
        dtype = torch.float16 if torch.device(device).type == "cuda" else torch.float32
    local = Path(repo).expanduser()
    if local.exists():  # a folder: its model_index.json says which pipeline, never its name
        _check_safetensors(local)
        check_folder_complete(local)
        cls = _folder_class(local) or _pipeline_class(repo)
    else:
        cls = _pipeline_class(repo)
    offline = os.environ.get("HF_HUB_OFFLINE", "0") not in ("0", "", "false", "False")
    kwargs.setdefault("use_safetensors", True)  # never unpickle weights
    try:
        pipe = cls.from_pretrained(
            str(local) if local.exists() else repo, **{_dtype_kwarg(): dtype},
            local_files_only=offline or local.exists(), **kwargs,
        )
    except (OSError, ValueError, EnvironmentError) as e:
        if local.exists():
            raise InvalidSetting(
                f"could not load the folder {str(local)!r} as a diffusers pipeline: {type(e).__name__}: "
                f"{str(e).splitlines()[0][:300]}. A loadable folder holds model_index.json and one folder per "
                "component with safetensors weights; "
                "fix: write it with pipe.save_pretrained(out, safe_serialization=True)"
            ) from e
        raise MissingFile(
            f"could not load {name!r} ({repo}): the weights are neither in the local Hugging Face cache nor "
            f"reachable{' (HF_HUB_OFFLINE is set)' if offline else ''}. Download them once on a machine with "
            f"network access (`huggingface-cli download {repo}`), or pass a local folder; offline models: "
            f"{list(OFFLINE)}. Cause: {type(e).__name__}: {str(e).splitlines()[0][:200]}"
        ) from e
    return pipe.to(device)


def model_kind(pipe) -> str:
    """What a loaded pipeline is, read from the pipeline itself (never from the name it was loaded by):

    * ``"shapes-world"``: the shipped toy model (the package's small tokenizer and the shapes UNet);
    * ``"tiny"``, ``"tiny-inpainting"``, ``"tiny-sdxl"``: random-weight models on the package's small tokenizer;
    * ``"sd"``: anything else, i.e. a Stable Diffusion checkpoint with its own tokenizer (SD 1.x/2.x/XL,
      inpainting; real or random weights in a user's folder);
    * a diffusion transformer: ``"tiny-pixart"``, ``"tiny-sd3"``, ``"tiny-flux"`` (built in code: the package's
      T5 tokenizer) or its family ``"pixart"``, ``"sd3"``, ``"flux"`` (:mod:`ebca_viz.adapters`).
    """
    import json

    from .tokenizer import TOKENIZER_DIR

    tok = getattr(pipe, "tokenizer", None)
    unet = getattr(pipe, "unet", None)
    if unet is None and getattr(pipe, "transformer", None) is not None:
        from ..adapters import adapter_for
        from .tiny_dit import t5_tokenizer

        fam = adapter_for(pipe).family
        t5 = next((t for t in (getattr(pipe, a, None) for a in ("tokenizer_3", "tokenizer_2", "tokenizer"))
                   if t is not None and type(t).__name__.startswith("T5")), None)
        return f"tiny-{fam}" if t5 is not None and t5.get_vocab() == t5_tokenizer().get_vocab() else fam
    if tok is None or unet is None:
        raise InvalidType(f"model_kind needs a diffusers pipeline with a tokenizer and a UNet, got "
                               f"{type(pipe).__name__}")
    shipped = json.loads((TOKENIZER_DIR / "vocab.json").read_text(encoding="utf-8"))
    if len(tok) != len(shipped) or tok.get_vocab() != shipped:
        return "sd"
    from .shapes_world import WEIGHTS_DIR

    cfg = WEIGHTS_DIR / "unet" / "config.json"
    if cfg.is_file():
        ref = json.loads(cfg.read_text())
        keys = ("block_out_channels", "sample_size", "cross_attention_dim", "in_channels", "down_block_types")
        if all(list(ref.get(k)) == list(unet.config.get(k)) if isinstance(ref.get(k), list)
               else ref.get(k) == unet.config.get(k) for k in keys):
            return "shapes-world"
    if hasattr(pipe, "text_encoder_2"):
        return "tiny-sdxl"
    return "tiny-inpainting" if unet.config.in_channels == 9 else "tiny"
