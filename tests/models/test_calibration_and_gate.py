"""Cross-fitted recalibration and the gate, on data with known truth."""

from __future__ import annotations

import numpy as np
import pytest
import statsmodels.api as sm
from scipy.special import expit, logit

from models.calibration import (
    RecalibratedClassifier,
    apply_recalibration,
    cross_fitted_recalibration,
    fit_recalibration,
)
from models.gate import decide, paired_auroc_difference
from models.metrics import calibration_intercept_slope


def _miscalibrated(n: int, *, a: float, b: float, seed: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    true_logit = rng.normal(-1.0, 1.2, n)
    y = (rng.random(n) < expit(true_logit)).astype(int)
    shown = expit((true_logit - a) / b)  # so that the truth is a + b * logit(shown)
    return y, shown, expit(true_logit)


def test_recalibration_matches_statsmodels_logistic_regression():
    y, p, _ = _miscalibrated(5_000, a=0.4, b=0.7, seed=1)
    a, b = fit_recalibration(y, p)
    reference = sm.GLM(y, sm.add_constant(logit(p)), family=sm.families.Binomial()).fit()
    assert a == pytest.approx(reference.params[0], abs=1e-5)
    assert b == pytest.approx(reference.params[1], abs=1e-5)


@pytest.mark.parametrize("seed", [1, 4, 7])
def test_the_two_recalibration_methods_agree_and_newton_is_the_fit_of_the_metrics(seed):
    y, p, _ = _miscalibrated(5_000, a=0.4, b=0.7, seed=seed)
    lbfgs, newton = fit_recalibration(y, p), fit_recalibration(y, p, method="newton")
    assert newton == pytest.approx(lbfgs, abs=1e-6)
    reference = sm.GLM(y, sm.add_constant(logit(p)), family=sm.families.Binomial()).fit(tol=1e-12)
    assert newton == pytest.approx(tuple(reference.params), abs=1e-9)
    assert newton[1] == calibration_intercept_slope(y, p)[1]  # one fit: the same bits


def test_recalibration_refuses_an_unknown_method_and_newton_checks_its_inputs():
    y, p, _ = _miscalibrated(100, a=0.0, b=1.0, seed=5)
    with pytest.raises(ValueError, match=r"method must be 'lbfgs' or 'newton'; got 'irls'"):
        fit_recalibration(y, p, method="irls")
    with pytest.raises(ValueError, match=r"p must be within \[0, 1\]"):
        fit_recalibration(y, p * 2, method="newton")
    with pytest.raises(ValueError, match=r"for fit_recalibration; got 0 events"):
        fit_recalibration(np.zeros(100), p, method="newton")


def test_recalibration_recovers_known_miscalibration():
    y, p, truth = _miscalibrated(200_000, a=0.5, b=0.6, seed=2)
    a, b = fit_recalibration(y, p)
    assert a == pytest.approx(0.5, abs=0.03) and b == pytest.approx(0.6, abs=0.02)
    fixed = apply_recalibration(p, a, b)
    assert np.mean(np.abs(fixed - truth)) < 0.01 < np.mean(np.abs(p - truth))


def test_cross_fitted_calibrator_never_sees_its_fold():
    y, p, _ = _miscalibrated(4_000, a=0.3, b=0.8, seed=3)
    folds = np.arange(len(y)) % 4
    out = cross_fitted_recalibration(y, p, folds)
    for fold in range(4):
        a, b = fit_recalibration(y[folds != fold], p[folds != fold])
        np.testing.assert_allclose(out[folds == fold], apply_recalibration(p[folds == fold], a, b))


def test_recalibrated_classifier_applies_its_calibrator_and_refuses_refit():
    class Fixed:
        def predict_proba(self, x):
            return np.column_stack([1 - x[:, 0], x[:, 0]])

    model = RecalibratedClassifier(estimator=Fixed(), intercept=0.2, slope=0.5)
    x = np.array([[0.1], [0.5], [0.9]])
    np.testing.assert_allclose(model.predict_proba(x)[:, 1], expit(0.2 + 0.5 * logit(x[:, 0])))
    with pytest.raises(NotImplementedError, match="out-of-fold calibrator"):
        model.fit(x, [0, 1, 0])


# --- the gate, both directions ------------------------------------------------------------------

def _comparison(n: int, seed: int, *, noise_new: float, noise_old: float):
    rng = np.random.default_rng(seed)
    true_logit = rng.normal(-1.0, 1.3, n)
    y = (rng.random(n) < expit(true_logit)).astype(int)
    p_new = expit(true_logit + rng.normal(0, noise_new, n))
    p_old = expit(true_logit + rng.normal(0, noise_old, n))
    return y, p_new, p_old, np.arange(n) // 2


def test_gate_promotes_a_better_model():
    y, p_new, p_old, groups = _comparison(6_000, 4, noise_new=0.1, noise_old=1.2)
    decision = decide(validated_slope=1.01, y=y, p_new=p_new, p_champion=p_old, groups=groups,
                      has_champion=True, n_boot=100, seed=1)
    assert decision.promote, decision.reasons
    assert decision.comparison["log_loss_new"] < decision.comparison["log_loss_champion"]


def test_gate_keeps_the_champion_when_the_new_model_is_worse():
    y, p_new, p_old, groups = _comparison(6_000, 5, noise_new=1.2, noise_old=0.1)
    decision = decide(validated_slope=1.0, y=y, p_new=p_new, p_champion=p_old, groups=groups,
                      has_champion=True, n_boot=100, seed=1)
    assert not decision.promote
    assert any("worse" in r for r in decision.reasons)
    assert any("lower beyond its CI" in r for r in decision.reasons)


def test_gate_refuses_a_miscalibrated_model_even_without_champion():
    assert decide(validated_slope=1.0, has_champion=False).promote
    refused = decide(validated_slope=0.7, has_champion=False)
    assert not refused.promote and "outside [0.8, 1.2]" in refused.reasons[0]


def test_gate_keeps_the_champion_without_unseen_data():
    decision = decide(validated_slope=1.0, has_champion=True)
    assert not decision.promote and "too few rows unseen by the champion" in decision.reasons[-1]


def test_paired_auroc_difference_is_zero_for_identical_models_and_deterministic():
    y, p_new, _, groups = _comparison(2_000, 6, noise_new=0.3, noise_old=0.3)
    est, low, high = paired_auroc_difference(y, p_new, p_new, groups, n_boot=50, seed=3)
    assert est == 0 and low == 0 and high == 0
    y, p_new, p_old, groups = _comparison(2_000, 6, noise_new=0.3, noise_old=0.8)
    first = paired_auroc_difference(y, p_new, p_old, groups, n_boot=50, seed=3)
    assert first == paired_auroc_difference(y, p_new, p_old, groups, n_boot=50, seed=3)
    assert first[1] < first[0] < first[2]


def _latest(unit: int, *, auroc: float, oe: float, slope: tuple[float, float, float] = (1.0, 0.8, 1.2)) -> dict:
    return {"unit": unit, "auroc": {"estimate": auroc}, "oe_ratio": {"estimate": oe},
            "calibration_slope": dict(zip(("estimate", "low", "high"), slope))}


def test_gate_uses_the_latest_year_of_the_temporal_validation():
    from models.gate import decide, latest_year_check

    assert latest_year_check(None, None)[0]
    assert latest_year_check(_latest(2025, auroc=0.75, oe=1.0), None)[0]
    # a slope whose CI lies wholly outside [0.8, 1.2] fails, one that overlaps it does not
    assert not latest_year_check(_latest(2025, auroc=0.75, oe=1.0, slope=(0.6, 0.5, 0.75)), None)[0]
    assert latest_year_check(_latest(2025, auroc=0.75, oe=1.0, slope=(0.7, 0.5, 0.9)), None)[0]
    champion = _latest(2025, auroc=0.76, oe=1.02)
    assert latest_year_check(_latest(2025, auroc=0.755, oe=0.99), champion)[0]
    assert not latest_year_check(_latest(2025, auroc=0.74, oe=1.0), champion)[0]  # AUROC 0.02 lower
    assert not latest_year_check(_latest(2025, auroc=0.76, oe=1.15), champion)[0]  # calibration-in-the-large worse
    # a champion validated on another year is no comparison
    ok, words = latest_year_check(_latest(2025, auroc=0.70, oe=1.3), _latest(2024, auroc=0.8, oe=1.0))
    assert ok and "no temporal validation of that year" in words
    refused = decide(validated_slope=1.0, has_champion=False,
                     latest_new=_latest(2025, auroc=0.75, oe=1.0, slope=(1.5, 1.3, 1.7)))
    assert not refused.promote and any("clearly outside" in r for r in refused.reasons)
