"""The synthetic registry's generative model: its rates, effects and conditional distributions, written once.

:mod:`synth.generator` draws from these; :mod:`synth.observable` inverts them to average the true risks over
what the records do not hold. Every figure, its source and which are assumptions: docs/synthetic-registry.md.
"""

from __future__ import annotations

import numpy as np

from records.schema import (
    ANESTHESIAS, APPROACHES, BALLOON_VOLUME_ML, CEMENT_TYPES, ETIOLOGIES, FRACTURE_AGE_DAYS, HEIGHT_LOSS_PCT,
    IMAGING_MODALITIES, INFECTION_90D, KYPHOTIC_ANGLE_POST, KYPHOTIC_ANGLE_PRE, LEAKAGE_SITE_NAMES,
    LENGTH_OF_STAY_DAYS, PAIN_VAS_POST, PAIN_VAS_PRE, PROCEDURE_MINUTES, SEXES, VERTEBRAE,
    VERTEBRAL_BODY_VOLUME_ML, VISCOSITIES, BMI,
)

# --- category codes: positions in the contract's category tuples --------------------------------------------------
OSTEOPOROTIC, MALIGNANT, TRAUMATIC = (ETIOLOGIES.index(e) for e in ("osteoporotic", "malignant", "traumatic"))
LOW, MEDIUM, HIGH = (VISCOSITIES.index(v) for v in ("low", "medium", "high"))
UNIPEDICULAR, BIPEDICULAR, EXTRAPEDICULAR = (APPROACHES.index(a) for a in
                                             ("unipedicular", "bipedicular", "extrapedicular"))
PMMA, CALCIUM_PHOSPHATE = (CEMENT_TYPES.index(c) for c in ("pmma", "calcium_phosphate"))
FEMALE, MALE = SEXES.index("f"), SEXES.index("m")
LOCAL, GENERAL = ANESTHESIAS.index("local_sedation"), ANESTHESIAS.index("general")
XRAY, CT = IMAGING_MODALITIES.index("xray"), IMAGING_MODALITIES.index("ct")
N_VERTEBRAE, N_THORACIC = len(VERTEBRAE), sum(v.startswith("t") for v in VERTEBRAE)
N_SITES_OF_LEAK = len(LEAKAGE_SITE_NAMES)
CANAL_SITE_NAMES = ("epidural", "foraminal")
VENOUS_SITE_NAME = "venous"
INTRADISCAL, PARAVERTEBRAL, VENOUS = (LEAKAGE_SITE_NAMES.index(s) for s in
                                      ("intradiscal", "paravertebral", VENOUS_SITE_NAME))
CANAL = tuple(LEAKAGE_SITE_NAMES.index(s) for s in CANAL_SITE_NAMES)
ALL_SITES = tuple(range(N_SITES_OF_LEAK))

# --- case mix; arrays per etiology (osteoporotic, malignant, traumatic) -------------------------------------------
ETIOLOGY_SHARE = np.array([0.80, 0.12, 0.08])
AGE_MEAN, AGE_SD = np.array([76.0, 67.0, 63.0]), np.array([8.0, 10.0, 15.0])
FEMALE_SHARE = np.array([0.72, 0.45, 0.42])
BMI_MEAN = np.array([25.5, 23.5, 26.5])
BMD_MEAN, BMD_MISSING = np.array([-3.0, -1.6, -1.2]), np.array([0.35, 0.60, 0.60])
BMD_FEMALE_SHIFT, BMD_PER_YEAR_OVER_70, BMD_SD = 0.3, 0.02, 0.8
GLUCOCORTICOID_SHARE = np.array([0.09, 0.15, 0.03])
IMMUNOSUPPRESSED_SHARE = np.array([0.03, 0.40, 0.02])
CORTICAL_LOGIT_SHIFT = np.array([0.0, 1.6, 1.3])
FRACTURE_AGE_MEDIAN_DAYS = np.array([40.0, 60.0, 8.0])
FRACTURE_AGE_LOG_SD = 1.0
N_LEVELS_PMF = np.array([  # n_levels = 1 .. 10
    [0.66, 0.21, 0.075, 0.03, 0.012, 0.006, 0.003, 0.002, 0.001, 0.001],
    [0.45, 0.25, 0.13, 0.07, 0.04, 0.025, 0.015, 0.01, 0.005, 0.005],
    [0.75, 0.18, 0.05, 0.015, 0.005, 0.0, 0.0, 0.0, 0.0, 0.0],
])
# index vertebra of a run, t1 .. t12, l1 .. l5: the thoracolumbar junction is most common
INDEX_VERTEBRA_WEIGHT = np.array([0.2, 0.3, 0.4, 0.6, 0.9, 1.2, 1.6, 2.0, 2.4, 3.0, 5.5, 10.0,
                                  10.0, 6.0, 4.0, 3.0, 1.5])
