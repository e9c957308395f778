"""Shared helpers of the hostile tests: running the CLI (in a subprocess, or in-process for cheap cases), writing
sources, and the checks every case makes (exit code, message, row accounting, leaks, published state)."""

from __future__ import annotations

import csv
import json
import os
import re
import sqlite3
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import quote, quote_plus

import pandas as pd
import pyarrow as pa
import pyarrow.dataset as ds
import pyarrow.parquet as pq

from tests.conftest import make_batch

REPO = Path(__file__).resolve().parents[2]
TABLES = ("procedures", "levels")
WIDTH = "400"  # wide enough that rich never folds a path or a message line


@dataclass
class Outcome:
    """What one CLI invocation gave: exit code and both streams (in a subprocess or in-process)."""

    returncode: int
    stdout: str
    stderr: str

    @property
    def out(self) -> str:
        return self.stdout + self.stderr

    @property
    def flat(self) -> str:
        """Both streams with every run of blanks and line breaks as one space (rich wraps long lines)."""
        return flat(self.out)

    def manifest_path(self) -> Path | None:
        """The manifest the CLI named (``manifest: PATH``), or None when it named none."""
        found = re.findall(r"manifest:\s+(\S+manifest\.json)", self.out)
        return Path(found[-1]) if found else None

    def manifest(self) -> dict:
        path = self.manifest_path()
        assert path is not None, f"the CLI named no manifest:\n{self.out}"
        assert path.is_file(), f"the CLI named a manifest that does not exist: {path}"
        return json.loads(path.read_text(encoding="utf-8"))


def flat(text: str) -> str:
    return " ".join(text.split())


def clean_env(extra: dict[str, str] | None = None) -> dict[str, str]:
    env = {**os.environ, "COLUMNS": WIDTH, **(extra or {})}
    for name in ("PREFECT_API_URL", "PREFECT_HOME", "CEMENTRISK_SOURCE_URL", "CEMENTRISK_WORKSPACE"):
        if not extra or name not in extra:
            env.pop(name, None)
    return env


def cli(*args: str, env: dict[str, str] | None = None, timeout: int = 400) -> Outcome:
    """The CLI as a user runs it: ``python -m pipelines.cli ...`` in a fresh process."""
    done = subprocess.run([sys.executable, "-m", "pipelines.cli", *map(str, args)], capture_output=True, text=True,
                          cwd=REPO, env=clean_env(env), timeout=timeout, errors="replace")
    return Outcome(done.returncode, done.stdout, done.stderr)


def driver(script: str, *args: str, timeout: int = 400) -> Outcome:
    """A Python script in a fresh process (a fault injected, then the CLI's ``main``)."""
    done = subprocess.run([sys.executable, "-c", script, *map(str, args)], capture_output=True, text=True, cwd=REPO,
                          env=clean_env(), timeout=timeout, errors="replace")
    return Outcome(done.returncode, done.stdout, done.stderr)


def cli_inprocess(*args: str) -> Outcome:
    """The same CLI in this process (typer's runner): the same code and streams, without the 6 s of imports. An
    exception other than the CLI's own exit would be a crash: it fails the test here."""
    from typer.testing import CliRunner

    from pipelines.cli import app

    result = CliRunner().invoke(app, [str(a) for a in args], env={"COLUMNS": WIDTH})
    if result.exception is not None and not isinstance(result.exception, SystemExit):
        import traceback

        raise AssertionError("the CLI crashed: " + "".join(traceback.format_exception(result.exception)))
    return Outcome(result.exit_code, result.stdout, result.stderr)


# --- sources ---------------------------------------------------------------------------------------------------

def frames_of(*batches) -> dict[str, pd.DataFrame]:
    return {t: pd.concat([b.tables()[t] for b in batches], ignore_index=True) for t in TABLES}


def write_csv(folder: Path, procedures: pd.DataFrame, levels: pd.DataFrame, *, quote_all: bool = False) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    for name, frame in (("procedures", procedures), ("levels", levels)):
        frame.to_csv(folder / f"{name}.csv", index=False,
                     quoting=csv.QUOTE_ALL if quote_all else csv.QUOTE_MINIMAL)
    return folder


def write_parquet(folder: Path, procedures: pd.DataFrame | pa.Table, levels: pd.DataFrame | pa.Table) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    for name, frame in (("procedures", procedures), ("levels", levels)):
        table = frame if isinstance(frame, pa.Table) else pa.Table.from_pandas(frame, preserve_index=False)
        pq.write_table(table, folder / f"{name}.parquet")
    return folder


