"""Forest plot of internal-external validation: a row per held-out site or year, pooled diamond, prediction interval."""

from __future__ import annotations

import numbers
import textwrap
from collections.abc import Mapping, Sequence
from html import escape

import numpy as np
from matplotlib.axes import Axes
from matplotlib.figure import Figure
from matplotlib.ticker import FixedLocator, FuncFormatter, NullLocator

from models.suppression import SUPPRESSED
from reports.drawing import PALETTE, drawing, inline_svg

MEASURES: dict[str, tuple[str, float | None, bool, int]] = {
    "auroc": ("AUROC (c statistic)", None, False, 3),
    "oe_ratio": ("observed / expected events (O/E, log scale)", 1.0, True, 2),
    "calibration_intercept": ("calibration intercept (slope fixed at 1)", 0.0, False, 2),
    "calibration_slope": ("calibration slope", 1.0, False, 2),
}
"""Measure -> (axis label, ideal value drawn as the reference line or None, log axis, decimals shown)."""
_ROW_IN = 0.24
_BASE_IN = 1.9
_LOG_TICKS = (0.1, 0.2, 0.25, 0.33, 0.5, 0.67, 0.8, 1.0, 1.25, 1.5, 2.0, 3.0, 4.0, 5.0, 10.0)
_CAPTION_CHARACTERS = 105


def forest_plot(rows: Sequence[Mapping[str, object]], pooled: Mapping[str, object] | None, *, measure: str,
                title: str) -> Figure:
    """Forest plot of one measure across held-out units, as a matplotlib Figure (no pyplot).

    Each unit is a row labelled ``"unit: estimate (low to high)"`` with its square and CI; a unit without
    an estimate is a row without marker or numbers, labelled ``withheld`` (its events shown as ``"<11"``),
    ``not evaluated`` (``status`` other than ``evaluated``) or ``not estimable``. Below them: the pooled
    random-effects estimate as a diamond spanning its CI and the prediction interval as a bar; a dotted
    reference line at the ideal value (1 for O/E and slope, 0 for the intercept; none for the AUROC, whose
    ideal 1 is not a target). O/E is drawn on a log axis. For the report's inline SVG use :func:`forest_svg`
    (drawn and saved under the report's style).

    Parameters
    ----------
    rows
        Unit rows as :func:`models.transport.internal_external` gives them (``held_out`` or ``years``):
        ``unit``, ``status``, ``events`` and ``measure`` -> ``{"estimate", "low", "high"}`` or None.
    pooled
        The measure's meta-analysis (:func:`models.meta_analysis.pool_measure`), or None for no pooled rows.
    measure
        One of :data:`MEASURES`.
    title
        The figure's title (also its accessible name).

    Raises
    ------
    ValueError
        ``measure`` unknown, no rows, a row lacks ``unit``, a value is not a finite number (positive for
        O/E), or an interval does not contain its estimate.
    """
    with drawing("forest", title, height=_height(rows)) as (axes,):
        _draw(axes, rows, pooled, measure)
        return axes.figure


def forest_svg(rows: Sequence[Mapping[str, object]], pooled: Mapping[str, object] | None, *, measure: str,
               title: str) -> str:
    """The forest plot of :func:`forest_plot` as a self-contained ``<svg>`` element to inline in the report.

    Same arguments and errors as :func:`forest_plot`; rendered like every report figure
    (:mod:`reports.plots`): text as text, no external references, bytes stable for the same input.
    """
    with drawing("forest", title, height=_height(rows)) as (axes,):
        caption = _draw(axes, rows, pooled, measure)
        svg = inline_svg(axes, legend=None)
    end = svg.index("</title>") + len("</title>")
    return f"{svg[:end]}<desc>{escape(caption)}</desc>{svg[end:]}"


# ----------------------------------------------------------------------------------------- drawing
def _height(rows: Sequence[Mapping[str, object]]) -> float:
    return _BASE_IN + _ROW_IN * (len(rows) + 3)


