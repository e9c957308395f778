"""Validation that never loses a row: every row is accepted or quarantined with a reason a person can read.

A procedure with a bad level is quarantined whole, with all its level rows, so that the accepted tables
stay consistent. Rows of batches the ledger already holds with the same content are set aside as ``skipped`` and
counted apart; a registered batch sent with other content is refused whole (``refused``), unless it is named as a
correction. Such rows are neither in nor lost.
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Iterable, Mapping
from dataclasses import dataclass, field

import pandas as pd
import pandera.pandas as pa

from records.batches import BatchChange, BatchContent, batch_contents, describe_change, level_batches, valid_batch_mask
from records.coerce import FAILURE_COLUMNS, CoercedTable, coerce_table
from records.errors import InputError
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
    is_in,
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
    skipped: int                # rows of batches registered with the same content
    dropped_columns: tuple[str, ...]
    refused: int = 0            # rows of batches refused as a whole (registered with other content)

    @property
    def rows_in(self) -> int:
        return len(self.accepted) + len(self.quarantined)


@dataclass(frozen=True)
class ValidationResult:
    """Both tables after validation; rows in = accepted + quarantined for each.

    ``contents`` holds the batches this input registers (new ones and corrections), ``skipped_batches`` those already
    registered with the same content, ``conflicts`` those registered with other content (refused: nothing of them is
    taken) and ``replaced_batches`` the registered batches this input replaces (``--replace-batch``).
    """

    procedures: TableOutcome
    levels: TableOutcome
    skipped_batches: tuple[int, ...] = ()
    contents: Mapping[int, BatchContent] = field(default_factory=dict)
    conflicts: Mapping[int, BatchChange] = field(default_factory=dict)
    replaced_batches: tuple[int, ...] = ()

    def tables(self) -> dict[str, TableOutcome]:
        return {PROCEDURES.name: self.procedures, LEVELS.name: self.levels}

    def batches(self) -> list[int]:
        """The batches this input registers (accepted or quarantined rows): new batches and corrections."""
        return sorted(self.contents)

    def reason_counts(self) -> dict[str, dict[str, int]]:
        """Per table, how many quarantined rows each rule caught (a row may count under several)."""
        counts: dict[str, dict[str, int]] = {}
        for name, outcome in self.tables().items():
            rules = outcome.quarantined[RULES].str.split(",").explode().dropna()
            counts[name] = {str(k): int(v) for k, v in rules.value_counts().sort_index().items()}
        return counts


@dataclass(frozen=True)
class Registered:
    """What the registry holds, as validation needs it.

    Attributes
    ----------
    contents
        Every registered batch and the SHA-256 of its content (:func:`records.batches.batch_contents`); None for a
        batch registered before contents were recorded (taken to be the same when sent again).
    run_ids
        The run that registered each batch (named in a refusal).
    ids
        Procedure ids already in the registry (a new row with one of them is quarantined), or a lookup that, given
        the input's checked ids, returns those of them already registered (outside the batches being replaced).
    rows
        A lookup of a registered batch's rows, typed (``{"procedures": ..., "levels": ...}``, accepted and
        quarantined), to say what differs when it is sent again with other content.
    """

    contents: Mapping[int, str | None] = field(default_factory=dict)
    run_ids: Mapping[int, str] = field(default_factory=dict)
    ids: Iterable[str] | Callable[[pd.Series], Iterable[str]] = ()
    rows: Callable[[int], Mapping[str, pd.DataFrame]] | None = None


class BatchError(InputError):
    """A correction that cannot be made as asked (``--replace-batch`` of a batch that is absent, unregistered or the
    same as registered)."""


def validate_batch(raw: RawBatch, *, as_of_year: int | None = None, registered: Registered = Registered(),
                   replacing: Collection[int] = ()) -> ValidationResult:
    """Check a raw input against the contract and the registry, and split every row into accepted or quarantined.

    Each valid batch of the input (:mod:`records.batches`) is new (validated and taken), registered with the same
    content (skipped: counted, neither accepted nor quarantined), registered with other content (refused: counted,
    nothing taken, described in ``conflicts``), or a correction named in ``replacing`` (validated and taken in place
    of the registered batch). Rows without a valid batch number are validated and quarantined: they belong to no batch
    and never change what the registry holds.

    Parameters
    ----------
    raw
        Both tables as read (after the identifier guard has passed them); the rows the source kept back as
        registered (:attr:`RawBatch.skipped`) are added to the skipped counts and batches.
    as_of_year
        The upper bound of ``procedure_year`` ('this year'); defaults to today's year.
    registered
        What the registry holds (:class:`Registered`).
    replacing
        Registered batches this input corrects: each must be in the input and registered with other content.

    Raises
    ------
    ContractError
        A required column is absent from a table.
    BatchError
        A batch of ``replacing`` is not in the input, not registered, or the same as registered.
    """
    year = as_of_year if as_of_year is not None else current_year()
    raw_tables = {PROCEDURES.name: raw.procedures.reset_index(drop=True), LEVELS.name: raw.levels.reset_index(drop=True)}
    proc = coerce_table(raw_tables[PROCEDURES.name], PROCEDURES)
    lev = coerce_table(raw_tables[LEVELS.name], LEVELS)
    contents = batch_contents(raw_tables, {PROCEDURES.name: proc, LEVELS.name: lev})
    replacing = {int(b) for b in replacing}
    _check_replacing(replacing, contents, registered)

    skip: set[int] = set()
    conflicts: dict[int, BatchChange] = {}
    for batch, content in contents.items():
        if batch in registered.contents and batch not in replacing:
            known = registered.contents[batch]
            if known is None or known == content.sha256:
                skip.add(batch)
            else:
                conflicts[batch] = _change(batch, proc, lev, registered)
    proc_batch = proc.frame[EXTRACT_BATCH].where(valid_batch_mask(proc.frame[EXTRACT_BATCH]))
    skip_proc = proc_batch.isin(skip).fillna(False).astype(bool)
    refuse_proc = proc_batch.isin(set(conflicts)).fillna(False).astype(bool)
    kept_ids = proc.frame.loc[~(skip_proc | refuse_proc), PROCEDURE_ID].dropna()
    # a missing id matches nothing: a level without one is quarantined, never set aside with some old procedure
    level_ids = lev.frame[PROCEDURE_ID]
    kept = is_in(level_ids, kept_ids)
    refuse_lev = pd.Series(is_in(level_ids, proc.frame.loc[refuse_proc, PROCEDURE_ID]) & ~kept, index=level_ids.index)
    skip_lev = pd.Series(is_in(level_ids, proc.frame.loc[skip_proc, PROCEDURE_ID]) & ~kept & ~refuse_lev.to_numpy(),
                         index=level_ids.index)
    proc = _subset(proc, ~(skip_proc | refuse_proc))
    lev = _subset(lev, ~(skip_lev | refuse_lev))

    proc_fail = pd.concat([proc.failures, _schema_failures(proc, PROCEDURES, year)], ignore_index=True)
    lev_fail = pd.concat([lev.failures, _schema_failures(lev, LEVELS, year)], ignore_index=True)
    cross_proc, cross_lev = cross_table_violations(proc.frame, lev.frame)
    ids = registered.ids
    if callable(ids):
        ids = ids(pd.Series(proc.frame[PROCEDURE_ID].dropna().unique(), dtype=TEXT_DTYPE))
    known_ids = pd.Index(pd.Series(list(ids), dtype=TEXT_DTYPE).unique())
    already = proc.frame.index[is_in(proc.frame[PROCEDURE_ID], pd.Series(known_ids, dtype=TEXT_DTYPE))]
    proc_fail = pd.concat([proc_fail, cross_proc, _rule_rows(already, PROCEDURE_ID, RULE_ALREADY_REGISTERED)],
                          ignore_index=True)
    lev_fail = pd.concat([lev_fail, cross_lev], ignore_index=True)

    # a procedure and its levels travel together: one bad row quarantines the procedure and all its levels
    bad_proc_ids = set(proc.frame.loc[proc_fail["index"].unique(), PROCEDURE_ID].dropna())
    bad_lev_ids = set(lev.frame.loc[lev_fail["index"].unique(), PROCEDURE_ID].dropna())
    proc_by_level = is_in(proc.frame[PROCEDURE_ID], bad_lev_ids)
    lev_by_proc = (is_in(lev.frame[PROCEDURE_ID], bad_proc_ids | bad_lev_ids)
                   & ~lev.frame.index.isin(lev_fail["index"]))
    proc_fail = pd.concat([proc_fail, _rule_rows(proc.frame.index[proc_by_level], VERTEBRA,
                                                 RULE_LEVEL_QUARANTINED)], ignore_index=True)
    lev_fail = pd.concat([lev_fail, _rule_rows(lev.frame.index[lev_by_proc], PROCEDURE_ID,
                                               RULE_PROCEDURE_QUARANTINED)], ignore_index=True)

    taken = {b: c for b, c in contents.items() if b not in skip and b not in conflicts}
    return ValidationResult(
        procedures=_split(raw_tables[PROCEDURES.name], proc, proc_fail, PROCEDURES, year,
                          skipped=int(skip_proc.sum()) + raw.skipped.get(PROCEDURES.name, 0),
                          refused=int(refuse_proc.sum())),
        levels=_split(raw_tables[LEVELS.name], lev, lev_fail, LEVELS, year,
                      skipped=int(skip_lev.sum()) + raw.skipped.get(LEVELS.name, 0), refused=int(refuse_lev.sum()),
                      batch_of=proc.frame),
        skipped_batches=tuple(sorted(skip | set(raw.skipped_batches))),
        contents=taken, conflicts=dict(sorted(conflicts.items())),
        replaced_batches=tuple(sorted(replacing)),
    )


def _check_replacing(replacing: set[int], contents: Mapping[int, BatchContent], registered: Registered) -> None:
    for batch in sorted(replacing):
        if batch not in registered.contents:
            raise BatchError(f"--replace-batch {batch}: batch {batch} is not registered; a batch the registry does not "
                             "hold is loaded without --replace-batch")
        if batch not in contents:
            raise BatchError(f"--replace-batch {batch}: the source holds no procedure of batch {batch}; export the "
                             "corrected batch whole and run again")
        if registered.contents[batch] == contents[batch].sha256:
            raise BatchError(f"--replace-batch {batch}: batch {batch} in the source is the same as the registered one "
                             "(same rows and values); there is nothing to replace")


def _change(batch: int, proc: CoercedTable, lev: CoercedTable, registered: Registered) -> BatchChange:
    """What differs between the registered batch and the batch as sent again."""
    mask = valid_batch_mask(proc.frame[EXTRACT_BATCH]) & proc.frame[EXTRACT_BATCH].eq(batch).fillna(False)
    new_proc = proc.frame[mask.to_numpy(dtype=bool)]
    new_lev = lev.frame[is_in(lev.frame[PROCEDURE_ID], new_proc[PROCEDURE_ID])]
    empty = {PROCEDURES.name: new_proc.iloc[0:0], LEVELS.name: new_lev.iloc[0:0]}
    before = registered.rows(batch) if registered.rows is not None else empty
    return describe_change(batch, registered_by=registered.run_ids.get(batch, "unknown"), before=before,
                           after={PROCEDURES.name: new_proc, LEVELS.name: new_lev})


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


def _message(column: str, rule: str, spec: TableSpec, year: int) -> str:
    """The reason in words: the column and its rule, never the value (values stay in the quarantine file)."""
    if rule == RULE_TYPE:
        kind = spec.column(column).kind
        wanted = {"int": "a whole number", "float": "a number", "bool": "true/false, 1/0 or yes/no"}.get(kind, kind)
        return f"{column} must be {wanted}"
    if rule == RULE_REQUIRED:
        return f"{column} is required but missing"
    if rule in (RULE_RANGE, RULE_CATEGORY, RULE_FORMAT):
        return f"{column} {range_text(spec.column(column), as_of_year=year)}"
    return rule_message(rule, table=spec.name, column=column)


def _split(raw: pd.DataFrame, table: CoercedTable, failures: pd.DataFrame, spec: TableSpec, year: int, *,
           skipped: int, refused: int = 0, batch_of: pd.DataFrame | None = None) -> TableOutcome:
    failures = failures.drop_duplicates(["index", "column", "rule"])
    messages = [_message(c, r, spec, year) for c, r in zip(failures["column"], failures["rule"])]
    failures = failures.assign(message=messages)
    grouped = failures.groupby("index", sort=True)
    reasons = grouped["message"].agg("; ".join)
    rules = grouped["rule"].agg(lambda r: ",".join(dict.fromkeys(r)))
    bad_index = pd.Index(reasons.index)
    accepted = table.frame.drop(index=bad_index)

    raw_rows = raw.loc[bad_index, [c for c in spec.names if c in raw.columns]]
    quarantined = raw_rows.astype(TEXT_DTYPE)
    if batch_of is None:  # a procedure's own batch, when it is a batch number of the contract
        batch = table.frame.loc[bad_index, EXTRACT_BATCH]
        batch = batch.where(valid_batch_mask(batch))
    else:  # a level's: that of its procedure
        batch = level_batches(batch_of, table.frame.loc[bad_index])
    quarantined[EXTRACT_BATCH] = batch.astype("Int64").to_numpy()
    quarantined[SOURCE_ROW] = bad_index.to_numpy(dtype="int64") + 1  # 1-based, as a person counts rows
    quarantined[REASON] = reasons.reindex(bad_index).to_numpy(dtype=object)
    quarantined[RULES] = rules.reindex(bad_index).to_numpy(dtype=object)
    quarantined = quarantined.reset_index(drop=True)
    quarantined[REASON] = quarantined[REASON].astype(TEXT_DTYPE)
    quarantined[RULES] = quarantined[RULES].astype(TEXT_DTYPE)
    return TableOutcome(accepted=accepted.reset_index(drop=True), quarantined=quarantined, skipped=skipped,
                        dropped_columns=table.dropped_columns, refused=refused)
