"""QI statistics against independent references: hand arithmetic, Poisson root-finding, Bernoulli log-likelihoods,
and data simulated from the model (with and without unit random effects)."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest
from scipy import stats
from scipy.optimize import brentq
from scipy.special import expit, logit

from reports import qi


def _cases(units: list[str], y: list[int], p: list[float]) -> pd.DataFrame:
    return pd.DataFrame({"site": units, "leak": y, "risk": p})


def _unit_table(observed: list[float], expected: list[float], variance: list[float]) -> pd.DataFrame:
    """An O/E table built by hand (funnel_assessment needs only unit, observed, expected, variance)."""
    return pd.DataFrame({qi.UNIT: [f"U{i}" for i in range(len(observed))], qi.OBSERVED: observed,
                         qi.EXPECTED: expected, qi.VARIANCE: variance})


def _simulate(seed: int, *, sd: float = 0.0, planted_odds_ratio: float | None = None,
              units: int = 30) -> pd.DataFrame:
    """Cases of ``units`` sites; y ~ Bernoulli(expit(logit p + u_site)), u ~ N(0, sd^2); site S00 (500 cases)
    may instead get a fixed odds ratio. The model's expected risk is p throughout."""
    rng = np.random.default_rng(seed)
    sizes = rng.integers(100, 400, units)
    sizes[0] = 500
    site = np.repeat(np.arange(units), sizes)
    p = expit(rng.normal(-1.8, 0.6, site.size))
    shift = rng.normal(0.0, sd, units) if sd else np.zeros(units)
    if planted_odds_ratio is not None:
        shift[0] = math.log(planted_odds_ratio)
    y = (rng.random(site.size) < expit(logit(p) + shift[site])).astype(int)
    return pd.DataFrame({"site": [f"S{j:02d}" for j in site], "leak": y, "risk": p})


# ------------------------------------------------------------------------------------------ O/E table
def test_observed_expected_matches_hand_computation() -> None:
    # Unit A: y = 1,0,0; p = .2,.5,.1 -> O = 1, E = .8, V = .16 + .25 + .09 = .50
    # Unit B: y = 1,1;   p = .4,.5    -> O = 2, E = .9, V = .24 + .25       = .49
    # overall rate = 3/5 = .6; rows given B first to check sorting.
    frame = _cases(["B", "A", "A", "B", "A"], [1, 1, 0, 1, 0], [0.4, 0.2, 0.5, 0.5, 0.1])
    before = frame.copy()
    table = qi.observed_expected(frame, unit="site", observed="leak", expected="risk")
    pd.testing.assert_frame_equal(frame, before)  # input untouched
    assert list(table.columns) == [qi.UNIT, qi.N_CASES, qi.OBSERVED, qi.EXPECTED, qi.VARIANCE, qi.OE_RATIO,
                                   qi.OE_LOW, qi.OE_HIGH, qi.RISK_ADJUSTED_RATE, qi.Z_SCORE]
    assert table[qi.UNIT].tolist() == ["A", "B"]
    assert table[qi.N_CASES].tolist() == [3, 2]
    assert table[qi.OBSERVED].tolist() == [1, 2] and table[qi.OBSERVED].dtype == np.int64
    np.testing.assert_allclose(table[qi.EXPECTED], [0.8, 0.9])
    np.testing.assert_allclose(table[qi.VARIANCE], [0.50, 0.49])
    np.testing.assert_allclose(table[qi.OE_RATIO], [1.25, 2 / 0.9])
    np.testing.assert_allclose(table[qi.RISK_ADJUSTED_RATE], [0.75, 0.6 * 2 / 0.9])
    np.testing.assert_allclose(table[qi.Z_SCORE], [0.2 / math.sqrt(0.5), 1.1 / 0.7])
    assert table.attrs[qi.OVERALL_RATE] == pytest.approx(0.6)
    assert qi.overall_rate(table) == pytest.approx(0.6)


