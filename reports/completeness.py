"""Data completeness and case ascertainment per site, judged against the registry, before any verdict on a provider."""

from __future__ import annotations

import numbers
from collections.abc import Callable, Mapping
from dataclasses import dataclass

import numpy as np
import pandas as pd
from scipy import stats

from models.suppression import SUPPRESSED, suppress_table
from records import schema as s

# --- output columns (counts of cases: COUNT_COLUMNS) ------------------------------------------------
PROCEDURES = "procedures"
LEVELS = "levels"
LEAKAGE_ASSESSED = "leakage_assessed"
LEAKAGE_NOT_ASSESSED = "leakage_not_assessed"
IMAGING_MISSING = "imaging_missing"
INFECTION_MISSING = "infection_missing"
RECENT_PROCEDURES = "recent_procedures"
"""Procedures in the baseline years and the latest year together."""
BASELINE_PROCEDURES = "baseline_procedures"
LATEST_PROCEDURES = "latest_year_procedures"
COUNT_COLUMNS: tuple[str, ...] = (PROCEDURES, LEVELS, LEAKAGE_ASSESSED, LEAKAGE_NOT_ASSESSED, IMAGING_MISSING,
                                  INFECTION_MISSING, RECENT_PROCEDURES, BASELINE_PROCEDURES, LATEST_PROCEDURES)
"""Columns holding counts of cases: ints, or ``"<11"`` in the published table."""

# --- statistics --------------------------------------------------------------------------------------
LEAKAGE_SHARE, LEAKAGE_REGISTRY, LEAKAGE_RATIO, LEAKAGE_P = (
    "leakage_not_assessed_share", "leakage_not_assessed_registry_share", "leakage_not_assessed_ratio",
    "leakage_not_assessed_p")
IMAGING_SHARE, IMAGING_REGISTRY, IMAGING_RATIO, IMAGING_P = (
    "imaging_missing_share", "imaging_missing_registry_share", "imaging_missing_ratio", "imaging_missing_p")
INFECTION_SHARE, INFECTION_EXPECTED, INFECTION_EXPECTED_SHARE, INFECTION_RATIO, INFECTION_P = (
    "infection_missing_share", "infection_missing_expected", "infection_missing_expected_share",
    "infection_missing_ratio", "infection_missing_p")
LATEST_EXPECTED, VOLUME_RATIO, VOLUME_P = "latest_year_expected", "volume_ratio", "volume_p"
LEAKAGE_FLAG, IMAGING_FLAG, INFECTION_FLAG, VOLUME_FLAG = (
    "leakage_not_assessed_flag", "imaging_missing_flag", "infection_missing_flag", "volume_flag")
POOR, REASONS, NOTES = "poor", "reasons", "notes"
YEAR_PROCEDURES = "procedures"
"""Count column of :attr:`Completeness.by_year` (with ``infection_missing``)."""

# --- default thresholds (see site_completeness) -------------------------------------------------------
MAX_MISSING_SHARE = 0.20
MIN_RATIO = 1.5
ALPHA = 0.01
MIN_VOLUME_RATIO = 0.5
MIN_ROWS = 30
BASELINE_YEARS = 3
_SHOWN = 5


@dataclass(frozen=True)
class Thresholds:
    """The rules a site's completeness is judged by (defaults and reasons: :func:`site_completeness`)."""

    max_missing_share: float = MAX_MISSING_SHARE
    min_ratio: float = MIN_RATIO
    alpha: float = ALPHA
    min_volume_ratio: float = MIN_VOLUME_RATIO
    min_rows: int = MIN_ROWS
    baseline_years: int = BASELINE_YEARS


@dataclass(frozen=True)
class _Check:
    """One check: its flag column, the count columns its verdict rests on, its denominator, and its words."""

    flag: str
    counts: tuple[str, ...]
    denominator: str
    label: str
    unit: str
    reason: Callable[[pd.Series, int], str]


def _percent(share: float) -> str:
    return f"{share:.1%}" if 0 < share < 0.095 else f"{share:.0%}"


