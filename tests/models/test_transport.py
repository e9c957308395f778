"""Internal-external validation: who is held out, what each refit saw, per-unit figures against independent
references (brute-force DeLong, statsmodels GLM), and the meta-analysis under a null and with a planted shift."""

from __future__ import annotations

import json
from dataclasses import dataclass, field

import numpy as np
import pandas as pd
import pytest
import statsmodels.api as sm
from scipy.special import expit, logit
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import roc_auc_score

from models import transport as tr
from models.fanout import sequential

BETA = np.array([-1.4, 0.8, -0.5, 0.7])  # intercept, x1, x2, x3: about 25% events
YEARS = (2018, 2019, 2020, 2021, 2022, 2023)


def simulate(seed: int, *, sites: int = 8, rows: int = 600, small_sites: int = 2,
             shift: tuple[str, float] | None = None,
             year_sizes: dict[int, int] | None = None) -> tuple[pd.DataFrame, np.ndarray, ...]:
    """``sites`` sites of ``rows`` rows and ``small_sites`` of 150 (below 100 events), logistic truth.

    ``shift`` adds a constant to one site's true log odds; rows are spread evenly over :data:`YEARS`
    unless ``year_sizes`` (year -> rows, the rest in 2018) says otherwise; groups are pairs of rows.
    """
    rng = np.random.default_rng(seed)
    labels = [f"S{i + 1:02d}" for i in range(sites)] + [f"T{i + 1:02d}" for i in range(small_sites)]
    site = np.repeat(labels, [rows] * sites + [150] * small_sites)
    n = len(site)
    X = pd.DataFrame({"x1": rng.normal(size=n), "x2": rng.normal(size=n), "x3": rng.integers(0, 2, n)},
                     index=pd.RangeIndex(1000, 1000 + n))
    log_odds = BETA[0] + X.to_numpy(dtype=float) @ BETA[1:]
    if shift is not None:
        log_odds = log_odds + np.where(site == shift[0], shift[1], 0.0)
    y = (rng.random(n) < expit(log_odds)).astype(int)
    if year_sizes is None:
        year = np.array(YEARS)[rng.integers(0, len(YEARS), n)]
    else:
        year = np.full(n, YEARS[0])
        order, start = rng.permutation(n), 0
        for target, size in year_sizes.items():
            year[order[start:start + size]] = target
            start += size
    return X, y, np.arange(n) // 2, site, year


def logistic_fit(X, y, groups):  # noqa: N803
    return LogisticRegression(C=1e6, max_iter=200).fit(X, y)


@dataclass
class RecordingFit:
    """A fit that records what each call trained on and what its model was asked to predict."""

    trained: list[dict[str, np.ndarray]] = field(default_factory=list)

    def __call__(self, X, y, groups):  # noqa: N803
        call = {"index": X.index.to_numpy(), "groups": np.asarray(groups), "y": np.asarray(y)}
        self.trained.append(call)
        model = logistic_fit(X, y, groups)

        def predict(X_test):  # noqa: N803
            call["predicted"] = X_test.index.to_numpy()
            return model.predict_proba(X_test)[:, 1]
        return predict  # a callable, not an estimator: the other shape fit may return


# ----------------------------------------------------------------------------------------------- design
def test_sites_below_threshold_are_never_held_out_and_always_trained_on():
    X, y, groups, site, year = simulate(1)
    fit = RecordingFit()
    out = tr.internal_external(fit, X, y, groups=groups, sites=site, years=year, last_years=0)
    held_out = [r["unit"] for r in out["sites"]["held_out"]]
    assert held_out == [f"S{i:02d}" for i in range(1, 9)]
    assert out["sites"]["not_held_out"]["sites"] == 2
    assert "fewer than 100 events" in out["sites"]["not_held_out"]["reason"]
    small = X.index[np.isin(site, ["T01", "T02"])]
    assert len(fit.trained) == 8
    assert all(np.isin(small, call["index"]).all() for call in fit.trained)
    assert "T01" not in json.dumps(out) and "T02" not in json.dumps(out)


def test_held_out_rows_are_never_in_training_and_are_the_rows_predicted():
    X, y, groups, site, year = simulate(2)
    fit = RecordingFit()
    out = tr.internal_external(fit, X, y, groups=groups, sites=site, years=year, last_years=0)
    for row, call in zip(out["sites"]["held_out"], fit.trained):
        held = X.index[site == row["unit"]].to_numpy()
        assert not np.isin(held, call["index"]).any()
        assert np.array_equal(np.sort(call["predicted"]), np.sort(held))
        assert len(call["index"]) + len(held) == len(X)  # every other row, including the small sites
        assert np.array_equal(call["groups"], groups[np.isin(X.index, call["index"])])
        assert row["train"]["sites"] == 9 and row["n"] == 600
        assert row["events"] == int(y[site == row["unit"]].sum())


