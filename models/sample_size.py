"""Riley et al.'s minimum sample size for developing a prediction model of a binary (often rare) outcome.

References
----------
- Riley RD, Snell KIE, Ensor J, Burke DL, Harrell FE Jr, Moons KGM, Collins GS. Minimum sample size for
  developing a multivariable prediction model: Part II - binary and time-to-event outcomes.
  Stat Med 2019;38:1276-1296. doi:10.1002/sim.7992
- Riley RD, Ensor J, Snell KIE, et al. Calculating the sample size required for developing a clinical
  prediction model. BMJ 2020;368:m441.
- Riley RD, Van Calster B, Collins GS. A note on estimating the Cox-Snell R2 from a reported C statistic
  (AUROC) to inform sample size calculations for developing a prediction model with a binary outcome.
  Stat Med 2021;40:859-864.
- Ensor J, Martin EC, Riley RD. pmsampsize: sample size for development of a prediction model
  (R package, CRAN; ``pmsampsize_bin.R`` and ``cstat2rsq.R``).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from fractions import Fraction

from scipy import integrate, stats
from scipy.special import log_expit

from models.suppression import is_small

# Riley et al. (2019, eq. 13; BMJ 2020 step 1) and pmsampsize use 1.96 exactly.
Z_95 = 1.96
CONSERVATIVE_FRACTION_OF_MAX_R2 = 0.15
CRITERIA = ("criterion_1_shrinkage", "criterion_2_optimism", "criterion_3_intercept")
# Normal quantiles beyond +/- 12 carry less than 1e-32 of the mass: the numerical integrals stop there.
_Z_RANGE = 12.0


@dataclass(frozen=True)
class SampleSizeAssessment:
    """Riley et al.'s minimum sample size for one candidate model, against the data available.

    ``required`` maps each criterion (``criterion_1_shrinkage``, ``criterion_2_optimism``,
    ``criterion_3_intercept``) and the overall ``minimum`` (their maximum) to a number of procedures; it
    is empty when the criteria cannot be computed (no events, or no non-events, and no expected
    prevalence given). ``events_required`` is ``ceil(minimum * prevalence)``, the events pmsampsize reports.
    """

    n_parameters: int
    prevalence: float
    r2_cs: float
    r2_cs_source: str
    shrinkage: float
    required: dict[str, int]
    available_n: int
    available_events: int
    events_per_parameter_required: float
    met: bool
    events_required: int = 0

    def reason(self) -> str:
        """Why the criteria are met or not, in plain words and with the numbers.

        Event counts between 1 and 10 in the registry are written as "fewer than 11" (small-cell rule).
        """
        verdict = "met" if self.met else "not met"
        have = f"the registry has {self.available_n:,} with {_count_words(self.available_events)} events"
        if not self.required:
            which = "no events" if self.available_events == 0 else "no procedures without the outcome"
            return (f"Riley et al. minimum sample size {verdict}: {which} among {self.available_n:,} "
                    f"procedures, so the outcome proportion is {self.prevalence:g} and the criteria cannot be "
                    f"computed (no model can be developed; give an expected prevalence to compute them)")
        binding = self.binding_criterion()
        proportion = "" if is_small(self.available_events) else f"; outcome proportion {100 * self.prevalence:.3g}%"
        return (f"Riley et al. minimum sample size {verdict}: needs at least {self.required['minimum']:,} "
                f"procedures ({self._criterion_words(binding)}) with {self.events_required:,} events for "
                f"{self.n_parameters} candidate parameters; {have} (anticipated Cox-Snell R2 {self.r2_cs:.4f}, "
                f"{self.r2_cs_source}{proportion})")

    def binding_criterion(self) -> str:
        """The criterion that sets the minimum (the lowest-numbered one on a tie); empty if none computed."""
        if not self.required:
            return ""
        return next(name for name in CRITERIA if self.required[name] == self.required["minimum"])

    def _criterion_words(self, name: str) -> str:
        return {
            "criterion_1_shrinkage": f"criterion 1, shrinkage {self.shrinkage:g}",
            "criterion_2_optimism": "criterion 2, small optimism in Nagelkerke R2",
            "criterion_3_intercept": "criterion 3, precise overall risk",
        }[name]


def max_r2_cs(prevalence: float) -> float:
    """The largest Cox-Snell R2 a model can reach for an outcome with this prevalence.

    ``max R2_CS = 1 - exp(2 lnL_null / n)`` with ``lnL_null / n = phi ln(phi) + (1 - phi) ln(1 - phi)``
    (Riley et al. 2019, eq. 23). It is 0.75 at a prevalence of 0.5 and tends to 0 for a rare outcome.

    Parameters
    ----------
    prevalence : float
        Outcome proportion, strictly between 0 and 1.

    Raises
    ------
    ValueError
        ``prevalence`` is not strictly between 0 and 1.
    """
    _check_prevalence(prevalence)
    return 1.0 - math.exp(2.0 * _null_loglik_per_obs(prevalence))


def r2_cs_from_c_statistic(c: float, prevalence: float) -> float:
    """Anticipated Cox-Snell R2 of a model with C statistic ``c`` (Riley, Van Calster & Collins 2021).

    Their approach (pmsampsize's ``cstatistic`` option, ``cstat2rsq``): the linear predictor is normal
    with unit variance in events and non-events, means ``0`` and ``mu = sqrt(2) * Phi^-1(c)`` (so its C
    statistic is ``c``); a logistic regression of the outcome on it is fitted to a simulated data set of
    1,000,000 and R2_CS taken from the likelihood ratio. Under this binormal model the true risk is exactly
    logistic in the linear predictor, ``logit P(event | x) = logit(phi) - mu^2 / 2 + mu x``, so the
    simulation estimates ``1 - exp(-2 I)``, where ``I`` is the expected log-likelihood ratio per
    observation of that model against the null. This function computes that limit deterministically by
    adaptive quadrature instead of simulating. It agrees with the simulation up to its Monte Carlo error
    (standard deviation about 5e-4 at n = 1,000,000 for C 0.89 and prevalence 0.174; about 1% of R2_CS
    for a 0.35% outcome), and it is not rounded to 4 decimals as pmsampsize does, so sample sizes can
    differ from pmsampsize's C-statistic route (seed 123456) by a few tenths of a percent to about 1%.

    Parameters
    ----------
    c : float
        Anticipated C statistic (AUROC), strictly between 0.5 and 1.
    prevalence : float
        Outcome proportion, strictly between 0 and 1.

    Returns
    -------
    float
        The anticipated Cox-Snell R2, between 0 and :func:`max_r2_cs` of ``prevalence``.

    Raises
    ------
    ValueError
        ``c`` is not strictly between 0.5 and 1, or ``prevalence`` not strictly between 0 and 1.
    """
    if not 0.5 < c < 1.0:
        raise ValueError(f"anticipated C statistic must be strictly between 0.5 and 1; got {c}")
    _check_prevalence(prevalence)
    mu = math.sqrt(2.0) * float(stats.norm.ppf(c))
    intercept = math.log(prevalence / (1.0 - prevalence)) - mu * mu / 2.0

    def expected(log_p: object) -> float:
        value, _ = integrate.quad(lambda z: stats.norm.pdf(z) * log_p(z), -_Z_RANGE, _Z_RANGE,
                                  epsabs=1e-13, epsrel=1e-12, limit=200)
        return value

    # events: x = mu + z; non-events: x = z (z standard normal)
    ln_events = expected(lambda z: log_expit(intercept + mu * (mu + z)))
    ln_non_events = expected(lambda z: log_expit(-(intercept + mu * z)))
    ln_model = prevalence * ln_events + (1.0 - prevalence) * ln_non_events
    return 1.0 - math.exp(-2.0 * (ln_model - _null_loglik_per_obs(prevalence)))


def assess_sample_size(*, n_parameters: int, n: int, events: int, anticipated_c: float | None = None,
                       anticipated_r2_cs: float | None = None, shrinkage: float = 0.9, margin: float = 0.05,
                       optimism: float = 0.05,
                       expected_prevalence: float | None = None) -> SampleSizeAssessment:
    """Riley et al.'s minimum sample size for developing a binary-outcome model, against the data available.

    The three criteria (Riley et al. 2019, section 4; BMJ 2020, steps 1-3; as in pmsampsize >= 1.1.1,
    without its earlier rounding of max R2_CS and of the criterion-2 shrinkage):

    1. expected uniform shrinkage at least ``shrinkage``:
       ``n = P / ((S - 1) ln(1 - R2_CS / S))``;
    2. a difference of at most ``optimism`` between apparent and adjusted Nagelkerke R2: criterion 1's
       formula with ``S = R2_CS / (R2_CS + optimism * max R2_CS)``;
    3. the overall risk estimated within +/- ``margin`` (95%): ``n = (1.96 / margin)^2 phi (1 - phi)``.

    Each is rounded up; the minimum is their maximum. For a rare outcome criterion 3 with an absolute
    margin of 0.05 is trivially met, and criterion 1 binds.

    Parameters
    ----------
    n_parameters : int
        Candidate predictor parameters (every coefficient considered, not only those kept), at least 1.
    n : int
        Procedures available (rows eligible for the outcome), at least 1.
    events : int
        Outcome events among them, ``0 <= events <= n``.
    anticipated_c : float, optional
        Anticipated C statistic; R2_CS is then :func:`r2_cs_from_c_statistic`.
    anticipated_r2_cs : float, optional
        Anticipated (optimism-adjusted) Cox-Snell R2, in ``(0, max R2_CS)``. At most one of
        ``anticipated_c`` and ``anticipated_r2_cs``; with neither, R2_CS is 15% of its maximum, Riley et
        al.'s conservative default (BMJ 2020) when nothing is known of the model's performance.
    shrinkage : float, default 0.9
        Target expected shrinkage (criterion 1), in ``(R2_CS, 1)``.
    margin : float, default 0.05
        Absolute margin of error of the overall risk (criterion 3), in ``(0, 1)``.
    optimism : float, default 0.05
        Largest acceptable optimism in Nagelkerke R2 (criterion 2), in ``(0, 1)``.
    expected_prevalence : float, optional
        Outcome proportion used in the calculation; the observed ``events / n`` if not given.

    Returns
    -------
    SampleSizeAssessment
        ``met`` is true when ``n`` reaches the minimum and ``events`` reach ``ceil(minimum * prevalence)``
        (the second matters only with an ``expected_prevalence`` above the observed one). With no events
        (or no non-events) and no ``expected_prevalence``, the criteria cannot be computed: ``required`` is
        empty, ``r2_cs`` and ``events_per_parameter_required`` are NaN, and ``met`` is false.

    Raises
    ------
    ValueError
        A count or option out of range, both ``anticipated_c`` and ``anticipated_r2_cs`` given, or an
        anticipated R2_CS not below its maximum for the prevalence.
    """
    _check_counts(n_parameters=n_parameters, n=n, events=events)
    for name, value in (("shrinkage", shrinkage), ("margin", margin), ("optimism", optimism)):
        if not 0.0 < value < 1.0:
            raise ValueError(f"{name} must be strictly between 0 and 1; got {value}")
    if anticipated_c is not None and anticipated_r2_cs is not None:
        raise ValueError("give at most one of anticipated_c and anticipated_r2_cs, not both "
                         f"(got anticipated_c={anticipated_c}, anticipated_r2_cs={anticipated_r2_cs})")
    if expected_prevalence is not None:
        _check_prevalence(expected_prevalence, name="expected_prevalence")
        proportion = Fraction(expected_prevalence)
    else:
        proportion = Fraction(events, n)
    prevalence = float(proportion)
    if not 0 < proportion < 1:
        return SampleSizeAssessment(
            n_parameters=n_parameters, prevalence=prevalence, r2_cs=math.nan,
            r2_cs_source="not computable: the observed outcome proportion is 0 or 1", shrinkage=shrinkage,
            required={}, available_n=n, available_events=events, events_per_parameter_required=math.nan,
            met=False, events_required=0)
    r2_max = max_r2_cs(prevalence)
    r2, source = _anticipated_r2_cs(prevalence, r2_max, anticipated_c=anticipated_c,
                                    anticipated_r2_cs=anticipated_r2_cs)
    if not 0.0 < r2 < r2_max:
        raise ValueError(f"anticipated Cox-Snell R2 must be strictly between 0 and its maximum "
                         f"{r2_max:.4f} at prevalence {prevalence:.4g}; got {r2}")
    if not r2 < shrinkage:
        raise ValueError(f"shrinkage must exceed the anticipated Cox-Snell R2 ({r2:.4f}); got {shrinkage}")
    required = _criteria(n_parameters, prevalence, r2, r2_max, shrinkage=shrinkage, margin=margin,
                         optimism=optimism)
    events_required = math.ceil(required["minimum"] * proportion)
    return SampleSizeAssessment(
        n_parameters=n_parameters, prevalence=prevalence, r2_cs=r2, r2_cs_source=source, shrinkage=shrinkage,
        required=required, available_n=n, available_events=events,
        events_per_parameter_required=required["minimum"] * prevalence / n_parameters,
        met=n >= required["minimum"] and events >= events_required, events_required=events_required)


def _anticipated_r2_cs(prevalence: float, r2_max: float, *, anticipated_c: float | None,
                       anticipated_r2_cs: float | None) -> tuple[float, str]:
    if anticipated_r2_cs is not None:
        return float(anticipated_r2_cs), "as given"
    if anticipated_c is not None:
        return (r2_cs_from_c_statistic(anticipated_c, prevalence),
                f"from anticipated C-statistic {anticipated_c:g} (Riley 2021 approximation)")
    return (CONSERVATIVE_FRACTION_OF_MAX_R2 * r2_max,
            f"{CONSERVATIVE_FRACTION_OF_MAX_R2:.0%} of max R2_CS {r2_max:.4f} (conservative default)")


def _criteria(n_parameters: int, prevalence: float, r2: float, r2_max: float, *, shrinkage: float,
              margin: float, optimism: float) -> dict[str, int]:
    def n_for_shrinkage(s: float) -> int:
        return math.ceil(n_parameters / ((s - 1.0) * math.log(1.0 - r2 / s)))

    required = {
        "criterion_1_shrinkage": n_for_shrinkage(shrinkage),
        "criterion_2_optimism": n_for_shrinkage(r2 / (r2 + optimism * r2_max)),
        "criterion_3_intercept": math.ceil((Z_95 / margin) ** 2 * prevalence * (1.0 - prevalence)),
    }
    required["minimum"] = max(required.values())
    return required


def _null_loglik_per_obs(prevalence: float) -> float:
    return prevalence * math.log(prevalence) + (1.0 - prevalence) * math.log(1.0 - prevalence)


def _check_prevalence(prevalence: float, *, name: str = "prevalence") -> None:
    if not 0.0 < prevalence < 1.0:
        raise ValueError(f"{name} must be strictly between 0 and 1; got {prevalence}")


def _check_counts(*, n_parameters: int, n: int, events: int) -> None:
    if n_parameters < 1:
        raise ValueError(f"n_parameters must be at least 1; got {n_parameters}")
    if n < 1:
        raise ValueError(f"n must be at least 1; got {n}")
    if not 0 <= events <= n:
        raise ValueError(f"events must be between 0 and n ({n}); got {events}")


def _count_words(count: int) -> str:
    return "fewer than 11" if is_small(count) else f"{count:,}"
