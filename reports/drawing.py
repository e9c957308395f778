"""The report's figure style and the two steps every figure shares: axes to draw on, and the drawing as inline SVG.

Deterministic and accessible: the same figure gives the same bytes (no date, hashed ids salted by kind and
title), text stays text (screen readers, no font embedding), and every ``<svg>`` is named by its title.
"""

from __future__ import annotations

import io
import re
import textwrap
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from html import escape

import matplotlib.style
from matplotlib.axes import Axes
from matplotlib.figure import Figure
from matplotlib.ticker import FuncFormatter, MaxNLocator

WIDTH_IN = 6.5
HEIGHTS_IN = {"caterpillar": 2.0, "calibration": 6.2, "roc": 5.0, "decision_curve": 4.2, "funnel": 4.8, "vlad": 4.2,
              "rate_over_time": 4.0, "predictors": 2.4, "cusum": 3.6}
"""Height in inches of each figure kind of :mod:`reports.plots` (a figure may ask for another, e.g. the forest plot)."""
_RC = {"svg.fonttype": "none", "text.parse_math": False, "font.family": "sans-serif", "font.size": 9,
       "font.sans-serif": ["DejaVu Sans", "Arial", "Helvetica"], "figure.titlesize": 10, "figure.titleweight": "bold",
       "legend.fontsize": 8, "xtick.labelsize": 8, "ytick.labelsize": 8, "axes.spines.top": False,
       "axes.spines.right": False, "axes.grid": True, "axes.axisbelow": True, "grid.color": "#d9d9d9",
       "grid.linewidth": 0.5, "hatch.linewidth": 0.6}
PALETTE = ("#0072B2", "#D55E00", "#009E73", "#CC79A7", "#E69F00", "#56B4E9", "#000000", "#7F7F7F")
"""Okabe-Ito colours (safe for colour-blind readers), in the order the figures use them."""
_LOCK = threading.Lock()  # rcParams are process-wide: one drawing at a time


def figure_sizes() -> dict[str, tuple[float, float]]:
    """Width and height in inches of each figure kind; ``predictors`` grows 0.28 in per predictor beyond 5."""
    return {kind: (WIDTH_IN, height) for kind, height in HEIGHTS_IN.items()}


@contextmanager
def drawing(kind: str, title: str, *, height: float | None = None, panels: tuple[int, ...] = (1,),
             percent: str = "", integer_x: bool = False) -> Iterator[tuple[Axes, ...]]:
    """Stacked axes (``panels`` height ratios, shared x; ``percent`` axes of the top one in %) of a new Figure.

    A context manager: draw on the axes and render them (:func:`inline_svg`) inside the ``with`` block, which
    holds the report style and a process-wide lock (rcParams are global). No pyplot. The hash salt (kind,
    title) keeps bytes stable and ids distinct between figures; ``height`` (inches) overrides the kind's.

    Raises
    ------
    ValueError
        ``title`` is empty (it names the figure for screen readers).
    """
    if not isinstance(title, str) or not title.strip():
        raise ValueError(f"title must be a non-empty string (it names the figure for screen readers); got {title!r}")
    with _LOCK, matplotlib.style.context(["default", {**_RC, "svg.hashsalt": f"cementrisk/{kind}/{title}"}]):
        figure = Figure(figsize=(WIDTH_IN, height or HEIGHTS_IN[kind]), layout="constrained")
        figure.suptitle(title)
        axes = tuple(figure.subplots(len(panels), 1, sharex=True, squeeze=False, height_ratios=panels)[:, 0])
        for axis in [axes[0].xaxis] * ("x" in percent) + [axes[0].yaxis] * ("y" in percent):
            axis.set_major_formatter(FuncFormatter(lambda v, _: f"{round(100 * v, 6):g}"))  # the label says %
        if integer_x:
            axes[0].xaxis.set_major_locator(MaxNLocator(integer=True))
        yield axes


def inline_svg(axes: Axes, *, legend: str | None, note: str = "") -> str:
    """The figure of ``axes`` (its legend at ``legend``, ``note`` under it) as an ``<svg>`` element to inline."""
    if legend:  # always to the right of the axes, whatever was asked: a legend never covers data
        axes.legend(loc="upper left", bbox_to_anchor=(1.02, 1))
    if note:
        axes.annotate(textwrap.fill(note, 120), xy=(0, 0), xycoords="axes fraction", xytext=(0, -34),
                      textcoords="offset points", va="top", ha="left", fontsize=7.5, annotation_clip=False)
    buffer, figure = io.StringIO(), axes.figure
    figure.savefig(buffer, format="svg", metadata={"Date": None, "Creator": "cementrisk"})
    svg, label = buffer.getvalue(), escape(figure.get_suptitle(), quote=True)
    figure.clear()
    svg = re.sub(r"\s*<metadata>.*?</metadata>", "", svg[svg.index("<svg"):], flags=re.S)  # RDF namespaces: URLs
    svg = svg.replace(' xmlns:xlink="http://www.w3.org/1999/xlink"', "").replace("xlink:href=", "href=")
    used = set(re.findall(r'(?:href="#|url\(#)([^")]+)', svg))
    svg = re.sub(r' id="([^"]+)"', lambda m: m.group(0) if m.group(1) in used else "", svg)
    svg = re.sub(r' (?:d|x|y)="[^"]*"', lambda m: re.sub(r"(\.\d\d)\d+", r"\1", m.group(0)), svg)  # 0.01 pt
    end, desc = svg.index(">") + 1, f"<desc>{escape(note)}</desc>" if note else ""
    return f'<svg role="img" aria-label="{label}"{svg[4:end]}\n <title>{label}</title>{desc}{svg[end:]}'
