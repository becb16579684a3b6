"""Loading pipelines by name: the offline models shipped or built here, and the real hub ids.

Real Stable Diffusion weights come from the Hugging Face hub (or a local folder) and
are not part of this package; when they are not available the error says how to get them.
"""
from __future__ import annotations

import os
from pathlib import Path

import torch

HUB_IDS = {
    "sd14": "CompVis/stable-diffusion-v1-4",
    "sd15": "stable-diffusion-v1-5/stable-diffusion-v1-5",
    "sd21-base": "stabilityai/stable-diffusion-2-1-base",
    "sd15-inpainting": "stable-diffusion-v1-5/stable-diffusion-inpainting",
    "sdxl": "stabilityai/stable-diffusion-xl-base-1.0",
}
OFFLINE = ("tiny", "tiny-inpainting", "tiny-sdxl", "shapes-world")


def available_models() -> list[str]:
    return list(OFFLINE) + list(HUB_IDS)


def _pipeline_class(name_or_id: str):
    import diffusers

    s = name_or_id.lower()
    if "inpaint" in s:
        return diffusers.StableDiffusionInpaintPipeline
    if "xl" in s:
        return diffusers.StableDiffusionXLPipeline
    return diffusers.StableDiffusionPipeline


def load_pipeline(name: str = "tiny", device: str | torch.device = "cpu", dtype: torch.dtype | None = None,
                  **kwargs):
    """A diffusers pipeline by short name, hub id or local folder.

    * ``"tiny"``, ``"tiny-inpainting"``, ``"tiny-sdxl"``: random-weight pipelines built in code (tests).
    * ``"shapes-world"``: the toy model trained and shipped with the package.
    * ``"sd14"``, ``"sd15"``, ``"sd21-base"``, ``"sd15-inpainting"``, ``"sdxl"``, any hub id or a
      local folder: ``from_pretrained`` (fp16 on CUDA by default).
    """
    if not isinstance(name, str):
        raise TypeError(f"name must be a string (one of {available_models()}, a hub id or a folder)")
    if name in ("tiny", "tiny-inpainting"):
        from .tiny import tiny_pipeline

        pipe = tiny_pipeline(inpainting=name.endswith("inpainting")).to(device)
        return pipe if dtype in (None, torch.float32) else pipe.to(dtype=dtype)
    if name == "tiny-sdxl":
        from .tiny import tiny_sdxl_pipeline

        pipe = tiny_sdxl_pipeline().to(device)
        return pipe if dtype in (None, torch.float32) else pipe.to(dtype=dtype)
    if name == "shapes-world":
        try:
            from ..shapes.model import load_shapes_pipeline
        except ImportError as e:  # pragma: no cover - the weights are shipped with the package
            raise FileNotFoundError(f"the shapes-world model is not installed with this copy of ebca_viz: {e}") from e
        return load_shapes_pipeline(device=device, dtype=dtype or torch.float32)
    repo = HUB_IDS.get(name, name)
    if dtype is None:
        dtype = torch.float16 if torch.device(device).type == "cuda" else torch.float32
    cls = _pipeline_class(repo)
    local = Path(repo).expanduser()
    offline = os.environ.get("HF_HUB_OFFLINE", "0") not in ("0", "", "false", "False")
    try:
        pipe = cls.from_pretrained(
            str(local) if local.exists() else repo, torch_dtype=dtype,
            local_files_only=offline or local.exists(), **kwargs,
        )
    except (OSError, ValueError, EnvironmentError) as e:
        raise FileNotFoundError(
            f"could not load {name!r} ({repo}): the weights are neither in the local Hugging Face cache nor "
            f"reachable{' (HF_HUB_OFFLINE is set)' if offline else ''}. Download them once on a machine with "
            f"network access (`huggingface-cli download {repo}`), or pass a local folder; offline models: "
            f"{list(OFFLINE)}. Cause: {type(e).__name__}: {str(e).splitlines()[0][:200]}"
        ) from e
    return pipe.to(device)
