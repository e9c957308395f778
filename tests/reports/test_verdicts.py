"""The verdict table: every verdict per unit and outcome, q-values across the report, and verdicts withheld
like the counts they rest on (a flag beside <11 narrows the range a reader learns)."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from scipy.special import expit, logit
from statsmodels.stats.multitest import multipletests

from models.suppression import SUPPRESSED
from records import schema as s
from reports import verdicts


def _frame(seed: int = 3, *, planted: str | None = "S01") -> pd.DataFrame:
    """Levels of 8 sites (3 operators each) over 5 years; one small operator; S01 has odds ratio 2.5."""
    rng = np.random.default_rng(seed)
    rows = []
    for site in range(8):
        for op in range(3):
            n = 6 if (site, op) == (7, 2) else int(rng.integers(150, 400))
            p = expit(rng.normal(logit(0.25), 0.6, n))
            odds = 2.5 if f"S{site:02d}" == planted else 1.0
            y = rng.random(n) < expit(logit(p) + np.log(odds))
            rows.append(pd.DataFrame({s.SITE_ID: f"S{site:02d}", s.OPERATOR_ID: f"OP{site}{op}",
                                      s.PROCEDURE_YEAR: rng.integers(2020, 2025, n), s.EXTRACT_BATCH: 1,
                                      s.PROCEDURE_ID: [f"P{site}{op}{i}" for i in range(n)], s.VERTEBRA: "l1",
                                      "y": y.astype(int), "p": p}))
    return pd.concat(rows, ignore_index=True)


@pytest.fixture(scope="module")
def found() -> verdicts.UnitVerdicts:
    return verdicts.unit_verdicts({"leakage_any": _frame()}, {"leakage_any": True})


def test_every_unit_gets_every_verdict_and_the_planted_site_is_in_alarm(found) -> None:
    units = found.units
    assert list(units.columns) == list(verdicts.COLUMNS)
    assert len(units) == 8 + 24 and set(units["unit_type"]) == {"site", "operator"}
    site = units[(units["unit_type"] == "site") & (units["unit_id"] == "S01")].iloc[0]
    assert site["alarm"] == "high" and site["alert"] == "high" and bool(site["alarm_survives_fdr"])
    assert site["shrunken_low"] > 1 and site["p_high"] < 1e-4
    others = units[(units["unit_type"] == "site") & (units["unit_id"] != "S01")]
    assert (others["alarm"] != "high").all()
    operators = units[units["unit_type"] == "operator"]
    assert (operators["site_id"] == operators["unit_id"].str[2].map(lambda d: f"S0{d}")).all()


def test_q_values_are_benjamini_hochberg_across_all_units_and_outcomes_of_the_report(found) -> None:
    units = found.units
    np.testing.assert_allclose(units["q_high"], multipletests(units["p_high"], method="fdr_bh")[1])
    np.testing.assert_allclose(units["q_low"], multipletests(units["p_low"], method="fdr_bh")[1])
    survives = ((units["alarm"] == "high") & (units["q_high"] <= 0.05)) | (
        (units["alarm"] == "low") & (units["q_low"] <= 0.05))
    assert (units["alarm_survives_fdr"] == survives).all()


def test_a_unit_with_a_withheld_count_has_no_published_verdict_but_an_internal_one(found) -> None:
    exact = found.units
    small = exact[(exact["unit_type"] == "operator") & (exact["unit_id"] == "OP72")].iloc[0]
    assert 0 < small["n"] <= 10 and small["alert"] in ("", "high", "low") and np.isfinite(small["p_high"])
    public = verdicts.publishable(exact)
    row = public[(public["unit_type"] == "operator") & (public["unit_id"] == "OP72")].iloc[0]
    assert row["observed"] == SUPPRESSED and row["n"] == SUPPRESSED and bool(row["verdict_withheld"])
    assert row["alert"] == row["alarm"] == verdicts.WITHHELD and not row["alarm_survives_fdr"]
    for column in verdicts.STATISTICS:
        assert pd.isna(row[column]), column
    # every published verdict sits beside a published count, and keeps its exact value
    shown = public[~public["verdict_withheld"]]
    assert (shown["observed"] != SUPPRESSED).all() and len(shown) >= len(public) - 3
    merged = shown.merge(exact, on=["unit_type", "unit_id", "outcome"], suffixes=("", "_exact"))
    assert (merged["alarm"] == merged["alarm_exact"]).all()
    np.testing.assert_allclose(merged["p_high"].astype(float), merged["p_high_exact"])
    signals = verdicts.signals_publishable(found.signals, public)
    assert not set(signals["unit_id"]) & set(public.loc[public["verdict_withheld"], "unit_id"])


def test_cusum_and_trend_columns_come_with_their_limits(found) -> None:
    units = found.units
    charted = units[units["n"] >= 20]
    assert (charted["cusum_h"] > 0).all()
    assert (units["trend_low"] <= units["trend_ratio"]).all() and (units["trend_ratio"] <= units["trend_high"]).all()
    if len(found.signals):
        assert set(found.signals["direction"]) == {"deterioration"}
        assert (found.signals["value"] >= found.signals["h"] - 1e-9).all()
    assert {"funnel", "shrinkage", "cusum"} <= set(found.methods)


def test_no_published_model_gives_an_empty_table() -> None:
    empty = verdicts.unit_verdicts({"leakage_any": _frame()}, {"leakage_any": False})
    assert empty.units.empty and list(empty.units.columns) == list(verdicts.COLUMNS)
    assert verdicts.publishable(empty.units).empty
