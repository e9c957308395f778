"""``cementrisk serve``: the schedule's checks and the server's settings without starting anything; then a
real Prefect server, the nightly deployment registered on it, a run triggered through the API, and serve's
own loopback server, each stopped with SIGTERM and leaving no process behind."""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from datetime import datetime, timezone
from pathlib import Path

import pytest
from typer.testing import CliRunner

from pipelines.cli import app
from pipelines.serve import (DEFAULT_LOCK_WAIT_SECONDS, LOOPBACK, SOURCE_ENV, ScheduleError, ServerError, absolute_source, api_url,
                             check_cron, check_timezone, deployment_parameters, free_port, next_run, server_command,
                             server_env, stop_process_group, ui_url, wait_for_api)

REPO = Path(__file__).resolve().parents[2]
SERVER_START_SECONDS = 180
RUN_SECONDS = 300


def _plain(output: str) -> str:
    """CLI output without the rich error panel's frame and line breaks."""
    return " ".join(re.sub(r"[│╭╮╰╯─]", " ", output).split())


# ------------------------------------------------------------------------------------ pure helpers


@pytest.mark.parametrize("cron", ["0 2 * * *", "*/15 1-5 * * mon-fri", "30 23 L * *", " 0  2 * * * "])
def test_valid_cron_is_accepted(cron):
    assert check_cron(cron) == " ".join(cron.split())


@pytest.mark.parametrize("cron", ["61 2 * * *", "0 2 * *", "every night", "", "H 2 * * *", "0 25 * * *"])
def test_invalid_cron_is_refused(cron):
    with pytest.raises(ScheduleError, match="cron"):
        check_cron(cron)


def test_timezone_must_be_an_iana_name():
    assert check_timezone("Europe/Zurich") == "Europe/Zurich"
    assert check_timezone("UTC") == "UTC"
    for bad in ("Mars/Olympus", "CEST", "", "europe/zurich"):
        with pytest.raises(ScheduleError, match="time zone"):
            check_timezone(bad)


def test_next_run_is_in_the_schedules_time_zone():
    after = datetime(2026, 7, 1, 12, 0, tzinfo=timezone.utc)
    upcoming = next_run("0 2 * * *", "Europe/Zurich", after)
    assert upcoming == datetime(2026, 7, 2, 0, 0, tzinfo=timezone.utc)  # 02:00 summer time in Zurich
    assert upcoming.utcoffset().total_seconds() == 2 * 3600


def test_server_env_has_its_home_under_the_workspace_and_analytics_off(tmp_path):
    base = {"PATH": "/usr/bin", "PREFECT_API_URL": "http://127.0.0.1:4200/api",
            "PREFECT_SERVER_ANALYTICS_ENABLED": "true", "DO_NOT_TRACK": "0", "PREFECT_HOME": "/elsewhere"}
    env = server_env(tmp_path / "ws", base, api=api_url(LOOPBACK, 4321))
    assert env["PREFECT_HOME"] == str((tmp_path / "ws").resolve() / ".prefect")
    assert env["PREFECT_SERVER_ANALYTICS_ENABLED"] == "false" and env["DO_NOT_TRACK"] == "1"
    assert "PREFECT_API_URL" not in env and env["PATH"] == "/usr/bin"
    assert base["DO_NOT_TRACK"] == "0"  # the caller's mapping is left alone


def test_server_env_points_the_ui_at_the_servers_own_port(tmp_path):
    # --port only binds the server; its UI would call Prefect's default port 4200 and find no API there
    base = {"PREFECT_UI_API_URL": "http://127.0.0.1:4200/api", "PREFECT_UI_URL": "http://127.0.0.1:4200"}
    env = server_env(tmp_path / "ws", base, api=api_url(LOOPBACK, 4321))
    assert env["PREFECT_SERVER_UI_API_URL"] == env["PREFECT_UI_API_URL"] == "http://127.0.0.1:4321/api"
    assert env["PREFECT_UI_URL"] == "http://127.0.0.1:4321"
    assert env["PREFECT_SERVER_UI_V2_ENABLED"] == "false"  # the V2 UI contacts amplitude.com whatever analytics say


