r"""A trace on disk: one ``.safetensors`` file, the stacked tensors plus a JSON header (no pickle).

:func:`save_trace` writes atomically (a temporary file in the same folder, then a rename);
:func:`load_trace` refuses anything it did not write and builds the trace through the same
constructors as recording (:class:`~ebca_viz.tracing.trace_data.TraceStorage`, then
:class:`~ebca_viz.tracing.trace_data.Trace`).
"""
from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path

import torch

from ..errors import RefusedFile

FORMAT = "ebca_viz.trace/2"
#: formats this version reads: /1 (before the guidance maps: no ``guidance`` tensor, no ``latent_hw``) and /2
READABLE = ("ebca_viz.trace/1", FORMAT)
DTYPES = {"float16": torch.float16, "bfloat16": torch.bfloat16, "float32": torch.float32}


def trace_meta(rec) -> dict:
    """The JSON header of a record (a :class:`~ebca_viz.tracing.trace_data.TraceStorage`)."""
    return {
        "format": FORMAT,
        "layers": rec.layers,
        "execution_order": rec.execution_order,
        "grids": {k: list(v) for k, v in rec.grids.items()},
        "seg_layers": rec.seg_layers,
        "steps": rec.steps,
        "step_timesteps": rec.step_timesteps,
        "timesteps": list(rec.timesteps),
        "run_starts": list(rec.run_starts),
        "token_labels": rec.token_labels,
        "quantities": list(rec.quantities),
        "map_grid": None if rec.map_grid is None else list(rec.map_grid),
        "dtype": str(rec.dtype).replace("torch.", ""),
        "budget_bytes": rec.budget.limit,
        "on_budget": rec.budget.on_budget,
        "used_bytes": rec.budget.used,
        "dropped": list(rec.budget.dropped),
        "alpha": rec.alpha,
        "mode": rec.mode,
        "images": rec.images,
        "n_uncond": rec.n_uncond,
        "latent_hw": None if rec.latent_hw is None else list(rec.latent_hw),
        "family": rec.family,
        "layer_kinds": dict(rec.layer_kinds),
        "text_segments": rec.text_segments,
    }


def save_trace(rec, path) -> None:
    """Write ``rec`` to ``path`` (``.safetensors``), atomically."""
    from safetensors.torch import save_file

    path = Path(path)
    tensors = {k: v.contiguous() for k, v in rec.stacked().items()}
    fd, tmp = tempfile.mkstemp(prefix=path.name + ".", suffix=".tmp", dir=path.parent)
    os.close(fd)
    try:
        save_file(tensors, tmp, metadata={"ebca_viz.trace": json.dumps(trace_meta(rec))})
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


class TraceFileError(RefusedFile):
    """A trace file that cannot be read, or whose header disagrees with its tensors."""


_META_KEYS = ("format", "layers", "execution_order", "grids", "seg_layers", "steps", "step_timesteps", "timesteps",
              "run_starts", "token_labels", "quantities", "map_grid", "dtype", "budget_bytes", "on_budget",
              "used_bytes", "dropped", "alpha", "mode", "images", "n_uncond")


_MAGIC = ((b"\x89PNG", "a PNG image"), (b"\xff\xd8\xff", "a JPEG image"), (b"GIF8", "a GIF image"),
          (b"%PDF", "a PDF document"), (b"\x1f\x8b", "gzip-compressed data"), (b"<!DOCTYPE html", "an HTML page"),
          (b"<html", "an HTML page"), (b"{", "JSON or other text"), (b"[", "JSON or other text"))


def _what_it_holds(head: bytes) -> str:
    """A guess at what a file that is not a trace holds, from its first bytes."""
    for magic, what in _MAGIC:
        if head.lstrip()[:len(magic)].lower() == magic.lower():
            return what
    try:
        head.decode("utf-8")
        return "text"
    except UnicodeDecodeError:
        return "binary data of an unknown kind"


def _read_header(path: Path) -> None:
    """Refuse, before safetensors parses anything, what is not a safetensors file."""
    if not path.exists():
        raise TraceFileError(f"{path}: no such file; fix: check the path; Trace.save writes one .safetensors file")
    if path.is_dir():
        raise TraceFileError(f"{path} is a directory; pass the .safetensors file written by Trace.save")
    size = path.stat().st_size
    with open(path, "rb") as f:
        head = f.read(8)
        start = head + f.read(56)
    if size == 0:
        raise TraceFileError(f"{path} is empty (0 bytes): the file was not written completely; fix: record the trace again and save it with Trace.save")
    # a pickle starts with 0x80; a safetensors header length may too (its low byte), so only when it cannot be one
    if (head[:1] == b"\x80" and (len(head) < 8 or int.from_bytes(head, "little") > size - 8)) or head[:4] == b"PK\x03\x04":
        raise TraceFileError(f"{path} looks like a pickle / torch.save file; ebca_viz reads only safetensors "
                             "traces (Trace.save) and never unpickles; fix: record the trace again and save it with Trace.save")
    if len(head) < 8:
        raise TraceFileError(f"{path} is truncated ({size} bytes): not a safetensors file; fix: record the trace again and save it with Trace.save")
    n = int.from_bytes(head, "little")
    if n > size - 8:
        raise TraceFileError(f"{path} is not an ebca_viz trace: it holds {_what_it_holds(start)} ({size} bytes), "
                             f"not a safetensors file (its header claims {n} bytes, the file has {size - 8} after "
                             "the length field: truncated or another kind of file); pass a .safetensors file "
                             "written by Trace.save")


