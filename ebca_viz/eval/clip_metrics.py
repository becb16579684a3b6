r"""CLIP similarities of the Attend-and-Excite protocol (used by the EBCA paper's Table 1).

With unit-normalised CLIP embeddings ``f_img(x)`` and ``f_txt(.)``:

* full-prompt similarity: ``cos(f_img(x), T(prompt))``
* minimum-object similarity: ``min_o cos(f_img(x), T(part_o))``; the parts are the prompt split
  at ``" and "`` (else ``" with "``): "a pink crown and a purple bow" -> "a pink crown", "a purple bow"
* text-text similarity: ``cos(f_txt(prompt), f_txt(caption(x)))`` with a BLIP caption

where ``T(s)`` is the normalised mean over prompt templates of ``f_txt(template.format(s))``:
Attend-and-Excite averages CLIP's 80 ImageNet templates (``templates="imagenet"``, default);
``templates=("a photo of {}.",)`` is a single-template variant. Model: ``openai/clip-vit-base-patch16``
(A&E loads OpenAI CLIP "ViT-B/16").
"""
from __future__ import annotations

import os
from typing import Optional, Sequence

import torch
from ..errors import InvalidSetting, InvalidType, MissingFile

CLIP_ID = "openai/clip-vit-base-patch16"

# CLIP's ImageNet prompt templates (Radford et al. 2021), as averaged by Attend-and-Excite's metric.
IMAGENET_TEMPLATES = (
    "a bad photo of a {}.", "a photo of many {}.", "a sculpture of a {}.", "a photo of the hard to see {}.",
    "a low resolution photo of the {}.", "a rendering of a {}.", "graffiti of a {}.", "a bad photo of the {}.",
    "a cropped photo of the {}.", "a tattoo of a {}.", "the embroidered {}.", "a photo of a hard to see {}.",
    "a bright photo of a {}.", "a photo of a clean {}.", "a photo of a dirty {}.", "a dark photo of the {}.",
    "a drawing of a {}.", "a photo of my {}.", "the plastic {}.", "a photo of the cool {}.",
    "a close-up photo of a {}.", "a black and white photo of the {}.", "a painting of the {}.",
    "a painting of a {}.", "a pixelated photo of the {}.", "a sculpture of the {}.", "a bright photo of the {}.",
    "a cropped photo of a {}.", "a plastic {}.", "a photo of the dirty {}.", "a jpeg corrupted photo of a {}.",
    "a blurry photo of the {}.", "a photo of the {}.", "a good photo of the {}.", "a rendering of the {}.",
    "a {} in a video game.", "a photo of one {}.", "a doodle of a {}.", "a close-up photo of the {}.",
    "a photo of a {}.", "the origami {}.", "the {} in a video game.", "a sketch of a {}.", "a doodle of the {}.",
    "a origami {}.", "a low resolution photo of a {}.", "the toy {}.", "a rendition of the {}.",
    "a photo of the clean {}.", "a photo of a large {}.", "a rendition of a {}.", "a photo of a nice {}.",
    "a photo of a weird {}.", "a blurry photo of a {}.", "a cartoon {}.", "art of a {}.", "a sketch of the {}.",
    "a embroidered {}.", "a pixelated photo of a {}.", "itap of the {}.", "a jpeg corrupted photo of the {}.",
    "a good photo of a {}.", "a plushie {}.", "a photo of the nice {}.", "a photo of the small {}.",
    "a photo of the weird {}.", "the cartoon {}.", "art of the {}.", "a drawing of the {}.",
    "a photo of the large {}.", "a black and white photo of a {}.", "the plushie {}.", "a dark photo of a {}.",
    "itap of a {}.", "graffiti of the {}.", "a toy {}.", "itap of my {}.", "a photo of a cool {}.",
    "a photo of a small {}.", "a tattoo of the {}.",
)


def split_objects(prompt: str) -> list[str]:
    """A&E's split of a two-object prompt: at ``" and "``, else at ``" with "``; else ``[prompt]``."""
    for sep in (" and ", " with "):
        if sep in prompt:
            return [p.strip() for p in prompt.split(sep)]
    return [prompt.strip()]