_CHECKS: tuple[_Check, ...] = (
    _Check(LEAKAGE_FLAG, (LEVELS, LEAKAGE_ASSESSED), LEVELS, "leakage assessment", "levels",
           lambda r, _: f"leakage not assessed for {_percent(r[LEAKAGE_SHARE])} of levels "
                        f"(registry {_percent(r[LEAKAGE_REGISTRY])})"),
    _Check(IMAGING_FLAG, (LEAKAGE_ASSESSED, IMAGING_MISSING), LEAKAGE_ASSESSED, "leakage imaging",
           "levels assessed for leakage",
           lambda r, _: f"imaging not recorded for {_percent(r[IMAGING_SHARE])} of levels assessed for leakage "
                        f"(registry {_percent(r[IMAGING_REGISTRY])})"),
    _Check(INFECTION_FLAG, (PROCEDURES, INFECTION_MISSING), PROCEDURES, "90-day infection follow-up", "procedures",
           lambda r, _: f"90-day infection follow-up missing for {_percent(r[INFECTION_SHARE])} of procedures "
                        f"({_percent(r[INFECTION_EXPECTED_SHARE])} expected from the registry in the same years)"),
    _Check(VOLUME_FLAG, (RECENT_PROCEDURES, LATEST_PROCEDURES), BASELINE_PROCEDURES, "latest-year volume",
           "procedures in the baseline years",
           lambda r, latest: f"{latest} volume {r[VOLUME_RATIO]:.2f} times the site's share of the years before "
                             f"({int(r[LATEST_PROCEDURES])} procedures, {r[LATEST_EXPECTED]:.0f} expected)"),
)
_COMPLEMENTS = {LEAKAGE_ASSESSED: LEVELS, IMAGING_MISSING: LEAKAGE_ASSESSED, INFECTION_MISSING: PROCEDURES,
                RECENT_PROCEDURES: PROCEDURES, LATEST_PROCEDURES: RECENT_PROCEDURES}
"""``part -> whole`` pairs: each difference is itself a count of cases (not assessed = levels - assessed,
imaging recorded, follow-up complete, procedures before the baseline years, baseline procedures)."""
_DIFFERENCES = {LEAKAGE_NOT_ASSESSED: (LEVELS, LEAKAGE_ASSESSED), BASELINE_PROCEDURES: (RECENT_PROCEDURES,
                                                                                       LATEST_PROCEDURES)}
"""Count columns shown as the difference of a declared pair: published exactly when both are."""
_DERIVED = {
    **{c: (LEVELS, LEAKAGE_ASSESSED) for c in (LEAKAGE_SHARE, LEAKAGE_RATIO, LEAKAGE_P, LEAKAGE_FLAG)},
    **{c: (LEAKAGE_ASSESSED, IMAGING_MISSING) for c in (IMAGING_SHARE, IMAGING_RATIO, IMAGING_P, IMAGING_FLAG)},
    INFECTION_EXPECTED: (PROCEDURES,), INFECTION_EXPECTED_SHARE: (PROCEDURES,),
    **{c: (PROCEDURES, INFECTION_MISSING) for c in (INFECTION_SHARE, INFECTION_RATIO, INFECTION_P, INFECTION_FLAG)},
    **{c: (RECENT_PROCEDURES, LATEST_PROCEDURES) for c in (LATEST_EXPECTED, VOLUME_RATIO, VOLUME_P, VOLUME_FLAG)},
}