def test_temporal_trains_on_earlier_years_only():
    X, y, groups, site, year = simulate(3)
    fit = RecordingFit()
    out = tr.internal_external(fit, X, y, groups=groups, sites=site, years=year, last_years=3)
    years_rows = out["temporal"]["years"]
    assert [r["unit"] for r in years_rows] == [2021, 2022, 2023]
    year_of = pd.Series(year, index=X.index)
    for row, call in zip(years_rows, fit.trained[8:]):
        assert row["status"] == "evaluated"
        assert (year_of[call["index"]] < row["unit"]).all()
        assert len(call["index"]) == int((year < row["unit"]).sum())  # every earlier row, all sites
        assert (year_of[call["predicted"]] == row["unit"]).all()
        assert row["train"]["first_year"] == 2018 and row["train"]["last_year"] == row["unit"] - 1


def test_a_year_with_too_few_events_is_skipped_and_says_so():
    # 2023 has 40 rows: fewer than 100 events, and its events (about 10) are withheld when 1 to 10
    X, y, groups, site, year = simulate(4, year_sizes={2021: 1500, 2022: 1500, 2023: 40})
    fit = RecordingFit()
    out = tr.internal_external(fit, X, y, groups=groups, sites=site, years=year, last_years=4)
    rows = {r["unit"]: r for r in out["temporal"]["years"]}
    assert list(rows) == [2018, 2021, 2022, 2023]
    assert rows[2018]["status"] == "no_training" and "no earlier year" in rows[2018]["reason"]
    assert rows[2023]["status"] == "too_few" and "fewer than 100 events" in rows[2023]["reason"]
    events_2023 = int(y[year == 2023].sum())
    assert 0 < events_2023 and rows[2023]["events"] is None and rows[2023]["n"] is None  # counts: the year subgroup table
    assert rows[2023]["oe_ratio"] is None and rows[2023]["expected"] is None
    assert len(fit.trained) == 8 + 2  # no refit for a year that is not evaluated
    pooled = out["temporal"]["pooled"]["oe_ratio"]
    assert pooled["units"] == ["2021", "2022"] and pooled["left_out"] == ["2018", "2023"]


def test_more_years_asked_than_present_tests_every_year():
    X, y, groups, site, year = simulate(3)
    out = tr.internal_external(logistic_fit, X, y, groups=groups, sites=site, years=year, last_years=10)
    rows = out["temporal"]["years"]
    assert [r["unit"] for r in rows] == list(YEARS)
    assert rows[0]["status"] == "no_training" and rows[0]["train"] is None
    assert all(r["status"] == "evaluated" for r in rows[1:])


def test_no_count_from_1_to_10_is_published():
    X, y, groups, site, year = simulate(5, year_sizes={2021: 1500, 2022: 1500, 2023: 30})
    out = tr.internal_external(logistic_fit, X, y, groups=groups, sites=site, years=year, last_years=3)

    def counts(node, key=""):
        if isinstance(node, dict):
            for k, v in node.items():
                yield from counts(v, k)
        elif isinstance(node, list):
            for v in node:
                yield from counts(v, key)
        elif key in ("n", "events") and isinstance(node, int):
            yield node
    assert not [c for c in counts(out) if 1 <= c <= 10]


def test_any_mapper_gives_the_same_result_and_sees_every_refit():
    X, y, groups, site, year = simulate(6)
    seen = []

    def reversed_mapper(fn, items, shared=()):
        seen.extend(items)
        return [fn(item, *shared) for item in items[::-1]][::-1]
    kwargs = {"groups": groups, "sites": site, "years": year}
    here = tr.internal_external(logistic_fit, X, y, mapper=sequential, **kwargs)
    there = tr.internal_external(logistic_fit, X, y, mapper=reversed_mapper, **kwargs)
    assert here == there
    assert len(seen) == 8 + 3