@pytest.mark.parametrize("level", [0.95, 0.90])
def test_garwood_limits_match_poisson_root_finding(level: float) -> None:
    # Exact Poisson limits for mu: lower solves P(X >= O | mu) = a/2, upper solves P(X <= O | mu) = a/2.
    alpha = 1 - level
    units, y, p = [], [], []
    for k, events in enumerate([0, 1, 3, 12]):
        units += [f"U{k}"] * 40
        y += [1] * events + [0] * (40 - events)
        p += [0.125] * 40  # E = 5 per unit
    table = qi.observed_expected(_cases(units, y, p), unit="site", observed="leak", expected="risk", level=level)
    for events, low, high in zip([0, 1, 3, 12], table[qi.OE_LOW], table[qi.OE_HIGH], strict=True):
        mu_high = brentq(lambda mu: stats.poisson.cdf(events, mu) - alpha / 2, 1e-9, 100)
        mu_low = 0.0 if events == 0 else brentq(lambda mu: stats.poisson.sf(events - 1, mu) - alpha / 2, 1e-9, 100)
        assert low == pytest.approx(mu_low / 5, rel=1e-7, abs=1e-12)
        assert high == pytest.approx(mu_high / 5, rel=1e-7)
    if level == 0.95:  # the textbook value for O = 0: -log(0.025) = 3.689
        assert table[qi.OE_HIGH].iloc[0] * 5 == pytest.approx(-math.log(0.025))


@pytest.mark.parametrize(("change", "message"), [
    (lambda f: f.drop(columns=["risk"]), r"frame lacks required columns \['risk'\]"),
    (lambda f: f.assign(risk=[0.2, np.nan, 0.3, 0.4]), r"risk must be an expected risk strictly between 0 and 1"
                                                         r" \(no NaN\); 1 values are not \(rows 1\)"),
    (lambda f: f.assign(risk=[0.2, 1.0, 0.0, 0.4]), r"strictly between 0 and 1.*2 values are not \(rows 1, 2\)"),
    (lambda f: f.assign(leak=[0, 2, 1, 0]), r"leak must be 0 or 1 \(bool accepted\); 1 values are not \(rows 1\)"),
    (lambda f: f.assign(leak=[0, np.nan, 1, 0]), r"leak must be 0 or 1"),
    (lambda f: f.assign(leak=["no", "yes", "no", "no"]), r"leak must be numeric; got dtype"),
    (lambda f: f.assign(site=["A", None, "B", "B"]), r"site must name a unit on every row; 1 rows are missing"),
    (lambda f: f.iloc[:0], r"leak and risk must not be empty"),
])
def test_observed_expected_rejects_bad_input(change, message: str) -> None:
    frame = _cases(["A", "A", "B", "B"], [0, 1, 1, 0], [0.2, 0.3, 0.3, 0.4])
    with pytest.raises(ValueError, match=message):
        qi.observed_expected(change(frame), unit="site", observed="leak", expected="risk")


def test_observed_expected_accepts_bool_and_rejects_bad_level() -> None:
    frame = _cases(["A", "B"], [True, False], [0.2, 0.3])
    assert qi.observed_expected(frame, unit="site", observed="leak", expected="risk")[qi.OBSERVED].tolist() == [1, 0]
    with pytest.raises(ValueError, match=r"level must be a probability strictly between 0 and 1; got 95"):
        qi.observed_expected(frame, unit="site", observed="leak", expected="risk", level=95)


# --------------------------------------------------------------------------------------------- funnel
def _equal_risk_units(sizes: list[int], risks: list[float], observed: list[int]) -> pd.DataFrame:
    """Cases of units U0.. with ``n`` cases of one risk each and the first ``O`` of them events."""
    rows = [(f"U{i}", int(j < o), p) for i, (n, p, o) in enumerate(zip(sizes, risks, observed)) for j in range(n)]
    return pd.DataFrame(rows, columns=["site", "leak", "risk"])


