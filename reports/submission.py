"""The registry submission package: record-level data files with their dictionary, schema and manifest; its re-check.

Files: ``data/extract_batch=<n>.csv`` (one file per extract batch, one row per treated level, each with the header),
``schema.json`` (the source of ``data_dictionary.csv`` and ``.md``, and of the Frictionless Data Package
``tableschema.json`` and ``datapackage.json``: :mod:`reports.datapackage`) and ``manifest.json`` (size and SHA-256 of
the others, row totals, period, versions; no time stamp, so the same inputs give byte-identical files). Concatenating
the data files in batch order (one header) gives the whole table. A package of 1..10 procedures is a small cell: it is
withheld (:class:`SubmissionWithheld`); per-file row counts are never published.

A data file depends only on its batch's records and the model versions, so a nightly run renders and checks the new
batch's file once (:func:`render_part`) and assembles the package from kept files by hard link
(:func:`assemble_submission`): its cost follows the new batch, not the registry.
"""

from __future__ import annotations

import codecs
import hashlib
import io
import json
import re
import tempfile
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pandera.pandas as pa
from pandera.errors import SchemaErrors

from models.suppression import SMALL_CELL, is_small
from records import schema as s
from reports.datapackage import (DATA_DIR, DATA_FILE, DATAPACKAGE_FILE, DICTIONARY_CSV, DICTIONARY_MD,
                                 FORMAT_VERSION, KEY, MANIFEST_FILE, RISK_COLUMNS, SCHEMA_FILE, TABLE_SCHEMA_FILE,
                                 data_file_batch, data_file_name, describe_package, encode_file, file_order,
                                 schema_document)
from reports.datapackage import RISK_DECIMALS  # noqa: F401  (the package's names stay importable from here)
from workspace.durable import replace_folder

PACKAGE_FILES = (DATAPACKAGE_FILE, DICTIONARY_CSV, DICTIONARY_MD, SCHEMA_FILE, TABLE_SCHEMA_FILE)
"""The files every package has besides its data files and the manifest."""
_DTYPES = {"string": s.TEXT_DTYPE, "integer": "Int64", "number": "Float64", "boolean": "boolean"}


class SubmissionError(ValueError):
    """The inputs cannot make a valid package; the message names the rule and the column, never a value."""


class SubmissionWithheld(Exception):
    """The file would hold fewer than 11 procedures, itself a small cell: nothing is written (no count is told)."""


@dataclass(frozen=True)
class SubmissionResult:
    """What :func:`assemble_submission` wrote: the folder, its file names, and the manifest as written."""

    out_dir: Path
    files: tuple[str, ...]
    manifest: dict[str, Any]


@dataclass(frozen=True)
class Part:
    """One rendered data file: the extract batch, its bytes' size and SHA-256, its row counts and period.

    The counts stay in the workspace (they may be small cells); only their totals are published.
    """

    batch: int
    bytes: int
    sha256: str
    levels: int
    procedures: int
    period: dict[str, int]

    @property
    def name(self) -> str:
        return data_file_name(self.batch)

    def to_dict(self) -> dict[str, Any]:
        return {"batch": self.batch, "bytes": self.bytes, "sha256": self.sha256, "levels": self.levels,
                "procedures": self.procedures, "period": dict(self.period)}

    @classmethod
    def from_dict(cls, payload: Mapping[str, Any]) -> Part:
        return cls(batch=int(payload["batch"]), bytes=int(payload["bytes"]), sha256=str(payload["sha256"]),
                   levels=int(payload["levels"]), procedures=int(payload["procedures"]),
                   period={k: int(v) for k, v in payload["period"].items()})


