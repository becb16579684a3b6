r"""A trace as one self-contained HTML page: opens in any browser, no kernel, no network.

:func:`trace_to_html` (also :meth:`ebca_viz.tracing.Trace.to_html` and ``python -m ebca_viz explore
TRACE.safetensors --out PAGE.html``) writes one file: the trace's numbers as inline JSON, the final
image (when given) as an inline PNG data URL, vanilla JavaScript drawing on ``<canvas>`` and inline
SVG. Nothing is fetched: no ``http(s)://``, no external ``src=``, no CDN.

Linked views (each shown only when the trace holds its quantity):

* **controls** -- step and layer sliders (their last position is "all": the mean over steps / layers),
  token chips;
* **attention map** ``M[t, y, x]`` of the selected token (``"maps"``: per step, mean over layers;
  per layer, mean over steps; ``"layer_maps"``: per step and layer), nearest-neighbour upscaled, with
  a colour scale legend, beside (and optionally over) the final image;
* **energy terms** E(K;Q), E(K) and E(K;Q) + E(K) (``"energies"``) through the layer cascade at the
  selected step, and over steps at the selected layer, before/after each layer's update, with the
  selection marked;
* **context trajectories** (``"context_norms"``): ``|c_out,t|`` and the drift ``|c_out,t - c_prompt,t|``
  of every token over the layers at the selected step;
* **where guidance acts** (``"guidance"``, when CFG or SEG acted): per latent pixel, the magnitude of
  what each guidance term added to the noise prediction at the selected step (:meth:`Trace.guidance`),
  beside the final image, and its mean over steps.

Tokens kept: start-of-text, the prompt's words and the first end-of-text; the remaining padding
positions are summed into one ``padding`` row (so the maps still sum to 1 over tokens at each pixel).
Maps are stored as bytes with one fp32 scale per map (``value = byte / 255 * scale``): relative error
at most ``1/510`` of that map's maximum. A default shapes-world trace gives a page of about 0.1 MB.
"""
from __future__ import annotations

import base64
import hashlib
import io
import json
import math
import os
import tempfile
from pathlib import Path
from typing import Optional

import numpy as np
import torch

from ..errors import InvalidSetting

#: largest map payload (bytes, before base64) of the per step x layer maps; above it they are left out
MAX_LAYER_MAP_BYTES = 3_000_000
EOT = "<|endoftext|>"


def check_html_path(path, name: str = "path") -> Path:
    """``path`` as a :class:`Path`, refused (naming ``name``) before any work when its folder does not
    exist, is not a folder, or ``path`` itself is a folder."""
    if not isinstance(path, (str, os.PathLike)):
        raise InvalidSetting(f"{name} must be a file path (str or Path) ending in .html, got {type(path).__name__}")
    p = Path(path).expanduser()
    parent = p.parent if str(p.parent) else Path(".")
    if not parent.exists():
        raise InvalidSetting(f"{name}: the folder {str(parent)!r} of {str(p)!r} does not exist; create it first "
                           f"(mkdir -p {parent}) or choose another path")
    if not parent.is_dir():
        raise InvalidSetting(f"{name}: {str(parent)!r} is not a folder, so {str(p)!r} cannot be written; "
                           "fix: choose a path inside an existing folder")
    if p.is_dir():
        raise InvalidSetting(f"{name}: {str(p)!r} is a folder; give a file name such as {str(p / 'trace.html')!r}")
    return p


# -- data ------------------------------------------------------------------------------------------
def _kept_tokens(tr, n: int) -> tuple[list, list, Optional[list]]:
    """``(labels, indices, padding indices or None)``: the tokens drawn one by one and the rest."""
    labels = tr.tokens
    if labels is None:
        keep = list(range(min(n, 16)))
        return [f"#{i}" for i in keep], keep, (list(range(len(keep), n)) or None)
    labels = list(labels)[:n]
    first_eot = next((i for i, t in enumerate(labels) if t == EOT and i > 0), None)
    end = n if first_eot is None else first_eot + 1
    keep = list(range(end))
    names = ["<start>" if labels[i] == "<|startoftext|>" else "<end>" if labels[i] == EOT else labels[i] for i in keep]
    rest = list(range(end, n))
    return names, keep, (rest or None)