def test_phi_and_tau2_match_hand_computation() -> None:
    # unit  O   E   V   z=(O-E)/sqrt(V)  x=E^2/V
    # U0    0   1   1   -1                1
    # U1    0   2   1   -2                4
    # U2    4   4   4    0                4
    # U3   10   6   4    2                9
    # U4   20  10   4    5               25
    # sorted z: -2 -1 0 2 5; type-7 quantiles: q10 = -2 + 0.4*1 = -1.6, q90 = 2 + 0.6*3 = 3.8
    # winsorised z: -1, -1.6, 0, 2, 3.8; squares 1 + 2.56 + 0 + 4 + 14.44 = 22 -> phi = 22/5 = 4.4, I*phi = 22
    # p = P(chi2_4 >= 22) = exp(-11) * (1 + 11) (closed form for 4 df) = 2.0e-4 < 0.05 -> overdispersed
    # sum w = 43, sum w^2 = 1 + 16 + 16 + 81 + 625 = 739 -> tau2 = (22 - 4) / (43 - 739/43) = 774/1110
    table = _unit_table([0, 0, 4, 10, 20], [1, 2, 4, 6, 10], [1, 1, 4, 4, 4])
    phi, p_value, overdispersed, tau2 = qi.estimate_overdispersion(table)
    assert phi == pytest.approx(4.4)
    assert p_value == pytest.approx(12 * math.exp(-11))
    assert overdispersed
    assert tau2 == pytest.approx(774 / 1110)


def test_no_adjustment_when_z_scores_are_not_overdispersed() -> None:
    # z = -1, -0.5, 0, 0.5, 1 (E = V = 4): q10 = -0.8, q90 = 0.8 -> squares .64 .25 0 .25 .64 -> phi = 0.356
    phi, _, overdispersed, tau2 = qi.estimate_overdispersion(_unit_table([2, 3, 4, 5, 6], [4] * 5, [4] * 5))
    assert phi == pytest.approx(1.78 / 5)
    assert not overdispersed and tau2 == 0.0


@pytest.mark.parametrize(("n", "p", "o"), [(40, 0.03, 5), (8, 0.26, 6), (12, 0.05, 3), (2000, 0.3, 655),
                                           (400, 0.002, 0), (60, 0.5, 45)])
def test_exact_p_values_and_limits_match_the_binomial(n: int, p: float, o: int) -> None:
    # Equal risks: the Poisson-binomial is the binomial, so scipy.stats.binom is an independent reference.
    result = qi.funnel_assessment(_equal_risk_units([n], [p], [o]), unit="site", observed="leak", expected="risk",
                                  overdispersion=False)
    row = result.table.iloc[0]
    assert row[qi.P_HIGH] == pytest.approx(stats.binom.sf(o - 1, n, p), rel=1e-9, abs=1e-300)
    assert row[qi.P_LOW] == pytest.approx(stats.binom.cdf(o, n, p), rel=1e-9, abs=1e-300)
    for level in (0.95, 0.998):
        a = (1 - level) / 2
        lower, upper = (row[c] * n * p for c in qi.limit_columns(level))
        u, l = round(upper), round(lower)
        assert stats.binom.sf(u, n, p) <= a < stats.binom.sf(u - 1, n, p)  # as tight as a count allows
        assert stats.binom.cdf(l - 1, n, p) <= a and (l == n or stats.binom.cdf(l, n, p) > a)
    assert row[qi.ALARM] == ("high" if row[qi.P_HIGH] <= 0.001 else "low" if row[qi.P_LOW] <= 0.001 else "")
    assert row[qi.ALERT] == ("high" if row[qi.P_HIGH] <= 0.025 else "low" if row[qi.P_LOW] <= 0.025 else "")


def test_limits_hold_their_level_under_the_null_by_simulation() -> None:
    # In-control units with mixed risks at small expected counts, where the normal approximation flagged up to
    # 7 times too often: simulated counts beyond the exact 99.8% limit stay at most 0.001 (plus MC error), and
    # beyond the 95% limit at most 0.025, yet the limit is the tightest a count allows.
    rng = np.random.default_rng(5)
    for n, low, high in ((40, 0.01, 0.05), (8, 0.15, 0.35), (120, 0.001, 0.01)):
        risks = rng.uniform(low, high, n)
        frame = pd.DataFrame({"site": "U", "leak": 0, "risk": risks})
        row = qi.funnel_assessment(frame, unit="site", observed="leak", expected="risk").table.iloc[0]
        counts = (rng.random((100_000, n)) < risks).sum(axis=1)
        e = risks.sum()
        for level, nominal in ((0.998, 0.001), (0.95, 0.025)):
            lower, upper = (row[c] * e for c in qi.limit_columns(level))
            rate = np.mean(counts > round(upper))
            assert rate <= nominal + 3 * math.sqrt(nominal / 100_000)
            assert np.mean(counts > round(upper) - 1) > nominal - 3 * math.sqrt(nominal / 100_000)


