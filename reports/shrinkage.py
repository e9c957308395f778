"""Shrunken site and operator effects: a random-intercept logistic model on top of the champion model's risk.

For each procedure ``i`` with outcome ``y_i`` and champion risk ``p_i``,
``logit P(y_i = 1) = logit(p_i) + b0 + u_site(i) + v_operator(i)`` with ``u ~ N(0, sd_site^2)`` per site and
``v ~ N(0, sd_operator^2)`` per site:operator pair (operators nested in sites), as lme4's
``glmer(y ~ 1 + offset(qlogis(p)) + (1 | site) + (1 | site:operator), family = binomial, nAGQ = 1)``.
The marginal likelihood integrates the random effects out; the Laplace approximation replaces the integrand by
the Gaussian matched at its mode, so that the log-likelihood becomes the penalised log-likelihood at the
conditional modes minus half the log determinant of its negative Hessian there (Breslow & Clayton 1993).
b0 and the two SDs maximise that approximation (SDs on [0, inf): an SD of 0 is lme4's singular fit), and a
unit's effect is its conditional mode, with the conditional SD from the inverse Hessian (lme4's ``condVar``).

The rows enter only through each site:operator pair's sum of ``log(1 + exp(logit p_i + c))`` as a function of
the pair's linear predictor ``c``: each pair keeps a Chebyshev interpolant of it (16 nodes on a panel of width 2,
accurate to rounding, rebuilt around ``c`` when ``c`` leaves it). A panel costs 16 vectorised passes over the
pair's rows; every Newton step and every optimiser step after that costs O(pairs), and the Hessian of the
random effects is solved in O(pairs) by the Schur complement over the operators (each is in one site).

References: Breslow NE, Clayton DG. Approximate inference in generalized linear mixed models. J Am Stat
Assoc 1993;88:9-25. Bates D, Maechler M, Bolker B, Walker S. Fitting linear mixed-effects models using lme4.
J Stat Softw 2015;67(1):1-48.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd
from numpy.polynomial import chebyshev
from scipy import optimize, stats
from scipy.special import logit

from records.schema import OPERATOR_ID, SITE_ID
from reports import qi

UNIT_TYPE, UNIT_ID, UNIT_SITE = "unit_type", "unit_id", "site_id"
N_CASES, OBSERVED, EXPECTED = "n", "observed", "expected"
EFFECT, EFFECT_SE, ODDS_RATIO, OR_LOW, OR_HIGH = "effect", "effect_se", "odds_ratio", "or_low", "or_high"
SHRUNKEN_OE = "shrunken_oe"
SITE_UNIT, OPERATOR_UNIT = "site", "operator"
SINGULAR_TOL = 1e-4  # an SD below this is a boundary (singular) fit, as lme4's isSingular(tol = 1e-4)
MAX_SD = 20.0  # upper bound of either SD in the optimiser (log odds ratio scale)
_NODES, _HALF_WIDTH = 16, 1.0
_MAX_STEP = 3.0  # largest change of any pair's linear predictor in one Newton step for the modes
_GRADIENT_TOL = 1e-3  # largest projected gradient accepted, per unit of each parameter's curvature scale (~SE)
METHOD = ("Shrunken site and operator effects are conditional modes of a random-intercept logistic model with the "
          "champion model's logit risk as offset and normal random intercepts for sites and for operators nested in "
          "sites, fitted by maximum likelihood with the Laplace approximation as lme4's glmer with nAGQ = 1 "
          "(Breslow & Clayton 1993; Bates et al. 2015).")


@dataclass(frozen=True)
class ShrinkageFit:
    """A fitted model: per-unit shrunken effects and the model's parameters.

    ``units`` has one row per site and one per site:operator pair (sites first, each group sorted by label):
    ``unit_type`` ('site' | 'operator'), ``unit_id``, ``site_id``, ``n`` (rows), ``observed`` (events),
    ``expected`` (sum of p), ``effect`` (conditional mode of u for a site, the log odds ratio against the average
    site; of v for an operator, against its own site), ``effect_se`` (conditional SD given b0 and the SDs),
    ``odds_ratio``, ``or_low``, ``or_high`` (exp of effect, effect -/+ z se) and ``shrunken_oe``: the sum over
    the unit's rows of expit(logit p + b0 + u) for a site, of expit(logit p + b0 + u + v) for an operator (its
    site's effect included), divided by the sum over the same rows of expit(logit p + b0): the O/E the model
    expects of the unit once the champion is recalibrated in the large by b0.
    ``intercept_se`` is conditional on the SDs (lme4's ``vcov(fit, use.hessian = FALSE)``). ``notes`` lists what
    a reader must know: a boundary fit, an SD not estimable from the design, a fit that did not converge.
    """

    units: pd.DataFrame
    intercept: float
    intercept_se: float
    sd_site: float
    sd_operator: float
    loglik: float
    converged: bool
    singular: bool
    method: str
    notes: tuple[str, ...]


def shrunken_effects(frame: pd.DataFrame, *, y: str = "y", p: str = "p", site: str = SITE_ID,
                     operator: str = OPERATOR_ID, level: float = 0.95) -> ShrinkageFit:
    """Fit the nested random-intercept model by Laplace maximum likelihood and return every unit's effect.

    Parameters
    ----------
    frame : pandas.DataFrame
        One row per procedure; not modified.
    y : str, keyword-only
        Column of the 0/1 outcome (bools accepted).
    p : str, keyword-only
        Column of the champion model's expected risk, strictly between 0 and 1.
    site, operator : str, keyword-only
        Columns of the site and operator labels (no missing values; compared as given, reported as text).
        The operator effect belongs to the site:operator pair, so an operator at two sites has two effects.
    level : float, keyword-only
        Confidence level of the odds ratio interval, in (0, 1).

    Returns
    -------
    ShrinkageFit
        ``units`` (one row per site and per site:operator pair, see :class:`ShrinkageFit`), b0 with its SE, the
        two SDs, the Laplace log-likelihood (comparable with lme4's ``logLik``), convergence and boundary flags.
        An SD whose term has a single level (one site; no site with two operators) is fixed at 0 and noted.

    Raises
    ------
    ValueError
        A column missing, no rows, y not 0/1, no event or no non-event, p not a finite risk strictly between
        0 and 1, a missing site or operator label, level not in (0, 1).

    References
    ----------
    Breslow NE, Clayton DG. J Am Stat Assoc 1993;88:9-25. Bates D et al. J Stat Softw 2015;67(1):1-48.
    Cohen ME et al. Optimizing ACS NSQIP modeling for evaluation of surgical quality and risk: patient risk
    adjustment, procedure mix adjustment, shrinkage adjustment, and surgical focus. J Am Coll Surg
    2013;217:336-346.
    """
    level = qi.check_level(level)
    outcome, risk, site_labels, operator_labels = _check_frame(frame, y=y, p=p, site=site, operator=operator)
    groups, site_ids, pair_site_ids, pair_operator_ids = _group_rows(outcome, risk, site_labels, operator_labels)
    sums = _SoftplusSums(groups)
    x, modes, converged, singular, notes = _maximise(groups, sums)
    units = _unit_table(groups, sums, x, modes, level, site_ids, pair_site_ids, pair_operator_ids)
    return ShrinkageFit(units=units, intercept=float(x[0]), intercept_se=_intercept_se(groups, x, modes),
                        sd_site=float(x[1]), sd_operator=float(x[2]), loglik=modes.loglik, converged=converged,
                        singular=singular, method=METHOD, notes=tuple(notes))


# --------------------------------------------------------------------------------------------- checks
def _numeric(frame: pd.DataFrame, column: str) -> np.ndarray:
    values = frame[column]
    if not (pd.api.types.is_numeric_dtype(values) or pd.api.types.is_bool_dtype(values)):
        raise ValueError(f"{column} must be numeric; got dtype {values.dtype}")
    return values.to_numpy(dtype=np.float64, na_value=np.nan)


def _check_frame(frame: pd.DataFrame, *, y: str, p: str, site: str,
                 operator: str) -> tuple[np.ndarray, np.ndarray, pd.Series, pd.Series]:
    """Outcome (0/1 float), risk, site and operator labels, after checking every rule."""
    qi.require_columns(frame, [y, p, site, operator], "frame")
    if len(frame) == 0:
        raise ValueError("frame must not be empty; got 0 rows")
    outcome, risk = _numeric(frame, y), _numeric(frame, p)
    bad = (outcome != 0) & (outcome != 1)  # NaN is bad too
    if bad.any():
        raise ValueError(f"{y} must be 0 or 1 (bool accepted); {bad.sum()} values are not ({qi.positions(bad)})")
    if outcome.min() == outcome.max():
        raise ValueError(f"{y} must contain at least one event and one non-event to estimate the intercept; "
                         f"all {len(outcome)} values are {int(outcome[0])}")
    bad = ~((risk > 0) & (risk < 1))  # NaN is bad too
    if bad.any():
        raise ValueError(f"{p} must be an expected risk strictly between 0 and 1 (no NaN); {bad.sum()} values are "
                         f"not ({qi.positions(bad)})")
    for column in (site, operator):
        bad = frame[column].isna().to_numpy()
        if bad.any():
            raise ValueError(f"{column} must not be missing; {bad.sum()} values are ({qi.positions(bad)})")
    return outcome, risk, frame[site], frame[operator]


# ------------------------------------------------------------------------------------ per-pair sums
@dataclass(frozen=True)
class _Groups:
    """Rows sorted by site:operator pair (K pairs, S sites), with what the likelihood needs of each pair."""

    offset: np.ndarray  # logit p of the rows, sorted by pair
    counts: np.ndarray  # rows per pair
    events: np.ndarray  # events per pair
    expected: np.ndarray  # sum of p per pair
    site: np.ndarray  # site code of each pair
    n_sites: int
    offset_events: float  # sum of y * logit p: the constant of the conditional log-likelihood

    def by_site(self, values: np.ndarray) -> np.ndarray:
        return np.bincount(self.site, weights=values, minlength=self.n_sites)


def _group_rows(outcome: np.ndarray, risk: np.ndarray, site_labels: pd.Series,
                operator_labels: pd.Series) -> tuple[_Groups, list[str], list[str], list[str]]:
    """The pairs in (site, operator) label order, and the text labels of the sites and of each pair."""
    site_code, site_uniques = pd.factorize(site_labels, sort=True)
    operator_code, operator_uniques = pd.factorize(operator_labels, sort=True)
    pair_code, pair_uniques = pd.factorize(site_code.astype(np.int64) * len(operator_uniques) + operator_code,
                                           sort=True)
    pair_site = (pair_uniques // len(operator_uniques)).astype(np.intp)
    pair_operator = pair_uniques % len(operator_uniques)
    k, offset = len(pair_uniques), logit(risk)
    groups = _Groups(offset=offset[np.argsort(pair_code, kind="stable")],
                     counts=np.bincount(pair_code, minlength=k), events=np.bincount(pair_code, outcome, k),
                     expected=np.bincount(pair_code, risk, k), site=pair_site, n_sites=len(site_uniques),
                     offset_events=float(outcome @ offset))
    site_ids = [str(s) for s in site_uniques]
    return groups, site_ids, [site_ids[s] for s in pair_site], [str(operator_uniques[o]) for o in pair_operator]


class _SoftplusSums:
    """F_k(c) = sum over the rows i of pair k of log(1 + exp(o_i + c)) and its first three derivatives in c.

    Each pair keeps Chebyshev interpolants of F_k on two panels [centre - h, centre + h] (first-kind nodes); a
    pair whose c is on neither gets a panel centred on c in place of its least recently used one, built from its
    own rows only. F_k is analytic with its nearest singularities at distance pi from the real line, so 16 nodes
    on h = 1 reach rounding level: F to ~1e-15 relative, F' ~1e-13, F'' ~1e-11, F''' ~1e-8.
    """

    _SLOTS = 2

    def __init__(self, groups: _Groups) -> None:
        self._groups = groups
        self._starts = np.concatenate([[0], np.cumsum(groups.counts)[:-1]])
        self._odds = np.exp(groups.offset)
        angles = np.pi * (np.arange(_NODES) + 0.5) / _NODES
        self._nodes = np.cos(angles)
        self._transform = (2.0 / _NODES) * np.cos(np.outer(np.arange(_NODES), angles))
        self._transform[0] /= 2
        k = len(groups.counts)
        self._centre = np.full((self._SLOTS, k), np.nan)
        self._last_used = np.zeros((self._SLOTS, k))
        self._clock = 0
        self._coef = [np.zeros((self._SLOTS, _NODES - m, k)) for m in range(4)]

    def __call__(self, c: np.ndarray, order: int) -> list[np.ndarray]:
        """[F, F', ..., F^(order)] at c (one value per pair; order <= 3)."""
        self._clock += 1
        inside = np.abs(c - self._centre) <= _HALF_WIDTH  # a NaN centre (never built) is never inside
        slot = np.where(inside[0], 0, 1)
        stale = np.flatnonzero(~inside.any(axis=0))
        if len(stale):
            slot[stale] = np.argmin(self._last_used[:, stale], axis=0)
            self._build(stale, slot[stale], c[stale])
        pairs = np.arange(len(c))
        self._last_used[slot, pairs] = self._clock
        x = (c - self._centre[slot, pairs]) / _HALF_WIDTH
        return [chebyshev.chebval(x, self._coef[m][slot, :, pairs].T, tensor=False) for m in range(order + 1)]

    def _build(self, pairs: np.ndarray, slots: np.ndarray, centre: np.ndarray) -> None:
        counts = self._groups.counts[pairs]
        rows = slice(None) if len(pairs) == len(self._groups.counts) else \
            np.concatenate([np.arange(s, s + n) for s, n in zip(self._starts[pairs], counts)])
        odds, offset = self._odds[rows], self._groups.offset[rows]
        starts = np.concatenate([[0], np.cumsum(counts)[:-1]])
        safe = offset.max() + centre.max() + _HALF_WIDTH < 600  # odds * exp(c) cannot overflow
        values = np.empty((_NODES, len(pairs)))
        for m, node in enumerate(self._nodes):
            if safe:  # log1p(z) at the speed of log: log(1 + z) corrected to first order for the rounding of 1 + z
                z = odds * np.repeat(np.exp(centre + _HALF_WIDTH * node), counts)
                one_plus = 1.0 + z
                softplus = np.log(one_plus) - ((one_plus - 1.0) - z) / one_plus
            else:
                softplus = np.logaddexp(0.0, offset + np.repeat(centre + _HALF_WIDTH * node, counts))
            values[m] = np.add.reduceat(softplus, starts)
        coef = self._transform @ values
        self._centre[slots, pairs] = centre
        for m in range(4):
            self._coef[m][slots, :, pairs] = (chebyshev.chebder(coef, m, scl=1 / _HALF_WIDTH, axis=0) if m else coef).T


# ------------------------------------------------------------------------- conditional modes, Laplace
@dataclass(frozen=True)
class _Modes:
    """Conditional modes (spherical: u = sd_site * a, v = sd_operator * b) and the Hessian pieces there."""

    a: np.ndarray  # per site
    b: np.ndarray  # per pair
    c: np.ndarray  # linear predictor net of the offset, per pair
    w: np.ndarray  # F'' per pair (sum of mu (1 - mu))
    d: np.ndarray  # 1 + sd_operator^2 w: the operator block of the Hessian (diagonal)
    schur: np.ndarray  # 1 + sd_site^2 sum(w / d): the site block after eliminating the operators (diagonal)
    loglik: float  # Laplace approximation of the marginal log-likelihood
    gradient: np.ndarray  # of loglik in (b0, sd_site, sd_operator)
    converged: bool


def _solve(groups: _Groups, sd: np.ndarray, w: np.ndarray, d: np.ndarray, schur: np.ndarray,
           rhs_a: np.ndarray, rhs_b: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """H^-1 (rhs_a, rhs_b) for H = I + M'WM (M maps (a, b) to c), by the Schur complement over the pairs."""
    cross = sd[1] * sd[2] * w
    x_a = (rhs_a - groups.by_site(cross * rhs_b / d)) / schur
    return x_a, (rhs_b - cross * x_a[groups.site]) / d


def _conditional_modes(groups: _Groups, sums: _SoftplusSums, x: np.ndarray, start: tuple[np.ndarray, np.ndarray],
                       max_iter: int = 100) -> _Modes:
    """Newton with step halving on the (concave) penalised log-likelihood in (a, b); Laplace value and gradient."""
    b0, sd_site, sd_op = x
    site, events = groups.site, groups.events

    def penalised(a: np.ndarray, b: np.ndarray) -> tuple[np.ndarray, float]:
        c = b0 + sd_site * a[site] + sd_op * b
        return c, float(events @ c - sums(c, 0)[0].sum() - 0.5 * (a @ a + b @ b))

    a, b = start
    c, value = penalised(a, b)
    converged = False
    for _ in range(max_iter):
        _, fitted, w = sums(c, 2)
        r = events - fitted
        d = 1 + sd_op**2 * w
        schur = 1 + sd_site**2 * groups.by_site(w / d)
        grad_a, grad_b = sd_site * groups.by_site(r) - a, sd_op * r - b
        step_a, step_b = _solve(groups, x, w, d, schur, grad_a, grad_b)
        decrement = grad_a @ step_a + grad_b @ step_b  # twice the gain the quadratic model expects
        reach = np.abs(sd_site * step_a[site] + sd_op * step_b).max()
        if reach > _MAX_STEP:  # a far Newton step (a poor start) is shortened, not tried
            step_a, step_b = step_a * (_MAX_STEP / reach), step_b * (_MAX_STEP / reach)
        if decrement < 1e-20 * max(1.0, abs(value)):
            converged = True
            break
        for halving in range(40):
            t = 0.5**halving
            c_new, value_new = penalised(a + t * step_a, b + t * step_b)
            if value_new >= value - 1e-12 * abs(value):
                break
        else:  # no step improves: at the mode to rounding, or (a far larger decrement) lost
            converged = decrement < 1e-10 * max(1.0, abs(value))
            break
        a, b, c, value = a + t * step_a, b + t * step_b, c_new, value_new
    _, fitted, w, third = sums(c, 3)
    r = events - fitted
    d = 1 + sd_op**2 * w
    schur = 1 + sd_site**2 * groups.by_site(w / d)
    loglik = groups.offset_events + value - 0.5 * (np.log(d).sum() + np.log(schur).sum())
    return _Modes(a, b, c, w, d, schur, float(loglik), _gradient(groups, x, a, b, r, w, third, d, schur), converged)


def _gradient(groups: _Groups, x: np.ndarray, a: np.ndarray, b: np.ndarray, r: np.ndarray, w: np.ndarray,
              third: np.ndarray, d: np.ndarray, schur: np.ndarray) -> np.ndarray:
    """d loglik / d (b0, sd_site, sd_operator): the score at the modes (envelope theorem) minus half the total
    derivative of log det H, whose dependence on the modes goes through w (adjoint solve, one H^-1 product)."""
    sd_site, sd_op = x[1], x[2]
    site, by_site = groups.site, groups.by_site
    a_pair, schur_pair = a[site], schur[site]

    def transpose_m(v: np.ndarray) -> tuple[np.ndarray, np.ndarray]:  # M' v
        return sd_site * by_site(v), sd_op * v

    q = (sd_op**2 / d + sd_site**2 / (schur_pair * d**2)) * third  # d log det H / d c, at fixed modes
    lam_a, lam_b = _solve(groups, x, w, d, schur, *transpose_m(q))
    g = [transpose_m(-w), (by_site(r) - transpose_m(w * a_pair)[0], -transpose_m(w * a_pair)[1]),
         (-transpose_m(w * b)[0], r - transpose_m(w * b)[1])]  # d (M'r - z) / dx at fixed modes
    direct = [0.0, 2 * sd_site * (by_site(w / d) / schur).sum(),
              2 * sd_op * (w / d).sum() - 2 * sd_op * sd_site**2 * (w**2 / d**2 / schur_pair).sum()]
    dc = [np.ones_like(r), a_pair, b]
    return np.array([r @ dc[j] - 0.5 * (direct[j] + q @ dc[j] + lam_a @ g[j][0] + lam_b @ g[j][1])
                     for j in range(3)])


# ------------------------------------------------------------------------------------- optimisation
class _Laplace:
    """The Laplace log-likelihood at (b0, sd_site, sd_operator); each inner solve starts from the last modes."""

    def __init__(self, groups: _Groups, sums: _SoftplusSums) -> None:
        self._groups, self._sums = groups, sums
        self._start = (np.zeros(groups.n_sites), np.zeros(len(groups.site)))

    def __call__(self, x: np.ndarray) -> _Modes:
        modes = _conditional_modes(self._groups, self._sums, np.asarray(x, dtype=np.float64), self._start)
        self._start = (modes.a, modes.b)
        return modes


def _maximise(groups: _Groups, sums: _SoftplusSums) -> tuple[np.ndarray, _Modes, bool, bool, list[str]]:
    """(b0, sd_site, sd_operator) maximising the Laplace log-likelihood, SDs on [0, MAX_SD].

    The Laplace log-likelihood is even in each SD (u -> -u leaves it unchanged), so L-BFGS-B searches each SD on
    [-MAX_SD, MAX_SD] and the answer is its absolute value: a bound at 0, where the gradient is always 0, would
    hold any search that touches it. An SD that ends below SINGULAR_TOL is set to 0 (lme4's boundary fit) if that
    costs under 1e-8 of log-likelihood. Parameters are scaled by the curvature at the start, and the search is
    restarted (at most 3 times) with the curvature where it stopped until the gradient there, in those units
    (~SEs), is below _GRADIENT_TOL.
    """
    estimable = np.array([groups.n_sites > 1, len(groups.site) > groups.n_sites])
    notes = [] if estimable[0] else ["one site only: no site variance is estimable; sd_site is fixed at 0"]
    if not estimable[1]:
        notes.append("no site has two operators: operator and site variances cannot be separated; "
                     "sd_operator is fixed at 0")
    laplace = _Laplace(groups, sums)
    x = np.array([np.log(groups.events.sum() / groups.expected.sum()), *(0.5 * estimable)])
    scale = _curvature_scale(laplace, x)
    for _ in range(4):
        bounds = [(None, None)] + [(-MAX_SD / s, MAX_SD / s) if ok else (0.0, 0.0)
                                   for ok, s in zip(estimable, scale[1:])]
        result = optimize.minimize(_negative, x / scale, args=(laplace, scale), jac=True, method="L-BFGS-B",
                                   bounds=bounds, options={"maxiter": 1000, "ftol": 1e-14, "gtol": 1e-8})
        x = _snap_to_boundary(laplace, np.concatenate([result.x[:1], np.abs(result.x[1:])]) * scale)
        scale = _curvature_scale(laplace, x)  # to judge convergence, and to scale a restart from here
        modes = laplace(x)
        gradient = modes.gradient * scale
        gradient[1:][~estimable | (x[1:] == 0.0) | ((x[1:] >= MAX_SD) & (gradient[1:] > 0))] = 0.0
        converged = bool(modes.converged and np.abs(gradient).max() <= _GRADIENT_TOL)
        if converged:
            break
    if not converged:
        notes.append(f"the fit did not converge (largest scaled gradient {np.abs(gradient).max():.2g}; "
                     f"optimiser: {result.message})")
    for name, value, ok in (("sd_site", x[1], estimable[0]), ("sd_operator", x[2], estimable[1])):
        if ok and value == 0.0:
            notes.append(f"boundary (singular) fit: {name} is estimated at 0, so those effects are all 0")
        if value >= MAX_SD:
            notes.append(f"{name} reached the optimiser's upper bound {MAX_SD}: the data separate the units")
    singular = bool((estimable & (x[1:] == 0.0)).any())
    return x, modes, converged, singular, notes


def _negative(scaled: np.ndarray, laplace: _Laplace, scale: np.ndarray) -> tuple[float, np.ndarray]:
    """What L-BFGS-B minimises: minus the log-likelihood and its gradient, in parameters divided by scale."""
    modes = laplace(scaled * scale)
    return -modes.loglik, -modes.gradient * scale


def _curvature_scale(laplace: _Laplace, x: np.ndarray, step: float = 1e-3) -> np.ndarray:
    """1 / sqrt(-d2 loglik / dx_j2) at x by differences of the gradient: roughly each parameter's standard error,
    so that the scaled problem is well conditioned. Where the log-likelihood is not concave (an SD far from its
    estimate) 0.1, so that the first steps stay short on the log odds scale."""
    gradient = laplace(x).gradient
    curvature = np.array([(laplace(x + step * np.eye(3)[j]).gradient[j] - gradient[j]) / step for j in range(3)])
    return np.where(curvature < 0, 1 / np.sqrt(np.abs(curvature)), 0.1)


def _snap_to_boundary(laplace: _Laplace, x: np.ndarray) -> np.ndarray:
    """x with each SD below SINGULAR_TOL set to 0 when the log-likelihood loses less than 1e-8 by it."""
    for j in (1, 2):
        if 0.0 < x[j] < SINGULAR_TOL:
            candidate = x.copy()
            candidate[j] = 0.0
            if laplace(candidate).loglik >= laplace(x).loglik - 1e-8:
                x = candidate
    return x


# ------------------------------------------------------------------------------------------- results
def _intercept_se(groups: _Groups, x: np.ndarray, modes: _Modes) -> float:
    """SE of b0 given the SDs: 1 / sqrt of the Schur complement of b0 in the joint Hessian of (b0, a, b)."""
    h_a, h_b = x[1] * groups.by_site(modes.w), x[2] * modes.w
    s_a, s_b = _solve(groups, x, modes.w, modes.d, modes.schur, h_a, h_b)
    return float(1.0 / np.sqrt(modes.w.sum() - h_a @ s_a - h_b @ s_b))


def _unit_table(groups: _Groups, sums: _SoftplusSums, x: np.ndarray, modes: _Modes, level: float,
                site_ids: list[str], pair_site_ids: list[str], pair_operator_ids: list[str]) -> pd.DataFrame:
    """The units frame of :class:`ShrinkageFit`: sites, then site:operator pairs, each in label order."""
    b0, sd_site, sd_op = x
    u, v = sd_site * modes.a, sd_op * modes.b
    u_se = sd_site / np.sqrt(modes.schur)
    v_se = sd_op * np.sqrt(1 / modes.d + (sd_site * sd_op * modes.w / modes.d) ** 2 / modes.schur[groups.site])
    base = sums(np.full(len(groups.site), b0), 1)[1]
    with_site = sums(b0 + u[groups.site], 1)[1]
    with_operator = sums(modes.c, 1)[1]
    z = stats.norm.ppf(0.5 + level / 2)
    effect = np.concatenate([u, v])
    se = np.concatenate([u_se, v_se])
    return pd.DataFrame({
        UNIT_TYPE: [SITE_UNIT] * groups.n_sites + [OPERATOR_UNIT] * len(v),
        UNIT_ID: site_ids + pair_operator_ids,
        UNIT_SITE: site_ids + pair_site_ids,
        N_CASES: np.concatenate([groups.by_site(groups.counts), groups.counts]).astype(np.int64),
        OBSERVED: np.rint(np.concatenate([groups.by_site(groups.events), groups.events])).astype(np.int64),
        EXPECTED: np.concatenate([groups.by_site(groups.expected), groups.expected]),
        EFFECT: effect, EFFECT_SE: se, ODDS_RATIO: np.exp(effect),
        OR_LOW: np.exp(effect - z * se), OR_HIGH: np.exp(effect + z * se),
        SHRUNKEN_OE: np.concatenate([groups.by_site(with_site) / groups.by_site(base), with_operator / base]),
    })