@dataclass(frozen=True)
class Completeness:
    """Completeness per site: raw counts and verdicts, the per-year volumes, and the rules applied.

    ``table`` and ``by_year`` hold raw counts and are for internal use; publish :meth:`published`.
    """

    table: pd.DataFrame
    by_year: pd.DataFrame
    method: str
    thresholds: Thresholds
    latest_year: int

    def published(self, already: Mapping[str, np.ndarray] | None = None) -> pd.DataFrame:
        """The table with small counts withheld and verdicts that rest only on published counts.

        Suppression (:func:`models.suppression.suppress_table`, the whole table one group, its totals
        taken as published elsewhere): every count 1..10 is ``"<11"``; a count whose complement is 1..10
        is withheld too (levels not assessed, imaging recorded, follow-up complete, procedures before the
        baseline years, baseline procedures); a site with 1..10 procedures has every count and statistic
        withheld; further cells are withheld so no withheld count can be worked out from a total; shares,
        ratios, p-values, expected counts and per-check flags are withheld with the counts they come from.
        ``unprotectable="withhold"``: a table that cannot be protected is withheld entirely. ``already``: count
        column -> mask of cells another published table withholds (the QI table's assessed levels of a site are
        this table's ``leakage_assessed``), withheld here too.

        Verdicts are recomputed from the published cells only, so they reveal nothing the table does not:
        a check whose counts are all published keeps its flag and its reason with numbers; a check with a
        withheld count is not judged (a note says so), because even "failed" or "passed" without numbers
        would bound the withheld count (e.g. 48 levels and "over 20% not assessed" with a count shown as
        ``"<11"`` gives exactly 10). ``poor`` is True when a published check fails, False when every check
        is published and none fails, and <NA> (withheld) otherwise.

        Returns
        -------
        DataFrame
            The columns of :attr:`table`; count columns object (ints or ``"<11"``), statistics float (NaN
            when withheld), flags object (None when withheld), ``poor`` nullable boolean, ``reasons`` and
            ``notes`` lists of sentences.
        """
        plain = self.table.drop(columns=[*_DIFFERENCES, POOR, REASONS, NOTES])
        counts = [c for c in COUNT_COLUMNS if c not in _DIFFERENCES]
        out = suppress_table(plain, count_columns=counts, derived=_DERIVED, complements=_COMPLEMENTS,
                             row_total=PROCEDURES, unprotectable="withhold", already=already)
        for column, (whole, part) in _DIFFERENCES.items():
            shown = (out[whole] != SUPPRESSED) & (out[part] != SUPPRESSED)
            out[column] = self.table[column].astype(object).where(shown, SUPPRESSED)
        known = {c.flag: np.logical_and.reduce([(out[k] != SUPPRESSED).to_numpy() for k in c.counts])
                 for c in _CHECKS}
        poor, reasons, notes = _verdicts(self.table, self.thresholds, self.latest_year, known=known)
        out[POOR], out[REASONS], out[NOTES] = poor, reasons, notes
        return out[list(self.table.columns)]


