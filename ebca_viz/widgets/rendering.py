"""What the panel draws (data in, PNG / figure out; no widgets): the difference image on a fixed
scale, the posterior energy per layer as a descent, image PNGs and placeholders."""
from __future__ import annotations

import math
import textwrap
from ..errors import InvalidSetting

IMAGE_PX = 200  # width of the three images on screen
DIFF_VMAX = 64.0  # /255: the difference image's fixed scale is 0 .. DIFF_VMAX / 255 (inferno), clipped above
DIFF_TICKS = (0, 16, 32, 48, 64)
LABEL_PX = 13  # text height in the PNGs drawn here: >= 12 px = 9 pt at 96 px per inch, shown 1:1
LAYER_PLOT_PX = 560  # the energy plot's PNG width (shown 1:1 in the panel; the narrowest it is shown)
LAYER_FIG_IN = (6.2, 5.2)  # its size in inches: 10 pt text is 10 * 560 / (6.2 * 96) = 9.4 pt on screen
UNCHANGED_RTOL = 1e-6  # |after - before| <= rtol * |before|: the update did not change the energy


def _font(px: int):
    from PIL import ImageFont

    try:
        return ImageFont.load_default(size=px)
    except TypeError:  # Pillow < 10.1: a fixed bitmap font
        return ImageFont.load_default()


def _diff_stats(a, b):
    import numpy as np

    x = np.asarray(a.convert("RGB"), np.float32)
    y = np.asarray(b.convert("RGB"), np.float32)
    if x.shape != y.shape:
        raise InvalidSetting.of("b", b, f"pass two images of the same size (resize b to {a.size})",
                                 why=f"the two images differ in size: {x.shape} vs {y.shape}")
    return np.abs(y - x).mean(-1)