def render_part(*, procedures: pd.DataFrame, levels: pd.DataFrame, level_risks: pd.DataFrame,
                procedure_risks: pd.DataFrame, model_versions: Mapping[str, str | None]) -> tuple[bytes, Part]:
    """The data file of one extract batch (header and rows, sorted by key), checked against its own schema.

    Raises
    ------
    SubmissionError
        More than one extract batch, a contract column or risk is missing, a key repeats, a risk is no probability
        or disagrees with its model version, or the rendered file fails the package schema.
    """
    versions = _versions(model_versions)
    data = _attach_risks(_join_records(procedures, levels), level_risks, procedure_risks, versions)
    batches = data[s.EXTRACT_BATCH].dropna().unique()
    if len(batches) != 1:
        raise SubmissionError(f"a data file holds exactly one {s.EXTRACT_BATCH}; these rows hold {len(batches)}")
    rank = {v: i for i, v in enumerate(s.VERTEBRAE)}  # anatomical order, as the contract lists the vertebrae
    data = data.sort_values(list(KEY), key=lambda c: c.map(rank) if c.name == s.VERTEBRA else c, ignore_index=True)
    document = schema_document(versions)
    content = encode_file(pd.DataFrame({c["name"]: _cells(data[c["name"]], c) for c in document["columns"]}))
    table, problems = _read_data(content, document["columns"])
    if problems or (problems := _schema_problems(table, document)):
        raise SubmissionError("the submission data fail their own schema: " + "; ".join(problems))
    part = Part(batch=int(batches[0]), bytes=len(content), sha256=hashlib.sha256(content).hexdigest(),
                levels=len(data), procedures=int(data[s.PROCEDURE_ID].nunique()), period=_period(data))
    return content, part


def assemble_submission(out_dir: Path, *, parts: Sequence[tuple[Path, Part]], model_versions: Mapping[str, str | None],
                        code_version: str, watermark: int) -> SubmissionResult:
    """Put a package together from rendered data files (hard-linked, copied where links cannot be made).

    Parameters
    ----------
    out_dir
        Created if missing; its content is replaced as a whole (written to a sibling temporary folder, renamed).
    parts
        Each data file's path and its :class:`Part` as :func:`render_part` gave it, rendered with these versions.
    model_versions, code_version, watermark
        Each outcome's model version (None: not published); the code version; the registry watermark.

    Raises
    ------
    SubmissionWithheld
        Fewer than 11 procedures in all: nothing is written, ``out_dir`` is left as it was.
    SubmissionError
        A batch repeats or is above the watermark, a file's size or SHA-256 differs from its Part, or an argument
        is malformed.
    """
    versions = _versions(model_versions)
    if not code_version or isinstance(watermark, bool) or not isinstance(watermark, (int, np.integer)) or watermark < 0:
        raise SubmissionError("code_version must be a non-empty string and watermark a non-negative integer")
    ordered = sorted(parts, key=lambda item: item[1].batch)
    batches = [part.batch for _, part in ordered]
    if len(set(batches)) != len(batches):
        raise SubmissionError(f"each {s.EXTRACT_BATCH} must have one data file; some have more")
    if batches and batches[-1] > watermark:
        raise SubmissionError(f"{s.EXTRACT_BATCH} must not exceed the registry watermark {watermark}")
    n_procedures = sum(part.procedures for _, part in ordered)
    if n_procedures < SMALL_CELL:
        raise SubmissionWithheld(f"no submission written: a record-level file of fewer than {SMALL_CELL} procedures "
                                 "is itself a small cell")
    for path, part in ordered:
        if Path(path).stat().st_size != part.bytes:
            raise SubmissionError(f"{part.name} is not the file that was rendered and checked (its size differs)")
    data = [{"bytes": part.bytes, "name": part.name, "sha256": part.sha256} for _, part in ordered]
    files = describe_package(schema_document(versions), data=data, code_version=code_version)
    periods = [part.period for _, part in ordered]
    period = {key: (min if key.endswith("_min") else max)(p[key] for p in periods) for key in periods[0]}
    entries = [{"bytes": len(content), "name": name, "sha256": hashlib.sha256(content).hexdigest()}
               for name, content in files.items()] + data
    manifest = {"code_version": code_version, "contract_version": s.CONTRACT_VERSION,
                "files": sorted(entries, key=lambda e: file_order(e["name"])),
                "format_version": FORMAT_VERSION, "model_versions": versions,
                "period": {**period, "registry_watermark": int(watermark)},
                "rows": {s.LEVELS.name: sum(part.levels for _, part in ordered), s.PROCEDURES.name: n_procedures}}
    linked = {part.name: Path(path) for path, part in ordered}
    replace_folder(Path(out_dir), {**files, MANIFEST_FILE: encode_file(manifest)}, linked=linked)
    names = tuple(sorted([*files, *linked, MANIFEST_FILE], key=file_order))
    return SubmissionResult(out_dir=Path(out_dir), files=names, manifest=manifest)


