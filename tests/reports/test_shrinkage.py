"""Shrunken effects against lme4 (fixtures written once by R), a plain GLM, direct arithmetic and simulation.

The fixtures in ``fixtures/shrinkage/``: ``case_a.csv`` (common outcome), ``case_b.csv`` (rare outcome, site SD
at the boundary) and ``case_c.csv`` (operator SD small but not 0) from ``make_data.py``, and
``lme4_case_*.json`` from ``lme4_fit.R`` (lme4 1.1-31, R 4.2.2), each with two lme4 fits of
``glmer(y ~ 1 + offset(qlogis(p)) + (1 | site_id) + (1 | site_id:operator_id), binomial, nAGQ = 1)``:
``default`` (``glmerControl(optimizer = "bobyqa")``) and ``strict`` (also ``tolPwrss = 1e-14`` and bobyqa
``rhoend = 1e-10``). R is not needed to run these tests.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import statsmodels.api as sm
from scipy.optimize import brentq
from scipy.special import expit, logit

from reports import shrinkage
from reports.shrinkage import shrunken_effects

FIXTURES = Path(__file__).parent / "fixtures" / "shrinkage"


def _case(name: str) -> tuple[pd.DataFrame, dict]:
    return pd.read_csv(FIXTURES / f"{name}.csv"), json.loads((FIXTURES / f"lme4_{name}.json").read_text())


@pytest.fixture(scope="module")
def fits() -> dict[str, tuple[shrinkage.ShrinkageFit, dict]]:
    out = {}
    for name in ("case_a", "case_b", "case_c"):
        frame, reference = _case(name)
        out[name] = shrunken_effects(frame), reference
    return out


def _joined(fit: shrinkage.ShrinkageFit, reference: dict) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Our site and operator rows next to lme4's (lme4 names a nested level 'site:operator')."""
    units = fit.units
    sites = units[units.unit_type == "site"].set_index("unit_id")
    operators = units[units.unit_type == "operator"]
    operators = operators.set_index(operators.site_id + ":" + operators.unit_id)
    ref_sites = pd.DataFrame(reference["sites"]).set_index("unit")
    ref_operators = pd.DataFrame(reference["operators"]).set_index("unit")
    assert set(sites.index) == set(ref_sites.index) and set(operators.index) == set(ref_operators.index)
    return sites.join(ref_sites), operators.join(ref_operators)


def _simulate(seed: int, *, sites: int = 12, operators: int = 48, rows: int = 6000, sd_site: float = 0.4,
              sd_operator: float = 0.3) -> tuple[pd.DataFrame, np.ndarray, np.ndarray]:
    """Rows from the model itself, with the true site and operator effects (operator k is 'O{k:03d}')."""
    rng = np.random.default_rng(seed)
    operator_site = np.concatenate([np.arange(sites), rng.integers(0, sites, operators - sites)])
    operator = rng.integers(0, operators, rows)
    site = operator_site[operator]
    p = expit(rng.normal(logit(0.25), 0.5, rows))
    u, v = rng.normal(0, sd_site, sites), rng.normal(0, sd_operator, operators)
    y = (rng.random(rows) < expit(logit(p) + u[site] + v[operator])).astype(int)
    frame = pd.DataFrame({"y": y, "p": p, "site_id": [f"S{s:02d}" for s in site],
                          "operator_id": [f"O{k:03d}" for k in operator]})
    return frame, u, v


# ------------------------------------------------------------------------------------------ lme4
@pytest.mark.parametrize("name", ["case_a", "case_b", "case_c"])
def test_matches_lme4_run_to_convergence(fits: dict, name: str) -> None:
    """Against lme4 with PIRLS and bobyqa run to convergence both fits maximise the same Laplace log-likelihood,
    so only the optimisers' stopping differs: observed differences are <= 1.2e-5 in b0, its SE, the SDs, every
    conditional mode and SD (the largest in case C, whose 15 sites with sd 1.3 leave b0 and sd_site weakly
    determined), and <= 3.3e-7 in the log-likelihood, ours never the lower. The tolerances (1e-4, 1e-6) leave
    room for another optimiser path, yet are far below any meaningful difference (the SEs are 0.1 to 0.35)."""
    fit, reference = fits[name]
    strict = reference["strict"]
    assert fit.converged
    assert fit.loglik >= strict["loglik"] - 1e-9
    assert fit.intercept == pytest.approx(strict["intercept"], abs=1e-4)
    assert fit.intercept_se == pytest.approx(strict["intercept_se_conditional"], abs=1e-4)
    assert fit.sd_site == pytest.approx(strict["sd_site"], abs=1e-4)
    assert fit.sd_operator == pytest.approx(strict["sd_operator"], abs=1e-4)
    assert fit.loglik == pytest.approx(strict["loglik"], abs=1e-6)
    assert fit.singular == strict["singular"]
    for table in _joined(fit, strict):
        np.testing.assert_allclose(table["effect"], table["mode"], atol=1e-4, rtol=0)
        np.testing.assert_allclose(table["effect_se"], table["cond_sd"], atol=1e-4, rtol=0)


