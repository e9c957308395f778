"""Model development: nested grouped cross-validation of the candidates, selection by validated log loss,
cross-fitted calibration, and the final refit on all eligible rows.

Rows are levels or procedures; folds are assigned per procedure, so the levels of one procedure never
sit on both sides of a split. Every candidate is cross-validated on the same folds (its out-of-fold risks,
recalibrated fold by fold by calibrators that never saw the fold: :func:`models.calibration.cross_fitted_recalibration`).

Selection is nested (Varma & Simon 2006; Steyerberg, Clinical Prediction Models, 2nd ed., ch. 17): for each
outer fold k the candidate is chosen by an inner cross-validation on the other folds only (fits that held
out fold k and one inner fold j, so the choice never saw fold k), and fold k's validated risks are those of
the candidate chosen for it. The validated metrics therefore include the cost of choosing. The published
model is the candidate with the lowest cross-validated log loss over all folds, refitted on every row.

Ensembles (:attr:`models.learners.Candidate.members`) average their members' risks: in cross-validation they
cost no fit of their own.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from itertools import combinations

import time

import numpy as np
import pandas as pd
from sklearn.base import clone

from features.dictionary import FeatureSpec
from models.calibration import RecalibratedClassifier, cross_fitted_recalibration, fit_recalibration
from models import progress
from models.fanout import Mapper, sequential
from models.learners import Candidate
from models.metrics import log_loss
from models.prediction_intervals import parameter_replicates

SELECTION = ("nested: for each outer fold the candidate with the lowest inner cross-validated log loss (the "
             "other folds only) gives that fold's validated risks; the published model is the candidate with "
             "the lowest cross-validated log loss of its calibrated out-of-fold risks over all folds (folds by "
             "procedure), refitted on all rows")


@dataclass(frozen=True)
class CandidateResult:
    """One candidate's cross-validation: validated predictions (repeat 1) and log loss per repeat."""

    name: str
    description: str
    validated: np.ndarray
    log_loss_by_repeat: tuple[float, ...]
    fit_seconds: float = 0.0  # its cross-validation fits (an ensemble: its members'), wall time where they ran

    @property
    def cv_log_loss(self) -> float:
        return float(np.mean(self.log_loss_by_repeat))


@dataclass(frozen=True)
class NestedSelection:
    """What nesting the selection changes: the candidate chosen in each outer fold, and the validated log loss
    of the nested risks beside that of the published candidate's out-of-fold risks (not nested); ``agreement``
    is the share of folds that chose the published candidate."""

    chosen_by_fold: tuple[str, ...]
    log_loss_nested: float
    log_loss_not_nested: float

    selected: str = ""

    def to_dict(self) -> dict[str, object]:
        return {"chosen_by_fold": list(self.chosen_by_fold),
                "agreement": round(sum(c == self.selected for c in self.chosen_by_fold) / len(self.chosen_by_fold), 6),
                "log_loss_nested": round(self.log_loss_nested, 6),
                "log_loss_not_nested": round(self.log_loss_not_nested, 6),
                "cost_of_choosing": round(self.log_loss_nested - self.log_loss_not_nested, 6)}


@dataclass(frozen=True)
class Development:
    """The selected candidate, refitted and recalibrated, and what the selection saw."""

    selected: str
    model: RecalibratedClassifier
    validated: np.ndarray          # nested validated predictions (repeat 1)
    folds: np.ndarray              # fold of each row (repeat 1)
    candidates: tuple[CandidateResult, ...]
    calibration_intercept: float
    calibration_slope: float
    nested: NestedSelection
    raw_out_of_fold: np.ndarray    # the selected candidate's out-of-fold risks before recalibration (repeat 1)
    final_fit_seconds: float = 0.0


def assign_folds(groups: np.ndarray, *, n_folds: int, seed: int) -> np.ndarray:
    """A fold per row, the same for all rows of a group; groups shuffled by ``seed``, balanced in count."""
    codes, uniques = pd.factorize(pd.Series(groups), sort=True)
    rng = np.random.default_rng(seed)
    group_fold = rng.permutation(len(uniques)) % n_folds
    return group_fold[codes]


def development_sample(groups: np.ndarray, *, max_rows: int | None, seed: int) -> np.ndarray:
    """Which rows develop the models: all of them up to ``max_rows``; above it, whole procedures (``groups``) in a
    random order drawn with ``seed``, as many as fit in ``max_rows`` rows. A boolean mask in row order."""
    if max_rows is None or len(groups) <= max_rows:
        return np.ones(len(groups), dtype=bool)
    codes, uniques = pd.factorize(pd.Series(groups), sort=True)
    sizes = np.bincount(codes, minlength=len(uniques))
    order = np.random.default_rng([seed, 20261204]).permutation(len(uniques))
    taken = np.zeros(len(uniques), dtype=bool)
    taken[order[np.cumsum(sizes[order]) <= max_rows]] = True
    return taken[codes]