def _draw(axes: Axes, rows: Sequence[Mapping[str, object]], pooled: Mapping[str, object] | None,
          measure: str) -> str:
    """Draw every row on ``axes``; return the caption saying what the marks are."""
    if measure not in MEASURES:
        raise ValueError(f"measure must be one of {', '.join(MEASURES)}; got {measure!r}")
    if isinstance(rows, (str, bytes)) or not isinstance(rows, Sequence) or not rows:
        raise ValueError("rows must be a non-empty sequence of unit rows (mappings)")
    label, reference, log_axis, decimals = MEASURES[measure]
    units = [_unit(row, measure, log_axis, decimals, i) for i, row in enumerate(rows)]
    summary = _pooled(pooled, log_axis, decimals)
    n_rows = len(units) + (2 if summary else 0)
    position = n_rows - 1 - np.arange(n_rows, dtype=np.float64)  # first unit at the top
    labels = [text for text, _ in units]
    drawn = [(y, interval) for y, (_, interval) in zip(position, units) if interval is not None]
    if drawn:
        y, values = np.array([d[0] for d in drawn]), np.array([d[1] for d in drawn])
        axes.errorbar(values[:, 0], y, xerr=np.vstack([values[:, 0] - values[:, 1], values[:, 2] - values[:, 0]]),
                      fmt="s", markersize=4, color=PALETTE[0], ecolor=PALETTE[0], elinewidth=1.0, capsize=2,
                      label="held-out unit (95% CI)")
    if summary:
        labels += summary["labels"]
        _diamond(axes, position[-2], summary["ci"])
        if summary["prediction"] is not None:
            low, high = summary["prediction"]
            axes.errorbar([(low + high) / 2], [position[-1]], xerr=[[(high - low) / 2], [(high - low) / 2]], fmt="none",
                          ecolor=PALETTE[1], elinewidth=2.0, capsize=4, label="prediction interval (new unit)")
    if reference is not None:
        axes.axvline(reference, color="#000000", linewidth=1.0, linestyle=":", label=f"ideal value ({reference:g})")
    if log_axis:
        _log_ticks(axes)
    axes.set_yticks(position, labels, fontsize=7.5)
    axes.set(xlabel=label, ylim=(-0.8, n_rows - 0.2))
    axes.grid(False, axis="y")
    caption = _caption(pooled, summary, reference, [text.split(": ", 1)[1] for text, _ in units])
    axes.annotate(textwrap.fill(caption, _CAPTION_CHARACTERS), xy=(0.01, 0),  # from the figure's left edge
                  xycoords=("figure fraction", "axes fraction"), xytext=(0, -30), textcoords="offset points",
                  va="top", ha="left", fontsize=7.5, annotation_clip=False)
    return caption


def _log_ticks(axes: Axes) -> None:
    """A log x axis labelled at round ratios within its range (plain numbers: math text is off in reports)."""
    axes.set_xscale("log")
    low, high = axes.get_xlim()
    low, high = min(low, 0.9), max(high, 1.1)
    axes.set_xlim(low, high)
    ticks = [t for t in _LOG_TICKS if low <= t <= high]
    axes.xaxis.set_major_locator(FixedLocator(ticks))
    axes.xaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:g}"))
    axes.xaxis.set_minor_locator(NullLocator())


def _diamond(axes: Axes, y: float, ci: tuple[float, float, float] | None) -> None:
    if ci is None:
        return
    estimate, low, high = ci
    axes.fill([low, estimate, high, estimate], [y, y + 0.3, y, y - 0.3], color=PALETTE[2], edgecolor="#000000",
              linewidth=0.6, label="pooled, random effects (95% CI)")


