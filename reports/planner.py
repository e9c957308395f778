"""The case planner: calibrated leakage risks of one planned procedure across cement volume, viscosity and approach.

A case is checked by the contract's identifier guard, coercion and validation, scored by the champion models as
:mod:`models.scoring` scores planned cases (as if assessed by CT), each risk with the interval of that prediction from
its model's parameter uncertainty (:mod:`models.prediction_intervals`) and notes where the model's validated
calibration band (:mod:`models.uncertainty`) warns about such risks."""

from __future__ import annotations

import html
import io
import itertools
import json
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import matplotlib
import numpy as np
import pandas as pd
from matplotlib.figure import Figure

from features.matrices import build_level_frame
from models import store
from models.outcomes import OUTCOMES, OUTCOMES_BY_NAME
from models.prediction_intervals import describe_interval, prediction_interval, replicate_count
from models.scoring import IMAGING_FOR_PLANNING, score_records
from models.training import TRUSTED_OURS
from models.uncertainty import band_at, outside_band
from records import schema as s
from records.errors import InputError
from records.columns import NestedColumnError
from records.guard import AGE_OVER_89, IdentifierError, check_identifiers
from records.readers import RawBatch
from records.validation import REASON, SOURCE_ROW, validate_batch
from reports.qi import check_level

CASE_LEVELS = "levels"
BAND_KEY = "calibration_band"
FILLED_BY_PLANNER = (s.PROCEDURE_ID, s.SITE_ID, s.OPERATOR_ID, s.EXTRACT_BATCH, s.PROCEDURE_YEAR)
OUTCOME_FIELDS = (s.INFECTION_90D, s.LENGTH_OF_STAY_DAYS, s.PAIN_VAS_POST, s.KYPHOTIC_ANGLE_POST, s.LEAKAGE,
                  s.LEAKAGE_SITES, s.LEAKAGE_SYMPTOMATIC, s.LEAKAGE_IMAGING)
PROCEDURE_FIELDS = tuple(n for n in s.PROCEDURES.names if n not in FILLED_BY_PLANNER + OUTCOME_FIELDS)
LEVEL_FIELDS = tuple(n for n in s.LEVELS.names if n not in FILLED_BY_PLANNER + OUTCOME_FIELDS)
LEVEL_OUTCOMES = tuple(o.name for o in OUTCOMES if o.unit == "level")
DEFAULT_VOLUMES_ML = tuple(float(v) for v in np.arange(1.0, 8.25, 0.5))
TYPICAL_VOLUME_ML = 3.0  # about the registry's median per level; a level's planned volume when the case gives one
RESULT_COLUMNS = (s.VERTEBRA, s.APPROACH, s.CEMENT_VISCOSITY, s.CEMENT_VOLUME_ML, "outcome", "risk", "low", "high")
INTERVAL_LEVEL = 0.95
NOT_CAUSAL = ("This is a prediction from registry data, not a causal effect: it says how often leakage was seen in "
              "similar past cases with this planned volume, viscosity and approach, not what changing them would do "
              "for this patient.")
_PLANNED_ID = "PLANNED"
_PROPAGATED = (s.rule_message(s.RULE_PROCEDURE_QUARANTINED, table=s.LEVELS.name),
               s.rule_message(s.RULE_LEVEL_QUARANTINED, table=s.PROCEDURES.name))
_REFUSED = (dict.fromkeys(FILLED_BY_PLANNER, "is filled by the planner: a planned case carries no ids, batch or year")
            | dict.fromkeys(OUTCOME_FIELDS, "is an outcome of the procedure, not known when planning: remove it"))
_SVG_RC = {"svg.fonttype": "none", "svg.hashsalt": "cementrisk-planner", "font.size": 9, "axes.titlesize": 9,
           "axes.grid": True, "grid.alpha": 0.3}
_COLOURS = dict(zip(s.VISCOSITIES, ("#1b9e77", "#d95f02", "#7570b3")))