def _select_tokens(m: torch.Tensor, keep: list, rest: Optional[list]) -> torch.Tensor:
    """``(..., N, H, W) -> (..., K, H, W)``: kept tokens, plus the padding summed into one row."""
    d = m.ndim - 3
    out = m.index_select(d, torch.tensor(keep))
    if rest:
        out = torch.cat([out, m.index_select(d, torch.tensor(rest)).sum(d, keepdim=True)], dim=d)
    return out


def _pack_maps(m: torch.Tensor) -> dict:
    """``(..., H, W)`` fp32 -> ``{"shape", "scale" (one per map), "bytes" (base64 uint8)}``."""
    m = m.float().clamp_min(0)
    flat = m.reshape(-1, m.shape[-2] * m.shape[-1])
    scale = flat.amax(1).clamp_min(1e-12)
    q = torch.round(flat / scale[:, None] * 255).to(torch.uint8).numpy()
    return {"shape": list(m.shape), "scale": [float(f"{s:.6g}") for s in scale.tolist()],
            "bytes": base64.b64encode(q.tobytes()).decode("ascii")}


def _nums(t) -> list:
    """A tensor as nested lists of floats with 6 significant digits (NaN -> null)."""
    a = np.asarray(t, dtype=np.float64)
    return json.loads(json.dumps(np.vectorize(lambda x: None if not math.isfinite(x) else float(f"{x:.6g}"),
                                              otypes=[object])(a).tolist()))


def _short_layer(key: str) -> str:
    """``down_blocks.1.attentions.0.transformer_blocks.0.attn2.processor`` -> ``down1.a0``."""
    p = key.split(".")
    try:
        if p[0] == "mid_block":
            return f"mid.a{p[2]}"
        return f"{p[0].split('_')[0]}{p[1]}.a{p[3]}" + (f".t{p[5]}" if p[5] != "0" else "")
    except (IndexError, ValueError):
        return key[:18]


def _image_url(image) -> Optional[str]:
    if image is None:
        return None
    from PIL import Image

    if isinstance(image, (str, os.PathLike)):
        p = Path(image)
        if not p.is_file():
            raise InvalidSetting(f"image: {str(p)!r} is not a file; pass a PNG/JPEG path or a PIL image")
        image = Image.open(p)
    elif isinstance(image, np.ndarray):
        image = Image.fromarray(image)
    if not isinstance(image, Image.Image):
        raise InvalidSetting(f"image must be a PIL image, a uint8 array or a file path, got {type(image).__name__}")
    buf = io.BytesIO()
    image.convert("RGB").save(buf, format="PNG")
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode("ascii")


GUIDANCE_NAMES = {"cfg": "classifier-free guidance: w |eps_c - eps_u|", "seg": "SEG: s |eps_c - eps_blur|"}


def _guidance(tr, image_index: int) -> dict:
    """``kind -> {"name", "maps" (packed (step, h, w), 0 where it did not act), "acted" [bool per step]}``
    for the guidance kinds the trace holds (``Trace.guidance``); ``{}`` for a trace without them."""
    out = {}
    for kind in getattr(tr, "guidance_kinds", None) or []:
        g = tr.guidance(kind, image=image_index).float()  # (S, h, w), NaN where it did not act
        acted = torch.isfinite(g).flatten(1).all(1)
        out[kind] = {"name": GUIDANCE_NAMES.get(kind, kind), "maps": _pack_maps(torch.nan_to_num(g, nan=0.0)),
                     "acted": [bool(a) for a in acted]}
    return out