def site_completeness(procedures: pd.DataFrame, levels: pd.DataFrame, *,
                      max_missing_share: float = MAX_MISSING_SHARE, min_ratio: float = MIN_RATIO,
                      alpha: float = ALPHA, min_volume_ratio: float = MIN_VOLUME_RATIO, min_rows: int = MIN_ROWS,
                      baseline_years: int = BASELINE_YEARS, latest_year: int | None = None) -> Completeness:
    """Per site: procedures, levels, missing leakage assessment, imaging and follow-up, and latest-year volume.

    Checks (a site fails one when the rule holds; ``poor`` when it fails any):

    * leakage not assessed (``LEAKAGE`` missing), share of the site's levels; and imaging not recorded
      (``LEAKAGE_IMAGING`` missing among levels whose leakage is not missing), share of those levels.
      Fails when the share is above ``max_missing_share``, or when it is at least ``min_ratio`` times the
      registry's share and the exact binomial test of the count against the registry share (one-sided,
      upper) gives p < ``alpha``. Levels are tested as independent although they cluster in procedures,
      so p is optimistic; the ratio requirement keeps a large site from failing on a trivial excess.
    * 90-day infection follow-up missing (``INFECTION_90D`` missing), share of procedures. Expected
      missing E = sum over the site's procedure years of its procedures times the registry's missing share
      in that year. Fails when the excess (O - E) is above ``max_missing_share`` of its procedures, or when
      O/E >= ``min_ratio`` and the exact Poisson test P(X >= O | E) < ``alpha``.
    * latest-year volume: expected latest-year procedures = registry latest-year total times the site's
      share of registry procedures in the ``baseline_years`` years before. Fails when observed/expected is
      below ``min_volume_ratio`` and the one-sided Fisher exact test (hypergeometric lower tail of the 2x2
      table site/rest by latest/baseline) gives p < ``alpha``. Fisher rather than a binomial with the
      baseline share taken as known, which ignores that share's own noise and over-flags small sites. A
      few baseline years rather than all earlier years: sites joining over time shrink an old site's share
      without any case being lost.

    A check is not judged (it cannot fail; ``notes`` says why) when its denominator (levels, levels
    assessed, procedures, baseline procedures) is below ``min_rows``.

    Parameters
    ----------
    procedures
        One row per procedure with ``PROCEDURE_ID`` (unique), ``SITE_ID``, ``PROCEDURE_YEAR`` (whole, none
        missing) and ``INFECTION_90D`` (missing = no follow-up).
    levels
        One row per treated level with ``PROCEDURE_ID`` (of a row of ``procedures``), ``LEAKAGE`` and
        ``LEAKAGE_IMAGING`` (missing allowed in both).
    max_missing_share
        Default 0.20: an absolute floor - a fifth of records missing is poor whatever the registry does
        (the relative rule alone would pass every site of a registry that is itself incomplete).
    min_ratio
        Default 1.5: a relative failure needs half as much missing again as the registry.
    alpha
        Default 0.01: one-sided exact tests; strict because every site is tested on four checks.
    min_volume_ratio
        Default 0.5: latest-year share under half the baseline share - cases are being lost, not drifting.
    min_rows
        Default 30: below it one record moves a share by over 3 points and the exact tests have little power.
    baseline_years
        Default 3: years before ``latest_year`` whose share is the baseline.
    latest_year
        The year whose volume is checked; default the last procedure year (which must be present).

    Returns
    -------
    Completeness
        ``table``: one row per site (sorted) with ``SITE_ID``, :data:`COUNT_COLUMNS`, shares, registry shares,
        ratios, p-values, expected counts, the four ``*_flag`` columns, ``poor`` (bool), ``reasons`` and
        ``notes`` (lists of sentences); raw counts, internal use. ``by_year``: ``SITE_ID``,
        ``PROCEDURE_YEAR``, ``procedures`` and ``infection_missing`` per site and year with procedures
        (raw, internal: its cells and the published expected counts would need two-dimensional protection).

    Raises
    ------
    ValueError
        A missing column, an empty ``procedures``, a missing or repeated procedure id, a missing site, a
        missing or fractional year, a level whose procedure is not in ``procedures``, a threshold out of
        range, or a ``latest_year`` without procedures.

    References
    ----------
    HQIP. Detection and management of outliers for National Clinical Audits, 2017, and NCAPOP outlier
    guidance, January 2024 (case ascertainment and data completeness checked before any verdict).
    Breslow NE, Day NE. Statistical Methods in Cancer Research II. IARC 1987 (indirect standardisation,
    exact Poisson test of O against E). Fisher RA. J R Stat Soc 1922;85:87-94 (exact test of a 2x2 table).
    """
    rules = _check_thresholds(max_missing_share=max_missing_share, min_ratio=min_ratio, alpha=alpha,
                              min_volume_ratio=min_volume_ratio, min_rows=min_rows, baseline_years=baseline_years)
    _require_columns(procedures, (s.PROCEDURE_ID, s.SITE_ID, s.PROCEDURE_YEAR, s.INFECTION_90D), "procedures")
    _require_columns(levels, (s.PROCEDURE_ID, s.LEAKAGE, s.LEAKAGE_IMAGING), "levels")
    if len(procedures) == 0:
        raise ValueError("procedures must have at least one row; got 0")
    level_rows = _level_procedure_rows(procedures[s.PROCEDURE_ID], levels[s.PROCEDURE_ID])
    site_codes, sites = _site_codes(procedures[s.SITE_ID])
    years = _whole_years(procedures[s.PROCEDURE_YEAR])
    latest = int(years.max()) if latest_year is None else _check_latest(latest_year, years)
    table, by_year = _count(site_codes, sites, years, procedures[s.INFECTION_90D].isna().to_numpy(),
                            level_sites=site_codes[level_rows], not_assessed=levels[s.LEAKAGE].isna().to_numpy(),
                            no_imaging=levels[s.LEAKAGE_IMAGING].isna().to_numpy(), latest=latest,
                            baseline_years=rules.baseline_years)
    table = _judge(table, rules)
    poor, reasons, notes = _verdicts(table, rules, latest, known={c.flag: np.ones(len(table), bool) for c in _CHECKS})
    table = table.assign(**{POOR: poor.astype(bool), REASONS: reasons, NOTES: notes})
    return Completeness(table=table, by_year=by_year, method=_describe(table, rules, latest, years),
                        thresholds=rules, latest_year=latest)


