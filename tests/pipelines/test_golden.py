"""The golden test: the main job on the sample (as `make run` runs it) writes metrics.json, qi_units.csv and the
submission byte for byte as recorded, the code version aside.

A refactor that claims to change no result must leave this test green. A change that is meant to change a result
re-records the fixture in the same commit, saying why: ``CEMENTRISK_RECORD_GOLDEN=1 .venv/bin/python -m pytest
tests/pipelines/test_golden.py`` writes it (and fails, so that a recording is never mistaken for a pass).
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

import pytest

from pipelines.job import run_job
from workspace.manifest import code_version

REPO = Path(__file__).resolve().parents[2]
SAMPLE = REPO / "data" / "sample"
FIXTURE = Path(__file__).parent / "fixtures" / "golden_sample.json"
RECORD = "CEMENTRISK_RECORD_GOLDEN"
RUN_ID = "20260101T000000Z-golden"


LISTS_OF_FILES = ("metrics.json", "submission/manifest.json", "submission/datapackage.json")  # they hold hashes


def fingerprints(run_dir: Path) -> dict[str, str]:
    """SHA-256 of each golden file of a run, with the code version (which changes with every commit) and the checkout's
    folder (in the source's path) blanked. The
    files that list the others' sizes and hashes (metrics.json lists the submission's) are taken without those (each
    listed file has its own fingerprint, and a file holding the code version changes its hash with every commit)."""
    version = code_version().encode()
    names = ["metrics.json", "qi_units.csv",
             *sorted(str(p.relative_to(run_dir)) for p in (run_dir / "submission").rglob("*") if p.is_file())]
    out = {}
    for name in names:
        data = (run_dir / name).read_bytes().replace(version, b"<code version>").replace(str(REPO).encode(), b"<repo>")
        if name in LISTS_OF_FILES:
            data = json.dumps(_without_sizes_and_hashes(json.loads(data)), sort_keys=True).encode()
        out[name] = hashlib.sha256(data).hexdigest()
    return out


def _without_sizes_and_hashes(value: object) -> object:
    if isinstance(value, dict):
        return {k: _without_sizes_and_hashes(v) for k, v in value.items() if k not in ("sha256", "hash", "bytes")}
    if isinstance(value, list):
        return [_without_sizes_and_hashes(v) for v in value]
    return value


@pytest.mark.slow
def test_the_sample_gives_the_recorded_outputs_byte_for_byte(tmp_path):
    workspace = tmp_path / "ws"
    run_job(SAMPLE, workspace, run_id=RUN_ID)
    found = fingerprints(workspace / "runs" / RUN_ID)
    if os.environ.get(RECORD):
        FIXTURE.write_text(json.dumps(found, indent=2, sort_keys=True) + "\n")
        pytest.fail(f"recorded {FIXTURE.name}: {len(found)} files ({RECORD} is set); run again without it")
    expected = json.loads(FIXTURE.read_text())
    assert sorted(found) == sorted(expected), "the run wrote other files than recorded"
    changed = sorted(name for name in expected if found[name] != expected[name])
    assert not changed, f"these outputs differ from the recorded ones: {', '.join(changed)}"