def test_server_command_is_this_venvs_prefect_on_loopback():
    command = server_command(LOOPBACK, 4321)
    assert command[:3] == [sys.executable, "-m", "prefect"]
    assert command[3:5] == ["server", "start"]
    assert command[command.index("--host") + 1] == "127.0.0.1" and command[command.index("--port") + 1] == "4321"
    assert "--analytics-off" in command
    assert api_url(LOOPBACK, 4321) == "http://127.0.0.1:4321/api" and ui_url(api_url(LOOPBACK, 4321)) == \
        "http://127.0.0.1:4321"


def test_free_port_can_be_bound():
    port = free_port()
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((LOOPBACK, port))


def test_deployment_parameters_are_absolute_and_leave_the_run_id_to_each_run(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    parameters = deployment_parameters("exports", Path("ws"), train=False, seed=7)
    assert parameters == {"source": str(tmp_path.resolve() / "exports"), "workspace": str(tmp_path.resolve() / "ws"),
                          "retrain": False, "train": False, "seed": 7,
                          "lock_wait_seconds": DEFAULT_LOCK_WAIT_SECONDS}
    assert "run_id" not in parameters
    kept = deployment_parameters("exports", Path("ws"), keep_runs=30, development_rows=50_000)
    assert kept["keep_runs"] == 30 and kept["development_rows"] == 50_000
    import inspect

    from pipelines.flows import run_flow
    assert set(kept) <= set(inspect.signature(run_flow.fn).parameters)  # every one is a parameter of the flow
    url = "postgresql+psycopg://qi_reader@127.0.0.1:5432/warehouse"
    assert absolute_source(url) == url and deployment_parameters(url, Path("ws"))["source"] == url
    # a password never becomes a parameter (Prefect stores them): serve's environment holds it, the run a reference
    environ: dict[str, str] = {}
    secret = "postgresql+psycopg://qi_reader:s3cr%40t@127.0.0.1/warehouse?password=other"
    parameters = deployment_parameters(secret, Path("ws"), environ=environ)
    assert parameters["source"] == f"env:{SOURCE_ENV}" and environ == {SOURCE_ENV: secret}
    assert "s3cr" not in json.dumps(parameters) and "other" not in json.dumps(parameters)
    assert absolute_source("env:MY_SOURCE") == "env:MY_SOURCE"


def test_waiting_for_a_server_that_exits_or_never_answers_fails_clearly(tmp_path):
    dead = subprocess.Popen([sys.executable, "-c", "raise SystemExit(3)"])
    with pytest.raises(ServerError, match="exited with code 3"):
        wait_for_api(api_url(LOOPBACK, free_port()), process=dead, timeout=60)
    with pytest.raises(ServerError, match="did not answer within 1 s"):
        wait_for_api(api_url(LOOPBACK, free_port()), timeout=1)


def test_stopping_the_process_group_leaves_no_child_behind():
    parent = subprocess.Popen(
        [sys.executable, "-c", "import subprocess, sys, time\n"
                               "child = subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(600)'])\n"
                               "print(child.pid, flush=True)\ntime.sleep(600)"],
        stdout=subprocess.PIPE, text=True, start_new_session=True)
    child = int(parent.stdout.readline())
    assert _alive(child)
    stop_process_group(parent, timeout=10)
    assert parent.poll() is not None
    _eventually(lambda: not _alive(child), 10, "the child of the stopped process group is still running")


# ------------------------------------------------------------------------ the command line, refusing


def test_serve_refuses_a_bad_cron_with_exit_2_before_starting_anything(tmp_path):
    result = CliRunner().invoke(app, ["serve", "--cron", "61 2 * * *", "--workspace", str(tmp_path / "ws")])
    assert result.exit_code == 2
    assert "Invalid value for '--cron': cron '61 2 * * *' is not a valid cron expression" in _plain(result.output)
    assert not (tmp_path / "ws").exists()


def test_serve_refuses_an_unknown_time_zone_with_exit_2(tmp_path):
    result = CliRunner().invoke(app, ["serve", "--timezone", "Europe/Atlantis", "--workspace", str(tmp_path / "ws")])
    assert result.exit_code == 2
    assert "Invalid value for '--timezone': unknown time zone 'Europe/Atlantis'" in _plain(result.output)
    assert not (tmp_path / "ws").exists()


def test_serve_refuses_a_prefect_api_off_this_machine_with_exit_2(tmp_path, monkeypatch):
    monkeypatch.setenv("PREFECT_API_URL", "http://prefect.example.org:4200/api")
    result = CliRunner().invoke(app, ["serve", "--workspace", str(tmp_path / "ws")])
    assert result.exit_code == 2
    assert "on this machine (loopback)" in _plain(result.output) and "Traceback" not in result.output


def test_serve_says_so_when_the_given_prefect_server_does_not_answer(tmp_path):
    api = api_url(LOOPBACK, free_port())
    result = subprocess.run([sys.executable, "-m", "pipelines.cli", "serve", "--workspace", str(tmp_path / "ws"),
                             "--server-timeout", "1"], cwd=REPO, capture_output=True, text=True, timeout=120,
                            env=_clean_env(PREFECT_API_URL=api))
    assert result.returncode == 1
    assert f"the Prefect API at {api} did not answer within 1 s" in _plain(result.stderr)
    assert "Traceback" not in result.stderr


# ------------------------------------------------------------------------- real Prefect servers


def _alive(pid: int) -> bool:
    """The process exists and is not a zombie."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except (FileNotFoundError, ProcessLookupError):
        return False
    return stat.rsplit(")", 1)[1].split()[0] != "Z"


def _eventually(check, seconds: float, message: str, *, every: float = 0.5):
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        value = check()
        if value:
            return value
        time.sleep(every)
    raise AssertionError(f"{message} (after {seconds:.0f} s)")


def _api(method: str, url: str, body: dict | None = None, *, attempts: int = 8) -> dict | None:
    """One call to the Prefect REST API; None for 404 (proxies bypassed: the server is on loopback).

    Like Prefect's own client, retries 429/502/503 with backoff: a busy SQLite-backed server answers 503
    when its database is locked for a moment (a POST here carries an idempotency key, so retrying is safe).
    """
    request = urllib.request.Request(url, method=method, data=None if body is None else json.dumps(body).encode(),
                                     headers={"Content-Type": "application/json"})
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    for attempt in range(attempts):
        try:
            with opener.open(request, timeout=30) as response:
                return json.loads(response.read() or b"null")
        except urllib.error.HTTPError as error:
            if error.code == 404:
                return None
            if error.code not in (429, 502, 503) or attempt == attempts - 1:
                raise
        time.sleep(min(2 ** attempt, 10))
    raise AssertionError("unreachable")


def _healthy(api: str) -> bool:
    try:
        return _api("GET", f"{api}/health", attempts=1) is True
    except OSError:
        return False


def _clean_env(**extra: str) -> dict[str, str]:
    env = {key: value for key, value in os.environ.items() if not key.startswith("PREFECT_")}
    return {**env, "COLUMNS": "200", "PYTHONUNBUFFERED": "1", "DO_NOT_TRACK": "1",
            "PREFECT_SERVER_ANALYTICS_ENABLED": "false", **extra}


def _popen(command: list[str], log: Path, env: dict[str, str]) -> subprocess.Popen:
    with log.open("wb") as out:
        return subprocess.Popen(command, cwd=REPO, env=env, stdin=subprocess.DEVNULL, stdout=out,
                                stderr=subprocess.STDOUT, start_new_session=True)


def _kill_group(process: subprocess.Popen) -> None:
    """Last resort in a finally: SIGKILL the process group of a process the test started."""
    if process.poll() is None:
        try:
            os.killpg(process.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        process.wait(timeout=30)


def _show(*logs: Path) -> None:
    """Print the logs of the processes a test started; pytest shows them when the test fails."""
    for log in logs:
        if log.exists():
            print(f"----- {log}\n{log.read_text(errors='replace')[-5000:]}")


def _sigterm_and_wait(process: subprocess.Popen, seconds: float = 60) -> int:
    process.send_signal(signal.SIGTERM)
    return process.wait(timeout=seconds)


@pytest.fixture(scope="module")
def small_source(tmp_path_factory) -> Path:
    from synth.generator import generate_registry, write_registry

    folder = tmp_path_factory.mktemp("source")
    write_registry(generate_registry(400, seed=11), folder)
    return folder


@pytest.fixture
def prefect_server(tmp_path):
    """``prefect server start`` on a free loopback port with its own PREFECT_HOME; its API URL."""
    port = free_port()
    home = tmp_path / "prefect-server-home"
    home.mkdir()
    server = _popen([sys.executable, "-m", "prefect", "server", "start", "--host", LOOPBACK, "--port", str(port)],
                    tmp_path / "prefect-server.log", _clean_env(PREFECT_HOME=str(home)))
    api = f"http://{LOOPBACK}:{port}/api"
    try:
        _eventually(lambda: _healthy(api) or server.poll() is not None, SERVER_START_SECONDS,
                    "the Prefect server did not answer")
        assert server.poll() is None, (tmp_path / "prefect-server.log").read_text()
        yield api, server
    finally:
        _kill_group(server)


@pytest.mark.slow
def test_serve_registers_the_nightly_deployment_and_a_triggered_run_publishes(prefect_server, small_source, tmp_path):
    api, server = prefect_server
    workspace, log = tmp_path / "ws", tmp_path / "serve.log"
    serve = _popen([sys.executable, "-m", "pipelines.cli", "serve", "--cron", "0 2 * * *", "--timezone",
                    "Europe/Zurich", "--source", str(small_source), "--workspace", str(workspace), "--no-models"],
                   log, _clean_env(PREFECT_API_URL=api))
    try:
        # "serving" is printed after serve has announced the registration (the API knows the deployment a moment
        # before serve prints it)
        _eventually(lambda: "serving until stopped" in log.read_text() or serve.poll() is not None,
                    120, "serve did not register cementrisk-run/nightly and start serving")
        assert serve.poll() is None, log.read_text()
        deployment = _api("GET", f"{api}/deployments/name/cementrisk-run/nightly")
        assert deployment is not None, "cementrisk-run/nightly is not at the API"
        output = log.read_text()
        assert f"Prefect API: {api} (from PREFECT_API_URL)" in output
        assert "deployment cementrisk-run/nightly registered" in output and "Europe/Zurich" in output
        assert "Prefect server started" not in output  # it used the server it was given

        # the schedule and the parameters a nightly run gets: no run id (a fresh one per run), a lock wait
        (schedule,) = deployment["schedules"]
        assert schedule["active"] and schedule["schedule"]["cron"] == "0 2 * * *"
        assert schedule["schedule"]["timezone"] == "Europe/Zurich"
        assert deployment["parameters"]["workspace"] == str(workspace.resolve())
        assert deployment["parameters"]["lock_wait_seconds"] == 600 and deployment["parameters"]["train"] is False
        assert "run_id" not in deployment["parameters"] and not deployment["paused"]

        # a run triggered through the API is picked up by serve and publishes
        flow_run = _api("POST", f"{api}/deployments/{deployment['id']}/create_flow_run",
                        {"idempotency_key": f"test-serve-{tmp_path.name}"})
        final = _eventually(
            lambda: (state := _api("GET", f"{api}/flow_runs/{flow_run['id']}")["state_type"]) in
            ("COMPLETED", "FAILED", "CRASHED", "CANCELLED") and state,
            RUN_SECONDS, "the triggered flow run did not finish", every=2)
        assert final == "COMPLETED", log.read_text()
        published = json.loads((workspace / "published.json").read_text())
        assert (workspace / "runs" / published["run_id"] / "report.html").exists()
        manifest = json.loads((workspace / "runs" / published["run_id"] / "manifest.json").read_text())
        assert manifest["status"] == "ok" and manifest["tables"]["procedures"]["rows_accepted"] == 400

        # SIGTERM stops serve cleanly and pauses the schedule on the server it leaves running
        assert _sigterm_and_wait(serve) == 0, log.read_text()
        assert _api("GET", f"{api}/deployments/{deployment['id']}")["paused"] is True
        assert _healthy(api)
    finally:
        _kill_group(serve)
        _show(log, tmp_path / "prefect-server.log")
    _sigterm_and_wait(server)  # the server this test started stops on SIGTERM too
    assert not _alive(server.pid)


@pytest.mark.slow
def test_serve_without_an_api_url_runs_its_own_loopback_server_and_stops_it(small_source, tmp_path):
    workspace, log = tmp_path / "ws", tmp_path / "serve.log"
    serve = _popen([sys.executable, "-m", "pipelines.cli", "serve", "--source", str(small_source),
                    "--workspace", str(workspace), "--no-models"], log, _clean_env())
    server_pid = None
    try:
        _eventually(lambda: "serving until stopped" in log.read_text() or serve.poll() is not None,
                    SERVER_START_SECONDS + 60, "serve did not start serving")
        assert serve.poll() is None, log.read_text()
        output = log.read_text()
        api = re.search(r"Prefect API: (\S+)", output).group(1)
        server_pid = int(re.search(r"Prefect server started: pid (\d+)", output).group(1))
        assert api.startswith(f"http://{LOOPBACK}:") and _healthy(api)
        assert f"Prefect UI: {api.removesuffix('/api')}" in output
        # the server's home is under the workspace, and it runs with analytics off
        server_env = dict(item.split("=", 1) for item in
                          Path(f"/proc/{server_pid}/environ").read_text().split("\0") if "=" in item)
        assert server_env["PREFECT_HOME"] == str(workspace.resolve() / ".prefect")
        assert server_env["PREFECT_SERVER_ANALYTICS_ENABLED"] == "false" and server_env["DO_NOT_TRACK"] == "1"
        assert (workspace / ".prefect" / "prefect.db").exists()
        # the UI is told to call this API, not Prefect's default port (the browser check: test_serve_ui.py)
        assert _api("GET", f"{api.removesuffix('/api')}/ui-settings")["api_url"] == api
        assert _api("GET", f"{api}/deployments/name/cementrisk-run/nightly")["name"] == "nightly"

        assert _sigterm_and_wait(serve) == 0, log.read_text()
        assert not _alive(server_pid)
        assert not _healthy(api)
    finally:
        _kill_group(serve)
        _show(log, workspace / ".prefect" / "server.log")
        if server_pid is not None and _alive(server_pid):
            os.kill(server_pid, signal.SIGKILL)

    # started again on the same workspace it resumes the schedule; killed outright, its server goes with it
    log = tmp_path / "serve-again.log"
    serve = _popen([sys.executable, "-m", "pipelines.cli", "serve", "--source", str(small_source),
                    "--workspace", str(workspace), "--no-models"], log, _clean_env())
    server_pid = None
    try:
        _eventually(lambda: "serving until stopped" in log.read_text() or serve.poll() is not None,
                    SERVER_START_SECONDS, "serve did not start serving again")
        output = log.read_text()
        api = re.search(r"Prefect API: (\S+)", output).group(1)
        server_pid = int(re.search(r"Prefect server started: pid (\d+)", output).group(1))
        assert _api("GET", f"{api}/deployments/name/cementrisk-run/nightly")["paused"] is False
        serve.send_signal(signal.SIGKILL)
        serve.wait(timeout=30)
        _eventually(lambda: not _alive(server_pid), 30, "the server outlived a killed serve")
    finally:
        _kill_group(serve)
        _show(log, workspace / ".prefect" / "server.log")
        if server_pid is not None and _alive(server_pid):
            os.kill(server_pid, signal.SIGKILL)


def test_a_signal_after_serve_has_stopped_does_not_kill_it_during_shutdown():
    # Python resets its signal handlers while it shuts down; a SIGINT then used to end a clean stop as -2
    code = ("import os, signal, time; from pipelines.serve import ignore_late_signals; ignore_late_signals(); "
            "os.kill(os.getpid(), signal.SIGINT); os.kill(os.getpid(), signal.SIGTERM); time.sleep(0.2)")
    done = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, timeout=60)
    assert done.returncode == 0, done.stderr
    unprotected = subprocess.run([sys.executable, "-c", code.replace("ignore_late_signals(); ", "")], cwd=REPO,
                                 capture_output=True, timeout=60)
    assert unprotected.returncode != 0


def test_pausing_says_false_when_the_api_does_not_answer(tmp_path):
    # serve then says it could not confirm the pause, instead of claiming the schedule is paused
    env = _clean_env(PREFECT_API_URL=f"http://{LOOPBACK}:9/api", PREFECT_HOME=str(tmp_path / "home"))
    code = "from pipelines.serve import pause_deployment; print(pause_deployment('00000000-0000-0000-0000-000000000000'))"
    done = subprocess.run([sys.executable, "-c", code], cwd=REPO, env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0 and done.stdout.strip() == "False", done.stderr