GENANT_PMF = np.array([0.23, 0.43, 0.34])  # grades 1..3; grade 0 only for an added prophylactic level
PROPHYLACTIC_LEVEL_SHARE = 0.06
MORPHOLOGY_PMF = np.array([[0.60, 0.32, 0.08], [0.60, 0.32, 0.08], [0.55, 0.28, 0.17], [0.45, 0.22, 0.33]])
HEIGHT_LOSS_BAND = np.array([[0.0, 15.0], [20.0, 25.0], [25.0, 40.0], [40.0, 75.0]])  # by Genant grade, %
HEIGHT_LOSS_NOISE_SD = 4.0
BASIVERTEBRAL_FORAMEN_SHARE = 0.35
FRESH_FRACTURE_DAYS = 14  # a fracture younger than this sends more leaks venous

# --- practice: how a site's style shows in the records ------------------------------------------------------------
GENERAL_BASE_LOGIT, GENERAL_MALIGNANT, GENERAL_PER_EXTRA_LEVEL = -1.4, 0.9, 0.35
EXTRAPEDICULAR_SHARE = 0.05
VISCOSITY_LOW_PER_YEAR, VISCOSITY_MEDIUM_LOGIT = -0.12, 0.6
VISCOSITY_HIGH_LOGIT, VISCOSITY_HIGH_PER_YEAR = -0.4, 0.10
PREOP_CT_BASE_LOGIT, PREOP_CT_PER_YEAR = -0.3, 0.06
POSTOP_CT_BASE_LOGIT, POSTOP_CT_PER_YEAR = -1.4, 0.12

# --- anatomy and cement -------------------------------------------------------------------------------------------
BODY_VOLUME_T1_ML, BODY_VOLUME_GROWTH_PER_LEVEL, BODY_VOLUME_FEMALE_FACTOR = 12.0, 0.075, 0.87
BODY_VOLUME_LOG_SD, BODY_VOLUME_HEIGHT_LOSS_FACTOR = 0.10, 0.6
BODY_VOLUME_RANGE_ML = (5, 100)
BODY_VOLUME_MEASUREMENT_SD = 0.03  # CT segmentation, relative
OPERATOR_FILL_SD = 0.015
FILL_TARGET_MEAN, FILL_TARGET_KYPHOPLASTY, FILL_TARGET_SD = 0.16, 0.02, 0.045
FILL_TARGET_RANGE = (0.04, 0.40)
CEMENT_RANGE_ML = (0.5, 12.0)
KYPHOTIC_BASE_DEG, KYPHOTIC_PER_HEIGHT_LOSS, KYPHOTIC_THORACIC_DEG, KYPHOTIC_NOISE_SD = 4, 0.25, 3, 4.0
CORRECTION_MEAN_SD = {True: (4.5, 2.5), False: (1.5, 2.0)}  # degrees, kyphoplasty / vertebroplasty
BALLOON_PER_CEMENT_MEAN, BALLOON_PER_CEMENT_SD = 0.85, 0.10