# --------------------------------------------------------------------------------------------- counts
def _count(site_codes: np.ndarray, sites: pd.Index, years: np.ndarray, no_follow_up: np.ndarray, *,
           level_sites: np.ndarray, not_assessed: np.ndarray, no_imaging: np.ndarray, latest: int,
           baseline_years: int) -> tuple[pd.DataFrame, pd.DataFrame]:
    n_sites, first = len(sites), int(years.min())
    n_years = int(years.max()) - first + 1
    cell = site_codes * n_years + (years - first)
    per_cell = np.bincount(cell, minlength=n_sites * n_years).reshape(n_sites, n_years)
    missing_cell = np.bincount(cell, weights=no_follow_up, minlength=n_sites * n_years).reshape(n_sites, n_years)
    registry_year = per_cell.sum(axis=0)
    year_share = np.divide(missing_cell.sum(axis=0), registry_year, out=np.zeros(n_years), where=registry_year > 0)
    latest_col = latest - first
    baseline_cols = np.arange(max(latest_col - baseline_years, 0), latest_col)

    def per_site(mask: np.ndarray) -> np.ndarray:
        return np.bincount(level_sites, weights=mask, minlength=n_sites).round().astype(np.int64)

    n_levels = np.bincount(level_sites, minlength=n_sites).astype(np.int64)
    not_assessed_n = per_site(not_assessed)
    latest_n = per_cell[:, latest_col].astype(np.int64)
    baseline_n = per_cell[:, baseline_cols].sum(axis=1).astype(np.int64)
    table = pd.DataFrame({
        s.SITE_ID: sites, PROCEDURES: per_cell.sum(axis=1).astype(np.int64), LEVELS: n_levels,
        LEAKAGE_ASSESSED: n_levels - not_assessed_n, LEAKAGE_NOT_ASSESSED: not_assessed_n,
        IMAGING_MISSING: per_site(no_imaging & ~not_assessed),
        INFECTION_MISSING: missing_cell.sum(axis=1).round().astype(np.int64),
        RECENT_PROCEDURES: baseline_n + latest_n, BASELINE_PROCEDURES: baseline_n, LATEST_PROCEDURES: latest_n,
        INFECTION_EXPECTED: per_cell @ year_share,
    })
    registry_baseline = int(registry_year[baseline_cols].sum())
    table.attrs.update(registry_latest=int(registry_year[latest_col]), registry_baseline=registry_baseline)
    site_idx, year_idx = np.nonzero(per_cell)
    by_year = pd.DataFrame({s.SITE_ID: sites[site_idx], s.PROCEDURE_YEAR: (year_idx + first).astype(np.int64),
                            YEAR_PROCEDURES: per_cell[site_idx, year_idx].astype(np.int64),
                            INFECTION_MISSING: missing_cell[site_idx, year_idx].round().astype(np.int64)})
    return table, by_year


# --------------------------------------------------------------------------------------------- tests
def _judge(table: pd.DataFrame, rules: Thresholds) -> pd.DataFrame:
    """Shares, registry shares, exact p-values and the four flags, from the counts."""
    t = table
    levels, assessed, procs = (t[c].to_numpy(np.float64) for c in (LEVELS, LEAKAGE_ASSESSED, PROCEDURES))
    not_assessed, imaging, infection = (t[c].to_numpy(np.float64) for c in
                                        (LEAKAGE_NOT_ASSESSED, IMAGING_MISSING, INFECTION_MISSING))
    leak_reg, img_reg = _ratio(not_assessed.sum(), levels.sum()), _ratio(imaging.sum(), assessed.sum())
    expected = t[INFECTION_EXPECTED].to_numpy(np.float64)
    baseline, latest = t[BASELINE_PROCEDURES].to_numpy(np.float64), t[LATEST_PROCEDURES].to_numpy(np.float64)
    reg_latest, reg_baseline = t.attrs["registry_latest"], t.attrs["registry_baseline"]
    latest_expected = baseline * _ratio(reg_latest, reg_baseline) if reg_baseline > 0 else np.full(len(t), np.nan)
    with np.errstate(divide="ignore", invalid="ignore"):
        volume_p = stats.hypergeom.cdf(latest, reg_baseline + reg_latest, reg_latest, baseline + latest)
        columns = {
            LEAKAGE_SHARE: _ratio(not_assessed, levels), LEAKAGE_REGISTRY: leak_reg,
            LEAKAGE_RATIO: _ratio(_ratio(not_assessed, levels), leak_reg),
            LEAKAGE_P: stats.binom.sf(not_assessed - 1, levels, leak_reg),
            IMAGING_SHARE: _ratio(imaging, assessed), IMAGING_REGISTRY: img_reg,
            IMAGING_RATIO: _ratio(_ratio(imaging, assessed), img_reg),
            IMAGING_P: stats.binom.sf(imaging - 1, assessed, img_reg),
            INFECTION_SHARE: _ratio(infection, procs), INFECTION_EXPECTED_SHARE: _ratio(expected, procs),
            INFECTION_RATIO: _ratio(infection, expected), INFECTION_P: stats.poisson.sf(infection - 1, expected),
            LATEST_EXPECTED: latest_expected, VOLUME_RATIO: _ratio(latest, latest_expected),
            VOLUME_P: np.where(baseline > 0, volume_p, np.nan),
        }
    c = columns
    relative = {k: (c[p] < rules.alpha) & (c[r] >= rules.min_ratio)
                for k, p, r in ((LEAKAGE_FLAG, LEAKAGE_P, LEAKAGE_RATIO), (IMAGING_FLAG, IMAGING_P, IMAGING_RATIO),
                                (INFECTION_FLAG, INFECTION_P, INFECTION_RATIO))}
    judged = {chk.flag: t[chk.denominator].to_numpy() >= rules.min_rows for chk in _CHECKS}
    excess = _ratio(infection - expected, procs)
    flags = {
        LEAKAGE_FLAG: (c[LEAKAGE_SHARE] > rules.max_missing_share) | relative[LEAKAGE_FLAG],
        IMAGING_FLAG: (c[IMAGING_SHARE] > rules.max_missing_share) | relative[IMAGING_FLAG],
        INFECTION_FLAG: (excess > rules.max_missing_share) | relative[INFECTION_FLAG],
        VOLUME_FLAG: (c[VOLUME_RATIO] < rules.min_volume_ratio) & (c[VOLUME_P] < rules.alpha),
    }
    out = t.assign(**columns, **{k: v & judged[k] for k, v in flags.items()})
    out.attrs = dict(t.attrs)
    return out


