"""Validation metrics and the optimism bootstrap against R package rms (val.prob, lrm, validate) run on a fixture.

The R figures are committed (tests/models/fixtures/rms/, made by reference.R; its README says how to
make them again): R is not needed here.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from sklearn.linear_model import LogisticRegression

from models import metrics as m
from models.calibration import fit_recalibration
from models.optimism import OPTIMISM_COLUMNS, OPTIMISM_INDEXES, bootstrap_optimism, val_prob_summary

FIXTURES = Path(__file__).parent / "fixtures" / "rms"
EXACT = 1e-8       # figures that R and we compute by the same formulas (both fits converge far below this)
LOWESS = 1e-8      # lowess E figures: clowess and statsmodels differ only in the tricube cut-offs (~1e-9)
VALIDATE_ROWS = [name for name in OPTIMISM_INDEXES if name != "C"]  # C is ours, (Dxy + 1) / 2


@pytest.fixture(scope="module")
def reference() -> dict:
    return json.loads((FIXTURES / "reference.json").read_text())


@pytest.fixture(scope="module")
def data() -> pd.DataFrame:
    return pd.read_csv(FIXTURES / "data.csv")


@pytest.fixture(scope="module")
def design() -> pd.DataFrame:
    """lrm's design matrix as R wrote it (intercept, age, the rcs(volume_ml, 4) terms, female, region dummies)."""
    return pd.read_csv(FIXTURES / "design.csv.gz")


@pytest.fixture(scope="module")
def predictors(design) -> np.ndarray:
    """The design without its intercept column (the learner adds its own)."""
    return design.drop(columns="Intercept").to_numpy()


def fit_lrm(X: np.ndarray, y: np.ndarray) -> LogisticRegression:  # noqa: N803
    """Unpenalised maximum likelihood logistic regression with an intercept, as lrm (Newton, to 1e-12)."""
    return LogisticRegression(C=np.inf, solver="newton-cholesky", tol=1e-12, max_iter=100).fit(X, y)


def fit_lrm_as_callable(X: np.ndarray, y: np.ndarray):  # noqa: N803
    """The same fit returned as a function of X giving risks (the other model protocol of bootstrap_optimism)."""
    model = fit_lrm(X, y)
    return lambda new: model.predict_proba(new)[:, 1]


def assert_table_matches(ours: dict, theirs: dict, *, atol: float) -> None:
    for name in VALIDATE_ROWS:
        for column in OPTIMISM_COLUMNS:
            assert ours[name][column] == pytest.approx(theirs[name][column], abs=atol), (name, column)


# ----------------------------------------------------------------------------------------- val.prob
VAL_PROB_EXACT = ("R2", "D", "U", "U:p", "Q", "Brier", "Intercept", "Slope", "S:z", "S:p")


@pytest.mark.parametrize("name", VAL_PROB_EXACT)
def test_val_prob_summary_matches_val_prob(reference, data, name):
    assert val_prob_summary(data.y, data.p)[name] == pytest.approx(reference["val_prob"][name], abs=EXACT)


@pytest.mark.parametrize("name", ["D:Chi-sq", "U:Chi-sq"])
def test_val_prob_chi_squares_match_to_relative_precision(reference, data, name):
    assert val_prob_summary(data.y, data.p)[name] == pytest.approx(reference["val_prob"][name], rel=1e-12)


@pytest.mark.parametrize("name", ["Eavg", "E90", "Emax"])
def test_lowess_calibration_errors_match_val_prob(reference, data, name):
    # val.prob: lowess(p, y, iter = 0), then |p - smoothed| at every p; statsmodels' lowess with R's span and delta
    assert val_prob_summary(data.y, data.p)[name] == pytest.approx(reference["val_prob"][name], abs=LOWESS)


def test_c_and_dxy_are_exact_where_val_prob_bins_risks(reference, data):
    ours = val_prob_summary(data.y, data.p)
    assert ours["C (ROC)"] == pytest.approx(reference["somers2"]["C"], abs=1e-12)
    assert ours["Dxy"] == pytest.approx(reference["somers2"]["Dxy"], abs=1e-12)
    # val.prob's C is lrm.fit's, from risks put into 5,000 cells: the exact C of the binned risks, 1e-5 below ours
    binned = m.auroc(data.y, np.floor(data.p * 5000) / 5000)
    assert binned == pytest.approx(reference["val_prob"]["C (ROC)"], abs=1e-12)
    assert 2 * binned - 1 == pytest.approx(reference["val_prob"]["Dxy"], abs=1e-12)
    assert abs(ours["C (ROC)"] - reference["val_prob"]["C (ROC)"]) < 1e-4