def test_too_few_units_are_still_judged_exactly() -> None:
    frame = _equal_risk_units([100, 100, 100, 100], [0.04, 0.04, 0.04, 0.5], [4, 3, 5, 80])
    result = qi.funnel_assessment(frame, unit="site", observed="leak", expected="risk")
    assert math.isnan(result.phi) and math.isnan(result.p_value)
    assert not result.overdispersed and result.tau2 == 0.0
    assert "not assessed: 4 units, at least 5 needed" in result.method
    assert result.table[qi.ALARM].tolist() == ["", "", "", "high"]  # 80/100 against 0.5: p = 1.4e-9


def test_a_zero_count_unit_of_large_expected_is_low_and_a_tiny_unit_is_kept() -> None:
    frame = _equal_risk_units([1, 40, 60], [0.01, 0.5, 0.2], [0, 20, 0])
    out = qi.funnel_assessment(frame, unit="site", observed="leak", expected="risk", alert=0.9, alarm=0.99).table
    assert len(out) == 3 and {"lower_90", "upper_99"} <= set(out.columns)
    assert out[qi.ALARM].tolist() == ["", "", "low"]  # 0/60 at 0.2: P = 0.8^60 = 1.5e-6
    assert out[qi.P_LOW].iloc[2] == pytest.approx(0.8**60)


def test_overdispersed_null_is_the_gamma_frailty_mixture() -> None:
    # Independent reference: integrate the binomial tail over the gamma frailty with scipy.integrate.quad.
    from scipy.integrate import quad

    from reports.null_counts import null_count_distribution

    for n, p, tau2 in ((50, 0.2, 0.02), (300, 0.01, 0.05)):
        distribution = null_count_distribution(np.full(n, p), tau2=tau2)
        assert distribution.method == "poisson-binomial-gamma mixture"
        for k in (int(n * p) + 3, int(n * p) + 8):
            reference = quad(lambda t: stats.binom.sf(k - 1, n, min(t * p, 1)) * stats.gamma.pdf(
                t, a=1 / tau2, scale=tau2), 0, np.inf, limit=200)[0]
            assert distribution.sf(k) == pytest.approx(reference, rel=1e-6)
    # frailty dominates: the beta-binomial on 0..n with mean E and variance V + tau2 E^2 (scipy as the reference)
    big = null_count_distribution(np.full(20_000, 0.3), tau2=0.02)
    rho = ((4200 + 0.02 * 6000**2) / 4200 - 1) / 19_999
    size = 1 / rho - 1
    assert big.method == "beta-binomial"
    assert big.sf(7000) == pytest.approx(stats.betabinom.sf(6999, 20_000, 0.3 * size, 0.7 * size), rel=1e-6)
    # bounded: never a count above n, however common the outcome (a negative binomial put 3% there)
    common = null_count_distribution(np.full(100, 0.7), tau2=0.04)
    assert common.offset + len(common.pmf) - 1 <= 100 and common.sf(101) == 0.0
    assert common.sf(100) < 0.02
    # a frailty that adds under 0.1% to the variance is left out
    assert null_count_distribution(np.full(1000, 0.1), tau2=1e-7).method == "poisson-binomial"


def test_q_values_match_statsmodels_multipletests() -> None:
    from statsmodels.stats.multitest import multipletests

    p = np.random.default_rng(3).uniform(0, 1, 200) ** 3
    np.testing.assert_allclose(qi.fdr_q_values(p), multipletests(p, method="fdr_bh")[1])
    with_nan = np.concatenate([p[:5], [np.nan]])
    q = qi.fdr_q_values(with_nan)
    assert np.isnan(q[-1])
    np.testing.assert_allclose(q[:5], multipletests(p[:5], method="fdr_bh")[1])