def out_of_fold(candidate: Candidate, features: Sequence[FeatureSpec], X: pd.DataFrame, y: np.ndarray,  # noqa: N803
                folds: np.ndarray, *, seed: int, mapper: Mapper = sequential) -> np.ndarray:
    """Each row's predicted risk from the candidate fitted on the other folds."""
    p = np.empty(len(y), dtype=float)
    fold_ids = [int(f) for f in np.unique(folds)]
    fitted = mapper(_fold_fit, [(0, 0, (f,)) for f in fold_ids], shared=((candidate,), features, X, y, (folds,), seed))
    for fold, p_fold in zip(fold_ids, fitted):
        p[folds == fold] = p_fold
    return p


def _fold_fit(job: tuple[int, int, tuple[int, ...]], candidates: Sequence[Candidate], features: Sequence[FeatureSpec],
              X: pd.DataFrame, y: np.ndarray, fold_sets: Sequence[np.ndarray], seed: int) -> np.ndarray:  # noqa: N803
    """One cross-validation fit: candidate ``c`` on repeat ``r`` without the folds ``held``; its risks on them."""
    c, r, held = job
    test = np.isin(fold_sets[r], held)
    model = clone(candidates[c].build(features, seed)).fit(X.loc[~test], y[~test])
    return model.predict_proba(X.loc[test])[:, 1]


def _timed_fold_fit(job: tuple[int, int, tuple[int, ...]], *shared: object) -> tuple[np.ndarray, float]:
    start = time.perf_counter()
    p = _fold_fit(job, *shared)
    return p, time.perf_counter() - start


def develop(candidates: Sequence[Candidate], features: Sequence[FeatureSpec], X: pd.DataFrame,  # noqa: N803
            y: np.ndarray, groups: np.ndarray, *, n_folds: int, repeats: int, seed: int,
            mapper: Mapper = sequential, n_replicates: int = 0,
            refit_on: tuple[pd.DataFrame, np.ndarray, np.ndarray] | None = None) -> Development:
    """Cross-validate every candidate with nested selection, refit the one with the lowest log loss on all rows.

    Every fit (learner, repeat, held-out folds) is one piece of work for ``mapper`` (:mod:`models.fanout`):
    per learner ``n_folds * repeats`` outer fits and ``n_folds * (n_folds - 1) / 2`` inner fits (repeat 1).
    With ``n_replicates`` (0, or at least 10) the published model carries that many cluster-bootstrap refits of
    itself and its recalibration (:func:`models.prediction_intervals.parameter_replicates`): the parameter
    uncertainty behind a planned case's interval.

    ``refit_on``: ``(X, y, groups)`` of every eligible row when ``X, y, groups`` are a sample of whole procedures
    of them (:func:`development_sample`, a large registry). The candidates are cross-validated, chosen and
    recalibrated on the sample, the published model is fitted on every row, and its replicates are refits on
    bootstrap resamples of the sample, their spread scaled by ``sqrt(m / n)`` (``m`` procedures in the sample,
    ``n`` in all; the m-out-of-n bootstrap of a root-n estimator: Bickel, Goetze & van Zwet 1997).

    Raises
    ------
    ValueError
        A class absent, fewer than 3 folds, or an ensemble whose members are not candidates.
    """
    if len(np.unique(y)) < 2:
        raise ValueError("the outcome has a single class among eligible rows; no model can be fitted")
    if n_replicates and n_replicates < 10:
        raise ValueError(f"n_replicates must be 0 (no prediction intervals) or at least 10; got {n_replicates}")
    if n_folds < 3:
        raise ValueError(f"n_folds must be at least 3 for nested selection (an inner cross-validation needs 2 "
                         f"folds besides the held-out one); got {n_folds}")
    candidates = tuple(candidates)
    names = [c.name for c in candidates]
    for c in candidates:
        if any(m not in names or candidates[names.index(m)].ensemble for m in c.members):
            raise ValueError(f"ensemble {c.name!r} averages {list(c.members)}; each must be a candidate that is "
                             f"not itself an ensemble (candidates: {names})")
    learners = [i for i, c in enumerate(candidates) if not c.ensemble]
    fold_sets = [assign_folds(groups, n_folds=n_folds, seed=seed + r) for r in range(repeats)]
    fold_ids = [int(f) for f in np.unique(fold_sets[0])]
    outer = [(c, r, (int(f),)) for c in learners for r in range(repeats) for f in np.unique(fold_sets[r])]
    inner = [(c, 0, pair) for c in learners for pair in combinations(fold_ids, 2)]
    jobs = outer + inner
    timed = progress.mapped(mapper, _timed_fold_fit, jobs, (candidates, features, X, y, fold_sets, seed),
                            label=f"cross-validation fits ({len(learners)} learners x {len(jobs) // len(learners)})",
                            local=mapper is sequential)
    fitted = {job: p for job, (p, _) in zip(jobs, timed)}
    seconds = {c: 0.0 for c in range(len(candidates))}
    for (c, _, _), (_, spent) in zip(jobs, timed):
        seconds[c] += spent

    def fit_seconds(c: int) -> float:
        return sum(fit_seconds(names.index(m)) for m in candidates[c].members) if candidates[c].ensemble \
            else seconds[c]

    def raw(c: int, r: int) -> np.ndarray:
        """Out-of-fold risks of candidate ``c`` (an ensemble: the mean of its members')."""
        if candidates[c].ensemble:
            return np.mean([raw(names.index(m), r) for m in candidates[c].members], axis=0)
        out = np.empty(len(y), dtype=float)
        for f in np.unique(fold_sets[r]):
            out[fold_sets[r] == f] = fitted[(c, r, (int(f),))]
        return out

    raws = {(c, r): raw(c, r) for c in range(len(candidates)) for r in range(repeats)}
    validated = {key: cross_fitted_recalibration(y, p, fold_sets[key[1]]) for key, p in raws.items()}
    summaries = tuple(CandidateResult(
        name=c.name, description=c.description, validated=validated[(i, 0)],
        log_loss_by_repeat=tuple(round(log_loss(y, validated[(i, r)]), 8) for r in range(repeats)),
        fit_seconds=fit_seconds(i)) for i, c in enumerate(candidates))
    best = min(range(len(summaries)), key=lambda i: (summaries[i].cv_log_loss, i))
    nested_p, chosen = _nested(candidates, names, fitted, y, fold_sets[0], fold_ids,
                               {i: validated[(i, 0)] for i in range(len(candidates))})
    intercept, slope = fit_recalibration(y, raws[(best, 0)])
    start = time.perf_counter()
    X_all, y_all, groups_all = (X, y, groups) if refit_on is None else refit_on  # noqa: N806
    with progress.task(f"final fit of {names[best]} on {len(y_all):,} rows", 1) as work:
        final = candidates[best].build(features, seed).fit(X_all, y_all)
        work.advance()
    final_seconds = time.perf_counter() - start
    replicates, scale = None, 1.0
    if n_replicates:
        replicates = parameter_replicates(candidates[best].build(features, seed), X, y, groups,
                                          recalibrate=raws[(best, 0)], n_replicates=n_replicates, seed=seed,
                                          mapper=mapper)
        if refit_on is not None:
            scale = float(np.sqrt(pd.unique(pd.Series(groups)).size / pd.unique(pd.Series(groups_all)).size))
    model = RecalibratedClassifier(estimator=final, intercept=intercept, slope=slope, replicates=replicates,
                                   replicate_scale=scale)
    nested = NestedSelection(chosen_by_fold=tuple(names[c] for c in chosen), log_loss_nested=log_loss(y, nested_p),
                             log_loss_not_nested=log_loss(y, summaries[best].validated), selected=names[best])
    return Development(selected=names[best], model=model, validated=nested_p, folds=fold_sets[0],
                       candidates=summaries, calibration_intercept=intercept, calibration_slope=slope,
                       nested=nested, raw_out_of_fold=raws[(best, 0)], final_fit_seconds=final_seconds)


