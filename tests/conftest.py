"""Shared fixtures: tiny valid batches built in code, and the PostgreSQL URL CI provides."""

from __future__ import annotations

import os
from dataclasses import dataclass

# One OpenMP/BLAS thread per process in the tests: on a 2-core machine that also runs the CLI's subprocesses and
# Prefect's server, threads of HistGradientBoosting spinning against each other made fits many times slower. The
# results do not depend on the thread count. Set before scikit-learn is imported; subprocesses inherit it.
for _name in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_name, "1")

import pandas as pd  # noqa: E402
import pytest

from records.readers import RawBatch  # noqa: E402
from records.schema import LEVELS, PROCEDURES  # noqa: E402

AS_OF_YEAR = 2026


def make_procedures(n: int = 3, *, batch: int = 1, start: int = 1) -> pd.DataFrame:
    """`n` valid procedure rows (typed as a Parquet source gives them)."""
    ids = [f"P{start + i:05d}" for i in range(n)]
    frame = pd.DataFrame({
        "procedure_id": ids,
        "site_id": [f"S{(i % 3) + 1:02d}" for i in range(n)],
        "operator_id": [f"OP{(i % 5) + 1:03d}" for i in range(n)],
        "extract_batch": [batch] * n,
        "procedure_year": [2020 + (i % 5) for i in range(n)],
        "age_years": [70 + (i % 20) for i in range(n)],
        "sex": ["f" if i % 3 else "m" for i in range(n)],
        "bmi_kg_m2": [24.5] * n,
        "bmd_t_score": [-2.8] * n,
        "diabetes": [i % 4 == 0 for i in range(n)],
        "glucocorticoid_use": [False] * n,
        "immunosuppressed": [False] * n,
        "recent_infection": [False] * n,
        "asa_class": [2] * n,
        "etiology": ["osteoporotic"] * n,
        "anesthesia": ["local_sedation"] * n,
        "approach": ["bipedicular"] * n,
        "antibiotic_prophylaxis": [True] * n,
        "procedure_minutes": [45.0] * n,
        "n_levels": [2 if i % 2 == 0 else 1 for i in range(n)],
        "infection_90d": [False] * n,
        "length_of_stay_days": [1] * n,
        "pain_vas_pre": [8.0] * n,
        "pain_vas_post": [3.0] * n,
    })
    return _typed(frame, PROCEDURES)


def make_levels(procedures: pd.DataFrame) -> pd.DataFrame:
    """Valid level rows matching the procedures' n_levels."""
    rows = []
    for pid, n in zip(procedures["procedure_id"], procedures["n_levels"]):
        for j, vertebra in enumerate(["l1", "t12", "l2", "t11"][: int(n)]):
            leak = j == 0
            rows.append({
                "procedure_id": pid, "vertebra": vertebra, "genant_grade": 2, "morphology": "wedge",
                "fracture_age_days": 30, "height_loss_pct": 25.0, "intravertebral_cleft": False,
                "cortical_disruption": leak, "endplate_disruption": False, "basivertebral_foramen": None,
                "cement_type": "pmma", "cement_viscosity": "medium", "balloon_volume_ml": 3.0,
                "cement_volume_ml": 4.5, "vertebral_body_volume_ml": 30.0, "kyphotic_angle_pre_deg": 15.0,
                "kyphotic_angle_post_deg": 9.0, "leakage": leak, "leakage_sites": "intradiscal" if leak else None,
                "leakage_symptomatic": False, "leakage_imaging": "xray",
            })
    return _typed(pd.DataFrame(rows), LEVELS)


def _typed(frame: pd.DataFrame, table) -> pd.DataFrame:
    return frame.astype({spec.name: spec.pandas_dtype for spec in table.columns})


def make_batch(n: int = 3, *, batch: int = 1, start: int = 1) -> RawBatch:
    procedures = make_procedures(n, batch=batch, start=start)
    return RawBatch(procedures=procedures, levels=make_levels(procedures), source="memory")


@pytest.fixture
def valid_batch() -> RawBatch:
    return make_batch(6)


def postgres_test_url() -> str:
    """The PostgreSQL URL CI sets; a test that needs it fails in CI without it and skips with a reason elsewhere.
    For module-scoped fixtures, which cannot use the :func:`postgres_url` fixture."""
    url = os.environ.get("CEMENTRISK_TEST_POSTGRES_URL")
    if not url:
        if os.environ.get("CI"):
            pytest.fail("CI must set CEMENTRISK_TEST_POSTGRES_URL (see .ci/run)")
        pytest.skip("no PostgreSQL: set CEMENTRISK_TEST_POSTGRES_URL to run this test")
    return url


@pytest.fixture
def postgres_url() -> str:
    """The PostgreSQL URL CI sets (:func:`postgres_test_url`)."""
    return postgres_test_url()


@dataclass(frozen=True)
class PostgresSchema:
    """A fresh PostgreSQL schema for one test: its engine, its name, and a source URL that reads it."""

    engine: object
    name: str
    url: str

    def load(self, tables: dict[str, pd.DataFrame], **dtype: object) -> str:
        """Write ``tables`` into the schema (missing values as NULL, ``dtype`` per column) and return the URL."""
        for name, frame in tables.items():
            frame.astype(object).where(frame.notna(), None).to_sql(name, self.engine, schema=self.name, index=False,
                                                                   dtype=dtype or None)
        return self.url


@pytest.fixture
def postgres_schema(postgres_url):
    """A fresh schema in the CI PostgreSQL, dropped afterwards."""
    import uuid

    import sqlalchemy as sa

    name = f"t_{uuid.uuid4().hex[:10]}"
    engine = sa.create_engine(postgres_url)
    with engine.begin() as connection:
        connection.execute(sa.text(f"CREATE SCHEMA {name}"))
    try:
        yield PostgresSchema(engine=engine, name=name, url=f"{postgres_url}?options=-csearch_path%3D{name}")
    finally:
        with engine.begin() as connection:
            connection.execute(sa.text(f"DROP SCHEMA {name} CASCADE"))
        engine.dispose()


