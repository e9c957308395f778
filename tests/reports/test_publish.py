"""The report step end to end on generator data: every published table free of counts 1 to 10 and of
recoverable withheld cells, a self-contained report.html checked in a real browser, the submission package
valid and reproducible, metrics.json reproducible."""

from __future__ import annotations

import csv
import json
import os
import re
import shutil
from html.parser import HTMLParser
from pathlib import Path

import pandas as pd
import pytest

from pipelines.job import run_job
from synth.generator import generate_registry, write_registry
from tests.conftest import copy_workspace
from reports.publish import QI_UNITS_FILE, REPORT_FILE, SUBMISSION_DIR, publish_reports
from reports.submission import validate_submission
from models.suppression import SUPPRESSED, is_small, recoverable

SVG_NS = "http://www.w3.org/2000/svg"
# keys of metrics.json whose values are counts of patients, levels, rows or events
COUNT_KEYS = {"n", "events", "observed", "rows", "procedures", "levels", "rows_in", "rows_accepted",
              "rows_quarantined", "rows_skipped_registered", "available_events", "not_eligible",
              "pain_n", "los_n", "same_day_n", "kyphosis_n", "leakage_assessed_n", "symptomatic_leakage_n",
              "n_missing"}


@pytest.fixture(scope="module")
def published(shared_nights, tmp_path_factory):
    """A copy of the shared workspace after its first night (4,000 procedures trained and published as night-1)."""
    workspace = copy_workspace(shared_nights.after_night_1, tmp_path_factory.mktemp("published"))
    return workspace, workspace / "runs" / "night-1", shared_nights.first


def _walk_counts(node, path=""):
    if isinstance(node, dict):
        for key, value in node.items():
            if key in COUNT_KEYS and isinstance(value, int) and not isinstance(value, bool):
                yield f"{path}.{key}", value
            yield from _walk_counts(value, f"{path}.{key}")
    elif isinstance(node, list):
        for i, value in enumerate(node):
            yield from _walk_counts(value, f"{path}[{i}]")


def test_the_run_publishes_every_file_and_times_the_report(published):
    workspace, run_dir, manifest = published
    for name in (REPORT_FILE, "metrics.json", QI_UNITS_FILE, "manifest.json"):
        assert (run_dir / name).is_file(), name
    assert manifest.status == "ok" and "report" in manifest.timings_seconds
    assert manifest.outputs["report"].endswith(REPORT_FILE)


def test_no_count_from_1_to_10_in_metrics_json(published):
    _, run_dir, _ = published
    metrics = json.loads((run_dir / "metrics.json").read_text())
    small = [(where, value) for where, value in _walk_counts(metrics) if is_small(value)]
    assert small == []
    assert {"outcomes", "trends", "qi", "monitoring", "seed_outcomes", "submission", "data"} <= set(metrics)
    # a withheld subgroup, calibration bin or histogram bar cannot be recovered from the published total
    for outcome in metrics["outcomes"].values():
        if outcome["status"] != "fitted":
            continue
        validation, total = outcome["validation"], outcome["data"]["rows"]
        for rows in validation["subgroups"].values():
            frame = pd.DataFrame({"n": [SUPPRESSED if r.get("suppressed") else r["n"] for r in rows]})
            assert not recoverable(frame, count_column="n", totals=total)
        bars = pd.DataFrame({"n": [SUPPRESSED if c is None else c for c in validation["risk_histogram"]["counts"]]})
        assert not recoverable(bars, count_column="n", totals=total)
        bins = validation["calibration_bins"]
        events = pd.DataFrame({"e": [SUPPRESSED if b.get("suppressed") else b["events"] for b in bins]})
        assert not recoverable(events, count_column="e", totals=outcome["data"]["events"])


