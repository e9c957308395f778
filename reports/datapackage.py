"""What the registry submission package says about itself: file names, columns, and a Frictionless Data Package.

One column document (:func:`schema_document`, built from the record contract and the published risk columns) is
``schema.json``. ``data_dictionary.csv``/``.md``, ``tableschema.json`` and ``datapackage.json`` are all made from it
(:func:`describe_package`), so the package's own check, its dictionary and a standard tool
(``frictionless validate datapackage.json``) read the same columns, types, ranges, categories and patterns. Plain JSON
from the standard library: the package code never imports frictionless.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import PurePosixPath
from typing import Any

import pandas as pd

from models.outcomes import OUTCOMES, OUTCOMES_BY_NAME
from models.scoring import PROCEDURE_LEAKAGE_RISK
from records import schema as s

FORMAT_VERSION = "1"
DATA_DIR, SCHEMA_FILE, MANIFEST_FILE = "data", "schema.json", "manifest.json"
DATA_FILE = f"{DATA_DIR}/{s.EXTRACT_BATCH}=<n>.csv"
"""How the data files are named (``<n>`` is the extract batch)."""
DICTIONARY_CSV, DICTIONARY_MD = "data_dictionary.csv", "data_dictionary.md"
TABLE_SCHEMA_FILE, DATAPACKAGE_FILE = "tableschema.json", "datapackage.json"
"""The Frictionless Table Schema of every data file, and the Data Package descriptor of the package."""
RISK_DECIMALS = 6
MEASUREMENT_DECIMALS = 3  # the contract declares no precision; 3 fixed decimals keep its 0.1 steps exactly
RISK_PREFIX = "expected_"
SOURCE_MODEL = "model"
KEY = (s.PROCEDURE_ID, s.VERTEBRA)

_DATA_NAME = re.compile(rf"{DATA_DIR}/{s.EXTRACT_BATCH}=(\d+)\.csv")
_TYPES = dict(id="string", category="string", sites="string", int="integer", float="number", bool="boolean")
_UNITS = dict(_kg_m2="kg/m2", _ml="ml", _pct="%", _deg="degrees", _years="years", _days="days", _minutes="minutes")
_SITES_PATTERN = "(?:{0})(?:{1}(?:{0}))*".format("|".join(s.LEAKAGE_SITE_NAMES), re.escape(s.SITE_SEPARATOR))
_TEXT_FORMAT = dict(delimiter=",", encoding="utf-8, no byte-order mark", line_terminator="\\n", missing="", true="true",
                    false="false")
_DICTIONARY_COLUMNS = ("name", "source", "type", "unit", "allowed", "required", "description")
_DICTIONARY_REQUIRED = ("name", "source", "type", "required")
_YES, _NO = "yes", "no"
_DATAPACKAGE_PROFILE = "https://datapackage.org/profiles/2.0/datapackage.json"
_TABLE_SCHEMA_PROFILE = "https://datapackage.org/profiles/2.0/tableschema.json"
_MEDIA = {".csv": ("csv", "text/csv"), ".md": ("md", "text/markdown"), ".json": ("json", "application/json")}


@dataclass(frozen=True)
class RiskColumn:
    """One published expected-risk column (``name``), its scored column (``source``) and the model that made it."""

    name: str
    source: str
    unit: str
    outcome: str
    meaning: str


_OUTCOME_RISKS = [RiskColumn(RISK_PREFIX + o.name, o.risk_column, o.unit, o.name, o.definition) for o in OUTCOMES]
_LEAK = OUTCOMES_BY_NAME["leakage_any"]
_LEAK_IN_PROCEDURE = RiskColumn(RISK_PREFIX + PROCEDURE_LEAKAGE_RISK.removesuffix("_risk"), PROCEDURE_LEAKAGE_RISK,
                                "procedure", _LEAK.name, f"{_LEAK.definition} at any treated level of the procedure "
                                f"(1 - prod(1 - {RISK_PREFIX + _LEAK.name}) over its levels)")
RISK_COLUMNS = (*[r for r in _OUTCOME_RISKS if r.unit == "level"], _LEAK_IN_PROCEDURE,
                *[r for r in _OUTCOME_RISKS if r.unit != "level"])
"""The expected-risk columns: level outcomes, then the procedure's any-leakage risk, then procedure outcomes."""


def data_file_name(batch: int) -> str:
    """The package path of one extract batch's data file."""
    return f"{DATA_DIR}/{s.EXTRACT_BATCH}={int(batch)}.csv"


def data_file_batch(name: str) -> int | None:
    """The extract batch of a data file's package path; None for any other name."""
    match = _DATA_NAME.fullmatch(name)
    return int(match.group(1)) if match else None


def file_order(name: str) -> tuple[int, int, str]:
    """Data files in batch order after the other files."""
    batch = data_file_batch(name)
    return (0, 0, name) if batch is None else (1, batch, name)