def write_source(folder: Path, *batches, fmt: str = "csv") -> Path:
    frames = frames_of(*batches)
    if fmt == "csv":
        return write_csv(folder, frames["procedures"], frames["levels"])
    return write_parquet(folder, frames["procedures"], frames["levels"])


def write_sqlite(path: Path, procedures: pd.DataFrame, levels: pd.DataFrame) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    with sqlite3.connect(path) as connection:
        for name, frame in (("procedures", procedures), ("levels", levels)):
            frame.astype(object).where(frame.notna(), None).to_sql(name, connection, index=False)
    return path


# --- checks --------------------------------------------------------------------------------------------------

def published_base(root: Path) -> tuple[Path, str]:
    """A workspace under ``root`` with one published run (batch 1, three procedures): its folder and run id. Module
    fixtures make it once; tests work on copies."""
    outcome = cli_inprocess("run", "--source", write_source(root / "s1", make_batch(3, batch=1)), "--workspace",
                            root / "ws", "--engine", "local", "--no-models")
    assert outcome.returncode == 0, outcome.out
    return root / "ws", published(root / "ws")


def check_paths_exist(outcome: Outcome, root: Path) -> None:
    """Every path under ``root`` the CLI printed exists (as printed: a path rendered as something else does not)."""
    for found in re.findall(re.escape(str(root)) + r"[^\s;,()'\"]*", outcome.out):
        assert Path(found).exists() or Path(found.rstrip(":.")).exists(), f"printed path does not exist: {found}"


def check_no_traceback(outcome: Outcome) -> None:
    assert "Traceback" not in outcome.out, outcome.out


def check_accounting(manifest: dict) -> None:
    """rows in = accepted + quarantined, per table, always."""
    for name, counts in manifest["tables"].items():
        assert counts["rows_in"] == counts["rows_accepted"] + counts["rows_quarantined"], (name, counts)


def check_absent(text: str, *values: str) -> None:
    """None of ``values`` (a secret, a hostile input value) appears in ``text``."""
    for value in values:
        assert value not in text, f"{value!r} appears in the output"


def ledger(workspace: Path) -> dict:
    path = Path(workspace) / "registry" / "ledger.json"
    return json.loads(path.read_text(encoding="utf-8")) if path.exists() else {"batches": {}, "refused": {}}


def published(workspace: Path) -> str | None:
    path = Path(workspace) / "published.json"
    return json.loads(path.read_text(encoding="utf-8"))["run_id"] if path.exists() else None


def dataset_rows(workspace: Path, table: str = "procedures") -> pd.DataFrame:
    """The registry as any reader sees it: ``pyarrow.dataset`` over the table's folder (hive partitions)."""
    folder = Path(workspace) / "registry" / table
    if not folder.exists():
        return pd.DataFrame()
    return ds.dataset(folder, format="parquet", partitioning="hive").to_table().to_pandas()


def check_registry_is_the_ledger(workspace: Path) -> None:
    """Only committed rows are visible: per table and batch, the dataset holds exactly the ledger's registered rows,
    and no partition of a batch the ledger does not list as registered."""
    entries = ledger(workspace)["batches"]
    for table in TABLES:
        rows = dataset_rows(workspace, table)
        counts = ({} if rows.empty else
                  {str(int(b)): int(n) for b, n in rows["extract_batch"].value_counts().items()})
        expected = {b: int(e[table]) for b, e in entries.items() if int(e[table])}
        assert counts == expected, (table, counts, expected)
        folder = Path(workspace) / "registry" / table
        partitions = {p.name.split("=", 1)[1] for p in folder.glob("extract_batch=*")} if folder.exists() else set()
        assert partitions <= set(entries), (table, partitions, sorted(entries))


def secret_forms(secret: str) -> set[str]:
    """A secret as it may be written anywhere: plain, percent-encoded, and the pieces around each ``@`` (what a
    parser that stops at the first ``@`` would show), pieces of at least 5 characters."""
    forms = {secret, quote(secret, safe=""), quote_plus(secret), quote(secret)}
    for i, char in enumerate(secret):
        if char == "@":
            forms |= {secret[:i], secret[i + 1:]}
    return {form for form in forms if len(form) >= 5}


def files_holding(folder: Path, values: set[str]) -> list[tuple[str, str]]:
    """(file, value) for every file under ``folder`` whose bytes hold one of ``values`` (SQLite databases, WAL and
    Parquet included)."""
    found = []
    for path in sorted(Path(folder).rglob("*")):
        if path.is_file():
            data = path.read_bytes()
            found += [(str(path), value) for value in values if value.encode("utf-8") in data]
    return found
