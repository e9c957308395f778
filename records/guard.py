"""The identifier guard: refuses a whole batch that carries a HIPAA Safe Harbor identifier.

Reference: 45 CFR 164.514(b)(2) (Safe Harbor de-identification); shared record-contract.md,
"What a de-identified source must never contain". Findings and messages name the table, the
column and the kind of identifier, never a value. Before any value is screened, each table's
header is checked (:mod:`records.columns`): too many columns, twin names and nested columns,
whose fields cannot be screened column by column, are refused as contract errors.
"""

from __future__ import annotations

import datetime as _dt
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd
import pyarrow as pa_arrow

from records.columns import check_column_names, check_flat_frame
from records.errors import InputError
from records.schema import AGE_YEARS, LEVELS, PROCEDURE_YEAR, PROCEDURES

# --- kinds of identifier (the words used in findings and messages) ------------------------
NAME = "name"
ADDRESS = "street address or geographic subdivision"
ZIP = "ZIP code beyond 3 digits"
DATE = "date finer than the year"
PHONE = "telephone or fax number"
EMAIL = "e-mail address"
SSN = "social security number"
MRN = "medical record number"
ACCOUNT = "health plan or account number"
LICENCE_OR_DEVICE = "licence or device serial number"
URL = "URL"
IP = "IP address"
PHOTO = "photo or biometric"
AGE_OVER_89 = "age over 89"

BY_NAME = "column name"
BY_VALUE = "values"

OLDEST_REPORTABLE_AGE = 89
"""Safe Harbor allows ages up to 89; the contract codes 90 as '90 or older'."""
OLDEST_POSSIBLE_AGE = 120
"""No one is older: an age above it (or below 0) is an impossible value, not an identifier. The guard lets it
through; validation quarantines it (``age_years`` must be between 18 and 90) and an unknown column is dropped."""

_CONTRACT_NAMES = frozenset(PROCEDURES.names) | frozenset(LEVELS.names)
_KEY_NAMES = frozenset(c.name for t in (PROCEDURES, LEVELS) for c in t.columns if c.kind == "id")
_AGE_YEARS_TOP = PROCEDURES.column(AGE_YEARS).high  # 90 = '90 or older'


@dataclass(frozen=True)
class IdentifierFinding:
    """One column of one table that carries an identifier; never holds a value.

    Attributes
    ----------
    table, column
        Where it was found. A column whose header itself looks like an identifier value is
        named by position, e.g. ``"column 3 (name withheld)"``.
    kind
        The kind of identifier in words, e.g. ``"e-mail address"``.
    how
        ``"column name"`` or ``"values"``.
    rows
        For ``how == "values"``: how many rows matched (a count); ``None`` otherwise.
    """

    table: str
    column: str
    kind: str
    how: str
    rows: int | None = None

    def describe(self) -> str:
        """``procedures.contact: e-mail address (found in 3 rows by value)``."""
        if self.how == BY_NAME:
            found = "found by column name"
        else:
            found = f"found in {self.rows} row{'' if self.rows == 1 else 's'} by value"
        return f"{self.table}.{self.column}: {self.kind} ({found})"


class IdentifierError(InputError, ValueError):
    """A batch refused as a whole because it carries an identifier.

    The message names table, column and kind of every finding, never the value.

    Attributes
    ----------
    findings : tuple of IdentifierFinding
    """

    def __init__(self, findings: Sequence[IdentifierFinding]) -> None:
        self.findings: tuple[IdentifierFinding, ...] = tuple(findings)
        lines = "\n".join("  " + f.describe() for f in self.findings)
        super().__init__(
            "batch refused: it carries identifiers (HIPAA Safe Harbor); "
            "remove these columns or values at the source:\n" + lines
        )

    def __reduce__(self) -> tuple[type[IdentifierError], tuple[tuple[IdentifierFinding, ...]]]:
        return (type(self), (self.findings,))