@pytest.mark.parametrize("name", ["case_a", "case_c"])
def test_matches_lme4_default_fit_of_a_common_outcome(fits: dict, name: str) -> None:
    """With ~1,260 (A) or ~470 (C) events lme4's default stopping is accurate too (observed differences <= 8e-6,
    <= 1.4e-6 in the log-likelihood)."""
    fit, reference = fits[name]
    default = reference["default"]
    assert fit.intercept == pytest.approx(default["intercept"], abs=1e-4)
    assert fit.sd_site == pytest.approx(default["sd_site"], abs=1e-4)
    assert fit.sd_operator == pytest.approx(default["sd_operator"], abs=1e-4)
    assert fit.loglik == pytest.approx(default["loglik"], abs=1e-5)
    for table in _joined(fit, default):
        np.testing.assert_allclose(table["effect"], table["mode"], atol=1e-4, rtol=0)


def test_differs_from_lme4_default_fit_of_a_rare_outcome_as_explained(fits: dict) -> None:
    """lme4's default PIRLS stops when the penalised deviance changes by less than 1e-7 relatively and takes log det
    from the weights of the iteration before the last. With 54 events that last Newton step still moves the modes
    by ~1e-2, so its log det is off by 0.0019 and its logLik by 9.6e-4 (the fixture's own modes are converged to
    1e-7; only log det is stale): it maximises a slightly different function, and its optimum lies 0.0011 away
    in b0 and 0.0023 in sd_operator. Run to convergence (strict) it agrees with us to 1e-6, so the gap is lme4's
    tolerance, not ours. Here: our log-likelihood is the higher one, by less than 2e-3, and both fits put sd_site
    on the boundary."""
    fit, reference = fits["case_b"]
    default = reference["default"]
    assert 0 < fit.loglik - default["loglik"] < 2e-3
    assert fit.intercept == pytest.approx(default["intercept"], abs=5e-3)
    assert fit.sd_operator == pytest.approx(default["sd_operator"], abs=5e-3)
    assert fit.sd_site == default["sd_site"] == 0.0
    assert fit.singular and default["singular"]
    _, operators = _joined(fit, default)
    np.testing.assert_allclose(operators["effect"], operators["mode"], atol=1e-2, rtol=0)


def test_small_sd_off_the_boundary_is_kept(fits: dict) -> None:
    """Case C: lme4 puts sd_operator at 0.184. The likelihood is even in each SD, so its gradient at 0 is 0: run
    with the SDs bounded below by 0, L-BFGS-B stops at sd_operator = 0 here (0.11 lower in log-likelihood) and
    reports convergence. Ours must find 0.184."""
    fit, reference = fits["case_c"]
    assert 0.15 < fit.sd_operator < 0.22 and not fit.singular
    assert fit.sd_operator == pytest.approx(reference["strict"]["sd_operator"], abs=1e-4)


@pytest.mark.parametrize("seed", range(4))
def test_fit_is_a_local_maximum_including_at_the_boundary(seed: int) -> None:
    """Small designs with true SDs of 0.25 (seeds 0 and 2 fit sd_site at 0, seeds 1 and 3 fit both inside): no
    nearby SD on [0, inf) and no nearby b0 gives a higher Laplace log-likelihood than the fit."""
    frame, _, _ = _simulate(200 + seed, sites=8, operators=30, rows=1500, sd_site=0.25, sd_operator=0.25)
    fit = shrunken_effects(frame)
    groups, *_ = shrinkage._group_rows(frame.y.to_numpy(float), frame.p.to_numpy(), frame.site_id,
                                       frame.operator_id)
    laplace = shrinkage._Laplace(groups, shrinkage._SoftplusSums(groups))
    best = np.array([fit.intercept, fit.sd_site, fit.sd_operator])
    assert fit.converged and laplace(best).loglik == pytest.approx(fit.loglik, abs=1e-9)
    for j in range(3):
        for step in (-0.05, -0.01, 0.01, 0.05):
            moved = best + step * np.eye(3)[j]
            moved[1:] = np.abs(moved[1:])  # the likelihood is even in each SD
            assert laplace(moved).loglik <= fit.loglik + 1e-9


