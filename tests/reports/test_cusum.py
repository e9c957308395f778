"""Per-unit CUSUM limits against independent references: an exact lattice chain, charts simulated from the model
(a vectorised Monte Carlo whose chart is checked against reports.qi), and hand-built unit frames."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy.special import expit, logit

from reports import cusum, qi

TARGET = 500.0  # in-control ARL0 of the simulation checks: 100 cases a year, one false alarm per 5 years
CHAINS = 4000  # simulated charts per check: SE of the mean run length about 1.6% of ARL0


def _risks(profile: str, n: int = 600, seed: int = 7) -> np.ndarray:
    """A unit's case mix: per-level any leakage (mean 0.26), canal leakage (0.03), 90-day infection (0.005)."""
    rng = np.random.default_rng(seed)
    centre, spread = {"leakage": (-1.1, 0.9), "canal": (-3.6, 0.9), "infection": (-5.6, 1.1)}[profile]
    return expit(rng.normal(centre, spread, n))


# ------------------------------------------------------------------------------------ the simulation
def _first_signals(weights: np.ndarray, h: float, start: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per row of ``weights`` (charts x cases), from level ``start``: did it signal, at which case (0-based), and
    its level after the last case. S_t = max(0, S_{t-1} + W_t) solved as S_t = C_t - min(-S_0, min_{s<=t} C_s)."""
    cumulative = np.cumsum(weights, axis=1)
    level = cumulative - np.minimum(-start[:, None], np.minimum.accumulate(cumulative, axis=1))
    crossed = level >= h
    return crossed.any(axis=1), crossed.argmax(axis=1), level[:, -1]


def _simulate_run_lengths(risks: np.ndarray, h: float, *, odds_ratio: float, true_odds_ratio: float = 1.0,
                          chains: int = CHAINS, seed: int = 2024, block: int = 256) -> np.ndarray:
    """Cases to the first signal of ``chains`` independent charts; each case's risk drawn from ``risks`` and its
    outcome from Bernoulli(expit(logit p + log true_odds_ratio)) (1: the model is right)."""
    rng = np.random.default_rng(seed)
    shifted = expit(logit(risks) + math.log(true_odds_ratio))
    non_event = -np.log1p((odds_ratio - 1) * risks)
    event = math.log(odds_ratio) + non_event
    run_length = np.zeros(chains, dtype=np.int64)
    level = np.zeros(chains)
    alive, done = np.arange(chains), 0
    while alive.size:
        case = rng.integers(0, len(risks), size=(alive.size, block))
        weights = np.where(rng.random(case.shape) < shifted[case], event[case], non_event[case])
        hit, first, end = _first_signals(weights, h, level[alive])
        run_length[alive[hit]] = done + first[hit] + 1
        level[alive[~hit]] = end[~hit]
        alive, done = alive[~hit], done + block
    return run_length


def test_simulated_chart_is_the_chart_of_qi() -> None:
    rng = np.random.default_rng(3)
    p = _risks("leakage", 400, seed=3)
    for odds_ratio, h in ((2.0, 2.5), (0.5, 2.0)):
        for _ in range(5):
            y = (rng.random(p.size) < p).astype(float)
            weights = y * math.log(odds_ratio) - np.log1p((odds_ratio - 1) * p)
            hit, first, _ = _first_signals(weights[None, :], h, np.zeros(1))
            reference = qi.risk_adjusted_cusum(y, p, odds_ratio=odds_ratio, h=h).signals
            assert bool(hit[0]) == bool(len(reference))
            if len(reference):
                assert first[0] == reference[0]


@pytest.fixture(scope="module")
def in_control_runs() -> dict[tuple[str, float], tuple[float, np.ndarray]]:
    """(h, simulated run lengths) at h = cusum_limit(arl0=TARGET) for each risk profile and direction."""
    runs = {}
    for profile in ("leakage", "canal", "infection"):
        p = _risks(profile)
        for odds_ratio in (2.0, 0.5):
            h = cusum.cusum_limit(p, arl0=TARGET, odds_ratio=odds_ratio)
            runs[profile, odds_ratio] = h, _simulate_run_lengths(p, h, odds_ratio=odds_ratio)
    return runs


@pytest.mark.parametrize("profile", ["leakage", "canal", "infection"])
@pytest.mark.parametrize("odds_ratio", [2.0, 0.5])
def test_simulated_arl0_at_the_limit_is_the_target(in_control_runs, profile: str, odds_ratio: float) -> None:
    _, run_length = in_control_runs[profile, odds_ratio]
    se = run_length.std(ddof=1) / math.sqrt(len(run_length))
    # Monte Carlo error (3 SE) plus the chain's documented accuracy (1%)
    assert abs(run_length.mean() - TARGET) < 3 * se + 0.01 * TARGET


@pytest.mark.parametrize("profile", ["leakage", "canal", "infection"])
def test_false_alarm_within_a_year_of_volume_is_what_the_arl_implies(in_control_runs, profile: str) -> None:
    # ARL0 = 5 years of 100 cases. Were the run length geometric, 1 - exp(-1/5) = 18% of charts would signal
    # falsely within the first year; starting from 0 makes early signals rarer (13-15% for deterioration). An
    # improvement chart for a rare outcome must first climb h by small steps, one per case without an event:
    # hardly any false alarm in its first year (0% for infection), more later.
    geometric = 1 - math.exp(-1 / 5)
    _, deterioration = in_control_runs[profile, 2.0]
    assert 0.6 * geometric < np.mean(deterioration <= TARGET / 5) < geometric + 0.02
    _, improvement = in_control_runs[profile, 0.5]
    assert np.mean(improvement <= TARGET / 5) < geometric + 0.02


@pytest.mark.parametrize(("profile", "at_most"), [("leakage", 0.2), ("canal", 0.5), ("infection", 0.8)])
def test_chart_signals_sooner_when_the_odds_change_as_tuned(in_control_runs, profile: str, at_most: float) -> None:
    # Out-of-control ARL as a share of ARL0 = 500: about 0.1 for leakage (mean risk 0.26), 0.2-0.4 for canal
    # leakage (0.03) and 0.45-0.7 for infection (0.005): a rare outcome is detected slowly whatever the limit.
    p = _risks(profile)
    for odds_ratio in (2.0, 0.5):
        h, in_control = in_control_runs[profile, odds_ratio]
        out_of_control = _simulate_run_lengths(p, h, odds_ratio=odds_ratio, true_odds_ratio=odds_ratio, chains=500)
        assert out_of_control.mean() < at_most * in_control.mean()


# ------------------------------------------------------------------------------------------ the chain
def test_chain_is_exact_when_the_steps_fall_on_its_nodes() -> None:
    # R = e, p = (e^c - 1)/(e - 1) with c = 1/4: the steps are exactly +3c (event) and -c (no event), so the chart
    # lives on multiples of c; with h = 8c its ARL0 solves an 8-state system, and 296 = 8 * 37 states put every
    # step on a node.
    c = 0.25
    odds_ratio, p = math.e, math.expm1(c) / (math.e - 1)
    np.testing.assert_allclose(math.log(odds_ratio) - math.log1p((odds_ratio - 1) * p), 3 * c)
    q = np.zeros((8, 8))
    for level in range(8):
        if level + 3 < 8:
            q[level, level + 3] += p
        q[level, max(level - 1, 0)] += 1 - p
    exact = np.linalg.solve(np.eye(8) - q, np.ones(8))[0]
    arl = cusum.in_control_arl(np.full(50, p), 8 * c, odds_ratio=odds_ratio, states=296)
    assert arl == pytest.approx(exact, rel=1e-9)


@pytest.mark.parametrize("profile", ["leakage", "infection"])
@pytest.mark.parametrize("odds_ratio", [2.0, 0.5])
def test_chain_converges_as_states_grow(profile: str, odds_ratio: float) -> None:
    p, h = _risks(profile), 2.5
    fine = cusum.in_control_arl(p, h, odds_ratio=odds_ratio, states=1500)
    arls = [cusum.in_control_arl(p, h, odds_ratio=odds_ratio, states=m) for m in (75, 150, 300)]
    errors = [abs(a / fine - 1) for a in arls]
    assert errors[0] > errors[1] > errors[2] and errors[2] < 0.015  # ARL0 300 to 12,000 here


def test_ladder_solves_every_leading_block_at_once() -> None:
    # private, but the identity e0' A_k^-1 1 = sum_{i<k} r_i z_i behind cusum_limit's first guess is worth pinning
    probs, steps = cusum._step_mixture(_risks("canal"), 2.0)
    ladder = cusum._arl_ladder(probs, steps, cell=0.05, states=40)
    a = np.eye(40) - cusum._transition_matrix(probs, steps, cell=0.05, nodes=40, absorb_at=40)
    direct = [np.linalg.solve(a[:k, :k], np.ones(k))[0] for k in range(1, 41)]
    np.testing.assert_allclose(ladder, direct, rtol=1e-10)


@settings(max_examples=25, deadline=None)
@given(st.lists(st.floats(0.001, 0.9), min_size=1, max_size=80), st.floats(0.05, 6.0), st.floats(1.05, 2.0),
       st.sampled_from([2.0, 0.5]))
def test_arl0_increases_with_h(risks: list[float], h: float, factor: float, odds_ratio: float) -> None:
    low = cusum.in_control_arl(risks, h, odds_ratio=odds_ratio, states=60)
    high = cusum.in_control_arl(risks, h * factor, odds_ratio=odds_ratio, states=60)
    assert 1 <= low <= high * (1 + 1e-9)


@pytest.mark.parametrize("odds_ratio", [2.0, 3.0, 0.5])
@pytest.mark.parametrize("arl0", [50.0, 500.0, 20_000.0])
def test_limit_gives_the_target_arl0(odds_ratio: float, arl0: float) -> None:
    p = _risks("leakage")
    h = cusum.cusum_limit(p, arl0=arl0, odds_ratio=odds_ratio)
    assert cusum.in_control_arl(p, h, odds_ratio=odds_ratio) == pytest.approx(arl0, rel=0.005)
    assert cusum.cusum_limit(p, arl0=arl0 * 2, odds_ratio=odds_ratio) > h


def test_limit_near_the_shortest_arl0_is_just_above_one_event() -> None:
    p = np.full(200, 0.01)  # shortest ARL0 = 100 cases (signal at every event), one event = log 2 - log 1.01
    one_event = math.log(2) - math.log1p(0.01)
    h = cusum.cusum_limit(p, arl0=101.0)
    assert 0 < h < one_event + 0.05
    with pytest.raises(ValueError, match=r"arl0 must exceed the shortest possible ARL0 for these risks, 100 cases "
                                         r"\(a chart that signals at every event\); got 99"):
        cusum.cusum_limit(p, arl0=99)
    assert cusum.cusum_limit(p, arl0=1.5, odds_ratio=0.5) > 0  # improvement: shortest is 1/(1 - 0.01)


@pytest.mark.parametrize(("call", "message"), [
    (lambda: cusum.in_control_arl([], 1.0), "risks must not be empty"),
    (lambda: cusum.in_control_arl([0.1, 1.0], 1.0), r"risks must be expected risks strictly between 0 and 1 .*rows 1"),
    (lambda: cusum.in_control_arl([0.1, np.nan], 1.0), "1 values are not"),
    (lambda: cusum.in_control_arl(["a"], 1.0), "risks must be a one-dimensional array of numbers"),
    (lambda: cusum.in_control_arl([[0.1]], 1.0), "one-dimensional"),
    (lambda: cusum.in_control_arl([0.1], 0.0), "h must be a positive finite number; got 0.0"),
    (lambda: cusum.in_control_arl([0.1], math.inf), "h must be a positive finite number"),
    (lambda: cusum.in_control_arl([0.1], 1.0, odds_ratio=1.0), "odds_ratio must be a positive finite odds ratio"),
    (lambda: cusum.in_control_arl([0.1], 1.0, odds_ratio=-2.0), "other than 1; got -2.0"),
    (lambda: cusum.in_control_arl([0.1], 1.0, states=5), "states must be an integer >= 10; got 5"),
    (lambda: cusum.in_control_arl([0.1], 1.0, states=100.0), "states must be an integer"),
    (lambda: cusum.cusum_limit([0.1], arl0=1.0), "arl0 must be a finite number of cases > 1; got 1.0"),
    (lambda: cusum.cusum_limit([0.1], arl0=math.nan), "arl0 must be a finite number"),
    (lambda: cusum.cusum_limit([0.1], arl0=math.inf), "arl0 must be a finite number"),
    (lambda: cusum.cusum_limit([0.5], arl0=1e300), "arl0 must be reachable with h <= 500"),
])
def test_chain_inputs_are_checked(call, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        call()


# -------------------------------------------------------------------------------------------- per unit
def _unit_frame() -> pd.DataFrame:
    """Unit A: 60 cases over 2020, 2021 and 2023 (no 2022) with events in bursts; unit B: 10 cases. Interleaved."""
    rng = np.random.default_rng(11)
    p_a = rng.uniform(0.05, 0.4, 60)
    y_a = np.zeros(60, dtype=int)
    y_a[[5, 6, 7, 8, 9, 30, 31, 32, 33, 34, 35, 50]] = 1
    a = pd.DataFrame({"site": "A", "leak": y_a, "risk": p_a, "procedure_year": np.repeat([2020, 2021, 2023], 20)})
    b = pd.DataFrame({"site": "B", "leak": [0, 1] * 5, "risk": 0.2, "procedure_year": 2021})
    frame = pd.concat([a, b], ignore_index=True)
    return frame.iloc[np.argsort(np.r_[np.arange(60) * 2.0, np.arange(10) * 2.0 + 1], kind="stable")]


def test_unit_charts_match_qi_with_each_units_own_limit() -> None:
    frame = _unit_frame()
    before = frame.copy()
    result = cusum.unit_cusums(frame, unit="site", y="leak", p="risk")
    pd.testing.assert_frame_equal(frame, before)  # input untouched
    units = result.units.set_index(cusum.UNIT)
    assert units.loc["A", cusum.N_CASES] == 60 and units.loc["A", cusum.YEARS] == 3  # distinct years
    assert units.loc["A", cusum.ARL0_TARGET] == pytest.approx(5 * 60 / 3)
    a = frame[frame["site"] == "A"]
    y, p, years = a["leak"].to_numpy(float), a["risk"].to_numpy(), a["procedure_year"].to_numpy()
    signals = result.signals[result.signals[cusum.UNIT] == "A"]
    for direction, odds_ratio in ((cusum.DETERIORATION, 2.0), (cusum.IMPROVEMENT, 0.5)):
        h = cusum.cusum_limit(p, arl0=100.0, odds_ratio=odds_ratio)
        assert units.loc["A", cusum.direction_column(cusum.LIMIT, direction)] == pytest.approx(h)
        chart = qi.risk_adjusted_cusum(y, p, odds_ratio=odds_ratio, h=h)
        rows = signals[signals[cusum.DIRECTION] == direction]
        assert rows[cusum.CASE_INDEX].tolist() == chart.signals.tolist()
        assert rows[cusum.YEAR].tolist() == years[chart.signals].tolist()
        assert rows[cusum.CASES_SINCE_RESET].tolist() == np.diff(chart.signals, prepend=-1).tolist()
        np.testing.assert_allclose(rows[cusum.VALUE], chart.path[chart.signals])
        assert (rows[cusum.VALUE] >= rows[cusum.LIMIT]).all()
        assert units.loc["A", cusum.direction_column(cusum.SIGNALS, direction)] == len(chart.signals)
        last = chart.signals[-1] if len(chart.signals) else -1
        assert units.loc["A", cusum.direction_column(cusum.CASES_SINCE_RESET, direction)] == 59 - last
        value = units.loc["A", cusum.direction_column(cusum.VALUE, direction)]
        assert value == pytest.approx(chart.path[-1] if last < 59 else 0.0)
        assert units.loc["A", cusum.direction_column(cusum.FRACTION_OF_H, direction)] == pytest.approx(value / h)
    assert len(result.signals.query("direction == 'deterioration'")) >= 1  # the bursts are seen
    assert units.loc["A", cusum.REASON] == ""
    assert units.loc["B", cusum.REASON] == "fewer than 20 cases"
    assert np.isnan(units.loc["B", cusum.direction_column(cusum.LIMIT, cusum.IMPROVEMENT)])
    assert pd.isna(units.loc["B", cusum.direction_column(cusum.SIGNALS, cusum.DETERIORATION)])
    assert "B" not in set(result.signals[cusum.UNIT])
    assert list(result.signals.columns) == [cusum.UNIT, cusum.DIRECTION, cusum.CASE_INDEX, cusum.YEAR,
                                            cusum.CASES_SINCE_RESET, cusum.VALUE, cusum.LIMIT]
    assert "one false alarm per 5 years" in result.method and "1 of 2 units are charted" in result.method
    assert "1 with fewer than 20 cases are not charted" in result.method


def test_signal_at_the_last_case_leaves_the_chart_reset() -> None:
    p = np.full(40, 0.1)
    h = cusum.cusum_limit(p, arl0=5 * 40.0)  # one procedure year
    events = math.ceil(h / (math.log(2) - math.log1p(0.1)))  # consecutive events to reach h from 0
    y = np.r_[np.zeros(40 - events, dtype=int), np.ones(events, dtype=int)]
    frame = pd.DataFrame({"unit": "U", "y": y, "p": p, "procedure_year": 2024})
    result = cusum.unit_cusums(frame, unit="unit")
    row = result.units.iloc[0]
    assert row[cusum.direction_column(cusum.SIGNALS, cusum.DETERIORATION)] == 1
    assert row[cusum.direction_column(cusum.VALUE, cusum.DETERIORATION)] == 0.0
    assert row[cusum.direction_column(cusum.CASES_SINCE_RESET, cusum.DETERIORATION)] == 0
    signal = result.signals.query("direction == 'deterioration'").iloc[0]
    assert signal[cusum.CASE_INDEX] == 39 and signal[cusum.CASES_SINCE_RESET] == 40


def test_rare_outcome_at_a_small_unit_gets_no_deterioration_chart() -> None:
    # 30 cases in 3 years at risk 0.005: target ARL0 = 5 * 10 = 50 cases, but even a signal at every event
    # gives one false alarm per 200 cases; the improvement chart can still be set.
    frame = pd.DataFrame({"unit": "U", "y": 0, "p": 0.005, "procedure_year": np.repeat([2022, 2023, 2024], 10)})
    result = cusum.unit_cusums(frame, unit="unit")
    row = result.units.iloc[0]
    assert np.isnan(row[cusum.direction_column(cusum.LIMIT, cusum.DETERIORATION)])
    assert row[cusum.REASON] == ("deterioration: the target ARL0 of 50 cases does not exceed the shortest possible, "
                                 "200 (a signal at every event)")
    assert row[cusum.direction_column(cusum.LIMIT, cusum.IMPROVEMENT)] > 0
    assert result.signals.empty and list(result.signals.columns)[:3] == [cusum.UNIT, cusum.DIRECTION,
                                                                        cusum.CASE_INDEX]
    assert "0 of 1 units are charted for deterioration; in 1 the target is shorter" in result.method


def test_more_years_per_false_alarm_raise_every_limit() -> None:
    frame = _unit_frame()
    limits = [cusum.unit_cusums(frame, unit="site", y="leak", p="risk", years_per_false_alarm=years).units
              for years in (2.0, 5.0, 10.0)]
    for direction in (cusum.DETERIORATION, cusum.IMPROVEMENT):
        column = cusum.direction_column(cusum.LIMIT, direction)
        assert limits[0].loc[0, column] < limits[1].loc[0, column] < limits[2].loc[0, column]


def test_many_units_keep_their_order_and_labels() -> None:
    rng = np.random.default_rng(5)
    unit = rng.integers(0, 40, 12_000)
    frame = pd.DataFrame({"operator": unit, "p": expit(rng.normal(-1.1, 0.9, unit.size)),
                          "procedure_year": rng.integers(2015, 2025, unit.size)})
    frame["y"] = (rng.random(unit.size) < frame["p"]).astype(int)
    result = cusum.unit_cusums(frame, unit="operator")
    assert result.units[cusum.UNIT].tolist() == list(range(40))
    assert result.units[cusum.N_CASES].tolist() == np.bincount(unit).tolist()
    assert (result.units[cusum.REASON] == "").all()
    assert result.signals[cusum.UNIT].is_monotonic_increasing
    for label in (0, 17, 39):  # a unit's signals are its own chart's, in its own row order
        part = frame[frame["operator"] == label]
        h = result.units.loc[label, cusum.direction_column(cusum.LIMIT, cusum.DETERIORATION)]
        chart = qi.risk_adjusted_cusum(part["y"], part["p"], odds_ratio=2.0, h=h)
        rows = result.signals.query("unit == @label and direction == 'deterioration'")
        assert rows[cusum.CASE_INDEX].tolist() == chart.signals.tolist()
        assert rows[cusum.YEAR].tolist() == part["procedure_year"].to_numpy()[chart.signals].tolist()


def _frame(**changes) -> pd.DataFrame:
    frame = pd.DataFrame({"site": ["A", "A", "B"], "y": [0, 1, 0], "p": [0.2, 0.3, 0.4],
                          "procedure_year": [2020, 2021, 2021]})
    return frame.assign(**changes)


@pytest.mark.parametrize(("frame", "options", "message"), [
    (_frame().drop(columns="p"), {}, r"frame lacks required columns \['p'\]"),
    (_frame().iloc[:0], {}, "frame must have at least one case; got 0 rows"),
    (_frame(site=["A", None, "B"]), {}, r"site must name a unit on every row; 1 rows are missing \(rows 1\)"),
    (_frame(y=[0, 2, 1]), {}, r"y must be 0 or 1 \(bool accepted\); 1 values are not \(rows 1\)"),
    (_frame(y=["0", "1", "0"]), {}, "y must be numeric"),
    (_frame(p=[0.2, 1.0, 0.0]), {}, r"p must be expected risks strictly between 0 and 1 \(no NaN\); 2 values"),
    (_frame(p=[0.2, np.nan, 0.1]), {}, r"p must be expected risks .*rows 1"),
    (_frame(procedure_year=[2020.5, 2021, 2021]), {}, r"procedure_year must be a whole number of years .*rows 0"),
    (_frame(procedure_year=[2020, np.nan, 2021]), {}, r"procedure_year must be a whole number of years \(no NaN\)"),
    (_frame(), {"years_per_false_alarm": 0}, "years_per_false_alarm must be a positive finite number; got 0"),
    (_frame(), {"years_per_false_alarm": -1.0}, "years_per_false_alarm must be a positive finite number"),
    (_frame(), {"years_per_false_alarm": math.inf}, "years_per_false_alarm must be a positive finite number"),
    (_frame(), {"years_per_false_alarm": True}, "years_per_false_alarm must be a positive finite number"),
    (_frame(), {"odds_ratio": 0.5}, "odds_ratio must be a finite odds ratio > 1; got 0.5"),
    (_frame(), {"odds_ratio": 1.0}, "odds_ratio must be a finite odds ratio > 1"),
    (_frame(), {"improvement_odds_ratio": 2.0}, "improvement_odds_ratio must be an odds ratio strictly between 0 "
                                                "and 1; got 2.0"),
    (_frame(), {"min_cases": 0}, "min_cases must be an integer >= 1; got 0"),
    (_frame(), {"min_cases": 2.5}, "min_cases must be an integer >= 1"),
])
def test_unit_inputs_are_checked(frame: pd.DataFrame, options: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        cusum.unit_cusums(frame, unit="site", **options)


def test_frame_must_be_a_data_frame() -> None:
    with pytest.raises(ValueError, match="frame must be a pandas DataFrame; got dict"):
        cusum.unit_cusums({"site": ["A"]}, unit="site")  # type: ignore[arg-type]


def test_no_improvement_chart_when_its_odds_ratio_is_none() -> None:
    rng = np.random.default_rng(4)
    n = 400
    frame = pd.DataFrame({"unit": np.repeat(["A", "B"], n // 2), "y": (rng.random(n) < 0.3).astype(int),
                          "p": np.full(n, 0.3), "procedure_year": np.tile(np.repeat([2020, 2021], n // 4), 2)})
    both = cusum.unit_cusums(frame, unit="unit")
    worse = cusum.unit_cusums(frame, unit="unit", improvement_odds_ratio=None)
    h = cusum.direction_column(cusum.LIMIT, cusum.DETERIORATION)
    np.testing.assert_allclose(worse.units[h], both.units[h])
    assert worse.units[cusum.direction_column(cusum.LIMIT, cusum.IMPROVEMENT)].isna().all()
    assert set(worse.signals[cusum.DIRECTION]) <= {cusum.DETERIORATION}
    assert "(improvement)" not in worse.method and "(improvement)" in both.method