def find_identifiers(frames: Mapping[str, pd.DataFrame]) -> list[IdentifierFinding]:
    """Every identifier a batch carries, by column name and by value.

    Parameters
    ----------
    frames
        Table name (``"procedures"``, ``"levels"``) to the raw frame as read from a source:
        typed columns from Parquet, or every column as text from CSV / SQL. Not modified.

    Returns
    -------
    list of IdentifierFinding
        In table, column, kind order; empty when the batch is clean.

    Raises
    ------
    records.errors.ContractError
        Before any value is screened, when a table has more than :data:`records.columns.MAX_COLUMNS` columns or
        two columns of one name (:func:`records.columns.check_column_names`).
    records.columns.NestedColumnError
        Before any value is screened, when a table has a nested column (struct, list, map: a dict, list, tuple,
        set or array in a cell, or a nested Arrow dtype): nested fields cannot be screened column by column, and
        the contract has flat columns only (:func:`records.columns.check_flat_frame`).

    Notes
    -----
    Rules, per column:

    1. Column name (any column except the contract's own): tokens of the lower-cased name, split
       on non-alphanumerics and camelCase, against word lists for each Safe Harbor kind. A
       ``*_year`` column is not a date. A ZIP/postcode column is allowed when every non-missing
       value has at most 3 digits (Safe Harbor keeps 3-digit ZIPs). A column flagged by name is
       refused whole, so its values are not scanned.
    2. Values of every text column (object, string, categorical): distinct values are screened
       with one combined regular expression (RE2 via pyarrow), then only the matches are
       classified: e-mail, URL, IP and MAC addresses, device UDI, SSN (ddd-dd-dddd), ZIP+4,
       dates finer than the year (numeric, ISO with time, month names), telephone numbers
       (North American, ``+`` international, 0-prefixed national), spaced IBAN / card numbers,
       labelled MRNs, image data or file names, street addresses, "Surname, Given" and titled
       names. In the pseudonymous key columns (contract kind ``"id"``) a value of 6 or more
       digits only is refused as a medical record number: a pseudonym made for the data
       carries a letter prefix (``P0000001``), a bare long number is what a hospital system
       issues. Numeric key columns with values of 6 or more digits are refused the same way.
       Date and timestamp typed columns are refused as dates finer than the year.
    3. Ages: ``age_years`` above 90 (90 means 90 or older); any other column with an ``age``
       token (not in days, weeks, months or hours) above 89; a year-of-birth column giving an
       age above 89 at ``procedure_year`` (or this year when there is none). Only ages up to
       :data:`OLDEST_POSSIBLE_AGE` (120) identify anyone: an age of 150 or -3 is an impossible
       value, which validation quarantines (``age_years``) or drops with its unknown column.
    """
    for table, frame in frames.items():
        if not isinstance(frame, pd.DataFrame):
            raise TypeError(f"frames[{table!r}] must be a pandas DataFrame, not {type(frame).__name__}")
        check_column_names(str(table), list(frame.columns))
        check_flat_frame(str(table), frame)
    findings: list[IdentifierFinding] = []
    for table, frame in frames.items():
        findings.extend(_table_findings(str(table), frame))
    return findings


def check_identifiers(frames: Mapping[str, pd.DataFrame]) -> None:
    """Refuse a batch that carries any identifier, listing all findings at once.

    Parameters
    ----------
    frames
        Table name to raw frame, as for :func:`find_identifiers`.

    Raises
    ------
    IdentifierError
        When :func:`find_identifiers` finds anything; the message and the findings name
        table, column and kind, never a value.
    records.errors.ContractError, records.columns.NestedColumnError
        As for :func:`find_identifiers`: too many columns, twin names or a nested column, found
        before any value is screened.
    """
    findings = find_identifiers(frames)
    if findings:
        raise IdentifierError(findings)


# --- by column name -----------------------------------------------------------------------
_NUMBER = ("number", "no", "nr", "num", "id", "identifier")


