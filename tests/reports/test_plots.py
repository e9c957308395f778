"""Report figures: inline SVG that parses, names itself, repeats byte for byte, stays offline and small; suppressed
and undefined values are left out as documented; bad inputs fail with the rule and what was wrong."""

from __future__ import annotations

import re
import xml.etree.ElementTree as ET
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import matplotlib
import numpy as np
import pytest
from matplotlib.axes import Axes
from matplotlib.figure import Figure

from reports import plots

SVG = "http://www.w3.org/2000/svg"
NS = {"svg": SVG}


# ------------------------------------------------------------------------------------------- inputs
def calibration_bins(n: int = 10, *, suppressed: tuple[int, ...] = (0, 9)) -> list[dict[str, Any]]:
    """Bins as metrics.json gives them: suppressed ones lose events and observed values."""
    bins = []
    for i, risk in enumerate(np.linspace(0.03, 0.40, n)):
        row = {"bin": i + 1, "n": 400, "mean_predicted": round(float(risk), 6), "observed": round(float(risk) * 1.1, 6),
               "observed_low": round(float(risk) * 0.8, 6), "observed_high": round(float(risk) * 1.4, 6),
               "events": int(400 * risk)}
        if i in suppressed:
            row.update(events=None, observed=None, observed_low=None, observed_high=None, suppressed=True)
        bins.append(row)
    return bins


def calibration_args(**changes: Any) -> dict[str, Any]:
    grid = np.linspace(0.01, 0.40, 100)
    counts: list[int | None] = [int(c) for c in 50 + (np.arange(50) * 37) % 300]
    counts[40:], counts[42] = [0] * 10, None  # the last occupied band ends at 43%
    return {"bins": calibration_bins(), "title": "Calibration: any leakage",
            "curve": {"predicted": grid.tolist(), "observed": (grid * 1.05).tolist(), "low": (grid * 0.9).tolist(),
                      "high": (grid * 1.2).tolist()},
            "histogram": {"edges": np.linspace(0, 0.5, 51).tolist(), "counts": counts}, **changes}


def roc_args(**changes: Any) -> dict[str, Any]:
    fpr = np.linspace(0, 1, 200)
    return {"fpr": fpr, "tpr": np.sqrt(fpr), "auroc": 0.78, "auroc_low": 0.75, "auroc_high": 0.81,
            "title": "ROC: any leakage", **changes}


def decision_args(prevalence: float = 0.2, **changes: Any) -> dict[str, Any]:
    t = np.round(np.arange(0.01, 0.51, 0.01), 2)
    return {"thresholds": t, "net_benefit_model": np.maximum(prevalence - 0.5 * t, 0).tolist(),
            "net_benefit_all": (prevalence - (1 - prevalence) * t / (1 - t)).tolist(),
            "title": "Decision curve: any leakage", **changes}


def funnel_args(**changes: Any) -> dict[str, Any]:
    rng = np.random.default_rng(7)
    precision = rng.uniform(2, 80, 100)
    oe: list[float | None] = (1 + rng.normal(0, 0.3, 100) / np.sqrt(precision)).tolist()
    flags = [""] * 100
    oe[3], flags[3], oe[7], flags[7], oe[5] = 2.5, "high", 0.1, "low", None
    grid = np.linspace(1, 85, 60)
    limits = {level: (np.maximum(1 - z / np.sqrt(grid), 0), 1 + z / np.sqrt(grid))
              for level, z in (("95%", 1.96), ("99.8%", 3.09))}
    return {"precision": precision, "oe_ratio": oe, "labels": [f"S{i:02d}" for i in range(100)], "flags": flags,
            "limit_grid": grid, "limits": limits, "title": "Funnel: any leakage by site",
            "x_label": "precision (expected events squared / variance)",
            "method": "additive random-effects overdispersion, tau^2 = 0.01 (Spiegelhalter 2005)", **changes}