def encode_file(payload: Any) -> bytes:
    """A frame as CSV, anything else as JSON with sorted keys and indent 2; UTF-8, '\\n' line ends."""
    if isinstance(payload, pd.DataFrame):
        return payload.to_csv(index=False, lineterminator="\n").encode("utf-8")
    return (json.dumps(payload, indent=2, sort_keys=True, ensure_ascii=False) + "\n").encode("utf-8")


def schema_document(versions: Mapping[str, str | None]) -> dict[str, Any]:
    """The schema of ``data.csv``: contract columns (key first, procedures before levels), then the risks."""
    owned = [(spec, s.PROCEDURES.name) for spec in s.PROCEDURES.columns]
    owned += [(spec, s.LEVELS.name) for spec in s.LEVELS.columns if spec.name not in s.PROCEDURES.names]
    columns = sorted(({"name": spec.name, "source": table, "type": _TYPES[spec.kind], "nullable": not spec.required,
                       "min": spec.low, "max": spec.high, "categories": list(spec.categories) or None,
                       "pattern": {"id": s.ID_PATTERN, "sites": _SITES_PATTERN}.get(spec.kind),
                       "decimals": MEASUREMENT_DECIMALS if spec.kind == "float" else None,
                       "unit": next((u for end, u in _UNITS.items() if spec.name.endswith(end)), None),
                       "description": spec.description} for spec, table in owned), key=lambda c: c["name"] not in KEY)
    for risk in RISK_COLUMNS:
        version = versions[risk.outcome]
        made = f"{risk.outcome} model version {version}" if version else f"empty: no {risk.outcome} model is published"
        per = "per level" if risk.unit == "level" else "per procedure (repeated on each of its level rows)"
        columns.append({"name": risk.name, "source": SOURCE_MODEL, "type": "number", "nullable": version is None,
                        "min": 0, "max": 1, "categories": None, "pattern": None, "decimals": RISK_DECIMALS,
                        "unit": "probability",
                        "description": f"expected risk {per}: calibrated probability (0-1) of {risk.meaning}; {made}"})
    return {"columns": columns, "contract_version": s.CONTRACT_VERSION, "files": DATA_FILE,
            "format_version": FORMAT_VERSION, "key": list(KEY), "text_format": _TEXT_FORMAT}


def describe_package(document: Mapping[str, Any], *, data: Sequence[Mapping[str, Any]],
                     code_version: str) -> dict[str, bytes]:
    """Every file that describes a package: ``schema.json``, the dictionary, ``tableschema.json``, ``datapackage.json``.

    Parameters
    ----------
    document
        The column document (:func:`schema_document`, or ``schema.json`` as read back).
    data
        The data files as ``manifest.json`` lists them: ``name``, ``bytes`` and ``sha256`` of each.
    code_version
        The code that made the package.

    Returns
    -------
    dict
        File name -> content; the same inputs give the same bytes (no time stamp, sorted keys).
    """
    files = {SCHEMA_FILE: encode_file(document), **_dictionary_files(document, code_version),
             TABLE_SCHEMA_FILE: encode_file(_table_schema(document))}
    described = [{"name": name, "bytes": len(content), "sha256": hashlib.sha256(content).hexdigest()}
                 for name, content in files.items() if name != SCHEMA_FILE]
    package = _datapackage(document, files=[*described, *data], code_version=code_version)
    return {**files, DATAPACKAGE_FILE: encode_file(package)}


def _dictionary_files(document: Mapping[str, Any], code_version: str) -> dict[str, bytes]:
    """The data dictionary as CSV and Markdown: one row per column of ``data.csv``, from its schema."""
    def allowed(c: Mapping[str, Any]) -> str:
        parts = ["one of " + ", ".join(c["categories"])] if c["categories"] else []
        parts += [f"pattern ^{c['pattern']}$"] if c["pattern"] else []
        parts += ["true or false"] if c["type"] == "boolean" else []
        low, high = c["min"], c["max"]
        parts += [f"{low} .. {high}" if high is not None else f">= {low}"] if low is not None else []
        return "; ".join(parts + ([f"fixed {c['decimals']} decimals"] if c["decimals"] is not None else []))

    rows = pd.DataFrame([(c["name"], c["source"], c["type"], c["unit"] or "", allowed(c),
                          _NO if c["nullable"] else _YES, c["description"]) for c in document["columns"]],
                        columns=list(_DICTIONARY_COLUMNS))
    lines = [f"# Data dictionary of `{DATA_FILE}`", "", f"One file per extract batch (`<n>`), each with this header; "
             f"together they hold one row per treated level, key `{' + '.join(KEY)}`; "
             f"record contract v{s.CONTRACT_VERSION}, package format v{FORMAT_VERSION}, code {code_version}.", "",
             "| " + " | ".join(rows.columns) + " |", "|" + "---|" * len(rows.columns)]
    lines += ["| " + " | ".join(str(v).replace("|", "\\|") for v in row) + " |" for row in rows.itertuples(index=False)]
    return {DICTIONARY_CSV: encode_file(rows), DICTIONARY_MD: ("\n".join(lines) + "\n").encode("utf-8")}