class CaseError(InputError):
    """A planned case cannot be taken: the message names every field and the rule it breaks."""


@dataclass(frozen=True, eq=False)
class PlannedCase:
    """A checked planned case: the fields as given and the contract frames that are scored."""

    procedure_fields: dict[str, object]
    level_fields: tuple[dict[str, object], ...]
    procedures: pd.DataFrame  # one row, contract dtypes; ids, batch, year and planned values filled
    levels: pd.DataFrame

    @property
    def vertebrae(self) -> tuple[str, ...]:
        return tuple(str(v) for v in self.levels[s.VERTEBRA])

    @property
    def typical_volumes_ml(self) -> dict[str, float]:
        """Per vertebra, the planned cement volume, or :data:`TYPICAL_VOLUME_ML` when the case plans none."""
        return dict(zip(self.vertebrae, self.levels[s.CEMENT_VOLUME_ML].astype(float)))


@dataclass(frozen=True, eq=False)
class CasePlan:
    """Risks of every level, outcome, approach, viscosity and volume, with the models used and notes."""

    case: PlannedCase
    risks: pd.DataFrame  # RESULT_COLUMNS; low/high NaN where the model was stored without parameter replicates
    versions: dict[str, str]
    notes: tuple[str, ...]
    volumes_ml: tuple[float, ...]
    interval_level: float | None  # None when no outcome has an interval
    interval_methods: dict[str, str]  # per outcome with an interval: what it covers, in words


