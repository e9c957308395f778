"""Train, validate, gate and store the model of each outcome spec; return the figures for metrics.json.

For each spec: eligible rows and labels; for a rare outcome, Riley's minimum sample size first (if not
met: the crude rate with its exact interval and the reason, no model); grouped cross-validation of the
candidates, selection by validated log loss, cross-fitted calibration, refit; internal validation;
the gate against the champion; every version stored, the champion switched only through the gate.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, replace
from pathlib import Path

import numpy as np
import pandas as pd

from features import dictionary as d
from features.matrices import build_level_frame, build_procedure_frame
from models import DEFAULT_DEVELOPMENT_ROWS, DEFAULT_SEED, MIN_DEVELOPMENT_ROWS, progress, store
from models.assessment import assess
from models.suppression import SUPPRESSED, is_small, suppress_table
from models.calibration import METHOD as CALIBRATION_METHOD
from models.calibration import RecalibratedClassifier, fit_recalibration
from models.card import tripod_sections
from models.development import SELECTION, Development, assign_folds, develop, development_sample, out_of_fold
from models.fanout import Mapper, sequential
from models.explain import strongest_predictors
from models.gate import decide
from models.learners import CANDIDATES_COMMON, CANDIDATES_RARE, Candidate, fitted_parameters
from models.metrics import auroc, calibration_errors, calibration_intercept_slope
from models.outcomes import OUTCOMES, OUTCOMES_BY_NAME, OutcomeSpec
from models.prediction_intervals import METHOD as INTERVAL_METHOD
from models.transport import internal_external, withhold_units
from models.rare import assess_sample_size, crude_rate
from models.uncertainty import calibration_band
from records import schema as s
from records.batches import batch_ranges
from workspace.manifest import code_version

TRUSTED_OURS = ("models.calibration.RecalibratedClassifier", "models.rare.FlicLogisticRegression",
                "models.learners.ProductTerms")
MIN_EACH_CLASS = 20
DEVELOPMENT_SAMPLE = ("the registry holds more eligible rows than development_rows: the candidates were "
                      "cross-validated, chosen and recalibrated, the validation figures, the internal-external "
                      "validation and the prediction-interval replicates computed, on a random sample of whole "
                      "procedures of at most that many rows; the published model was fitted on every eligible row "
                      "(its validated figures are those of the same recipe fitted on fewer rows: if anything "
                      "pessimistic), and the replicates' spread is scaled by sqrt(sample procedures / all "
                      "procedures) (m-out-of-n bootstrap)")
PARAMETERS_COUNTED = ("predictor parameters of each regression candidate as fitted: the columns of its design after "
                      "one-hot encoding (categories - 1 each), B-spline bases, missing-indicators and interaction "
                      "terms; none for boosting and ensembles (no fixed design). Riley et al.'s minimum sample "
                      "size uses the count of each candidate; for a rare outcome a candidate whose minimum is "
                      "not met is not offered")
INTENDED_USE = ("Expected (case-mix adjusted) risk for quality-improvement comparison of sites and operators "
                "and for pre-procedural counselling in balloon kyphoplasty and vertebroplasty. A prediction "
                "from registry data, not a causal effect; not for deciding treatment of an individual on its own.")
LIMITATIONS = [
    "Validated within the registry (nested cross-validation, leave-one-site-out and by period); no validation "
    "in a registry other than this one yet.",
    "Observed leakage depends on the imaging used: the model conditions on it; a planned case is scored "
    "as if assessed by CT.",
    "Site and operator are deliberately not predictors: the expected risk is the case-mix expectation.",
    "Levels of one procedure are treated as conditionally independent given the features.",
]


@dataclass(frozen=True)
class TrainingConfig:
    """Seeds and effort of model development; recorded in metrics.json."""

    seed: int = DEFAULT_SEED
    n_folds: int = 5
    repeats: int = 1
    n_boot: int = 200
    anticipated_c: float = 0.75
    n_replicates: int = 20  # bootstrap refits the model carries for prediction intervals (0: none; else >= 10)
    internal_external: bool = True  # leave-one-site-out and temporal validation of the selected candidate
    site_folds: int | None = 8  # held-out sites dealt into this many groups, one refit each (None: one per site)
    last_years: int = 3  # years tested in turn by the temporal validation
    # above this many eligible rows, cross-validation, selection, recalibration, validation, internal-external
    # refits and replicates use a random sample of whole procedures of this many rows; the published model is fitted
    # on every row (None: always every row)
    development_rows: int | None = DEFAULT_DEVELOPMENT_ROWS

    def __post_init__(self) -> None:
        problems = []
        if self.n_folds < 3:
            problems.append(f"n_folds must be at least 3 (nested selection); got {self.n_folds}")
        if self.repeats < 1 or self.n_boot < 1:
            problems.append(f"repeats and n_boot must be at least 1; got {self.repeats} and {self.n_boot}")
        if self.n_replicates and self.n_replicates < 10:
            problems.append(f"n_replicates must be 0 or at least 10; got {self.n_replicates}")
        if self.site_folds is not None and self.site_folds < 2:
            problems.append(f"site_folds must be None or at least 2; got {self.site_folds}")
        if self.development_rows is not None and self.development_rows < MIN_DEVELOPMENT_ROWS:
            problems.append(f"development_rows must be None or at least {MIN_DEVELOPMENT_ROWS:,}; "
                            f"got {self.development_rows}")
        if problems:
            raise ValueError("; ".join(problems))


@dataclass(frozen=True)
class OutcomeResult:
    outcome: str
    fitted: bool
    metrics: dict[str, object]
    version: str | None = None
    champion: bool = False
    timings: dict[str, float] | None = None  # seconds per candidate's CV fits and of the final fit (not in metrics)


def model_frames(procedures: pd.DataFrame, levels: pd.DataFrame) -> dict[str, pd.DataFrame]:
    """The level and procedure model frames of a registry."""
    return {"level": build_level_frame(procedures, levels), "procedure": build_procedure_frame(procedures)}


def train_all(procedures: pd.DataFrame, levels: pd.DataFrame, *, config: TrainingConfig,
              workspace: Path | None, mapper: Mapper = sequential) -> dict[str, OutcomeResult]:
    """Every outcome of :data:`models.outcomes.OUTCOMES`, in order; stored when ``workspace`` is given."""
    frames = model_frames(procedures, levels)
    return {spec.name: train_outcome(spec, frames[spec.unit], config=config, workspace=workspace, mapper=mapper)
            for spec in OUTCOMES}


def train_outcome_from(outcome: str, frames_dir: Path, *, config: TrainingConfig, workspace: Path | None,
                       mapper: Mapper = sequential) -> OutcomeResult:
    """One outcome's fit from the model frames written to a folder (:func:`workspace.runs.scratch_frames`; a path,
    not a frame, is what crosses to another process)."""
    spec = OUTCOMES_BY_NAME[outcome]
    frame = pd.read_parquet(Path(frames_dir) / f"{spec.unit}.parquet")
    return train_outcome(spec, frame, config=config, workspace=workspace, mapper=mapper)


def train_outcome(spec: OutcomeSpec, frame: pd.DataFrame, *, config: TrainingConfig,
                  workspace: Path | None, mapper: Mapper = sequential) -> OutcomeResult:
    """Develop, validate, gate and store the model of one outcome; ``mapper`` runs its cross-validation fits."""
    with progress.stage(spec.name):
        return _train_outcome(spec, frame, config=config, workspace=workspace, mapper=mapper)


def _train_outcome(spec: OutcomeSpec, frame: pd.DataFrame, *, config: TrainingConfig,
                   workspace: Path | None, mapper: Mapper) -> OutcomeResult:
    eligible, y_all = spec.labels(frame)
    all_rows = frame.loc[eligible].reset_index(drop=True)
    base: dict[str, object] = {"outcome": spec.name, "unit": spec.unit, "definition": spec.definition,
                               "eligibility": spec.eligibility, "data": _data_summary(all_rows, y_all, len(frame)),
                               "config": asdict(config)}
    sample = development_sample(all_rows[s.PROCEDURE_ID].to_numpy(), max_rows=config.development_rows,
                                seed=config.seed)
    rows, y = all_rows, y_all  # the rows that develop the model: every eligible row, or a sample of procedures
    if not sample.all():
        rows, y = all_rows.loc[sample].reset_index(drop=True), y_all[sample]
        base["development_sample"] = {"rows": len(rows), "procedures": int(rows[s.PROCEDURE_ID].nunique()),
                                      "max_rows": config.development_rows, "method": DEVELOPMENT_SAMPLE}
    X, groups = rows[spec.feature_names], rows[s.PROCEDURE_ID].to_numpy()  # noqa: N806
    if spec.unit == "procedure":
        base["follow_up"] = follow_up(frame, eligible)
    candidates = CANDIDATES_RARE if spec.rare else CANDIDATES_COMMON
    if spec.rare:
        counts = _parameter_counts(candidates, spec, X)
        base["parameters"] = counts
        if isinstance(counts.get("error"), str):
            base.update(status="not_fitted", reason="no model fitted: " + counts["error"])
            return OutcomeResult(spec.name, fitted=False, metrics=base)
        counts = counts["by_candidate"]
        candidates, sample_size, reason = _supported(candidates, counts, y_all, config)  # the final fit's size
        base["sample_size"] = sample_size
        if not candidates:
            rate = crude_rate(int(y_all.sum()), len(y_all))
            base.update(status="not_fitted", reason="no model fitted: " + reason,
                        crude_rate=_suppress_rate(asdict(rate)))
            return OutcomeResult(spec.name, fitted=False, metrics=base)
    events, non_events = int(y.sum()), int(len(y) - y.sum())
    if min(events, non_events) < MIN_EACH_CLASS:
        base.update(status="not_fitted",
                    reason=f"no model fitted: too few events or non-events to fit and validate a model "
                           f"(needs at least {MIN_EACH_CLASS} of each with {config.n_folds}-fold cross-validation)")
        return OutcomeResult(spec.name, fitted=False, metrics=base)
    if not spec.rare:
        base["parameters"] = _parameter_counts(candidates, spec, X)
        if isinstance(base["parameters"].get("error"), str):
            base.update(status="not_fitted", reason="no model fitted: " + base["parameters"]["error"])
            return OutcomeResult(spec.name, fitted=False, metrics=base)
    refit_on = None if sample.all() else (all_rows[spec.feature_names], y_all, all_rows[s.PROCEDURE_ID].to_numpy())
    dev = develop(candidates, spec.features, X, y, groups, n_folds=config.n_folds, repeats=config.repeats,
                  seed=config.seed, mapper=mapper, n_replicates=config.n_replicates, refit_on=refit_on)
    apparent = dev.model.predict_proba(X)[:, 1]
    subgroups = {"site": rows[s.SITE_ID].to_numpy(), "etiology": rows[s.ETIOLOGY].to_numpy(),
                 "year": rows[s.PROCEDURE_YEAR].to_numpy()}
    if spec.unit == "level":
        subgroups["imaging"] = rows[d.IMAGING].to_numpy()
    subgroups["sex"] = rows[s.SEX].astype("object").fillna("missing").to_numpy()
    subgroups["age_band"] = age_bands(rows[s.AGE_YEARS])
    validation = assess(y, dev.validated, p_apparent=apparent, groups=groups, subgroups=subgroups,
                        n_boot=config.n_boot, seed=config.seed, mapper=mapper)
    transport = _internal_external(dev, candidates, spec, X, y, groups, rows, config=config, mapper=mapper)
    if transport is not None:
        transport = withhold_units(transport, {"sites": _withheld_groups(validation["subgroups"]["site"]),
                                               "temporal": _withheld_groups(validation["subgroups"]["year"])},
                                   reason="withheld: the subgroup table withholds this unit's counts (a small cell "
                                          "or its complement), which its figures here would give back")
    metrics = base | {
        "status": "fitted",
        "candidates": [{"name": c.name, "description": c.description, "cv_log_loss": round(c.cv_log_loss, 6),
                        "log_loss_by_repeat": list(c.log_loss_by_repeat)} | _candidate_figures(y, c.validated)
                       for c in dev.candidates],
        "selected": dev.selected, "selection": SELECTION, "nested_selection": dev.nested.to_dict(),
        "calibration": {"method": CALIBRATION_METHOD, "intercept": round(dev.calibration_intercept, 6),
                        "slope": round(dev.calibration_slope, 6)},
        "validation": validation,
        "predictors": strongest_predictors(dev.model, X, y, features=spec.features, seed=config.seed),
        "internal_external": transport,
        "prediction_interval": {"method": INTERVAL_METHOD, "replicates": config.n_replicates},
    }
    timings = {c.name: round(c.fit_seconds, 3) for c in dev.candidates} | {"final_fit": round(dev.final_fit_seconds, 3)}
    if workspace is None:
        return OutcomeResult(spec.name, fitted=True, metrics=metrics, timings=timings)
    stored = _gate_and_store(spec, rows, y, dev, metrics, config=config, workspace=workspace,
                             trained_on=(all_rows, y_all))
    return replace(stored, timings=timings)


def _gate_and_store(spec: OutcomeSpec, rows: pd.DataFrame, y: np.ndarray, dev: Development,
                    metrics: dict[str, object], *, config: TrainingConfig, workspace: Path,
                    trained_on: tuple[pd.DataFrame, np.ndarray]) -> OutcomeResult:
    """Gate the model against the champion on the development rows (``rows``, ``y``: those the validated risks are
    of) and store it; ``trained_on``: every row the published model was fitted on (its card's training range)."""
    # the gate judges the model it would publish: the selected candidate's own validated (out-of-fold,
    # cross-fitted-calibrated) risks; the nested risks, which mix the candidates chosen fold by fold, give the
    # published validation figures (the cost of choosing included)
    own = next(c for c in dev.candidates if c.name == dev.selected).validated
    validated_slope = next(c for c in metrics["candidates"] if c["name"] == dev.selected)["validated_calibration_slope"]
    validated_slope = float("nan") if validated_slope is None else validated_slope
    current = store.champion(workspace, spec.name)
    comparison: dict[str, object] = {}
    refused_champion = None
    if current is not None:
        try:
            champion = store.load_model(workspace, outcome=spec.name, extra_trusted=TRUSTED_OURS)
        except store.ModelIntegrityError as error:  # a champion whose files changed is never used, even to compare
            champion, refused_champion, current = None, str(error), None
    if current is not None:
        store.check_features(champion, rows.columns)
        unseen = _unseen_by(champion.card.training_data, rows[s.EXTRACT_BATCH])
        if unseen.any():
            comparison = {"y": y[unseen], "p_new": own[unseen], "groups": rows.loc[unseen, s.PROCEDURE_ID].to_numpy(),
                          "p_champion": champion.estimator.predict_proba(rows.loc[unseen, spec.feature_names])[:, 1]}
    latest_new = latest_year(metrics.get("internal_external"))
    latest_champion = champion.card.metrics.get("temporal_latest") if current is not None else None
    decision = decide(validated_slope=validated_slope, has_champion=current is not None, n_boot=config.n_boot,
                      seed=config.seed, latest_new=latest_new, latest_champion=latest_champion, **comparison)
    if refused_champion is not None:
        decision = replace(decision, reasons=[*decision.reasons, f"the champion was refused: {refused_champion}; "
                                                                 "gated as if there were none"])
    card = store.ModelCard(
        outcome=spec.name, version="", created_at="", code_version=code_version(), intended_use=INTENDED_USE,
        outcome_definition=f"{spec.definition}; eligible: {spec.eligibility}", unit_of_analysis=spec.unit,
        training_data=_training_range(*trained_on), features=spec.feature_names, learner=dev.selected,
        calibration=CALIBRATION_METHOD, selection=SELECTION,
        metrics=metrics["validation"]["validated"] | _band(y, own) | {"temporal_latest": latest_new},
        limitations=LIMITATIONS, tripod_ai=store.default_tripod_ai_items(), seed=config.seed,
        sections=tripod_sections(metrics, features=spec.features, limitations=LIMITATIONS, intended_use=INTENDED_USE))
    stored = store.save_model(workspace, outcome=spec.name, estimator=dev.model, card=card,
                              features=[{"name": f.name, "kind": f.kind} for f in spec.features],
                              extra_trusted=TRUSTED_OURS)
    if decision.promote:
        store.set_champion(workspace, outcome=spec.name, version=stored.version, decision=decision.to_dict())
    metrics = metrics | {"gate": decision.to_dict(), "model": {"version": stored.version,
                                                                "champion": decision.promote,
                                                                "previous_champion": current}}
    return OutcomeResult(spec.name, fitted=True, metrics=metrics, version=stored.version,
                         champion=decision.promote)


@dataclass(frozen=True)
class Refit:
    """Development's recipe for one candidate, without the selection: fit the learner on the rows given and
    recalibrate it on its own grouped out-of-fold risks (``folds`` folds by procedure). Picklable, so the
    refits of the internal-external validation can run on any mapper."""

    candidate: Candidate
    features: tuple
    seed: int
    folds: int = 3

    def __call__(self, X: pd.DataFrame, y: np.ndarray, groups: np.ndarray) -> RecalibratedClassifier:  # noqa: N803
        folds = assign_folds(groups, n_folds=self.folds, seed=self.seed)
        raw = out_of_fold(self.candidate, self.features, X, y, folds, seed=self.seed)
        intercept, slope = fit_recalibration(y, raw)
        return RecalibratedClassifier(self.candidate.build(self.features, self.seed).fit(X, y), intercept, slope)


def _internal_external(dev: Development, candidates: tuple[Candidate, ...], spec: OutcomeSpec, X: pd.DataFrame,  # noqa: N803
                       y: np.ndarray, groups: np.ndarray, rows: pd.DataFrame, *, config: TrainingConfig,
                       mapper: Mapper) -> dict[str, object] | None:
    """Leave-one-site-out and temporal validation of the selected candidate (:func:`models.transport.internal_external`)."""
    if not config.internal_external:
        return None
    chosen = next(c for c in candidates if c.name == dev.selected)
    recipe = Refit(chosen, tuple(spec.features), config.seed)
    indexed = X.reset_index(drop=True)
    result = internal_external(recipe, indexed, y, groups=groups, sites=rows[s.SITE_ID].astype(str).to_numpy(),
                               years=rows[s.PROCEDURE_YEAR].to_numpy(dtype="int64"), last_years=config.last_years,
                               site_folds=config.site_folds, mapper=mapper)
    refits, held = result["criteria"]["site_refits"], len(result["sites"]["held_out"])
    grouping = ("no site held out" if held == 0 else "one refit per held-out site" if refits == held
                else f"held-out sites dealt into {result['criteria']['site_refits']} groups, one refit per group, so "
                     "each site is predicted by a model that never saw it")
    return result | {"refit": f"{dev.selected} refitted on the training part and recalibrated on its own "
                              f"{recipe.folds}-fold out-of-fold risks (grouped by procedure); no reselection; "
                              f"{grouping}"}


def _withheld_groups(table: list[dict[str, object]]) -> set[str]:
    return {str(row["group"]) for row in table if row.get("suppressed")}


def latest_year(transport: dict[str, object] | None) -> dict[str, object] | None:
    """The temporal validation's latest evaluated year (its unit row), or None."""
    if not transport:
        return None
    evaluated = [row for row in transport["temporal"]["years"] if row["status"] == "evaluated"]
    return max(evaluated, key=lambda row: row["unit"]) if evaluated else None


def _candidate_figures(y: np.ndarray, p: np.ndarray) -> dict[str, float | None]:
    """A candidate's validated (out-of-fold, cross-fitted-calibrated; not nested) AUROC, slope and ICI."""
    _, slope = calibration_intercept_slope(y, p)
    ici = calibration_errors(y, p)["ici"]
    return {"validated_auroc": _r6(auroc(y, p)), "validated_calibration_slope": _r6(slope), "validated_ici": _r6(ici)}


def _r6(value: float) -> float | None:
    return round(float(value), 6) if np.isfinite(value) else None


def _parameter_counts(candidates: tuple[Candidate, ...], spec: OutcomeSpec, X: pd.DataFrame) -> dict[str, object]:  # noqa: N803
    """Each candidate's fitted parameter count (:func:`models.learners.fitted_parameters`), the largest, and how
    they are counted; ``error`` instead when a design cannot be built on the rows (too few or constant values)."""
    if len(X) == 0:
        return {"error": "no eligible rows"}
    try:
        counts = {c.name: fitted_parameters(c, spec.features, X) for c in candidates}
    except ValueError as problem:
        return {"error": f"the candidates' design cannot be built on these rows ({problem})"}
    return {"by_candidate": counts, "most": max(k for k in counts.values() if k is not None),
            "counted": PARAMETERS_COUNTED}


AGE_BANDS = ((0, 70, "under 70"), (70, 80, "70-79"), (80, 200, "80 and over"))


def age_bands(age: pd.Series) -> np.ndarray:
    """The age band of each row (:data:`AGE_BANDS`; "missing" where age is)."""
    values = pd.to_numeric(age, errors="coerce").astype("float64").to_numpy()
    out = np.full(len(values), "missing", dtype=object)
    for low, high, name in AGE_BANDS:
        out[(values >= low) & (values < high)] = name
    return out


def follow_up(frame: pd.DataFrame, eligible: np.ndarray) -> dict[str, object]:
    """Procedures whose 90-day follow-up is incomplete (infection missing): never in the infection denominator.

    The overall count (withheld when 1 to 10) and the sites with any; per site the report's completeness table
    gives the share with its own suppression (a second per-site table of the same counts, suppressed apart,
    could give back what the first withholds).
    """
    incomplete = ~np.asarray(eligible, dtype=bool)
    total = int(incomplete.sum())
    sites = int(pd.Series(frame[s.SITE_ID].astype("object").to_numpy()[incomplete]).nunique())
    words = "fewer than 11" if is_small(total) else f"{total:,}"
    return {"incomplete": SUPPRESSED if is_small(total) else total, "sites_with_incomplete": sites,
            "statement": f"{words} procedures with incomplete 90-day follow-up (infection_90d missing), at "
                         f"{sites} sites, are not in the infection denominator; per site in the report's "
                         "completeness table (90-day infection follow-up missing)"}


def _supported(candidates: tuple[Candidate, ...], counts: dict[str, int | None], y: np.ndarray,
               config: TrainingConfig) -> tuple[tuple[Candidate, ...], dict[str, object], str]:
    """The candidates of a rare outcome whose fitted parameter count the data support (Riley et al.), the
    assessment (JSON-ready: the most complex candidate offered, or the simplest when none is, with every
    candidate's count and minimum) and the reason.

    A candidate whose minimum sample size is not met is not offered; with none left no model is fitted. With 1 to
    10 events (or non-events) every figure that would give the count back (prevalence, R2, the minimum sizes and
    events) is withheld and the reason says only that.
    """
    assessments = {name: assess_sample_size(n_parameters=k, n=len(y), events=int(y.sum()),
                                            anticipated_c=config.anticipated_c)
                   for name, k in counts.items() if k is not None}
    kept = tuple(c for c in candidates if c.name not in assessments or assessments[c.name].met)
    offered = [c.name for c in kept if c.name in assessments]
    dropped = [name for name in assessments if name not in offered]
    if offered:
        shown = max(offered, key=lambda name: (counts[name], name))
    else:
        kept = ()
        shown = min(assessments, key=lambda name: (counts[name], name))
    small = is_small(int(y.sum())) or is_small(int(len(y) - y.sum()))
    summary = _json(asdict(assessments[shown])) | {
        "candidate": shown, "offered": offered, "not_offered": dropped,
        "by_candidate": {name: {"parameters": counts[name], "required": None if small else a.required.get("minimum"),
                                "met": a.met} for name, a in assessments.items()}}
    if small:
        summary.update(prevalence=None, r2_cs=None, required={}, events_required=None, available_events=SUPPRESSED,
                       events_per_parameter_required=None)
        reason = ("Riley et al. minimum sample size not met: fewer than 11 events or non-events among "
                  f"{len(y):,} (the minimum sizes and the anticipated R2 are withheld: they would give the count back)")
    else:
        reason = assessments[shown].reason() + f" for {'the simplest candidate, ' if not offered else ''}{shown}"
        if dropped and offered:
            reason += "; not offered (minimum not met): " + ", ".join(
                f"{name} ({counts[name]} parameters, needs {assessments[name].required.get('minimum', 0):,})"
                for name in dropped)
        elif not offered and len(assessments) > 1:
            most = max(assessments, key=lambda name: (counts[name], name))
            reason += (f"; {most} ({counts[most]} parameters) needs at least "
                       f"{assessments[most].required.get('minimum', 0):,}")
    summary["reason"] = reason
    return kept, summary, reason


def _band(y: np.ndarray, p_validated: np.ndarray) -> dict[str, object]:
    """The calibration band of the validated risks (where validation showed miscalibration: the planner's warnings,
    not its intervals); empty when it cannot be fitted."""
    try:
        return {"calibration_band": calibration_band(y, p_validated)}
    except ValueError:
        return {}


def _data_summary(rows: pd.DataFrame, y: np.ndarray, all_rows: int) -> dict[str, object]:
    events = int(y.sum())
    not_eligible = all_rows - len(y)
    summary: dict[str, object] = {"rows": len(y), "not_eligible": SUPPRESSED if is_small(not_eligible) else not_eligible,
                                  "procedures": int(rows[s.PROCEDURE_ID].nunique())}
    if is_small(events):
        summary.update(events="<11", prevalence=None)
    else:
        summary.update(events=events, prevalence=round(events / len(y), 6) if len(y) else None)
    return summary


def _unseen_by(training_data: dict, batches: pd.Series) -> np.ndarray:
    """Rows of batches a model was not trained on: outside its recorded batch ranges (batches come in any order), or,
    for a card from before they were recorded, above its highest batch."""
    ranges = training_data.get("extract_batches")
    values = batches.to_numpy(dtype="int64")
    if ranges is None:
        return values > int(training_data["extract_batch_max"])
    seen = np.zeros(len(values), dtype=bool)
    for low, high in ranges:
        seen |= (values >= int(low)) & (values <= int(high))
    return ~seen


def _training_range(rows: pd.DataFrame, y: np.ndarray) -> dict[str, object]:
    return {"procedure_year_min": int(rows[s.PROCEDURE_YEAR].min()), "procedure_year_max": int(rows[s.PROCEDURE_YEAR].max()),
            "extract_batch_min": int(rows[s.EXTRACT_BATCH].min()), "extract_batch_max": int(rows[s.EXTRACT_BATCH].max()),
            "extract_batches": [list(r) for r in batch_ranges(rows[s.EXTRACT_BATCH].unique())],
            "rows": len(y), "events": "<11" if is_small(int(y.sum())) else int(y.sum()),
            "procedures": int(rows[s.PROCEDURE_ID].nunique()),
            "sites": int(rows[s.SITE_ID].nunique())}


def _suppress_rate(rate: dict[str, object]) -> dict[str, object]:
    if is_small(int(rate["events"])):
        return {"events": "<11", "n": rate["n"], "rate": None, "low": None, "high": None, "method": rate["method"],
                "note": "rate and interval withheld: fewer than 11 events"}
    return _json(rate)


def _json(values: dict[str, object]) -> dict[str, object]:
    """Floats rounded to 6 decimals; a non-finite float (undefined) becomes None."""
    return {k: ((round(v, 6) if np.isfinite(v) else None) if isinstance(v, float) else v) for k, v in values.items()}
