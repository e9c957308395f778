"""Records -> model frames: one row per treated level, one row per procedure.

Each frame holds the keys, the context the QI report groups by (site, operator, year, batch; never
model features), the features of ``features.dictionary`` in plain numpy dtypes (float64 with NaN for
missing, object strings for categories), and the outcome source columns the outcome specs read.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from features import dictionary as d
from records import schema as s

LEVEL_KEYS = (s.PROCEDURE_ID, s.VERTEBRA)
PROCEDURE_KEYS = (s.PROCEDURE_ID,)
CONTEXT = (s.SITE_ID, s.OPERATOR_ID, s.PROCEDURE_YEAR, s.EXTRACT_BATCH)
LEVEL_OUTCOME_SOURCES = (s.LEAKAGE, s.LEAKAGE_SITES, s.LEAKAGE_SYMPTOMATIC)
PROCEDURE_OUTCOME_SOURCES = (s.INFECTION_90D,)

_REGION_OF_VERTEBRA = {v: ("upper_thoracic" if v.startswith("t") and int(v[1:]) <= 10
                           else "lumbar" if v.startswith("l") and int(v[1:]) >= 3 else "thoracolumbar")
                       for v in s.VERTEBRAE}


def vertebral_region(vertebra: pd.Series) -> pd.Series:
    """T1-T10 upper thoracic, T11-L2 thoracolumbar junction, L3-L5 lumbar."""
    return vertebra.astype(object).map(_REGION_OF_VERTEBRA)


def cement_fill_ratio(cement_volume_ml: pd.Series, body_volume_ml: pd.Series) -> pd.Series:
    """Cement volume / vertebral body volume; NaN where the body volume was not measured."""
    return _float(cement_volume_ml) / _float(body_volume_ml)


def build_level_frame(procedures: pd.DataFrame, levels: pd.DataFrame, *,
                      imaging_when_missing: str | None = None) -> pd.DataFrame:
    """One row per treated level with keys, context, level features and outcome sources.

    Parameters
    ----------
    procedures, levels
        Accepted records in the contract's dtypes (from the registry or a validated batch).
    imaging_when_missing
        Imaging modality to assume where ``leakage_imaging`` is missing (``"ct"`` when scoring planned
        cases: the risk of a leak that CT would see). ``None`` keeps it missing (not eligible for training).

    Raises
    ------
    ValueError
        A level's procedure is absent from ``procedures``.
    """
    proc_cols = [s.PROCEDURE_ID, *CONTEXT, s.APPROACH, s.N_LEVELS, s.ETIOLOGY, s.BMD_T_SCORE, s.AGE_YEARS, s.SEX]
    merged = levels.merge(procedures[proc_cols], on=s.PROCEDURE_ID, how="left", validate="many_to_one",
                          indicator=True)
    orphans = int((merged["_merge"] != "both").sum())
    if orphans:
        raise ValueError(f"{orphans} level rows have no procedure among the records given; "
                         "levels and procedures must come from the same accepted batch or registry")
    imaging = merged[s.LEAKAGE_IMAGING].astype(object)
    if imaging_when_missing is not None:
        imaging = imaging.where(pd.notna(imaging), imaging_when_missing)
    basivertebral = merged[s.BASIVERTEBRAL_FORAMEN].astype("boolean")
    features = {
        s.CEMENT_VOLUME_ML: _float(merged[s.CEMENT_VOLUME_ML]),
        d.CEMENT_FILL_RATIO: cement_fill_ratio(merged[s.CEMENT_VOLUME_ML], merged[s.VERTEBRAL_BODY_VOLUME_ML]),
        s.CEMENT_VISCOSITY: _text(merged[s.CEMENT_VISCOSITY]),
        s.CEMENT_TYPE: _text(merged[s.CEMENT_TYPE]),
        s.MORPHOLOGY: _text(merged[s.MORPHOLOGY]),
        s.GENANT_GRADE: _float(merged[s.GENANT_GRADE]),
        s.HEIGHT_LOSS_PCT: _float(merged[s.HEIGHT_LOSS_PCT]),
        s.CORTICAL_DISRUPTION: _float(merged[s.CORTICAL_DISRUPTION]),
        s.ENDPLATE_DISRUPTION: _float(merged[s.ENDPLATE_DISRUPTION]),
        s.INTRAVERTEBRAL_CLEFT: _float(merged[s.INTRAVERTEBRAL_CLEFT]),
        d.BASIVERTEBRAL: np.where(basivertebral.isna(), d.UNKNOWN,
                                  np.where(basivertebral.fillna(False), "yes", "no")).astype(object),
        d.LOG_FRACTURE_AGE: np.log1p(_float(merged[s.FRACTURE_AGE_DAYS])),
        d.VERTEBRAL_REGION: vertebral_region(merged[s.VERTEBRA]).to_numpy(dtype=object),
        s.APPROACH: _text(merged[s.APPROACH]),
        d.LEVELS_IN_PROCEDURE: _float(merged[s.N_LEVELS]),
        s.ETIOLOGY: _text(merged[s.ETIOLOGY]),
        s.BMD_T_SCORE: _float(merged[s.BMD_T_SCORE]),
        s.AGE_YEARS: _float(merged[s.AGE_YEARS]),
        s.SEX: _text(merged[s.SEX]),
        d.IMAGING: imaging.to_numpy(dtype=object),
    }
    return _assemble(merged, LEVEL_KEYS, features, d.LEVEL_FEATURES, LEVEL_OUTCOME_SOURCES)


def build_procedure_frame(procedures: pd.DataFrame) -> pd.DataFrame:
    """One row per procedure with keys, context, procedure features and outcome sources."""
    features = {
        s.AGE_YEARS: _float(procedures[s.AGE_YEARS]),
        s.SEX: _text(procedures[s.SEX]),
        s.DIABETES: _float(procedures[s.DIABETES]),
        s.GLUCOCORTICOID_USE: _float(procedures[s.GLUCOCORTICOID_USE]),
        s.IMMUNOSUPPRESSED: _float(procedures[s.IMMUNOSUPPRESSED]),
        s.RECENT_INFECTION: _float(procedures[s.RECENT_INFECTION]),
        s.ANTIBIOTIC_PROPHYLAXIS: _float(procedures[s.ANTIBIOTIC_PROPHYLAXIS]),
        s.ETIOLOGY: _text(procedures[s.ETIOLOGY]),
        d.LEVELS_IN_PROCEDURE: _float(procedures[s.N_LEVELS]),
        s.ASA_CLASS: _float(procedures[s.ASA_CLASS]),
    }
    return _assemble(procedures, PROCEDURE_KEYS, features, d.PROCEDURE_FEATURES, PROCEDURE_OUTCOME_SOURCES)


def _assemble(source: pd.DataFrame, keys: tuple[str, ...], features: dict[str, object],
              specs: tuple[d.FeatureSpec, ...], outcome_sources: tuple[str, ...]) -> pd.DataFrame:
    missing = [f.name for f in specs if f.name not in features]
    if missing:  # the dictionary and the builder must agree
        raise RuntimeError(f"features in the dictionary but not built: {', '.join(missing)}")
    columns: dict[str, object] = {k: source[k].to_numpy(dtype=object) for k in keys}
    columns.update({c: source[c].to_numpy() if c != s.EXTRACT_BATCH else _float(source[c]) for c in CONTEXT})
    columns.update({f.name: np.asarray(features[f.name]) for f in specs})
    columns.update({c: source[c].to_numpy(dtype=object) for c in outcome_sources})
    return pd.DataFrame(columns, index=pd.RangeIndex(len(source)))


def _float(values: pd.Series) -> np.ndarray:
    return pd.Series(values).astype("Float64").to_numpy(dtype="float64", na_value=np.nan)


def _text(values: pd.Series) -> np.ndarray:
    return pd.Series(values).astype(object).to_numpy(dtype=object)