def test_qi_units_csv_has_the_columns_no_small_counts_and_nothing_recoverable(published):
    _, run_dir, _ = published
    table = pd.read_csv(run_dir / QI_UNITS_FILE, dtype=str, keep_default_na=False)
    for column in ("unit_type", "unit_id", "outcome", "n", "observed", "expected", "oe_ratio", "oe_low",
                   "oe_high", "risk_adjusted_rate", "alert", "alarm", "p_high", "q_high", "alarm_survives_fdr",
                   "shrunken_or", "trend_ratio", "cusum_h", "site_completeness", "verdict_withheld"):
        assert column in table.columns
    assert set(table["unit_type"]) == {"site", "operator"}
    assert set(table["alarm"]) <= {"", "high", "low", "withheld"} and set(table["alert"]) <= set(table["alarm"]) | {
        "high", "low"}
    for column in ("n", "observed"):
        numbers = pd.to_numeric(table[column].where(table[column] != SUPPRESSED), errors="raise")
        assert not numbers.dropna().astype(int).map(is_small).any(), column
    withheld = table[table["observed"] == SUPPRESSED]
    assert (withheld["oe_ratio"] == "").all() and (withheld["risk_adjusted_rate"] == "").all()
    # a verdict is a cell too: no flag, p, q, shrunken estimate, trend or CUSUM beside a withheld observed count
    assert len(withheld) and (withheld[["alert", "alarm", "cusum_last_signal_year"]] == "withheld").all().all()
    for column in ("p_high", "p_low", "q_high", "q_low", "shrunken_or", "shrunken_low", "trend_ratio",
                   "cusum_signals", "cusum_h"):
        assert (withheld[column] == "").all(), column
    assert (withheld["alarm_survives_fdr"] == "False").all() and (withheld["verdict_withheld"] == "True").all()
    assert (table.loc[table["observed"] != SUPPRESSED, "verdict_withheld"] == "False").all()
    # the total events of each outcome are published (rates over time): no withheld cell may follow from it
    metrics = json.loads((run_dir / "metrics.json").read_text())
    for (unit_type, outcome), part in table.groupby(["unit_type", "outcome"]):
        total = metrics["trends"][outcome]["all_years"]["events"]
        frame = part.assign(observed=[v if v == SUPPRESSED else int(v) for v in part["observed"]])
        assert not recoverable(frame, count_column="observed", totals=total), (unit_type, outcome)


class _Cells(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.cells: list[str] = []
        self.tags: list[tuple[str, dict]] = []
        self._in = False

    def handle_starttag(self, tag, attrs):
        self.tags.append((tag, dict(attrs)))
        if tag == "td":
            self._in, self._text = True, ""

    def handle_endtag(self, tag):
        if tag == "td" and self._in:
            self.cells.append(self._text.strip())
            self._in = False

    def handle_data(self, data):
        if self._in:
            self._text += data


def test_report_html_is_self_contained_and_has_no_small_counts(published):
    _, run_dir, _ = published
    text = (run_dir / REPORT_FILE).read_text(encoding="utf-8")
    parser = _Cells()
    parser.feed(text)
    # every table cell that is a bare whole number must not be 1 to 10 (counts are shown as integers)
    bare = [c for c in parser.cells if re.fullmatch(r"\d{1,3}(,\d{3})*", c)]
    assert bare and not [c for c in bare if is_small(int(c.replace(",", "")))]
    assert SUPPRESSED in text or "&lt;11" in text
    urls = set(re.findall(r"https?://[^\s\"'<>)]+", text))
    assert urls <= {SVG_NS}, urls
    names = {tag for tag, _ in parser.tags}
    assert not names & {"script", "link", "img", "iframe", "object", "embed"}
    assert len(text.encode()) < 5_000_000
    for section in ("What was loaded and quarantined", "Observed rates over time", "Sites and operators",
                    "Monitoring over time", "The outcomes the procedure exists for", "Registry submission",
                    "Candidates and nested selection", "Internal-external validation: leave-one-site-out and by period"):
        assert section in text
    # the forest plots of the temporal validation (4,000 procedures: years have enough any-leakage events)
    assert "observed / expected events (O/E, log scale)" in text and "prediction interval" in text
    assert "not in the infection denominator" in text


def test_internal_report_has_exact_counts_and_every_verdict_the_published_one_withholds(published):
    from reports.publish import INTERNAL_MARK, report_for_audience
    from workspace.transaction import workspace_lock

    workspace, run_dir, _ = published
    with workspace_lock(workspace, run_id="internal-report"):
        result = report_for_audience(workspace, audience="internal")
    internal_dir = Path(result.qi_units).parent
    assert internal_dir == workspace / "internal" / "night-1" and not (internal_dir / SUBMISSION_DIR).exists()
    public = pd.read_csv(run_dir / QI_UNITS_FILE, dtype=str, keep_default_na=False)
    exact = pd.read_csv(result.qi_units, dtype=str, keep_default_na=False)
    assert (exact["marking"] == INTERNAL_MARK).all() and (exact["verdict_withheld"] == "False").all()
    keys = ["unit_type", "unit_id", "outcome"]
    both = public.merge(exact, on=keys, suffixes=("_public", "_internal"))
    assert len(both) == len(public) == len(exact)
    withheld = both[both["observed_public"] == SUPPRESSED]
    assert len(withheld) and (withheld["alarm_public"] == "withheld").all()
    assert withheld["observed_internal"].str.fullmatch(r"\d+").all()  # the exact count, small or not
    assert withheld["alarm_internal"].isin(["", "high", "low"]).all() and (withheld["p_high_internal"] != "").all()
    shown = both[both["observed_public"] != SUPPRESSED]
    assert (shown["observed_public"] == shown["observed_internal"]).all()
    assert (shown["alarm_public"] == shown["alarm_internal"]).all()
    html = Path(result.report).read_text(encoding="utf-8")
    assert INTERNAL_MARK in html and "What needs attention" in html
    assert json.loads(Path(result.metrics).read_text())["marking"] == INTERNAL_MARK
    assert INTERNAL_MARK not in (run_dir / SUBMISSION_DIR / "manifest.json").read_text()


def test_submission_is_valid_and_the_same_night_reproduces_it(published, tmp_path):
    workspace, run_dir, manifest = published
    assert validate_submission(run_dir / SUBMISSION_DIR) == []
    sub = json.loads((run_dir / SUBMISSION_DIR / "manifest.json").read_text())
    assert not [v for _, v in _walk_counts(sub) if is_small(v)]
    assert sub["model_versions"]["leakage_any"] == "v0001"
    again = publish_reports(workspace, run_id="run-2", manifest=_as_dict(manifest))
    second = Path(again.report).parent
    files = sorted(p.relative_to(run_dir / SUBMISSION_DIR) for p in (run_dir / SUBMISSION_DIR).rglob("*") if p.is_file())
    assert any(f.parts[0] == "data" for f in files)
    for name in files:
        assert (run_dir / SUBMISSION_DIR / name).read_bytes() == (second / SUBMISSION_DIR / name).read_bytes(), name
    assert (run_dir / "metrics.json").read_bytes() == (second / "metrics.json").read_bytes()
    assert (run_dir / QI_UNITS_FILE).read_bytes() == (second / QI_UNITS_FILE).read_bytes()
    shutil.rmtree(second)


def test_a_workspace_without_models_publishes_a_report_that_says_why(tmp_path):
    source, workspace = tmp_path / "src", tmp_path / "ws"
    write_registry(generate_registry(300, seed=3), source)
    outcome = run_job(source, workspace, run_id="r", train=False)
    run_dir = workspace / "runs" / "r"
    text = (run_dir / REPORT_FILE).read_text()
    assert "no published model" in text and "no submission" in text
    assert not (run_dir / SUBMISSION_DIR).exists()
    with open(run_dir / QI_UNITS_FILE, newline="") as handle:
        assert list(csv.reader(handle))[1:] == []
    assert outcome.manifest.outputs["submission"] is None


def _as_dict(manifest):
    from dataclasses import asdict

    return asdict(manifest)


# ------------------------------------------------------------------------------------ the real browser
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
CHROMIUM_FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--no-first-run",
                  "--disable-background-networking", "--disable-component-update", "--disable-sync"]


