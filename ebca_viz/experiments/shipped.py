r"""Shipped benchmark results: write them with a fingerprint, load them only if it agrees, re-sample a part live.

A measurement that takes minutes (hundreds of samples per method) does not run in a notebook cell.
A script in ``benchmarks/`` runs it once and writes ``docs/<name>.json``; the notebook loads that
file, shows its numbers, re-samples a small part live and checks that the live part agrees.

File layout (``FORMAT = "ebca_viz.shipped/1"``)::

    {"format": "ebca_viz.shipped/1",
     "fingerprint": {"weights_sha256": ..., "settings": {...}, "seeds": {...}, "code": {...}, ...},
     "digest": sha256(canonical JSON of {"fingerprint": ..., "results": ...}),
     "results": {...}}          # raw per-sample outcomes (0/1 indicators, verdicts), never only summaries

* :func:`write` stores it atomically (temporary file + ``os.replace``: a reader never sees half a file);
* :func:`load` refuses a file whose ``digest`` does not match its fingerprint and results (edited by
  hand, truncated, or a fingerprint pasted from another run) and, given ``expect``, one whose
  fingerprint disagrees with what the notebook is about to compare it with (other weights, steps,
  guidance, seeds); the error names the field and both values;
* :func:`weights_sha256` hashes the parameters of a loaded pipeline (UNet, VAE, text encoder): the
  weights that produced the numbers, whatever folder they were loaded from;
* :func:`agree` is the agreement rule between a shipped number and its live re-sample:
  **the two 95 % intervals overlap**, ``live.lo <= shipped.hi and shipped.lo <= live.hi``
  (for a :class:`~ebca_viz.claims.Rate`, Wilson intervals; for a paired difference, t intervals).
  It is deliberately weak at small live n (it detects a broken pipeline or a file from other
  weights, not a 2-point drift); :func:`verdict_agreement` adds the stronger per-seed test: the
  same seed under the same settings must get the same verdict.
"""
from __future__ import annotations

import hashlib
import json
import os
import subprocess
from pathlib import Path
from typing import Optional, Sequence

import numpy as np

from .. import claims
from ..errors import InvalidSetting, MissingFile, RefusedFile

FORMAT = "ebca_viz.shipped/1"


class ShippedMismatchError(RefusedFile):
    """A shipped result file is corrupt, or its fingerprint does not match what it is compared with."""


def _canonical(obj) -> bytes:
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), allow_nan=False).encode()


def digest(fingerprint: dict, results: dict) -> str:
    """sha256 of the canonical JSON (sorted keys, no spaces) of ``{"fingerprint": ..., "results": ...}``."""
    return hashlib.sha256(_canonical({"fingerprint": fingerprint, "results": results})).hexdigest()


def weights_sha256(pipe) -> str:
    """sha256 over every parameter and buffer of ``pipe.unet`` (or ``pipe.transformer``), ``pipe.vae`` and ``pipe.text_encoder``
    (name, dtype, shape and bytes, in name order): identical weights give the same hash whatever
    folder or file format they came from; a dtype change (fp16 vs fp32) gives another one."""
    import torch

    h = hashlib.sha256()
    for part in ("unet", "transformer", "vae", "text_encoder"):
        mod = getattr(pipe, part, None)
        if mod is None:
            continue
        for name, t in sorted(mod.state_dict().items()):
            t = t.detach().to("cpu").contiguous()
            h.update(f"{part}.{name}|{t.dtype}|{tuple(t.shape)}|".encode())
            h.update(t.view(torch.uint8).numpy().tobytes() if t.numel() else b"")
    return h.hexdigest()


def code_version(root: Optional[Path] = None) -> dict:
    """``{"ebca_viz": version, "git_commit": sha or None, "git_dirty": bool or None, "torch", "diffusers"}``."""
    import diffusers
    import torch

    from .. import __version__

    root = Path(root or Path(__file__).resolve().parents[2])
    commit = dirty = None
    try:
        commit = subprocess.run(["git", "-C", str(root), "rev-parse", "HEAD"], capture_output=True, text=True,
                                timeout=10).stdout.strip() or None
        st = subprocess.run(["git", "-C", str(root), "status", "--porcelain", "--untracked-files=no"],
                            capture_output=True, text=True, timeout=10)
        dirty = bool(st.stdout.strip()) if st.returncode == 0 else None
    except (OSError, subprocess.SubprocessError):
        pass
    return {"ebca_viz": __version__, "git_commit": commit, "git_dirty": dirty, "torch": torch.__version__,
            "diffusers": diffusers.__version__}


def finite_json(d: dict) -> dict:
    """``{key: array or scalar}`` -> JSON values: arrays become lists, non-finite floats ``None``
    (JSON has no NaN), numpy booleans ``bool``."""
    out = {}
    for k, v in d.items():
        a = np.asarray(v)
        out[k] = [None if (isinstance(x, float) and not np.isfinite(x)) else x for x in a.tolist()] if a.ndim else \
            (None if isinstance(v, float) and not np.isfinite(v) else (bool(v) if isinstance(v, (bool, np.bool_)) else v))
    return out