def difference_image(a, b, size: int = IMAGE_PX, vmax: float = DIFF_VMAX):
    """``(PIL image, mean, max)``: ``d = |b - a|`` per pixel (mean over the colour channels, in /255)
    as an inferno map on the FIXED scale ``0 .. vmax`` /255 (brighter = larger; clipped above
    ``vmax``), upscaled (nearest) to ``size`` pixels wide, with a colourbar drawn under it (ticks in
    /255, labels :data:`LABEL_PX` px high, so >= 9 pt when the PNG is shown at its own width). So a
    change of 1/255 stays nearly black and one of 100/255 is bright yellow, on every run.

    An identical pair (``max d = 0``) gives a plain grey image saying "identical" (no map, nothing
    amplified). ``mean`` and ``max`` are ``d.mean()`` and ``d.max()`` in /255."""
    import numpy as np
    from matplotlib import colormaps
    from PIL import Image, ImageDraw

    from ..util import upscale

    if not vmax > 0:
        raise InvalidSetting(f"vmax must be > 0 (the top of the scale in /255), got {vmax}")
    d = _diff_stats(a, b)
    mean, top = float(d.mean()), float(d.max())
    fpx = max(LABEL_PX, size // 16)
    bar_h, pad = max(10, size // 18), 4
    height = size + pad + bar_h + 3 + fpx + 6 + fpx + 4
    canvas = Image.new("RGB", (size, height), (255, 255, 255))
    draw = ImageDraw.Draw(canvas)
    font = _font(fpx)
    if top == 0:
        draw.rectangle([0, 0, size - 1, height - 1], fill=(238, 238, 238), outline=(200, 200, 200))
        for i, line in enumerate(("identical", "(every pixel equal:", "max difference 0/255)")):
            f = _font(2 * fpx) if i == 0 else font
            w = draw.textlength(line, font=f)
            draw.text(((size - w) / 2, height / 2 - 2 * fpx + (0 if i == 0 else fpx + 2 + i * (fpx + 3))), line,
                      fill=(70, 70, 70), font=f)
        return canvas, mean, top
    cmap = colormaps["inferno"]
    rgb = (cmap(np.clip(d / vmax, 0, 1))[..., :3] * 255).astype(np.uint8)
    canvas.paste(upscale(Image.fromarray(rgb), size).resize((size, size), Image.NEAREST), (0, 0))
    x0, x1 = fpx // 2 + 2, size - fpx - 6  # bar spans [x0, x1]; room for the labels at both ends
    y0 = size + pad
    ramp = (cmap(np.linspace(0, 1, x1 - x0 + 1))[:, :3] * 255).astype(np.uint8)
    canvas.paste(Image.fromarray(np.repeat(ramp[None], bar_h, 0)), (x0, y0))
    draw.rectangle([x0, y0, x1, y0 + bar_h - 1], outline=(90, 90, 90))
    for t in DIFF_TICKS:
        if t > vmax:
            continue
        x = x0 + (x1 - x0) * t / vmax
        draw.line([x, y0 + bar_h, x, y0 + bar_h + 3], fill=(0, 0, 0))
        s = f"{t:g}" if t < vmax else f"{t:g}+"
        w = draw.textlength(s, font=font)
        draw.text((min(max(x - w / 2, 0), size - w), y0 + bar_h + 3), s, fill=(0, 0, 0), font=font)
    s = "|difference| in /255 (fixed scale)"
    w = draw.textlength(s, font=font)
    draw.text(((size - w) / 2, y0 + bar_h + 3 + fpx + 6), s, fill=(60, 60, 60), font=font)
    return canvas, mean, top


def format_diff(mean: float, top: float) -> str:
    """``"mean 0.42/255, max 37/255"`` (what the panel prints beside the difference image)."""
    def f(x):
        return "0" if x == 0 else (f"{x:.2f}" if x < 10 else f"{x:.0f}")

    return f"mean {f(mean)}/255, max {f(top)}/255"


def descent_counts(trace, kind: str = "posterior", rtol: float = UNCHANGED_RTOL) -> dict:
    """Every (step, layer) update of a traced run: ``drop = E_after - E_before`` of ``kind`` (shapes
    ``(steps, layers)``, from ``trace.energies(kind, "before" / "after")``), counted as ``down``
    (``drop < -tol``), ``up`` (``drop > tol``) or ``unchanged``, with ``tol = rtol * |E_before|``; NaN
    (nothing recorded) is left out. Returns those counts, ``n`` (all counted updates), ``share_down``
    (``down / n``, NaN when ``n`` is 0) and ``down_per_layer`` / ``n_per_layer`` (lists, one per layer)."""
    import numpy as np

    from ..plots import to_numpy

    b = to_numpy(trace.energies(kind, "before")).astype(np.float64)
    a = to_numpy(trace.energies(kind, "after")).astype(np.float64)
    ok = np.isfinite(a) & np.isfinite(b)
    drop = np.where(ok, a - b, 0.0)
    tol = rtol * np.abs(np.where(ok, b, 0.0))
    down, up = ok & (drop < -tol), ok & (drop > tol)
    n = int(ok.sum())
    return dict(down=int(down.sum()), up=int(up.sum()), unchanged=int((ok & ~down & ~up).sum()), n=n,
                share_down=float(down.sum()) / n if n else math.nan,
                down_per_layer=[int(x) for x in down.sum(0)], n_per_layer=[int(x) for x in ok.sum(0)])


def descent_summary(counts: dict, gammas=None) -> tuple:
    """``(headline, step-size line)`` for :func:`descent_counts`' ``counts``: ``"k of n updates went
    downhill (p %)"`` and, when some went up, that the step size overshoots there (the gammas given
    as ``(gamma_attn, gamma_norm)``), or "" when every update went down."""
    k, n, up, same = counts["down"], counts["n"], counts["up"], counts["unchanged"]
    head = f"{k} of {n} updates went downhill ({100.0 * k / n:.0f} %)" if n else "no update was recorded"
    g = "" if gammas is None else f" (gamma_attn {gammas[0]:g}, gamma_norm {gammas[1]:g})"
    if n and up:
        line = (f"The step size{g} overshoots on {up} update{'s' if up != 1 else ''}: the energy went up "
                f"(red); a smaller gamma descends more often.")
    elif n and same == n:
        line = f"No update changed the energy{g}: with gamma 0 the context is not moved."
    elif n and same:
        line = f"{same} update{'s' if same != 1 else ''} left the energy unchanged{g}."
    else:
        line = ""
    return head, line


def plot_layer_energies(vanilla_trace, energy_trace, label: str = "EBCA", kind: str = "posterior",
                        updates: bool = True, gammas=None):
    """Posterior energy ``E(K;Q) + E(K)`` of the (conditional) context through the cascade of
    cross-attention layers (execution order; ``trace.energies`` has shape ``(steps, layers)``).

    ``updates=True`` (EBCA), two panels sharing the layer axis:

    * top, mean over the steps: the energy of the context entering each layer (dot) and leaving it
      after the layer's EBCU update (arrow tip; green when the mean went down, red when up); a
      dotted grey line carries the context into the next layer (other queries, so the energy jumps
      there without any update); vanilla dashed for reference;
    * bottom: every update's change ``E_after - E_before`` (one dot per step; green < 0, red > 0).

    The title counts every (step, layer) update (:func:`descent_counts`, not the means), the tick
    labels each layer's share, and a line under the plot says whether the step size ``gammas =
    (gamma_attn, gamma_norm)`` overshoots (:func:`descent_summary`). ``updates=False`` (SEG: no
    context update): one panel with one curve for the run, no descent claim. Text is
    :data:`ebca_viz.plots.FS` / ``FS_TITLE`` on a :data:`LAYER_FIG_IN`-wide figure drawn
    :data:`LAYER_PLOT_PX` px wide (:func:`layer_energy_png`): >= 9 pt on screen (:func:`min_text_pt`)."""
    import numpy as np
    from matplotlib.lines import Line2D

    from ..plots import FS, FS_TITLE, new_figure, to_numpy
    from ..plots import short_layer as _short_layer

    v = to_numpy(vanilla_trace.energies(kind, "before")).mean(0)
    b_all = to_numpy(energy_trace.energies(kind, "before"))
    a_all = to_numpy(energy_trace.energies(kind, "after"))
    eb, ea = np.nanmean(b_all, 0), np.nanmean(a_all, 0)
    steps = b_all.shape[0]
    x = np.arange(len(v))
    names = [_short_layer(k) for k in energy_trace.layers]
    ylabel = "E(K;Q)+E(K)" if kind == "posterior" else kind
    green, red = "#1b7f3b", "#c0392b"
    w_in = LAYER_FIG_IN[0]
    if not updates:  # SEG leaves the text context alone: one curve (its queries, hence E(K;Q), still differ)
        fig = new_figure(figsize=(w_in, 3.4))
        ax = fig.subplots()
        ax.plot(x, v, "o--", color="0.55", ms=4, lw=1.3, label="vanilla")
        ax.plot(x, eb, "o-", color="C0", ms=5, lw=1.6, label=label)
        ax.legend(fontsize=FS, loc="best")
        ax.set_title(f"{ylabel} per layer, mean over {steps} steps\n({label} does not update the context)",
                     fontsize=FS_TITLE)
        ax.set_xticks(x)
        ax.set_xticklabels(names, fontsize=FS)
        ax.set_ylabel(ylabel, fontsize=FS)
        ax.set_xlabel("cross-attention layer (execution order)", fontsize=FS)
        note = (f"Notice: {label} changes the image's queries, not the text context, so there is no descent "
                "to show; the curves differ only through the queries.")
        bottom = 0.33
    else:
        counts = descent_counts(energy_trace, kind)
        head, line = descent_summary(counts, gammas)
        fig = new_figure(figsize=(w_in, LAYER_FIG_IN[1]))
        ax, ax2 = fig.subplots(2, 1, sharex=True, gridspec_kw=dict(height_ratios=[1.5, 1.0], hspace=0.12))
        ax.plot(x, v, "o--", color="0.55", ms=4, lw=1.3)
        for i in range(len(x)):
            if i + 1 < len(x):
                ax.plot([x[i], x[i + 1]], [ea[i], eb[i + 1]], ":", color="0.35", lw=1.2)
            ax.annotate("", xy=(x[i], ea[i]), xytext=(x[i], eb[i]),
                        arrowprops=dict(arrowstyle="-|>", color=green if ea[i] < eb[i] else red, lw=2.5,
                                        mutation_scale=11, shrinkA=0, shrinkB=0))
        ax.plot(x, eb, "o", color="C0", ms=4, zorder=3)
        ax.legend(handles=[Line2D([], [], color="0.55", ls="--", marker="o", ms=4, label="vanilla"),
                           Line2D([], [], color="C0", ls="", marker="o", ms=4, label="entering"),
                           Line2D([], [], color=green, lw=2.5, label="update"),
                           Line2D([], [], color="0.35", ls=":", label="next layer")],
                  fontsize=FS, loc="upper center", ncol=4, handlelength=1.4, columnspacing=0.9, handletextpad=0.4,
                  framealpha=0.9, borderaxespad=0.2)
        lo, hi = np.nanmin([v.min(), eb.min(), ea.min()]), np.nanmax([v.max(), eb.max(), ea.max()])
        ax.set_ylim(lo - 0.08 * (hi - lo), hi + 0.45 * (hi - lo))  # headroom for the legend
        ax.set_ylabel(ylabel, fontsize=FS)
        ax.set_title(f"{head}\n{ylabel} through the layers, mean over {steps} steps", fontsize=FS_TITLE)
        d = a_all - b_all
        jit = np.linspace(-0.18, 0.18, max(steps, 1))
        for i in range(len(x)):
            di = d[:, i]
            ax2.scatter(x[i] + jit[:len(di)], di, s=9, c=np.where(di > 0, red, green), lw=0)
        ax2.axhline(0, color="0.2", lw=0.8)
        ax2.set_ylabel("change per\nupdate", fontsize=FS)
        ax2.set_xticks(x)
        ax2.set_xticklabels([f"{n}\n{k}/{m}\u2193" for n, k, m in
                             zip(names, counts["down_per_layer"], counts["n_per_layer"])], fontsize=FS)
        ax2.set_xlabel("cross-attention layer (execution order); k/n\u2193: updates that went down", fontsize=FS)
        ax2.grid(alpha=0.3)
        note = (line + " " if line else "") + ("Notice: each arrow is one layer's update of the context; "
                                               "pointing down = the energy its queries see went down.")
        bottom = 0.31
    for a in fig.axes:
        a.tick_params(labelsize=FS)
        a.grid(alpha=0.3)
    note = textwrap.fill(note, 72)
    fig.text(0.015, 0.012, note, fontsize=FS, va="bottom", ha="left", color="0.15")
    h_in = fig.get_figheight()  # room for the note: its lines at 1.25 x FS, plus the x labels
    fig.subplots_adjust(left=0.14, right=0.98, top=0.88 if updates else 0.85,
                        bottom=bottom + (note.count("\n") - 3) * 1.25 * FS / 72 / h_in)
    return fig


def layer_energy_png(fig, width_px: int = LAYER_PLOT_PX) -> bytes:
    """PNG of :func:`plot_layer_energies`' figure exactly ``width_px`` wide (no tight bbox: the
    figure's own layout), so its text sizes on screen are known (:func:`min_text_pt`)."""
    import io

    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=width_px / fig.get_figwidth())
    return buf.getvalue()


def min_text_pt(fig, display_px: int = LAYER_PLOT_PX) -> float:
    """Smallest visible text of ``fig`` in pt on screen when the figure is shown ``display_px`` wide
    (96 px per inch): ``size_pt * display_px / (figure width in inches * 96)``."""
    from matplotlib.text import Text

    sizes = [t.get_fontsize() for t in fig.findobj(Text) if t.get_visible() and t.get_text().strip()]
    return min(sizes) * display_px / (fig.get_figwidth() * 96.0)


def _png(img, size: int = IMAGE_PX) -> bytes:
    import io

    from ..util import upscale

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
