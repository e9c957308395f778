"""A stateful property test of the batch ledger: random sequences of deliveries (any order, gaps, repeats, changed
re-sends, explicit corrections, poisoned rows, Parquet or CSV) and kills between and inside steps.

After every step:
- each batch received by a run that committed is registered exactly once with the content it was first sent with,
  or with the content of its latest explicit correction; a changed re-send without ``--replace-batch`` is refused
  with a reason on record and changes nothing;
- the registry's rows equal the ledger's counts, batch by batch, and no procedure id is registered twice;
- a reader of the published layout (``pyarrow.dataset`` over ``registry/procedures``) sees exactly the committed rows;
- rows without a valid batch number never create a ledger entry.
"""

from __future__ import annotations

import json
import shutil
import tempfile
from pathlib import Path

import pandas as pd
import pyarrow as pa
import pyarrow.dataset as ds
import pyarrow.parquet as pq
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, rule

from pipelines.ingest import run_ingest
from records.schema import EXTRACT_BATCH, LEVELS, PROCEDURE_ID, PROCEDURES
from tests.conftest import AS_OF_YEAR, make_batch
from workspace import transaction
from workspace.ledger import Ledger, load_ledger
from workspace.registry import read_registry_table
from workspace.transaction import STAGING_DIR, workspace_lock

BATCHES = (1, 2, 3, 4, 5, 6)
VERSIONS = (0, 1, 2)  # 0: as first made; 1: a cell changed; 2: a procedure added


def _version(batch: int, version: int) -> dict[str, pd.DataFrame]:
    made = make_batch(3 if version == 2 else 2, batch=batch, start=100 * batch)
    levels = made.levels.copy()
    if version == 1:
        levels.loc[0, "cement_volume_ml"] = 7.25
    return {"procedures": made.procedures, "levels": levels}


def _poison(start: int) -> dict[str, pd.DataFrame]:
    """Procedures whose batch number is no batch number of the contract (and their levels)."""
    made = make_batch(3, batch=1, start=start)
    procedures = made.procedures.copy()
    procedures[EXTRACT_BATCH] = pd.array([10**15, 0, None], dtype="Int64")
    return {"procedures": procedures, "levels": made.levels}


def _counts(version: int) -> tuple[int, int]:
    """The rows per table a version of a batch brings."""
    made = _version(1, version)
    return len(made["procedures"]), len(made["levels"])


class Aborted(Exception):
    """The step's run is stopped on purpose (a failure, or a kill emulated by keeping its staging folder)."""