def _nested(candidates: tuple[Candidate, ...], names: list[str], fitted: dict, y: np.ndarray, folds: np.ndarray,
            fold_ids: list[int], validated: dict[int, np.ndarray]) -> tuple[np.ndarray, list[int]]:
    """The nested validated risks and the candidate chosen for each outer fold (in ``fold_ids`` order).

    For outer fold k, candidate c's inner risks on a row of fold j != k come from the fit that held out j and
    k; they are recalibrated fold by fold within the other folds, and the candidate with the lowest inner log
    loss (ties: the earlier candidate) gives fold k its validated risks.
    """
    out = np.empty(len(y), dtype=float)
    chosen = []
    for k in fold_ids:
        others = folds != k
        inner_folds = folds[others]

        def inner_raw(c: int) -> np.ndarray:
            if candidates[c].ensemble:
                return np.mean([inner_raw(names.index(m)) for m in candidates[c].members], axis=0)
            p = np.empty(int(others.sum()), dtype=float)
            for j in fold_ids:
                if j == k:
                    continue
                pair = (min(j, k), max(j, k))
                held = folds[np.isin(folds, pair)]  # the rows the pair fit predicted, in row order
                p[inner_folds == j] = fitted[(c, 0, pair)][held == j]
            return p

        losses = []
        for c in range(len(candidates)):
            inner_validated = cross_fitted_recalibration(y[others], inner_raw(c), inner_folds)
            losses.append(log_loss(y[others], inner_validated))
        pick = min(range(len(candidates)), key=lambda c: (losses[c], c))
        chosen.append(pick)
        out[~others] = validated[pick][~others]
    return out, chosen
