"""Each model's own regime: the settings the notebooks, the demo and the gallery use.

Shapes world values come from the sweep ``benchmarks/shapes_sweep.py`` (its table is
``docs/shapes_regime.md``); real Stable Diffusion keeps the paper's settings (``docs/method.md``).
A value is changed here only together with a re-run of that sweep.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass, replace


@dataclass(frozen=True)
class Regime:
    name: str
    steps: int  # DDIM steps in full mode
    fast_steps: int  # EBCA_VIZ_FAST=1
    guidance: float  # CFG scale
    gamma_attn: float  # EBCU
    gamma_norm: float
    upweight: float  # token up-weight on the object tokens
    edit_alpha: float  # EBCQ
    edit_start: float  # synthetic edit: fraction of the run before the edit acts
    negation_alpha: float  # EBCQ negation (direction -1)
    seg_scale: float
    seg_sigma: float
    seg_layers: tuple  # SEG: which self-attention blocks are blurred ("down", "mid", "up")

    def to_json(self) -> dict:
        return asdict(self)


SHAPES = Regime(name="shapes-world", steps=25, fast_steps=10, guidance=3.0, gamma_attn=0.3, gamma_norm=0.3,
                upweight=1.5, edit_alpha=1.0, edit_start=0.4, negation_alpha=0.6, seg_scale=3.0, seg_sigma=1.0,
                seg_layers=("down", "mid", "up"))
# (SEG: experiments.seg.sweep_seg chose sigma 1 on every self-attention layer: a 4x4 / 8x8 grid saturates by
#  sigma ~2, and the mid block alone (4x4) moves the samples by < 2.5 grey levels)
# The paper's SD settings (EBCA: gamma 0.01/0.02, up-weight 2.5, alpha 1.3, start 0.2; SEG: sigma 10, scale 3, mid block).
SD = Regime(name="sd", steps=50, fast_steps=4, guidance=7.5, gamma_attn=0.01, gamma_norm=0.02, upweight=2.5,
            edit_alpha=1.3, edit_start=0.2, negation_alpha=0.65, seg_scale=3.0, seg_sigma=10.0,
            seg_layers=("mid",))
TINY = replace(SHAPES, name="tiny", fast_steps=4)
# the neglect world is the shapes world fine-tuned (same architecture, tokenizer, sampler): its benchmarks use the
# shapes world's regime (benchmarks/neglect_comparison.py: DDIM 25 steps, CFG 3; ebca_viz.models.model_kind says
# "shapes-world" for it), so the panel and the demo do too
NEGLECT = replace(SHAPES, name="neglect-world")

# the DiT world (ebca_viz.shapes.train_dit): its own sampler, DPM-Solver++ 20 steps at CFG 3 (train_dit.CALL_KWARGS);
# EBCU: placeholders (the middle of dit_eval.DIT_GRID, the middle up-weight), not tuned: the values the DiT
# benchmark tunes ship in its result file (notebook 10 reads them there); SEG: the published default on a DiT
# (sigma inf, the middle block, scale 3: diffusers' SEG guider), not tuned here
NEGLECT_DIT = replace(SHAPES, name="neglect-world-dit", steps=20, fast_steps=10, gamma_attn=0.01, gamma_norm=0.01,
                      upweight=2.5, seg_sigma=float("inf"), seg_layers=("mid",))


def regime_for(model: str) -> Regime:
    """The regime of a model name as :func:`ebca_viz.notebook.load_model` returns it."""
    if model == "shapes-world":
        return SHAPES
    if model == "neglect-world":
        return NEGLECT
    if model == "neglect-world-dit":
        return NEGLECT_DIT
    if model.startswith("tiny"):
        return TINY
    return SD


#: the worlds whose images the shapes detector (:mod:`ebca_viz.shapes.detect`) can judge
DETECTOR_WORLDS = ("shapes-world", "neglect-world")

__all__ = ["DETECTOR_WORLDS", "Regime", "SHAPES", "SD", "TINY", "NEGLECT", "NEGLECT_DIT", "regime_for"]
