"""Checks of options and inputs shared by the models and the reports: one rule, one message, wherever it is checked.

In the manner of scikit-learn's ``validate_params``: each rule is written once, at the boundary of every public
function that takes the parameter, and its message names the parameter, states the rule and shows what was
given (a value, or how many values broke the rule and where), never a value from a record.
"""

from __future__ import annotations

import numbers

import numpy as np
import pandas as pd
from numpy.typing import ArrayLike

_SHOWN = 3  # positions named in a message


def check_level(level: float, name: str = "level") -> float:
    """``level`` as a float, after checking it is a probability strictly between 0 and 1.

    Parameters
    ----------
    level : float
        A confidence level or coverage (e.g. 0.95).
    name : str, default "level"
        The parameter's name in the message (e.g. ``"alert"``).

    Returns
    -------
    float

    Raises
    ------
    ValueError
        ``<name> must be a probability strictly between 0 and 1; got <level>`` when ``level`` is not a real
        number in (0, 1) (NaN, 1, 95, a string, ...).
    """
    if not (isinstance(level, numbers.Real) and 0 < level < 1):
        raise ValueError(f"{name} must be a probability strictly between 0 and 1; got {level!r}")
    return float(level)


def check_integer(value: int, name: str, *, minimum: int) -> int:
    """``value`` as an int, after checking it is an integer (not a bool) of at least ``minimum``.

    Raises
    ------
    ValueError
        ``<name> must be a positive integer; got <value>`` (``minimum`` 1) or ``<name> must be an integer of
        at least <minimum>; got <value>``.
    """
    if not (isinstance(value, numbers.Integral) and not isinstance(value, bool) and value >= minimum):
        rule = "a positive integer" if minimum == 1 else f"an integer of at least {minimum}"
        raise ValueError(f"{name} must be {rule}; got {value!r}")
    return int(value)


def check_outcome_and_risk(y: ArrayLike, p: ArrayLike, *,
                           both_classes_for: str | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Outcomes ``y`` as 0/1 int8 and predicted risks ``p`` as float64, after checking every rule once.

    Parameters
    ----------
    y : array of shape (n,)
        Outcome, 0/1 or bool (pandas nullable values accepted when none is missing); never text.
    p : array of shape (n,)
        Predicted risk, finite and within [0, 1].
    both_classes_for : str, optional
        The name of the computation that needs at least one event and one non-event (it is named in the
        message); None allows a single class.

    Returns
    -------
    (y, p)
        ``y`` as int8 0/1 and ``p`` as float64, both of shape (n,).

    Raises
    ------
    ValueError
        Naming the rule: an array not one-dimensional, lengths that differ, no rows, ``y`` not 0/1 (with how
        many and where), ``p`` not finite or outside [0, 1] (with how many, the range and where), or a single
        class when ``both_classes_for`` is given.
    """
    y_arr, p_arr = np.asarray(y), np.asarray(p)
    for name, arr in (("y", y_arr), ("p", p_arr)):
        if arr.ndim != 1:
            raise ValueError(f"{name} must be one-dimensional; got shape {arr.shape}")
    if len(y_arr) != len(p_arr):
        raise ValueError(f"y and p must have the same length; got {len(y_arr)} and {len(p_arr)}")
    if len(y_arr) == 0:
        raise ValueError("y and p must not be empty; got 0 values")
    y_num, p_num = _as_float(y_arr, "y", "0 or 1 (bool accepted)"), _as_float(p_arr, "p", "a number")
    bad = (y_num != 0) & (y_num != 1)  # NaN is bad too
    if bad.any():
        raise ValueError(f"y must be 0 or 1 (bool accepted); {bad.sum()} values are not "
                         f"(e.g. {y_num[bad][0]:g}; {positions(bad)})")
    bad = ~np.isfinite(p_num)
    if bad.any():
        raise ValueError(f"p must be finite; {bad.sum()} values are NaN or infinite ({positions(bad)})")
    bad = (p_num < 0) | (p_num > 1)
    if bad.any():
        raise ValueError(f"p must be within [0, 1]; {bad.sum()} values outside "
                         f"(min {p_num.min():.6g}, max {p_num.max():.6g}; {positions(bad)})")
    events = int(y_num.sum())
    if both_classes_for is not None and events in (0, len(y_num)):
        raise ValueError(f"y must contain at least one event (1) and one non-event (0) for {both_classes_for}; "
                         f"got {events} events in {len(y_num)} rows")
    return y_num.astype(np.int8), p_num


def check_groups(groups: ArrayLike, n: int) -> tuple[np.ndarray, int]:
    """Integer cluster code per row (in order of first appearance) and the number of clusters.

    Raises
    ------
    ValueError
        ``groups`` does not have ``n`` values, or some are missing.
    """
    codes, uniques = pd.factorize(np.asarray(groups), sort=False)
    if len(codes) != n:
        raise ValueError(f"groups must have one value per row; got {len(codes)} values for {n} rows")
    if (codes < 0).any():
        raise ValueError(f"groups must not be missing; {(codes < 0).sum()} values are ({positions(codes < 0)})")
    return codes, len(uniques)


def positions(bad: np.ndarray) -> str:
    """``"positions 0, 4, 9, ..."``: where a rule was broken (the first three 0-based positions)."""
    where = np.flatnonzero(bad)
    shown = ", ".join(str(i) for i in where[:_SHOWN])
    return f"positions {shown}{', ...' if len(where) > _SHOWN else ''}"


def _as_float(arr: np.ndarray, name: str, rule: str) -> np.ndarray:
    """Numbers and bools as float64; objects (e.g. pandas nullable values) only if all are numbers; never text."""
    try:
        if arr.dtype.kind in "USV":
            raise TypeError
        return arr.astype(np.float64)
    except (TypeError, ValueError):
        raise ValueError(f"{name} must be {rule}; got non-numeric values (dtype {arr.dtype})") from None
