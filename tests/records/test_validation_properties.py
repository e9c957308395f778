"""Property tests: random corruption of a valid batch never crashes the validator and never loses a row."""

from __future__ import annotations

import pandas as pd
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from records.readers import RawBatch
from records.schema import LEVELS, PROCEDURES
from records.validation import Registered, validate_batch
from tests.conftest import AS_OF_YEAR, make_batch
from tests.records.test_validation import assert_accounting

BASE = make_batch(6)

junk_values = st.one_of(
    st.none(),
    st.text(max_size=12),
    st.integers(min_value=-10**6, max_value=10**6),
    st.floats(allow_nan=True, allow_infinity=True),
    st.booleans(),
    st.sampled_from(["", "NA", "NULL", "TRUE", "no", "T12", "L1", "Osteoporotic", "low;high", "venous;",
                     "1e309", "-0", "3.0", "7.5", "P00001", "P00002", "ct", "xray", "2021"]),
)


@st.composite
def corrupted_batches(draw) -> RawBatch:
    procedures = BASE.procedures.astype(object).copy()
    levels = BASE.levels.astype(object).copy()
    for frame, table in ((procedures, PROCEDURES), (levels, LEVELS)):
        for _ in range(draw(st.integers(min_value=0, max_value=8))):
            row = draw(st.integers(min_value=0, max_value=len(frame) - 1))
            column = draw(st.sampled_from(table.names))
            frame.at[row, column] = draw(junk_values)
    if draw(st.booleans()):
        levels = levels.drop(index=draw(st.integers(min_value=0, max_value=len(levels) - 1)))
    if draw(st.booleans()):
        procedures = pd.concat([procedures, procedures.sample(1, random_state=draw(st.integers(0, 99)))])
    return RawBatch(procedures=procedures.reset_index(drop=True), levels=levels.reset_index(drop=True),
                    source="hypothesis")


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(batch=corrupted_batches(), registered=st.sampled_from([{}, {}, {1: None}, {1: "0" * 64}]))
def test_corruption_never_crashes_and_never_loses_a_row(batch, registered):
    """Batch 1 unregistered, registered with unknown content (skipped), or registered with other content (refused)."""
    result = validate_batch(batch, as_of_year=AS_OF_YEAR, registered=Registered(contents=registered))
    assert_accounting(batch, result)
    # every accepted row satisfies the schema once more (the quarantine took all the bad ones)
    again = validate_batch(RawBatch(procedures=result.procedures.accepted, levels=result.levels.accepted,
                                    source="accepted"), as_of_year=AS_OF_YEAR)
    assert again.procedures.quarantined.empty and again.levels.quarantined.empty