@dataclass(frozen=True)
class _NameRule:
    kind: str
    tokens: frozenset[str]
    phrases: tuple[tuple[str, ...], ...] = ()
    sole: frozenset[str] = frozenset()

    def matches(self, tokens: list[str]) -> bool:
        if self.tokens.intersection(tokens) or (len(tokens) == 1 and tokens[0] in self.sole):
            return True
        return any(_contains_phrase(tokens, phrase) for phrase in self.phrases)


def _rule(kind: str, tokens: str, phrases: Sequence[tuple[str, ...]] = (), sole: str = "") -> _NameRule:
    return _NameRule(kind, frozenset(tokens.split()), tuple(phrases), frozenset(sole.split()))


def _numbered(*heads: str) -> list[tuple[str, str]]:
    return [(head, suffix) for head in heads for suffix in _NUMBER]


# first match wins: specific kinds ("email_address", "ip_address") before generic ("address")
_NAME_RULES: tuple[_NameRule, ...] = (
    _rule(EMAIL, "email emails emailaddress mail mailto", [("e", "mail")]),
    _rule(URL, "url urls uri website webpage homepage weblink hyperlink",
          [("web", "site"), ("web", "page"), ("web", "address"), ("web", "link"), ("home", "page")]),
    _rule(IP, "ipaddress ipaddr ipv", [("ip", "address"), ("ip", "addr")], sole="ip"),
    _rule(PHONE, "phone phones telephone tel telefon fax telefax mobile mobil cellphone pager phonenumber",
          _numbered("cell")),
    _rule(SSN, "ssn ssns socialsecurity ahv", [("social", "security"), ("social", "insurance")]),
    _rule(MRN, "mrn mrns chart patnr pid medicalrecord",
          [("medical", "record"), *_numbered("patient", "hospital", "record", "nhs")]),
    _rule(ACCOUNT, "account accounts acct iban healthplan",
          [("health", "plan"), ("credit", "card"), ("card", "number"),
           *_numbered("insurance", "insurer", "member", "membership", "beneficiary", "subscriber", "policy")]),
    _rule(LICENCE_OR_DEVICE, "licence license licences licenses certificate certificates cert vin vehicle "
          "serial serialnumber udi imei macaddress",
          [("mac", "address"), ("mac", "addr"), *_numbered("device")]),
    _rule(PHOTO, "photo photos photograph picture pictures image images img face facial biometric "
          "biometrics fingerprint fingerprints retina iris voiceprint selfie portrait"),
    _rule(DATE, "date dates datum dt dob dod datetime timestamp birthday birthdate dateofbirth deathdate month",
          [("time", "stamp"), ("birth", "day"), ("birth", "month"), ("birth", "date")]),
    _rule(ZIP, "zip zipcode postcode postal postalcode plz postleitzahl", [("post", "code")]),
    _rule(ADDRESS, "address addresses addr street strasse avenue city town county municipality village "
          "district suburb neighborhood neighbourhood precinct residence domicile latitude longitude gps "
          "geolocation geocode postbox", [("house", "number"), ("po", "box")]),
    _rule(NAME, "name names firstname lastname surname forename givenname fullname middlename maidenname "
          "nickname fname lname vorname nachname initials kin guardian spouse employer"),
)
_YEAR_TOKENS = frozenset({"year", "years", "yr", "yyyy"})
_DURATION_TOKENS = frozenset({"day", "days", "d", "week", "weeks", "wk", "month", "months", "mo",
                              "hour", "hours", "h", "minute", "minutes", "min"})
_CAMEL_TOKEN = re.compile(r"[A-Z]+(?![a-z])|[A-Z]?[a-z]+|\d+")


def _name_tokens(name: str) -> list[str]:
    """``"patientFirstName"`` -> ``["patient", "first", "name"]``; ``"zip3"`` -> ``["zip", "3"]``."""
    return [token.lower() for token in _CAMEL_TOKEN.findall(name)]


def _contains_phrase(tokens: list[str], phrase: tuple[str, ...]) -> bool:
    width = len(phrase)
    return any(tuple(tokens[i:i + width]) == phrase for i in range(len(tokens) - width + 1))