def _ratio(numerator: np.ndarray | float, denominator: np.ndarray | float) -> np.ndarray:
    """Elementwise ratio; NaN for 0/0, inf for x/0 (a registry share of 0 against a site's missing)."""
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.divide(np.asarray(numerator, np.float64), np.asarray(denominator, np.float64))


def _verdicts(table: pd.DataFrame, rules: Thresholds, latest: int, *,
              known: Mapping[str, np.ndarray]) -> tuple[pd.Series, list[list[str]], list[list[str]]]:
    """``poor`` (True/False/<NA>), reasons and notes per site, using only checks marked known."""
    poor = pd.array([pd.NA] * len(table), dtype="boolean")
    reasons: list[list[str]] = [[] for _ in range(len(table))]
    notes: list[list[str]] = [[] for _ in range(len(table))]
    any_failed = np.zeros(len(table), bool)
    all_known = np.ones(len(table), bool)
    for check in _CHECKS:
        shown, failed = known[check.flag], table[check.flag].to_numpy(bool)
        denominator = table[check.denominator].to_numpy()
        for i in np.flatnonzero(shown & failed):
            reasons[i].append(check.reason(table.iloc[i], latest))
        for i in np.flatnonzero(shown & (denominator < rules.min_rows)):
            notes[i].append(f"{check.label} not judged: {int(denominator[i])} {check.unit} (fewer than "
                            f"{rules.min_rows})")
        for i in np.flatnonzero(~shown):
            notes[i].append(f"{check.label} not judged here: counts withheld")
        any_failed |= shown & failed
        all_known &= shown
    poor[any_failed] = True
    poor[~any_failed & all_known] = False
    return pd.Series(poor, index=table.index), reasons, notes


def _describe(table: pd.DataFrame, rules: Thresholds, latest: int, years: np.ndarray) -> str:
    first_base = max(latest - rules.baseline_years, int(years.min()))
    base = f"{first_base}-{latest - 1}" if first_base < latest else "none"
    return (f"Completeness of {len(table)} sites, procedure years {int(years.min())}-{int(years.max())}. Leakage not "
            f"assessed (registry {_percent(float(table[LEAKAGE_REGISTRY].iloc[0]))} of levels) and imaging not "
            f"recorded (registry {_percent(float(table[IMAGING_REGISTRY].iloc[0]))} of assessed levels) fail above "
            f"{_percent(rules.max_missing_share)}, or at {rules.min_ratio:g} times the registry share with an exact "
            f"binomial p < {rules.alpha:g}; 90-day infection follow-up missing is compared with the registry's "
            f"share in the same procedure years (exact Poisson test, same rules on the excess); {latest} volume "
            f"is the site's share of registry procedures against its share in {base} (fails below "
            f"{rules.min_volume_ratio:g} times with a one-sided Fisher exact p < {rules.alpha:g}). No check is "
            f"judged on fewer than {rules.min_rows} rows.")


