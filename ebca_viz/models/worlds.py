"""The trained toy worlds that ship with the package, by name.

Each UNet world is a genuine diffusers ``StableDiffusionPipeline`` with the shapes-world architecture
(:mod:`.shapes_world`: 32x32 RGB, f = 4 VAE, small CLIP text encoder on the package's offline
tokenizer) whose fp16 safetensors live in ``ebca_viz/weights/<folder>/``; they differ in their
training data. The DiT world is a ``PixArtSigmaPipeline`` (its folder holds ``model_index.json``;
:mod:`ebca_viz.shapes.train_dit`):

* ``"shapes-world"``: 1-2 shapes, p(two objects) 0.5, every pair seen; fails by attribute binding.
* ``"neglect-world"``: shapes-world fine-tuned on captions that name a triangle together with a circle
  or a square while the image shows only one of them (caption noise, :mod:`ebca_viz.shapes.neglect`);
  on those pairs it drops a requested object (catastrophic neglect).
* ``"neglect-world-dit"``: the neglect world's data and frozen VAE, denoised by a small
  ``PixArtTransformer2DModel`` with a T5 text encoder trained from scratch (sample with
  ``use_resolution_binning=False``).

Both draw the same words: ``a``, ``and``, four colours and three shapes (:func:`vocabulary`);
:func:`check_prompt` refuses any other word, naming the ones the world knows.
"""
from __future__ import annotations

from pathlib import Path

import torch

from ..errors import InvalidSetting, MissingFile

WEIGHTS_ROOT = Path(__file__).resolve().parent.parent / "weights"
WORLDS = {
    "shapes-world": "shapes_world",
    "neglect-world": "neglect_world",
    "neglect-world-dit": "neglect_world_dit",
}


def world_folder(name: str) -> Path:
    """``ebca_viz/weights/<folder>`` of a world; an unknown name lists the worlds that ship."""
    if name not in WORLDS:
        raise InvalidSetting(f"unknown world {name!r}; fix: pass one of the worlds that ship with this copy of "
                           "ebca_viz: "
                           f"{shipped_worlds()}")
    return WEIGHTS_ROOT / WORLDS[name]


def shipped_worlds() -> list:
    """Names of the worlds whose weights are present in this copy."""
    return [n for n, f in WORLDS.items() if _available(WEIGHTS_ROOT / f)]


def _is_dit(folder: Path) -> bool:
    return (Path(folder) / "model_index.json").is_file()


def _available(folder: Path) -> bool:
    from .shapes_world import weights_available

    if _is_dit(folder):
        from .dit_world import dit_weights_available

        return dit_weights_available(folder)
    return weights_available(folder)


def load_world(name: str, device="cpu", dtype=torch.float32):
    """The world's pipeline (``StableDiffusionPipeline``, or ``PixArtSigmaPipeline`` for a DiT world),
    fully offline (fp16 files cast to ``dtype``)."""
    from .shapes_world import load_shapes_pipeline

    folder = world_folder(name)
    if not _available(folder):
        raise MissingFile(f"the {name} weights are not in this copy of ebca_viz ({folder}); the worlds that "
                                f"ship: {shipped_worlds()}; fix: pick one of those")
    if _is_dit(folder):
        from .dit_world import load_dit_pipeline

        return load_dit_pipeline(folder, device=device, dtype=dtype)
    return load_shapes_pipeline(device=device, dtype=dtype, folder=folder)


__all__ = ["WORLDS", "world_folder", "shipped_worlds", "load_world"]