def _kind_by_name(tokens: list[str]) -> str | None:
    for rule in _NAME_RULES:
        if rule.matches(tokens):
            if rule.kind == DATE and tokens and tokens[-1] in _YEAR_TOKENS:
                continue
            return rule.kind
    return None


# --- by value -----------------------------------------------------------------------------
# Every pattern runs in both RE2 (pyarrow) and Python re: no look-around, no back-references,
# no \p{..}; letters of names and places are spelled as Latin-1 ranges.
_UP = "[A-ZÀ-ÖØ-Þ]"
_LOW = "[a-zß-öø-ÿ]"
_MONTH = (r"(?:jan(?:uary)?|feb(?:ruary)?|mar(?:ch)?|apr(?:il)?|may|june?|july?|aug(?:ust)?"
          r"|sep(?:t(?:ember)?)?|oct(?:ober)?|nov(?:ember)?|dec(?:ember)?)")
_DAY = r"(?:0?[1-9]|[12]\d|3[01])"
_MONTH_NUMBER = r"(?:0?[1-9]|1[0-2])"
_HEX4 = "[0-9A-Fa-f]{1,4}"
_VALUE_RULES: tuple[tuple[str, tuple[str, ...]], ...] = (  # first match wins
    (EMAIL, (r"[A-Za-z0-9._%+-]+@[A-Za-z0-9.-]+\.[A-Za-z]{2,}",)),
    (URL, (r"(?i:\b(?:https?|ftp)://)", r"(?i:\bwww\.[a-z0-9-]+\.)")),
    (IP, (r"\b(?:(?:25[0-5]|2[0-4]\d|1\d\d|[1-9]?\d)\.){3}(?:25[0-5]|2[0-4]\d|1\d\d|[1-9]?\d)\b",
          rf"\b(?:{_HEX4}:){{7}}{_HEX4}\b", rf"\b(?:{_HEX4}:){{1,6}}:(?:{_HEX4})?")),
    (LICENCE_OR_DEVICE, (r"\b[0-9A-Fa-f]{2}(?:[:-][0-9A-Fa-f]{2}){5}\b", r"\(01\)\d{14}")),
    (SSN, (r"\b\d{3}-\d{2}-\d{4}\b", r"(?i:\bssn\b)\W*\d{9}\b")),
    (ZIP, (r"\b\d{5}-\d{4}\b",)),
    (DATE, (rf"\b(?:19|20)\d{{2}}[-/.]{_MONTH_NUMBER}[-/.]{_DAY}(?:\D|$)",
            r"\b(?:19|20)\d{2}[-/](?:0[1-9]|1[0-2])(?:\D|$)",
            rf"\b{_DAY}[./-]{_DAY}[./-](?:\d{{4}}|\d{{2}})\b",
            rf"(?i:\b{_MONTH}\.?\s+{_DAY}(?:st|nd|rd|th)?,?\s+\d{{4}}\b)",
            rf"(?i:\b{_MONTH}\.?,?\s+(?:19|20)\d{{2}}\b)")),
    (ACCOUNT, (r"\b[A-Z]{2}\d{2}(?: [A-Z0-9]{4}){3,7}(?: [A-Z0-9]{1,3})?\b", r"\b\d{4}(?:[ -]\d{4}){3}\b")),
    (PHONE, (r"(?:\+?1[\s.-]?)?(?:\(\d{3}\)\s?|\b\d{3}[\s.-])\d{3}[\s.-]\d{4}\b",
             r"\+\d{1,3}[\s.-]?\(?\d{1,4}\)?(?:[\s.-]?\d{2,4}){2,5}\b",
             r"\b0\d{1,4}(?:[ /-]\d{2,4}){2,4}\b")),
    (MRN, (r"(?i:\b(?:mrn|medical record(?: number| no\.?)?)\b\s*[:#]?\s*\d{4,})",)),
    (PHOTO, (r"(?i:\bdata:image/)", r"(?i:\.(?:jpe?g|png|gif|bmp|tiff?|heic|dcm)\b)")),
    (ADDRESS, (rf"\b\d{{1,5}}[A-Za-z]?\s+(?:{_UP}[A-Za-zß-öø-ÿ'.-]*\s+){{1,3}}"
               r"(?i:street|st|avenue|ave|road|rd|boulevard|blvd|lane|ln|drive|dr|court|ct|place|pl|way"
               r"|terrace|highway|hwy|square|sq)\b",
               r"(?i:\b[a-zß-öø-ÿ]{3,}(?:strasse|straße|str\.|gasse|weg|allee|platz)\s+\d{1,4}[a-z]?\b)",
               r"(?i:\bp\.?\s?o\.?\s+box\s+\d+)")),
    (NAME, (rf"^{_UP}{_LOW}+(?:[-' ]{_UP}{_LOW}+)?,\s*{_UP}{_LOW}+(?:[- ]{_UP}{_LOW}*\.?)?$",
            rf"\b(?:Mr|Mrs|Ms|Mx|Miss|Dr|Prof|Herr|Frau|Mme|Mlle)\.?\s+{_UP}{_LOW}+")),
)
# in the pseudonymous key columns only: a bare number of 6 or more digits is a record number
_KEY_RULES = (*_VALUE_RULES, (MRN, (r"^\d{6,}$",)))