def test_boundary_fit_reports_zero_site_effects(fits: dict) -> None:
    fit, _ = fits["case_b"]
    sites = fit.units[fit.units.unit_type == "site"]
    assert fit.sd_site == 0.0 and fit.sd_operator > 0.3
    assert (sites.effect == 0).all() and (sites.effect_se == 0).all() and (sites.odds_ratio == 1).all()
    assert any("boundary (singular) fit: sd_site" in note for note in fit.notes)


# ------------------------------------------------------------------------------------ the unit table
def test_unit_table_counts_and_shrunken_oe_by_direct_arithmetic(fits: dict) -> None:
    """n, observed, expected from the rows; shrunken_oe recomputed row by row from the reported b0 and effects."""
    frame, _ = _case("case_a")
    fit, _ = fits["case_a"]
    units = fit.units
    assert list(units.columns) == ["unit_type", "unit_id", "site_id", "n", "observed", "expected", "effect",
                                   "effect_se", "odds_ratio", "or_low", "or_high", "shrunken_oe"]
    assert (units.unit_type == "site").sum() == 12 and (units.unit_type == "operator").sum() == 40
    assert units.n.dtype == np.int64 and units.observed.dtype == np.int64
    sites, operators = units[units.unit_type == "site"], units[units.unit_type == "operator"]
    assert list(sites.unit_id) == sorted(sites.unit_id)
    by_operator = frame.groupby("operator_id").agg(n=("y", "size"), observed=("y", "sum"), expected=("p", "sum"))
    joined = operators.set_index("unit_id").join(by_operator, rsuffix="_rows")
    assert (joined.n == joined.n_rows).all() and (joined.observed == joined.observed_rows).all()
    np.testing.assert_allclose(joined.expected, joined.expected_rows, rtol=1e-12)
    u = frame.site_id.map(sites.set_index("unit_id").effect)
    v = frame.operator_id.map(operators.set_index("unit_id").effect)
    o = logit(frame.p)
    base = expit(o + fit.intercept)
    site_oe = expit(o + fit.intercept + u).groupby(frame.site_id).sum() / base.groupby(frame.site_id).sum()
    operator_oe = (expit(o + fit.intercept + u + v).groupby(frame.operator_id).sum()
                   / base.groupby(frame.operator_id).sum())
    np.testing.assert_allclose(sites.set_index("unit_id").shrunken_oe[site_oe.index], site_oe, rtol=1e-10)
    np.testing.assert_allclose(operators.set_index("unit_id").shrunken_oe[operator_oe.index], operator_oe,
                               rtol=1e-10)
    np.testing.assert_allclose(units.or_low, np.exp(units.effect - 1.959963984540054 * units.effect_se))
    _assert_modes_are_stationary(frame, fit)


def test_level_sets_the_interval_width(fits: dict) -> None:
    frame, _ = _case("case_a")
    narrow = shrunken_effects(frame, level=0.5).units
    wide = fits["case_a"][0].units
    np.testing.assert_allclose(np.log(narrow.or_high / narrow.odds_ratio),
                               0.6744897501960817 * narrow.effect_se, rtol=1e-10)
    assert (narrow.or_high <= wide.or_high).all()


def test_an_operator_at_two_sites_has_one_effect_per_site() -> None:
    frame, _, _ = _simulate(1, sites=4, operators=12, rows=3000)
    frame.loc[:199, "operator_id"] = "O001"  # O001 now works at the sites of the first 200 rows too
    fit = shrunken_effects(frame)
    rows = fit.units[fit.units.unit_id == "O001"]
    expected_sites = sorted(frame.loc[frame.operator_id == "O001", "site_id"].unique())
    assert list(rows.site_id) == expected_sites and len(expected_sites) > 1
    assert rows.n.sum() == (frame.operator_id == "O001").sum()