def test_output_is_json_ready_and_states_its_methods():
    X, y, groups, site, year = simulate(7)
    out = tr.internal_external(logistic_fit, X, y, groups=groups, sites=site, years=year)
    text = json.dumps(out, allow_nan=False)
    assert set(out["methods"]) >= {"design", "auroc", "oe_ratio", "calibration_intercept", "calibration_slope"}
    assert "DeLong" in text and "sqrt((1 - O/n) / O)" in text and "knha" in text
    row = out["sites"]["held_out"][0]
    for measure in tr.MEASURES:
        assert set(row[measure]) == {"estimate", "low", "high", "theta", "se"}
        assert row[measure]["low"] <= row[measure]["estimate"] <= row[measure]["high"]
    assert set(out["sites"]["pooled"]) == set(tr.MEASURES) == set(out["temporal"]["pooled"])


# ---------------------------------------------------------------------------------- per-unit figures
def _unit(seed: int, n: int = 800) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    true = rng.normal(-1.2, 1.0, n)
    y = (rng.random(n) < expit(0.2 + 0.8 * true)).astype(int)
    return y, np.round(expit(true), 3)  # rounded: ties, as grouped risks give


def test_auroc_and_delong_se_match_brute_force():
    y, p = _unit(10)
    result = tr.validation_performance(y, p)["auroc"]
    events, non_events = p[y == 1], p[y == 0]
    psi = (events[:, None] > non_events[None, :]) + 0.5 * (events[:, None] == non_events[None, :])
    v10, v01 = psi.mean(axis=1), psi.mean(axis=0)
    se = np.sqrt(v10.var(ddof=1) / len(events) + v01.var(ddof=1) / len(non_events))  # DeLong 1988
    auc = roc_auc_score(y, p)
    assert result["estimate"] == pytest.approx(auc, abs=1e-6)
    assert result["theta"] == pytest.approx(logit(auc), abs=1e-6)
    assert result["se"] == pytest.approx(se / (auc * (1 - auc)), abs=1e-6)
    assert result["low"] == pytest.approx(expit(logit(auc) - 1.959964 * se / (auc * (1 - auc))), abs=1e-6)


def test_calibration_wald_intervals_match_statsmodels():
    y, p = _unit(11)
    result = tr.validation_performance(y, p, level=0.9)
    x = logit(p)
    offset = sm.GLM(y, np.ones((len(y), 1)), family=sm.families.Binomial(), offset=x).fit(tol=1e-12)
    slope = sm.GLM(y, sm.add_constant(x), family=sm.families.Binomial()).fit(tol=1e-12)
    for name, fit, i in (("calibration_intercept", offset, 0), ("calibration_slope", slope, 1)):
        low, high = fit.conf_int(alpha=0.1)[i]
        assert result[name]["estimate"] == pytest.approx(fit.params[i], abs=1e-6)
        assert result[name]["se"] == pytest.approx(fit.bse[i], abs=1e-6)
        assert (result[name]["low"], result[name]["high"]) == pytest.approx((low, high), abs=1e-6)


def test_oe_ratio_uses_the_binomial_approximation():
    y, p = _unit(12)
    o, e, n = y.sum(), p.sum(), len(y)
    result = tr.validation_performance(y, p)["oe_ratio"]
    se = np.sqrt((1 - o / n) / o)
    assert result["estimate"] == pytest.approx(o / e, abs=1e-6)
    assert (result["theta"], result["se"]) == pytest.approx((np.log(o / e), se), abs=1e-6)
    assert result["high"] == pytest.approx(o / e * np.exp(1.959964 * se), abs=1e-5)


def test_undefined_figures_are_none():
    y = np.array([0, 0, 1, 1, 0, 1])
    p = np.array([0.1, 0.2, 0.8, 0.9, 0.3, 0.7])  # perfect separation: AUROC 1, no calibration fit
    result = tr.validation_performance(y, p)
    assert result["auroc"]["estimate"] == 1.0 and result["auroc"]["theta"] is None
    assert result["calibration_slope"]["estimate"] is None
    json.dumps(result, allow_nan=False)


# ------------------------------------------------------------------------------- the meta-analysis
NEWTON_STEPS = 25


def newton_fit(X, y, groups):  # noqa: N803
    """Maximum-likelihood logistic regression in a few numpy Newton steps (fast enough for hundreds of refits)."""
    beta = np.zeros(X.shape[1])
    for _ in range(NEWTON_STEPS):
        p = expit(X @ beta)
        step = np.linalg.solve((X * (p * (1 - p))[:, None]).T @ X, X.T @ (y - p))
        beta = beta + step
        if np.abs(step).max() < 1e-10:
            break
    return lambda Z: expit(Z @ beta)  # noqa: N803


