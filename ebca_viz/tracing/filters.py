r"""Which layers, steps and quantities a :func:`ebca_viz.trace` records.

Every filter is validated when the trace is created (layers, quantities) or as soon as
the run length is known (steps given as fractions), and a bad value raises an error
that names the parameter.

* **layers** -- cross-attention processor keys (diffusers' ``unet.attn_processors`` keys,
  e.g. ``down_blocks.0.attentions.0.transformer_blocks.0.attn2.processor``), shell globs
  over them (``"up_blocks.1.*"``), block names ``"down" | "mid" | "up"``, or ints
  (positions in execution order, negative from the end). ``None`` or ``"all"``: every
  cross-attention layer. The result is always in execution order. On a diffusion transformer the
  layers are those whose queries see text, and a layer kind selects them: ``"cross"`` (PixArt),
  ``"joint"`` (SD3, Flux double-stream), ``"single"`` (Flux single-stream).
* **steps** -- sampling-step indices ``i = 0`` (noisiest) .. ``T-1`` within one run:
  ints (negative from the end), ``range`` / ``slice`` objects, floats in ``[0, 1]``
  (the step ``min(T-1, floor(f T))``), or a pair of floats ``(a, b)`` (the window
  ``floor(a T) <= i < floor(b T)``; ``b = 1`` reaches the last UNet call, also PNDM's extra
  one at index ``T``, as a :class:`~ebca_viz.Schedule` window does); a list mixes them.
  ``None``: every step.
* **quantities** -- see :data:`QUANTITIES`.
"""
from __future__ import annotations

import fnmatch
import math
from typing import Optional, Sequence

from ..attach import block_of
from ..errors import InvalidSetting, InvalidType

#: name -> what it records (per recorded step and layer unless said otherwise)
QUANTITIES = {
    "maps": "running sums of the cross-attention maps: per layer (over steps) and per step (over layers)",
    "layer_maps": "every step x layer cross-attention map (large; off by default)",
    "energies": "E(Q;K), E(K;Q), E(K), E(K;Q)+E(K) of the context before and after each layer's update",
    "context_norms": "per-token norms of the context before/after each layer and drift from the prompt embedding",
    "contexts": "the context vectors after each layer and the prompt embedding (large; off by default)",
    "seg": "SEG: self-attention energy of the blurred and the reference (unblurred) branch",
    "guidance": "per step, the per-pixel magnitude (L2 over latent channels) of what CFG and SEG added to the "
                "noise prediction, on the latent grid",
}
DEFAULT_QUANTITIES = ("maps", "energies", "context_norms", "seg", "guidance")


def select_quantities(quantities) -> tuple:
    """``None`` -> defaults, ``"all"`` -> everything, else a list of names from :data:`QUANTITIES`."""
    if quantities is None:
        return DEFAULT_QUANTITIES
    if quantities == "all":
        return tuple(QUANTITIES)
    if isinstance(quantities, str):
        quantities = [quantities]
    try:
        qs = list(quantities)
    except TypeError:
        raise InvalidType(f"quantities must be a list of names from {list(QUANTITIES)}, got {quantities!r}") from None
    for q in qs:
        if q not in QUANTITIES:
            raise InvalidSetting(f"quantities: unknown quantity {q!r}; choose from {list(QUANTITIES)} (or 'all')")
    if not qs:
        raise InvalidSetting(f"quantities is empty; choose from {list(QUANTITIES)}")
    return tuple(q for q in QUANTITIES if q in qs)


LAYER_KINDS = ("cross", "joint", "single")