def write(path, fingerprint: dict, results: dict) -> Path:
    """Write ``{"format", "fingerprint", "digest", "results"}`` to ``path`` atomically; return the path."""
    path = Path(path)
    if not path.parent.is_dir():
        raise MissingFile(f"write: folder {path.parent} does not exist (create it first)")
    data = {"format": FORMAT, "fingerprint": fingerprint, "digest": digest(fingerprint, results), "results": results}
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(data, indent=1, allow_nan=False) + "\n")
    os.replace(tmp, path)
    return path


def _flatten(d, prefix=""):
    out = {}
    for k, v in d.items():
        key = f"{prefix}{k}"
        if isinstance(v, dict):
            out.update(_flatten(v, key + "."))
        else:
            out[key] = v
    return out


def load_for_run(default, path=None, pipe=None, **settings) -> dict:
    """:func:`load` of ``path`` (default: ``default``, relative to the repository root) with the
    expectation that its weights are ``pipe``'s (when given) and that the fingerprint's ``settings``
    hold each keyword given and not None (e.g. ``steps=25, guidance=3.0``)."""
    path = Path(path) if path is not None else Path(__file__).resolve().parents[2] / default
    expect = {}
    if pipe is not None:
        expect["weights_sha256"] = weights_sha256(pipe)
    given = {k: v for k, v in settings.items() if v is not None}
    if given:
        expect["settings"] = given
    return load(path, expect or None)


def load(path, expect: Optional[dict] = None) -> dict:
    """Read a shipped result, refusing it (:class:`ShippedMismatchError`) when

    * it is not JSON, or not of :data:`FORMAT`;
    * its ``digest`` differs from :func:`digest` of its own fingerprint and results;
    * ``expect`` (a nested dict, e.g. ``{"weights_sha256": weights_sha256(pipe), "settings": {"steps": 25}}``)
      names a fingerprint field whose value differs (every mismatching field is listed).

    Returns the parsed ``{"format", "fingerprint", "digest", "results"}``."""
    path = Path(path)
    try:
        data = json.loads(path.read_text())
    except FileNotFoundError:
        raise MissingFile(f"{path}: no shipped result here (produce it with the script in benchmarks/ "
                                "named in its notebook)") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise ShippedMismatchError(f"{path}: not a JSON file ({e}); re-run the benchmark that writes it") from None
    if not isinstance(data, dict) or data.get("format") != FORMAT:
        got = data.get("format") if isinstance(data, dict) else type(data).__name__
        raise ShippedMismatchError(f"{path}: format {got!r}, expected {FORMAT!r}")
    for key in ("fingerprint", "digest", "results"):
        if key not in data:
            raise ShippedMismatchError(f"{path}: no {key!r} field; fix: re-run its benchmark to write the file again")
    want = digest(data["fingerprint"], data["results"])
    if want != data["digest"]:
        raise ShippedMismatchError(f"{path}: digest {data['digest'][:12]}... does not match its fingerprint and "
                                   f"results ({want[:12]}...): the file was changed after it was written; "
                                   "re-run its benchmark")
    if expect:
        have = _flatten(data["fingerprint"])
        need = _flatten(json.loads(json.dumps(expect)))  # tuples -> lists, as the file holds them
        bad = {k: (have.get(k, "<absent>"), v) for k, v in need.items() if have.get(k, "<absent>") != v}
        if bad:
            lines = "; ".join(f"{k}: file {a!r}, here {b!r}" for k, (a, b) in bad.items())
            raise ShippedMismatchError(f"{path}: fingerprint disagrees with this run ({lines}); these numbers were "
                                       "not produced by these weights/settings: re-run its benchmark")
    return data


def overlap(a, b) -> bool:
    """True when the 95 % intervals of ``a`` and ``b`` (:class:`~ebca_viz.claims.Rate` or
    :class:`~ebca_viz.claims.Mean`) share at least one point."""
    return a.lo <= b.hi and b.lo <= a.hi


def agree(shipped, live, what: str) -> bool:
    """:func:`ebca_viz.claims.check` that the live re-sample agrees with the shipped number
    (their 95 % intervals overlap, :func:`overlap`); returns True (or raises ClaimError)."""
    claims.check(overlap(shipped, live), f"live re-sample agrees with the shipped number: {what} "
                                        "(95 % intervals overlap)", f"shipped {shipped}", f"live {live}")
    return True


def verdict_agreement(shipped: Sequence, live: Sequence) -> claims.Rate:
    """Fraction of samples (same seed, same settings) whose live verdict equals the shipped one."""
    shipped, live = list(shipped), list(live)
    if len(live) > len(shipped):
        raise InvalidSetting(f"verdict_agreement: {len(live)} live verdicts but only {len(shipped)} shipped; "
                             f"fix: pass at most {len(shipped)} live verdicts, seed by seed as shipped")
    if not live:
        raise InvalidSetting.of("live", live, "pass the verdicts of at least one live run",
                                why="verdict_agreement: no live verdicts")
    return claims.rate(np.array([a == b for a, b in zip(shipped, live)]))


__all__ = ["FORMAT", "ShippedMismatchError", "digest", "weights_sha256", "code_version", "write", "load", "load_for_run",
           "overlap", "agree", "verdict_agreement"]
