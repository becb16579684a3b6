"""Image captioning (BLIP) for the source prompt of real-image editing and the text-text metric.

The published real-image editing captions the photo with ``Salesforce/blip-image-captioning-base``
(realedit_txt2img.py:91), conditioned on the text ``"a photography of"`` as in pix2pix-zero's
``generate_caption`` (``max_new_tokens=128``). Weights come from the Hugging Face hub / cache;
when they are not available :func:`load_captioner` raises ``FileNotFoundError`` with the fix.
"""
from __future__ import annotations

import os
from typing import Optional

import torch
from ..errors import InvalidSetting, MissingFile

BLIP_ID = "Salesforce/blip-image-captioning-base"
CAPTION_PREFIX = "a photography of"


class Captioner:
    """``captioner(image) -> str`` (or a list of str for a list of images).

    Args:
        model: a ``BlipForConditionalGeneration`` (or any model with ``generate(pixel_values=, input_ids=)``).
        processor: a ``BlipProcessor``; or give ``image_processor`` and ``tokenizer`` separately.
        prefix: conditioning text (``"a photography of"``; ``None`` for unconditional captions).
    """

    def __init__(self, model, processor=None, *, image_processor=None, tokenizer=None,
                 prefix: Optional[str] = CAPTION_PREFIX, max_new_tokens: int = 128):
        if processor is not None:
            image_processor = image_processor or processor.image_processor
            tokenizer = tokenizer or processor.tokenizer
        if image_processor is None or tokenizer is None:
            raise InvalidSetting("Captioner needs processor= (a BlipProcessor) or both image_processor= and tokenizer=")
        self.model = model.eval()
        self.image_processor = image_processor
        self.tokenizer = tokenizer
        self.prefix = prefix
        self.max_new_tokens = max_new_tokens

    @torch.no_grad()
    def __call__(self, images):
        single = not isinstance(images, (list, tuple))
        imgs = [images] if single else list(images)
        dev = next(self.model.parameters()).device
        dtype = next(self.model.parameters()).dtype
        pix = self.image_processor(images=imgs, return_tensors="pt")["pixel_values"].to(dev, dtype)
        kw = {}
        if self.prefix:
            kw["input_ids"] = self.tokenizer([self.prefix] * len(imgs), return_tensors="pt")["input_ids"].to(dev)
        out = self.model.generate(pixel_values=pix, max_new_tokens=self.max_new_tokens, **kw)
        caps = [c.strip() for c in self.tokenizer.batch_decode(out, skip_special_tokens=True)]
        return caps[0] if single else caps


def load_captioner(model_id: str = BLIP_ID, device: str | torch.device = "cpu",
                   dtype: Optional[torch.dtype] = None) -> Captioner:
    """BLIP captioner from the hub or the local cache (or a local folder)."""
    from transformers import BlipForConditionalGeneration, BlipProcessor

    if dtype is None:
        dtype = torch.float16 if torch.device(device).type == "cuda" else torch.float32
    offline = os.environ.get("HF_HUB_OFFLINE", "0") not in ("0", "", "false", "False")
    try:
        proc = BlipProcessor.from_pretrained(model_id, local_files_only=offline)
        model = BlipForConditionalGeneration.from_pretrained(model_id, torch_dtype=dtype, local_files_only=offline)
    except (OSError, ValueError) as e:
        raise MissingFile(
            f"image captioner {model_id!r} is not available (not in the Hugging Face cache"
            f"{', HF_HUB_OFFLINE is set' if offline else ''}): download it once with "
            f"`huggingface-cli download {model_id}` or pass a local folder. Cause: {type(e).__name__}: "
            f"{str(e).splitlines()[0][:160] if str(e) else ''}"
        ) from e
    return Captioner(model.to(device), proc)
