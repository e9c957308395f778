"""Tests of the header checks: too many columns, twin names, nested columns; never a value in a message."""

from __future__ import annotations

import pickle
from collections.abc import Iterator, Sequence

import numpy as np
import pandas as pd
import pyarrow as pa
import pytest

from records.columns import (
    LIST,
    MAP,
    MAX_COLUMNS,
    STRUCT,
    UNION,
    NestedColumn,
    NestedColumnError,
    check_arrow_schema,
    check_column_names,
    check_flat_frame,
)
from records.errors import ContractError, InputError
from records.guard import header_labels
from records.readers import arrow_to_frame


class CountOnly(Sequence[str]):
    """A header whose names cannot be read: only its length. Refusing it proves no per-column work was done."""

    def __init__(self, n: int) -> None:
        self.n = n

    def __len__(self) -> int:
        return self.n

    def __getitem__(self, index: object) -> str:
        raise AssertionError("a name was read")

    def __iter__(self) -> Iterator[str]:
        raise AssertionError("the names were iterated")


# --- how many ------------------------------------------------------------------------------
def test_100000_columns_refused_from_the_count_alone() -> None:
    with pytest.raises(ContractError, match=r"^table procedures has 100000 columns; at most 1000 are accepted"):
        check_column_names("procedures", CountOnly(100_000))


def test_1001_columns_refused_1000_accepted() -> None:
    assert MAX_COLUMNS == 1000
    with pytest.raises(ContractError, match=r"^table levels has 1001 columns; at most 1000 are accepted"):
        check_column_names("levels", [f"c{i}" for i in range(1001)])
    check_column_names("levels", [f"c{i}" for i in range(1000)])


def test_count_comes_before_twins() -> None:
    with pytest.raises(ContractError, match=r"has 1001 columns"):
        check_column_names("levels", ["site_id"] * 1001)


# --- twin names ----------------------------------------------------------------------------
@pytest.mark.parametrize(("names", "message"), [
    (["procedure_id", "site_id", "site_id"], "column site_id appears 2 times"),
    (["site_id", "x", "site_id", "site_id"], "column site_id appears 3 times"),
    (["site_id", "SITE_ID"], "columns site_id and SITE_ID are the same column in another case"),
    (["Sex", "sex", "SEX"], "columns Sex, sex and SEX are the same column in another case"),
    (["site_id", " site_id"], "columns site_id and ' site_id' are the same column with blanks around the name"),
    (["site_id", " SITE_ID "],
     "columns site_id and ' SITE_ID ' are the same column in another case and with blanks around the name"),
    ([0, 1, 0], "column 0 appears 2 times"),
    ([0, "0"], "column 0 appears 2 times"),
])
def test_twin_names_refused(names: list[object], message: str) -> None:
    with pytest.raises(ContractError) as caught:
        check_column_names("procedures", names)
    assert str(caught.value) == f"table procedures: {message}; keep exactly one of each"


def test_every_twin_group_named_in_one_error() -> None:
    with pytest.raises(ContractError) as caught:
        check_column_names("levels", ["a", "A", "b", "b", "c"])
    assert str(caught.value) == ("table levels: columns a and A are the same column in another case; "
                                 "column b appears 2 times; keep exactly one of each")


def test_twin_headers_that_are_values_named_by_position() -> None:
    names = ["jane.doe@example.org", "sex", "JANE.DOE@example.org", "555-123-4567", "555-123-4567"]
    with pytest.raises(ContractError) as caught:
        check_column_names("levels", names)
    message = str(caught.value)
    assert message == ("table levels: column 1 (name withheld) and column 3 (name withheld) are the same column in "
                       "another case; column 4 (name withheld) and column 5 (name withheld) have the same name; "
                       "keep exactly one of each")
    for fragment in ("jane", "doe", "example", "555", "4567"):
        assert fragment not in message.lower()


def test_twin_of_a_withheld_header_is_withheld_too() -> None:
    """'Dr. Meier' looks like a name, 'dr. meier' (lower case) does not; naming the second would name the first."""
    assert header_labels(["Dr. Meier", "dr. meier"]) == ["column 1 (name withheld)", "dr. meier"]
    with pytest.raises(ContractError) as caught:
        check_column_names("procedures", ["sex", "Dr. Meier", "dr. meier"])
    assert str(caught.value) == ("table procedures: column 2 (name withheld) and column 3 (name withheld) are the "
                                 "same column in another case; keep exactly one of each")


@pytest.mark.parametrize("names", [[], ["site_id"], ["site_id", "site_ids", "SITE"], [0, 1, 2], ("a", "b")])
def test_distinct_names_pass(names: Sequence[object]) -> None:
    check_column_names("procedures", names)


def test_pandas_index_accepted() -> None:
    with pytest.raises(ContractError, match="column a appears 2 times"):
        check_column_names("levels", pd.DataFrame([[1, 2]], columns=["a", "a"]).columns)


# --- nested columns: Arrow schemas ---------------------------------------------------------
ARROW_NESTED = [
    (pa.struct([("mrn", pa.string()), ("patient", pa.string())]), STRUCT),
    (pa.list_(pa.string()), LIST),
    (pa.large_list(pa.int64()), LIST),
    (pa.list_(pa.float64(), 3), LIST),
    (pa.list_view(pa.string()), LIST),
    (pa.map_(pa.string(), pa.string()), MAP),
    (pa.sparse_union([pa.field("a", pa.int64()), pa.field("b", pa.string())]), UNION),
    (pa.dense_union([pa.field("a", pa.int64())]), UNION),
    (pa.dictionary(pa.int32(), pa.list_(pa.string())), LIST),
]