def load_case(path: Path) -> PlannedCase:
    """Read a planned case from a JSON file and check it (:func:`parse_case`); raises ``CaseError`` if the file
    cannot be read, is not JSON (repeats a key, holds NaN) or the case breaks a rule."""
    try:
        data = json.loads(Path(path).read_text(encoding="utf-8"), object_pairs_hook=_no_repeated_keys,
                          parse_constant=lambda token: _refuse([f"numbers must be finite, not {token}"], "case"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as error:
        raise CaseError(f"cannot read the case file {path} as JSON: {error}") from None
    except RecursionError:
        raise CaseError(f"cannot read the case file {path}: it nests objects or lists too deeply; a planned case "
                        "is an object of fields with one list of levels") from None
    try:
        return parse_case(data, source=Path(path).name)
    except RecursionError:
        raise CaseError(f"{Path(path).name}: it nests objects or lists too deeply; a planned case is an object of "
                        "fields with one list of levels") from None


def parse_case(data: object, *, source: str = "case") -> PlannedCase:
    """Check a planned case by the record contract; ``data`` is not modified.

    Fields: :data:`PROCEDURE_FIELDS` at the top level, :data:`LEVEL_FIELDS` in each entry of ``levels``; the
    contract's required ones are required but for the planned approach, viscosity and volume and ``n_levels`` (the
    number of levels if absent); null is absent. Ids, batch and year are filled by the planner; outcomes refused.
    Raises ``CaseError`` listing every problem: identifiers (by field and kind, never the value), unknown or
    misplaced fields, values breaking the contract (type, range, category, uniqueness)."""
    if not isinstance(data, Mapping):
        raise CaseError(f"{source}: a planned case must be a JSON object, not {type(data).__name__}")
    levels = data.get(CASE_LEVELS)
    if not isinstance(levels, list) or not levels or not all(isinstance(x, Mapping) for x in levels):
        raise CaseError(f"{source}: '{CASE_LEVELS}' must be a non-empty list of objects, one per treated vertebra")
    top = {k: v for k, v in data.items() if k != CASE_LEVELS}
    _screen_identifiers(top, levels, source)
    problems = [p for name in top if (p := _field_problem(name, level=False))]
    problems += [f"levels[{i}]: {p}" for i, x in enumerate(levels) for n in x if (p := _field_problem(n, level=True))]
    _refuse(problems, source)
    procedures, rows = _checked_records(top, levels, source)
    return PlannedCase(procedure_fields=dict(top), level_fields=tuple(dict(x) for x in levels),
                       procedures=procedures, levels=rows)


def plan_case(case: PlannedCase, *, workspace: Path, volumes_ml: Sequence[float] | None = None,
              level: float = INTERVAL_LEVEL) -> CasePlan:
    """Risks of each leakage outcome for every level over planned volumes, viscosities and approaches.

    Every grid point is scored by the champion models (:func:`models.scoring.score_records`; no imaging: as CT).
    ``low``/``high``: the ``level`` interval of that prediction from the model's parameter uncertainty
    (:func:`models.prediction_intervals.prediction_interval`: bootstrap refits stored with the model, a Wald interval
    on the logit scale centred at the risk, so the risk always lies inside); NaN with a note for a model stored
    without replicates. Where the card's validated calibration band says such risks were miscalibrated or never
    validated, a note says so. ``volumes_ml``: ml per level within the contract's range, default 1 to 8 by 0.5,
    plus the case's typical volumes. Raises ``CaseError`` (volume out of range), ``NoModelError`` (no champion
    published), ``ValueError`` (``level`` outside (0, 1)).
    """
    level = check_level(level)
    volumes = _volume_grid(case, volumes_ml)
    combos = pd.DataFrame(list(itertools.product(s.APPROACHES, s.VISCOSITIES, volumes)), columns=RESULT_COLUMNS[1:4])
    combos.insert(0, s.PROCEDURE_ID, [f"{_PLANNED_ID}{i:05d}" for i in range(len(combos))])
    records = _grid_records(case, combos)
    scores = score_records(*records, workspace=workspace)
    frame = build_level_frame(*records, imaging_when_missing=IMAGING_FOR_PLANNING)  # what score_records scored
    columns = {spec.risk_column: spec.name for spec in OUTCOMES if spec.name in LEVEL_OUTCOMES}
    risks = (scores.levels.merge(combos, on=s.PROCEDURE_ID)
             .melt(id_vars=[s.PROCEDURE_ID, *RESULT_COLUMNS[:4]], value_vars=list(columns), var_name="outcome",
                   value_name="risk")
             .replace({"outcome": columns}))
    order = {s.VERTEBRA: list(case.vertebrae), "outcome": list(LEVEL_OUTCOMES)}  # a stable sort keeps the grid order
    risks = risks.sort_values([s.VERTEBRA, "outcome"], key=lambda c: c.map(order[c.name].index), kind="stable",
                              ignore_index=True)
    versions = {name: str(scores.versions[name]) for name in LEVEL_OUTCOMES}
    notes = [f"risks are of a leak that {IMAGING_FOR_PLANNING.upper()} would see: the case is scored as if assessed "
             f"by {IMAGING_FOR_PLANNING.upper()}", NOT_CAUSAL]
    low, high, methods = np.full(len(risks), np.nan), np.full(len(risks), np.nan), {}
    for name, version in versions.items():
        rows = (risks["outcome"] == name).to_numpy()
        stored = store.load_model(workspace, outcome=name, version=version, extra_trusted=TRUSTED_OURS,
                                   replicates=True)
        note, interval = _interval_of(name, version, stored.estimator, frame, level=level)
        if interval is not None:
            keys = [s.PROCEDURE_ID, s.VERTEBRA]
            at = risks.loc[rows, keys].merge(interval, on=keys, how="left", validate="one_to_one")
            low[rows], high[rows] = at["low"].to_numpy(), at["high"].to_numpy()
            methods[name] = describe_interval(stored.estimator, level=level)
        metrics = stored.card.metrics
        band = metrics.get(BAND_KEY) if isinstance(metrics, Mapping) else None
        notes += [n for n in (note, _calibration_note(name, version, band, risks.loc[rows, "risk"].to_numpy())) if n]
    risks = risks.assign(low=low, high=high)[list(RESULT_COLUMNS)]
    return CasePlan(case=case, risks=risks, versions=versions, notes=tuple(notes + _method_notes(methods)),
                    volumes_ml=volumes, interval_level=level if methods else None, interval_methods=methods)


def plan_text(plan: CasePlan) -> str:
    """A compact terminal table: per level and outcome, the risk range and the risk at a typical volume."""
    lines = ["Planned case: models " + ", ".join(f"{o} {v}" for o, v in plan.versions.items()), ""]
    lines += [line for vertebra in plan.case.vertebrae for line in (*_level_lines(plan, vertebra), "")]
    return "\n".join(lines + [f"- {n}" for n in plan.notes]) + "\n"


def render_plan_html(plan: CasePlan) -> str:
    """A self-contained HTML page: inline CSS and SVG, no scripts or external resources; same plan, same bytes."""
    esc = html.escape
    models = [{"outcome": o, "model version": v} for o, v in plan.versions.items()]
    parts = [_HTML_HEAD, "<h1>Cement leakage risk of a planned case</h1>", f'<p class="caution">{esc(NOT_CAUSAL)}</p>',
             _table(models, ("outcome", "model version")),
             "<ul>" + "".join(f"<li>{esc(n)}</li>" for n in plan.notes if n != NOT_CAUSAL) + "</ul>",
             "<h2>The case</h2>", _table([plan.case.procedure_fields], PROCEDURE_FIELDS),
             _table(list(plan.case.level_fields), LEVEL_FIELDS)]
    for vertebra in plan.case.vertebrae:
        with matplotlib.rc_context(_SVG_RC):
            svg = _svg(_risk_figure(plan.risks[plan.risks[s.VERTEBRA] == vertebra]))
        parts += [f"<h2>Level {esc(vertebra.upper())}</h2>", f"<figure>{svg}<figcaption>Risk (%) by planned cement "
                  f"volume of this level, one line per viscosity; {esc(_shading(plan))}.</figcaption></figure>",
                  "<pre>" + esc("\n".join(_level_lines(plan, vertebra))) + "</pre>"]
    return "\n".join(parts + ["</body>", "</html>", ""])


def _shading(plan: CasePlan) -> str:
    if not plan.interval_methods:
        return "no interval is shaded: the models were stored without parameter replicates"
    return (f"shaded: the {plan.interval_level:.0%} interval of each prediction from its model's parameter uncertainty "
            "(bootstrap refits), not a range for the patient's outcome and not the calibration curve")


def _refuse(problems: list[str], source: str) -> None:
    if problems:
        raise CaseError(f"{source} refused:\n  - " + "\n  - ".join(problems))


def _no_repeated_keys(pairs: list[tuple[str, object]]) -> dict[str, object]:
    keys = [k for k, _ in pairs]
    _refuse([f"{k} is given more than once" for k in sorted({k for k in keys if keys.count(k) > 1})], "case")
    return dict(pairs)


def _screen_identifiers(top: Mapping[str, object], levels: list[Mapping[str, object]], source: str) -> None:
    """The contract's identifier guard on the fields as given; its messages never hold a value."""
    try:
        check_identifiers({s.PROCEDURES.name: pd.DataFrame([dict(top)], dtype=object),
                           s.LEVELS.name: pd.DataFrame([dict(x) for x in levels], dtype=object)})
    except NestedColumnError as error:
        where = {s.PROCEDURES.name: "", s.LEVELS.name: "levels[]: "}
        raise CaseError(f"{source}: " + "; ".join(
            f"{where.get(c.table, '')}{c.column} must be a single value (a number, text or true/false), not a "
            f"{c.kind}" for c in error.columns)) from None
    except IdentifierError as error:
        age_rule = f"; {s.AGE_YEARS} {s.PROCEDURES.column(s.AGE_YEARS).rule_text()} (90 = 90 or older)"
        found = [f.describe() + (age_rule if f.kind == AGE_OVER_89 else "") for f in error.findings]
        raise CaseError(f"{source} refused: it carries identifiers (HIPAA Safe Harbor) or ages over 89; remove "
                        "them:\n  - " + "\n  - ".join(found)) from None


def _field_problem(name: str, *, level: bool) -> str | None:
    allowed, other, where = ((LEVEL_FIELDS, PROCEDURE_FIELDS, "at the top level of the case") if level
                             else (PROCEDURE_FIELDS, LEVEL_FIELDS, "in each entry of levels"))
    if name in allowed:
        return None
    if name in _REFUSED:
        return f"{name} {_REFUSED[name]}"
    if name in other:
        return f"{name} is not a {'level' if level else 'procedure'} field: give it {where}"
    return (f"{name[:40]!r} is not a field of a planned case (record contract v{s.CONTRACT_VERSION}); "
            f"allowed: {', '.join(allowed)}")


def _checked_records(top: Mapping[str, object], levels: list[Mapping[str, object]],
                     source: str) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Contract frames of the case, checked by :func:`validate_batch`; rows it quarantines only because a row of the
    other table is quarantined add nothing to the message."""
    fill = {s.PROCEDURE_ID: _PLANNED_ID, s.SITE_ID: _PLANNED_ID, s.OPERATOR_ID: _PLANNED_ID, s.EXTRACT_BATCH: 1,
            s.PROCEDURE_YEAR: s.current_year(), s.N_LEVELS: len(levels), s.APPROACH: s.APPROACHES[0]}
    fill_level = {s.PROCEDURE_ID: _PLANNED_ID, s.CEMENT_VISCOSITY: s.VISCOSITIES[0],
                  s.CEMENT_VOLUME_ML: TYPICAL_VOLUME_ML}
    given = [{k: v for k, v in x.items() if v is not None} for x in (top, *levels)]
    result = validate_batch(RawBatch(
        procedures=pd.DataFrame([fill | given[0]], columns=list(s.PROCEDURES.names), dtype=object),
        levels=pd.DataFrame([fill_level | x for x in given[1:]], columns=list(s.LEVELS.names), dtype=object),
        source=source))
    quarantined = result.levels.quarantined
    reasons = [("", r) for r in result.procedures.quarantined[REASON]]
    reasons += [(f"levels[{int(i) - 1}]: ", r) for i, r in zip(quarantined[SOURCE_ROW], quarantined[REASON])]
    own = [(where, "; ".join(p for p in str(r).split("; ") if p not in _PROPAGATED)) for where, r in reasons]
    _refuse([where + reason for where, reason in own if reason], source)
    return result.procedures.accepted, result.levels.accepted


def _volume_grid(case: PlannedCase, volumes_ml: Sequence[float] | None) -> tuple[float, ...]:
    spec = s.LEVELS.column(s.CEMENT_VOLUME_ML)
    wanted = np.asarray(DEFAULT_VOLUMES_ML if volumes_ml is None else volumes_ml, dtype=np.float64).ravel()
    bad = wanted[~(np.isfinite(wanted) & (wanted >= spec.low) & (wanted <= spec.high))]
    if len(wanted) == 0 or len(bad):
        raise CaseError(f"planned volumes: {s.CEMENT_VOLUME_ML} {spec.rule_text()} ml, and at least one is needed; "
                        f"got {', '.join(f'{v:g}' for v in bad) or 'none'}")
    return tuple(float(v) for v in np.unique(np.round([*wanted, *case.typical_volumes_ml.values()], 6)))


def _grid_records(case: PlannedCase, combos: pd.DataFrame) -> tuple[pd.DataFrame, pd.DataFrame]:
    """One copy of the procedure per grid point (its approach set) and of its levels (viscosity and volume set)."""
    n = len(case.levels)
    procedures = case.procedures.loc[np.zeros(len(combos), dtype=int)].reset_index(drop=True)
    levels = case.levels.loc[np.tile(np.arange(n), len(combos))].reset_index(drop=True)
    for frame, columns, repeat in ((procedures, (s.PROCEDURE_ID, s.APPROACH), 1),
                                   (levels, (s.PROCEDURE_ID, s.CEMENT_VISCOSITY, s.CEMENT_VOLUME_ML), n)):
        for column in columns:
            frame[column] = pd.array(np.repeat(combos[column].to_numpy(), repeat), dtype=frame[column].dtype)
    return procedures, levels


def _interval_of(outcome: str, version: str, model: object, frame: pd.DataFrame, *,
                 level: float) -> tuple[str | None, pd.DataFrame | None]:
    """The prediction interval of every level of the grid (keyed by procedure and vertebra), or a note saying why
    there is none."""
    if replicate_count(model) < 2:
        return (f"{outcome}: no interval: model {version} was stored without parameter replicates (trained before "
                "prediction intervals were stored; the next training adds them)"), None
    features = OUTCOMES_BY_NAME[outcome].feature_names
    interval = prediction_interval(model, frame[features], level=level)
    return None, frame[[s.PROCEDURE_ID, s.VERTEBRA]].assign(low=interval["low"].to_numpy(),
                                                            high=interval["high"].to_numpy())


def _calibration_note(outcome: str, version: str, band: object, risk: np.ndarray) -> str | None:
    """What the card's validated calibration band says of these risks: beyond the validated range, or at risks where
    the validated predictions were miscalibrated; None when it says nothing (or the card has no band)."""
    if band is None:
        return None
    try:
        _, low, high = band_at(band, risk)
        beyond = int(outside_band(band, risk).sum())
        grid = np.asarray(band["predicted"], dtype=np.float64)
    except (ValueError, TypeError, AttributeError, KeyError) as error:
        return (f"{outcome}: the calibration band of {version} is unreadable ({error}); its validation checks are "
                "not shown")
    off = int(((risk < low) | (risk > high)).sum())
    notes = [text for count, text in (
        (beyond, f"{beyond} of {len(risk)} risks lie beyond the risks the model was validated at ({grid.min():.1%} to "
                 f"{grid.max():.1%}): its calibration there is unchecked"),
        (off, f"at {off} of {len(risk)} grid points the validation data's calibration band excludes the risk: in "
              "validation the model was miscalibrated at such risks")) if count]
    return f"{outcome}: " + "; ".join(notes) if notes else None


def _method_notes(methods: Mapping[str, str]) -> list[str]:
    """What the intervals cover: one note when every outcome's says the same, else one per outcome."""
    if not methods:
        return []
    if len(set(methods.values())) == 1:
        return [f"[low-high]: {next(iter(methods.values()))}"]
    return [f"{outcome} [low-high]: {text}" for outcome, text in methods.items()]


_HTML_HEAD = """<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>cementrisk: planned case</title>
<meta http-equiv="Content-Security-Policy" content="default-src 'none'; style-src 'unsafe-inline'">
<style>
body { font-family: "DejaVu Sans", Arial, sans-serif; margin: 2em auto; max-width: 62em; padding: 0 1em; }
h2 { border-bottom: 2px solid #333; } table { border-collapse: collapse; font-size: 0.85em; } th { background: #eee; }
th, td { border: 1px solid #999; padding: 0.2em 0.5em; text-align: left; } .wide, pre { overflow-x: auto; }
.caution { background: #fff6e0; border-left: 4px solid #c80; padding: 0.5em; } svg { max-width: 100%; height: auto; }
</style></head>
<body>"""


def _table(rows: list[Mapping[str, object]], names: tuple[str, ...]) -> str:
    """An HTML table of ``rows`` with columns ``names``; a missing value reads 'not given', booleans true/false."""
    def cell(v: object) -> str:
        return "not given" if v is None else html.escape(json.dumps(v) if isinstance(v, bool) else str(v))

    body = "".join("<tr>" + "".join(f"<td>{cell(r.get(n))}</td>" for n in names) + "</tr>" for r in rows)
    return '<div class="wide"><table><tr>' + "".join(f"<th>{n}</th>" for n in names) + f"</tr>{body}</table></div>"


def _level_lines(plan: CasePlan, vertebra: str) -> list[str]:
    """Per outcome of one level: the risk range over the grid, then approach x viscosity at the typical volume."""
    volume, width, cell = plan.case.typical_volumes_ml[vertebra], max(map(len, s.APPROACHES)) + 2, 24
    label = f" [{plan.interval_level:.0%} interval]" if plan.interval_level is not None else ""
    lines = [f"Level {vertebra.upper()}: risk at {volume:g} ml{label}; range over {plan.volumes_ml[0]:g}-"
             f"{plan.volumes_ml[-1]:g} ml, all viscosities and approaches"]
    for outcome, rows in plan.risks[plan.risks[s.VERTEBRA] == vertebra].groupby("outcome", sort=False):
        at = rows[np.isclose(rows[s.CEMENT_VOLUME_ML], volume)].set_index([s.APPROACH, s.CEMENT_VISCOSITY])
        lines += [f"  {outcome}: {rows['risk'].min():.1%} to {rows['risk'].max():.1%}",
                  "    " + " " * width + "".join(v.ljust(cell) for v in s.VISCOSITIES).rstrip()]
        lines += ["    " + a.ljust(width) + "".join(_with_interval(at.loc[(a, v)]).ljust(cell)
                                                      for v in s.VISCOSITIES).rstrip() for a in s.APPROACHES]
    return lines


def _with_interval(row: pd.Series) -> str:
    interval = "" if pd.isna(row["low"]) else f" [{100 * row['low']:.1f}-{100 * row['high']:.1f}]"
    return f"{row['risk']:.1%}{interval}"


def _risk_figure(rows: pd.DataFrame) -> Figure:
    """Risk against volume, a line per viscosity (band shaded), a panel per approach (rows) and outcome (columns)."""
    figure = Figure(figsize=(9.5, 8.0), layout="constrained")
    axes = figure.subplots(len(s.APPROACHES), len(LEVEL_OUTCOMES), sharex=True, sharey="col", squeeze=False)
    for (approach, outcome, viscosity), line in rows.groupby([s.APPROACH, "outcome", s.CEMENT_VISCOSITY], sort=False):
        i, j = s.APPROACHES.index(approach), LEVEL_OUTCOMES.index(outcome)
        ax, x, colour = axes[i][j], line[s.CEMENT_VOLUME_ML].to_numpy(dtype=float), _COLOURS[viscosity]
        ax.plot(x, 100 * line["risk"].to_numpy(), color=colour, label=f"{viscosity} viscosity")
        if line["low"].notna().all():
            ax.fill_between(x, 100 * line["low"].to_numpy(), 100 * line["high"].to_numpy(), color=colour,
                            alpha=0.15, linewidth=0)
        ax.set(title=f"{outcome}, {approach}", ylim=(0, None), ylabel="risk (%)" if j == 0 else "",
               xlabel="planned cement volume (ml)" if i == len(s.APPROACHES) - 1 else "")
    axes[0][0].legend(fontsize=8, frameon=False)
    return figure


def _svg(figure: Figure) -> str:
    """Inline SVG without prolog, metadata or xlink namespace; in ``rc_context(_SVG_RC)``: same figure, same bytes."""
    buffer = io.StringIO()
    figure.savefig(buffer, format="svg", metadata={"Date": None, "Creator": None})
    text = buffer.getvalue()
    return re.sub(r'<metadata>.*?</metadata>\s*|\s+xmlns:xlink="[^"]*"', "", text[text.index("<svg"):], flags=re.S)
