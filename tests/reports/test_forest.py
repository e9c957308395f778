"""Forest plot: renders units, withheld rows without numbers, the pooled diamond and prediction interval; the SVG is
self-contained, names itself and repeats byte for byte; bad inputs fail with the rule."""

from __future__ import annotations

import re
import xml.etree.ElementTree as ET

import numpy as np
import pytest
from matplotlib.figure import Figure

from models.meta_analysis import pool_measure
from reports.forest import forest_plot, forest_svg

NS = {"svg": "http://www.w3.org/2000/svg"}


def unit_rows() -> list[dict[str, object]]:
    rows = []
    for i, oe in enumerate([0.9, 1.05, 1.4, 0.95, 1.0]):
        se = 0.08 + 0.01 * i
        rows.append({"unit": f"S{i + 1:02d}", "kind": "site", "status": "evaluated", "n": 600, "events": 150,
                     "oe_ratio": {"estimate": oe, "low": oe * np.exp(-1.96 * se), "high": oe * np.exp(1.96 * se),
                                  "theta": float(np.log(oe)), "se": se},
                     "auroc": {"estimate": 0.75, "low": 0.7, "high": 0.8, "theta": 1.0986, "se": 0.1},
                     "calibration_slope": {"estimate": 1.0 - 0.05 * i, "low": 0.8 - 0.05 * i,
                                           "high": 1.2 - 0.05 * i, "theta": 1.0 - 0.05 * i, "se": 0.1},
                     "calibration_intercept": {"estimate": 0.1 * (i - 2), "low": 0.1 * (i - 2) - 0.2,
                                               "high": 0.1 * (i - 2) + 0.2, "theta": 0.1 * (i - 2), "se": 0.1}})
    rows.append({"unit": "S06", "kind": "site", "status": "evaluated", "n": 80, "events": "<11",
                 "oe_ratio": None, "auroc": None, "calibration_slope": None, "calibration_intercept": None})
    rows.append({"unit": "2024", "kind": "year", "status": "too_few", "n": 300, "events": 60,
                 "oe_ratio": None, "auroc": None, "calibration_slope": None, "calibration_intercept": None})
    return rows


def pooled_of(rows: list[dict[str, object]], measure: str) -> dict[str, object]:
    entries = [r[measure] or {} for r in rows]
    return pool_measure([str(r["unit"]) for r in rows], [e.get("theta") for e in entries],
                        [e.get("se") for e in entries], measure=measure)


def texts(svg: str) -> list[str]:
    root = ET.fromstring(svg)
    return ["".join(t.itertext()).strip() for t in root.iter(f"{{{NS['svg']}}}text")]


@pytest.mark.parametrize("measure", ["oe_ratio", "auroc", "calibration_slope", "calibration_intercept"])
def test_svg_renders_every_row_and_withheld_rows_without_numbers(measure):
    rows = unit_rows()
    svg = forest_svg(rows, pooled_of(rows, measure), measure=measure, title=f"Held-out sites: {measure}")
    shown = texts(svg)
    assert "S06: withheld" in shown  # no estimate, no count
    assert "2024: not evaluated" in shown
    assert not [t for t in shown if t.startswith("S06") and re.search(r"\d+\.\d", t)]
    assert any(t.startswith("S03: ") and re.search(r"\(-?\d", t) for t in shown)
    assert any(t.startswith("pooled (5 units): ") for t in shown)
    assert any(t.startswith("prediction interval: ") and " to " in t for t in shown)
    root = ET.fromstring(svg)
    assert root.get("role") == "img" and root.get("aria-label") == f"Held-out sites: {measure}"
    assert root.find("svg:title", NS).text == f"Held-out sites: {measure}"
    assert "prediction interval" in root.find("svg:desc", NS).text


def test_svg_is_self_contained_and_stable():
    rows = unit_rows()
    svg = forest_svg(rows, pooled_of(rows, "oe_ratio"), measure="oe_ratio", title="O/E by held-out site")
    assert svg == forest_svg(rows, pooled_of(rows, "oe_ratio"), measure="oe_ratio", title="O/E by held-out site")
    urls = set(re.findall(r"https?://[^\s\"')]+", svg))
    assert urls <= {"http://www.w3.org/2000/svg"}  # the namespace only: no CDN, font or image fetched
    assert "<script" not in svg and "<image" not in svg and "@import" not in svg
    assert len(svg) < 60_000


def test_reference_line_at_the_ideal_value_and_none_for_auroc():
    rows = unit_rows()

    def vertical_lines(figure: Figure) -> list[float]:
        axes = figure.axes[0]
        return [line.get_xdata()[0] for line in axes.get_lines()
                if len(set(np.atleast_1d(line.get_xdata()))) == 1 and line.get_linestyle() == ":"]
    for measure, ideal in (("oe_ratio", [1.0]), ("calibration_slope", [1.0]), ("calibration_intercept", [0.0]),
                           ("auroc", [])):
        figure = forest_plot(rows, pooled_of(rows, measure), measure=measure, title=measure)
        assert isinstance(figure, Figure)
        assert vertical_lines(figure) == ideal, measure
    assert forest_plot(rows, None, measure="oe_ratio", title="t").axes[0].get_xscale() == "log"


def test_figure_labels_units_and_pooled_rows():
    rows = unit_rows()
    figure = forest_plot(rows, pooled_of(rows, "oe_ratio"), measure="oe_ratio", title="O/E")
    labels = [t.get_text() for t in figure.axes[0].get_yticklabels()]
    assert labels[0].startswith("S01: 0.90 (") and "S06: withheld" in labels
    assert labels[-2].startswith("pooled (5 units): ") and labels[-1].startswith("prediction interval: ")


def test_one_or_two_units_render_without_a_prediction_interval():
    rows = unit_rows()[:2]
    shown = texts(forest_svg(rows, pooled_of(rows, "oe_ratio"), measure="oe_ratio", title="two"))
    assert "prediction interval: not defined" in shown
    one = texts(forest_svg(rows[:1], pooled_of(rows[:1], "oe_ratio"), measure="oe_ratio", title="one"))
    assert "pooled: not pooled (1 unit)" in one


@pytest.mark.parametrize("change, message", [
    ({"measure": "brier"}, "measure must be one of"),
    ({"rows": []}, "rows must be a non-empty sequence"),
    ({"rows": [{"name": "S01"}]}, "each row must be a mapping with a 'unit'"),
    ({"rows": [{"unit": "S01", "oe_ratio": {"estimate": 1.5, "low": 0.9, "high": 1.2}}]},
     "interval must contain its estimate"),
    ({"rows": [{"unit": "S01", "oe_ratio": {"estimate": 1.0, "low": 0.0, "high": 1.2}}]}, "must be positive"),
    ({"title": " "}, "title must be a non-empty string"),
])
def test_errors_state_the_rule(change, message):
    rows = unit_rows()
    kwargs = {"rows": rows, "pooled": None, "measure": "oe_ratio", "title": "O/E", **change}
    with pytest.raises(ValueError, match=message):
        forest_svg(kwargs.pop("rows"), kwargs.pop("pooled"), **kwargs)
