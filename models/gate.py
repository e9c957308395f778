"""The gate: a new model version becomes champion only if it is no worse than the champion on the same data.

Rules (all recorded with their figures):
1. The new version's validated calibration slope (its own out-of-fold, cross-fitted-calibrated risks) lies
   within [0.8, 1.2].
2. With a champion: both are compared on the same rows, which the champion never saw (batches above
   the last one it was trained on), the new version by its validated (out-of-fold) predictions:
   - log loss no worse than the champion's, within a relative tolerance of 0.5%;
   - AUROC not lower beyond its CI: the upper bound of the paired cluster-bootstrap 95% CI of
     (new - champion) is at least 0.
   Without such rows (nothing new since the champion was trained) the champion is kept.
3. The temporal validation (the new version's recipe refitted on the years before the latest year, tested
   on it; :mod:`models.transport`): its latest-year calibration slope is not clearly outside [0.8, 1.2] (the
   95% CI overlaps the range); and when the champion's card records the temporal validation of the same year
   (its own recipe refitted on the same earlier years), the new recipe is not worse there: AUROC not lower by
   more than 0.01 and |log O/E| not larger by more than 0.05 (point estimates). This compares recipes on the
   latest year, not the stored champion itself (rule 2 does that, on rows it never saw). A year not evaluated
   or a figure not estimable leaves the rule out, and the reasons say so.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

import numpy as np
import pandas as pd
from sklearn.metrics import roc_auc_score

from models import metrics as m

SLOPE_BOUNDS = (0.8, 1.2)
LOG_LOSS_TOLERANCE = 0.005
MIN_COMPARISON_EVENTS = 20
LATEST_AUROC_TOLERANCE = 0.01
LATEST_LOG_OE_TOLERANCE = 0.05


@dataclass(frozen=True)
class GateDecision:
    """Whether the new version is promoted, and why."""

    promote: bool
    reasons: list[str]
    comparison: dict[str, object] = field(default_factory=dict)

    def to_dict(self) -> dict[str, object]:
        return asdict(self)


def paired_auroc_difference(y: np.ndarray, p_new: np.ndarray, p_old: np.ndarray, groups: np.ndarray, *,
                            n_boot: int, seed: int) -> tuple[float, float, float]:
    """AUROC(new) - AUROC(old) with a paired percentile cluster-bootstrap 95% CI.

    Each replicate draws procedures with replacement; a row's frequency weight is how often its
    procedure was drawn, and both AUROCs of the replicate use the same weights (paired).
    """
    estimate = m.auroc(y, p_new) - m.auroc(y, p_old)
    codes, uniques = pd.factorize(pd.Series(groups), sort=True)
    rng = np.random.default_rng(seed)
    diffs = []
    for _ in range(n_boot):
        weight = np.bincount(rng.integers(0, len(uniques), len(uniques)), minlength=len(uniques))[codes]
        events = weight[y == 1].sum()
        if events == 0 or events == weight.sum():
            continue
        diffs.append(roc_auc_score(y, p_new, sample_weight=weight) - roc_auc_score(y, p_old, sample_weight=weight))
    low, high = np.percentile(diffs, [2.5, 97.5]) if diffs else (np.nan, np.nan)
    return float(estimate), float(low), float(high)


def latest_year_check(new: dict | None, champion: dict | None) -> tuple[bool, str]:
    """Rule 3 on the temporal validation's latest year: whether the new version passes, and the reason."""
    low, high = SLOPE_BOUNDS
    if not new:
        return True, ("temporal validation of the latest year not evaluated (not run, too few events or no earlier "
                      "year): rule left out")
    slope = new.get("calibration_slope") or {}
    if any(slope.get(k) is None for k in ("estimate", "low", "high")):
        return True, f"latest year {new.get('unit')}: calibration slope not estimable; rule left out"
    clear = slope["high"] < low or slope["low"] > high
    words = (f"latest year {new['unit']}: calibration slope {slope['estimate']:.3f} (95% CI {slope['low']:.3f} to "
             f"{slope['high']:.3f}) {'clearly outside' if clear else 'consistent with'} [{low}, {high}]")
    if clear:
        return False, words
    if not champion or champion.get("unit") != new["unit"]:
        return True, words + "; the champion has no temporal validation of that year to compare with"
    figures = [(row.get(k) or {}).get("estimate") for row in (new, champion) for k in ("auroc", "oe_ratio")]
    if any(f is None or (f <= 0) for f in figures):
        return True, words + "; AUROC or O/E of the latest year not estimable for one of the two: not compared"
    auc_new, oe_raw_new, auc_old, oe_raw_old = figures
    oe_new, oe_old = abs(float(np.log(oe_raw_new))), abs(float(np.log(oe_raw_old)))
    ok = auc_new >= auc_old - LATEST_AUROC_TOLERANCE and oe_new <= oe_old + LATEST_LOG_OE_TOLERANCE
    return ok, (words + f"; AUROC {auc_new:.4f} vs champion {auc_old:.4f}, |log O/E| {oe_new:.4f} vs {oe_old:.4f}: "
                f"{'no worse' if ok else 'worse'} (tolerances {LATEST_AUROC_TOLERANCE}, {LATEST_LOG_OE_TOLERANCE})")