def _covers_new_site(seed: int, tau: float) -> bool:
    """One replicate: 8 sites of 600 rows with true site intercepts N(0, tau^2); is a new site's true O/E
    (of the model fitted on all 8, on 20,000 of its rows' true risks) inside the pooled 95% prediction interval?"""
    rng = np.random.default_rng(seed)
    shifts = rng.normal(0, tau, 9)
    site = np.repeat(np.arange(8), 600)

    def covariates(n):
        return np.column_stack([np.ones(n), rng.normal(size=n), rng.normal(size=n), rng.integers(0, 2, n)])
    X = covariates(len(site))
    y = (rng.random(len(site)) < expit(X @ BETA + shifts[site])).astype(int)
    out = tr.internal_external(newton_fit, X, y, groups=np.arange(len(y)), sites=site, years=np.zeros(len(y), int),
                               min_events=50, min_non_events=50, last_years=0)
    pooled = out["sites"]["pooled"]["oe_ratio"]
    new = covariates(20_000)
    target = expit(new @ BETA + shifts[8]).sum() / newton_fit(X, y, None)(new).sum()
    return pooled["prediction_low"] <= target <= pooled["prediction_high"]


@pytest.mark.parametrize("tau, replicates, bounds", [(0.0, 300, (0.93, 0.99)), (0.3, 150, (0.88, 1.0))],
                         ids=["null", "heterogeneous"])
def test_prediction_interval_covers_a_new_site_at_about_the_nominal_rate(tau, replicates, bounds):
    # 300 replicates: binomial SE of a 95% coverage is 1.3 points (1.8 at 150). Seen: 96.3% (null), 98% (tau 0.3):
    # the t(k - 2) interval is slightly conservative with 8 units; ~9 s and ~3 s on one core.
    coverage = np.mean([_covers_new_site(seed, tau) for seed in range(replicates)])
    assert bounds[0] <= coverage <= bounds[1]


def test_planted_site_shift_shows_as_heterogeneity_and_that_site_stands_out():
    X, y, groups, site, year = simulate(8, shift=("S03", 0.8))
    shifted = tr.internal_external(logistic_fit, X, y, groups=groups, sites=site, years=year, last_years=0)
    X0, y0, *_ = simulate(8)
    null = tr.internal_external(logistic_fit, X0, y0, groups=groups, sites=site, years=year, last_years=0)
    pooled = shifted["sites"]["pooled"]["oe_ratio"]
    assert pooled["tau2"] > 0.01 and pooled["q_p"] < 0.001
    assert pooled["tau2"] > 5 * (null["sites"]["pooled"]["oe_ratio"]["tau2"] or 0) + 0.005
    oe = {r["unit"]: r["oe_ratio"] for r in shifted["sites"]["held_out"]}
    assert max(oe, key=lambda u: oe[u]["estimate"]) == "S03"
    assert oe["S03"]["low"] > pooled["high"]  # its CI lies above the pooled CI
    others = [v["estimate"] for u, v in oe.items() if u != "S03"]
    assert oe["S03"]["estimate"] > 1.25 and max(others) < 1.15


# ------------------------------------------------------------------------------------------- errors
@pytest.mark.parametrize("change, message", [
    ({"min_events": 5}, "min_events must be a whole number of at least 11"),
    ({"min_non_events": 100.0}, "min_non_events must be a whole number of at least 11"),
    ({"last_years": -1}, "last_years must be a whole number >= 0"),
    ({"level": 1.5}, "level must be a probability"),
    ({"years": np.full(4800 + 300, 2020.5)}, "years must be whole numbers"),
    ({"sites": np.array([None] * (4800 + 300))}, "sites must not be missing"),
    ({"groups": np.arange(10)}, "groups must have one value per row of X"),
    ({"y": np.full(4800 + 300, 2)}, "y must be 0 or 1"),
    ({"fit": "logistic"}, "fit must be a callable"),
    ({"fit": lambda X, y, g: (lambda Z: np.full(len(Z), 1.5))}, r"one risk in \[0, 1\] per row"),  # noqa: N803
])
def test_errors_state_the_rule(change, message):
    X, y, groups, site, year = simulate(9)
    kwargs = {"fit": logistic_fit, "y": y, "groups": groups, "sites": site, "years": year, **change}
    fit, y_ = kwargs.pop("fit"), kwargs.pop("y")
    with pytest.raises(ValueError, match=message):
        tr.internal_external(fit, X, y_, **kwargs)