def test_row_order_and_label_type_do_not_matter() -> None:
    frame, _, _ = _simulate(2, rows=3000)
    fit = shrunken_effects(frame)
    shuffled = frame.sample(frac=1.0, random_state=3).reset_index(drop=True)
    shuffled["y"] = shuffled["y"].astype(bool)
    other = shrunken_effects(shuffled)
    assert other.loglik == pytest.approx(fit.loglik, abs=1e-8)
    assert other.sd_operator == pytest.approx(fit.sd_operator, abs=1e-6)
    np.testing.assert_allclose(other.units.effect, fit.units.effect, atol=1e-6)


def test_input_frame_is_not_modified() -> None:
    frame, _, _ = _simulate(4, rows=1000)
    before = frame.copy()
    shrunken_effects(frame)
    pd.testing.assert_frame_equal(frame, before)


# ------------------------------------------------------------------------------------ designs
def test_one_unit_is_the_offset_glm() -> None:
    """One site with one operator: no variance is estimable, and b0 with its SE and the log-likelihood are those of
    the logistic GLM with the same offset (statsmodels)."""
    frame, _, _ = _simulate(5, sites=1, operators=1, rows=800)
    fit = shrunken_effects(frame)
    glm = sm.GLM(frame.y, np.ones((len(frame), 1)), family=sm.families.Binomial(), offset=logit(frame.p)).fit()
    assert fit.sd_site == 0.0 and fit.sd_operator == 0.0 and not fit.singular and fit.converged
    assert fit.intercept == pytest.approx(glm.params.iloc[0], abs=1e-6)
    assert fit.intercept_se == pytest.approx(glm.bse.iloc[0], rel=1e-6)
    assert fit.loglik == pytest.approx(glm.llf, abs=1e-6)
    assert any("one site only" in note for note in fit.notes)


def test_one_site_fixes_site_variance_at_zero_and_says_so() -> None:
    frame, _, _ = _simulate(6, sites=1, operators=10, rows=3000, sd_operator=0.5)
    fit = shrunken_effects(frame)
    assert fit.sd_site == 0.0 and fit.sd_operator > 0 and fit.converged and not fit.singular
    assert fit.notes[0] == "one site only: no site variance is estimable; sd_site is fixed at 0"


def test_one_operator_per_site_fixes_operator_variance_at_zero_and_says_so() -> None:
    frame, _, _ = _simulate(7, sites=6, operators=6, rows=3000)
    fit = shrunken_effects(frame)
    assert fit.sd_operator == 0.0 and fit.sd_site > 0 and fit.converged
    assert any("operator and site variances cannot be separated" in note for note in fit.notes)


def test_rare_outcome_with_eventless_operators() -> None:
    """40-odd events among 20,000 rows: most operators have no event; their effects are finite and negative."""
    frame, _, _ = _simulate(8, sites=10, operators=50, rows=20000)
    rng = np.random.default_rng(8)
    frame["p"] = expit(rng.normal(logit(0.002), 0.5, len(frame)))
    frame["y"] = (rng.random(len(frame)) < frame.p).astype(int)
    fit = shrunken_effects(frame)
    operators = fit.units[fit.units.unit_type == "operator"]
    assert frame.y.sum() < 60 and (operators.observed == 0).sum() > 10
    assert fit.converged and np.isfinite(fit.units[["effect", "effect_se"]].to_numpy()).all()
    assert (operators.effect[operators.observed == 0] < 0).all()
    _assert_modes_are_stationary(frame, fit)


def _assert_modes_are_stationary(frame: pd.DataFrame, fit: shrinkage.ShrinkageFit) -> None:
    """At the conditional modes the penalised score is 0: v = sd_operator^2 (O - sum of fitted risks) for each
    operator and u = sd_site^2 (O - sum of fitted risks) for each site, fitted risks from b0 + u + v row by row."""
    units = fit.units
    sites, operators = units[units.unit_type == "site"], units[units.unit_type == "operator"]
    u = frame.site_id.map(sites.set_index("unit_id").effect)
    v = frame.operator_id.map(operators.set_index("unit_id").effect)
    residual = frame.y - expit(logit(frame.p) + fit.intercept + u + v)
    by_operator = residual.groupby(frame.operator_id).sum()
    by_site = residual.groupby(frame.site_id).sum()
    np.testing.assert_allclose(operators.set_index("unit_id").effect[by_operator.index],
                               fit.sd_operator**2 * by_operator, atol=1e-8)
    np.testing.assert_allclose(sites.set_index("unit_id").effect[by_site.index], fit.sd_site**2 * by_site,
                               atol=1e-8)