def select_layers(all_keys: Sequence[str], layers, kinds: Optional[dict] = None) -> list:
    """Processor keys chosen by ``layers`` (see module docstring), in execution order; ``kinds``: key -> layer
    kind (:mod:`ebca_viz.adapters`), for the kind names."""
    if layers is None or layers == "all":
        return list(all_keys)
    if isinstance(layers, (str, int)):
        layers = [layers]
    chosen = set()
    example = all_keys[0] if all_keys else "none available"
    for spec in layers:
        if isinstance(spec, bool) or not isinstance(spec, (str, int)):
            raise InvalidType(f"layers: entries must be processor keys, globs, 'down'/'mid'/'up' or ints, got {spec!r}")
        if isinstance(spec, int):
            if not -len(all_keys) <= spec < len(all_keys):
                raise InvalidSetting.of("layers", spec, f"pass indices between {-len(all_keys)} and {len(all_keys) - 1}",
                                         why=f"out of range; this UNet has {len(all_keys)} cross-attention layers")
            chosen.add(all_keys[spec])
            continue
        if spec in ("down", "mid", "up"):
            hit = [k for k in all_keys if block_of(k) == spec]
        elif spec in LAYER_KINDS and kinds:
            hit = [k for k in all_keys if kinds.get(k) == spec]
        elif any(ch in spec for ch in "*?["):
            hit = [k for k in all_keys if fnmatch.fnmatchcase(k, spec)]
        else:
            hit = [k for k in all_keys if k == spec or k == spec + ".processor"]
        if not hit:
            raise InvalidSetting(
                f"layers: {spec!r} matches no cross-attention layer of this UNet; use processor keys "
                f"(e.g. {example!r}), globs, 'down'/'mid'/'up', a layer kind {LAYER_KINDS} or ints"
            )
        chosen.update(hit)
    return [k for k in all_keys if k in chosen]


class StepFilter:
    """Step selection; :meth:`resolve` turns it into a set of indices once ``T`` is known."""

    def __init__(self, steps):
        self.spec = steps
        self.entries = None if steps is None else self._entries(steps)

    @staticmethod
    def _entries(steps) -> list:
        if isinstance(steps, (int, float, range, slice)) and not isinstance(steps, bool):
            steps = [steps]
        elif isinstance(steps, tuple) and len(steps) == 2 and all(isinstance(x, float) for x in steps):
            steps = [steps]
        try:
            entries = list(steps)
        except TypeError:
            raise InvalidType(f"steps must be ints, ranges, fractions or (start, stop) fraction pairs, got {steps!r}") from None
        for e in entries:
            if isinstance(e, bool):
                raise InvalidType.of("steps", e, "pass int step indices (e.g. steps=[0, 5]), fractions or a range",
                                     why="a bool is not a step index")
            if isinstance(e, float) and not (0.0 <= e <= 1.0 and math.isfinite(e)):
                raise InvalidSetting(f"steps: fraction {e} must lie in [0, 1] (use ints for step indices)")
            if isinstance(e, tuple):
                if len(e) != 2 or not all(isinstance(x, (int, float)) and not isinstance(x, bool) for x in e):
                    raise InvalidSetting.of("steps", e, "pass a window as two numbers (start, stop), e.g. (0.0, 0.5)",
                                            why="a window is a pair of fractions (start, stop)")
                a, b = map(float, e)
                if not 0.0 <= a <= b <= 1.0:
                    raise InvalidSetting(f"steps: window {e!r} needs 0 <= start <= stop <= 1")
            elif not isinstance(e, (int, float, range, slice)):
                raise InvalidType.of("steps", e, "pass ints, a range, a slice, fractions in [0, 1] or (start, stop) windows",
                                     why="not a step selection")
        return entries

    @property
    def needs_num_steps(self) -> bool:
        if self.entries is None:
            return False
        return any(isinstance(e, (float, tuple, slice)) or (isinstance(e, int) and e < 0) for e in self.entries)

    def resolve(self, num_steps: Optional[int]) -> Optional[set]:
        """Selected step indices, or ``None`` for all. ``num_steps`` may be None if not needed."""
        if self.entries is None:
            return None
        T = num_steps
        if self.needs_num_steps and T is None:
            raise InvalidSetting(
                f"steps={self.spec!r} uses fractions, slices or negative indices, which need the run length: "
                "pass num_steps= to trace() (a bare UNet has no scheduler to read it from)"
            )
        out = set()
        for e in self.entries:
            if isinstance(e, int):
                out.add(e if e >= 0 else T + e)
            elif isinstance(e, float):
                out.add(min(T - 1, int(math.floor(e * T))))
            elif isinstance(e, tuple):
                a, b = map(float, e)
                # b = 1 reaches the end of the run, PNDM's extra UNet call (index T) included
                out.update(range(int(math.floor(a * T)), T + 1 if b >= 1.0 else int(math.floor(b * T))))
            elif isinstance(e, slice):
                out.update(range(T)[e])
            else:  # range
                out.update(e)
        return out

