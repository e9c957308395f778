"""The shared checks: one message per rule, naming the parameter, the rule and what was given."""

from __future__ import annotations

import math
import re

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from models.checks import check_groups, check_integer, check_level, check_outcome_and_risk


@given(st.floats(min_value=0, max_value=1, exclude_min=True, exclude_max=True))
def test_every_probability_strictly_inside_the_unit_interval_is_a_level(level):
    assert check_level(level) == level and type(check_level(level)) is float


@pytest.mark.parametrize("level", [0, 1, 0.0, 1.0, 95, -0.5, math.nan, math.inf, True, "0.95", None])
def test_anything_else_is_refused_with_the_name_the_rule_and_the_value(level):
    message = f"level must be a probability strictly between 0 and 1; got {level!r}"
    with pytest.raises(ValueError, match=f"^{re.escape(message)}$"):
        check_level(level)


def test_the_message_names_the_parameter_checked():
    assert check_level(np.float64(0.998), "alarm") == 0.998
    with pytest.raises(ValueError, match=r"^alarm must be a probability strictly between 0 and 1; got 99.8$"):
        check_level(99.8, "alarm")


def test_the_level_check_of_every_module_is_this_one():
    from models import bootstrap, drift, meta_analysis, metrics, prediction_intervals, rare, transport, uncertainty
    from reports import qi, trends

    for module in (bootstrap, drift, meta_analysis, metrics, prediction_intervals, rare, transport, uncertainty, qi,
                   trends):
        assert module.check_level is check_level, module.__name__


@pytest.mark.parametrize(("value", "minimum", "message"), [
    (0, 1, r"^bins must be a positive integer; got 0$"),
    (2.0, 1, r"^bins must be a positive integer; got 2.0$"),
    (True, 1, r"^bins must be a positive integer; got True$"),
    (1, 2, r"^bins must be an integer of at least 2; got 1$"),
])
def test_integer_options_are_refused_with_the_rule(value, minimum, message):
    with pytest.raises(ValueError, match=message):
        check_integer(value, "bins", minimum=minimum)


def test_integer_options_accept_numpy_integers():
    assert check_integer(np.int64(3), "bins", minimum=2) == 3


def test_outcome_and_risk_come_back_as_int8_and_float64():
    y, p = check_outcome_and_risk([True, False, True], [0, 0.5, 1])
    assert y.dtype == np.int8 and y.tolist() == [1, 0, 1]
    assert p.dtype == np.float64 and p.tolist() == [0.0, 0.5, 1.0]
    with pytest.raises(ValueError, match=r"for the test; got 0 events in 2 rows"):
        check_outcome_and_risk([0, 0], [0.1, 0.2], both_classes_for="the test")


def test_groups_are_coded_in_order_of_first_appearance():
    codes, clusters = check_groups(["b", "a", "b", "c"], 4)
    assert codes.tolist() == [0, 1, 0, 2] and clusters == 3