def decide(*, validated_slope: float, y: np.ndarray | None = None, p_new: np.ndarray | None = None,
           p_champion: np.ndarray | None = None, groups: np.ndarray | None = None, has_champion: bool,
           n_boot: int = 200, seed: int = 0, latest_new: dict | None = None,
           latest_champion: dict | None = None) -> GateDecision:
    """Apply the gate.

    Parameters
    ----------
    validated_slope
        The new version's validated calibration slope.
    y, p_new, p_champion, groups
        The comparison rows (unseen by the champion): labels, new validated predictions, champion
        predictions, procedure ids. ``None`` when there are no such rows.
    has_champion
        Whether a champion exists.
    latest_new, latest_champion
        The latest-year unit rows of the temporal validation of the new version and (from its card) of the
        champion (:func:`models.training.latest_year`); None when not evaluated or not recorded.
    """
    low, high = SLOPE_BOUNDS
    reasons: list[str] = []
    slope_ok = low <= validated_slope <= high
    reasons.append(f"validated calibration slope {validated_slope:.3f} "
                   f"{'within' if slope_ok else 'outside'} [{low}, {high}]")
    latest_ok, latest_words = latest_year_check(latest_new, latest_champion if has_champion else None)
    reasons.append(latest_words)
    slope_ok = slope_ok and latest_ok
    if not has_champion:
        reasons.append("no champion yet")
        return GateDecision(promote=slope_ok, reasons=reasons)
    if y is None or p_new is None or p_champion is None or groups is None or len(y) == 0 \
            or int(np.sum(y)) < MIN_COMPARISON_EVENTS or int(np.sum(y)) == len(y):
        reasons.append(f"too few rows unseen by the champion to compare on (needs at least "
                       f"{MIN_COMPARISON_EVENTS} events and some non-events): champion kept")
        return GateDecision(promote=False, reasons=reasons)
    ll_new, ll_old = m.log_loss(y, p_new), m.log_loss(y, p_champion)
    ll_ok = ll_new <= ll_old * (1 + LOG_LOSS_TOLERANCE)
    reasons.append(f"log loss {ll_new:.5f} vs champion {ll_old:.5f}: "
                   f"{'no worse' if ll_ok else 'worse'} (tolerance {LOG_LOSS_TOLERANCE:.1%})")
    diff, diff_low, diff_high = paired_auroc_difference(y, p_new, p_champion, groups, n_boot=n_boot, seed=seed)
    auc_ok = bool(diff_high >= 0)
    reasons.append(f"AUROC difference {diff:+.4f} (95% CI {diff_low:+.4f} to {diff_high:+.4f}): "
                   f"{'not lower beyond its CI' if auc_ok else 'lower beyond its CI'}")
    comparison = {"rows": int(len(y)), "log_loss_new": round(ll_new, 6), "log_loss_champion": round(ll_old, 6),
                  "auroc_difference": round(diff, 6), "auroc_difference_low": round(diff_low, 6),
                  "auroc_difference_high": round(diff_high, 6)}
    return GateDecision(promote=bool(slope_ok and ll_ok and auc_ok), reasons=reasons, comparison=comparison)