def _alternation(patterns: Sequence[str]) -> str:
    return "|".join(f"(?:{p})" for p in patterns)


_VALUE_SCREEN = _alternation([_alternation(patterns) for _, patterns in _VALUE_RULES])
_KEY_SCREEN = _alternation([_alternation(patterns) for _, patterns in _KEY_RULES])
_AT_MOST_3_DIGITS = r"^\s*\d{1,3}\s*$"
_ARROW_TEXT = pd.StringDtype("pyarrow")


def _classify(texts: pd.Series, *, key: bool) -> pd.Series:
    """The kind of identifier of each text that holds one (texts holding none are left out).

    All texts are screened with one combined regex; only the hits are classified, kind by kind.
    """
    hit = texts.str.contains(_KEY_SCREEN if key else _VALUE_SCREEN, regex=True).fillna(False).astype(bool)
    pending = texts[hit.to_numpy()]
    kinds = pd.Series(None, index=pending.index, dtype=object)
    for kind, patterns in _KEY_RULES if key else _VALUE_RULES:
        if pending.empty:
            break
        match = pending.str.contains(_alternation(patterns), regex=True).fillna(False).astype(bool).to_numpy()
        kinds[pending.index[match]] = kind
        pending = pending[~match]
    return kinds.dropna()


# --- headers ------------------------------------------------------------------------------
def header_labels(names: Sequence[object]) -> list[str]:
    """How findings and messages name each column of a header: its name, or ``"column N (name
    withheld)"`` (N counted from 1) when the header itself looks like an identifier value, as in a
    CSV read without its header row. All names are screened together, with the value rules.

    Parameters
    ----------
    names
        The header in column order (any objects; compared as ``str(name)``).

    Returns
    -------
    list of str
        One label per name, in order.
    """
    texts = [str(name) for name in names]
    withheld = _header_kinds(texts)
    return [withheld_label(p) if p in withheld else text for p, text in enumerate(texts)]


def header_label(name: object, position: int) -> str:
    """The label of one header: ``str(name)``, or ``"column {position + 1} (name withheld)"`` when the
    name looks like an identifier value (:func:`header_labels`).

    Parameters
    ----------
    name
        The column's name as given.
    position
        Its 0-based position in the header (shown counted from 1).
    """
    return withheld_label(position) if _header_kinds([str(name)]) else str(name)


def _header_kinds(names: list[str]) -> dict[int, str]:
    """Position -> kind of identifier, for the headers that look like an identifier value."""
    return {int(p): str(kind) for p, kind in _classify(pd.Series(names, dtype=_ARROW_TEXT), key=False).items()}


def withheld_label(position: int) -> str:
    """``"column {position + 1} (name withheld)"``: a column named by its 0-based ``position``, counted from 1."""
    return f"column {position + 1} (name withheld)"


# --- one table, one column ---------------------------------------------------------------
_Finding = tuple[str, str, "int | None"]