def test_funnel_assessment_rejects_bad_levels_and_frames() -> None:
    frame = _equal_risk_units([10], [0.1], [1])
    with pytest.raises(ValueError, match=r"alert must be a lower level than alarm"):
        qi.funnel_assessment(frame, unit="site", observed="leak", expected="risk", alert=0.998, alarm=0.95)
    with pytest.raises(ValueError, match=r"alarm must be a probability"):
        qi.funnel_assessment(frame, unit="site", observed="leak", expected="risk", alarm=99.8)
    with pytest.raises(ValueError, match=r"frame lacks required columns"):
        qi.funnel_assessment(frame.drop(columns="risk"), unit="site", observed="leak", expected="risk")


def test_data_from_the_model_is_rarely_flagged_and_not_overdispersed() -> None:
    result = qi.funnel_assessment(_simulate(11), unit="site", observed="leak", expected="risk")
    assert len(result.table) == 30
    assert not result.overdispersed and result.tau2 == 0.0
    assert (result.table[qi.ALARM] != "").sum() <= 1  # expected 30 * 0.002 = 0.06
    assert (result.table[qi.ALERT] != "").sum() <= 4  # expected 1.5


def test_unit_random_effects_are_detected_and_a_planted_outlier_is_flagged() -> None:
    # Site S00 has odds ratio 3 over the model; the others N(0, 0.3^2) on the logit scale (real but modest
    # differences, which the frailty null allows for). Over ten registries the planted site is always in alarm high,
    # while the other 29 sites rarely are (a unit 2-3 SD out in its random effect may be: it does differ).
    others = []
    for seed in range(10):
        result = qi.funnel_assessment(_simulate(seed, sd=0.3, planted_odds_ratio=3.0), unit="site", observed="leak",
                                      expected="risk")
        assert result.overdispersed and result.tau2 > 0
        assert result.table.loc[result.table[qi.UNIT] == "S00", qi.ALARM].item() == "high"
        others.append(int((result.table[qi.ALARM] != "").sum()) - 1)
        assert "gamma frailty of variance tau^2 = " in result.method
    assert np.mean(others) <= 0.5 and max(others) <= 2


def test_typical_limits_are_the_binomial_limits_of_the_mean_risk() -> None:
    lower, upper = qi.typical_limits([2.0, 20.0], mean_risk=0.1, tau2=0.0, level=0.998)
    for e, lo, up in zip((2.0, 20.0), lower, upper):
        n = round(e / 0.1)
        u = round(up * e)
        assert stats.binom.sf(u, n, 0.1) <= 0.001 < stats.binom.sf(u - 1, n, 0.1)
        assert lo >= 0


# ------------------------------------------------------------------------------------------ over time
def test_vlad_is_cumulative_expected_minus_observed() -> None:
    y, p = [0, 1, 0, 0, 1], [0.1, 0.5, 0.2, 0.3, 0.4]
    # p - y = .1, -.5, .2, .3, -.6
    np.testing.assert_allclose(qi.vlad(y, p), [0.1, -0.4, -0.2, 0.1, -0.5])
    np.testing.assert_allclose(qi.vlad(y, p), np.cumsum(np.subtract(p, y)))


def test_vlad_rejects_bad_input() -> None:
    with pytest.raises(ValueError, match=r"y and p must have the same length; got 2 and 1"):
        qi.vlad([0, 1], [0.5])
    with pytest.raises(ValueError, match=r"p must be an expected risk strictly between 0 and 1"):
        qi.vlad([0, 1], [0.5, 1.5])


Y_HAND, P_HAND = [1, 0, 1, 0, 1], [0.1, 0.2, 0.05, 0.3, 0.25]


