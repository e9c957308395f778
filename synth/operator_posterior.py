"""P(kyphoplasty, operator | records): the site and operator behind a procedure, from the practice it shows.

Case mix (etiology, age, sex, BMD, fractures, levels) is drawn independently of the site; practice is not:
anaesthesia, approach, cement viscosity, prophylaxis, post-procedural CT and balloon kyphoplasty follow the
site's style, the cement volume the operator's fill style. So the records carry information about the site
and operator, and with it about their leakage effects, which a model without site terms can use.
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np
from scipy.special import ndtr

from records.schema import APPROACHES, BALLOON_VOLUME_ML
from synth.body_volume import ROUNDING_ML
from synth.model import (
    BIPEDICULAR, CORRECTION_MEAN_SD, EXTRAPEDICULAR_SHARE, MALIGNANT, MISSING_SHARE, UNIPEDICULAR, general_log_odds,
    postop_ct_log_odds, unipedicular_threshold, viscosity_log_weights,
)

KYPHOTIC_RECORDED_LOW = -10.0  # contract floor of the kyphotic angles


def operator_posterior(proc: dict, lev: dict, centres: Mapping[str, np.ndarray], *,
                       log_cement: np.ndarray) -> np.ndarray:
    """P(kyphoplasty k, operator o | records), shape (procedures, 2, operators), float32.

    ``proc`` and ``lev``: recorded values as arrays (synth.observable), levels sorted by procedure (``owner``).

    Prior: operator volume share x the site's kyphoplasty share. Evidence: the site's practice as recorded
    (:func:`_log_site_evidence`), balloon volumes and kyphotic correction (:func:`_log_kyphoplasty_evidence`)
    and ``log_cement``, (procedures, 2 x operators): the cement volumes' log-likelihood at m_ko.
    """
    site = centres["operator_site"]
    share = centres["site_kyphoplasty"][site]
    log_prior = np.log(centres["operator_p"]) + np.stack([np.log1p(-share), np.log(share)])  # (2, operators)
    log_post = log_cement.astype(np.float32).reshape(len(log_cement), 2, -1)
    log_post += _log_site_evidence(proc, centres).astype(np.float32)[:, site][:, None, :]
    log_post += log_prior.astype(np.float32)
    log_post += _log_kyphoplasty_evidence(lev).astype(np.float32)[:, :, None]
    log_post -= log_post.max(axis=(1, 2), keepdims=True)
    posterior = np.exp(log_post, out=log_post)
    posterior /= posterior.sum(axis=(1, 2), keepdims=True)
    return posterior


def _log_site_evidence(proc: dict, centres: Mapping[str, np.ndarray]) -> np.ndarray:
    """log P(anaesthesia, approach, viscosity, prophylaxis, imaging as recorded | site), (procedures, sites).

    The generator draws these from the site's style (and year, etiology, number of levels); nothing else that
    is recorded depends on the site. Each factor is tabulated over its few conditioning values, then gathered.
    """
    years = np.arange(proc["years_in"].max() + 1)[:, None]
    general = general_log_odds(centres["site_general"][None, None, :], np.array([False, True])[:, None, None],
                               np.arange(1, proc["n_levels"].max() + 1)[None, :, None])  # (malignant, levels, site)
    malignant = (proc["etiology"] == MALIGNANT).astype(np.int64)
    log_site = np.stack([_log_expit(-general), _log_expit(general)])[
        proc["general"].astype(np.int64), malignant, proc["n_levels"] - 1]
    threshold = unipedicular_threshold(centres["site_unipedicular"])
    approach = np.zeros((len(APPROACHES), len(threshold)))  # extrapedicular: the same share at every site
    approach[UNIPEDICULAR] = np.log(threshold - EXTRAPEDICULAR_SHARE)
    approach[BIPEDICULAR] = np.log1p(-threshold)
    log_site += approach[proc["approach"]]
    viscosity = viscosity_log_weights(years, centres["site_high_viscosity"][None, :])  # (year, site, viscosity)
    top = viscosity.max(axis=-1, keepdims=True)
    viscosity = viscosity - top - np.log(np.exp(viscosity - top).sum(axis=-1, keepdims=True))
    log_site += viscosity[proc["years_in"], :, proc["viscosity"]]
    prophylaxis = centres["site_prophylaxis"]
    log_site += np.stack([np.log1p(-prophylaxis), np.log(prophylaxis)])[proc["prophylaxis"].astype(np.int64)]
    ct = postop_ct_log_odds(years, centres["site_ct"][None, :])  # (year, site); unassessed: imaging unknown
    modality = np.where(proc["assessed"], 1 + proc["ct"].astype(np.int64), 0)
    return log_site + np.stack([np.zeros_like(ct), _log_expit(-ct), _log_expit(ct)])[modality, proc["years_in"]]


def _log_kyphoplasty_evidence(lev: dict) -> np.ndarray:
    """log P(balloon volumes recorded or not, kyphotic correction | vertebroplasty / kyphoplasty), (procedures, 2).

    A balloon volume is recorded only in kyphoplasty, and then missing in MISSING_SHARE of levels; the correction
    (pre - post angle) is normal with CORRECTION_MEAN_SD. A post angle at the contract floor -10 is censored.
    """
    missing_share = MISSING_SHARE[BALLOON_VOLUME_ML]
    starts = procedure_starts(lev["owner"])
    recorded = np.add.reduceat(lev["balloon"].astype(float), starts)
    unrecorded = np.add.reduceat((~lev["balloon"]).astype(float), starts)
    correction = lev["kyphotic_pre"] - lev["kyphotic_post"]
    censored = lev["kyphotic_post"] <= KYPHOTIC_RECORDED_LOW  # true post angle below -10.05: correction above
    known = ~np.isnan(correction)
    evidence = np.zeros((len(starts), 2))
    for k, kyphoplasty in enumerate((False, True)):
        mean, sd = CORRECTION_MEAN_SD[kyphoplasty]
        z = (np.where(known, correction, mean) - mean) / sd
        above = ndtr(-(np.where(known, correction, mean) - ROUNDING_ML / 2 - mean) / sd)
        level_log = np.where(censored, np.log(np.maximum(above, 1e-300)), -0.5 * z ** 2 - np.log(sd))
        evidence[:, k] = np.add.reduceat(np.where(known, level_log, 0.0), starts)
    evidence[:, 0] += np.where(recorded > 0, -np.inf, 0.0)
    evidence[:, 1] += recorded * np.log1p(-missing_share) + unrecorded * np.log(missing_share)
    return evidence


def procedure_starts(owner: np.ndarray) -> np.ndarray:
    """First row of each procedure in level rows sorted by owner (every procedure has a level)."""
    return np.flatnonzero(np.r_[True, owner[1:] != owner[:-1]])


def _log_expit(x: np.ndarray) -> np.ndarray:
    return -np.logaddexp(0.0, -x)
