r"""Control panel: vanilla vs energy-based sampling from the same seed, side by side.

The sampling logic is a plain function, :func:`sample_comparison` (no widgets involved, tested
directly); :class:`EnergyPanel` only wires ipywidgets controls to it::

    from ebca_viz.widgets import EnergyPanel
    EnergyPanel(model="tiny").show()          # or: display(panel.widget)

Two methods:

* ``"ebca"``: EBCU on the main prompt (``gamma_attn``, ``gamma_norm``, token up-weights) and EBCQ
  editorial prompts (``O = (O + sum_s sigma_s alpha_s O_s) / (1 + sum_s sigma_s alpha_s)``),
* ``"seg"``: smoothed energy guidance (Gaussian blur ``sigma`` of the self-attention queries,
  scale ``s``).

Both runs are recorded with :func:`ebca_viz.trace` (maps, energies, context norms, SEG energies);
the vanilla image is diffusers' own attention. The last vanilla result is cached per ``(model, prompt, seed, steps, guidance)``.
Sampling runs on the GPU when one is visible, else on the CPU. Errors go to the panel's error
area; processors and hooks are always restored (the installations are context managers).

Slider ranges come from the model's regime (:class:`ControlRanges`); a value typed beyond a slider
is refused with a message, never clamped. The prompt's tokens are chips with their indices
(clicking one toggles it in ``token_indices``). Next to the vanilla and the energy image: the
shapes-world detector's verdict per image (:func:`detector_verdict`), the difference image
(:func:`difference_image`) and the posterior energy per layer of both runs
(:func:`plot_layer_energies`).

Stable CSS classes for browser tests: ``ebca-panel``, ``ebca-sample`` (button),
``ebca-progress``, ``ebca-status``, ``ebca-error``, ``ebca-notice`` (refused values),
``ebca-results`` (+ ``ebca-stale`` while running / after an error / after a change),
``ebca-stale-label``, ``ebca-run-caption``, ``ebca-image-vanilla``, ``ebca-image-energy``,
``ebca-image-diff``, ``ebca-verdict-vanilla`` / ``-energy``, ``ebca-layer-energy``, ``ebca-plot``,
``ebca-maps``, ``ebca-verdict`` (its marks ``ebca-verdict-ok`` / ``-no`` / ``-unsure``),
``ebca-diff-stats``, ``ebca-chip`` / ``ebca-chip-<i>``, ``ebca-token-summary``, ``ebca-method``, and
``ebca-seed`` / ``ebca-gamma-attn`` / ``ebca-edit0-alpha`` / ... on the numeric controls; the last
runs (:mod:`.history`): ``ebca-history`` (strip), ``ebca-history-item-<i>``, ``ebca-history-compare-<i>``
(button), ``ebca-compare``; the success rate (:func:`success_rate`): ``ebca-rate`` (button),
``ebca-rate-n``, ``ebca-rate-progress``, ``ebca-rate-cancel``, ``ebca-rate-result``;
``ebca-present-toggle`` (the "present" button; it adds ``ebca-present`` to the panel), ``ebca-expert``
(controls hidden in presentation mode) and ``ebca-col`` (one image column).
"""
from .controls import (  # noqa: F401
    DEFAULT_PROMPT,
    METHODS,
    ControlRange,
    ControlRanges,
    EditSpec,
    NumberControl,
    PanelSettings,
    parse_token_weights,
)
from .history import RunHistory, compare_energy_figure, rate_figure  # noqa: F401
from .panel import EnergyPanel  # noqa: F401
from .rendering import difference_image, placeholder_png, plot_layer_energies  # noqa: F401
from .runs import (  # noqa: F401
    Comparison,
    RateUnavailable,
    RunResult,
    SuccessRate,
    VanillaCache,
    sample_comparison,
    success_rate,
)
from .verdicts import detector_verdict, verdict_html  # noqa: F401

__all__ = ["PanelSettings", "EditSpec", "parse_token_weights", "Comparison", "RunResult", "VanillaCache",
           "sample_comparison", "EnergyPanel", "METHODS", "ControlRange", "ControlRanges", "NumberControl",
           "detector_verdict", "verdict_html", "difference_image", "plot_layer_energies", "placeholder_png",
           "RunHistory", "compare_energy_figure", "rate_figure", "success_rate", "SuccessRate", "RateUnavailable"]