def _table_schema(document: Mapping[str, Any]) -> dict[str, Any]:
    """The Table Schema of every data file: the document's columns as fields, its key as primary key."""
    text = document["text_format"]
    return {"$schema": _TABLE_SCHEMA_PROFILE, "fields": [_field(c, text) for c in document["columns"]],
            "missingValues": [text["missing"]], "primaryKey": list(document["key"])}


def _field(column: Mapping[str, Any], text: Mapping[str, str]) -> dict[str, Any]:
    """One column as a Table Schema field; the data files' formats are checked by the package's own check."""
    constraints = {"required": not column["nullable"], "minimum": column["min"], "maximum": column["max"],
                   "enum": column["categories"], "pattern": _xsd_pattern(column["pattern"])}
    unit = f"unit: {column['unit']}" if column["unit"] else ""
    field = {"name": column["name"], "type": column["type"],
             "constraints": {k: v for k, v in constraints.items() if v is not None},
             "description": "; ".join(p for p in (column["description"], unit) if p) or None}
    if column["type"] == "boolean":
        field.update(trueValues=[text["true"]], falseValues=[text["false"]])
    return {k: v for k, v in field.items() if v is not None}


def _xsd_pattern(pattern: str | None) -> str | None:
    """A pattern as Table Schema has it: an XML Schema regular expression, which matches the whole value and has no
    non-capturing group (a group's capture does not change what a whole value matches)."""
    return None if pattern is None else pattern.replace("(?:", "(")


def _dictionary_schema(document: Mapping[str, Any]) -> dict[str, Any]:
    """The Table Schema of ``data_dictionary.csv``: text columns, one row per column name of the document."""
    enums = {"source": sorted({c["source"] for c in document["columns"]}),
             "type": sorted({c["type"] for c in document["columns"]}), "required": [_YES, _NO]}
    fields = [{"name": name, "type": "string", "constraints": {"required": name in _DICTIONARY_REQUIRED,
                                                               **({"enum": enums[name]} if name in enums else {})}}
              for name in _DICTIONARY_COLUMNS]
    return {"$schema": _TABLE_SCHEMA_PROFILE, "fields": fields, "missingValues": [document["text_format"]["missing"]],
            "primaryKey": [_DICTIONARY_COLUMNS[0]]}


def _datapackage(document: Mapping[str, Any], *, files: Sequence[Mapping[str, Any]],
                 code_version: str) -> dict[str, Any]:
    """The Data Package (v2) descriptor: one resource per file, with its size, SHA-256 and format.

    ``schema.json`` is no resource: frictionless reads any file of that name as a Table Schema, and a v2 resource
    may declare no type but ``table``. ``manifest.json`` is none either: it holds this file's SHA-256.
    """
    text = document["text_format"]
    line_end = text["line_terminator"].encode("ascii").decode("unicode_escape")  # the document writes it escaped
    dialect = {"delimiter": text["delimiter"], "header": True, "lineTerminator": line_end}
    resources = []
    for entry in sorted(files, key=lambda e: file_order(e["name"])):
        name, batch = entry["name"], data_file_batch(entry["name"])
        fmt, mediatype = _MEDIA[PurePosixPath(name).suffix]
        resource = {"name": name if batch is None else f"{s.EXTRACT_BATCH}_{batch}", "path": name, "format": fmt,
                    "mediatype": mediatype, "encoding": "utf-8", "bytes": entry["bytes"],
                    "hash": f"sha256:{entry['sha256']}"}
        if batch is not None:
            resource.update(type="table", title=f"level rows of {s.EXTRACT_BATCH} {batch}", dialect=dialect,
                            schema=TABLE_SCHEMA_FILE)
        elif name == DICTIONARY_CSV:
            resource.update(type="table", title="data dictionary", dialect=dialect, schema=_dictionary_schema(document))
        resources.append(resource)
    description = (f"Registry submission: one row per treated level, key {' + '.join(document['key'])}, across the "
                   f"data files {document['files']} (one per extract batch, each with the header; concatenated in "
                   f"batch order they are one table). Record contract v{document['contract_version']}, package format "
                   f"v{document['format_version']}, code {code_version}. {SCHEMA_FILE} is the column document every "
                   f"description here is made from; {MANIFEST_FILE} lists the size and SHA-256 of every file, this one "
                   "included.")
    return {"$schema": _DATAPACKAGE_PROFILE, "name": "cementrisk-registry-submission",
            "title": "cementrisk registry submission", "description": description, "resources": resources}