# --------------------------------------------------------------------------------------------- input checks
def _require_columns(frame: pd.DataFrame, columns: tuple[str, ...], what: str) -> None:
    if not isinstance(frame, pd.DataFrame):
        raise ValueError(f"{what} must be a pandas DataFrame; got {type(frame).__name__}")
    missing = [c for c in columns if c not in frame.columns]
    if missing:
        raise ValueError(f"{what} must have the columns {', '.join(columns)}; missing: {', '.join(missing)}")


def _level_procedure_rows(procedure_ids: pd.Series, level_ids: pd.Series) -> np.ndarray:
    """Row of ``procedures`` for each level, from one hashing of both id columns (missing ids code -1)."""
    same = procedure_ids.dtype == level_ids.dtype
    both = pd.concat([procedure_ids, level_ids] if same else [procedure_ids.astype(object), level_ids.astype(object)],
                     ignore_index=True)
    codes, _ = pd.factorize(both)
    n = len(procedure_ids)
    own, rows = codes[:n], codes[n:]
    if not np.array_equal(own, np.arange(n)):  # unique ids get codes 0..n-1 in order of appearance
        _check_rows(own < 0, f"procedures: {s.PROCEDURE_ID} must not be missing")
        _check_rows(pd.Series(own).duplicated().to_numpy(), f"procedures: {s.PROCEDURE_ID} must be unique")
    _check_rows(rows < 0, f"levels: {s.PROCEDURE_ID} must not be missing")
    _check_rows(rows >= n, f"levels: every {s.PROCEDURE_ID} must be a procedure of procedures")
    return rows


def _site_codes(sites: pd.Series) -> tuple[np.ndarray, pd.Index]:
    codes, uniques = pd.factorize(sites, sort=True)
    _check_rows(codes < 0, f"procedures: {s.SITE_ID} must not be missing")
    return codes.astype(np.int64), pd.Index(uniques)


def _whole_years(values: pd.Series) -> np.ndarray:
    years = pd.to_numeric(values, errors="coerce").astype("float64").to_numpy()
    _check_rows(np.isnan(years) | (years != np.floor(years)), f"procedures: {s.PROCEDURE_YEAR} must be a whole "
                                                              f"year, not missing")
    return years.astype(np.int64)


def _check_latest(latest_year: int, years: np.ndarray) -> int:
    if not isinstance(latest_year, numbers.Integral) or not (years == latest_year).any():
        raise ValueError(f"latest_year must be a procedure year with procedures ({int(years.min())}-"
                         f"{int(years.max())}); got {latest_year!r}")
    return int(latest_year)


def _check_thresholds(*, max_missing_share: float, min_ratio: float, alpha: float, min_volume_ratio: float,
                      min_rows: int, baseline_years: int) -> Thresholds:
    rules = Thresholds(max_missing_share=max_missing_share, min_ratio=min_ratio, alpha=alpha,
                       min_volume_ratio=min_volume_ratio, min_rows=min_rows, baseline_years=baseline_years)

    def number(x: object) -> bool:
        return isinstance(x, numbers.Real) and not isinstance(x, bool) and bool(np.isfinite(float(x)))

    def whole(x: object) -> bool:
        return isinstance(x, numbers.Integral) and not isinstance(x, bool) and int(x) >= 1

    checks = (("max_missing_share", number(max_missing_share) and 0 < max_missing_share < 1,
               "strictly between 0 and 1"),
              ("min_ratio", number(min_ratio) and min_ratio >= 1, "a number of at least 1"),
              ("alpha", number(alpha) and 0 < alpha < 1, "strictly between 0 and 1"),
              ("min_volume_ratio", number(min_volume_ratio) and 0 < min_volume_ratio <= 1, "above 0 and at most 1"),
              ("min_rows", whole(min_rows), "a whole number of at least 1"),
              ("baseline_years", whole(baseline_years), "a whole number of at least 1"))
    for name, ok, rule in checks:
        if not ok:
            raise ValueError(f"{name} must be {rule}; got {getattr(rules, name)!r}")
    return rules


def _check_rows(bad: np.ndarray, rule: str) -> None:
    if bad.any():
        rows = ", ".join(str(i) for i in np.flatnonzero(bad)[:_SHOWN]) + (", ..." if bad.sum() > _SHOWN else "")
        raise ValueError(f"{rule}; {int(bad.sum())} rows break it (rows {rows})")