def test_cusum_with_reset_matches_step_by_step_computation() -> None:
    # R = 2, h = 1: W = y ln 2 - ln(1 + p)
    # t0: ln2 - ln1.10 = 0.597837  S = 0.597837
    # t1:     - ln1.20 = -0.182322 S = 0.415515
    # t2: ln2 - ln1.05 = 0.644357  S = 1.059872 >= 1 -> signal, reset
    # t3:     - ln1.30 = -0.262364 S = max(0, -0.262364) = 0
    # t4: ln2 - ln1.25 = 0.470004  S = 0.470004
    result = qi.risk_adjusted_cusum(Y_HAND, P_HAND, odds_ratio=2.0, h=1.0)
    np.testing.assert_allclose(result.weights, [0.597837, -0.182322, 0.644357, -0.262364, 0.470004], atol=1e-6)
    np.testing.assert_allclose(result.path, [0.597837, 0.415515, 1.059872, 0.0, 0.470004], atol=1e-6)
    assert result.signals.tolist() == [2]
    assert result.direction == "deterioration"


def test_cusum_without_reset_signals_on_each_upcrossing() -> None:
    # As above without reset: t3: 1.059872 - 0.262364 = 0.797508 (< h), t4: 0.797508 + 0.470004 = 1.267512
    result = qi.risk_adjusted_cusum(Y_HAND, P_HAND, odds_ratio=2.0, h=1.0, reset=False)
    np.testing.assert_allclose(result.path, [0.597837, 0.415515, 1.059872, 0.797508, 1.267512], atol=1e-6)
    assert result.signals.tolist() == [2, 4]


def test_cusum_weights_are_bernoulli_log_likelihood_ratios() -> None:
    # Steiner 2000: under odds ratio R the risk is R p / (1 - p + R p); W is the log-likelihood ratio.
    rng = np.random.default_rng(3)
    p = rng.uniform(0.02, 0.9, 50)
    y = (rng.random(50) < p).astype(int)
    for odds_ratio in (2.0, 0.5):
        p_alt = odds_ratio * p / (1 - p + odds_ratio * p)
        reference = stats.bernoulli.logpmf(y, p_alt) - stats.bernoulli.logpmf(y, p)
        np.testing.assert_allclose(qi.risk_adjusted_cusum(y, p, odds_ratio=odds_ratio).weights, reference)


def test_lower_cusum_accumulates_evidence_of_improvement() -> None:
    # R = 0.5, p = 0.5, no events: W = -ln(1 - 0.5*0.5) = ln(4/3) = 0.287682 per case; 4 cases -> 1.150728 >= 1
    result = qi.risk_adjusted_cusum([0] * 5, [0.5] * 5, odds_ratio=0.5, h=1.0)
    np.testing.assert_allclose(result.path, [0.287682, 0.575364, 0.863046, 1.150728, 0.287682], atol=1e-6)
    assert result.signals.tolist() == [3] and result.direction == "improvement"


@pytest.mark.parametrize(("kwargs", "message"), [
    ({"odds_ratio": 1.0}, r"odds_ratio must be a positive finite number other than 1; got 1.0"),
    ({"odds_ratio": -2.0}, r"odds_ratio must be a positive finite number"),
    ({"h": 0.0}, r"h must be a positive finite threshold; got 0.0"),
])
def test_cusum_rejects_bad_settings(kwargs: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        qi.risk_adjusted_cusum(Y_HAND, P_HAND, **kwargs)


@pytest.mark.parametrize(("n", "low", "high"), [(1, 0.3, 0.3), (63, 1e-6, 0.02), (65, 0.05, 0.95), (300, 0.01, 0.9),
                                                (2000, 1e-4, 1e-2)])
def test_poisson_binomial_matches_brute_force_convolution(n: int, low: float, high: float) -> None:
    from reports.null_counts import poisson_binomial

    risks = np.random.default_rng(n).uniform(low, high, n)
    reference = np.array([1.0])
    for r in risks:  # the textbook recursion, one case at a time, no window
        reference = np.convolve(reference, [1 - r, r])
    distribution = poisson_binomial(risks)
    mine = np.zeros(n + 1)
    mine[distribution.offset:distribution.offset + len(distribution.pmf)] = distribution.pmf
    np.testing.assert_allclose(mine, reference, rtol=0, atol=1e-14)
