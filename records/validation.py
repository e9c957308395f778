"""Validation that never loses a row: every row is accepted or quarantined with a reason a person can read.

A procedure with a bad level is quarantined whole, with all its level rows, so that the accepted tables
stay consistent. Rows of batches already registered (at or below the watermark) are set aside as
``skipped`` before validation and are counted apart; they are neither in nor lost.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass

import pandas as pd
import pandera.pandas as pa

from records.coerce import FAILURE_COLUMNS, CoercedTable, coerce_table
from records.readers import RawBatch
from records.schema import (
    EXTRACT_BATCH,
    LEAKAGE_SITES,
    LEAKAGE_SYMPTOMATIC,
    LEVELS,
    PROCEDURE_ID,
    PROCEDURES,
    RULE_ALREADY_REGISTERED,
    RULE_CATEGORY,
    RULE_FORMAT,
    RULE_LEVEL_QUARANTINED,
    RULE_PROCEDURE_QUARANTINED,
    RULE_RANGE,
    RULE_REQUIRED,
    RULE_SITES_IFF_LEAKAGE,
    RULE_SYMPTOMATIC,
    RULE_TYPE,
    RULE_UNIQUE,
    TEXT_DTYPE,
    VERTEBRA,
    TableSpec,
    cross_table_violations,
    current_year,
    range_text,
    rule_message,
    table_schema,
)

REASON = "reason"
RULES = "rules"
SOURCE_ROW = "source_row"
QUARANTINE_META = (SOURCE_ROW, REASON, RULES)

_PANDERA_RULES = {"not_nullable": RULE_REQUIRED, "field_uniqueness": RULE_UNIQUE}
_KIND_RULES = {"id": RULE_FORMAT, "sites": RULE_FORMAT, "category": RULE_CATEGORY,
               "int": RULE_RANGE, "float": RULE_RANGE, "bool": RULE_TYPE}
_WIDE_RULE_COLUMNS = {RULE_SITES_IFF_LEAKAGE: LEAKAGE_SITES, RULE_SYMPTOMATIC: LEAKAGE_SYMPTOMATIC}


@dataclass(frozen=True)
class TableOutcome:
    """One table after validation."""

    accepted: pd.DataFrame      # contract columns and dtypes
    quarantined: pd.DataFrame   # the raw row as text, its extract_batch, source_row (1-based), reason, rules
    skipped: int                # rows of batches already registered
    dropped_columns: tuple[str, ...]

    @property
    def rows_in(self) -> int:
        return len(self.accepted) + len(self.quarantined)


@dataclass(frozen=True)
class ValidationResult:
    """Both tables after validation; rows in = accepted + quarantined for each."""

    procedures: TableOutcome
    levels: TableOutcome
    skipped_batches: tuple[int, ...] = ()

    def tables(self) -> dict[str, TableOutcome]:
        return {PROCEDURES.name: self.procedures, LEVELS.name: self.levels}

    def batches(self) -> list[int]:
        """The valid extract batches this input brings (accepted or quarantined)."""
        seen = pd.concat([self.procedures.accepted[EXTRACT_BATCH],
                          self.procedures.quarantined[EXTRACT_BATCH]]).dropna()
        return sorted(int(b) for b in seen.unique())

    def reason_counts(self) -> dict[str, dict[str, int]]:
        """Per table, how many quarantined rows each rule caught (a row may count under several)."""
        counts: dict[str, dict[str, int]] = {}
        for name, outcome in self.tables().items():
            rules = outcome.quarantined[RULES].str.split(",").explode().dropna()
            counts[name] = {str(k): int(v) for k, v in rules.value_counts().sort_index().items()}
        return counts


def validate_batch(raw: RawBatch, *, as_of_year: int | None = None, watermark: int = 0,
                   registered_ids: Iterable[str] | Callable[[pd.Series], Iterable[str]] = ()) -> ValidationResult:
    """Check a raw batch against the contract and split every row into accepted or quarantined.

    Parameters
    ----------
    raw
        Both tables as read (after the identifier guard has passed them); the rows the source kept back as
        registered (:attr:`RawBatch.skipped`) are added to the skipped counts and batches.
    as_of_year
        The upper bound of ``procedure_year`` ('this year'); defaults to today's year.
    watermark
        The highest extract batch already registered: procedures of batches at or below it, and their
        levels, are skipped (counted, neither accepted nor quarantined).
    registered_ids
        Procedure ids already in the registry: a new row with one of them is quarantined. Or a lookup that,
        given the batch's (checked) procedure ids, returns those of them already registered, so a large
        registry need not hand over every id (:func:`workspace.registry.registered_procedure_ids`).

    Raises
    ------
    ContractError
        A required column is absent from a table.
    """
    year = as_of_year if as_of_year is not None else current_year()
    proc = coerce_table(raw.procedures.reset_index(drop=True), PROCEDURES)
    lev = coerce_table(raw.levels.reset_index(drop=True), LEVELS)

    batch_low = PROCEDURES.column(EXTRACT_BATCH).low
    skip_proc = ((proc.frame[EXTRACT_BATCH] >= batch_low) & (proc.frame[EXTRACT_BATCH] <= watermark)
                 ).fillna(False).astype(bool)
    skipped_batches = tuple(sorted({int(b) for b in proc.frame.loc[skip_proc, EXTRACT_BATCH].unique()}
                                   | set(raw.skipped_batches)))
    # a missing id matches nothing: a level without one is quarantined, never set aside with some old procedure
    new_ids = proc.frame.loc[~skip_proc, PROCEDURE_ID].dropna()
    old_ids = proc.frame.loc[skip_proc, PROCEDURE_ID].dropna()
    skip_lev = (lev.frame[PROCEDURE_ID].isin(old_ids) & ~lev.frame[PROCEDURE_ID].isin(new_ids)).astype(bool)
    proc = _subset(proc, ~skip_proc)
    lev = _subset(lev, ~skip_lev)

    proc_fail = pd.concat([proc.failures, _schema_failures(proc, PROCEDURES, year)], ignore_index=True)
    lev_fail = pd.concat([lev.failures, _schema_failures(lev, LEVELS, year)], ignore_index=True)
    cross_proc, cross_lev = cross_table_violations(proc.frame, lev.frame)
    if callable(registered_ids):
        registered_ids = registered_ids(pd.Series(proc.frame[PROCEDURE_ID].dropna().unique(), dtype=TEXT_DTYPE))
    registered = pd.Index(pd.Series(list(registered_ids), dtype=TEXT_DTYPE).unique())
    already = proc.frame.index[proc.frame[PROCEDURE_ID].isin(registered).fillna(False).to_numpy(dtype=bool)]
    proc_fail = pd.concat([proc_fail, cross_proc, _rule_rows(already, PROCEDURE_ID, RULE_ALREADY_REGISTERED)],
                          ignore_index=True)
    lev_fail = pd.concat([lev_fail, cross_lev], ignore_index=True)

    # a procedure and its levels travel together: one bad row quarantines the procedure and all its levels
    bad_proc_ids = set(proc.frame.loc[proc_fail["index"].unique(), PROCEDURE_ID].dropna())
    bad_lev_ids = set(lev.frame.loc[lev_fail["index"].unique(), PROCEDURE_ID].dropna())
    proc_by_level = proc.frame[PROCEDURE_ID].isin(bad_lev_ids).to_numpy(dtype=bool)
    lev_by_proc = (lev.frame[PROCEDURE_ID].isin(bad_proc_ids | bad_lev_ids).to_numpy(dtype=bool)
                   & ~lev.frame.index.isin(lev_fail["index"]))
    proc_fail = pd.concat([proc_fail, _rule_rows(proc.frame.index[proc_by_level], VERTEBRA,
                                                 RULE_LEVEL_QUARANTINED)], ignore_index=True)
    lev_fail = pd.concat([lev_fail, _rule_rows(lev.frame.index[lev_by_proc], PROCEDURE_ID,
                                               RULE_PROCEDURE_QUARANTINED)], ignore_index=True)

    return ValidationResult(
        procedures=_split(raw.procedures, proc, proc_fail, PROCEDURES, year,
                          skipped=int(skip_proc.sum()) + raw.skipped.get(PROCEDURES.name, 0)),
        levels=_split(raw.levels, lev, lev_fail, LEVELS, year,
                      skipped=int(skip_lev.sum()) + raw.skipped.get(LEVELS.name, 0),
                      batch_of=proc.frame.set_index(PROCEDURE_ID)[EXTRACT_BATCH]),
        skipped_batches=skipped_batches,
    )


def _subset(table: CoercedTable, keep: pd.Series) -> CoercedTable:
    kept_index = table.frame.index[keep.to_numpy(dtype=bool)]
    failures = table.failures[table.failures["index"].isin(kept_index)]
    return CoercedTable(frame=table.frame.loc[kept_index], failures=failures,
                        dropped_columns=table.dropped_columns)


def _rule_rows(index: pd.Index, column: str, rule: str) -> pd.DataFrame:
    return pd.DataFrame({"index": index.to_numpy(), "column": column, "rule": rule, "value": None})


def _schema_failures(table: CoercedTable, spec: TableSpec, year: int) -> pd.DataFrame:
    """Row-level contract failures found by the pandera schema, as (index, column, rule, value)."""
    try:
        table_schema(spec, as_of_year=year).validate(table.frame, lazy=True, inplace=True)
    except pa.errors.SchemaErrors as exc:
        cases = exc.failure_cases
    else:
        return pd.DataFrame({c: pd.Series(dtype="object") for c in FAILURE_COLUMNS})
    cases = cases[cases["index"].notna()]
    wide = cases["schema_context"].eq("DataFrameSchema")
    rules = pd.Series([_rule_of(spec, check, column, is_wide) for check, column, is_wide in
                       zip(cases["check"].astype(str), cases["column"], wide)], index=cases.index, dtype=object)
    columns = cases["column"].where(~wide, rules.map(_WIDE_RULE_COLUMNS))
    out = pd.DataFrame({"index": cases["index"].to_numpy(), "column": columns.to_numpy(),
                        "rule": rules.to_numpy(), "value": cases["failure_case"].to_numpy(dtype=object)})
    out.loc[wide.to_numpy() | rules.eq(RULE_REQUIRED).to_numpy(), "value"] = None
    out = out.drop_duplicates(["index", "column", "rule"])
    # a cell that could not be parsed is already reported under 'type'; do not report it missing too
    typed_bad = set(zip(table.failures["index"], table.failures["column"]))
    keep = [not (r == RULE_REQUIRED and (i, c) in typed_bad)
            for i, c, r in zip(out["index"], out["column"], out["rule"])]
    return out[keep]


def _rule_of(spec: TableSpec, check: str, column: object, is_wide: bool) -> str:
    """Our rule name for a pandera failure: its own names for table checks, else by the column's kind."""
    if is_wide or check in _PANDERA_RULES:
        return _PANDERA_RULES.get(check, check)
    return _KIND_RULES[spec.column(str(column)).kind]