def test_sites_dealt_into_groups_are_each_predicted_by_a_model_that_never_saw_them():
    from models.transport import internal_external

    rng = np.random.default_rng(8)
    n_sites, per_site = 9, 500
    site = np.repeat([f"S{i:02d}" for i in range(n_sites)], per_site)
    x = rng.normal(size=len(site))
    y = (rng.random(len(site)) < 1 / (1 + np.exp(-(-0.3 + x)))).astype(int)
    years = rng.integers(2020, 2024, len(site))
    X = pd.DataFrame({"x": x, "site": site})
    seen: list[set[str]] = []

    def fit(X_train, y_train, groups_train):  # noqa: N803
        seen.append(set(X_train["site"]))
        model = LogisticRegression().fit(X_train[["x"]], y_train)
        return lambda X_test: model.predict_proba(X_test[["x"]])[:, 1]  # noqa: N803

    grouped = internal_external(fit, X, y, groups=np.arange(len(y)), sites=site, years=years, last_years=0,
                                site_folds=3)
    assert grouped["criteria"]["site_refits"] == 3 and len(seen) == 3
    held = grouped["sites"]["held_out"]
    assert [row["unit"] for row in held] == sorted(set(site))
    for row in held:  # the refit that predicted a site was trained on 6 of the 9 sites, never on it
        assert row["train"]["sites"] == n_sites - 3
    assert all(len(s) == n_sites - 3 for s in seen)
    assert {frozenset(set(site) - s) for s in seen} == {frozenset(f"S{i:02d}" for i in range(g, n_sites, 3))
                                                        for g in range(3)}
    one_each = internal_external(fit, X, y, groups=np.arange(len(y)), sites=site, years=years, last_years=0)
    assert one_each["criteria"]["site_refits"] == n_sites
    with pytest.raises(ValueError, match="site_folds"):
        internal_external(fit, X, y, groups=np.arange(len(y)), sites=site, years=years, site_folds=1)


def test_a_year_whose_earlier_years_lack_a_class_or_a_failing_refit_is_not_evaluated_not_a_crash():
    from models.transport import internal_external

    rng = np.random.default_rng(5)
    n = 3_000
    x = rng.normal(size=n)
    years = np.where(np.arange(n) < 150, 2022, np.where(np.arange(n) < 1_600, 2023, 2024))
    y = (rng.random(n) < 1 / (1 + np.exp(-(-0.5 + x)))).astype(int)
    y[years == 2022] = 0  # a pilot year without events: training on it alone is impossible
    X = pd.DataFrame({"x": x})

    def fit(X_train, y_train, groups_train):  # noqa: N803
        if y_train.sum() > 700:
            raise ValueError("this solver needs more of something")  # a refit that refuses its rows
        return LogisticRegression().fit(X_train, y_train)

    result = internal_external(fit, X, y, groups=np.arange(n), sites=np.repeat("S1", n), years=years, last_years=3)
    statuses = {row["unit"]: row["status"] for row in result["temporal"]["years"]}
    assert statuses[2022] == "no_training" and statuses[2023] == "too_few_training"
    assert statuses[2024] in ("evaluated", "refit_failed")
    for row in result["temporal"]["years"]:
        assert row["train"] is None or set(row["train"]) == {"sites", "first_year", "last_year"}  # no counts
        if row["status"] != "evaluated":
            assert row["n"] is None and row["events"] is None and "not evaluated" in row["reason"]


def test_units_withheld_elsewhere_lose_their_figures_and_leave_the_pooling():
    from models.transport import internal_external, withhold_units

    rng = np.random.default_rng(6)
    site = np.repeat([f"S{i}" for i in range(5)], 600)
    x = rng.normal(size=len(site))
    y = (rng.random(len(site)) < 1 / (1 + np.exp(-x))).astype(int)
    X = pd.DataFrame({"x": x})
    result = internal_external(lambda X_, y_, g_: LogisticRegression().fit(X_, y_), X, y,  # noqa: N803
                               groups=np.arange(len(y)), sites=site, years=np.repeat(2024, len(y)), last_years=0)
    assert result["sites"]["pooled"]["oe_ratio"]["k"] == 5
    hidden = withhold_units(result, {"sites": {"S2"}}, reason="withheld: complement")
    row = next(r for r in hidden["sites"]["held_out"] if r["unit"] == "S2")
    assert row["status"] == "withheld" and row["n"] is None and row["oe_ratio"] is None and row["expected"] is None
    assert hidden["sites"]["pooled"]["oe_ratio"]["k"] == 4 and "S2" in hidden["sites"]["pooled"]["oe_ratio"]["left_out"]