def page_data(tr, image=None, title: Optional[str] = None, image_index: int = 0) -> dict:
    """Everything the page draws, as JSON-able data (see the module docstring)."""
    st = tr.record.stacked()
    if not st or not tr.steps:
        raise InvalidSetting.of("tr", tr, "run the pipeline inside `with ev.trace(pipe) as tr:` before drawing the trace",
                                 why="this trace holds no recorded steps")
    notes = []
    S, L = len(tr.steps), len(tr.layers)
    n_tok = None
    for k in ("norms", "map_step_sum", "map_layer_sum", "layer_maps"):
        if k in st:
            n_tok = int(st[k].shape[-3] if k != "norms" else st[k].shape[-1])
            break
    d: dict = {
        "title": title or "ebca_viz trace",
        "mode": tr.mode, "steps": list(tr.steps), "timesteps": [float(t) for t in tr.step_timesteps],
        "layers": [_short_layer(k) for k in tr.layers], "layer_keys": list(tr.layers),
        "grids": [list(tr.grids.get(k, ())) for k in tr.layers], "map_grid": list(tr.map_grid or ()),
        "quantities": list(tr.quantities), "image": _image_url(image), "notes": notes,
    }
    if n_tok is not None:
        names, keep, rest = _kept_tokens(tr, n_tok)
        d["tokens"] = names + (["padding"] if rest else [])
        d["padding_count"] = len(rest or [])
    else:
        d["tokens"] = []
    maps = {}
    if "map_step_sum" in st:
        maps["step"] = _pack_maps(_select_tokens(tr.maps(aggregate="step", image=image_index), keep, rest))
    if "map_layer_sum" in st:
        maps["layer"] = _pack_maps(_select_tokens(tr.maps(aggregate="layer", image=image_index), keep, rest))
    if maps:  # the mean over everything (from whichever sums are there)
        maps["all"] = _pack_maps(_select_tokens(tr.maps(aggregate="mean", image=image_index), keep, rest)[None])
    if "layer_maps" in st:
        K = len(d["tokens"])
        size = S * L * K * math.prod(tr.map_grid)
        if size <= MAX_LAYER_MAP_BYTES:
            maps["full"] = _pack_maps(_select_tokens(tr.maps(aggregate=None, image=image_index), keep, rest))
        else:
            notes.append(f"the per step x layer maps ({size / 1e6:.1f} MB as bytes) are left out of the page "
                         f"(limit {MAX_LAYER_MAP_BYTES / 1e6:.0f} MB); the page shows per-step and per-layer means")
    d["maps"] = maps
    if "energies" in st:
        d["energies"] = {kind: {w: _nums(tr.energies(kind, when=w, image=image_index)) for w in ("before", "after")}
                         for kind in ("context", "prior", "posterior")}
        delta = tr.energies("posterior", when="delta", image=image_index)
        ok = torch.isfinite(delta)
        moved = ok & (delta.abs() > 1e-6 * tr.energies("posterior", when="before", image=image_index).abs().clamp_min(1))
        d["energy_stats"] = {"updates": int(moved.sum()), "lowered": int((delta[moved] < 0).sum()),
                             "cells": int(ok.sum())}
    if "norms" in st:
        K = len(keep)
        idx = torch.tensor(keep)
        d["norms"] = {"in": _nums(tr.context_norms("before", image=image_index).index_select(2, idx)),
                      "out": _nums(tr.context_norms("after", image=image_index).index_select(2, idx)),
                      "drift": _nums(tr.drift(image=image_index).index_select(2, idx)), "tokens": K}
    g = _guidance(tr, image_index)
    if g:
        d["guidance"] = g
        d["latent_hw"] = list(getattr(tr, "latent_hw", None) or ())
    return d


# -- page ------------------------------------------------------------------------------------------
_TEMPLATE = Path(__file__).with_name("html_page.html")


def render_page(data: dict) -> str:
    """The page's HTML for ``data`` (:func:`page_data`): the template with the data inlined."""
    payload = json.dumps(data, separators=(",", ":"), allow_nan=False)
    payload = payload.replace("</", "<\\/")  # never close the <script> early
    digest = hashlib.sha256(payload.encode()).hexdigest()
    tpl = _TEMPLATE.read_text(encoding="utf-8")
    title = data.get("title", "ebca_viz trace").replace("&", "&amp;").replace("<", "&lt;")
    return (tpl.replace("__TITLE__", title).replace("__SHA256__", digest)
            .replace("/*__DATA__*/null", payload))


def trace_to_html(tr, path, image=None, title: Optional[str] = None, image_index: int = 0,
                  quiet: bool = False) -> Path:
    """Write ``tr`` as one self-contained HTML page to ``path`` (atomically); returns the path.

    ``image``: the final image (PIL image, uint8 array or file path) drawn beside / under the maps;
    ``image_index``: which image of the batch; ``quiet=False`` prints the path and the page's size.
    A path whose folder does not exist is refused before anything is computed.
    """
    p = check_html_path(path)
    html = render_page(page_data(tr, image=image, title=title, image_index=image_index))
    fd, tmp = tempfile.mkstemp(prefix=p.name + ".", suffix=".tmp", dir=p.parent if str(p.parent) else ".")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(html)
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)  # a page to open and share: the usual file mode, not mkstemp's 0600
        os.replace(tmp, p)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    if not quiet:
        print(f"wrote {p} ({p.stat().st_size / 1e6:.2f} MB): open it in a browser")
    return p


__all__ = ["trace_to_html", "page_data", "render_page", "check_html_path"]