def _table_findings(table: str, frame: pd.DataFrame) -> list[IdentifierFinding]:
    """Findings of one table, in column order; the text of its key columns is screened in one pass,
    that of all its other text columns in another."""
    names = [str(name) for name in frame.columns]
    found: dict[int, list[_Finding]] = {position: [] for position in range(len(names))}
    for position, kind in _header_kinds(names).items():
        found[position].append((kind, BY_NAME, None))  # a header holding a value: CSV read without its header
    labels = [withheld_label(p) if found[p] else name for p, name in enumerate(names)]
    text_columns: dict[bool, dict[int, pd.Series]] = {True: {}, False: {}}
    for position, name in enumerate(names):
        column = frame.iloc[:, position]
        findings, scan_text = _column_findings(name, column, frame=frame)
        found[position].extend(findings)
        if scan_text:
            text_columns[name in _KEY_NAMES][position] = column
    for key, columns in text_columns.items():
        for position, findings in _text_findings(columns, key=key).items():
            found[position].extend(findings)
    return [IdentifierFinding(table, labels[p], kind, how, rows) for p in found for kind, how, rows in found[p]]


def _column_findings(name: str, column: pd.Series, *, frame: pd.DataFrame) -> tuple[list[_Finding], bool]:
    """Findings from the column's name, type and ages, and whether its text must be scanned."""
    tokens = _name_tokens(name)
    contract = name in _CONTRACT_NAMES
    kind = None if contract else _kind_by_name(tokens)
    if kind == ZIP:
        rows = _rows_beyond_zip3(column)
        return ([(ZIP, BY_VALUE, rows)] if rows else []), False
    if kind is not None:
        return [(kind, BY_NAME, None)], False
    if _is_date_typed(column.dtype):
        rows = int(column.notna().sum())
        return ([(DATE, BY_VALUE, rows)] if rows else []), False
    findings: list[_Finding] = []
    if name in _KEY_NAMES and _is_number(column.dtype):
        rows = int((column.abs() >= 100_000).sum())  # 6 or more digits
        if rows:
            findings.append((MRN, BY_VALUE, rows))
    rows = _rows_over_age(name, tokens, column, contract=contract, frame=frame)
    if rows:
        findings.append((AGE_OVER_89, BY_VALUE, rows))
    return findings, _is_text(column.dtype)


def _text_findings(columns: Mapping[int, pd.Series], *, key: bool) -> dict[int, list[_Finding]]:
    """Findings by value in text columns: distinct values of all columns screened together."""
    distinct = {position: _distinct_texts(column) for position, column in columns.items()}
    if not distinct:
        return {}
    sizes = [len(texts) for _, _, texts in distinct.values()]
    owner = np.repeat(list(distinct), sizes)  # the column position of each distinct text
    starts = dict(zip(distinct, np.cumsum([0, *sizes])))
    kinds = _classify(pd.concat([texts for _, _, texts in distinct.values()], ignore_index=True), key=key)
    found: dict[int, list[_Finding]] = {}
    for position in dict.fromkeys(owner[kinds.index]):
        counted, originals, _ = distinct[position]
        mine = kinds[owner[kinds.index] == position]
        present = set(mine.unique())
        for kind in dict.fromkeys(k for k, _ in _KEY_RULES if k in present):
            matched = originals.iloc[mine.index[mine == kind] - starts[position]]
            found.setdefault(position, []).append((kind, BY_VALUE, int(counted.isin(matched).sum())))
    return found


def _distinct_texts(column: pd.Series) -> tuple[pd.Series, pd.Series, pd.Series]:
    """``(counted, originals, texts)``: the column rows are counted in, its distinct non-missing
    values, and their text (RE2-ready), the last two aligned."""
    try:
        originals = pd.Series(pd.unique(column))
    except TypeError:  # unhashable cells that are not nested values (refused before): scan their text
        column = column.map(str, na_action="ignore")
        originals = pd.Series(pd.unique(column))
    originals = originals.dropna().reset_index(drop=True)
    if isinstance(originals.dtype, (pd.StringDtype, pd.ArrowDtype)):
        texts = originals.astype(_ARROW_TEXT)
    else:
        texts = originals.astype(object).astype(str).astype(_ARROW_TEXT)
    return column, originals, texts