@pytest.mark.parametrize(("arrow_type", "kind"), ARROW_NESTED, ids=[str(t) for t, _ in ARROW_NESTED])
def test_nested_arrow_schema_refused(arrow_type: pa.DataType, kind: str) -> None:
    schema = pa.schema([("procedure_id", pa.string()), ("meta", arrow_type)])
    with pytest.raises(NestedColumnError) as caught:
        check_arrow_schema("procedures", schema)
    assert caught.value.columns == (NestedColumn("procedures", "meta", kind),)
    assert str(caught.value).startswith(f"table procedures: meta is a {kind} column; the contract has flat "
                                        "columns only")


def test_flat_arrow_schema_passes() -> None:
    schema = pa.schema([("a", pa.string()), ("b", pa.int64()), ("c", pa.float64()), ("d", pa.bool_()),
                        ("e", pa.dictionary(pa.int32(), pa.string())), ("f", pa.large_string()),
                        ("g", pa.timestamp("s")), ("h", pa.null()), ("i", pa.decimal128(10, 2))])
    check_arrow_schema("levels", schema)


def test_every_nested_column_named_once() -> None:
    schema = pa.schema([("tags", pa.list_(pa.string())), ("x", pa.int64()), ("meta", pa.struct([("a", pa.int8())])),
                        ("jane.doe@example.org", pa.map_(pa.string(), pa.int64()))])
    with pytest.raises(NestedColumnError) as caught:
        check_arrow_schema("levels", schema)
    assert caught.value.columns == (NestedColumn("levels", "tags", LIST), NestedColumn("levels", "meta", STRUCT),
                                    NestedColumn("levels", "column 4 (name withheld)", MAP))
    assert str(caught.value).startswith("table levels: tags is a list column, meta is a struct column, column 4 "
                                        "(name withheld) is a map column; the contract has flat columns only")
    assert "jane" not in str(caught.value)


def test_nested_error_is_a_contract_error_and_pickles() -> None:
    error = NestedColumnError([NestedColumn("procedures", "meta", STRUCT)])
    assert isinstance(error, ContractError) and isinstance(error, InputError)
    copy = pickle.loads(pickle.dumps(error))
    assert copy.columns == error.columns and str(copy) == str(error)


# --- nested columns: pandas frames ---------------------------------------------------------
def _frame_of(values: pa.Array) -> pd.DataFrame:
    return arrow_to_frame(pa.table({"procedure_id": pa.array(["P1", "P2", "P3"]), "meta": values}))


PARQUET_NESTED = [
    (pa.array([{"mrn": "4711081", "patient": "Smith, John"}, None, {"mrn": None, "patient": None}]), STRUCT),
    (pa.array([["a", "b"], None, []]), LIST),
    (pa.array([[1.0, 2.0], None, [3.0, 4.0]], type=pa.list_(pa.float64(), 2)), LIST),
    (pa.array([[1], None, [2]], type=pa.large_list(pa.int64())), LIST),
    (pa.array([[("mrn", 4711081)], None, [("k", 1), ("l", 2)]], type=pa.map_(pa.string(), pa.int64())), MAP),
]


@pytest.mark.parametrize(("values", "kind"), PARQUET_NESTED, ids=[str(v.type) for v, _ in PARQUET_NESTED])
def test_nested_columns_of_arrow_to_frame_refused(values: pa.Array, kind: str) -> None:
    frame = _frame_of(values)
    with pytest.raises(NestedColumnError) as caught:
        check_flat_frame("procedures", frame)
    assert caught.value.columns == (NestedColumn("procedures", "meta", kind),)
    assert "4711081" not in str(caught.value) and "Smith" not in str(caught.value)


@pytest.mark.parametrize(("cells", "kind"), [
    ([{"a": 1}, None, None], STRUCT),
    ([None, [1, 2], None], LIST),
    ([(1, 2), None, (3,)], LIST),
    ([{1, 2}, None, None], LIST),
    ([np.array([1, 2]), None, None], LIST),
    (["text", None, ["jane.doe@example.org"]], LIST),
    ([1, 2, [3]], LIST),
    ([[("k", "v")], None, None], MAP),
])
def test_nested_object_cells_refused(cells: list[object], kind: str) -> None:
    frame = pd.DataFrame({"procedure_id": ["P1", "P2", "P3"], "meta": pd.Series(cells, dtype=object)})
    with pytest.raises(NestedColumnError) as caught:
        check_flat_frame("levels", frame)
    assert caught.value.columns == (NestedColumn("levels", "meta", kind),)
    assert "jane" not in str(caught.value)


def test_nested_arrow_dtype_refused() -> None:
    frame = pd.DataFrame({"meta": pd.array([[1], None], dtype=pd.ArrowDtype(pa.list_(pa.int64())))})
    with pytest.raises(NestedColumnError) as caught:
        check_flat_frame("levels", frame)
    assert caught.value.columns == (NestedColumn("levels", "meta", LIST),)


def test_flat_frames_pass() -> None:
    frame = pd.DataFrame({
        "text": pd.Series(["a", None, "c"], dtype=object),
        "arrow_text": pd.Series(["a", None, "c"], dtype="string[pyarrow]"),
        "numbers": [1.0, None, 3.0],
        "mixed": pd.Series(["a", 1, 2.5], dtype=object),
        "empty": pd.Series([None, None, None], dtype=object),
        "bytes": pd.Series([b"a", None, b"c"], dtype=object),
        "arrow_int": pd.array([1, None, 3], dtype=pd.ArrowDtype(pa.int64())),
        "category": pd.Categorical(["x", "y", None]),
        "when": pd.to_datetime(["2021-01-01", None, "2022-01-01"]),
    })
    check_flat_frame("procedures", frame)