def _message(column: str, rule: str, value: object, spec: TableSpec, year: int) -> str:
    if rule == RULE_TYPE:
        kind = spec.column(column).kind
        wanted = {"int": "a whole number", "float": "a number", "bool": "true/false, 1/0 or yes/no"}.get(kind, kind)
        text = f"{column} must be {wanted}"
    elif rule == RULE_REQUIRED:
        text = f"{column} is required but missing"
    elif rule in (RULE_RANGE, RULE_CATEGORY, RULE_FORMAT):
        text = f"{column} {range_text(spec.column(column), as_of_year=year)}"
    else:
        return rule_message(rule, table=spec.name, column=column)
    if value is None or (not isinstance(value, str) and pd.isna(value)):
        return text
    if spec.column(column).withhold_values:
        return text + " (value withheld)"
    return f"{text} (got {value!r})"


def _split(raw: pd.DataFrame, table: CoercedTable, failures: pd.DataFrame, spec: TableSpec, year: int, *,
           skipped: int, batch_of: pd.Series | None = None) -> TableOutcome:
    failures = failures.drop_duplicates(["index", "column", "rule"])
    messages = [_message(c, r, v, spec, year) for c, r, v in
                zip(failures["column"], failures["rule"], failures["value"])]
    failures = failures.assign(message=messages)
    grouped = failures.groupby("index", sort=True)
    reasons = grouped["message"].agg("; ".join)
    rules = grouped["rule"].agg(lambda r: ",".join(dict.fromkeys(r)))
    bad_index = pd.Index(reasons.index)
    accepted = table.frame.drop(index=bad_index)

    raw_rows = raw.reset_index(drop=True).loc[bad_index, [c for c in spec.names if c in raw.columns]]
    quarantined = raw_rows.astype(TEXT_DTYPE)
    if batch_of is None:
        batch = table.frame.loc[bad_index, EXTRACT_BATCH]
    else:
        ids = table.frame.loc[bad_index, PROCEDURE_ID]
        lookup = batch_of[~batch_of.index.duplicated()]
        batch = ids.map(lookup).astype("Int64")
    quarantined[EXTRACT_BATCH] = batch.astype("Int64")
    quarantined[SOURCE_ROW] = bad_index.to_numpy(dtype="int64") + 1  # 1-based, as a person counts rows
    quarantined[REASON] = reasons.reindex(bad_index).to_numpy(dtype=object)
    quarantined[RULES] = rules.reindex(bad_index).to_numpy(dtype=object)
    quarantined = quarantined.reset_index(drop=True)
    quarantined[REASON] = quarantined[REASON].astype(TEXT_DTYPE)
    quarantined[RULES] = quarantined[RULES].astype(TEXT_DTYPE)
    return TableOutcome(accepted=accepted.reset_index(drop=True), quarantined=quarantined, skipped=skipped,
                        dropped_columns=table.dropped_columns)
