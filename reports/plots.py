"""Report figures as deterministic, accessible SVG strings to inline in HTML: one function a figure; None is a gap.

The style, the axes and the SVG every figure shares are :mod:`reports.drawing`; ``WIDTH_IN`` and
``figure_sizes`` are re-exported from there.
"""

from __future__ import annotations

import numbers
from collections.abc import Mapping, Sequence, Sized

import numpy as np
from numpy.typing import ArrayLike

from reports.drawing import HEIGHTS_IN, PALETTE, WIDTH_IN, drawing, figure_sizes, inline_svg

__all__ = [
    "MAX_LINE_POINTS", "WIDTH_IN", "calibration_plot", "caterpillar_plot", "cusum_plot", "decision_curve_plot",
    "figure_sizes", "funnel_plot", "predictors_plot", "rate_over_time_plot", "roc_plot", "vlad_plot",
]

MAX_LINE_POINTS = 600  # longer VLAD/CUSUM lines keep each block's first, lowest and highest value
_DASHES = ("-", "--", ":", "-.", (0, (6, 1.5, 1, 1.5, 1, 1.5)), (0, (1, 3)), (0, (9, 2.5)), (0, (3, 1, 1, 1)))
_STYLES = [{"color": c, "linestyle": d, "marker": m} for c, d, m in zip(PALETTE, _DASHES, "os^DvPX*")]
_GUIDE = {"color": "#6b6b6b", "linewidth": 1.0, "linestyle": ":"}
_FLAGS = {"high": ("above the upper limit", "^", PALETTE[1]), "low": ("below the lower limit", "v", PALETTE[0]),
          True: ("outside the limits", "D", PALETTE[1])}


def _positions(bad: np.ndarray) -> str:
    return "positions " + ", ".join(map(str, np.flatnonzero(bad)[:3])) + (", ..." if bad.sum() > 3 else "")


def _numbers(x: ArrayLike, name: str, *, gaps: bool = False, low: float = -np.inf, high: float = np.inf) -> np.ndarray:
    """``x`` as a 1-D float array; None and NaN are allowed (as NaN gaps) only when ``gaps``."""
    arr = x if isinstance(x, np.ndarray) else np.asarray(x, dtype=object)  # no silent str() of mixed lists
    if arr.ndim != 1:
        raise ValueError(f"{name} must be one-dimensional; got shape {arr.shape}")
    if arr.dtype.kind not in "biuf":  # None, text or objects, one by one: what is not a number becomes inf
        arr = np.array([np.nan if v is None else v if isinstance(v, numbers.Real) else np.inf for v in arr.tolist()])
    arr, kind = arr.astype(np.float64), "numbers or None" if gaps else "finite numbers (no None or NaN)"
    if (bad := np.isinf(arr) if gaps else ~np.isfinite(arr)).any():
        raise ValueError(f"{name} must hold {kind}; {bad.sum()} values are not ({_positions(bad)})")
    if (out := (arr < low) | (arr > high)).any():
        raise ValueError(f"{name} must be within [{low:g}, {high:g}]; {out.sum()} values outside "
                         f"(min {np.nanmin(arr):.6g}, max {np.nanmax(arr):.6g}; {_positions(out)})")
    return arr


def _same_length(arrays: Mapping[str, Sized]) -> int:
    lengths = [len(a) for a in arrays.values()]
    if len(set(lengths)) > 1:
        raise ValueError(f"{', '.join(arrays)} must have the same length; got {', '.join(map(str, lengths))}")
    return lengths[0]


def _error_bars(estimate: np.ndarray, low: np.ndarray, high: np.ndarray, name: str) -> np.ndarray:
    """Bar lengths ``[below, above]``, shape (2, n), 0 where a limit is None; each interval must hold its estimate."""
    if (bad := (low > estimate) | (high < estimate)).any():
        raise ValueError(f"{name} intervals must contain their estimate (low <= estimate <= high); "
                         f"{bad.sum()} do not ({_positions(bad)})")
    return np.nan_to_num(np.vstack([estimate - low, high - estimate]), nan=0.0)