def write_submission(out_dir: Path, *, procedures: pd.DataFrame, levels: pd.DataFrame, level_risks: pd.DataFrame,
                     procedure_risks: pd.DataFrame, model_versions: Mapping[str, str | None], code_version: str,
                     watermark: int) -> SubmissionResult:
    """Render every extract batch's data file from whole frames and assemble the package (tests, benchmarks, tools).

    Raises what :func:`render_part` and :func:`assemble_submission` raise; a key repeated across batches is a
    :class:`SubmissionError` too.
    """
    versions = _versions(model_versions)
    for table, frame in ((s.PROCEDURES, procedures), (s.LEVELS, levels)):
        missing = [name for name in table.names if name not in frame.columns]
        if missing:
            raise SubmissionError(f"{table.name} must carry every contract column; missing: {', '.join(missing)}")
    batch_of = procedures.drop_duplicates(s.PROCEDURE_ID).set_index(s.PROCEDURE_ID)[s.EXTRACT_BATCH]
    with tempfile.TemporaryDirectory(prefix=".parts.", dir=Path(out_dir).parent if Path(out_dir).parent.exists()
                                     else None) as tmp:
        parts = []
        for batch, batch_procedures in procedures.groupby(s.EXTRACT_BATCH, sort=True):
            ids = batch_procedures[s.PROCEDURE_ID]
            content, part = render_part(
                procedures=batch_procedures, levels=levels[levels[s.PROCEDURE_ID].map(batch_of) == batch],
                level_risks=level_risks[level_risks[s.PROCEDURE_ID].isin(ids)],
                procedure_risks=procedure_risks[procedure_risks[s.PROCEDURE_ID].isin(ids)], model_versions=versions)
            path = Path(tmp) / f"{part.batch}.csv"
            path.write_bytes(content)
            parts.append((path, part))
        orphans = int((~levels[s.PROCEDURE_ID].isin(batch_of.index)).sum())
        if orphans:
            raise SubmissionError(f"every level needs its procedure and every procedure a level; {orphans} levels "
                                  "without procedure")
        return assemble_submission(out_dir, parts=parts, model_versions=versions, code_version=code_version,
                                   watermark=watermark)


def validate_submission(out_dir: Path, *, checked: Mapping[str, Part] | None = None) -> list[str]:
    """Re-check a written package from its files alone; one sentence per problem (never a value), empty = valid.

    Manifest present; listed files present with their size and SHA-256, no other file; no small-cell count; the
    dictionary, ``tableschema.json`` and ``datapackage.json`` as ``schema.json`` and the manifest make them (an edit
    the manifest was made to agree with is found too); every data file in the fixed text format and valid against a
    pandera schema built from ``schema.json``; keys unique across files; rows and period match the manifest.

    ``checked`` maps data-file names to the :class:`Part` of a content already checked against this schema when it was
    rendered (a nightly run's kept files): a listed file whose SHA-256 is the Part's is not parsed again, and the
    Part's row counts and period enter the totals checked against the manifest, so a nightly check costs the new
    batch plus one hash of each kept file. Keys are checked for repeats among the parsed files; a kept file holds
    only its own batch, and a procedure belongs to one batch. Without ``checked`` every file is parsed.
    """
    out_dir, checked = Path(out_dir), dict(checked or {})
    try:
        manifest = json.loads((out_dir / MANIFEST_FILE).read_bytes().decode("utf-8"))
        problems, digests = _file_problems(out_dir, manifest["files"])
        rows, period, code_version = manifest["rows"], manifest["period"], manifest["code_version"]
        listed = {entry["name"]: entry["sha256"] for entry in manifest["files"]}
        problems += [f"manifest rows {name} = {n} is a small cell (1..{SMALL_CELL - 1}); it must not be published"
                     for name, n in sorted(rows.items()) if is_small(n)]
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        return [f"{MANIFEST_FILE} is missing, or not UTF-8 JSON with the files, rows, period and code version of a "
                "package"]
    problems += [f"{name} is not in the package" for name in PACKAGE_FILES if name not in digests]
    data_names = sorted((n for n in digests if data_file_batch(n) is not None), key=file_order)
    if not data_names:
        return problems + [f"the package has no data file ({DATA_FILE})"]
    try:
        document = json.loads((out_dir / SCHEMA_FILE).read_bytes().decode("utf-8"))
        data = [entry for entry in manifest["files"] if data_file_batch(entry["name"]) is not None]
        made = describe_package(document, data=data, code_version=code_version)
        problems += [f"{name} does not describe this package (it is not what {SCHEMA_FILE} and {MANIFEST_FILE} make)"
                     for name, content in made.items() if name != SCHEMA_FILE and name in listed
                     and listed[name] != hashlib.sha256(content).hexdigest()]
        tables = []
        trusted = [checked[n] for n in data_names if n in checked and checked[n].sha256 == digests[n]]
        trusted_names = {part.name for part in trusted}
        for name in data_names:
            if name in trusted_names:
                continue
            table, read_problems = _read_data((out_dir / name).read_bytes(), document["columns"], name=name)
            problems += read_problems
            if table is None:
                continue
            problems += _schema_problems(table, document, name=name)
            batches = table[s.EXTRACT_BATCH].dropna().unique().tolist()
            if batches != [data_file_batch(name)]:
                problems.append(f"{name} must hold the rows of its own {s.EXTRACT_BATCH} only")
            tables.append(table)
        if not tables and not trusted:
            return problems
        table = pd.concat(tables, ignore_index=True) if tables else None
        repeats = 0 if table is None else int(table.duplicated(list(document["key"]), keep=False).sum())
        problems += [f"key {'+'.join(document['key'])} must be unique across data files: {repeats} rows repeat"
                     ] if repeats and len(tables) > 1 else []
        found = {s.LEVELS.name: sum(part.levels for part in trusted),
                 s.PROCEDURES.name: sum(part.procedures for part in trusted)}
        if table is not None:
            found[s.LEVELS.name] += len(table)
            found[s.PROCEDURES.name] += int(table[s.PROCEDURE_ID].nunique())
        problems += [f"manifest rows {name} = {rows.get(name)} but the data files hold {n}"
                     for name, n in found.items() if rows.get(name) != n]
        periods = [part.period for part in trusted] + ([_period(table)] if table is not None else [])
        spans = {name: (min if name.endswith("_min") else max)(p[name] for p in periods) for name in periods[0]}
        return problems + [f"manifest period {name} = {period.get(name)} but the data files give {value}"
                           for name, value in spans.items() if period.get(name) != value]
    except (ValueError, KeyError, TypeError, re.error, OSError):
        return problems + [f"the data cannot be checked: a data file or {SCHEMA_FILE} is absent or unreadable"]