def test_operators_without_events_or_without_non_events_get_finite_effects() -> None:
    frame, _, _ = _simulate(9, sites=5, operators=20, rows=2000)
    frame.loc[frame.operator_id == "O003", "y"] = 0
    frame.loc[frame.operator_id == "O004", "y"] = 1
    fit = shrunken_effects(frame)
    by_id = fit.units.set_index("unit_id")
    assert fit.converged
    assert -10 < by_id.loc["O003", "effect"] < 0 < by_id.loc["O004", "effect"] < 10
    assert by_id.loc["O004", "or_low"] > 1 > by_id.loc["O003", "or_high"]


# --------------------------------------------------------------------------------- simulation
def test_small_units_shrink_more_and_a_planted_excess_is_found() -> None:
    """An operator of 15 cases keeps under 60% of its own (unshrunk) log odds ratio, one of 1,500 over 90%; the
    large one, planted with a true odds ratio of 3 against the model's risk, gets b0 + u + v within 0.15 of log 3
    (~2.5 sampling SEs at 1,500 cases) and an interval for its effect that excludes 1."""
    frame, _, _ = _simulate(10, sites=8, operators=30, rows=6000, sd_site=0.3, sd_operator=0.3)
    rng = np.random.default_rng(10)
    big = pd.DataFrame({"p": expit(rng.normal(logit(0.25), 0.5, 1500)), "site_id": "S00", "operator_id": "OBIG"})
    big["y"] = (rng.random(1500) < expit(logit(big.p) + math.log(3.0))).astype(int)
    small = pd.DataFrame({"p": np.full(15, 0.25), "y": [1] * 10 + [0] * 5, "site_id": "S01", "operator_id": "OSMALL"})
    data = pd.concat([frame, big, small], ignore_index=True)
    fit = shrunken_effects(data)
    by_id = fit.units.set_index("unit_id")
    kept = {}
    for operator, site in (("OBIG", "S00"), ("OSMALL", "S01")):
        rows = data[data.operator_id == operator]
        baseline = logit(rows.p) + fit.intercept + by_id.loc[site, "effect"]
        unshrunk = brentq(lambda shift: expit(baseline + shift).sum() - rows.y.sum(), -10, 10)
        kept[operator] = by_id.loc[operator, "effect"] / unshrunk
    assert kept["OSMALL"] < 0.6 and kept["OBIG"] > 0.9
    assert by_id.loc["OSMALL", "effect_se"] > 2 * by_id.loc["OBIG", "effect_se"]
    total = fit.intercept + by_id.loc["S00", "effect"] + by_id.loc["OBIG", "effect"]
    assert total == pytest.approx(math.log(3.0), abs=0.15)
    assert by_id.loc["OBIG", "or_low"] > 1


def test_intervals_cover_the_true_effects() -> None:
    """15 data sets from the model (12 sites, 48 operators, sd 0.4 and 0.3): 95% intervals hold the true operator
    effect about 95% of the time (observed 0.95 over 720 intervals) and the site effect a little less (observed
    0.90 over 180): conditional SDs ignore the uncertainty in b0 and in the SDs, which matters most for the 12
    sites, whose effects share b0. The bounds are about 2.5 binomial SEs around those figures."""
    site_hits, operator_hits, sds = [], [], []
    for seed in range(15):
        frame, u, v = _simulate(100 + seed)
        fit = shrunken_effects(frame)
        units = fit.units
        true = np.where(units.unit_type == "site", u[units.unit_id.str[1:].astype(int).clip(upper=len(u) - 1)],
                        v[units.unit_id.str[1:].astype(int)])
        hit = (np.log(units.or_low) <= true) & (true <= np.log(units.or_high))
        site_hits.extend(hit[units.unit_type == "site"])
        operator_hits.extend(hit[units.unit_type == "operator"])
        sds.append((fit.sd_site, fit.sd_operator))
    assert 0.91 <= np.mean(operator_hits) <= 0.98
    assert 0.83 <= np.mean(site_hits) <= 0.99
    assert np.mean(sds, axis=0) == pytest.approx([0.4, 0.3], abs=0.1)