# --- leakage: odds ratios on the latent true (CT-visible) leak ----------------------------------------------------
LEAK_STRUCTURES = ("literature", "nonlinear")
LEAK_BASE_LOGIT = {"literature": -2.0, "nonlinear": -2.05}  # nonlinear: recentred to the same mean true leak rate
LEAK_OR = {
    "cortical_breach": 5.56, "cleft": 1.40, "low_viscosity": 3.32, "high_viscosity": 0.40,
    "fill_ratio_per_0.05": 2.0, "cement_per_ml": 1.10, "venous_foramen": 3.36,
    "bmd_per_unit_lower": 1.30, "malignant": 1.80,
}
FILL_RATIO_CENTRE, CEMENT_CENTRE_ML, BMD_CENTRE = 0.16, 3.5, -2.5
# "nonlinear" only: a smooth threshold of the fill ratio and three interactions (assumptions; docs)
FILL_THRESHOLD, FILL_THRESHOLD_SOFTNESS, FILL_THRESHOLD_LOG_ODDS_PER_0_05 = 0.25, 0.01, 1.2
INTERACTION_OR = {"low_viscosity_x_breach": 2.0, "high_viscosity_x_breach": 0.7, "low_viscosity_x_foramen": 1.8}
SITE_LEAK_SD, OPERATOR_LEAK_SD, WORSE_SITE_OR = 0.25, 0.15, 2.0
# where a leak goes: one primary site (softmax of log-weights, venous = 0) plus independent extra sites
SITE_BASE_LOG_WEIGHT = np.array([-1.55, -1.85, -2.7, -3.35, 0.0])
SITE_EXTRA_PROB = np.array([0.08, 0.08, 0.03, 0.03, 0.10])
XRAY_DETECTION = np.array([0.60, 0.60, 0.20, 0.20, 0.60])  # per site; CT sees every leak
SYMPTOMATIC_BASE, SYMPTOMATIC_CANAL, SYMPTOMATIC_THORACIC_CANAL = 0.008, 0.07, 0.08
LEAKAGE_NOT_ASSESSED_SHARE = 0.02  # per procedure: no post-procedural imaging report

# --- infection: odds ratios on the 90-day infection ---------------------------------------------------------------
INFECTION_BASE_LOGIT = -6.5
INFECTION_OR = {
    "diabetic": 2.0, "steroids": 2.0, "immunosuppression": 2.5, "infection_before": 5.6,
    "malignant": 7.3, "two_or_more_levels": 2.0, "prophylaxis": 0.35,
}

# --- completely-at-random missingness of optional columns (share of rows) -----------------------------------------
MISSING_SHARE = {
    BMI: 0.10, PROCEDURE_MINUTES: 0.08, LENGTH_OF_STAY_DAYS: 0.05, PAIN_VAS_PRE: 0.12, PAIN_VAS_POST: 0.18,
    INFECTION_90D: 0.03, FRACTURE_AGE_DAYS: 0.12, HEIGHT_LOSS_PCT: 0.10, KYPHOTIC_ANGLE_PRE: 0.25,
    KYPHOTIC_ANGLE_POST: 0.05, BALLOON_VOLUME_ML: 0.05, VERTEBRAL_BODY_VOLUME_ML: 0.05,
}


# --- conditional distributions (numpy broadcasting throughout) ----------------------------------------------------

def general_log_odds(site_general: np.ndarray, malignant: np.ndarray, n_levels: np.ndarray) -> np.ndarray:
    """Log-odds of general anaesthesia given the site's style, the etiology and the number of levels."""
    return GENERAL_BASE_LOGIT + site_general + GENERAL_MALIGNANT * malignant + GENERAL_PER_EXTRA_LEVEL * (n_levels - 1)


def unipedicular_threshold(site_unipedicular: np.ndarray) -> np.ndarray:
    """u below this is extra- or unipedicular (u ~ U(0, 1); below EXTRAPEDICULAR_SHARE extrapedicular)."""
    return EXTRAPEDICULAR_SHARE + (1 - EXTRAPEDICULAR_SHARE) * site_unipedicular


def viscosity_log_weights(years_in: np.ndarray, site_high_viscosity: np.ndarray) -> np.ndarray:
    """Softmax log-weights of low / medium / high viscosity (last axis) by years since first_year and site style."""
    low = VISCOSITY_LOW_PER_YEAR * years_in - site_high_viscosity
    high = VISCOSITY_HIGH_LOGIT + VISCOSITY_HIGH_PER_YEAR * years_in + site_high_viscosity
    return np.stack([low, np.full(np.shape(low), VISCOSITY_MEDIUM_LOGIT), high], axis=-1)