# ------------------------------------------------------------------------------ the shared trained workspace
SHARED_PROCEDURES, SHARED_SEED = 4_000, 11
"""The shared registry: 24 sites, about 8,000 level rows, infection too rare for a model (the rare path)."""
NEW_BATCH_PROCEDURES, NEW_BATCH_SEED = 300, 99


def shared_config():
    """The training of the shared workspace: every part of the recipe (nested selection, internal-external
    validation, parameter replicates), with fewer folds, repeats and bootstrap rounds than the default."""
    from models.training import TrainingConfig

    return TrainingConfig(seed=7, n_folds=3, repeats=1, n_boot=30)


@dataclass(frozen=True)
class TrainedNights:
    """Two nights on one workspace, built once per test session (:func:`shared_nights`); read only.

    Night 1 ingests the 4,000-procedure registry, trains every outcome with :func:`shared_config` and publishes
    (``after_night_1``, run ``night-1``). Night 2 adds one new batch of 300 procedures without retraining and
    publishes incrementally (``after_night_2``, run ``night-2``). Use :func:`copy_workspace` before changing one."""

    night1: Path
    night2: Path
    after_night_1: Path
    after_night_2: Path
    first: object  # RunManifest of night 1
    second: object  # RunManifest of night 2
    new_batch: int

    @property
    def registry(self):
        """Night 1's registry (drawn again: the generator is deterministic and fast)."""
        from synth.generator import generate_registry

        return generate_registry(SHARED_PROCEDURES, seed=SHARED_SEED)


def new_batch(registry, *, batch: int):
    """A batch of new procedures (ids prefixed ``N``) numbered ``batch``, drawn like the registry."""
    from synth.generator import SyntheticRegistry, generate_registry

    new = generate_registry(NEW_BATCH_PROCEDURES, seed=NEW_BATCH_SEED)
    procedures = new.procedures.assign(procedure_id="N" + new.procedures["procedure_id"], extract_batch=batch)
    levels = new.levels.assign(procedure_id="N" + new.levels["procedure_id"])
    return SyntheticRegistry(
        procedures=pd.concat([registry.procedures, procedures], ignore_index=True),
        levels=pd.concat([registry.levels, levels], ignore_index=True),
        truth_levels=pd.concat([registry.truth_levels, new.truth_levels], ignore_index=True),
        truth_procedures=pd.concat([registry.truth_procedures, new.truth_procedures], ignore_index=True))


def _build_nights(folder: Path) -> None:
    import pickle
    import shutil

    from pipelines.job import run_job
    from records.schema import EXTRACT_BATCH
    from synth.generator import generate_registry, write_registry

    registry = generate_registry(SHARED_PROCEDURES, seed=SHARED_SEED)
    batch = int(registry.procedures[EXTRACT_BATCH].max()) + 1
    write_registry(registry, folder / "night1")
    write_registry(new_batch(registry, batch=batch), folder / "night2")
    first = run_job(folder / "night1", folder / "after-night-1", run_id="night-1", config=shared_config())
    shutil.copytree(folder / "after-night-1", folder / "after-night-2")
    second = run_job(folder / "night2", folder / "after-night-2", run_id="night-2", train=False)
    (folder / "nights.pickle").write_bytes(pickle.dumps((first.manifest, second.manifest, batch)))  # last: done


@pytest.fixture(scope="session")
def shared_nights(tmp_path_factory) -> TrainedNights:
    """The two nights of :class:`TrainedNights`, built once for all test workers: the first worker to ask builds
    them under a file lock, the others wait for it and reuse them (the workers' temporary folders share a parent
    that is the session's own)."""
    import fcntl
    import pickle
    import shutil

    base = tmp_path_factory.getbasetemp()
    folder = (base.parent if os.environ.get("PYTEST_XDIST_WORKER") else base) / "shared-trained-nights"
    with open(folder.with_name(folder.name + ".lock"), "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not (folder / "nights.pickle").is_file():  # none yet, or a build that failed: (re)build it
            shutil.rmtree(folder, ignore_errors=True)
            folder.mkdir()
            _build_nights(folder)
    first, second, batch = pickle.loads((folder / "nights.pickle").read_bytes())
    return TrainedNights(night1=folder / "night1", night2=folder / "night2", after_night_1=folder / "after-night-1",
                         after_night_2=folder / "after-night-2", first=first, second=second, new_batch=batch)


def copy_workspace(workspace: Path, into: Path) -> Path:
    """A private copy of a shared workspace, for a test that changes it."""
    import shutil

    target = into / "ws"
    shutil.copytree(workspace, target)
    return target


# ------------------------------------------------------------------------------ the order of the test files
SLOWEST_FIRST = ("tests/pipelines/test_golden.py", "tests/models/test_training.py", "tests/pipelines/test_cli.py",
                 "tests/pipelines/test_dask.py", "tests/pipelines/test_kill.py", "tests/hostile/test_faults.py")
"""The files that take longest (``make test`` prints the slowest tests), started first: with ``--dist loadfile`` a
long file that starts last runs alone on one worker while the other has nothing left. ``test_training`` is second so
that the shared trained workspace is built while the golden test runs."""


def pytest_collection_modifyitems(config, items) -> None:
    rank = {name: i for i, name in enumerate(SLOWEST_FIRST)}
    items.sort(key=lambda item: rank.get(item.nodeid.split("::", 1)[0], len(rank)))  # stable: the rest as collected