def _versions(model_versions: Mapping[str, str | None]) -> dict[str, str | None]:
    needed = sorted({r.outcome for r in RISK_COLUMNS})
    if sorted(model_versions) != needed or not all(v is None or isinstance(v, str) and v
                                                   for v in model_versions.values()):
        raise SubmissionError(f"model_versions must give a version string or None for exactly {', '.join(needed)}")
    return {name: model_versions[name] for name in needed}


def _join_records(procedures: pd.DataFrame, levels: pd.DataFrame) -> pd.DataFrame:
    """One row per level with its procedure's columns; contract columns only, in the contract's dtypes."""
    frames = {}
    for table, frame in ((s.PROCEDURES, procedures), (s.LEVELS, levels)):
        missing = [name for name in table.names if name not in frame.columns]
        if missing:
            raise SubmissionError(f"{table.name} must carry every contract column; missing: {', '.join(missing)}")
        frames[table.name] = frame[list(table.names)].astype({c.name: c.pandas_dtype for c in table.columns})
        repeats = int(frames[table.name].duplicated(list(table.key), keep=False).sum())
        if repeats:
            raise SubmissionError(f"{'+'.join(table.key)} must be unique in {table.name}; {repeats} rows repeat a key")
    procedures, levels = frames[s.PROCEDURES.name], frames[s.LEVELS.name]
    orphans = int((~levels[s.PROCEDURE_ID].isin(procedures[s.PROCEDURE_ID])).sum())
    childless = int((~procedures[s.PROCEDURE_ID].isin(levels[s.PROCEDURE_ID])).sum())
    if orphans or childless:
        raise SubmissionError(f"every level needs its procedure and every procedure a level; {orphans} levels "
                              f"without procedure, {childless} procedures without levels")
    return levels.merge(procedures, on=s.PROCEDURE_ID, how="left", validate="many_to_one")