def _unit(row: Mapping[str, object], measure: str, log_axis: bool, decimals: int,
          i: int) -> tuple[str, tuple[float, float, float] | None]:
    """A unit's label and its (estimate, low, high), or None when it has no estimate to draw."""
    if not isinstance(row, Mapping) or "unit" not in row:
        raise ValueError(f"each row must be a mapping with a 'unit'; row {i} is not")
    name = str(row["unit"])
    entry = row.get(measure)
    if row.get("events") == SUPPRESSED:
        return f"{name}: withheld", None
    if row.get("status", "evaluated") != "evaluated":
        return f"{name}: not evaluated", None
    values = entry if isinstance(entry, Mapping) else {}
    triple = tuple(values.get(key) for key in ("estimate", "low", "high"))
    if any(v is None for v in triple):
        return f"{name}: not estimable", None
    interval = _interval(triple, log_axis, f"row {i} ({name}) {measure}")
    return f"{name}: {_text(interval, decimals)}", interval


def _pooled(pooled: Mapping[str, object] | None, log_axis: bool, decimals: int) -> dict[str, object] | None:
    """Labels and marks of the pooled rows, or None when there is no meta-analysis to show."""
    if pooled is None:
        return None
    if not isinstance(pooled, Mapping):
        raise ValueError(f"pooled must be a meta-analysis mapping or None; got {type(pooled).__name__}")
    k = pooled.get("k", 0)
    if not pooled.get("pooled"):
        return {"labels": [f"pooled: not pooled ({k} unit{'s' * (k != 1)})", "prediction interval: none"],
                "ci": None, "prediction": None}
    ci = _interval(tuple(pooled.get(key) for key in ("estimate", "low", "high")), log_axis, "pooled")
    low, high = pooled.get("prediction_low"), pooled.get("prediction_high")
    prediction = None if low is None or high is None else _interval((low, low, high), log_axis, "prediction")[1:]
    text = "not defined" if prediction is None else f"{prediction[0]:.{decimals}f} to {prediction[1]:.{decimals}f}"
    return {"labels": [f"pooled ({k} units): {_text(ci, decimals)}", f"prediction interval: {text}"], "ci": ci,
            "prediction": prediction}


def _interval(values: tuple[object, ...], log_axis: bool, where: str) -> tuple[float, float, float]:
    if not all(isinstance(v, numbers.Real) and not isinstance(v, bool) and np.isfinite(v) for v in values):
        raise ValueError(f"{where}: estimate and limits must be finite numbers or None; got {values!r}")
    estimate, low, high = (float(v) for v in values)
    if log_axis and low <= 0:
        raise ValueError(f"{where}: O/E and its limits must be positive on the log axis; got {values!r}")
    if not low <= estimate <= high:
        raise ValueError(f"{where}: the interval must contain its estimate (low <= estimate <= high); got {values!r}")
    return estimate, low, high


def _text(interval: tuple[float, float, float], decimals: int) -> str:
    estimate, low, high = interval
    return f"{estimate:.{decimals}f} ({low:.{decimals}f} to {high:.{decimals}f})"


def _caption(pooled: Mapping[str, object] | None, summary: dict[str, object] | None, reference: float | None,
             shown: list[str]) -> str:
    """What the marks are, and why a row has none (``shown``: what each unit row says after its name)."""
    parts = ["Squares: each held-out unit's estimate with its 95% CI, from the model refitted without it."]
    if summary and summary["ci"] is not None:
        parts.append(f"Diamond: random-effects pooled estimate (REML) with its CI, {pooled.get('ci_method')}.")
        if pooled.get("prediction_method"):
            parts.append(f"Bar: prediction interval for a new unit, {pooled.get('prediction_method')}.")
    if reference is not None:
        parts.append(f"Dotted line: the ideal value {reference:g}.")
    if pooled is not None and pooled.get("note"):
        parts.append(str(pooled["note"]).rstrip(".") + ".")
    for label, meaning in (("withheld", "1 to 10 events or non-events, no figures shown"),
                           ("not evaluated", "too few events or non-events, or no earlier year to train on"),
                           ("not estimable", "the figure does not exist for this unit (e.g. separation)")):
        if label in shown:
            parts.append(f"{label.capitalize()}: {meaning}.")
    return " ".join(parts)
