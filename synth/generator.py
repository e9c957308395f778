"""Synthetic registry: contract-v1 procedure and level tables from a literature-grounded model, with true risks.

The model's figures and conditional distributions live in :mod:`synth.model`; this module draws from them.
Every rate and effect size, its source and which figures are assumptions: docs/synthetic-registry.md.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from records.schema import (
    TEXT_DTYPE, AGE_YEARS, ANESTHESIA, ANTIBIOTIC_PROPHYLAXIS, APPROACH, ASA_CLASS, BALLOON_VOLUME_ML,
    BASIVERTEBRAL_FORAMEN, BMD_T_SCORE, BMI, CEMENT_TYPE, CEMENT_VISCOSITY, CEMENT_VOLUME_ML, CORTICAL_DISRUPTION,
    DIABETES, ENDPLATE_DISRUPTION, ETIOLOGIES, ETIOLOGY, EXTRACT_BATCH, FIRST_PROCEDURE_YEAR, FRACTURE_AGE_DAYS,
    GENANT_GRADE, GLUCOCORTICOID_USE, HEIGHT_LOSS_PCT, IMMUNOSUPPRESSED, INFECTION_90D, INTRAVERTEBRAL_CLEFT,
    KYPHOTIC_ANGLE_POST, KYPHOTIC_ANGLE_PRE, LEAKAGE, LEAKAGE_IMAGING, LEAKAGE_SITE_NAMES, LEAKAGE_SITES,
    LEAKAGE_SYMPTOMATIC, LENGTH_OF_STAY_DAYS, LEVELS, MORPHOLOGY, N_LEVELS, OPERATOR_ID, PAIN_VAS_POST, PAIN_VAS_PRE,
    PROCEDURE_ID, PROCEDURE_MINUTES, PROCEDURE_YEAR, PROCEDURES, RECENT_INFECTION, SEX, SITE_ID, SITE_SEPARATOR,
    VERTEBRA, VERTEBRAE, VERTEBRAL_BODY_VOLUME_ML, TableSpec,
)
from synth.model import (
    AGE_MEAN, AGE_SD, ALL_SITES, BALLOON_PER_CEMENT_MEAN, BALLOON_PER_CEMENT_SD, BASIVERTEBRAL_FORAMEN_SHARE,
    BIPEDICULAR, BMD_MISSING, BMD_SD, BMI_MEAN, BODY_VOLUME_LOG_SD, BODY_VOLUME_MEASUREMENT_SD, BODY_VOLUME_RANGE_ML,
    CALCIUM_PHOSPHATE, CANAL, CEMENT_RANGE_ML, CORRECTION_MEAN_SD, CORTICAL_LOGIT_SHIFT, CT, ETIOLOGY_SHARE,
    EXTRAPEDICULAR, EXTRAPEDICULAR_SHARE, FEMALE, FEMALE_SHARE, FILL_TARGET_RANGE, FILL_TARGET_SD,
    FRACTURE_AGE_LOG_SD, FRACTURE_AGE_MEDIAN_DAYS, FRESH_FRACTURE_DAYS, GENANT_PMF, GENERAL, GLUCOCORTICOID_SHARE,
    HEIGHT_LOSS_BAND, HEIGHT_LOSS_NOISE_SD, IMMUNOSUPPRESSED_SHARE, INDEX_VERTEBRA_WEIGHT, INFECTION_BASE_LOGIT,
    INFECTION_OR, KYPHOTIC_NOISE_SD, LEAK_STRUCTURES, LEAKAGE_NOT_ASSESSED_SHARE, LOCAL, MALE, MALIGNANT,
    MISSING_SHARE, MORPHOLOGY_PMF, N_LEVELS_PMF, N_SITES_OF_LEAK, N_THORACIC, N_VERTEBRAE, OPERATOR_FILL_SD,
    OPERATOR_LEAK_SD, PMMA, PREOP_CT_BASE_LOGIT, PREOP_CT_PER_YEAR, PROPHYLACTIC_LEVEL_SHARE, SITE_EXTRA_PROB,
    SITE_LEAK_SD, SYMPTOMATIC_BASE, SYMPTOMATIC_CANAL, SYMPTOMATIC_THORACIC_CANAL, TRAUMATIC, UNIPEDICULAR, VENOUS,
    WORSE_SITE_OR, XRAY, body_volume_scale, bmd_mean, cleft_log_odds, detection_probabilities, expit as _expit,
    fill_target_mean, general_log_odds, height_loss_factor, kyphotic_pre_mean, leak_log_odds, p_none_seen,
    postop_ct_log_odds, primary_site_probabilities, softmax as _softmax, unipedicular_threshold,
    viscosity_log_weights,
)
from synth.observable import observable_leak_risks

# --- truth columns (not part of the contract) ---------------------------------------------------------------------
P_LEAKAGE_ANY = "p_leakage_any"
P_LEAKAGE_CANAL = "p_leakage_canal"
P_LEAKAGE_VENOUS = "p_leakage_venous"
P_INFECTION_90D = "p_infection_90d"
OBSERVABLE_SUFFIX = "_observable"
P_LEAKAGE_ANY_OBSERVABLE = P_LEAKAGE_ANY + OBSERVABLE_SUFFIX
P_LEAKAGE_CANAL_OBSERVABLE = P_LEAKAGE_CANAL + OBSERVABLE_SUFFIX
P_LEAKAGE_VENOUS_OBSERVABLE = P_LEAKAGE_VENOUS + OBSERVABLE_SUFFIX
P_INFECTION_90D_OBSERVABLE = P_INFECTION_90D + OBSERVABLE_SUFFIX
TRUTH_LEVEL_COLUMNS = (PROCEDURE_ID, VERTEBRA, P_LEAKAGE_ANY, P_LEAKAGE_CANAL, P_LEAKAGE_VENOUS,
                       P_LEAKAGE_ANY_OBSERVABLE, P_LEAKAGE_CANAL_OBSERVABLE, P_LEAKAGE_VENOUS_OBSERVABLE)
TRUTH_PROCEDURE_COLUMNS = (PROCEDURE_ID, P_INFECTION_90D, P_INFECTION_90D_OBSERVABLE)

Arrays = dict[str, np.ndarray]


@dataclass(frozen=True)
class SyntheticRegistry:
    """The two contract tables and the true probabilities behind their outcomes.

    ``truth_levels`` is row-aligned with ``levels``, ``truth_procedures`` with ``procedures``.
    """

    procedures: pd.DataFrame
    levels: pd.DataFrame
    truth_levels: pd.DataFrame
    truth_procedures: pd.DataFrame


def generate_registry(n_procedures: int, *, seed: int, first_year: int = 2015, last_year: int = 2025,
                      n_sites: int = 24, n_operators: int = 120,
                      leak_structure: str = "literature") -> SyntheticRegistry:
    """Draw a de-identified synthetic kyphoplasty / vertebroplasty registry that satisfies contract v1.

    Parameters
    ----------
    n_procedures
        Rows of ``procedures``; ``levels`` has about 1.6 rows per procedure.
    seed
        Seed of ``numpy.random.default_rng``; the same arguments give identical frames.
    first_year, last_year
        Procedure years, inclusive; volume grows over the years.
    n_sites, n_operators
        Hospitals and operators; each operator works at one site; sites differ in volume.
    leak_structure
        ``"literature"``: main effects only (the published odds ratios). ``"nonlinear"``: in addition a threshold
        of the fill ratio past 0.25 and interactions of viscosity with cortical breach and with the
        basivertebral foramen, the base recentred so the leakage rate hardly changes. For the same seed the two
        share every value but the leakage outcomes and their risks.

    Returns
    -------
    SyntheticRegistry
        Contract tables (contract column order and dtypes) sorted by ``extract_batch``, i.e. chronologically;
        per level the true probabilities ``p_leakage_any``, ``p_leakage_canal``, ``p_leakage_venous`` of the
        observed labels (including the imaging modality's sensitivity); per procedure ``p_infection_90d``.
        Each with an ``_observable`` twin: the expectation of the true probability given what the contract
        tables hold, site and operator identity excluded (:func:`synth.observable.observable_leak_risks`).

    Raises
    ------
    ValueError
        An argument is out of range.

    References
    ----------
    Rates and effect sizes with their sources: docs/synthetic-registry.md.
    """
    _check_arguments(n_procedures, first_year=first_year, last_year=last_year, n_sites=n_sites,
                     n_operators=n_operators, leak_structure=leak_structure)
    rng = np.random.default_rng(seed)
    centres = _draw_centres(rng, n_sites=n_sites, n_operators=n_operators)
    procedures = _draw_procedures(rng, n_procedures, centres, first_year=first_year, last_year=last_year)
    levels = _draw_levels(rng, procedures, centres)
    leakage = _draw_leakage(rng, levels, procedures, centres, structure=leak_structure)
    infection = _draw_infection(rng, procedures)
    ids = _draw_pseudonyms(procedures, n_sites=n_sites, n_operators=n_operators)
    procedure_table = _contract_frame(_procedure_columns(procedures, infection, ids), PROCEDURES)
    level_table = _contract_frame(_level_columns(levels, leakage, procedures, ids), LEVELS)
    observable = observable_leak_risks(procedure_table, level_table, centres, structure=leak_structure)
    return SyntheticRegistry(
        procedures=procedure_table, levels=level_table,
        truth_levels=pd.DataFrame(dict(zip(TRUTH_LEVEL_COLUMNS, (
            pd.array(ids[PROCEDURE_ID][levels["owner"]], dtype=TEXT_DTYPE),
            pd.array(np.asarray(VERTEBRAE, dtype=object)[levels["vertebra_index"]], dtype=TEXT_DTYPE),
            leakage["p_any"], leakage["p_canal"], leakage["p_venous"],
            observable["any"], observable["canal"], observable["venous"])))),
        truth_procedures=pd.DataFrame(dict(zip(TRUTH_PROCEDURE_COLUMNS, (
            pd.array(ids[PROCEDURE_ID], dtype=TEXT_DTYPE), infection["p_infection"],
            _observable_infection_risk(infection))))),
    )


def write_registry(registry: SyntheticRegistry, out_dir: Path) -> dict[str, Path]:
    """Write the registry as Parquet: contract tables in ``out_dir``, the truth in ``out_dir/truth``.

    Parameters
    ----------
    registry
        As returned by :func:`generate_registry`.
    out_dir
        Created if absent; files of the same names are replaced.

    Returns
    -------
    dict
        ``procedures``, ``levels``, ``truth_levels``, ``truth_procedures`` -> path written. The same registry
        gives the same bytes.
    """
    out_dir = Path(out_dir)
    (out_dir / "truth").mkdir(parents=True, exist_ok=True)
    targets = {
        "procedures": (registry.procedures, out_dir / f"{PROCEDURES.name}.parquet", PROCEDURES.arrow_schema()),
        "levels": (registry.levels, out_dir / f"{LEVELS.name}.parquet", LEVELS.arrow_schema()),
        "truth_levels": (registry.truth_levels, out_dir / "truth" / f"{LEVELS.name}.parquet", None),
        "truth_procedures": (registry.truth_procedures, out_dir / "truth" / f"{PROCEDURES.name}.parquet", None),
    }
    for frame, path, schema in targets.values():
        pq.write_table(pa.Table.from_pandas(frame, schema=schema, preserve_index=False), path, compression="zstd")
    return {name: path for name, (_, path, _) in targets.items()}


def registry_centres(*, seed: int, n_sites: int = 24, n_operators: int = 120) -> dict[str, np.ndarray]:
    """The sites and operators :func:`generate_registry` draws first for ``seed``: volumes, styles, effects.

    Site i is ``site_id`` S(i + 1), operator j ``operator_id`` OP(j + 1). Keys: ``operator_site``,
    ``operator_p`` (share of procedures), ``site_leak`` and ``operator_leak`` (log-odds effects on the true
    leak), ``operator_fill`` (fill-ratio style), ``site_ct``, ``site_general``, ``site_high_viscosity``
    (log-odds shifts), ``site_kyphoplasty``, ``site_unipedicular``, ``site_prophylaxis`` (shares).
    """
    return _draw_centres(np.random.default_rng(seed), n_sites=n_sites, n_operators=n_operators)


# --- steps --------------------------------------------------------------------------------------------------------

def _check_arguments(n_procedures: int, *, first_year: int, last_year: int, n_sites: int, n_operators: int,
                     leak_structure: str) -> None:
    problems = []
    if n_procedures < 1:
        problems.append(f"n_procedures must be at least 1; got {n_procedures}")
    if not FIRST_PROCEDURE_YEAR <= first_year <= last_year:
        problems.append(f"years must satisfy {FIRST_PROCEDURE_YEAR} <= first_year <= last_year; "
                        f"got {first_year}..{last_year}")
    if not 1 <= n_sites <= n_operators:
        problems.append(f"need 1 <= n_sites <= n_operators (every site has an operator); "
                        f"got {n_sites} sites, {n_operators} operators")
    if leak_structure not in LEAK_STRUCTURES:
        problems.append(f"leak_structure must be one of {', '.join(LEAK_STRUCTURES)}; got {leak_structure!r}")
    if problems:
        raise ValueError("; ".join(problems))


def _draw_centres(rng: np.random.Generator, *, n_sites: int, n_operators: int) -> Arrays:
    """Sites and operators: volume, practice style, random leakage effects and the clearly worse sites."""
    site_volume = rng.lognormal(0.0, 0.8, n_sites)
    site_volume /= site_volume.sum()
    operator_site = np.concatenate([np.arange(n_sites), rng.choice(n_sites, n_operators - n_sites, p=site_volume)])
    activity = rng.gamma(2.0, 1.0, n_operators)
    operator_p = site_volume[operator_site] * activity / np.bincount(operator_site, activity)[operator_site]
    operator_p /= operator_p.sum()

    def site_effect(sd: float) -> np.ndarray:  # volume-weighted mean 0, so marginal rates hardly vary by seed
        effect = rng.normal(0.0, sd, n_sites)
        return effect - effect @ site_volume

    def operator_effect(sd: float) -> np.ndarray:
        effect = rng.normal(0.0, sd, n_operators)
        return effect - effect @ operator_p

    site_leak = site_effect(SITE_LEAK_SD)
    busy = np.flatnonzero(site_volume >= np.median(site_volume))
    worse = rng.choice(busy, min(2, n_sites // 4), replace=False)
    site_leak[worse] += np.log(WORSE_SITE_OR)
    return {
        "operator_site": operator_site, "operator_p": operator_p, "site_leak": site_leak,
        "operator_leak": operator_effect(OPERATOR_LEAK_SD), "operator_fill": operator_effect(OPERATOR_FILL_SD),
        "site_ct": site_effect(0.5), "site_general": site_effect(0.6), "site_high_viscosity": site_effect(0.5),
        "site_kyphoplasty": rng.beta(4.0, 2.0, n_sites), "site_unipedicular": rng.beta(20.0, 20.0, n_sites),
        "site_prophylaxis": rng.beta(17.0, 3.0, n_sites),
    }


def _draw_procedures(rng: np.random.Generator, n: int, centres: Arrays, *, first_year: int,
                     last_year: int) -> Arrays:
    """Per-procedure values (categories as codes), in chronological order, and latent practice variables."""
    n_years = last_year - first_year + 1
    batch_weight = np.repeat(1.0 + 0.10 * np.arange(n_years), 4)  # volume grows 10 % of the first year a year
    batch = np.repeat(np.arange(1, 4 * n_years + 1), rng.multinomial(n, batch_weight / batch_weight.sum()))
    years_in = (batch - 1) // 4
    operator = rng.choice(len(centres["operator_p"]), n, p=centres["operator_p"])
    site = centres["operator_site"][operator]
    etio = rng.choice(len(ETIOLOGIES), n, p=ETIOLOGY_SHARE)
    malignant = etio == MALIGNANT
    age = np.clip(np.rint(rng.normal(AGE_MEAN[etio], AGE_SD[etio])), 18, 90)  # top-coded at 90
    female = rng.random(n) < FEMALE_SHARE[etio]
    bmi = rng.normal(BMI_MEAN[etio], 4.5)
    diabetes = rng.random(n) < _expit(-1.5 + 0.08 * (bmi - 25))
    glucocorticoid = rng.random(n) < GLUCOCORTICOID_SHARE[etio]
    asa = np.clip(np.rint(1.6 + 0.035 * (age - 60) + 0.5 * diabetes + 0.9 * malignant + 0.3 * glucocorticoid
                          + rng.normal(0.0, 0.6, n)), 1, 5)
    n_levels = 1 + _draw_categorical(rng, N_LEVELS_PMF[etio])
    general = rng.random(n) < _expit(general_log_odds(centres["site_general"][site], malignant, n_levels))
    u = rng.random(n)
    uni_share = unipedicular_threshold(centres["site_unipedicular"][site])
    viscosity_logits = viscosity_log_weights(years_in, centres["site_high_viscosity"][site])
    stay_mean = np.exp(-0.6 + 0.9 * general + 1.0 * malignant + 0.1 * (n_levels - 1) + 0.3 * (asa >= 4))
    pain_pre = rng.normal(7.4 + 0.3 * malignant, 1.3)
    return {
        "batch": batch, "year": first_year + years_in, "operator": operator, "site": site, "etiology_code": etio,
        "malignant": malignant, "age": age, "female": female, "bmi": bmi,
        "bmd": rng.normal(bmd_mean(etio, female, age), BMD_SD),
        "bmd_missing": rng.random(n) < BMD_MISSING[etio], "diabetic": diabetes, "glucocorticoid": glucocorticoid,
        "immunosuppression": rng.random(n) < IMMUNOSUPPRESSED_SHARE[etio],
        "infection_before": rng.random(n) < 0.07 + 0.03 * (age > 80), "asa": asa, "level_count": n_levels,
        "general": general,
        "approach_code": np.where(u < EXTRAPEDICULAR_SHARE, EXTRAPEDICULAR,
                                  np.where(u < uni_share, UNIPEDICULAR, BIPEDICULAR)),
        "prophylaxis": rng.random(n) < centres["site_prophylaxis"][site],
        "kyphoplasty": rng.random(n) < centres["site_kyphoplasty"][site],
        "viscosity": _draw_categorical(rng, _softmax(viscosity_logits)),
        "cement_code": np.where(rng.random(n) < np.where(etio == TRAUMATIC, 0.20, 0.05), CALCIUM_PHOSPHATE, PMMA),
        "preop_ct": rng.random(n) < _expit(PREOP_CT_BASE_LOGIT + PREOP_CT_PER_YEAR * years_in),
        "postop_ct": rng.random(n) < _expit(postop_ct_log_odds(years_in, centres["site_ct"][site])),
        "not_assessed": rng.random(n) < LEAKAGE_NOT_ASSESSED_SHARE,
        "minutes": np.exp(np.log(22 + 16 * n_levels + 12 * general) + rng.normal(0.0, 0.25, n)),
        "stay": rng.poisson(stay_mean * rng.gamma(2.0, 0.5, n)),
        "pain_pre": pain_pre, "pain_post": 0.35 * pain_pre + rng.normal(0.4 + 0.4 * malignant, 1.6),
        "missing": _draw_missing(rng, n, PROCEDURES),
    }


def _draw_vertebrae(rng: np.random.Generator, procedures: Arrays) -> tuple[np.ndarray, np.ndarray]:
    """Level rows: the owning procedure's row and the vertebra index, a contiguous-ish run around an index vertebra.

    Gaps of one skipped vertebra (15 %) keep the run increasing, so vertebrae are unique within a procedure.
    """
    n_levels = procedures["level_count"]
    n = len(n_levels)
    owner = np.repeat(np.arange(n), n_levels)
    first_row = np.cumsum(n_levels) - n_levels
    position = np.arange(len(owner)) - first_row[owner]
    offset = np.cumsum(np.where(position == 0, 0, 1 + (rng.random(len(owner)) < 0.15)))
    offset -= offset[first_row][owner]
    span = offset[first_row + n_levels - 1]
    too_long = span > N_VERTEBRAE - 1
    offset = np.where(too_long[owner], position, offset)
    span = np.where(too_long, n_levels - 1, span)
    spread = procedures["malignant"] & (rng.random(n) < 0.5)  # metastases anywhere from t4 down
    anchor = np.where(spread, rng.integers(3, N_VERTEBRAE, n),
                      rng.choice(N_VERTEBRAE, n, p=INDEX_VERTEBRA_WEIGHT / INDEX_VERTEBRA_WEIGHT.sum()))
    start = np.clip(anchor - np.rint(rng.random(n) * span).astype(np.int64), 0, N_VERTEBRAE - 1 - span)
    return owner, start[owner] + offset


def _draw_levels(rng: np.random.Generator, procedures: Arrays, centres: Arrays) -> Arrays:
    """Per-level fracture, anatomy and cement values (true values; recording happens in :func:`_level_columns`)."""
    owner, vertebra = _draw_vertebrae(rng, procedures)
    n = len(owner)
    etio = procedures["etiology_code"][owner]
    thoracic = vertebra < N_THORACIC
    later_level = np.r_[False, owner[1:] == owner[:-1]]
    grade = 1 + _draw_categorical(rng, np.broadcast_to(GENANT_PMF, (n, len(GENANT_PMF))))
    grade = np.where(later_level & (rng.random(n) < PROPHYLACTIC_LEVEL_SHARE), 0, grade)
    band = HEIGHT_LOSS_BAND[grade]
    height_loss = np.clip(rng.uniform(band[:, 0], band[:, 1]) + rng.normal(0.0, HEIGHT_LOSS_NOISE_SD, n), 0, 100)
    fracture_age = np.rint(FRACTURE_AGE_MEDIAN_DAYS[etio] * rng.lognormal(0.0, FRACTURE_AGE_LOG_SD, n))
    cleft_logit = cleft_log_odds(grade, fracture_age, etio)
    body_volume = np.clip(body_volume_scale(vertebra, procedures["female"][owner])
                          * rng.lognormal(0.0, BODY_VOLUME_LOG_SD, n) * height_loss_factor(height_loss),
                          *BODY_VOLUME_RANGE_ML)
    kyphoplasty = procedures["kyphoplasty"][owner]
    operator_fill = centres["operator_fill"][procedures["operator"]][owner]
    fill_target = np.clip(rng.normal(fill_target_mean(kyphoplasty), FILL_TARGET_SD) + operator_fill,
                          *FILL_TARGET_RANGE)
    cement = np.clip(np.round(body_volume * fill_target, 1), *CEMENT_RANGE_ML)
    kyphotic_pre = kyphotic_pre_mean(height_loss, thoracic) + rng.normal(0.0, KYPHOTIC_NOISE_SD, n)
    correction = np.where(kyphoplasty, rng.normal(*CORRECTION_MEAN_SD[True], n),
                          rng.normal(*CORRECTION_MEAN_SD[False], n))
    return {
        "owner": owner, "vertebra_index": vertebra, "thoracic": thoracic, "grade": grade, "height_loss": height_loss,
        "morphology_code": _draw_categorical(rng, MORPHOLOGY_PMF[grade]), "fracture_age": fracture_age,
        "cleft": (grade > 0) & (rng.random(n) < _expit(cleft_logit)),
        "cortical": rng.random(n) < _expit(-1.7 + 0.5 * (grade - 2) - 1.5 * (grade == 0) + CORTICAL_LOGIT_SHIFT[etio]),
        "endplate": rng.random(n) < _expit(-0.6 + 0.7 * (grade - 2) + 0.6 * (etio == TRAUMATIC)),
        "foramen": rng.random(n) < BASIVERTEBRAL_FORAMEN_SHARE, "body_volume": body_volume,
        "body_volume_measured": body_volume * rng.normal(1.0, BODY_VOLUME_MEASUREMENT_SD, n), "cement": cement,
        "fill_ratio": cement / body_volume,
        "balloon": cement * rng.normal(BALLOON_PER_CEMENT_MEAN, BALLOON_PER_CEMENT_SD, n),
        "kyphotic_pre": kyphotic_pre, "kyphotic_post": kyphotic_pre - correction,
        "missing": _draw_missing(rng, n, LEVELS),
    }


def _draw_leakage(rng: np.random.Generator, levels: Arrays, procedures: Arrays, centres: Arrays, *,
                  structure: str) -> Arrays:
    """True leak, its sites and their detection by X-ray or CT; the observed labels and their exact probabilities.

    The true leak is logistic (:func:`synth.model.leak_log_odds` plus the site and operator effects); where it
    goes and whether it is seen: :func:`synth.model.p_none_seen`.
    """
    owner = levels["owner"]
    n = len(owner)
    at_level = {key: procedures[key][owner] for key in ("viscosity", "malignant", "bmd", "postop_ct")}
    logit = (leak_log_odds(cortical=levels["cortical"], cleft=levels["cleft"], viscosity=at_level["viscosity"],
                           fill_ratio=levels["fill_ratio"], cement_ml=levels["cement"], foramen=levels["foramen"],
                           bmd=at_level["bmd"], malignant=at_level["malignant"], structure=structure)
             + centres["site_leak"][procedures["site"]][owner]
             + centres["operator_leak"][procedures["operator"]][owner])
    p_true = _expit(logit)
    primary_p = primary_site_probabilities(
        cleft=levels["cleft"], foramen=levels["foramen"], fresh=levels["fracture_age"] < FRESH_FRACTURE_DAYS,
        cortical=levels["cortical"], endplate=levels["endplate"], malignant=at_level["malignant"],
        thoracic=levels["thoracic"])
    detection = detection_probabilities(at_level["postop_ct"])

    true_leak = rng.random(n) < p_true
    primary = _draw_categorical(rng, primary_p)
    present = (primary[:, None] == np.arange(N_SITES_OF_LEAK)) | (rng.random((n, N_SITES_OF_LEAK)) < SITE_EXTRA_PROB)
    seen = true_leak[:, None] & present & (rng.random((n, N_SITES_OF_LEAK)) < detection)
    leakage = seen.any(axis=1)
    canal_seen = seen[:, list(CANAL)].any(axis=1)
    p_symptomatic = SYMPTOMATIC_BASE + canal_seen * (SYMPTOMATIC_CANAL
                                                     + SYMPTOMATIC_THORACIC_CANAL * levels["thoracic"])
    return {
        "leak_seen": leakage, "sites_code": seen @ (1 << np.arange(N_SITES_OF_LEAK)),
        "symptomatic": leakage & (rng.random(n) < p_symptomatic),
        "p_any": p_true * (1 - p_none_seen(primary_p, detection, ALL_SITES)),
        "p_canal": p_true * (1 - p_none_seen(primary_p, detection, CANAL)),
        "p_venous": p_true * (1 - p_none_seen(primary_p, detection, (VENOUS,))),
    }


def _draw_infection(rng: np.random.Generator, procedures: Arrays) -> Arrays:
    """90-day infection: its true probability (logistic in the risk factors) and a draw from it."""
    factors = {
        "diabetic": procedures["diabetic"], "steroids": procedures["glucocorticoid"],
        "immunosuppression": procedures["immunosuppression"], "infection_before": procedures["infection_before"],
        "malignant": procedures["malignant"], "two_or_more_levels": procedures["level_count"] >= 2,
        "prophylaxis": procedures["prophylaxis"],
    }
    logit = INFECTION_BASE_LOGIT + sum(np.log(INFECTION_OR[name]) * present for name, present in factors.items())
    p_infection = _expit(logit)
    return {"p_infection": p_infection, "infection": rng.random(len(logit)) < p_infection}


def _observable_infection_risk(infection: Arrays) -> np.ndarray:
    """The observable-only infection risk: the true one, as its seven factors are always recorded and no site
    or operator effect enters it."""
    return infection["p_infection"].copy()


def _draw_pseudonyms(procedures: Arrays, *, n_sites: int, n_operators: int) -> Arrays:
    """'P0000001', 'S01', 'OP001': a letter prefix and a zero-padded number, never digits alone."""
    n = len(procedures["batch"])
    return {
        PROCEDURE_ID: _pseudonyms("P", np.arange(1, n + 1), width=max(7, len(str(n)))),
        SITE_ID: _pseudonyms("S", procedures["site"] + 1, width=max(2, len(str(n_sites)))),
        OPERATOR_ID: _pseudonyms("OP", procedures["operator"] + 1, width=max(3, len(str(n_operators)))),
    }


def _procedure_columns(procedures: Arrays, infection: Arrays, ids: Arrays) -> dict[str, object]:
    """Contract procedure columns as values or (values, missing); categories as codes."""
    missing = procedures["missing"]
    return {
        **ids, EXTRACT_BATCH: procedures["batch"], PROCEDURE_YEAR: procedures["year"], AGE_YEARS: procedures["age"],
        SEX: np.where(procedures["female"], FEMALE, MALE), BMI: (np.round(procedures["bmi"], 1), missing[BMI]),
        BMD_T_SCORE: (np.round(procedures["bmd"], 1), procedures["bmd_missing"]), DIABETES: procedures["diabetic"],
        GLUCOCORTICOID_USE: procedures["glucocorticoid"], IMMUNOSUPPRESSED: procedures["immunosuppression"],
        RECENT_INFECTION: procedures["infection_before"], ASA_CLASS: procedures["asa"],
        ETIOLOGY: procedures["etiology_code"], ANESTHESIA: np.where(procedures["general"], GENERAL, LOCAL),
        APPROACH: procedures["approach_code"], ANTIBIOTIC_PROPHYLAXIS: procedures["prophylaxis"],
        PROCEDURE_MINUTES: (np.round(procedures["minutes"]), missing[PROCEDURE_MINUTES]),
        N_LEVELS: procedures["level_count"], INFECTION_90D: (infection["infection"], missing[INFECTION_90D]),
        LENGTH_OF_STAY_DAYS: (procedures["stay"], missing[LENGTH_OF_STAY_DAYS]),
        PAIN_VAS_PRE: (np.round(procedures["pain_pre"], 1), missing[PAIN_VAS_PRE]),
        PAIN_VAS_POST: (np.round(procedures["pain_post"], 1), missing[PAIN_VAS_POST]),
    }


def _level_columns(levels: Arrays, leakage: Arrays, procedures: Arrays, ids: Arrays) -> dict[str, object]:
    """Contract level columns as values or (values, missing); what is recorded of the true values."""
    owner, missing = levels["owner"], levels["missing"]
    no_ct_before = ~procedures["preop_ct"][owner]
    not_assessed = procedures["not_assessed"][owner]
    site_names = np.array([None] + [SITE_SEPARATOR.join(s for b, s in enumerate(LEAKAGE_SITE_NAMES) if code >> b & 1)
                                    for code in range(1, 2 ** N_SITES_OF_LEAK)], dtype=object)
    return {
        PROCEDURE_ID: ids[PROCEDURE_ID][owner], VERTEBRA: levels["vertebra_index"], GENANT_GRADE: levels["grade"],
        MORPHOLOGY: levels["morphology_code"], FRACTURE_AGE_DAYS: (levels["fracture_age"], missing[FRACTURE_AGE_DAYS]),
        HEIGHT_LOSS_PCT: (np.round(levels["height_loss"], 1), missing[HEIGHT_LOSS_PCT]),
        INTRAVERTEBRAL_CLEFT: levels["cleft"], CORTICAL_DISRUPTION: levels["cortical"],
        ENDPLATE_DISRUPTION: levels["endplate"], BASIVERTEBRAL_FORAMEN: (levels["foramen"], no_ct_before),
        CEMENT_TYPE: procedures["cement_code"][owner], CEMENT_VISCOSITY: procedures["viscosity"][owner],
        BALLOON_VOLUME_ML: (np.round(levels["balloon"], 1),
                            ~procedures["kyphoplasty"][owner] | missing[BALLOON_VOLUME_ML]),
        CEMENT_VOLUME_ML: levels["cement"],
        VERTEBRAL_BODY_VOLUME_ML: (np.round(levels["body_volume_measured"], 1),
                                   no_ct_before | missing[VERTEBRAL_BODY_VOLUME_ML]),
        KYPHOTIC_ANGLE_PRE: (np.round(levels["kyphotic_pre"], 1), missing[KYPHOTIC_ANGLE_PRE]),
        KYPHOTIC_ANGLE_POST: (np.round(levels["kyphotic_post"], 1),
                              missing[KYPHOTIC_ANGLE_PRE] | missing[KYPHOTIC_ANGLE_POST]),
        LEAKAGE: (leakage["leak_seen"], not_assessed),
        LEAKAGE_SITES: (site_names[leakage["sites_code"]], not_assessed),
        LEAKAGE_SYMPTOMATIC: (leakage["symptomatic"], not_assessed),
        LEAKAGE_IMAGING: (np.where(procedures["postop_ct"][owner], CT, XRAY), not_assessed),
    }


# --- helpers ------------------------------------------------------------------------------------------------------

def _contract_frame(columns: dict[str, object], table: TableSpec) -> pd.DataFrame:
    """Columns as values or (values, missing) -> a frame in contract order and dtypes, clipped to contract ranges."""
    if set(columns) != set(table.names):
        raise RuntimeError(f"synthetic {table.name} columns differ from the contract: "
                           f"{sorted(set(columns) ^ set(table.names))}")
    arrays = {}
    for spec in table.columns:
        values, mask = columns[spec.name] if isinstance(columns[spec.name], tuple) else (columns[spec.name], None)
        values = np.asarray(values)
        mask = np.zeros(len(values), dtype=bool) if mask is None else np.asarray(mask, dtype=bool)
        if spec.kind in ("id", "category", "sites"):
            if spec.kind == "category":
                values = np.asarray(spec.categories, dtype=object)[values]
            values = values.astype(object)
            values[mask] = None
            arrays[spec.name] = pd.array(values, dtype=spec.pandas_dtype)
        elif spec.kind == "bool":
            arrays[spec.name] = pd.arrays.BooleanArray(values.astype(np.bool_), mask)
        elif spec.kind == "int":
            arrays[spec.name] = pd.arrays.IntegerArray(np.clip(values, spec.low, spec.high).astype(np.int64), mask)
        else:
            arrays[spec.name] = pd.arrays.FloatingArray(np.clip(values, spec.low, spec.high).astype(np.float64), mask)
    return pd.DataFrame(arrays, columns=list(table.names))


def _draw_missing(rng: np.random.Generator, n: int, table: TableSpec) -> Arrays:
    """Completely-at-random missingness masks for the columns of ``table`` listed in MISSING_SHARE."""
    return {name: rng.random(n) < MISSING_SHARE[name] for name in table.names if name in MISSING_SHARE}


def _pseudonyms(prefix: str, numbers: np.ndarray, *, width: int) -> np.ndarray:
    return np.char.add(prefix, np.char.zfill(np.asarray(numbers).astype(str), width)).astype(object)


def _draw_categorical(rng: np.random.Generator, p: np.ndarray) -> np.ndarray:
    """One category index per row of a probability matrix (n, k), by inverse CDF."""
    cumulative = np.cumsum(p, axis=1)[:, :-1]
    return (rng.random(len(p))[:, None] > cumulative).sum(axis=1).astype(np.int64)
