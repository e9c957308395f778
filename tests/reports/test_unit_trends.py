"""O/E by year and its log-linear trend per unit, against statsmodels GLM and in simulation."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import statsmodels.api as sm
from scipy import stats
from scipy.optimize import brentq

from records import schema as s
from reports import unit_trends as ut
from reports.qi import EXPECTED, N_CASES, OBSERVED, OE_HIGH, OE_LOW, OE_RATIO, UNIT

YEARS = np.arange(2018, 2024)


def _cases(rng: np.random.Generator, *, units: int, cases_per_year: int, trend: dict[int, float] | None = None,
           extra: np.ndarray | None = None, risk: tuple[float, float] = (0.02, 0.2)) -> pd.DataFrame:
    """Cases of ``units`` units over YEARS with risks p; y ~ Bernoulli(p trend^(year - 2020) extra[unit, year])."""
    unit = np.repeat(np.arange(units), len(YEARS) * cases_per_year)
    year = np.tile(np.repeat(YEARS, cases_per_year), units)
    p = rng.uniform(*risk, len(unit))
    factor = np.ones(units) if trend is None else np.array([trend.get(u, 1.0) for u in range(units)])
    risk = p * factor[unit] ** (year - 2020)
    if extra is not None:
        risk = risk * extra[unit, year - YEARS[0]]
    y = rng.random(len(unit)) < np.clip(risk, 0, 1)
    names = np.array([f"U{u:04d}" for u in range(units)], dtype=object)
    return pd.DataFrame({"site": names[unit], s.PROCEDURE_YEAR: year, "y": y.astype(int), "p": p})


def _glm(table: pd.DataFrame, unit: str, **fit) -> sm.GLM:
    rows = table[table[UNIT] == unit]
    x = (rows[s.PROCEDURE_YEAR] - rows[s.PROCEDURE_YEAR].mean()).to_numpy(np.float64)
    model = sm.GLM(rows[OBSERVED].to_numpy(), sm.add_constant(x), family=sm.families.Poisson(),
                   offset=np.log(rows[EXPECTED].to_numpy()))
    return model.fit(**fit)


def test_oe_by_year_counts_and_exact_interval():
    frame = pd.DataFrame({"site": ["a"] * 5 + ["b"] * 3,
                          s.PROCEDURE_YEAR: [2020, 2020, 2021, 2021, 2021, 2020, 2020, 2020],
                          "y": [True, False, True, True, False, False, False, False],
                          "p": [0.5, 0.25, 0.2, 0.4, 0.4, 0.1, 0.1, 0.3]})
    table = ut.oe_by_year(frame, unit="site", level=0.9)
    assert table[UNIT].tolist() == ["a", "a", "b"] and table[s.PROCEDURE_YEAR].tolist() == [2020, 2021, 2020]
    assert table[N_CASES].tolist() == [2, 3, 3] and table[OBSERVED].tolist() == [1, 2, 0]
    assert table[EXPECTED].to_numpy() == pytest.approx([0.75, 1.0, 0.5])
    assert table[OE_RATIO].to_numpy() == pytest.approx([1 / 0.75, 2.0, 0.0])
    # Garwood limits from the gamma quantiles (an independent route to the chi-squared form)
    assert table[OE_LOW].to_numpy() == pytest.approx([stats.gamma.ppf(0.05, 1) / 0.75, stats.gamma.ppf(0.05, 2), 0.0])
    assert table[OE_HIGH].to_numpy() == pytest.approx([stats.gamma.ppf(0.95, 2) / 0.75, stats.gamma.ppf(0.95, 3),
                                                       stats.gamma.ppf(0.95, 1) / 0.5])


def test_wald_slope_interval_and_p_match_statsmodels_glm():
    frame = _cases(np.random.default_rng(1), units=4, cases_per_year=120, trend={0: 1.3, 1: 0.85})
    result = ut.oe_slopes(frame, unit="site", interval="wald", dispersion="none", level=0.9).set_index(UNIT)
    yearly = ut.oe_by_year(frame, unit="site")
    for unit in result.index:
        fit = _glm(yearly, unit)
        low, high = fit.conf_int(alpha=0.1)[1]
        row = result.loc[unit]
        assert row[ut.OE_TREND] == pytest.approx(np.exp(fit.params[1]), rel=1e-8)
        assert (row[ut.OE_TREND_LOW], row[ut.OE_TREND_HIGH]) == pytest.approx((np.exp(low), np.exp(high)), rel=1e-6)
        assert row[ut.P_VALUE] == pytest.approx(fit.pvalues[1], rel=1e-5)
        assert row[ut.SCALE] == 1.0 and row[ut.REASON] == ""


def test_pooled_quasi_poisson_scale_matches_statsmodels():
    rng = np.random.default_rng(2)
    extra = rng.gamma(4.0, 1 / 4.0, size=(30, len(YEARS)))  # unit-year variation beyond Poisson
    frame = _cases(rng, units=30, cases_per_year=150, extra=extra)
    result = ut.oe_slopes(frame, unit="site", interval="wald").set_index(UNIT)
    yearly = ut.oe_by_year(frame, unit="site")
    fits = {u: _glm(yearly, u) for u in result.index}
    phi = sum(f.pearson_chi2 for f in fits.values()) / sum(f.df_resid for f in fits.values())
    assert phi > 1.2 and result[ut.SCALE].to_numpy() == pytest.approx(phi)
    for unit in result.index[:5]:
        low, high = _glm(yearly, unit, scale=phi).conf_int()[1]
        assert (result.loc[unit, ut.OE_TREND_LOW], result.loc[unit, ut.OE_TREND_HIGH]) == pytest.approx(
            (np.exp(low), np.exp(high)), rel=1e-6)


def test_profile_interval_and_lr_test_match_statsmodels_likelihood():
    frame = _cases(np.random.default_rng(3), units=3, cases_per_year=40, trend={0: 1.2})
    result = ut.oe_slopes(frame, unit="site", dispersion="none").set_index(UNIT)
    yearly = ut.oe_by_year(frame, unit="site")
    q = stats.chi2.ppf(0.95, 1)
    for unit in result.index:
        rows = yearly[yearly[UNIT] == unit]
        x = (rows[s.PROCEDURE_YEAR] - rows[s.PROCEDURE_YEAR].mean()).to_numpy(np.float64)
        fit = _glm(yearly, unit)

        def llf(b: float) -> float:  # the intercept refitted with the slope fixed at b
            return sm.GLM(rows[OBSERVED].to_numpy(), np.ones((len(rows), 1)), family=sm.families.Poisson(),
                          offset=np.log(rows[EXPECTED].to_numpy()) + b * x).fit().llf

        b = fit.params[1]
        low = brentq(lambda c: 2 * (fit.llf - llf(c)) - q, b - 3, b)
        high = brentq(lambda c: 2 * (fit.llf - llf(c)) - q, b, b + 3)
        row = result.loc[unit]
        assert (row[ut.OE_TREND_LOW], row[ut.OE_TREND_HIGH]) == pytest.approx((np.exp(low), np.exp(high)), rel=1e-6)
        assert row[ut.P_VALUE] == pytest.approx(stats.chi2.sf(2 * (fit.llf - llf(0.0)), 1), rel=1e-6)


@pytest.mark.parametrize("interval", ["profile", "wald"])
def test_no_trend_interval_covers_one_at_the_nominal_rate(interval):
    # low risks: a sum of Bernoulli cases is then nearly Poisson (its variance sum p(1-p) is below sum p, so
    # at risks near 0.1 the Poisson interval covers about 96-97%, and the scale is not allowed below 1)
    frame = _cases(np.random.default_rng(4), units=600, cases_per_year=100, risk=(0.005, 0.055))  # E about 3 a year
    result = ut.oe_slopes(frame, unit="site", interval=interval)
    assert (result[ut.REASON] == "").all()
    covered = (result[ut.OE_TREND_LOW] <= 1) & (result[ut.OE_TREND_HIGH] >= 1)
    assert 0.93 <= covered.mean() <= 0.97  # 600 units: +/- 2.2 binomial standard errors around 0.95
    assert result[ut.SCALE].iloc[0] < 1.1  # the pooled scale finds no overdispersion
    assert ((result[ut.P_VALUE] < 0.05) == ~covered).all()  # interval and test agree


def test_a_real_trend_is_detected():
    frame = _cases(np.random.default_rng(5), units=20, cases_per_year=300, trend={7: 1.25})
    result = ut.oe_slopes(frame, unit="site").set_index(UNIT)
    row = result.loc["U0007"]
    assert row[ut.P_VALUE] < 1e-4 and row[ut.OE_TREND_LOW] > 1.1
    assert row[ut.OE_TREND_LOW] <= 1.25 <= row[ut.OE_TREND_HIGH]
    assert (result[ut.P_VALUE] < 1e-4).sum() == 1


def test_units_without_an_estimable_trend_say_why():
    rng = np.random.default_rng(6)
    base = _cases(rng, units=1, cases_per_year=60)
    two_years = base[base[s.PROCEDURE_YEAR] < 2020].assign(site="two")
    no_events = base.assign(site="none", y=0)
    last_only = base.assign(site="last", y=(base[s.PROCEDURE_YEAR] == 2023).astype(int) * base["y"])
    inner_only = base.assign(site="inner", y=(base[s.PROCEDURE_YEAR] == 2021).astype(int) * base["y"])
    result = ut.oe_slopes(pd.concat([base, two_years, no_events, last_only, inner_only]), unit="site").set_index(UNIT)
    assert result.loc["two", ut.REASON] == "fewer than 3 years with cases" and result.loc["two", ut.YEARS] == 2
    assert result.loc["none", ut.REASON] == "no events"
    assert result.loc["last", ut.REASON].startswith("every event in the first or last year")
    assert np.isnan(result.loc["last", ut.OE_TREND]) and result.loc["last", OBSERVED] > 0
    assert result.loc["inner", ut.REASON] == "" and np.isfinite(result.loc["inner", ut.OE_TREND])
    assert result.loc["U0000", ut.REASON] == ""
    assert ut.oe_slopes(two_years, unit="site", min_years=2)[ut.REASON].tolist() == [""]


def test_many_units_take_one_vectorised_fit():
    frame = _cases(np.random.default_rng(7), units=1000, cases_per_year=5)
    result = ut.oe_slopes(frame, unit="site")
    assert len(result) == 1000 and result[UNIT].is_monotonic_increasing
    estimated = result[result[ut.REASON] == ""]
    assert len(estimated) > 900 and np.isfinite(estimated[[ut.OE_TREND_LOW, ut.OE_TREND_HIGH]].to_numpy()).all()


def _frame(**changes: object) -> pd.DataFrame:
    frame = pd.DataFrame({"site": ["a", "a", "b"], s.PROCEDURE_YEAR: [2020, 2021, 2020], "y": [1, 0, 0],
                          "p": [0.2, 0.3, 0.1]})
    return frame.assign(**changes)


@pytest.mark.parametrize(("frame", "options", "message"), [
    (_frame().drop(columns="p"), {}, "frame must have the columns site, y, p, procedure_year; missing: p"),
    (_frame().iloc[:0], {}, "frame must have at least one case"),
    (_frame(site=["a", None, "b"]), {}, r"site must name a unit on every row; 1 rows break it \(rows 1\)"),
    (_frame(y=[1, 2, 0]), {}, r"y must be 0 or 1 \(booleans accepted\), not missing; 1 rows break it \(rows 1\)"),
    (_frame(y=pd.array([1, None, 0], dtype="Int64")), {}, "y must be 0 or 1"),
    (_frame(y=["1", "0", "0"]), {}, "y must be numeric"),
    (_frame(p=[0.2, 1.0, 0.0]), {}, r"p must be an expected risk strictly between 0 and 1, not missing; 2 rows"),
    (_frame(p=[0.2, np.nan, 0.1]), {}, "p must be an expected risk"),
    (_frame(**{s.PROCEDURE_YEAR: [2020.5, 2021, 2020]}), {}, "procedure_year must be a whole year, not missing"),
    (_frame(), {"level": 95}, r"level must be a probability strictly between 0 and 1; got 95"),
    (_frame(), {"interval": "score"}, "interval must be one of 'profile', 'wald'; got 'score'"),
    (_frame(), {"dispersion": "per_unit"}, "dispersion must be one of 'pooled', 'none'"),
    (_frame(), {"min_years": 1}, "min_years must be a whole number of at least 2; got 1"),
])
def test_bad_input_fails_naming_the_rule(frame, options, message):
    with pytest.raises(ValueError, match=message):
        ut.oe_slopes(frame, unit="site", **options)
    if not options:
        with pytest.raises(ValueError, match=message):
            ut.oe_by_year(frame, unit="site")