def _rows_beyond_zip3(column: pd.Series) -> int:
    """Rows of a ZIP column holding more than a 3-digit ZIP (0 when it is a zip3 column)."""
    present = column.dropna()
    if _is_number(present.dtype):
        values = present.astype("float64")
        allowed = (values >= 0) & (values <= 999) & (values == np.floor(values))
    else:
        allowed = present.astype(str).str.contains(_AT_MOST_3_DIGITS, regex=True)
    return int((~allowed).sum())


def _rows_over_age(name: str, tokens: list[str], column: pd.Series, *, contract: bool,
                   frame: pd.DataFrame) -> int:
    """Rows giving an age above 89 as such (``age_years`` above its '90 or older' code), up to the
    oldest possible age (an older 'age' is an impossible value, not a person's age)."""
    if name == AGE_YEARS:
        return _identifying_ages(_numbers(column), above=_AGE_YEARS_TOP)
    if contract:
        return 0
    if "age" in tokens and not _DURATION_TOKENS.intersection(tokens):
        return _identifying_ages(_numbers(column), above=OLDEST_REPORTABLE_AGE)
    if "yob" in tokens or "birthyear" in tokens or {"birth", "year"} <= set(tokens):
        return _identifying_ages(_reference_year(frame) - _numbers(column), above=OLDEST_REPORTABLE_AGE)
    return 0


def _identifying_ages(ages: np.ndarray, *, above: float) -> int:
    """How many ages are above ``above`` and at most :data:`OLDEST_POSSIBLE_AGE` (NaN counts as none)."""
    with np.errstate(invalid="ignore"):
        return int(((ages > above) & (ages <= OLDEST_POSSIBLE_AGE)).sum())


def _numbers(column: pd.Series) -> np.ndarray:
    """A column as float64 numbers by position, NaN where it holds none (distinct texts parsed once)."""
    if pd.api.types.is_bool_dtype(column.dtype):
        return np.full(len(column), np.nan)
    if _is_number(column.dtype):
        return column.astype("float64").to_numpy(na_value=np.nan)
    distinct = pd.Series(pd.unique(column)).dropna()
    parsed = pd.to_numeric(distinct.astype(object).astype(str), errors="coerce")
    lookup = pd.Series(parsed.to_numpy(dtype="float64"), index=distinct.to_numpy())
    return column.map(lookup).to_numpy(dtype="float64", na_value=np.nan)


def _reference_year(frame: pd.DataFrame) -> np.ndarray | int:
    """The year an age is reckoned at, by row: the row's procedure_year, else this year."""
    this_year = _dt.date.today().year
    if PROCEDURE_YEAR in frame.columns and frame.columns.is_unique:
        return np.nan_to_num(_numbers(frame[PROCEDURE_YEAR]), nan=this_year)
    return this_year


def _is_number(dtype: object) -> bool:
    return pd.api.types.is_numeric_dtype(dtype) and not pd.api.types.is_bool_dtype(dtype)


def _is_text(dtype: object) -> bool:
    if isinstance(dtype, pd.ArrowDtype):
        return pa_arrow.types.is_string(dtype.pyarrow_dtype) or pa_arrow.types.is_large_string(dtype.pyarrow_dtype)
    return dtype == object or isinstance(dtype, (pd.StringDtype, pd.CategoricalDtype))


def _is_date_typed(dtype: object) -> bool:
    if isinstance(dtype, pd.ArrowDtype):
        arrow = dtype.pyarrow_dtype
        return pa_arrow.types.is_timestamp(arrow) or pa_arrow.types.is_date(arrow)
    if isinstance(dtype, pd.PeriodDtype):
        return not dtype.freqstr.upper().startswith(("Y", "A"))
    return pd.api.types.is_datetime64_any_dtype(dtype)
