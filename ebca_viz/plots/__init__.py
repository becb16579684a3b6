r"""Every figure of ebca_viz: pure functions of recorded data (arrays, traces, images) returning a
:class:`matplotlib.figure.Figure` built without pyplot (``Figure()`` on an Agg canvas: nothing stays open,
no backend is switched; Jupyter renders it through :meth:`~ebca_viz.plots.base.ExplainerFigure._repr_png_`).

One module per kind of figure, each with its figures read from a :class:`~ebca_viz.tracing.Trace`
(``plot_trace_*``: maps, guidance maps and map animations in ``maps``; energies and SEG energies in
``energy``; contexts and drift in ``trajectories``):

* :mod:`~ebca_viz.plots.base` -- the figure, text sizes (:data:`FS`), array and layout helpers (:func:`readable`);
* :mod:`~ebca_viz.plots.maps` -- attention maps (token x row grids) and their animation;
* :mod:`~ebca_viz.plots.energy` -- energies through the layer cascade, the three EBCU terms, SEG's blur sweep;
* :mod:`~ebca_viz.plots.descent` -- single updates: where they descend, the step-size sweep;
* :mod:`~ebca_viz.plots.trajectories` -- context norms, drift and PCA paths;
* :mod:`~ebca_viz.plots.comparisons` -- images side by side with their difference, grids;
* :mod:`~ebca_viz.plots.rates` -- rates and paired effects with their intervals, histograms against N(0, 1);

Dimension names: ``S`` sampling steps (0 = noisiest), ``L`` cross-attention layers (execution order),
``N`` tokens (0 = start-of-text), ``h, w`` a layer's latent grid, ``D`` context dimension, ``R`` rows of a
grid, ``B`` images, ``G`` step sizes. Nothing here loads a model or samples (:mod:`ebca_viz.notebook` does).
"""
from .base import (  # noqa: F401
    short_layer,
    close_figure,
    layer_ticks,
    panel_grid,
    legends_to_spare,
    ExplainerFigure,
    FS,
    FS_TITLE,
    MAX_WIDTH_IN,
    wrap_titles,
    new_figure,
    figure_png,
    save_figure,
    to_numpy,
    image_array,
    resize_map,
    stack_maps,
    readable,
    add_colorbar,
)
from .maps import (  # noqa: F401
    plot_attention_maps,
    plot_token_maps,
    animate_maps,
    save_animation,
    show_animation,
)
from .energy import (  # noqa: F401
    plot_energy_curves,
    plot_energy_heatmap,
    plot_descent,
    plot_gradient_check,
    plot_seg_energy,
    KINDS,
    LABELS,
    COLORS,
    trace_energy_terms,
    update_counts,
    plot_energy_terms,
)
from .descent import (  # noqa: F401
    plot_descent_map,
    plot_step_size,
    plot_repeated_updates,
    plot_gamma_sweep,
)
from .trajectories import (  # noqa: F401
    pca_2d,
    plot_context_trajectories,
)
from .comparisons import (  # noqa: F401
    compare_images,
    image_grid,
)
from .rates import (  # noqa: F401
    plot_rate_bars,
    plot_effects,
    plot_histograms_vs_normal,
)
from .base import TRACE_STEP_LABEL  # noqa: F401
from .maps import plot_trace_maps, animate_trace, GUIDANCE_UNITS, plot_guidance  # noqa: F401
from .energy import plot_trace_energies, plot_trace_seg  # noqa: F401
from .trajectories import trace_context_path, plot_trace_contexts, plot_trace_drift  # noqa: F401

__all__ = [
    "short_layer",
    "close_figure",
    "layer_ticks",
    "panel_grid",
    "legends_to_spare",
    "plot_rate_bars",
    "plot_effects",
    "plot_histograms_vs_normal",
    "plot_trace_drift",
    "ExplainerFigure",
    "FS",
    "FS_TITLE",
    "MAX_WIDTH_IN",
    "wrap_titles",
    "new_figure",
    "figure_png",
    "save_figure",
    "to_numpy",
    "image_array",
    "resize_map",
    "stack_maps",
    "readable",
    "add_colorbar",
    "plot_attention_maps",
    "plot_token_maps",
    "animate_maps",
    "save_animation",
    "show_animation",
    "plot_energy_curves",
    "plot_energy_heatmap",
    "plot_descent",
    "plot_gradient_check",
    "plot_seg_energy",
    "KINDS",
    "LABELS",
    "COLORS",
    "trace_energy_terms",
    "update_counts",
    "plot_energy_terms",
    "plot_descent_map",
    "plot_step_size",
    "plot_repeated_updates",
    "plot_gamma_sweep",
    "pca_2d",
    "plot_context_trajectories",
    "compare_images",
    "image_grid",
    "TRACE_STEP_LABEL",
    "plot_trace_maps",
    "plot_trace_energies",
    "trace_context_path",
    "plot_trace_contexts",
    "plot_trace_seg",
    "GUIDANCE_UNITS",
    "plot_guidance",
    "animate_trace",
]