# ------------------------------------------------------------------------------------ numerics
def test_softplus_sums_match_direct_sums_in_and_out_of_panels() -> None:
    frame, _, _ = _simulate(11, rows=20000)
    groups, *_ = shrinkage._group_rows(frame.y.to_numpy(float), frame.p.to_numpy(), frame.site_id,
                                       frame.operator_id)
    sums = shrinkage._SoftplusSums(groups)
    pair = np.repeat(np.arange(len(groups.counts)), groups.counts)
    rng = np.random.default_rng(11)
    for spread in (0.1, 0.8, 3.0, 9.0):  # the last ones leave the first panels
        c = rng.normal(0.0, spread, len(groups.counts))
        eta = groups.offset + c[pair]
        mu = expit(eta)
        direct = [np.bincount(pair, values) for values in
                  (np.logaddexp(0, eta), mu, mu * (1 - mu), mu * (1 - mu) * (1 - 2 * mu))]
        for order, (ours, exact) in enumerate(zip(sums(c, 3), direct)):
            np.testing.assert_allclose(ours, exact, rtol=1e-7 if order == 3 else 1e-10,
                                       atol=1e-8 * groups.counts.max())


def test_gradient_matches_finite_differences() -> None:
    frame, _, _ = _simulate(12, rows=3000)
    groups, *_ = shrinkage._group_rows(frame.y.to_numpy(float), frame.p.to_numpy(), frame.site_id,
                                       frame.operator_id)
    laplace = shrinkage._Laplace(groups, shrinkage._SoftplusSums(groups))
    for x in ([0.1, 0.3, 0.5], [-0.2, 0.0, 0.7], [0.05, 1.5, 0.02]):
        x = np.array(x)
        numeric = [(laplace(x + h).loglik - laplace(x - h).loglik) / 2e-5 for h in 1e-5 * np.eye(3)]
        np.testing.assert_allclose(laplace(x).gradient, numeric, rtol=1e-5, atol=1e-5)


# ------------------------------------------------------------------------------------ checks
def _frame(**overrides: object) -> pd.DataFrame:
    base = {"y": [0, 1, 0, 1], "p": [0.2, 0.3, 0.4, 0.5], "site_id": ["S1", "S1", "S2", "S2"],
            "operator_id": ["O1", "O2", "O3", "O4"]}
    base.update(overrides)
    return pd.DataFrame(base)


@pytest.mark.parametrize(("frame", "options", "match"), [
    (_frame().drop(columns="p"), {}, r"frame lacks required columns \['p'\]"),
    (_frame(), {"operator": "surgeon"}, r"frame lacks required columns \['surgeon'\]"),
    (_frame().iloc[:0], {}, "frame must not be empty; got 0 rows"),
    (_frame(y=[0, 1, 2, 1]), {}, r"y must be 0 or 1 \(bool accepted\); 1 values are not \(rows 2\)"),
    (_frame(y=[0, 1, None, 1]), {}, r"y must be 0 or 1"),
    (_frame(y=["0", "1", "0", "1"]), {}, "y must be numeric; got dtype object"),
    (_frame(y=[0, 0, 0, 0]), {}, "y must contain at least one event and one non-event"),
    (_frame(p=[0.2, 0.0, 0.4, 1.0]), {}, r"p must be an expected risk strictly between 0 and 1 \(no NaN\); "
                                        r"2 values are not \(rows 1, 3\)"),
    (_frame(p=[0.2, np.nan, 0.4, 0.5]), {}, r"p must be an expected risk strictly between 0 and 1"),
    (_frame(p=[0.2, np.inf, 0.4, 0.5]), {}, r"p must be an expected risk strictly between 0 and 1"),
    (_frame(site_id=["S1", None, "S2", "S2"]), {}, r"site_id must not be missing; 1 values are \(rows 1\)"),
    (_frame(operator_id=["O1", "O2", np.nan, "O4"]), {}, r"operator_id must not be missing"),
    (_frame(), {"level": 95}, r"level must be a probability strictly between 0 and 1; got 95"),
    (_frame(), {"level": 1.0}, r"level must be a probability strictly between 0 and 1"),
    (_frame(), {"level": True}, r"level must be a probability strictly between 0 and 1"),
])
def test_input_rules(frame: pd.DataFrame, options: dict, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        shrunken_effects(frame, **options)


def test_not_a_frame() -> None:
    with pytest.raises(ValueError, match="frame must be a pandas DataFrame; got dict"):
        shrunken_effects({"y": [0, 1]})  # type: ignore[arg-type]


def test_custom_column_names() -> None:
    frame = _simulate(13, rows=1000)[0].rename(columns={"y": "leak", "p": "risk", "site_id": "centre",
                                                        "operator_id": "surgeon"})
    fit = shrunken_effects(frame, y="leak", p="risk", site="centre", operator="surgeon")
    assert fit.converged and len(fit.units) > 0 and fit.method.startswith("Shrunken site and operator effects")
