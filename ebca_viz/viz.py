"""Old import path of the figures, kept as plain re-exports (no lazy routes) for code that still
imports from here (the panel package, notebooks 02 and 08). New code imports from the homes:

* figures: :mod:`ebca_viz.plots` (``from ebca_viz.plots import plot_attention_maps, compare_images``);
* token labels and prompt positions: :mod:`ebca_viz.tokens`;
* ``pick`` / ``fast_mode`` / ``default_device`` / ``upscale``: :mod:`ebca_viz.util`.
"""
from __future__ import annotations

from .plots import (  # noqa: F401
    FS,
    FS_TITLE,
    GUIDANCE_UNITS,
    ExplainerFigure,
    animate_maps,
    animate_trace,
    compare_images,
    figure_png,
    image_array,
    image_grid,
    new_figure,
    pca_2d,
    plot_attention_maps,
    plot_context_trajectories,
    plot_descent,
    plot_energy_curves,
    plot_energy_heatmap,
    plot_gradient_check,
    plot_guidance,
    plot_seg_energy,
    plot_token_maps,
    plot_trace_contexts,
    plot_trace_energies,
    plot_trace_maps,
    plot_trace_seg,
    resize_map,
    save_animation,
    save_figure,
    show_animation,
    stack_maps,
    to_numpy,
    trace_context_path,
)
from .plots import short_layer as _short_layer  # noqa: F401
from .tokens import prompt_token_indices, token_labels, trace_prompt_positions, trace_tokens  # noqa: F401
from .util import default_device, fast_mode, pick, upscale  # noqa: F401

__all__ = [
    "ExplainerFigure", "new_figure", "figure_png", "save_figure",
    "to_numpy", "image_array", "resize_map", "stack_maps", "token_labels", "prompt_token_indices",
    "plot_attention_maps", "plot_token_maps", "animate_maps", "save_animation", "plot_energy_curves",
    "plot_energy_heatmap", "plot_descent", "plot_gradient_check", "pca_2d", "plot_context_trajectories",
    "plot_seg_energy", "compare_images", "image_grid", "upscale", "trace_tokens", "trace_prompt_positions",
    "plot_trace_maps", "plot_trace_energies", "trace_context_path", "plot_trace_contexts", "plot_trace_seg",
    "plot_guidance", "GUIDANCE_UNITS", "animate_trace", "show_animation", "pick", "fast_mode", "default_device",
]
