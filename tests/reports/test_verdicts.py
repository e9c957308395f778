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
    # one family: both one-sided p-values of every unit-outcome (2m tests), so the alarms that survive, high or
    # low together, have a false discovery rate of at most 5%
    units = found.units
    q = multipletests(np.concatenate([units["p_high"], units["p_low"]]), method="fdr_bh")[1]
    np.testing.assert_allclose(units["q_high"], q[:len(units)], rtol=1e-5)  # published to 6 significant digits
    np.testing.assert_allclose(units["q_low"], q[len(units):], rtol=1e-5)
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
    # published q-values are Benjamini-Hochberg over the published p-values only (a q carries its family's p)
    q = multipletests(np.concatenate([shown["p_high"].astype(float), shown["p_low"].astype(float)]),
                      method="fdr_bh")[1]
    np.testing.assert_allclose(shown["q_high"].astype(float), q[:len(shown)], rtol=1e-5)
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


def _recoverable_from_sites(public: pd.DataFrame) -> list[str]:
    """Withheld operator counts that a site row minus its other, published operators would give."""
    found = []
    for (outcome, site), ops in public[public["unit_type"] == "operator"].groupby(["outcome", "site_id"]):
        site_row = public[(public["unit_type"] == "site") & (public["unit_id"] == site)
                          & (public["outcome"] == outcome)].iloc[0]
        for column in ("n", "observed"):
            hidden = ops[column] == SUPPRESSED
            if site_row[column] != SUPPRESSED and hidden.sum() == 1:
                found.append(f"{outcome} {site} {column}")
    return found


def test_an_operator_count_cannot_be_worked_out_from_its_site_row() -> None:
    # Site S07's third operator has 6 levels; the site row minus the other two operators would give them back.
    public = verdicts.publishable(verdicts.unit_verdicts({"leakage_any": _frame()}, {"leakage_any": True}).units)
    assert _recoverable_from_sites(public) == []
    small = public[(public["unit_type"] == "operator") & (public["site_id"] == "S07")]
    assert (small["observed"] == SUPPRESSED).sum() >= 2 or (
        public.loc[(public["unit_type"] == "site") & (public["unit_id"] == "S07"), "observed"] == SUPPRESSED).all()
    # and a withheld site row cannot be worked out among the sites from the outcome total
    sites = public[public["unit_type"] == "site"]
    assert (sites["observed"] == SUPPRESSED).sum() != 1


def test_an_operator_at_two_sites_is_one_unit_at_each() -> None:
    frame = _frame()
    moved = frame.index[(frame[s.OPERATOR_ID] == "OP00")][:120]
    frame.loc[moved, s.SITE_ID] = "S01"  # OP00 now works at S00 and at S01
    units = verdicts.unit_verdicts({"leakage_any": frame}, {"leakage_any": True}).units
    op = units[(units["unit_type"] == "operator") & (units["unit_id"] == "OP00")]
    assert sorted(op["site_id"]) == ["S00", "S01"] and op["shrunken_or"].notna().all()
    sums = units[units["unit_type"] == "operator"].groupby("site_id")[["n", "observed"]].sum()
    sites = units[units["unit_type"] == "site"].set_index("unit_id")[["n", "observed"]]
    assert (sums.sort_index().to_numpy() == sites.sort_index().to_numpy()).all()
    assert _recoverable_from_sites(verdicts.publishable(units)) == []


def test_withheld_n_from_another_table_is_withheld_here_too(found) -> None:
    units = found.units
    mark = ((units["unit_type"] == "site") & (units["unit_id"] == "S03")).to_numpy()
    public = verdicts.publishable(units, withheld_n=mark)
    assert public.loc[mark, "n"].item() == SUPPRESSED
    assert _recoverable_from_sites(public) == []


def test_a_unit_n_shared_by_two_outcomes_is_withheld_in_both() -> None:
    # Two leakage outcomes on the same levels share each unit's n: a cell withheld in one is withheld in the other.
    frame = _frame()
    frames = {"leakage_any": frame, "leakage_venous": frame.assign(y=(frame["y"] * (frame.index % 9 == 0)))}
    units = verdicts.unit_verdicts(frames, {"leakage_any": True, "leakage_venous": True}).units
    public = verdicts.publishable(units)
    keyed = public.set_index(["unit_type", "unit_id", "site_id", "outcome"])["n"].unstack("outcome")
    assert ((keyed["leakage_any"] == SUPPRESSED) == (keyed["leakage_venous"] == SUPPRESSED)).all()
    assert (keyed["leakage_venous"] == SUPPRESSED).any()
    assert _recoverable_from_sites(public) == []


@pytest.mark.parametrize("dtype", [object, "string[pyarrow]", "other key types"])
@pytest.mark.parametrize("missing", [False, True])
def test_the_cusums_of_rows_sorted_once_per_outcome_are_those_of_a_full_sort_per_unit(dtype, missing) -> None:
    """The CUSUM's case order from one sort per outcome (year, batch, procedure, level; the charts group by unit
    themselves) gives the charts of a sort by unit, year, batch, procedure and level per unit kind (as before)."""
    from reports.cusum import unit_cusums

    rng = np.random.default_rng(5)
    n = 3_000
    frame = pd.DataFrame({s.SITE_ID: rng.choice(["S10", "S02", "S1", "S01"], n),
                          s.PROCEDURE_YEAR: rng.integers(2020, 2023, n), s.EXTRACT_BATCH: rng.integers(1, 4, n),
                          s.PROCEDURE_ID: [f"P{i}" for i in rng.integers(0, 900, n)],
                          s.VERTEBRA: rng.choice(["l1", "t12", "l2"], n), "y": rng.integers(0, 2, n),
                          "p": rng.uniform(0.05, 0.6, n)})
    frame = frame.drop_duplicates([s.PROCEDURE_ID, s.VERTEBRA])
    if dtype == "other key types":  # numbers held as objects (by value: 9 before 10) and levels in anatomical order
        frame[s.EXTRACT_BATCH] = (frame[s.EXTRACT_BATCH] * 4).astype(object)
        frame[s.VERTEBRA] = pd.Categorical(frame[s.VERTEBRA], categories=["t12", "l1", "l2"], ordered=True)
    else:
        frame = frame.astype({s.SITE_ID: dtype, s.PROCEDURE_ID: dtype})
    if missing:  # a missing batch number (the contract refuses it): pandas' sort, missing last
        frame[s.EXTRACT_BATCH] = frame[s.EXTRACT_BATCH].astype("Int64").mask(rng.random(len(frame)) < 0.05)
    frame = frame.sample(frac=1, random_state=1)
    keys = [s.SITE_ID, s.PROCEDURE_YEAR, s.EXTRACT_BATCH, s.PROCEDURE_ID, s.VERTEBRA]
    expected = unit_cusums(frame.sort_values(keys, kind="stable").reset_index(drop=True), unit=s.SITE_ID)
    in_time = frame[[s.SITE_ID, "y", "p", s.PROCEDURE_YEAR]].take(verdicts._time_order(frame)).reset_index(drop=True)
    found = unit_cusums(in_time, unit=s.SITE_ID)
    assert len(expected.signals) > 5
    pd.testing.assert_frame_equal(found.units, expected.units)
    pd.testing.assert_frame_equal(found.signals, expected.signals)
