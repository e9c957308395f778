"""The flow's retry condition (which failures of a writing task Prefect tries again) and its failed states."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
CHECK = """
import errno, json, sys
sys.path.insert(0, {repo!r})
from pipelines.prefect_env import configure_prefect
configure_prefect({workspace!r})
from pipelines.flows import _retry_on_transient_io
from records.errors import SourceError, SourceUnavailable

class State:
    def __init__(self, error):
        self.error = error
    def result(self, raise_on_failure=False):
        if self.error is None:
            raise RuntimeError("the result cannot be read")
        return self.error

cases = {{"unavailable": SourceUnavailable("db down"), "bad input": SourceError("no table"),
          "EIO": OSError(errno.EIO, "io"), "ENOSPC": OSError(errno.ENOSPC, "full"), "unreadable": None}}
print(json.dumps({{name: _retry_on_transient_io(None, None, State(e))
                  for name, e in cases.items()}}))
"""


def test_writes_retry_a_transient_io_error_only(tmp_path):
    import json

    done = subprocess.run([sys.executable, "-c", CHECK.format(repo=str(REPO), workspace=str(tmp_path))],
                          capture_output=True, text=True, timeout=120, cwd=REPO)
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout.strip().splitlines()[-1]) == {
        "unavailable": False, "bad input": False, "EIO": True, "ENOSPC": False, "unreadable": False}


REFUSAL = """
import json, sys
sys.path.insert(0, {repo!r})
from pipelines.prefect_env import configure_prefect
configure_prefect({workspace!r})
from pipelines.flows import run_flow
from prefect.client.orchestration import get_client

state = run_flow(source={source!r}, workspace={workspace!r}, run_id="refused-run", train=False, return_state=True)
with get_client(sync_client=True) as client:
    flow_run = client.read_flow_run(state.state_details.flow_run_id)
    tasks = client.read_task_runs()
print(json.dumps({{"type": str(flow_run.state_type.value), "message": flow_run.state.message,
                  "error": type(state.result(raise_on_failure=False)).__name__,
                  "tasks": sorted({{str(t.state_type.value) for t in tasks}})}}))
"""


def test_a_refused_input_ends_the_flow_run_failed_with_its_reason_and_no_failed_task_or_traceback(tmp_path):
    import json

    source = REPO / "data" / "sample_bad" / "identifiers"
    done = subprocess.run([sys.executable, "-c", REFUSAL.format(repo=str(REPO), workspace=str(tmp_path / "ws"),
                                                                source=str(source))],
                          capture_output=True, text=True, timeout=300, cwd=REPO)
    assert done.returncode == 0, done.stderr[-3000:]
    outcome = json.loads(done.stdout.strip().splitlines()[-1])
    assert outcome["type"] == "FAILED" and outcome["message"].startswith("refused: batch refused: it carries identifiers")
    assert outcome["error"] == "IdentifierError"
    assert outcome["tasks"] == ["COMPLETED"]  # the guard task returned the refusal: no task failed
    assert "Traceback" not in done.stdout + done.stderr
    manifest = json.loads((tmp_path / "ws" / "runs" / "refused-run" / "manifest.json").read_text())
    assert manifest["status"] == "refused"