def _thin(values: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Case numbers (1-based) and values, reduced beyond MAX_LINE_POINTS keeping every block's extremes."""
    cases, blocks = np.arange(1, len(values) + 1), np.array_split(np.arange(len(values)), MAX_LINE_POINTS // 3)
    if len(values) <= MAX_LINE_POINTS:
        return cases, values
    keep = np.unique([i for b in blocks for i in (b[0], b[np.argmin(values[b])], b[np.argmax(values[b])], b[-1])])
    return cases[keep], values[keep]


def calibration_plot(*, bins: Sequence[Mapping[str, object]], curve: Mapping[str, Sequence[float | None]],
                     histogram: Mapping[str, Sequence[float | None]], title: str) -> str:
    """Calibration plot: grouped observed risk (95% CI), flexible curve and diagonal; risk histogram below.

    Raises ValueError if a bin lacks a key, a risk is not a proportion, lengths differ or an interval is invalid.

    Parameters
    ----------
    bins : sequence of mappings
        As metrics.json's ``calibration_bins``: ``mean_predicted``, ``observed``, ``observed_low``,
        ``observed_high`` (proportions); one with ``suppressed`` true or ``observed`` None is left out and
        counted in the footnote "k bins withheld: fewer than 11 events or non-events".
    curve, histogram : mappings
        ``predicted``, ``observed``, optional ``low``/``high`` (a band), None a gap; ``edges`` (k + 1,
        increasing) and ``counts`` (k), a None count (1-10) drawn hatched at a nominal height (5% of the
        tallest bar, at least 10). Both upper axes run to 1.05 x the largest risk drawn (at most 100%).
    """
    keys = ("mean_predicted", "observed", "observed_low", "observed_high")
    if bad := [i for i, row in enumerate(bins) if not isinstance(row, Mapping) or not set(keys) <= set(row)]:
        raise ValueError(f"calibration bins must be mappings with keys {', '.join(keys)}; bins {bad[:3]} are not")
    shown = [row for row in bins if not (row.get("suppressed") or row["observed"] is None)]
    mean_pred, observed, low, high = (_numbers([r[k] for r in shown], f"bins {k}", gaps=k in keys[2:],
                                               low=0, high=1) for k in keys)
    errors, withheld = _error_bars(observed, low, high, "bins observed"), len(bins) - len(shown)
    line = {k: _numbers(curve.get(k, [None] * len(curve.get("predicted", []))), f"curve[{k!r}]", gaps=True,
                        low=0, high=1) for k in ("predicted", "observed", "low", "high")}
    _same_length({f"curve[{k!r}]": v for k, v in line.items()})
    edges = _numbers(histogram.get("edges", []), "histogram['edges']", low=0, high=1)
    counts = _numbers(histogram.get("counts", []), "histogram['counts']", gaps=True, low=0)
    if len(edges) != len(counts) + 1 or np.any(np.diff(edges) <= 0):
        raise ValueError(f"histogram['edges'] must increase and be one longer than histogram['counts']; "
                         f"got {len(edges)} edges and {len(counts)} counts")
    occupied = edges[1:][np.isnan(counts) | (counts > 0)]
    top = min(1.0, 1.05 * np.nanmax([*mean_pred, *observed, *line["predicted"], *line["observed"], *occupied, 0.01]))
    with drawing("calibration", title, panels=(3, 1), percent="xy") as (axes, hist):
        axes.plot([0, top], [0, top], label="perfect calibration", **_GUIDE)
        if np.isfinite(line["low"]).any():
            axes.fill_between(line["predicted"], line["low"], line["high"], color=PALETTE[0], alpha=0.18,
                              linewidth=0, label="95% confidence band of the curve")
        if len(line["predicted"]):
            axes.plot(line["predicted"], line["observed"], color=PALETTE[0], linewidth=1.6,
                      label="flexible calibration curve")
        if shown:
            axes.errorbar(mean_pred, observed, yerr=errors, fmt="s", color="#000000", markersize=4, capsize=2,
                          elinewidth=1, label="grouped cases: observed risk (95% CI)")
        axes.set(xlim=(0, top), ylim=(0, top), ylabel="observed risk (%)")
        axes.legend(loc="upper left")
        width, published, gap = np.diff(edges), np.nan_to_num(counts, nan=0.0), np.isnan(counts)
        hist.bar(edges[:-1], published, width=width, align="edge", color="#bdbdbd", edgecolor="#4d4d4d",
                 linewidth=0.4, label="cases per band of predicted risk")
        if gap.any():
            hist.bar(edges[:-1][gap], max(10, 0.05 * published.max()), width=width[gap], align="edge",
                     color="white", edgecolor="#000000", hatch="////", linewidth=0.4, label="1-10 cases (suppressed)")
        hist.set(xlabel="predicted risk (%)", ylabel="cases (n)")
        return inline_svg(hist, legend="upper right", note=f"{withheld} bin{'s' * (withheld != 1)} withheld: fewer "
                          "than 11 events or non-events." if withheld else "")


def roc_plot(*, fpr: ArrayLike, tpr: ArrayLike, auroc: float | None, auroc_low: float | None,
             auroc_high: float | None, title: str) -> str:
    """ROC curve with the chance diagonal; the AUROC and its 95% CI (None: undefined, left out) in the legend.

    Raises ValueError if lengths differ or a rate or the AUROC is outside [0, 1].

    Parameters
    ----------
    fpr, tpr : arrays of shape (n,)
        False- and true-positive rates (proportions), in curve order.
    """
    x, y = _numbers(fpr, "fpr", low=0, high=1), _numbers(tpr, "tpr", low=0, high=1)
    _same_length({"fpr": x, "tpr": y})
    est, lo, hi = _numbers([auroc, auroc_low, auroc_high], "auroc, auroc_low, auroc_high", gaps=True, low=0, high=1)
    label = "model: AUROC not estimable" if np.isnan(est) else f"model: AUROC {est:.2f}"
    label += f" (95% CI {lo:.2f} to {hi:.2f})" if np.isfinite([est, lo, hi]).all() else ""
    with drawing("roc", title, percent="xy") as (axes,):
        axes.plot([0, 1], [0, 1], label="chance (AUROC 0.50)", **_GUIDE)
        axes.plot(x, y, color=PALETTE[0], linewidth=1.6, label=label)
        axes.set(xlim=(0, 1), ylim=(0, 1), aspect="equal", xlabel="1 - specificity (false-positive rate, %)",
                 ylabel="sensitivity (true-positive rate, %)")
        return inline_svg(axes, legend="lower right")


def decision_curve_plot(*, thresholds: ArrayLike, net_benefit_model: Sequence[float | None],
                        net_benefit_all: Sequence[float | None], title: str) -> str:
    """Decision curve (Vickers and Elkin 2006): net benefit of the model, treat-all and treat-none.

    y runs from ``-min(0.05, top / 2)`` to ``1.1 top`` (``top``: largest net benefit, >= 0.01). Raises ValueError
    if lengths differ, a threshold is outside [0, 1) or a net benefit exceeds 1.

    Parameters
    ----------
    thresholds, net_benefit_model, net_benefit_all : sequences of shape (n,)
        Threshold probabilities in [0, 1); net benefit (net true positives per case), None a gap.
    """
    t = _numbers(thresholds, "thresholds", low=0, high=1 - 1e-9)
    model = _numbers(net_benefit_model, "net_benefit_model", gaps=True, high=1)
    treat_all = _numbers(net_benefit_all, "net_benefit_all", gaps=True, high=1)
    _same_length({"thresholds": t, "net_benefit_model": model, "net_benefit_all": treat_all})
    top = float(np.nanmax([*model, *treat_all, 0.01]))
    with drawing("decision_curve", title, percent="x") as (axes,):
        axes.plot(t, model, color=PALETTE[0], linewidth=1.6, label="model")
        axes.plot(t, treat_all, color=PALETTE[1], linestyle="--", linewidth=1.3, label="treat all")
        axes.axhline(0, color="#000000", linestyle=":", linewidth=1.2, label="treat none")
        axes.set(xlim=(t.min(), t.max()) if len(t) else (0, 1), ylim=(-min(0.05, top / 2), 1.1 * top),
                 xlabel="threshold probability (%)", ylabel="net benefit (net true positives per case)")
        return inline_svg(axes, legend="upper right")


def funnel_plot(*, precision: ArrayLike, oe_ratio: Sequence[float | None], labels: Sequence[str],
                flags: Sequence[bool | str], limit_grid: ArrayLike,
                limits: Mapping[str, tuple[Sequence[float | None], Sequence[float | None]]], title: str,
                x_label: str, method: str) -> str:
    """Funnel plot of O/E against precision (Spiegelhalter 2005); flagged units highlighted and named.

    Raises ValueError if lengths differ, a value is negative or not finite, or a flag is unknown.

    Parameters
    ----------
    precision, oe_ratio, labels, flags : sequences of shape (n,)
        Per unit: precision, O/E (None: suppressed, not drawn, counted in the caption), pseudonym (written
        beside flagged units) and flag (``'high'``, ``'low'``, ``''`` as from ``reports.qi``, or a bool).
    limit_grid, limits, x_label, method
        Precisions (k,); level name such as ``"95%"`` -> (lower, upper), each (k,); the x label (precision
        and unit); how limits and overdispersion were obtained, printed as a caption.
    """
    x, oe = _numbers(precision, "precision", low=0), _numbers(oe_ratio, "oe_ratio", gaps=True, low=0)
    _same_length({"precision": x, "oe_ratio": oe, "labels": labels, "flags": flags})
    if unknown := [f for f in flags if f not in ("", "high", "low", True, False)]:
        raise ValueError(f"flags must be 'high', 'low', '' or a bool; got {unknown[:3]!r}")
    grid = _numbers(limit_grid, "limit_grid", low=0)
    lines = {f"limits[{name!r}][{j}]": _numbers(v, f"limits[{name!r}][{j}]", gaps=True, low=0)
             for name, pair in limits.items() for j, v in enumerate(pair)}  # [0] lower, [1] upper
    _same_length({"limit_grid": grid, **lines})
    group = [f if f in ("high", "low") else bool(f) for f in flags]
    with drawing("funnel", title) as (axes,):
        axes.axhline(1, color="#000000", linewidth=1.0, label="target (O/E = 1)")
        for i, name in enumerate(limits):
            axes.plot(grid, np.column_stack([lines[f"limits[{name!r}][{j}]"] for j in (1, 0)]), color="#404040",
                      linestyle=_DASHES[1 + i % 7], linewidth=1.1, label=[f"{name} control limits", "_lower"])
        plain = np.array([g is False for g in group], dtype=bool) & np.isfinite(oe)
        axes.scatter(x[plain], oe[plain], s=18, facecolors="none", edgecolors="#4d4d4d", linewidths=0.8,
                     label="unit within the limits")
        for flag, (legend, marker, colour) in _FLAGS.items():
            if chosen := [i for i, g in enumerate(group) if g == flag and np.isfinite(oe[i])]:
                axes.scatter(x[chosen], oe[chosen], s=36, marker=marker, color=colour, edgecolors="#000000",
                             linewidths=0.6, zorder=3, label=f"unit {legend}")
            for i in chosen:
                axes.annotate(str(labels[i]), (x[i], oe[i]), xytext=(4, 3), textcoords="offset points", fontsize=7)
        top = 1.05 * max(np.max(x, initial=0), np.max(grid, initial=0), 1e-9)
        bottom = min(np.min(x[x > 0], initial=top), np.min(grid[grid > 0], initial=top))
        if top / max(bottom, 1e-12) > 50:  # expected counts from below 1 to thousands: a log axis
            axes.set_xscale("log")
            axes.set(xlim=(bottom / 1.1, top))
        else:
            axes.set(xlim=(0, top))
        axes.set(xlabel=x_label, ylim=(0, max(1.5, 1.15 * np.nanmax(oe, initial=0))),
                 ylabel="observed / expected events (O/E)")
        hidden = int(np.isnan(oe).sum())
        return inline_svg(axes, legend="upper right", note=f"Control limits: {method.rstrip('.')}." + (
            f" {hidden} unit{'s' * (hidden != 1)} not shown (O/E suppressed or undefined)." if hidden else ""))


def vlad_plot(*, series: Mapping[str, ArrayLike], title: str) -> str:
    """Variable life-adjusted display (Lovegrove 1997): cumulative expected - observed events per site.

    Raises ValueError if there is no site, a site has no cases or a value is not finite.

    Parameters
    ----------
    series : mapping of str to array of shape (n_site,)
        Site pseudonym -> running sum by case (``reports.qi.vlad``). Up to 8 sites get a style each; with
        more, all are light lines and at most the 3 largest final excursions each way are highlighted.
    """
    paths = {str(name): _numbers(values, f"series[{name!r}]") for name, values in series.items()}
    if not paths or (empty := [name for name, path in paths.items() if len(path) == 0]):
        raise ValueError(f"series must map each site to at least one case; got {paths and empty or 'no sites'}")
    finals = {name: float(path[-1]) for name, path in paths.items()}
    ranked, many = sorted(finals, key=lambda name: (-finals[name], name)), len(paths) > 8
    highlighted = ([n for n in ranked[:3] if finals[n] > 0] + [n for n in ranked[:-4:-1] if finals[n] < 0]
                   if many else ranked)
    with drawing("vlad", title, integer_x=True) as (axes,):
        axes.axhline(0, color="#000000", linewidth=0.9, label="as expected")
        for i, path in enumerate(paths.values() if many else []):
            axes.plot(*_thin(path), color="#c4c4c4", linewidth=0.6, label=None if i else "each site")
        for i, name in enumerate(highlighted):
            axes.plot(*_thin(paths[name]), linewidth=1.3, label=f"{name} (end {finals[name]:+.1f})",
                      **{**_STYLES[i % 8], "marker": None})
            axes.annotate(name, (len(paths[name]), finals[name]), xytext=(3, 0), textcoords="offset points",
                          fontsize=7, va="center", color=PALETTE[i % 8])
        axes.set(xlabel="case number (in time order)", ylabel="cumulative expected - observed events")
        return inline_svg(axes, legend="outside",
                          note="Rising: fewer events than expected; falling: more than expected.")


def rate_over_time_plot(*, series: Mapping[str, Mapping[str, Sequence[float | None]]], title: str,
                        y_label: str) -> str:
    """Event rates by year for one or more outcomes with 95% CI error bars; None years leave a gap.

    Raises ValueError if there is no outcome, a key is missing, lengths differ or a rate or interval is invalid.

    Parameters
    ----------
    series : mapping
        Outcome label -> {``years``, ``rate``, ``low``, ``high``} of shape (n,); rates and limits are
        proportions, drawn in percent (as ``y_label`` should say), None when suppressed or undefined.
    """
    if not series:
        raise ValueError("series must hold at least one outcome; got none")
    checked = {}
    for name, part in series.items():
        if missing := [k for k in ("years", "rate", "low", "high") if k not in part]:
            raise ValueError(f"series[{name!r}] lacks {', '.join(missing)}; each outcome needs years, rate, low, high")
        cols = {k: _numbers(part[k], f"series[{name!r}][{k!r}]", gaps=k != "years", low=0, high=np.inf if k == "years"
                            else 1) for k in ("years", "rate", "low", "high")}
        _same_length({f"series[{name!r}][{k!r}]": v for k, v in cols.items()})
        checked[str(name)] = (cols["years"], cols["rate"], _error_bars(cols["rate"], cols["low"], cols["high"], name))
    with drawing("rate_over_time", title, percent="y", integer_x=True) as (axes,):
        for i, (name, (years, rate, errors)) in enumerate(checked.items()):
            x = years + (i - (len(checked) - 1) / 2) * 0.08  # dodged so that the bars do not overlap
            axes.plot(x, rate, markersize=4.5, linewidth=1.3, label=name, **_STYLES[i % 8])
            axes.errorbar(x, rate, yerr=errors, fmt="none", ecolor=PALETTE[i % 8], capsize=2, elinewidth=0.9)
        axes.set(xlabel="procedure year", ylabel=y_label, ylim=(0, None))
        gaps = any(np.isnan(rate).any() for _, rate, _ in checked.values())
        return inline_svg(axes, legend="best", note="Gaps: years suppressed (fewer than 11 events or non-events) or "
                          "not estimable." if gaps else "")


def predictors_plot(*, names: Sequence[str], importance: ArrayLike, directions: Sequence[str | None], title: str,
                    x_label: str = "permutation importance (increase in log loss, nats)") -> str:
    """Horizontal bars of predictor importance, largest at the top, each annotated with its direction.

    Raises ValueError if there is no predictor, lengths differ or an importance is not finite.

    Parameters
    ----------
    names, importance, directions : sequences of shape (n,)
        Labels; importance in the unit of ``x_label`` (negative: permuting it helped); direction texts such
        as ``"higher -> more risk"`` (None writes nothing).
    """
    values = _numbers(importance, "importance")
    if _same_length({"names": names, "importance": values, "directions": directions}) == 0:
        raise ValueError("names must hold at least one predictor; got none")
    order, rows = np.argsort(-values, kind="stable"), np.arange(len(values))[::-1]
    low, high = min(values.min(), 0), max(values.max(), 0)
    span, height = float(high - low) or 1.0, max(HEIGHTS_IN["predictors"], 0.9 + 0.28 * len(rows))
    with drawing("predictors", title, height=height) as (axes,):
        axes.barh(rows, values[order], color=PALETTE[0], edgecolor="#000000", linewidth=0.4, height=0.65)
        for row, i in ((row, i) for row, i in zip(rows, order) if directions[i]):
            axes.annotate(str(directions[i]), (max(values[i], 0), row), xytext=(4, 0), textcoords="offset points",
                          va="center", fontsize=7.5)
        axes.axvline(0, color="#000000", linewidth=0.8)
        axes.set(yticks=rows, yticklabels=[str(names[i]) for i in order], xlabel=x_label, ylabel="predictor",
                 xlim=(low - 0.02 * span, high + 0.55 * span))
        axes.grid(axis="y", visible=False)
        return inline_svg(axes, legend=None)


def cusum_plot(*, path: ArrayLike, h: float, signals: Sequence[int], title: str) -> str:
    """Risk-adjusted CUSUM of one site (Steiner et al. 2000) with its threshold ``h`` and signals.

    Raises ValueError if ``path`` is empty or not finite, ``h`` is not finite or a signal is not an index.

    Parameters
    ----------
    path, signals : sequences
        The statistic after each case in time order, shape (n,) (``reports.qi.risk_adjusted_cusum``); 0-based
        indices into ``path`` of the signalling cases, drawn at case number ``i + 1``.
    """
    s, (threshold,) = _numbers(path, "path"), _numbers([h], "h")
    index = np.asarray(list(signals))
    if len(s) == 0 or index.size and (index.dtype.kind not in "iu" or index.min() < 0 or index.max() >= len(s)):
        raise ValueError(f"path must not be empty, signals must index it (0 to {len(s) - 1}); got {list(signals)[:5]}")
    with drawing("cusum", title, integer_x=True) as (axes,):
        axes.plot(*_thin(s), color=PALETTE[0], linewidth=1.2, label="CUSUM")
        axes.axhline(threshold, color=PALETTE[1], linestyle="--", linewidth=1.2, label=f"threshold h = {threshold:g}")
        if index.size:
            axes.plot(index + 1, s[index], linestyle="none", marker="v", markersize=7, color="#000000",
                      label=f"signal ({index.size})")
        axes.set(xlabel="case number (in time order)", ylabel="CUSUM (log-likelihood ratio)")
        return inline_svg(axes, legend="upper left")


def caterpillar_plot(*, labels: Sequence[str], estimate: ArrayLike, low: ArrayLike, high: ArrayLike, title: str,
                     x_label: str) -> str:
    """Caterpillar plot (ACS NSQIP): each unit's shrunken odds ratio with its 95% interval, in rank order.

    Raises ValueError if lengths differ, a value is not positive and finite or an interval misses its estimate.

    Parameters
    ----------
    labels, estimate, low, high : sequences of shape (n,)
        Unit pseudonyms and odds ratios (> 0) with their interval; drawn on a log axis around 1. Units whose
        interval excludes 1 are named beside their bar; up to 40 units are all named on the axis.
    """
    est = _numbers(estimate, "estimate", low=0)
    lo, hi = _numbers(low, "low", low=0), _numbers(high, "high", low=0)
    n = _same_length({"labels": labels, "estimate": est, "low": lo, "high": hi})
    if n == 0 or (est <= 0).any() or (lo <= 0).any():
        raise ValueError("caterpillar_plot needs at least one unit and odds ratios above 0")
    bars = _error_bars(est, lo, hi, "odds ratio")
    order = np.argsort(est, kind="stable")
    with drawing("caterpillar", title, height=1.6 + 0.11 * n) as (axes,):
        rank = np.arange(n)
        outside = (lo[order] > 1) | (hi[order] < 1)
        axes.errorbar(est[order], rank, xerr=bars[:, order], fmt="o", markersize=3, color="#4d4d4d",
                      ecolor="#9a9a9a", elinewidth=0.8, label="unit (95% interval)")
        if outside.any():
            axes.errorbar(est[order][outside], rank[outside], xerr=bars[:, order][:, outside], fmt="D", markersize=4,
                          color=PALETTE[1], ecolor=PALETTE[1], elinewidth=1.0, label="interval excludes 1")
        axes.axvline(1, color="#000000", linewidth=1.0, label="average (odds ratio 1)")
        axes.set_xscale("log")
        names = [str(labels[i]) for i in order]
        if n <= 40:
            axes.set_yticks(rank, names, fontsize=6.5)
        else:
            axes.set_yticks([])
            for r in rank[outside]:
                axes.annotate(names[r], (hi[order][r], r), xytext=(3, 0), textcoords="offset points", fontsize=6.5,
                              va="center")
        axes.set(xlabel=x_label, ylabel="units, by estimate", ylim=(-1, n))
        return inline_svg(axes, legend="outside")
