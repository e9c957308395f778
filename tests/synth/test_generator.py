"""Synthetic registry: contract conformance, determinism, intended rates and effects, truth consistent with labels."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from records.schema import (
    AGE_YEARS, BASIVERTEBRAL_FORAMEN, BMD_T_SCORE, CEMENT_VISCOSITY, CEMENT_VOLUME_ML, CORTICAL_DISRUPTION, ETIOLOGY,
    EXTRACT_BATCH, INFECTION_90D, INTRAVERTEBRAL_CLEFT, KYPHOTIC_ANGLE_POST, KYPHOTIC_ANGLE_PRE, LEAKAGE,
    LEAKAGE_IMAGING, LEAKAGE_SITE_NAMES, LEAKAGE_SITES, LEAKAGE_SYMPTOMATIC, LEVELS, N_LEVELS, OPERATOR_ID,
    PROCEDURE_ID, PROCEDURE_YEAR, PROCEDURES, SEX, SITE_ID, SITE_SEPARATOR, VERTEBRA,
    VERTEBRAL_BODY_VOLUME_ML, TableSpec, cross_table_violations, table_schema,
)
from synth.generator import (
    P_INFECTION_90D, P_LEAKAGE_ANY, P_LEAKAGE_CANAL, P_LEAKAGE_VENOUS, TRUTH_LEVEL_COLUMNS,
    TRUTH_PROCEDURE_COLUMNS, SyntheticRegistry, generate_registry, write_registry,
)

N_PROCEDURES = 20_000
SEED = 20_251_125
FIRST_YEAR, LAST_YEAR = 2015, 2025
CANAL_PATTERN = "epidural|foraminal"


@pytest.fixture(scope="module")
def registry() -> SyntheticRegistry:
    return generate_registry(N_PROCEDURES, seed=SEED, first_year=FIRST_YEAR, last_year=LAST_YEAR)


@pytest.fixture(scope="module")
def assessed(registry: SyntheticRegistry) -> pd.DataFrame:
    """Levels whose leakage was assessed, with their truth and observed canal / venous labels."""
    levels = registry.levels.join(registry.truth_levels[[P_LEAKAGE_ANY, P_LEAKAGE_CANAL, P_LEAKAGE_VENOUS]])
    levels = levels[levels[LEAKAGE].notna()].copy()
    sites = levels[LEAKAGE_SITES].fillna("")
    levels["canal"] = sites.str.contains(CANAL_PATTERN)
    levels["venous"] = sites.str.contains("venous")
    levels[LEAKAGE] = levels[LEAKAGE].astype(bool)
    return levels


def _tables(registry: SyntheticRegistry) -> list[tuple[pd.DataFrame, TableSpec]]:
    return [(registry.procedures, PROCEDURES), (registry.levels, LEVELS)]


# --- contract ------------------------------------------------------------------------------------------------------

def test_frames_have_exactly_the_contract_columns_and_dtypes(registry: SyntheticRegistry) -> None:
    for frame, table in _tables(registry):
        assert tuple(frame.columns) == table.names
        for spec in table.columns:
            assert frame[spec.name].dtype == pd.api.types.pandas_dtype(spec.pandas_dtype), spec.name


def test_every_value_is_within_contract_ranges_and_categories(registry: SyntheticRegistry) -> None:
    for frame, table in _tables(registry):
        for spec in table.columns:
            values = frame[spec.name]
            if spec.required:
                assert values.notna().all(), f"{spec.name} is required"
            present = values.dropna()
            if spec.kind in ("int", "float"):
                high = LAST_YEAR if spec.name == PROCEDURE_YEAR else spec.high
                assert spec.low is None or (present >= spec.low).all(), spec.name
                assert high is None or (present <= high).all(), spec.name
            elif spec.kind == "category":
                assert present.isin(spec.categories).all(), spec.name
            elif spec.kind == "id":
                assert present.str.fullmatch(r"[A-Za-z0-9_-]{1,64}").all(), spec.name
            elif spec.kind == "sites":
                for joined in present.unique():
                    names = joined.split(SITE_SEPARATOR)
                    assert set(names) <= set(LEAKAGE_SITE_NAMES) and len(set(names)) == len(names)
                    assert names == sorted(names, key=LEAKAGE_SITE_NAMES.index), "sites in contract order"


def test_the_contract_schema_and_cross_table_rules_accept_the_registry(registry: SyntheticRegistry) -> None:
    for frame, table in _tables(registry):
        table_schema(table, as_of_year=LAST_YEAR).validate(frame, lazy=True)
    procedure_failures, level_failures = cross_table_violations(registry.procedures, registry.levels)
    assert procedure_failures.empty and level_failures.empty


def test_cross_table_rules_hold(registry: SyntheticRegistry) -> None:
    procedures, levels = registry.procedures, registry.levels
    rows = levels[PROCEDURE_ID].value_counts()
    assert (procedures[N_LEVELS].to_numpy() == rows.reindex(procedures[PROCEDURE_ID]).to_numpy()).all()
    assert not levels.duplicated([PROCEDURE_ID, VERTEBRA]).any()
    leak = levels[LEAKAGE]
    has_sites = levels[LEAKAGE_SITES].fillna("").str.len() > 0
    assert (has_sites == leak.fillna(False)).all()
    assert not (levels[LEAKAGE_SYMPTOMATIC].fillna(False) & ~leak.fillna(False)).any()
    for column in (LEAKAGE_SITES, LEAKAGE_SYMPTOMATIC, LEAKAGE_IMAGING):
        assert levels.loc[leak.isna(), column].isna().all(), column
    assert levels.loc[leak.notna(), [LEAKAGE_SYMPTOMATIC, LEAKAGE_IMAGING]].notna().all().all()


def test_truth_frames_are_row_aligned_probabilities(registry: SyntheticRegistry) -> None:
    truth_levels, truth_procedures = registry.truth_levels, registry.truth_procedures
    assert tuple(truth_levels.columns) == TRUTH_LEVEL_COLUMNS
    assert tuple(truth_procedures.columns) == TRUTH_PROCEDURE_COLUMNS
    assert truth_levels[[PROCEDURE_ID, VERTEBRA]].equals(registry.levels[[PROCEDURE_ID, VERTEBRA]])
    assert truth_procedures[PROCEDURE_ID].equals(registry.procedures[PROCEDURE_ID])
    p_any = truth_levels[P_LEAKAGE_ANY]
    assert p_any.between(0, 1).all() and truth_procedures[P_INFECTION_90D].between(0, 1).all()
    assert (truth_levels[P_LEAKAGE_CANAL] <= p_any).all() and (truth_levels[P_LEAKAGE_VENOUS] <= p_any).all()


# --- determinism and identifiers -----------------------------------------------------------------------------------

def test_same_seed_gives_identical_frames_and_another_seed_differs() -> None:
    first, again = generate_registry(5_000, seed=7), generate_registry(5_000, seed=7)
    for name in ("procedures", "levels", "truth_levels", "truth_procedures"):
        pd.testing.assert_frame_equal(getattr(first, name), getattr(again, name))
    other = generate_registry(5_000, seed=8)
    assert not first.procedures.equals(other.procedures)
    assert not first.truth_levels[P_LEAKAGE_ANY].equals(other.truth_levels[P_LEAKAGE_ANY])


def test_identifiers_are_pseudonyms_and_ages_are_top_coded(registry: SyntheticRegistry) -> None:
    procedures = registry.procedures
    ids = procedures[PROCEDURE_ID]
    assert ids.is_unique and ids.str.fullmatch(r"P\d{7}").all() and not ids.str.isdigit().any()
    assert procedures[SITE_ID].str.fullmatch(r"S\d{2}").all() and procedures[SITE_ID].nunique() <= 24
    assert procedures[OPERATOR_ID].str.fullmatch(r"OP\d{3}").all()
    assert (procedures.groupby(OPERATOR_ID)[SITE_ID].nunique() == 1).all(), "each operator works at one site"
    site_volume = procedures[SITE_ID].value_counts()
    assert site_volume.max() > 2 * site_volume.min(), "sites differ in volume"
    assert procedures[AGE_YEARS].max() == 90


def test_extract_batch_is_quarterly_and_chronological(registry: SyntheticRegistry) -> None:
    procedures = registry.procedures
    batch, year = procedures[EXTRACT_BATCH], procedures[PROCEDURE_YEAR]
    assert batch.is_monotonic_increasing and year.is_monotonic_increasing
    assert ((batch - 1) // 4 == year - FIRST_YEAR).all()
    assert year.min() >= FIRST_YEAR and year.max() <= LAST_YEAR
    per_year = year.value_counts()
    assert per_year[LAST_YEAR] > per_year[FIRST_YEAR], "volume grows over the years"


# --- marginals -----------------------------------------------------------------------------------------------------

def test_levels_per_procedure_and_vertebrae_are_realistic(registry: SyntheticRegistry) -> None:
    n_levels = registry.procedures[N_LEVELS]
    assert 1.5 <= n_levels.mean() <= 1.75
    assert (n_levels <= 2).mean() > 0.8 and 0 < (n_levels > 4).mean() < 0.05
    top_four = registry.levels[VERTEBRA].value_counts().index[:4]
    assert set(top_four) <= {"t11", "t12", "l1", "l2"}
    lumbar = registry.levels[VERTEBRA].str.startswith("l")
    for column in (CEMENT_VOLUME_ML, VERTEBRAL_BODY_VOLUME_ML):
        assert registry.levels.loc[lumbar, column].mean() > registry.levels.loc[~lumbar, column].mean()


def test_case_mix_follows_the_literature(registry: SyntheticRegistry) -> None:
    procedures = registry.procedures
    share = procedures[ETIOLOGY].value_counts(normalize=True)
    assert 0.77 <= share["osteoporotic"] <= 0.83 and 0.10 <= share["malignant"] <= 0.14
    osteoporotic = procedures[procedures[ETIOLOGY] == "osteoporotic"]
    assert 0.68 <= (osteoporotic[SEX] == "f").mean() <= 0.76
    assert osteoporotic[BMD_T_SCORE].mean() < procedures.loc[procedures[ETIOLOGY] != "osteoporotic", BMD_T_SCORE].mean()
    levels = registry.levels
    assert (levels[KYPHOTIC_ANGLE_POST] < levels[KYPHOTIC_ANGLE_PRE]).dropna().mean() > 0.8


def test_missingness_is_as_intended(registry: SyntheticRegistry) -> None:
    procedures, levels = registry.procedures, registry.levels
    assert 0.35 <= procedures[BMD_T_SCORE].isna().mean() <= 0.45
    assert 0.45 <= levels[VERTEBRAL_BODY_VOLUME_ML].isna().mean() <= 0.55
    assert 0.01 <= levels[LEAKAGE].isna().mean() <= 0.035
    assert 0.02 <= procedures[INFECTION_90D].isna().mean() <= 0.04
    segmented = levels[VERTEBRAL_BODY_VOLUME_ML].notna()
    assert levels.loc[segmented, BASIVERTEBRAL_FORAMEN].notna().all(), "a CT volume implies the foramen is known"


# --- outcomes ------------------------------------------------------------------------------------------------------

def test_observed_rates_are_in_the_intended_ranges(registry: SyntheticRegistry, assessed: pd.DataFrame) -> None:
    ct = assessed[LEAKAGE_IMAGING] == "ct"
    assert 0.30 <= ct.mean() <= 0.40
    assert 0.20 <= assessed[LEAKAGE].mean() <= 0.30
    assert 0.30 <= assessed.loc[ct, LEAKAGE].mean() <= 0.40
    symptomatic = assessed.loc[assessed[LEAKAGE], LEAKAGE_SYMPTOMATIC].mean()
    assert 0.01 <= symptomatic <= 0.035
    assert 0.003 <= registry.truth_procedures[P_INFECTION_90D].mean() <= 0.005
    assert 0.002 <= registry.procedures[INFECTION_90D].mean() <= 0.007


def test_main_effects_point_the_published_way(assessed: pd.DataFrame) -> None:
    rate = assessed.groupby(CORTICAL_DISRUPTION)[LEAKAGE].mean()
    assert rate[True] > rate[False] + 0.1
    by_viscosity = assessed.groupby(CEMENT_VISCOSITY)[LEAKAGE].mean()
    assert by_viscosity["low"] > by_viscosity["medium"] > by_viscosity["high"]
    by_imaging = assessed.groupby(LEAKAGE_IMAGING)[LEAKAGE].mean()
    assert 0.5 <= by_imaging["xray"] / by_imaging["ct"] <= 0.75, "X-ray sees about 0.5-0.67 of CT leaks"
    by_foramen = assessed.groupby(BASIVERTEBRAL_FORAMEN)[LEAKAGE].mean()
    assert by_foramen[True] > by_foramen[False]
    leaks = assessed[assessed[LEAKAGE] & (assessed[LEAKAGE_IMAGING] == "ct")]
    venous_share = leaks.groupby(INTRAVERTEBRAL_CLEFT)["venous"].mean()
    assert venous_share[False] > 0.55 and venous_share[True] < 0.45, "cleft: 37 % vs 68 % venous (PMC8449924)"
    canal_share = leaks.groupby(CORTICAL_DISRUPTION)["canal"].mean()
    assert canal_share[True] > canal_share[False]


@pytest.mark.parametrize(("label", "truth"), [(LEAKAGE, P_LEAKAGE_ANY), ("canal", P_LEAKAGE_CANAL),
                                              ("venous", P_LEAKAGE_VENOUS)])
def test_observed_leak_labels_match_their_true_probabilities(assessed: pd.DataFrame, label: str, truth: str) -> None:
    y, p = assessed[label].to_numpy(dtype=float), assessed[truth].to_numpy()
    standard_error = np.sqrt(np.sum(p * (1 - p))) / len(p)
    assert abs(y.mean() - p.mean()) < 4 * standard_error
    deciles = pd.qcut(p, 10, labels=False, duplicates="drop")
    frame = pd.DataFrame({"y": y, "p": p, "bin": deciles}).groupby("bin")
    observed, expected, count = frame["y"].mean(), frame["p"].mean(), frame["y"].size()
    z = (observed - expected) / np.sqrt(expected * (1 - expected) / count)
    assert z.abs().max() < 4, "calibrated within every decile of the true probability"


def test_observed_infection_matches_its_true_probability(registry: SyntheticRegistry) -> None:
    followed = registry.procedures[INFECTION_90D].notna().to_numpy()
    y = registry.procedures[INFECTION_90D].to_numpy(dtype=float, na_value=np.nan)[followed]
    p = registry.truth_procedures[P_INFECTION_90D].to_numpy()[followed]
    assert abs(y.mean() - p.mean()) < 4 * np.sqrt(np.sum(p * (1 - p))) / len(p)


# --- writing and arguments -----------------------------------------------------------------------------------------

def test_write_registry_round_trips_with_deterministic_bytes(tmp_path: Path) -> None:
    small = generate_registry(2_000, seed=3)
    paths = write_registry(small, tmp_path / "a")
    again = write_registry(small, tmp_path / "b")
    assert set(paths) == {"procedures", "levels", "truth_levels", "truth_procedures"}
    assert paths["truth_levels"].parent.name == "truth"
    for name, path in paths.items():
        assert path.read_bytes() == again[name].read_bytes(), name
        expected = pa.Table.from_pandas(getattr(small, name), preserve_index=False)
        assert pq.read_table(path).select(expected.column_names).to_pylist() == expected.to_pylist(), name
    assert pq.read_schema(paths["procedures"]).remove_metadata().equals(PROCEDURES.arrow_schema())
    assert pq.read_schema(paths["levels"]).remove_metadata().equals(LEVELS.arrow_schema())


@pytest.mark.parametrize(("kwargs", "message"), [
    ({"n_procedures": 0}, "n_procedures must be at least 1"),
    ({"first_year": 2020, "last_year": 2019}, "first_year <= last_year"),
    ({"n_sites": 10, "n_operators": 5}, "n_sites <= n_operators"),
])
def test_arguments_out_of_range_are_refused(kwargs: dict[str, int], message: str) -> None:
    arguments = {"n_procedures": 10, "seed": 1} | kwargs
    with pytest.raises(ValueError, match=re.escape(message)):
        generate_registry(arguments.pop("n_procedures"), **arguments)