def _browser_or_skip():
    if CHROMIUM is None:
        if os.environ.get("CEMENTRISK_REQUIRE_CHROMIUM"):
            pytest.fail("Chromium is required here (CEMENTRISK_REQUIRE_CHROMIUM) but not installed")
        pytest.skip("no Chromium on this machine: install Debian's chromium to run the browser check")
    return pytest.importorskip("playwright.sync_api")


@pytest.mark.slow
def test_report_renders_in_headless_chromium_without_errors_or_requests(published, tmp_path):
    sync_api = _browser_or_skip()
    _, run_dir, _ = published
    page_url = (run_dir / REPORT_FILE).resolve().as_uri()
    console_errors, requests = [], []
    with sync_api.sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_FLAGS[1:], headless=True)
        try:
            page = browser.new_page(viewport={"width": 1200, "height": 900})
            page.on("console", lambda m: console_errors.append(m.text) if m.type == "error" else None)
            page.on("pageerror", lambda e: console_errors.append(str(e)))
            page.on("request", lambda r: requests.append(r.url))
            page.goto(page_url, wait_until="load")
            svgs = page.locator("figure svg").count()
            labels = page.eval_on_selector_all("figure svg", "els => els.map(e => e.getAttribute('aria-label'))")
            visible = page.eval_on_selector_all(
                "figure svg", "els => els.filter(e => e.getBoundingClientRect().height > 50).length")
            summary = page.eval_on_selector(
                "#attention", "e => { const r = e.getBoundingClientRect(); const p = e.querySelector('p.attention')"
                ".getBoundingClientRect(); return {top: r.top, first_bottom: p.bottom, "
                "heading: e.querySelector('h2').textContent}; }")
            shot = tmp_path / "report.png"
            page.screenshot(path=str(shot), full_page=False)
        finally:
            browser.close()
    assert console_errors == []
    assert requests == [page_url]  # the page itself and nothing else
    # the first screen leads with what needs attention: its heading and first sentences without scrolling
    assert summary["heading"] == "What needs attention" and 0 <= summary["top"] < 300
    assert summary["first_bottom"] < 900
    figures = (run_dir / REPORT_FILE).read_text().count("<figure>")
    assert svgs == figures and figures >= 10 and visible == svgs and all(labels)
    from PIL import Image

    image = Image.open(shot).convert("L")
    low, high = image.getextrema()
    assert high - low > 100 and len(image.getcolors(maxcolors=1 << 16) or []) > 20  # not blank