class LedgerMachine(RuleBasedStateMachine):
    @initialize()
    def start(self) -> None:
        self.root = Path(tempfile.mkdtemp(prefix="ledger-"))
        self.workspace = self.root / "ws"
        self.registered: dict[int, int] = {}  # batch -> the version the registry must hold
        self.corrections: dict[int, int] = {}  # batch -> explicit corrections made
        self.refusals: dict[int, int] = {}  # batch -> changed re-sends refused
        self.step = 0

    def teardown(self) -> None:
        shutil.rmtree(self.root, ignore_errors=True)

    # --- one delivery -------------------------------------------------------------------------------------
    def _source(self, sent: dict[int, int], *, poison: bool, csv: bool) -> Path:
        self.step += 1
        parts = [_version(b, v) for b, v in sorted(sent.items())]
        if poison:
            parts.append(_poison(9000 + 10 * self.step))
        folder = self.root / f"src-{self.step}"
        folder.mkdir()
        for name in ("procedures", "levels"):
            frame = pd.concat([p[name] for p in parts], ignore_index=True)
            if csv:
                frame.to_csv(folder / f"{name}.csv", index=False)
            else:
                pq.write_table(pa.Table.from_pandas(frame, preserve_index=False), folder / f"{name}.parquet")
        return folder

    def _deliver(self, sent: dict[int, int], *, replace: tuple[int, ...] = (), poison: bool = False,
                 csv: bool = False, stop: str | None = None) -> None:
        source = self._source(sent, poison=poison, csv=csv)
        run_id = f"run-{self.step}"
        kept = None
        try:
            with workspace_lock(self.workspace, run_id=run_id):
                outcome = run_ingest(source, self.workspace, run_id=run_id, as_of_year=AS_OF_YEAR,
                                     replacing=replace)
                if stop is not None:
                    if stop == "kill":  # what a SIGKILL leaves: the staging folder, found by the next run
                        kept = self.root / f"kept-{self.step}"
                        shutil.copytree(self.workspace / STAGING_DIR / run_id, kept)
                    raise Aborted(stop)
        except Aborted:
            if kept is not None:
                shutil.copytree(kept, self.workspace / STAGING_DIR / run_id)
            return
        if outcome.refusal is not None:
            return  # a --replace-batch that cannot be made: nothing registered (checked by the invariants)
        for batch, version in sent.items():
            if batch in replace:
                self.registered[batch] = version
                self.corrections[batch] = self.corrections.get(batch, 0) + 1
            elif batch not in self.registered:
                self.registered[batch] = version
            elif self.registered[batch] != version and (csv or _counts(version) != _counts(self.registered[batch])):
                # a changed re-send is refused; a night read from Parquet compares row counts only (a cell changed
                # with the same counts is seen by a whole read: CSV here, --verify-registered elsewhere)
                self.refusals[batch] = self.refusals.get(batch, 0) + 1

    @rule(sent=st.dictionaries(st.sampled_from(BATCHES), st.sampled_from(VERSIONS), min_size=1, max_size=4),
          poison=st.booleans(), csv=st.booleans())
    def deliver(self, sent: dict[int, int], poison: bool, csv: bool) -> None:
        self._deliver(sent, poison=poison, csv=csv)

    @rule(data=st.data(), csv=st.booleans())
    def correct(self, data: st.DataObject, csv: bool) -> None:
        if not self.registered:
            return
        batch = data.draw(st.sampled_from(sorted(self.registered)))
        version = data.draw(st.sampled_from([v for v in VERSIONS if v != self.registered[batch]]))
        self._deliver({batch: version}, replace=(batch,), csv=csv)

    @rule(batch=st.sampled_from(BATCHES))
    def replace_what_cannot_be_replaced(self, batch: int) -> None:
        """--replace-batch of an unregistered batch, or with the registered content: refused, nothing changes."""
        version = self.registered.get(batch, 0)
        before = load_ledger(self.workspace).to_json() if self.workspace.exists() else None
        self._deliver({batch: version}, replace=(batch,))
        if before is not None:
            after = load_ledger(self.workspace)
            assert after.batches == load_ledger_from(before).batches

    @rule(sent=st.dictionaries(st.sampled_from(BATCHES), st.sampled_from(VERSIONS), min_size=1, max_size=3),
          stop=st.sampled_from(["fail", "kill"]))
    def interrupted(self, sent: dict[int, int], stop: str) -> None:
        self._deliver(sent, stop=stop)

    # --- what must always hold ---------------------------------------------------------------------------
    @invariant()
    def ledger_holds_what_was_received(self) -> None:
        if not self.workspace.exists():
            return
        with workspace_lock(self.workspace, run_id=f"probe-{self.step}"):  # recovers what a killed run left
            pass
        ledger = load_ledger(self.workspace)
        assert sorted(ledger.batches) == sorted(self.registered)
        assert set(ledger.refused) <= set(BATCHES)  # only valid batch numbers are ever on record
        for batch, version in self.registered.items():
            entry = ledger.batches[batch]
            expected = _version(batch, version)
            assert entry["rows_in"] == {"procedures": len(expected["procedures"]), "levels": len(expected["levels"]),
                                        "n_levels": int(expected["procedures"]["n_levels"].sum())}
            assert len(entry["corrections"]) == self.corrections.get(batch, 0)
            refused = [r for r in entry["refusals"] if "differs from the batch registered" in r["reason"]]
            assert len(refused) == self.refusals.get(batch, 0)

    @invariant()
    def registry_rows_equal_the_ledger_and_readers_see_committed_rows_only(self) -> None:
        if not self.workspace.exists():
            return
        ledger = load_ledger(self.workspace)
        procedures = read_registry_table(self.workspace, PROCEDURES, ledger=ledger)
        levels = read_registry_table(self.workspace, LEVELS, ledger=ledger)
        assert not procedures[PROCEDURE_ID].duplicated().any()
        levels = levels.assign(**{EXTRACT_BATCH: levels[PROCEDURE_ID].map(
            procedures.set_index(PROCEDURE_ID)[EXTRACT_BATCH])})
        assert levels[EXTRACT_BATCH].notna().all()  # no level without its registered procedure
        for batch, entry in ledger.batches.items():
            assert int((procedures[EXTRACT_BATCH] == batch).sum()) == entry["procedures"]
            assert int((levels[EXTRACT_BATCH] == batch).sum()) == entry["levels"]
            version = self.registered[batch]
            volume = levels.loc[(levels[EXTRACT_BATCH] == batch) & (levels[PROCEDURE_ID] == f"P{100 * batch:05d}")
                                & (levels["vertebra"] == "l1"), "cement_volume_ml"]
            assert volume.tolist() == [7.25 if version == 1 else 4.5]
        root = self.workspace / "registry" / "procedures"
        seen = ds.dataset(root, format="parquet", partitioning="hive").to_table() if root.exists() else None
        assert (0 if seen is None else seen.num_rows) == sum(e["procedures"] for e in ledger.batches.values())
        if seen is not None:
            assert sorted(set(seen[EXTRACT_BATCH].to_pylist())) == sorted(
                b for b, e in ledger.batches.items() if e["procedures"])
        assert not (self.workspace / STAGING_DIR).exists() or transaction.held_run(self.workspace) is None


def load_ledger_from(text: str) -> Ledger:
    payload = json.loads(text)
    return Ledger(batches={int(b): e for b, e in payload["batches"].items()})


LedgerMachine.TestCase.settings = settings(max_examples=20, stateful_step_count=8, deadline=None,
                                           suppress_health_check=[HealthCheck.too_slow])
test_batch_sequences = LedgerMachine.TestCase
