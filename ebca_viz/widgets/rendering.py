"""What the panel draws (data in, PNG / figure out; no widgets): the difference image, the energy per
layer, image PNGs and placeholders."""
from __future__ import annotations

IMAGE_PX = 200  # width of the three images on screen


def difference_image(a, b, size: int = 200):
    """``(PIL image, mean, max)``: ``|b - a|`` (mean over colour channels, in /255) as an inferno
    heat map scaled to its own maximum, upscaled (nearest) to ``size`` pixels wide."""
    import numpy as np
    from matplotlib import colormaps
    from PIL import Image

    from ..viz import upscale

    x = np.asarray(a.convert("RGB"), np.float32)
    y = np.asarray(b.convert("RGB"), np.float32)
    if x.shape != y.shape:
        raise ValueError(f"the two images differ in size: {x.shape} vs {y.shape}")
    d = np.abs(y - x).mean(-1)
    top = float(d.max())
    rgb = (colormaps["inferno"](d / max(top, 1.0))[..., :3] * 255).astype(np.uint8)
    return upscale(Image.fromarray(rgb), size), float(d.mean()), top


def plot_layer_energies(vanilla_trace, energy_trace, label: str = "EBCA", kind: str = "posterior",
                        updates: bool = True):
    """Posterior energy ``E(K;Q) + E(K)`` of the (conditional) context per cross-attention layer, mean
    over the sampling steps: vanilla (what each layer received; nothing is updated) and the
    energy run entering and leaving each layer (EBCU's descent is the drop from one to the other;
    ``updates=False``, e.g. SEG: one curve for the energy run)."""
    from ..viz import _short_layer, new_figure, to_numpy

    v = to_numpy(vanilla_trace.energies(kind, "before")).mean(0)
    eb = to_numpy(energy_trace.energies(kind, "before")).mean(0)
    ea = to_numpy(energy_trace.energies(kind, "after")).mean(0)
    x = list(range(len(v)))
    fig = new_figure(figsize=(6.2, 2.5))
    ax = fig.subplots()
    ax.plot(x, v, "o--", color="gray", ms=4, lw=1.2, label="vanilla")
    if updates:
        ax.plot(x, eb, "o-", color="C0", ms=4, lw=1.5, label=f"{label}: entering the layer")
        ax.plot(x, ea, "v-", color="C1", ms=4, lw=1.5, label=f"{label}: leaving the layer")
    else:  # SEG leaves the text context alone: one curve (its queries, hence E(K;Q), still differ)
        ax.plot(x, eb, "o-", color="C0", ms=4, lw=1.5, label=label)
    ax.set_xticks(x)
    ax.set_xticklabels([_short_layer(k) for k in energy_trace.layers], fontsize=7)
    ax.set_xlabel("cross-attention layer (execution order)", fontsize=8)
    ax.set_ylabel("E(K;Q)+E(K)" if kind == "posterior" else kind, fontsize=8)
    ax.tick_params(labelsize=7)
    ax.set_title(f"posterior energy per layer, mean over {energy_trace.energies(kind).shape[0]} steps", fontsize=9)
    ax.legend(fontsize=7, loc="best")
    fig.tight_layout()
    return fig


def _png(img, size: int = IMAGE_PX) -> bytes:
    import io

    from ..viz import upscale

    buf = io.BytesIO()
    upscale(img, size).save(buf, format="PNG")
    return buf.getvalue()


def placeholder_png(width: int, height: int, text: str) -> bytes:
    """A light-grey PNG with ``text`` in it: what the panel shows where there is no result yet
    (an ``<img>`` without data would show the browser's broken-image icon)."""
    import io

    from PIL import Image, ImageDraw, ImageFont

    im = Image.new("RGB", (width, height), (238, 238, 238))
    d = ImageDraw.Draw(im)
    try:
        font = ImageFont.load_default(size=14)
    except TypeError:  # Pillow < 10.1
        font = ImageFont.load_default()
    y = height // 2 - 9 * len(text.split("\n"))
    for line in text.split("\n"):
        w = d.textlength(line, font=font)
        d.text(((width - w) / 2, y), line, fill=(110, 110, 110), font=font)
        y += 18
    d.rectangle([0, 0, width - 1, height - 1], outline=(200, 200, 200))
    buf = io.BytesIO()
    im.save(buf, format="PNG")
    return buf.getvalue()