def _attach_risks(data: pd.DataFrame, level_risks: pd.DataFrame, procedure_risks: pd.DataFrame,
                  versions: Mapping[str, str | None]) -> pd.DataFrame:
    """``data`` with the expected-risk columns; rows of the risk frames that are not submitted are ignored."""
    data = data.copy()
    for unit, risks, key in (("level", level_risks, list(KEY)), ("procedure", procedure_risks, [s.PROCEDURE_ID])):
        wanted = [r for r in RISK_COLUMNS if r.unit == unit]
        missing = [n for n in [*key, *(r.source for r in wanted)] if n not in risks.columns]
        if missing:
            raise SubmissionError(f"{unit}_risks must have columns {', '.join(missing)}")
        frame = risks[[*key, *(r.source for r in wanted)]].astype({k: s.TEXT_DTYPE for k in key})
        repeats = int(frame.duplicated(key, keep=False).sum())
        merged = data[key].merge(frame.drop_duplicates(key), on=key, how="left", indicator=True)
        unscored = int((merged["_merge"] == "left_only").sum())
        if repeats or unscored:
            raise SubmissionError(f"{unit}_risks must have exactly one row per submitted {'+'.join(key)}; "
                                  f"{unscored} submitted rows have none, {repeats} rows repeat a key")
        for risk in wanted:
            values = pd.to_numeric(merged[risk.source], errors="coerce").astype("Float64")
            version, given = versions[risk.outcome], int(values.notna().sum())
            if given != (len(values) if version else 0):
                raise SubmissionError(f"{risk.source} must be given in every row when a {risk.outcome} model version "
                                      f"is given, in none otherwise; version {version}, {given} of {len(values)} rows")
            outside = int(((values < 0) | (values > 1)).sum())
            if outside:
                raise SubmissionError(f"{risk.source} must be a probability between 0 and 1; {outside} rows are not")
            data[risk.name] = values.to_numpy()
    return data


def _period(data: pd.DataFrame) -> dict[str, int]:
    """First and last procedure year and extract batch of a non-empty table."""
    return {f"{name}_{end}": int(getattr(data[name], end)()) for name in (s.PROCEDURE_YEAR, s.EXTRACT_BATCH)
            for end in ("min", "max")}


def _cells(values: pd.Series, column: Mapping[str, Any]) -> list[str]:
    """A column as text: true/false, plain integers, fixed decimals (never '-0.000'), missing as ''."""
    if column["type"] == "number":
        zero = f"{0:.{column['decimals']}f}"
        text = [f"{v:.{column['decimals']}f}" for v in values.to_numpy(dtype=float, na_value=np.nan)]
        return ["" if t == "nan" else zero if t == "-" + zero else t for t in text]
    text = {"boolean": lambda v: "true" if v else "false", "integer": lambda v: str(int(v))}.get(column["type"], str)
    return ["" if pd.isna(v) else text(v) for v in values]


def _lines(mask: pd.Series | np.ndarray) -> str:
    """'3 rows (lines 5, 9, 12)': CSV line numbers of the marked rows (line 1 is the header), at most 5 shown."""
    lines = [str(i + 2) for i in np.flatnonzero(np.asarray(mask))]
    shown = ", ".join(lines[:5]) + (", ..." if len(lines) > 5 else "")
    return f"{len(lines)} row{'s' * (len(lines) != 1)} (line{'s' * (len(lines) != 1)} {shown})"


def _read_data(raw: bytes, columns: list[dict[str, Any]], *, name: str = DATA_FILE
               ) -> tuple[pd.DataFrame | None, list[str]]:
    """The typed table of one data file (None when unreadable) and the problems of its text."""
    problems = [f"{name} must be UTF-8 without byte-order mark, its lines ending in '\\n' only"
                ] if raw.startswith(codecs.BOM_UTF8) or b"\r" in raw else []
    try:
        text = pd.read_csv(io.StringIO(raw.decode("utf-8")), dtype=str, keep_default_na=False, na_filter=False)
    except ValueError as exc:  # UnicodeDecodeError and pandas' ParserError, EmptyDataError are ValueErrors
        return None, problems + [f"{name} cannot be read as UTF-8 CSV ({type(exc).__name__})"]
    names = [c["name"] for c in columns]
    if list(text.columns) != names:
        return None, problems + [f"{name} columns must be those of {SCHEMA_FILE}, in order; absent: "
                                 f"{[n for n in names if n not in text.columns]}, unexpected: "
                                 f"{[n for n in text.columns if n not in names]}"]
    typed = {}
    for column in columns:
        cells, kind = text[column["name"]].fillna(""), column["type"]
        form = {"boolean": "true|false", "integer": r"-?\d+", "number": rf"-?\d+\.\d{{{column['decimals']}}}"}
        wrong = ~(cells.str.fullmatch(form.get(kind, ".*")) | (cells == ""))
        problems += [f"{column['name']} must be written as {kind} in the package's fixed format: broken in "
                     f"{_lines(wrong)} of {name}"] if wrong.any() else []
        usable = cells.where(~wrong & (cells != ""))
        typed[column["name"]] = (usable.map({"true": True, "false": False}).astype("boolean") if kind == "boolean"
                                 else pd.to_numeric(usable).astype(_DTYPES[kind]) if kind in form
                                 else usable.astype(s.TEXT_DTYPE))
    return pd.DataFrame(typed), problems