def _features(out) -> torch.Tensor:
    """``get_*_features`` returns a tensor (transformers 4) or an output with ``pooler_output`` (5)."""
    if torch.is_tensor(out):
        return out
    for k in ("pooler_output", "text_embeds", "image_embeds"):
        v = getattr(out, k, None)
        if v is not None:
            return v
    raise InvalidType(f"cannot read CLIP features from {type(out).__name__} (no pooler_output, text_embeds or "
                      "image_embeds); fix: use a transformers CLIPModel (4.x or 5.x)")


class CLIPScorer:
    """CLIP similarities of images and texts.

    Args:
        model: a ``transformers.CLIPModel``; tokenizer: its tokenizer; image_processor: its image processor.
        templates: ``"imagenet"`` (A&E) or a sequence of ``"...{}..."`` format strings.
    """

    def __init__(self, model, tokenizer, image_processor, templates="imagenet"):
        self.model = model.eval()
        self.tokenizer = tokenizer
        self.image_processor = image_processor
        if templates == "imagenet":
            templates = IMAGENET_TEMPLATES
        if isinstance(templates, str) or not templates or not all("{}" in t for t in templates):
            raise InvalidSetting("templates must be 'imagenet' or a list of format strings containing '{}'")
        self.templates = tuple(templates)
        self._cache: dict = {}

    @property
    def device(self):
        return next(self.model.parameters()).device

    @torch.no_grad()
    def text_features(self, texts: Sequence[str]) -> torch.Tensor:
        """``(n, d)`` unit-normalised text embeddings (no templates)."""
        max_len = getattr(self.model.config.text_config, "max_position_embeddings", 77)
        ids = self.tokenizer(list(texts), padding="max_length", truncation=True, max_length=max_len,
                             return_tensors="pt").to(self.device)
        f = _features(self.model.get_text_features(input_ids=ids["input_ids"], attention_mask=ids["attention_mask"]))
        return torch.nn.functional.normalize(f.float(), dim=-1)

    def templated(self, text: str) -> torch.Tensor:
        """``(d,)``: normalised mean of the normalised template embeddings of ``text`` (cached)."""
        if text not in self._cache:
            f = self.text_features([t.format(text) for t in self.templates]).mean(0)
            self._cache[text] = torch.nn.functional.normalize(f, dim=-1)
        return self._cache[text]

    @torch.no_grad()
    def image_features(self, images) -> torch.Tensor:
        px = self.image_processor(images=list(images), return_tensors="pt")["pixel_values"]
        px = px.to(self.device, next(self.model.parameters()).dtype)
        return torch.nn.functional.normalize(_features(self.model.get_image_features(pixel_values=px)).float(), dim=-1)

    def scores(self, image, prompt: str, caption: Optional[str] = None) -> dict:
        """``{"clip_full", "clip_min_object", "clip_objects": [...], "text_text"?}`` for one image."""
        f = self.image_features([image])[0]
        parts = split_objects(prompt)
        obj = [float(f @ self.templated(p)) for p in parts]
        out = {"clip_full": float(f @ self.templated(prompt)), "clip_min_object": min(obj), "clip_objects": obj,
               "objects": parts}
        if caption is not None:
            out["text_text"] = self.text_text(prompt, caption)
        return out

    def text_text(self, a: str, b: str) -> float:
        fa, fb = self.text_features([a, b])
        return float(fa @ fb)


def load_clip_scorer(model_id: str = CLIP_ID, device="cpu", templates="imagenet") -> CLIPScorer:
    """The real CLIP from the hub / cache (``FileNotFoundError`` with the fix when unavailable)."""
    from transformers import CLIPModel, CLIPProcessor

    offline = os.environ.get("HF_HUB_OFFLINE", "0") not in ("0", "", "false", "False")
    try:
        proc = CLIPProcessor.from_pretrained(model_id, local_files_only=offline)
        model = CLIPModel.from_pretrained(model_id, local_files_only=offline)
    except (OSError, ValueError) as e:
        raise MissingFile(
            f"CLIP model {model_id!r} is not available (not in the Hugging Face cache"
            f"{', HF_HUB_OFFLINE is set' if offline else ''}): `huggingface-cli download {model_id}`, pass a local "
            "folder, or run the sweep with --metrics none"
        ) from e
    return CLIPScorer(model.to(device), proc.tokenizer, proc.image_processor, templates)