def test_metrics_module_matches_val_prob(reference, data):
    assert m.auroc(data.y, data.p) == pytest.approx(reference["somers2"]["C"], abs=1e-12)
    assert m.brier_score(data.y, data.p) == pytest.approx(reference["val_prob"]["Brier"], abs=1e-12)
    in_the_large, slope = m.calibration_intercept_slope(data.y, data.p)
    assert slope == pytest.approx(reference["val_prob"]["Slope"], abs=EXACT)
    assert in_the_large == pytest.approx(reference["calibration_in_the_large"], abs=EXACT)  # glm(y ~ offset(logit p))


def test_recalibration_fit_matches_val_prob(reference, data):
    expected = (reference["val_prob"]["Intercept"], reference["val_prob"]["Slope"])
    intercept, slope = fit_recalibration(data.y.to_numpy(), data.p.to_numpy())  # lbfgs to 1e-10: ~1e-9 here
    assert (intercept, slope) == pytest.approx(expected, abs=1e-6)
    assert fit_recalibration(data.y.to_numpy(), data.p.to_numpy(), method="newton") == pytest.approx(expected, abs=EXACT)


def test_spline_ici_is_near_lowess_eavg(reference, data):
    # Different smoothers of the same curve (restricted cubic spline in logit(p), 4 knots, vs lowess of y on p):
    # ICI and Eavg estimate the same mean |p - E[y | p]|. On this fixture they differ by 0.0022; each has a
    # bootstrap SD of about 0.0055 and their difference one of 0.0026, so 0.005 (about one sampling SD of either,
    # two of the difference) is the tolerance. E90 is compared more loosely (0.01); Emax not at all: it is set by
    # the few most extreme risks, where lowess (local linear in p) and the spline (linear in logit(p) beyond the
    # outer knot) extrapolate differently (0.17 vs 0.13 here).
    spline = m.calibration_errors(data.y, data.p)
    assert spline["ici"] == pytest.approx(reference["val_prob"]["Eavg"], abs=0.005)
    assert spline["e90"] == pytest.approx(reference["val_prob"]["E90"], abs=0.01)


# ---------------------------------------------------------------------------------------- lrm fit
def test_logistic_fit_reproduces_lrm(reference, data, design, predictors):
    assert list(design.columns) == reference["lrm"]["design_columns"]
    model = fit_lrm(predictors, data.y.to_numpy())
    ours = np.r_[model.intercept_, model.coef_[0]]
    assert ours == pytest.approx(list(reference["lrm"]["coefficients"].values()), abs=1e-8)


def test_design_spline_terms_are_harrells_restricted_cubic_spline(reference, data, design):
    # Hmisc rcspline.eval(x, knots, inclx = TRUE, norm = 2), written out here from Harrell (2015), eq. 2.25
    t = np.asarray(reference["lrm"]["knots"])
    x = data.volume_ml.to_numpy()
    cube = lambda u: np.maximum(u, 0.0) ** 3  # noqa: E731
    for j, name in enumerate(["volume_ml'", "volume_ml''"]):
        term = (cube(x - t[j]) - cube(x - t[-2]) * (t[-1] - t[j]) / (t[-1] - t[-2])
                + cube(x - t[-1]) * (t[-2] - t[j]) / (t[-1] - t[-2])) / (t[-1] - t[0]) ** 2
        np.testing.assert_allclose(design[name], term, rtol=1e-12, atol=1e-12)


# ------------------------------------------------------------------------------------------ validate
def test_bootstrap_optimism_with_validates_resamples_matches_validate(reference, data, predictors):
    # boot_rows: the resamples validate(f, B = 40) drew after set.seed(101), replayed (1-based)
    rows = pd.read_csv(FIXTURES / "boot_rows.csv.gz").to_numpy().T - 1
    ours = bootstrap_optimism(fit_lrm, predictors, data.y, indices=list(rows))
    assert_table_matches(ours, reference["validate"]["rows"]["validate"], atol=EXACT)
    assert_table_matches(ours, reference["validate"]["rows"]["by_hand"], atol=EXACT)


def test_bootstrap_optimism_with_cluster_resamples_matches_validate(reference, data, predictors):
    # boot_clusters: validate(f, B = 40, cluster = procedure) after set.seed(202), replayed; a model as a callable
    long = pd.read_csv(FIXTURES / "boot_clusters.csv.gz")
    resamples = [group.row.to_numpy() - 1 for _, group in long.groupby("replicate", sort=True)]
    ours = bootstrap_optimism(fit_lrm_as_callable, predictors, data.y, indices=resamples)
    assert_table_matches(ours, reference["validate"]["clusters"]["validate"], atol=EXACT)


