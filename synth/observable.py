"""Observable-only leakage risks: the true risks averaged over what the contract records do not hold.

``p_leakage_*_observable`` = E[p_leakage_* | the contract tables without site_id and operator_id], under the
generative model of :mod:`synth.model` and the registry's own sites and operators: the best risk a model without
site or operator terms can reach. Method and error bounds: docs/synthetic-registry.md.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from functools import lru_cache

import numpy as np
import pandas as pd
from scipy.special import ndtr

from records.schema import (
    AGE_YEARS, ANESTHESIA, ANTIBIOTIC_PROPHYLAXIS, APPROACH, APPROACHES, BALLOON_VOLUME_ML, BASIVERTEBRAL_FORAMEN,
    BMD_T_SCORE, CEMENT_VISCOSITY, CEMENT_VOLUME_ML, CORTICAL_DISRUPTION, ENDPLATE_DISRUPTION, ETIOLOGIES, ETIOLOGY,
    EXTRACT_BATCH, FRACTURE_AGE_DAYS, GENANT_GRADE, HEIGHT_LOSS_PCT, IMAGING_MODALITIES, INTRAVERTEBRAL_CLEFT,
    KYPHOTIC_ANGLE_POST, KYPHOTIC_ANGLE_PRE, LEAKAGE, LEAKAGE_IMAGING, N_LEVELS, PROCEDURE_ID, SEX, VERTEBRA,
    VERTEBRAE, VERTEBRAL_BODY_VOLUME_ML, VISCOSITIES,
)
from synth.body_volume import Nodes, body_volume_nodes, hermite
from synth.operator_posterior import operator_posterior, procedure_starts
from synth.model import (
    ALL_SITES, BASIVERTEBRAL_FORAMEN_SHARE, BMD_SD, CANAL, CT, FILL_RATIO_CENTRE, FRACTURE_AGE_LOG_SD,
    FRACTURE_AGE_MEDIAN_DAYS, FRESH_FRACTURE_DAYS, LEAK_OR, LEAK_STRUCTURES, MALIGNANT, N_SITES_OF_LEAK, N_THORACIC,
    VENOUS, bmd_mean, cleft_log_odds, detection_probabilities, expit, fill_log_odds, fill_target_mean, leak_log_odds,
    p_none_seen, postop_ct_log_odds, primary_site_probabilities,
)

OUTCOME_SITES = {"any": ALL_SITES, "canal": CANAL, "venous": (VENOUS,)}
BMD_RECORDED_LOW = -6.0  # contract floor: a recorded -6.0 means a true T-score below -5.95
FILL_TARGET_MEAN_NODES = 6  # Chebyshev nodes in m for the cement likelihood of every (kyphoplasty, operator)
KNOWN_KYPHOPLASTY = 1e-9  # below this posterior of the other status, one pass instead of one per status
LOGIT_GRID_STEP = 0.5  # of the tabulated site / operator mixture (cubic Hermite interpolation)
BMD_NODES = 32


def observable_leak_risks(procedures: pd.DataFrame, levels: pd.DataFrame, centres: Mapping[str, np.ndarray], *,
                          structure: str, chunk_procedures: int = 20_000) -> dict[str, np.ndarray]:
    """Expected true leakage risks given the records, site and operator identity excluded.

    For every level E[p | R]: p the true probability of ``leakage`` (and of a canal or venous leak seen), R
    every contract column of its procedure and of all its levels except site_id, operator_id and the leakage
    outcomes. Averaged over the site and operator (their posterior given the practice the records show:
    anaesthesia, approach, viscosity, prophylaxis, imaging, balloon volumes, kyphotic correction and cement
    volumes), kyphoplasty vs vertebroplasty where no balloon volume is recorded, the true vertebral body volume
    (:mod:`synth.body_volume`), BMD, basivertebral foramen and fracture age where missing, and the imaging
    modality where leakage was not assessed.

    Parameters
    ----------
    procedures, levels
        Contract tables as :func:`synth.generator.generate_registry` makes them; every procedure has a level.
    centres
        The registry's sites and operators as drawn by the generator (volumes, practice styles, effects).
    structure
        The leakage model, one of ``synth.model.LEAK_STRUCTURES``.
    chunk_procedures
        Procedures handled at once (working memory about 10 kB per procedure).

    Returns
    -------
    dict
        ``any``, ``canal``, ``venous`` -> float array row-aligned with ``levels``.

    Raises
    ------
    ValueError
        An unknown structure, a level whose procedure_id is not in ``procedures`` or a procedure without levels.
    """
    if structure not in LEAK_STRUCTURES:
        raise ValueError(f"structure must be one of {', '.join(LEAK_STRUCTURES)}; got {structure!r}")
    proc, lev = _recorded_values(procedures, levels)
    order = np.argsort(lev["owner"], kind="stable")
    lev = {name: values[order] for name, values in lev.items()}
    n = len(proc["years_in"])
    bounds = np.arange(0, n + chunk_procedures, chunk_procedures).clip(max=n)
    starts = np.searchsorted(lev["owner"], bounds)
    result = {name: np.empty(len(order)) for name in OUTCOME_SITES}
    for p0, p1, lo, hi in zip(bounds[:-1], bounds[1:], starts[:-1], starts[1:]):
        chunk_lev = {name: values[lo:hi] for name, values in lev.items()}
        chunk_lev["owner"] = chunk_lev["owner"] - p0
        risks = _chunk_risks({name: values[p0:p1] for name, values in proc.items()}, chunk_lev, centres,
                             structure=structure)
        for name, risk in risks.items():
            result[name][order[lo:hi]] = risk
    return result


# --- the records as arrays ----------------------------------------------------------------------------------------

def _recorded_values(procedures: pd.DataFrame, levels: pd.DataFrame) -> tuple[dict, dict]:
    """Recorded values as numpy arrays (NaN where missing; categories as codes); nothing of site or operator."""
    owner = pd.Index(procedures[PROCEDURE_ID]).get_indexer(levels[PROCEDURE_ID])
    if (owner < 0).any():
        raise ValueError(f"every level's {PROCEDURE_ID} must be in procedures; {int((owner < 0).sum())} rows are not")
    with_levels, first_level = np.unique(owner, return_index=True)
    if len(with_levels) != len(procedures):
        raise ValueError(f"every procedure must have a level; {len(procedures) - len(with_levels)} have none")

    def number(frame: pd.DataFrame, name: str) -> np.ndarray:
        return frame[name].to_numpy(dtype=float, na_value=np.nan)

    def code(frame: pd.DataFrame, name: str, categories: tuple[str, ...]) -> np.ndarray:
        return pd.Categorical(frame[name], categories=categories).codes.astype(np.int64)

    proc = {
        "years_in": (procedures[EXTRACT_BATCH].to_numpy(dtype=np.int64) - 1) // 4,
        "etiology": code(procedures, ETIOLOGY, ETIOLOGIES), "female": (procedures[SEX] == "f").to_numpy(bool),
        "age": number(procedures, AGE_YEARS), "bmd": number(procedures, BMD_T_SCORE),
        "n_levels": procedures[N_LEVELS].to_numpy(dtype=np.int64),
        "general": (procedures[ANESTHESIA] == "general").to_numpy(bool),
        "approach": code(procedures, APPROACH, APPROACHES),
        "prophylaxis": procedures[ANTIBIOTIC_PROPHYLAXIS].to_numpy(dtype=bool),
        "viscosity": code(levels, CEMENT_VISCOSITY, VISCOSITIES)[first_level],
        "assessed": levels[LEAKAGE].notna().to_numpy()[first_level],
        "ct": (code(levels, LEAKAGE_IMAGING, IMAGING_MODALITIES) == CT)[first_level],
    }
    lev = {
        "owner": owner, "vertebra": code(levels, VERTEBRA, VERTEBRAE), "grade": number(levels, GENANT_GRADE),
        "height_loss": number(levels, HEIGHT_LOSS_PCT), "fracture_age": number(levels, FRACTURE_AGE_DAYS),
        "cleft": levels[INTRAVERTEBRAL_CLEFT].to_numpy(dtype=bool),
        "cortical": levels[CORTICAL_DISRUPTION].to_numpy(dtype=bool),
        "endplate": levels[ENDPLATE_DISRUPTION].to_numpy(dtype=bool),
        "foramen": number(levels, BASIVERTEBRAL_FORAMEN), "cement": number(levels, CEMENT_VOLUME_ML),
        "body_volume": number(levels, VERTEBRAL_BODY_VOLUME_ML),
        "kyphotic_pre": number(levels, KYPHOTIC_ANGLE_PRE), "kyphotic_post": number(levels, KYPHOTIC_ANGLE_POST),
        "balloon": levels[BALLOON_VOLUME_ML].notna().to_numpy(),
    }
    return proc, lev


# --- one chunk ----------------------------------------------------------------------------------------------------

def _chunk_risks(proc: dict, lev: dict, centres: Mapping[str, np.ndarray], *, structure: str) -> dict[str, np.ndarray]:
    """Observable risks of one chunk of procedures (levels sorted by procedure, ``owner`` local)."""
    owner = lev["owner"]
    malignant = proc["etiology"][owner] == MALIGNANT
    thoracic = lev["vertebra"] < N_THORACIC
    fill_means = fill_target_mean(np.array([[0], [1]])) + centres["operator_fill"][None, :]  # (k, operator)
    nodes = body_volume_nodes(lev, female=proc["female"][owner], thoracic=thoracic,
                              fill_mean_range=(float(fill_means.min()), float(fill_means.max())))
    sweep = _chebyshev_nodes(fill_means.ravel())
    log_cement = np.empty((len(owner), len(sweep)))
    for group in nodes:
        terms = group.log_weight[:, None, :] + group.log_cement_likelihood(sweep)
        top = terms.max(axis=2)
        log_cement[group.rows] = top + np.log(np.exp(terms - top[:, :, None]).sum(axis=2))
    summed = np.add.reduceat(log_cement, procedure_starts(owner)) @ _chebyshev_basis(fill_means.ravel())
    passes = _kyphoplasty_passes(operator_posterior(proc, lev, centres, log_cement=summed), fill_means,
                                 bmd_missing=np.isnan(proc["bmd"]))

    base = _log_odds_without_fill(proc, lev, malignant, structure=structure)  # (levels, foramen 0 / 1)
    evaluations = [evaluation for group in nodes for column in (0, 1)
                   if (evaluation := _evaluation(group, passes, owner, column, structure=structure)) is not None]
    grid = _logit_grid(base, evaluations)
    effect = centres["site_leak"][centres["operator_site"]] + centres["operator_leak"]
    deviation = (fill_means[passes.k] - passes.mean_fill[:, None]).astype(np.float32)
    channels = np.stack([passes.weights, passes.weights * deviation, passes.weights * deviation ** 2 / 2], axis=1)
    mixture = _tabulate_mixture(channels, effect, grid, passes.bmd_missing)
    unassessed = np.flatnonzero(~proc["assessed"][passes.procedure])  # passes whose imaging is unknown
    ct_share = expit(postop_ct_log_odds(proc["years_in"][passes.procedure[unassessed]][:, None],
                                        centres["site_ct"][centres["operator_site"]][None, :])).astype(np.float32)
    mixture_ct = _tabulate_mixture(channels[unassessed] * ct_share[:, None, :], effect, grid,
                                   passes.bmd_missing[unassessed])
    ct_row = np.full(len(passes.procedure), -1)
    ct_row[unassessed] = np.arange(len(unassessed))

    true_leak = np.zeros((len(owner), 2))  # E[p_true | R, foramen = 0 / 1]
    true_leak_ct = np.zeros((len(owner), 2))  # E[p_true x 1(CT) | R, foramen], where leakage was not assessed
    foramen = lev["foramen"]
    for rows, which, coefficient, g in evaluations:
        for f in (0, 1):
            needed = np.flatnonzero(np.isnan(foramen[rows]) | (foramen[rows] == f))
            x = base[rows[needed], f][:, None] + g[needed]
            true_leak[rows[needed], f] += _expected(mixture, which[needed], x, grid, coefficient[needed])
            unknown = needed[ct_row[which[needed]] >= 0]
            if len(unknown):
                true_leak_ct[rows[unknown], f] += _expected(
                    mixture_ct, ct_row[which[unknown]], base[rows[unknown], f][:, None] + g[unknown], grid,
                    coefficient[unknown])
    return _seen_risks(proc, lev, true_leak, true_leak_ct, malignant=malignant, thoracic=thoracic)


def _log_odds_without_fill(proc: dict, lev: dict, malignant: np.ndarray, *, structure: str) -> np.ndarray:
    """The true-leak log-odds less its fill-ratio part, site and operator, at foramen 0 and 1: (levels, 2).

    BMD: recorded, or where missing its conditional mean (the normal spread is integrated in the mixture table).
    """
    owner = lev["owner"]
    centre = np.array(FILL_RATIO_CENTRE)
    return leak_log_odds(
        cortical=lev["cortical"][:, None], cleft=lev["cleft"][:, None], viscosity=proc["viscosity"][owner][:, None],
        fill_ratio=centre, cement_ml=lev["cement"][:, None], foramen=np.array([[0.0, 1.0]]),
        bmd=_bmd_for_risk(proc)[owner][:, None], malignant=malignant[:, None],
        structure=structure) - fill_log_odds(centre, structure=structure)


def _evaluation(group: Nodes, passes: _Passes, owner: np.ndarray, column: int, *,
                structure: str) -> tuple | None:
    """Rows of ``group`` in pass ``column`` (first or second): their passes, per-node coefficients, fill log-odds.

    At the pass's m: node weights omega_i (prior x cement likelihood, normalised), the centred score
    s_i = l'_i - E l' and q_i = s_i^2 - E s^2 + l''_i - E l'' of the cement log-likelihood l in m. Then
    E[p_true | R] = sum_i omega_i (V + s_i V_m + q_i V_mm)(x_i), exact to second order in (m_o - m): the
    coefficients are (omega, omega s, omega q), the channels of the mixture table V, V_m, V_mm.
    """
    which = passes.of_procedure[owner[group.rows], column]
    chosen = which >= 0
    if not chosen.any():
        return None
    subset = group.subset(chosen)
    mean_fill = passes.mean_fill[which[chosen]][:, None]
    weight = subset.log_weight + subset.log_cement_likelihood(mean_fill)
    weight = np.exp(weight - weight.max(axis=1, keepdims=True))
    weight /= weight.sum(axis=1, keepdims=True)
    first, second = subset.cement_derivatives(mean_fill)

    def centred(values: np.ndarray) -> np.ndarray:
        return values - (weight * values).sum(axis=1, keepdims=True)

    score = centred(first)
    coefficient = np.stack([weight, weight * score, weight * (centred(score ** 2) + centred(second))], axis=-1)
    return (subset.rows, which[chosen], coefficient.astype(np.float32),
            fill_log_odds(subset.cement[:, None] / subset.volume, structure=structure))


def _seen_risks(proc: dict, lev: dict, true_leak: np.ndarray, true_leak_ct: np.ndarray, *, malignant: np.ndarray,
                thoracic: np.ndarray) -> dict[str, np.ndarray]:
    """Mix the true-leak risk with where a leak goes and whether it is seen, over foramen and fracture age.

    The foramen (Bernoulli 0.35) and the fracture age are independent of everything else recorded given the
    recorded values, except the cleft for the age (:func:`_fresh_fracture_probability`).
    """
    owner = lev["owner"]
    foramen_p = np.where(np.isnan(lev["foramen"]), BASIVERTEBRAL_FORAMEN_SHARE, lev["foramen"])
    fresh_p = np.where(np.isnan(lev["fracture_age"]),
                       _fresh_fracture_probability()[proc["etiology"][owner], lev["grade"].astype(np.int64),
                                                     lev["cleft"].astype(np.int64)],
                       lev["fracture_age"] < FRESH_FRACTURE_DAYS)
    assessed, ct = proc["assessed"][owner], proc["ct"][owner]
    unit = np.eye(N_SITES_OF_LEAK)  # P(none of A seen | primary k): a constant per modality and site set
    none_seen = {(name, modality): p_none_seen(unit, detection_probabilities(np.full(N_SITES_OF_LEAK, modality)),
                                               sites) for name, sites in OUTCOME_SITES.items()
                 for modality in (False, True)}
    risks = {name: np.zeros(len(owner)) for name in OUTCOME_SITES}
    for f in (0, 1):
        for fresh in (0, 1):
            weight = np.where(f, foramen_p, 1 - foramen_p) * np.where(fresh, fresh_p, 1 - fresh_p)
            primary = primary_site_probabilities(
                cleft=lev["cleft"], foramen=np.full(len(owner), f), fresh=np.full(len(owner), fresh),
                cortical=lev["cortical"], endplate=lev["endplate"], malignant=malignant, thoracic=thoracic)
            for name in OUTCOME_SITES:
                seen = {modality: 1 - primary @ none_seen[name, modality] for modality in (False, True)}
                recorded = true_leak[:, f] * np.where(ct, seen[True], seen[False])
                unrecorded = true_leak[:, f] * seen[False] + true_leak_ct[:, f] * (seen[True] - seen[False])
                risks[name] += weight * np.where(assessed, recorded, unrecorded)
    return risks


@dataclass(frozen=True)
class _Passes:
    """Procedures evaluated once (kyphoplasty status practically known) or once per status, weighted by P(k | R).

    Ordered with recorded-BMD passes first, so the mixture tables are two matrix products.
    """

    procedure: np.ndarray  # procedure of each pass
    k: np.ndarray  # kyphoplasty (1) or not (0) of each pass: the more probable one where practically known
    weights: np.ndarray  # (passes, operators) float32: P(k, o | R) of the pass's k (summed over k if known)
    mean_fill: np.ndarray  # E[m | k, R] of the pass: the m the body-volume posterior is taken at
    bmd_missing: np.ndarray  # of the pass's procedure
    of_procedure: np.ndarray  # (procedures, 2): its passes, -1 for none


def _kyphoplasty_passes(posterior: np.ndarray, fill_means: np.ndarray, *, bmd_missing: np.ndarray) -> _Passes:
    """One pass per procedure whose kyphoplasty status is practically known (P < 1e-9 of the other), else two."""
    n = len(posterior)
    p_k = posterior.sum(axis=2, dtype=np.float64)  # (procedures, 2)
    mean_k = np.einsum("pko,ko->pk", posterior, fill_means) / np.maximum(p_k, 1e-300)
    uncertain = np.flatnonzero(p_k.min(axis=1) > KNOWN_KYPHOPLASTY)
    likely = p_k.argmax(axis=1)
    first_k = likely.copy()
    first_k[uncertain] = 0
    first_weights = posterior.sum(axis=1)
    first_weights[uncertain] = posterior[uncertain, 0, :]
    procedure = np.concatenate([np.arange(n), uncertain])
    order = np.argsort(bmd_missing[procedure], kind="stable")
    position = np.empty_like(order)
    position[order] = np.arange(len(order))
    of_procedure = np.full((n, 2), -1)
    of_procedure[:, 0] = position[:n]
    of_procedure[uncertain, 1] = position[n:]
    return _Passes(procedure=procedure[order], k=np.concatenate([first_k, np.ones(len(uncertain), int)])[order],
                   weights=np.concatenate([first_weights, posterior[uncertain, 1, :]])[order],
                   mean_fill=np.concatenate([mean_k[np.arange(n), first_k], mean_k[uncertain, 1]])[order],
                   bmd_missing=bmd_missing[procedure][order], of_procedure=of_procedure)


# --- the site / operator mixture on a logit grid --------------------------------------------------------------------

def _bmd_for_risk(proc: dict) -> np.ndarray:
    """BMD value entering the log-odds; where missing the rest is a normal integrated in the mixture table.

    Missing: the conditional mean. At the contract floor (-6.0 recorded: true below -5.95): the mean of the
    truncated normal (a few in 10,000 procedures; its spread, SD below 0.3, is left out).
    """
    mean = bmd_mean(proc["etiology"], proc["female"], proc["age"])
    missing = np.isnan(proc["bmd"])
    alpha = (BMD_RECORDED_LOW + 0.05 - mean) / BMD_SD
    truncated = mean - BMD_SD * np.exp(-0.5 * alpha ** 2) / np.sqrt(2 * np.pi) / np.maximum(ndtr(alpha), 1e-300)
    return np.where(missing, mean, np.where(proc["bmd"] <= BMD_RECORDED_LOW, truncated, proc["bmd"]))


def _logit_grid(base: np.ndarray, evaluations: list) -> np.ndarray:
    """Logit grid spanning every node of weight above 1e-12 (lighter ones are read at its ends: error < 1e-12)."""
    low = min(float(base[rows].min() + np.where(coefficient[..., 0] > 1e-12, g, np.inf).min())
              for rows, _, coefficient, g in evaluations)
    high = max(float(base[rows].max() + np.where(coefficient[..., 0] > 1e-12, g, -np.inf).max())
               for rows, _, coefficient, g in evaluations)
    return low + LOGIT_GRID_STEP * np.arange(-2, int(np.ceil((high - low) / LOGIT_GRID_STEP)) + 3)


def _tabulate_mixture(channels: np.ndarray, effect: np.ndarray, grid: np.ndarray,
                      bmd_missing: np.ndarray) -> np.ndarray:
    """sum_o w_pco E[expit(x + u_o + BMD term)] on ``grid``: (passes, channels, grid, 2), float32.

    ``bmd_missing`` must be sorted (False first). Last axis: the value and step x its derivative in x, for
    cubic Hermite interpolation. The BMD term: 0 where recorded; where missing normal with SD log(1.3) x 0.8,
    integrated by Gauss-Hermite (BMD_NODES: exact to about 1e-12).
    """
    shifted = grid[None, :] + effect[:, None]
    xi, w = hermite(BMD_NODES)
    spread = np.log(LEAK_OR["bmd_per_unit_lower"]) * BMD_SD
    plain = expit(shifted)
    integrated = [expit(shifted + spread * x) for x in xi]
    kernels = [np.stack([plain, plain * (1 - plain) * LOGIT_GRID_STEP], axis=-1),
               np.stack([sum(wk * e for wk, e in zip(w, integrated)),
                         sum(wk * e * (1 - e) for wk, e in zip(w, integrated)) * LOGIT_GRID_STEP], axis=-1)]
    passes, n_channels, operators = channels.shape
    split = int(np.searchsorted(bmd_missing, True))
    table = np.empty((passes, n_channels, len(grid), 2), dtype=np.float32)
    for block, kernel in zip((slice(0, split), slice(split, passes)), kernels):
        rows = channels[block].reshape(-1, operators)
        table[block] = (rows @ kernel.reshape(operators, -1).astype(np.float32)).reshape(-1, n_channels,
                                                                                        len(grid), 2)
    return table


def _expected(table: np.ndarray, row: np.ndarray, x: np.ndarray, grid: np.ndarray,
              coefficient: np.ndarray) -> np.ndarray:
    """sum over nodes and channels of coefficient x (cubic Hermite interpolation of table[row] at x), per row.

    Error of the interpolation at most step^4 / 384 x the largest 4th derivative (0.125 for a logistic): 2e-5.
    """
    n_channels, width = table.shape[1], table.shape[2]
    position = np.clip((x - grid[0]) / LOGIT_GRID_STEP, 0, width - 1)
    index = np.minimum(position.astype(np.int64), width - 2)
    t = (position - index).astype(np.float32)
    t2 = t * t
    t3 = t2 * t
    hermite_basis = np.stack([2 * t3 - 3 * t2 + 1, t3 - 2 * t2 + t, 3 * t2 - 2 * t3, t3 - t2], axis=-1)
    offsets = (np.arange(n_channels)[:, None] * width * 2 + np.arange(4)[None, :]).ravel()  # channel x (v, s, v+, s+)
    start = (row[:, None] * n_channels * width + index) * 2
    values = table.reshape(-1)[start[..., None] + offsets].reshape(*x.shape, n_channels, 4)
    return np.einsum("rnc,rnck,rnk->r", coefficient, values, hermite_basis, optimize=True)


# --- small exact pieces ---------------------------------------------------------------------------------------------

@lru_cache(maxsize=1)
def _fresh_fracture_probability() -> np.ndarray:
    """P(fracture younger than 14 days | etiology, Genant grade, cleft), (etiologies, 4, 2), for a missing age.

    age = rint(median x lognormal(0, 1)); the cleft's log-odds depend on the (rounded) age; exact sum over ages.
    """
    ages = np.arange(0, 400_001, dtype=float)
    table = np.empty((len(FRACTURE_AGE_MEDIAN_DAYS), 4, 2))
    for e, median in enumerate(FRACTURE_AGE_MEDIAN_DAYS):
        upper = ndtr(np.log((ages + 0.5) / median) / FRACTURE_AGE_LOG_SD)
        lower = np.r_[0.0, upper[:-1]]
        p_age = upper - lower
        fresh = ages < FRESH_FRACTURE_DAYS
        for grade in range(4):
            p_cleft = expit(cleft_log_odds(grade, ages, e)) if grade > 0 else np.zeros_like(ages)
            for cleft, likelihood in enumerate((1 - p_cleft, p_cleft)):
                joint = p_age * likelihood
                table[e, grade, cleft] = joint[fresh].sum() / joint.sum() if joint.sum() > 0 else 0.0
    return table


def _chebyshev_nodes(values: np.ndarray) -> np.ndarray:
    lo, hi = values.min(), values.max()
    k = np.arange(FILL_TARGET_MEAN_NODES)
    return (lo + hi) / 2 + (hi - lo) / 2 * np.cos(np.pi * (k + 0.5) / FILL_TARGET_MEAN_NODES)


def _chebyshev_basis(values: np.ndarray) -> np.ndarray:
    """(nodes, values): the Lagrange polynomials through the Chebyshev nodes, evaluated at ``values``."""
    nodes = _chebyshev_nodes(values)
    basis = np.ones((len(nodes), len(values)))
    for i, xi in enumerate(nodes):
        for j, xj in enumerate(nodes):
            if i != j:
                basis[i] *= (values - xj) / (xi - xj)
    return basis


def _log_expit(x: np.ndarray) -> np.ndarray:
    return -np.logaddexp(0.0, -x)