def postop_ct_log_odds(years_in: np.ndarray, site_ct: np.ndarray) -> np.ndarray:
    """Log-odds that post-procedural imaging is CT rather than X-ray."""
    return POSTOP_CT_BASE_LOGIT + POSTOP_CT_PER_YEAR * years_in + site_ct


def bmd_mean(etiology: np.ndarray, female: np.ndarray, age: np.ndarray) -> np.ndarray:
    """Mean of the true BMD T-score (normal, SD BMD_SD) given etiology, sex and the recorded (top-coded) age."""
    return BMD_MEAN[etiology] - BMD_FEMALE_SHIFT * female - BMD_PER_YEAR_OVER_70 * (age - 70)


def cleft_log_odds(grade: np.ndarray, fracture_age: np.ndarray, etiology: np.ndarray) -> np.ndarray:
    """Log-odds of an intravertebral cleft (only at Genant grade > 0) given grade, fracture age (days), etiology."""
    return (-2.3 + 0.8 * (grade - 2) + 0.6 * np.log((fracture_age + 1) / 30)
            - 1.0 * (etiology == MALIGNANT) - 0.5 * (etiology == TRAUMATIC))


def body_volume_scale(vertebra: np.ndarray, female: np.ndarray) -> np.ndarray:
    """Median vertebral body volume (ml) before height loss, by vertebra index (t1 = 0) and sex."""
    return BODY_VOLUME_T1_ML * np.exp(BODY_VOLUME_GROWTH_PER_LEVEL * vertebra) * np.where(
        female, BODY_VOLUME_FEMALE_FACTOR, 1.0)


def height_loss_factor(height_loss: np.ndarray) -> np.ndarray:
    """Share of the body volume left after ``height_loss`` percent of height is lost."""
    return 1 - BODY_VOLUME_HEIGHT_LOSS_FACTOR * height_loss / 100


def fill_target_mean(kyphoplasty: np.ndarray) -> np.ndarray:
    """Mean target fill ratio (cement / body volume) before the operator's style; kyphoplasty fills more."""
    return FILL_TARGET_MEAN + FILL_TARGET_KYPHOPLASTY * kyphoplasty


def kyphotic_pre_mean(height_loss: np.ndarray, thoracic: np.ndarray) -> np.ndarray:
    """Mean pre-procedural kyphotic angle (degrees; normal, SD KYPHOTIC_NOISE_SD)."""
    return KYPHOTIC_BASE_DEG + KYPHOTIC_PER_HEIGHT_LOSS * height_loss + KYPHOTIC_THORACIC_DEG * thoracic


def fill_log_odds(fill_ratio: np.ndarray, *, structure: str) -> np.ndarray:
    """The fill ratio's part of the true-leak log-odds: linear, plus a softplus threshold for ``nonlinear``.

    The threshold adds FILL_THRESHOLD_LOG_ODDS_PER_0_05 x softplus((fill - 0.25) / 0.01) x 0.01 / 0.05: below
    0.03 under 0.23, 0.17 at 0.25, then +1.2 log-odds per 0.05 of fill above 0.25 (a hinge smoothed over +-0.02).
    """
    linear = np.log(LEAK_OR["fill_ratio_per_0.05"]) * (fill_ratio - FILL_RATIO_CENTRE) / 0.05
    if structure == "literature":
        return linear
    softness = FILL_THRESHOLD_SOFTNESS
    return linear + FILL_THRESHOLD_LOG_ODDS_PER_0_05 * softness / 0.05 * np.logaddexp(
        0.0, (fill_ratio - FILL_THRESHOLD) / softness)