def test_c_row_is_half_of_dxy_plus_one_half(reference, data, predictors):
    rows = pd.read_csv(FIXTURES / "boot_rows.csv.gz").to_numpy().T[:5] - 1
    ours = bootstrap_optimism(fit_lrm, predictors, data.y, indices=list(rows))
    dxy, c = ours["Dxy"], ours["C"]
    assert c["index_orig"] == pytest.approx(m.auroc(data.y, fit_lrm(predictors, data.y).predict_proba(
        predictors)[:, 1]), abs=1e-12)
    assert c["optimism"] == pytest.approx(dxy["optimism"] / 2, abs=1e-15)
    assert c["index_corrected"] == pytest.approx((dxy["index_corrected"] + 1) / 2, abs=1e-15)


def test_bootstrap_optimism_with_its_own_resamples_is_within_monte_carlo_error_of_validate(reference, data, predictors):
    # validate(f, B = 400), seed 303, against 400 resamples of our own: optimism differs only by Monte Carlo error,
    # sd(training - test) / sqrt(400) for each (the sd from R's replay of the same 400 resamples), both runs.
    large = reference["validate"]["large"]
    ours = bootstrap_optimism(fit_lrm, predictors, data.y, n_boot=400, seed=2025)
    for name, sd in large["sd_optimism"].items():
        tolerance = 4 * sd * np.sqrt(2 / 400)
        for column in ("optimism", "index_corrected"):
            assert ours[name][column] == pytest.approx(large["validate"][name][column], abs=tolerance), (name, column)
        assert ours[name]["index_orig"] == pytest.approx(large["validate"][name]["index_orig"], abs=EXACT)
        assert ours[name]["n"] == 400


def test_cluster_resamples_are_whole_clusters_drawn_as_often_as_there_are_clusters(data, predictors):
    seen: list[np.ndarray] = []

    def fit_recording(X: np.ndarray, y: np.ndarray):  # noqa: N803
        seen.append(X[:, -1].astype(int))
        model = fit_lrm(X[:, :-1], y)
        return lambda new: model.predict_proba(new[:, :-1])[:, 1]

    X = np.column_stack([predictors, np.arange(len(data))])  # noqa: N806  last column: row position
    out = bootstrap_optimism(fit_recording, X, data.y, n_boot=5, seed=7, groups=data.procedure)
    assert out["Dxy"]["n"] == 5
    sizes = data.procedure.value_counts()
    for rows in seen[1:]:  # seen[0] is the fit on all rows
        drawn = data.procedure.iloc[rows].value_counts()
        times = drawn / sizes[drawn.index]
        assert np.all(times == np.round(times))  # every cluster drawn whole, some more than once
        assert times.sum() == len(sizes)


def test_same_seed_gives_the_same_table(data, predictors):
    first = bootstrap_optimism(fit_lrm, predictors, data.y, n_boot=3, seed=11, groups=data.procedure)
    again = bootstrap_optimism(fit_lrm, predictors, data.y, n_boot=3, seed=11, groups=data.procedure)
    assert first == again


# -------------------------------------------------------------------------------------------- errors
def test_bootstrap_optimism_needs_either_indices_or_n_boot_and_seed(data, predictors):
    with pytest.raises(ValueError, match="give either indices, or n_boot and seed"):
        bootstrap_optimism(fit_lrm, predictors, data.y, n_boot=3, seed=1, indices=[np.arange(10)])
    with pytest.raises(ValueError, match="give n_boot .* and seed .*, or indices; got n_boot=None"):
        bootstrap_optimism(fit_lrm, predictors, data.y)


def test_bootstrap_optimism_rejects_bad_outcomes_indices_and_risks(data, predictors):
    X = predictors  # noqa: N806
    with pytest.raises(ValueError, match=r"y must be 0 or 1 \(bool accepted\); 1 values are not \(positions 0\)"):
        bootstrap_optimism(fit_lrm, X, np.r_[2, data.y.to_numpy()[1:]], n_boot=1, seed=1)
    with pytest.raises(ValueError, match="at least one event"):
        bootstrap_optimism(fit_lrm, X, np.zeros(len(X), dtype=int), n_boot=1, seed=1)
    with pytest.raises(ValueError, match=r"row positions in \[0, 3000\); resample 1 is not"):
        bootstrap_optimism(fit_lrm, X, data.y, indices=[np.arange(10), np.array([0, 3000])])
    with pytest.raises(ValueError, match=r"one finite risk in \[0, 1\] per row"):
        bootstrap_optimism(lambda X, y: (lambda new: np.full(len(new), 1.5)), X, data.y, n_boot=1, seed=1)  # noqa: N803


def test_val_prob_summary_checks_its_inputs():
    with pytest.raises(ValueError, match=r"p must be within \[0, 1\]"):
        val_prob_summary([0, 1, 1], [0.2, 0.5, 1.2])
    with pytest.raises(ValueError, match="at least one event"):
        val_prob_summary([0, 0, 0], [0.2, 0.5, 0.3])
    with pytest.raises(ValueError, match="p must take at least two distinct values for val_prob_summary; all are 0.5"):
        val_prob_summary([0, 1, 1], [0.5, 0.5, 0.5])
