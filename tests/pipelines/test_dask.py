"""The Dask task runner: the same input and seed give the same metrics.json as the default runner."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from synth.generator import generate_registry, write_registry
from tests.pipelines.test_cli import cementrisk

REPO = Path(__file__).resolve().parents[2]
BOTH_RUNNERS = """
import json, sys, time
from pathlib import Path
sys.path.insert(0, {repo!r})

def main():
    root = Path(sys.argv[1])
    from pipelines.prefect_env import configure_prefect
    configure_prefect(root / "default")
    from pipelines.flows import flow_with_runner
    times = {{}}
    for runner in ("default", "dask"):
        start = time.perf_counter()
        outcome = flow_with_runner(runner, dask_workers=2)(str(root / "src"), root / runner, run_id="night",
                                                           n_folds=3, n_boot=10)
        times[runner] = round(time.perf_counter() - start, 1)
        assert outcome.manifest.status == "ok", outcome.manifest.reason
    print(json.dumps(times))

if __name__ == "__main__":  # Dask's worker processes import this file again: they must not run it
    main()
"""


@pytest.mark.slow
def test_dask_and_default_runners_give_equal_metrics_json(tmp_path):
    write_registry(generate_registry(600, seed=21), tmp_path / "src")
    script = tmp_path / "both_runners.py"
    script.write_text(BOTH_RUNNERS.format(repo=str(REPO)))
    env = {**os.environ, "PREFECT_HOME": str(tmp_path / "prefect-home")}
    env.pop("PREFECT_API_URL", None)
    result = subprocess.run([sys.executable, str(script), str(tmp_path)], capture_output=True, text=True,
                            env=env, timeout=900)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    default, dask = (tmp_path / runner / "runs" / "night" for runner in ("default", "dask"))
    assert (default / "metrics.json").read_bytes() == (dask / "metrics.json").read_bytes()
    assert (default / "qi_units.csv").read_bytes() == (dask / "qi_units.csv").read_bytes()
    models = {runner: json.loads((tmp_path / runner / "runs" / "night" / "manifest.json").read_text())["models"]
              for runner in ("default", "dask")}
    assert models["default"]["trained"] and models["default"]["outcomes"] == models["dask"]["outcomes"]
    assert any(info["fitted"] for info in models["dask"]["outcomes"].values())


def test_the_dask_runner_needs_the_prefect_engine(tmp_path):
    result = cementrisk("run", "--source", str(tmp_path), "--workspace", str(tmp_path / "ws"), "--engine", "local",
                        "--task-runner", "dask")
    assert result.returncode == 2 and "--task-runner dask needs --engine prefect" in result.stderr
