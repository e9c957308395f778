"""The flow's retry conditions: which failures of a task Prefect tries again."""

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
from pipelines.flows import _retry_on_transient_io, _retry_when_unavailable
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
print(json.dumps({{name: [_retry_when_unavailable(None, None, State(e)), _retry_on_transient_io(None, None, State(e))]
                  for name, e in cases.items()}}))
"""


def test_reads_retry_an_unreachable_source_and_writes_a_transient_io_error_only(tmp_path):
    import json

    done = subprocess.run([sys.executable, "-c", CHECK.format(repo=str(REPO), workspace=str(tmp_path))],
                          capture_output=True, text=True, timeout=120, cwd=REPO)
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout.strip().splitlines()[-1]) == {
        "unavailable": [True, False], "bad input": [False, False], "EIO": [False, True], "ENOSPC": [False, False],
        "unreadable": [True, False]}