def _check_tensors(path, m: dict, tensors: dict) -> None:
    """The header's layer / step / image / seg counts, map grid and dtypes against every tensor."""
    S, L, B, n_seg = len(m["steps"]), len(m["layers"]), m["images"], len(m["seg_layers"])
    g = tuple(m["map_grid"] or ())
    dt = DTYPES.get(m["dtype"])
    if dt is None:
        raise TraceFileError(f"{path}: unknown storage dtype {m['dtype']!r} in the header; fix: record the trace again and save it with Trace.save")
    f32 = torch.float32
    # item -> (leading dims after the step axis, dtype, number of trailing free dims (tokens, D))
    spec = {"guidance": ((S, 2, B), f32), "energies": ((S, L, 2, 4, B), f32), "norms": ((S, L, 3, B), f32), "seg": ((S, n_seg, 2, B), f32),
            "map_step_sum": ((S, B), f32), "map_step_count": ((S,), f32), "layer_maps": ((S, L, B), dt),
            "contexts": ((S, L, B), dt), "prompt_embeds": ((S, B), dt), "map_layer_sum": ((L, B), f32),
            "map_layer_count": ((L,), f32)}
    tokens = set()
    for name, t in tensors.items():
        if name not in spec:
            raise TraceFileError(f"{path}: unexpected tensor {name!r} (not written by Trace.save); fix: record the trace again and save it with Trace.save")
        lead, want_dt = spec[name]
        if tuple(t.shape[:len(lead)]) != lead:
            raise TraceFileError(
                f"{path}: tensor {name!r} has shape {tuple(t.shape)}, but the header describes {S} steps, "
                f"{L} layers, {B} images, {n_seg} SEG layers (leading dims {lead}): header and data disagree; fix: record the trace again and save it with Trace.save")
        if t.dtype != want_dt:
            raise TraceFileError(f"{path}: tensor {name!r} is {t.dtype}, the header says {want_dt}; fix: record the trace again and save it with Trace.save")
        if name in ("norms", "map_step_sum", "layer_maps", "map_layer_sum", "contexts", "prompt_embeds"):
            tokens.add(int(t.shape[len(lead)]))
        if name in ("map_step_sum", "layer_maps", "map_layer_sum") and tuple(t.shape[len(lead) + 1:]) != g:
            raise TraceFileError(f"{path}: tensor {name!r} maps are {tuple(t.shape[len(lead) + 1:])}, the header's "
                                 f"map_grid is {g}; fix: record the trace again and save it with Trace.save")
    if "guidance" in tensors:
        hw = tuple(m.get("latent_hw") or ())
        if tuple(tensors["guidance"].shape[3:]) != hw:
            raise TraceFileError(f"{path}: tensor 'guidance' maps are {tuple(tensors['guidance'].shape[3:])}, the "
                                 f"header's latent_hw is {hw or None}; fix: record the trace again and save it with Trace.save")
    if len(tokens) > 1:
        raise TraceFileError(f"{path}: tensors disagree on the number of tokens: {sorted(tokens)}; fix: record the trace again and save it with Trace.save")
    if len(m["step_timesteps"]) != S:
        raise TraceFileError(f"{path}: {S} steps but {len(m['step_timesteps'])} step timesteps in the header; fix: record the trace again and save it with Trace.save")


def read_trace_file(path) -> tuple[dict, dict]:
    """``(header, tensors)`` of a trace file written by :meth:`Trace.save`, checked against each other
    (:func:`ebca_viz.tracing.trace_data.load_trace` builds the :class:`TraceStorage` and the :class:`Trace`).

    Refuses with :class:`TraceFileError` (naming the file and what is wrong) anything else: a
    directory, an empty, truncated or pickled file, non-JSON or incomplete metadata, or tensors whose
    shapes or dtypes disagree with the header."""
    from safetensors import safe_open

    path = Path(path)
    _read_header(path)
    try:
        with safe_open(str(path), framework="pt") as f:
            meta = (f.metadata() or {}).get("ebca_viz.trace")
            if meta is None:
                names = list(f.keys())
                shown = ", ".join(names[:4]) + (", ..." if len(names) > 4 else "")
                raise TraceFileError(f"{path} is not an ebca_viz trace: it is a safetensors file holding "
                                     f"{len(names)} tensors ({shown}) without 'ebca_viz.trace' metadata (model "
                                     "weights?); pass a file written by Trace.save")
            tensors = {k: f.get_tensor(k) for k in f.keys()}
    except TraceFileError:
        raise
    except Exception as e:  # safetensors' own parse errors
        raise TraceFileError(f"{path}: not a readable safetensors trace ({type(e).__name__}: {e}); fix: record the trace again and save it with Trace.save") from None
    try:
        m = json.loads(meta)
    except json.JSONDecodeError as e:
        raise TraceFileError(f"{path}: the trace metadata is not JSON ({e}); fix: record the trace again and save it with Trace.save") from None
    if not isinstance(m, dict):
        raise TraceFileError(f"{path}: the trace metadata is not a JSON object; fix: record the trace again and save it with Trace.save")
    if m.get("format") not in READABLE:
        raise TraceFileError(f"{path}: unsupported trace format {m.get('format')!r} (this version of ebca_viz reads "
                             f"{' and '.join(READABLE)}; a newer format needs a newer ebca_viz); fix: record the trace again and save it with Trace.save")
    missing = [k for k in _META_KEYS + (("latent_hw",) if m["format"] == FORMAT else ()) if k not in m]
    if missing:
        raise TraceFileError(f"{path}: the trace metadata lacks {missing}; fix: record the trace again and save it with Trace.save")
    if m["format"] != FORMAT and "guidance" in tensors:
        raise TraceFileError(f"{path}: a {m['format']} file holds no 'guidance' tensor (added in {FORMAT}): "
                             "header and data disagree; fix: record the trace again and save it with Trace.save")
    _check_tensors(path, m, tensors)
    return m, tensors