def _schema_problems(table: pd.DataFrame, document: Mapping[str, Any], *, name: str = DATA_FILE) -> list[str]:
    """Problems found by the pandera schema built from ``schema.json``; each check's error is its rule in words."""
    columns = {}
    for c in document["columns"]:
        low, high, cats, pattern = c["min"], c["max"], c["categories"], c["pattern"]
        unit = f" {c['unit']}" if c["unit"] else ""
        bounds = (f"must be between {low} and {high}{unit}" if None not in (low, high) else
                  f"must be at least {low}{unit}" if low is not None else f"must be at most {high}{unit}")
        checks = [pa.Check.isin(cats, error="must be one of " + ", ".join(cats))] if cats else []
        checks += [pa.Check.str_matches(f"^(?:{pattern})$", error=f"must match ^{pattern}$")] if pattern else []
        checks += [pa.Check.ge(low, error=bounds)] if low is not None else []
        checks += [pa.Check.le(high, error=bounds)] if high is not None else []
        columns[c["name"]] = pa.Column(_DTYPES[c["type"]], checks=checks, nullable=c["nullable"], required=True)
    schema = pa.DataFrameSchema(columns, unique=list(document["key"]), strict=True, ordered=True, name=name)
    try:
        schema.validate(table, lazy=True)
        return []
    except SchemaErrors as errors:
        cases = errors.failure_cases
    repeated, rows = cases["check"] == "multiple_fields_uniqueness", np.arange(len(table))
    groups = [(f"key {'+'.join(document['key'])}", "must be unique", cases[repeated])] if repeated.any() else []
    groups += [(name, {"not_nullable": "must not be empty"}.get(str(check), str(check)), group)
               for (name, check), group in cases[~repeated].groupby(["column", "check"], sort=True, dropna=False)]
    return [f"{column} {rule}: broken in {_lines(np.isin(rows, pd.to_numeric(group['index'], errors='coerce')))}"
            f" of {name}" for column, rule, group in groups]


def _file_problems(out_dir: Path, listed: list[dict[str, Any]]) -> tuple[list[str], dict[str, str]]:
    """Problems of the listed and unlisted files, and the SHA-256 of each listed file present (read in blocks)."""
    problems, digests = [], {}
    for entry in listed:
        name = entry["name"]
        path = out_dir / name
        if not (Path(name).name == name or data_file_batch(name) is not None) or name in (MANIFEST_FILE, "..", "."):
            problems.append(f"{MANIFEST_FILE} lists {name!r}, which is not a file name of the package")
        elif not path.is_file():
            problems.append(f"{name} is listed in {MANIFEST_FILE} but missing")
        else:
            digest, size = hashlib.sha256(), 0
            with path.open("rb") as handle:
                while block := handle.read(1 << 22):
                    digest.update(block)
                    size += len(block)
            digests[name] = digest.hexdigest()
            if size != entry["bytes"]:
                problems.append(f"{name} has {size} bytes; {MANIFEST_FILE} says {entry['bytes']}")
            if digests[name] != entry["sha256"]:
                problems.append(f"{name} does not match its SHA-256 in {MANIFEST_FILE}")
    expected = {entry["name"] for entry in listed} | {MANIFEST_FILE, DATA_DIR}
    present = [p.name for p in sorted(out_dir.iterdir())]
    present += [f"{DATA_DIR}/{p.name}" for p in sorted((out_dir / DATA_DIR).iterdir())] if (out_dir / DATA_DIR).is_dir() else []
    return problems + [f"{name} is in the package but not listed in {MANIFEST_FILE}"
                       for name in present if name not in expected], digests