def vlad_series(sites: int, cases: int = 300) -> dict[str, np.ndarray]:
    """Site i ends at i - sites // 2 (so the ranking of final excursions is known)."""
    steps = np.sin(np.arange(cases) / 7.0) * 0.5
    return {f"S{i:02d}": np.cumsum(steps) - np.cumsum(steps)[-1] + (i - sites // 2) for i in range(sites)}


def rates_args(**changes: Any) -> dict[str, Any]:
    years = list(range(2016, 2026))
    return {"series": {
        "any leakage": {"years": years, "rate": [0.2 + 0.01 * i for i in range(10)],
                        "low": [0.18 + 0.01 * i for i in range(10)], "high": [0.22 + 0.01 * i for i in range(10)]},
        "infection": {"years": years, "rate": [0.01, 0.012, None, 0.011, 0.01, None, 0.012, 0.011, 0.01, 0.01],
                      "low": [0.005, 0.006, None, 0.005, 0.005, None, 0.006, None, 0.005, 0.005],
                      "high": [0.02, 0.02, None, 0.02, 0.02, None, 0.02, None, 0.02, 0.02]}},
        "title": "Rates by year", "y_label": "events (% of treated levels or procedures)", **changes}


def predictors_args(**changes: Any) -> dict[str, Any]:
    return {"names": ["age", "cement volume", "cleft", "viscosity"], "importance": [0.004, 0.03, -0.001, 0.012],
            "directions": ["older -> less risk", "higher -> more risk", None, "lower -> more risk"],
            "title": "Predictors: any leakage", **changes}


def cusum_args(**changes: Any) -> dict[str, Any]:
    path = np.abs(np.sin(np.arange(300) / 20.0)) * 5
    return {"path": path, "h": 4.5, "signals": [30, 93], "title": "CUSUM: site S03", **changes}


FIGURES: dict[str, tuple[Callable[..., str], Callable[..., dict[str, Any]], list[str]]] = {
    "calibration": (plots.calibration_plot, calibration_args,
                    ["predicted risk (%)", "observed risk (%)", "cases (n)", "perfect calibration",
                     "flexible calibration curve", "grouped cases: observed risk (95% CI)"]),
    "roc": (plots.roc_plot, roc_args, ["1 - specificity (false-positive rate, %)",
                                       "sensitivity (true-positive rate, %)", "chance (AUROC 0.50)",
                                       "model: AUROC 0.78 (95% CI 0.75 to 0.81)"]),
    "decision_curve": (plots.decision_curve_plot, decision_args,
                       ["threshold probability (%)", "net benefit (net true positives per case)", "model", "treat all",
                        "treat none"]),
    "funnel": (plots.funnel_plot, funnel_args, ["precision (expected events squared / variance)",
                                                "observed / expected events (O/E)", "target (O/E = 1)",
                                                "95% control limits", "99.8% control limits"]),
    "vlad": (plots.vlad_plot, lambda **c: {"series": vlad_series(5), "title": "VLAD: any leakage", **c},
             ["case number (in time order)", "cumulative expected - observed events", "as expected"]),
    "rate_over_time": (plots.rate_over_time_plot, rates_args,
                       ["procedure year", "events (% of treated levels or procedures)", "any leakage", "infection"]),
    "predictors": (plots.predictors_plot, predictors_args,
                   ["permutation importance (increase in log loss, nats)", "predictor", "cement volume"]),
    "cusum": (plots.cusum_plot, cusum_args, ["case number (in time order)", "CUSUM (log-likelihood ratio)",
                                             "threshold h = 4.5", "signal (2)"]),
}


# ------------------------------------------------------------------------------- drawing and reading
@dataclass(frozen=True)
class Drawn:
    """An SVG and, per axes, what matplotlib held when it was saved."""

    svg: str
    axes: list[dict[str, Any]]

    @property
    def root(self) -> ET.Element:
        return ET.fromstring(self.svg)

    @property
    def text(self) -> str:
        return " ".join(t.strip() for t in self.root.itertext() if t.strip())


def _summary(ax: Axes) -> dict[str, Any]:
    legend = ax.get_legend()
    return {"xlim": ax.get_xlim(), "ylim": ax.get_ylim(),
            "legend": [t.get_text() for t in legend.get_texts()] if legend else [],
            "yticklabels": [t.get_text() for t in sorted(ax.get_yticklabels(), key=lambda t: t.get_position()[1])],
            "lines": {line.get_label(): np.asarray(line.get_ydata(), dtype=float) for line in ax.get_lines()},
            "cases": {line.get_label(): np.asarray(line.get_xdata(), dtype=float) for line in ax.get_lines()},
            "dashes": {line.get_label(): (line.get_linestyle(), line.get_marker()) for line in ax.get_lines()}}


def draw(kind: str, **changes: Any) -> Drawn:
    function, arguments, _ = FIGURES[kind]
    seen: list[dict[str, Any]] = []
    save = Figure.savefig

    def recording_save(figure: Figure, *args: Any, **kwargs: Any) -> None:
        seen.extend(_summary(ax) for ax in figure.axes)
        save(figure, *args, **kwargs)

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(Figure, "savefig", recording_save)
        svg = function(**arguments(**changes))
    return Drawn(svg, seen)


@pytest.fixture(scope="module")
def drawn() -> dict[str, Drawn]:
    return {kind: draw(kind) for kind in FIGURES}


# ---------------------------------------------------------------------------------- every figure
@pytest.mark.parametrize("kind", list(FIGURES))
def test_each_figure_is_an_inline_svg_named_for_screen_readers(drawn, kind):
    figure = drawn[kind]
    title = FIGURES[kind][1]()["title"]
    assert figure.svg.startswith("<svg") and "<?xml" not in figure.svg and "<!DOCTYPE" not in figure.svg
    root = figure.root
    assert root.tag == f"{{{SVG}}}svg"
    assert root.get("role") == "img" and root.get("aria-label") == title
    assert root[0].tag == f"{{{SVG}}}title" and root[0].text == title
    width, height = plots.figure_sizes()[kind]
    assert root.get("width") == f"{width * 72:g}pt" == "468pt"
    assert root.get("height") == f"{height * 72:g}pt" or kind == "predictors"  # grows with the predictors


@pytest.mark.parametrize("kind", list(FIGURES))
def test_axis_labels_legends_and_title_are_text_not_paths(drawn, kind):
    text = drawn[kind].text
    for label in [*FIGURES[kind][2], FIGURES[kind][1]()["title"]]:
        assert label in text, label
    assert drawn[kind].root.findall(".//svg:text", NS)


@pytest.mark.parametrize("kind", list(FIGURES))
def test_same_data_give_the_same_bytes(drawn, kind):
    assert draw(kind).svg == drawn[kind].svg


@pytest.mark.parametrize("kind", list(FIGURES))
def test_svg_is_self_contained_and_small(drawn, kind):
    svg = drawn[kind].svg
    assert set(re.findall(r"https?://[^\s\"'<>)]+", svg)) == {SVG}
    assert "<image" not in svg and "<script" not in svg and "xlink" not in svg
    hrefs = re.findall(r'href="([^"]*)"', svg) + re.findall(r"url\(([^)]*)\)", svg)
    ids = set(re.findall(r' id="([^"]+)"', svg))
    assert all(ref.startswith("#") and ref[1:] in ids for ref in hrefs)
    assert len(svg.encode()) < 200_000


def test_figures_inlined_in_one_page_have_distinct_ids(drawn):
    ids = [i for figure in drawn.values() for i in re.findall(r' id="([^"]+)"', figure.svg)]
    assert len(ids) == len(set(ids))


def test_drawing_leaves_no_pyplot_figure_and_restores_settings():
    import matplotlib.pyplot as plt

    before = {key: matplotlib.rcParams[key] for key in ("svg.hashsalt", "svg.fonttype", "font.size", "axes.grid")}
    figures = plt.get_fignums()
    draw("roc")
    assert plt.get_fignums() == figures
    assert {key: matplotlib.rcParams[key] for key in before} == before


# ------------------------------------------------------------------------------ figure by figure
def test_calibration_withholds_suppressed_bins_with_a_footnote(drawn):
    figure = drawn["calibration"]
    note = "2 bins withheld: fewer than 11 events or non-events."
    assert note in figure.text and figure.root.find("svg:desc", NS).text == note
    one = draw("calibration", bins=calibration_bins(suppressed=(3,)))
    assert "1 bin withheld" in one.text


def test_calibration_draws_only_published_bins(monkeypatch):
    drawn_x: list[list[float]] = []
    errorbar = Axes.errorbar

    def recording_errorbar(ax: Axes, x: Any, *args: Any, **kwargs: Any) -> Any:
        drawn_x.append(list(x))
        return errorbar(ax, x, *args, **kwargs)

    monkeypatch.setattr(Axes, "errorbar", recording_errorbar)
    plots.calibration_plot(**calibration_args())
    assert drawn_x == [[row["mean_predicted"] for row in calibration_bins()[1:9]]]


def test_calibration_hatches_suppressed_histogram_bars_and_shares_one_scale(drawn):
    figure = drawn["calibration"]
    assert "1-10 cases (suppressed)" in figure.text and "<pattern" in figure.svg
    upper, histogram = figure.axes
    assert upper["xlim"] == upper["ylim"] == histogram["xlim"]
    # the largest risk drawn is the 43% upper edge of the suppressed bar (counts[42])
    assert upper["xlim"] == pytest.approx((0, 0.43 * 1.05))


def test_calibration_without_suppression_has_no_footnote_or_hatching():
    counts = [100] * 50
    figure = draw("calibration", bins=calibration_bins(suppressed=()),
                  histogram={"edges": np.linspace(0, 0.5, 51).tolist(), "counts": counts})
    assert "withheld" not in figure.text and "suppressed" not in figure.text and "<pattern" not in figure.svg
    assert figure.root.find("svg:desc", NS) is None


def test_roc_legend_says_when_auroc_is_undefined():
    figure = draw("roc", auroc=None, auroc_low=None, auroc_high=None)
    assert "model: AUROC not estimable" in figure.text and "95% CI" not in figure.text


@pytest.mark.parametrize(("prevalence", "bottom"), [(0.2, -0.05), (0.02, -0.0075)])
def test_decision_curve_cuts_the_fall_of_treat_all(prevalence, bottom):
    (axes,) = draw("decision_curve", prevalence=prevalence).axes
    top = prevalence - 0.005  # the model's net benefit at the 1% threshold
    assert axes["ylim"] == pytest.approx((bottom, 1.1 * top))
    assert min(decision_args(prevalence)["net_benefit_all"]) < 10 * bottom  # treat-all does fall far below


def test_decision_curve_leaves_a_gap_for_undefined_net_benefit():
    model = decision_args()["net_benefit_model"]
    model[10] = None
    line = draw("decision_curve", net_benefit_model=model).axes[0]["lines"]["model"]
    assert np.isnan(line[10]) and np.isfinite(np.delete(line, 10)).all()


def test_funnel_names_flagged_units_only_and_notes_the_method(drawn):
    figure = drawn["funnel"]
    words = set(figure.text.split())
    assert {"S03", "S07"} <= words and not {"S00", "S05", "S10", "S99"} & words
    assert {"unit above the upper limit", "unit below the lower limit"} <= set(figure.axes[0]["legend"])
    assert "Control limits: additive random-effects overdispersion, tau^2 = 0.01 (Spiegelhalter 2005)." in figure.text
    assert "1 unit not shown (O/E suppressed or undefined)." in figure.text


def test_funnel_accepts_boolean_flags():
    flags = [False] * 100
    flags[3] = True
    figure = draw("funnel", flags=flags)
    assert "unit outside the limits" in figure.axes[0]["legend"] and "S03" in figure.text.split()


def test_vlad_with_many_sites_highlights_three_largest_excursions_each_way():
    figure = draw("vlad", series=vlad_series(12))  # finals -6 .. +5
    legend = figure.axes[0]["legend"]
    assert legend == ["as expected", "each site", "S11 (end +5.0)", "S10 (end +4.0)", "S09 (end +3.0)",
                      "S00 (end -6.0)", "S01 (end -5.0)", "S02 (end -4.0)"]
    assert not {"S05", "S06", "S07"} & set(figure.text.split())


def test_vlad_with_few_sites_gives_each_site_a_legend_entry(drawn):
    assert {f"S{i:02d} (end {i - 2:+.1f})" for i in range(5)} <= set(drawn["vlad"].axes[0]["legend"])


def test_vlad_thins_long_series_but_keeps_extremes_and_the_end():
    rng = np.random.default_rng(3)
    series = {f"S{i}": np.cumsum(rng.normal(0, 1, 20_000)) for i in range(3)}
    figure = draw("vlad", series=series)
    assert len(figure.svg.encode()) < 200_000
    for name, path in series.items():
        line = figure.axes[0]["lines"][f"{name} (end {path[-1]:+.1f})"]
        assert len(line) <= plots.MAX_LINE_POINTS * 4 // 3
        assert (line.min(), line.max(), line[-1]) == (path.min(), path.max(), path[-1])


def test_rates_leave_gaps_for_suppressed_years_and_say_so(drawn):
    figure = drawn["rate_over_time"]
    infection = figure.axes[0]["lines"]["infection"]
    assert np.isnan(infection[[2, 5]]).all() and np.isfinite(infection[[0, 1, 3]]).all()
    assert "Gaps: years suppressed" in figure.text


def test_predictors_are_sorted_with_their_direction(drawn):
    figure = drawn["predictors"]
    assert figure.axes[0]["yticklabels"] == ["cleft", "age", "viscosity", "cement volume"]  # bottom to top
    assert all(d in figure.text for d in ("higher -> more risk", "older -> less risk", "lower -> more risk"))


def test_cusum_marks_signals_at_their_case_number(drawn):
    path = cusum_args()["path"]
    assert drawn["cusum"].axes[0]["lines"]["signal (2)"].tolist() == [path[30], path[93]]
    assert drawn["cusum"].axes[0]["cases"]["signal (2)"].tolist() == [31, 94]  # case numbers count from 1


@pytest.mark.parametrize(("kind", "labels"), [
    ("calibration", ["perfect calibration", "flexible calibration curve"]),
    ("decision_curve", ["model", "treat all", "treat none"]),
    ("funnel", ["target (O/E = 1)", "95% control limits", "99.8% control limits"]),
    ("rate_over_time", ["any leakage", "infection"])])
def test_lines_differ_by_dash_or_marker_for_grayscale_print(drawn, kind, labels):
    dashes = drawn[kind].axes[0]["dashes"]
    assert len({dashes[label] for label in labels}) == len(labels)


def test_vlad_sites_differ_by_dash_pattern(drawn):
    # five sites: one solid line and four distinct dash patterns (custom patterns all read '--' in matplotlib)
    assert len(set(re.findall(r"stroke-dasharray: ([^;\"]+)", drawn["vlad"].svg))) >= 4


def test_calibration_curve_leaves_a_gap_where_undefined():
    curve = calibration_args()["curve"]
    curve["observed"][50] = None
    line = draw("calibration", curve=curve).axes[0]["lines"]["flexible calibration curve"]
    assert np.isnan(line[50]) and np.isfinite(np.delete(line, 50)).all()


# ---------------------------------------------------------------------------------------- errors
def _bad_bin() -> list[dict[str, Any]]:
    bins = calibration_bins()
    del bins[4]["observed_high"]
    return bins


def _bins_with(**row: Any) -> list[dict[str, Any]]:
    bins = calibration_bins()
    bins[4].update(row)
    return bins


ERRORS = [
    ("roc", {"tpr": np.linspace(0, 1, 199)}, r"fpr, tpr must have the same length; got 200, 199"),
    ("roc", {"tpr": np.linspace(0, 1.2, 200)}, r"tpr must be within \[0, 1\]; 34 values outside \(min 0, max 1.2;"),
    ("roc", {"fpr": [0.0, 0.5, None, 1.0], "tpr": [0, 0.7, 0.8, 1]},
     r"fpr must hold finite numbers \(no None or NaN\); 1 values are not \(positions 2\)"),
    ("roc", {"title": "  "}, "title must be a non-empty string"),
    ("decision_curve", {"net_benefit_all": [0.1] * 49},
     "thresholds, net_benefit_model, net_benefit_all must have the same length; got 50, 50, 49"),
    ("decision_curve", {"thresholds": np.linspace(0, 1, 50)}, r"thresholds must be within \[0, 1\]"),
    ("funnel", {"labels": ["S1"] * 99},
     "precision, oe_ratio, labels, flags must have the same length; got 100, 100, 99, 100"),
    ("funnel", {"flags": ["up"] * 100}, "flags must be 'high', 'low', '' or a bool; got \\['up', 'up', 'up'\\]"),
    ("funnel", {"limits": {"95%": (np.ones(60), np.ones(59))}},
     r"limit_grid, limits\['95%'\]\[0\], limits\['95%'\]\[1\] must have the same length; got 60, 60, 59"),
    ("funnel", {"precision": -np.ones(100)}, r"precision must be within \[0, inf\]; 100 values outside"),
    ("calibration", {"bins": _bad_bin()}, r"calibration bins must be mappings with keys .*; bins \[4\] are not"),
    ("calibration", {"bins": _bins_with(observed_low=0.9)}, "bins observed intervals must contain their estimate"),
    ("calibration", {"bins": _bins_with(mean_predicted="0.2")}, "bins mean_predicted must hold finite numbers"),
    ("calibration", {"histogram": {"edges": [0, 0.1, 0.2], "counts": [1, 2, 3]}},
     r"histogram\['edges'\] must increase and be one longer than histogram\['counts'\]; got 3 edges and 3 counts"),
    ("calibration", {"histogram": {"edges": [0, 0.1], "counts": [-1]}}, r"histogram\['counts'\] must be within"),
    ("calibration", {"curve": {"predicted": [0.1, 0.2], "observed": [0.1]}},
     r"curve\['predicted'\], curve\['observed'\], curve\['low'\], curve\['high'\] must have the same length"),
    ("vlad", {"series": {"S1": np.array([])}}, r"series must map each site to at least one case; got \['S1'\]"),
    ("vlad", {"series": {}}, "series must map each site to at least one case; got no sites"),
    ("vlad", {"series": {"S1": [0.1, None]}}, r"series\['S1'\] must hold finite numbers"),
    ("rate_over_time", {"series": {"x": {"years": [2020, 2021], "rate": [0.1], "low": [0.0], "high": [0.2]}}},
     r"series\['x'\]\['years'\], .* must have the same length; got 2, 1, 1, 1"),
    ("rate_over_time", {"series": {"x": {"years": [2020], "rate": [0.1]}}}, r"series\['x'\] lacks low, high"),
    ("rate_over_time", {"series": {}}, "series must hold at least one outcome"),
    ("predictors", {"directions": [None]}, "names, importance, directions must have the same length; got 4, 4, 1"),
    ("predictors", {"names": [], "importance": [], "directions": []}, "names must hold at least one predictor"),
    ("cusum", {"signals": [300]}, r"signals must index it \(0 to 299\); got \[300\]"),
    ("cusum", {"h": float("nan")}, "h must hold finite numbers"),
]


@pytest.mark.parametrize(("kind", "changes", "message"), ERRORS, ids=[f"{k}-{i}" for i, (k, _, _) in enumerate(ERRORS)])
def test_bad_inputs_fail_with_the_rule_and_what_was_wrong(kind, changes, message):
    function, arguments, _ = FIGURES[kind]
    with pytest.raises(ValueError, match=message):
        function(**arguments(**changes))