def leak_log_odds(*, cortical: np.ndarray, cleft: np.ndarray, viscosity: np.ndarray, fill_ratio: np.ndarray,
                  cement_ml: np.ndarray, foramen: np.ndarray, bmd: np.ndarray, malignant: np.ndarray,
                  structure: str) -> np.ndarray:
    """Log-odds of a true (CT-visible) leak before the site and operator effects, which the caller adds.

    ``literature``: the main effects of LEAK_OR. ``nonlinear``: the same, plus the fill-ratio threshold of
    :func:`fill_log_odds`, INTERACTION_OR (low and high viscosity x cortical breach, low viscosity x
    basivertebral foramen) and a base logit recentred so the mean true leak rate stays that of ``literature``.
    """
    log_or = {name: np.log(ratio) for name, ratio in LEAK_OR.items()}
    low, high = viscosity == LOW, viscosity == HIGH
    logit = (LEAK_BASE_LOGIT[structure] + log_or["cortical_breach"] * cortical + log_or["cleft"] * cleft
             + log_or["low_viscosity"] * low + log_or["high_viscosity"] * high
             + fill_log_odds(fill_ratio, structure=structure)
             + log_or["cement_per_ml"] * (cement_ml - CEMENT_CENTRE_ML)
             + log_or["venous_foramen"] * foramen
             + log_or["bmd_per_unit_lower"] * (BMD_CENTRE - bmd)
             + log_or["malignant"] * malignant)
    if structure == "literature":
        return logit
    interaction = {name: np.log(ratio) for name, ratio in INTERACTION_OR.items()}
    return (logit + interaction["low_viscosity_x_breach"] * (low & cortical)
            + interaction["high_viscosity_x_breach"] * (high & cortical)
            + interaction["low_viscosity_x_foramen"] * (low * foramen))


def primary_site_probabilities(*, cleft: np.ndarray, foramen: np.ndarray, fresh: np.ndarray, cortical: np.ndarray,
                               endplate: np.ndarray, malignant: np.ndarray, thoracic: np.ndarray) -> np.ndarray:
    """P(primary leak site = k | true leak), shape (n, N_SITES_OF_LEAK); ``fresh``: fracture younger than 14 days."""
    weights = np.tile(SITE_BASE_LOG_WEIGHT, (len(cleft), 1))
    weights[:, VENOUS] += -1.1 * cleft + 0.4 * foramen + 0.3 * fresh
    weights[:, PARAVERTEBRAL] += 0.4 * cleft + 0.6 * cortical + 0.3 * malignant
    weights[:, INTRADISCAL] += 0.4 * cleft + 0.9 * endplate
    weights[:, list(CANAL)] += (0.4 * cleft + 1.0 * cortical + 0.6 * malignant + 0.3 * thoracic)[:, None]
    return softmax(weights)


def detection_probabilities(postop_ct: np.ndarray) -> np.ndarray:
    """P(a present leak site is seen), shape (n, N_SITES_OF_LEAK): 1 on CT, XRAY_DETECTION on X-ray."""
    return np.where(np.asarray(postop_ct)[:, None], 1.0, XRAY_DETECTION[None, :])


def p_none_seen(primary_p: np.ndarray, detection: np.ndarray, sites: tuple[int, ...]) -> np.ndarray:
    """P(no leak site in ``sites`` is seen | true leak), per row.

    A true leak has one primary site k ~ Categorical(pi) and each other site s with probability r_s; a present
    site is seen with probability d_s (1 on CT). So P(no site of A seen | leak) = sum_k pi_k prod_{s in A}
    (1 - q_ks d_s) with q_ks = 1 if s = k else r_s, and P(observed leak at a site of A) = p_true (1 - that).
    """
    total = np.zeros(len(primary_p))
    for k in range(primary_p.shape[1]):
        none_seen = np.ones(len(primary_p))
        for s in sites:
            none_seen *= 1 - (1.0 if s == k else SITE_EXTRA_PROB[s]) * detection[:, s]
        total += primary_p[:, k] * none_seen
    return total


def softmax(logits: np.ndarray) -> np.ndarray:
    """Softmax over the last axis."""
    shifted = np.exp(logits - logits.max(axis=-1, keepdims=True))
    return shifted / shifted.sum(axis=-1, keepdims=True)


def expit(x: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-x))
