"""A slow, direct evaluation of the observable-only risks, to check synth.observable against.

Per procedure and per (kyphoplasty, operator) pair: dense grids over the latent body volume (and height loss
where missing), exact interval likelihoods of the recorded cement and measured volume, the BMD integrated by
Gauss-Hermite, and no shortcut in the coupling of operator, fill style and body volume.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
from scipy.special import expit, ndtr

from records.schema import (
    AGE_YEARS, ANESTHESIA, ANTIBIOTIC_PROPHYLAXIS, APPROACH, BALLOON_VOLUME_ML, BASIVERTEBRAL_FORAMEN, BMD_T_SCORE,
    CEMENT_VISCOSITY, CEMENT_VOLUME_ML, CORTICAL_DISRUPTION, ENDPLATE_DISRUPTION, ETIOLOGIES, ETIOLOGY,
    EXTRACT_BATCH, FRACTURE_AGE_DAYS, GENANT_GRADE, HEIGHT_LOSS_PCT, INTRAVERTEBRAL_CLEFT, KYPHOTIC_ANGLE_POST,
    KYPHOTIC_ANGLE_PRE, LEAKAGE, LEAKAGE_IMAGING, N_LEVELS, PROCEDURE_ID, SEX, VERTEBRA, VERTEBRAE,
    VERTEBRAL_BODY_VOLUME_ML, VISCOSITIES,
)
from synth import model as m

SITES = {"any": m.ALL_SITES, "canal": m.CANAL, "venous": (m.VENOUS,)}


def reference_risks(procedures: pd.DataFrame, levels: pd.DataFrame, centres: dict, *, structure: str,
                    rows: list[int]) -> pd.DataFrame:
    """Observable risks of the procedures at positions ``rows``: one row per level, columns any, canal, venous."""
    out = []
    for row in rows:
        procedure = procedures.iloc[row]
        its_levels = levels[levels[PROCEDURE_ID] == procedure[PROCEDURE_ID]]
        out.append(_one_procedure(procedure, its_levels, centres, structure=structure))
    return pd.concat(out)


def _one_procedure(procedure: pd.Series, levels: pd.DataFrame, centres: dict, *, structure: str) -> pd.DataFrame:
    site_of = centres["operator_site"]
    years = int(procedure[EXTRACT_BATCH] - 1) // 4
    etiology = ETIOLOGIES.index(procedure[ETIOLOGY])
    malignant = etiology == m.MALIGNANT
    female = procedure[SEX] == "f"
    viscosity = VISCOSITIES.index(levels[CEMENT_VISCOSITY].iloc[0])
    assessed = not pd.isna(levels[LEAKAGE].iloc[0])
    ct = assessed and levels[LEAKAGE_IMAGING].iloc[0] == "ct"

    # site evidence, one site at a time
    log_site = np.zeros(len(centres["site_general"]))
    for s in range(len(log_site)):
        p_general = expit(m.general_log_odds(centres["site_general"][s], malignant, procedure[N_LEVELS]))
        log_site[s] += np.log(p_general if procedure[ANESTHESIA] == "general" else 1 - p_general)
        uni = m.EXTRAPEDICULAR_SHARE + (1 - m.EXTRAPEDICULAR_SHARE) * centres["site_unipedicular"][s]
        log_site[s] += {"unipedicular": np.log(uni - m.EXTRAPEDICULAR_SHARE), "bipedicular": np.log(1 - uni),
                        "extrapedicular": np.log(m.EXTRAPEDICULAR_SHARE)}[procedure[APPROACH]]
        weights = m.viscosity_log_weights(np.array(years), centres["site_high_viscosity"][s])
        log_site[s] += weights[viscosity] - np.log(np.exp(weights).sum())
        share = centres["site_prophylaxis"][s]
        log_site[s] += np.log(share if procedure[ANTIBIOTIC_PROPHYLAXIS] else 1 - share)
        if assessed:
            p_ct = expit(m.postop_ct_log_odds(years, centres["site_ct"][s]))
            log_site[s] += np.log(p_ct if ct else 1 - p_ct)
    kyphoplasty_share = centres["site_kyphoplasty"][site_of]
    log_joint = np.stack([np.log(1 - kyphoplasty_share), np.log(kyphoplasty_share)]) + np.log(
        centres["operator_p"]) + log_site[site_of]  # (k, o)
    fill_mean = m.fill_target_mean(np.array([[0], [1]])) + centres["operator_fill"][None, :]

    level_terms = []
    for _, level in levels.iterrows():
        nodes = _volume_nodes(level, female)
        cement = level[CEMENT_VOLUME_ML]
        likelihood = _cement_likelihood(cement, nodes["volume"][None, None, :], fill_mean[:, :, None])
        joint = nodes["weight"] * likelihood  # (k, o, nodes)
        balloon = not pd.isna(level[BALLOON_VOLUME_ML])
        log_joint = log_joint + np.log(joint.sum(axis=2)) + _log_kyphoplasty_level(level, balloon)[:, None]
        level_terms.append((level, nodes, joint))

    posterior = np.exp(log_joint - log_joint.max())
    posterior /= posterior.sum()
    effect = centres["site_leak"][site_of] + centres["operator_leak"]
    p_ct_operator = expit(m.postop_ct_log_odds(years, centres["site_ct"][site_of]))
    bmd = procedure[BMD_T_SCORE]
    xi, wi = np.polynomial.hermite_e.hermegauss(12)
    wi = wi / wi.sum()
    if pd.isna(bmd):
        bmd_values = m.bmd_mean(etiology, female, procedure[AGE_YEARS]) + m.BMD_SD * xi
        bmd_weights = wi
    elif bmd <= -6.0:
        bmd_values, bmd_weights = _truncated_normal_nodes(m.bmd_mean(etiology, female, procedure[AGE_YEARS]))
    else:
        bmd_values, bmd_weights = np.array([bmd]), np.array([1.0])

    out = []
    for level, nodes, joint in level_terms:
        thoracic = VERTEBRAE.index(level[VERTEBRA]) < m.N_THORACIC
        foramen = level[BASIVERTEBRAL_FORAMEN]
        foramen_values = [(0.0, 1 - m.BASIVERTEBRAL_FORAMEN_SHARE), (1.0, m.BASIVERTEBRAL_FORAMEN_SHARE)] \
            if pd.isna(foramen) else [(float(foramen), 1.0)]
        fresh_p = _fresh_probability(etiology, int(level[GENANT_GRADE]), bool(level[INTRAVERTEBRAL_CLEFT])) \
            if pd.isna(level[FRACTURE_AGE_DAYS]) else float(level[FRACTURE_AGE_DAYS] < m.FRESH_FRACTURE_DAYS)
        node_posterior = joint / joint.sum(axis=2, keepdims=True)  # (k, o, nodes)
        risks = {name: 0.0 for name in SITES}
        for f, pf in foramen_values:
            logit = m.leak_log_odds(
                cortical=np.array(bool(level[CORTICAL_DISRUPTION])), cleft=np.array(bool(level[INTRAVERTEBRAL_CLEFT])),
                viscosity=np.array(viscosity), fill_ratio=level[CEMENT_VOLUME_ML] / nodes["volume"][:, None],
                cement_ml=np.array(level[CEMENT_VOLUME_ML]), foramen=np.array(f), bmd=bmd_values[None, :],
                malignant=np.array(malignant), structure=structure)  # (nodes, bmd)
            p_true = np.empty(posterior.shape)
            for first in range(0, posterior.shape[1], 8):
                block = slice(first, first + 8)
                per_node = expit(logit[None] + effect[block, None, None]) @ bmd_weights  # (operators, nodes)
                p_true[:, block] = np.einsum("kon,on->ko", node_posterior[:, block, :], per_node)
            for fresh, pr in ((False, 1 - fresh_p), (True, fresh_p)):
                primary = m.primary_site_probabilities(
                    cleft=np.array([bool(level[INTRAVERTEBRAL_CLEFT])]), foramen=np.array([f]),
                    fresh=np.array([fresh]), cortical=np.array([bool(level[CORTICAL_DISRUPTION])]),
                    endplate=np.array([bool(level[ENDPLATE_DISRUPTION])]), malignant=np.array([malignant]),
                    thoracic=np.array([thoracic]))
                for name, sites in SITES.items():
                    seen = {c: 1 - m.p_none_seen(primary, m.detection_probabilities(np.array([c])), sites)[0]
                            for c in (False, True)}
                    if assessed:
                        expected = (posterior * p_true).sum() * seen[ct]
                    else:
                        detection = p_ct_operator * seen[True] + (1 - p_ct_operator) * seen[False]
                        expected = (posterior * p_true * detection[None, :]).sum()
                    risks[name] += pf * pr * expected
        out.append(risks)
    return pd.DataFrame(out, index=levels.index)


def _volume_nodes(level: pd.Series, female: bool) -> dict[str, np.ndarray]:
    """Dense grid over (height loss, z) with prior x measurement x kyphotic-angle weights."""
    vertebra = VERTEBRAE.index(level[VERTEBRA])
    thoracic = vertebra < m.N_THORACIC
    scale = m.body_volume_scale(np.array(vertebra), np.array(female))
    if pd.isna(level[HEIGHT_LOSS_PCT]):
        grade = int(level[GENANT_GRADE])
        a, b = m.HEIGHT_LOSS_BAND[grade]
        raw = np.linspace(-30.0, 110.0, 1401)  # U(a, b) + N(0, 4^2) by direct numerical convolution
        u = np.linspace(a, b, 301)
        density = np.exp(-0.5 * ((raw[:, None] - u[None, :]) / m.HEIGHT_LOSS_NOISE_SD) ** 2).sum(axis=1)
        density /= density.sum()
        at_zero = density[raw <= 0].sum()
        heights = np.r_[0.0, raw[raw > 0][::8]]
        height_weight = np.r_[at_zero, density[raw > 0][::8] * 8]
        pre = level[KYPHOTIC_ANGLE_PRE]
        if not pd.isna(pre):
            height_weight = height_weight * np.exp(-0.5 * ((pre - m.kyphotic_pre_mean(heights, thoracic))
                                                           / m.KYPHOTIC_NOISE_SD) ** 2)
        keep = height_weight > height_weight.max() * 1e-12
        heights, height_weight = heights[keep], height_weight[keep]
        z = np.linspace(-8.5, 8.5, 401)
    else:
        heights, height_weight = np.array([level[HEIGHT_LOSS_PCT]]), np.array([1.0])
        z = np.linspace(-8.5, 8.5, 2001)
    volume = np.clip(scale * np.exp(m.BODY_VOLUME_LOG_SD * z)[None, :] * m.height_loss_factor(heights)[:, None],
                     *m.BODY_VOLUME_RANGE_ML)
    weight = height_weight[:, None] * np.exp(-0.5 * z ** 2)[None, :]
    measured = level[VERTEBRAL_BODY_VOLUME_ML]
    if not pd.isna(measured):
        sd = m.BODY_VOLUME_MEASUREMENT_SD
        upper = ndtr(((measured + 0.05) / volume - 1) / sd)
        lower = 0.0 if measured <= m.BODY_VOLUME_RANGE_ML[0] else ndtr(((measured - 0.05) / volume - 1) / sd)
        weight = weight * (upper - lower)
    return {"volume": volume.ravel(), "weight": weight.ravel() / weight.sum()}


def _cement_likelihood(cement: float, volume: np.ndarray, fill_mean: np.ndarray) -> np.ndarray:
    """P(recorded cement | volume, m): clip(round(volume x clip(N(m, sd^2), 0.04, 0.40), 1), 0.5, 12)."""
    low, high = m.FILL_TARGET_RANGE

    def below(ml: float) -> np.ndarray:
        t = ml / volume
        return np.where(t <= low, 0.0, np.where(t > high, 1.0, ndtr((t - fill_mean) / m.FILL_TARGET_SD)))

    upper = 1.0 if cement >= m.CEMENT_RANGE_ML[1] else below(cement + 0.05)
    lower = 0.0 if cement <= m.CEMENT_RANGE_ML[0] else below(cement - 0.05)
    return np.maximum(upper - lower, 0.0)


def _log_kyphoplasty_level(level: pd.Series, balloon: bool) -> np.ndarray:
    """log P(balloon recorded or not, correction | vertebroplasty, kyphoplasty) for one level."""
    missing = m.MISSING_SHARE[m.BALLOON_VOLUME_ML]
    out = np.array([-np.inf if balloon else 0.0, np.log(1 - missing) if balloon else np.log(missing)])
    pre, post = level[KYPHOTIC_ANGLE_PRE], level[KYPHOTIC_ANGLE_POST]
    if not (pd.isna(pre) or pd.isna(post)):
        for k, kyphoplasty in enumerate((False, True)):
            mean, sd = m.CORRECTION_MEAN_SD[kyphoplasty]
            if post <= -10:
                out[k] += np.log(1 - ndtr((pre + 9.95 - mean) / sd))
            else:
                out[k] += -0.5 * ((pre - post - mean) / sd) ** 2 - np.log(sd)
    return out


def _truncated_normal_nodes(mean: float) -> tuple[np.ndarray, np.ndarray]:
    values = np.linspace(mean - 10 * m.BMD_SD, -5.95, 4001)
    weights = np.exp(-0.5 * ((values - mean) / m.BMD_SD) ** 2)
    return values, weights / weights.sum()


def _fresh_probability(etiology: int, grade: int, cleft: bool) -> float:
    """P(fracture age < 14 days | etiology, grade, cleft) by a dense integral over the log-normal's z."""
    z = np.linspace(-9.0, 9.0, 400_001)
    age = np.rint(m.FRACTURE_AGE_MEDIAN_DAYS[etiology] * np.exp(m.FRACTURE_AGE_LOG_SD * z))
    p_cleft = expit(m.cleft_log_odds(grade, age, etiology)) if grade > 0 else np.zeros_like(z)
    weight = np.exp(-0.5 * z ** 2) * (p_cleft if cleft else 1 - p_cleft)
    return float(weight[age < m.FRESH_FRACTURE_DAYS].sum() / weight.sum())
