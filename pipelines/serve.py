"""``cementrisk serve``: the nightly deployment of the flow ``cementrisk-run``, served until stopped.

Prefect cannot schedule on its ephemeral API, so without ``PREFECT_API_URL`` serve starts a loopback
``prefect server start`` of its own (home ``<workspace>/.prefect``, analytics off, its UI calling the API
on the port chosen, in its own process group) and stops it on exit. The pure parts (schedule checks, the
server's command and environment, the deployment's parameters) are small functions that start nothing;
only :func:`local_server`, :func:`wait_for_api` and :func:`serve_nightly` touch processes or the network.

Nothing here imports Prefect at module level: Prefect reads its settings when it is first imported, so
:func:`pipelines.prefect_env.configure_prefect` and ``PREFECT_API_URL`` must be set before
:func:`serve_nightly` is called.
"""

from __future__ import annotations

import asyncio
import contextlib
import importlib.util
import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
import zoneinfo
from collections.abc import Callable, Iterator, Mapping, MutableMapping
from dataclasses import dataclass
from datetime import datetime
from functools import lru_cache
from pathlib import Path
from types import FrameType, ModuleType
from typing import Any

FLOW_NAME = "cementrisk-run"
DEPLOYMENT_NAME = "nightly"
FULL_NAME = f"{FLOW_NAME}/{DEPLOYMENT_NAME}"
DEFAULT_CRON = "0 2 * * *"
DEFAULT_TIMEZONE = "UTC"
DEFAULT_LOCK_WAIT_SECONDS = 600.0
SERVER_START_TIMEOUT_SECONDS = 180.0
SERVER_STOP_TIMEOUT_SECONDS = 30.0
LOOPBACK = "127.0.0.1"
SERVER_LOG = "server.log"
NO_ANALYTICS = {"PREFECT_SERVER_ANALYTICS_ENABLED": "false", "DO_NOT_TRACK": "1"}


class ScheduleError(ValueError):
    """A cron expression or a time zone that Prefect would not accept."""


class ServerError(RuntimeError):
    """The Prefect server could not be started or reached."""


# ---------------------------------------------------------------------------------------------- schedule


def check_cron(cron: str) -> str:
    """The cron expression, stripped, if Prefect's scheduler accepts it.

    The same rule as Prefect's ``CronSchedule``: croniter must accept it, and croniter's random and
    hashed expressions (``R``, ``H``) are refused. Uses Prefect's vendored croniter without importing
    Prefect (which would freeze its settings before serve has set them).

    Raises
    ------
    ScheduleError
        The expression is not a valid cron string.
    """
    text = " ".join(str(cron).split())
    if not text:
        raise ScheduleError("the cron expression is empty (example: '0 2 * * *', 02:00 every day)")
    if any(part.casefold() in ("r", "h") for part in text.split()):
        raise ScheduleError(f"cron {text!r}: random and hashed expressions (R, H) are not supported")
    croniter = _croniter_module()
    if croniter is not None and not croniter.croniter.is_valid(text):
        raise ScheduleError(f"cron {text!r} is not a valid cron expression (minute hour day-of-month month "
                            "day-of-week, e.g. '0 2 * * *' for 02:00 every day)")
    return text


def check_timezone(name: str) -> str:
    """The IANA time zone name if the tz database knows it (as Prefect's schedules require).

    Raises
    ------
    ScheduleError
        The name is not an IANA time zone such as ``Europe/Zurich`` or ``UTC``.
    """
    text = str(name).strip()
    if text not in zoneinfo.available_timezones():
        raise ScheduleError(f"unknown time zone {text!r}: give an IANA name such as 'Europe/Zurich' or 'UTC'")
    return text


def next_run(cron: str, timezone: str, after: datetime | None = None) -> datetime | None:
    """When the schedule fires next after ``after`` (default now), in ``timezone``; None if unknown."""
    croniter = _croniter_module()
    if croniter is None:
        return None
    tz = zoneinfo.ZoneInfo(timezone)
    start = (after or datetime.now(tz)).astimezone(tz)
    return croniter.croniter(cron, start).get_next(datetime)


@lru_cache(maxsize=1)
def _croniter_module() -> ModuleType | None:
    """Prefect's vendored croniter, loaded from its file without importing the ``prefect`` package."""
    spec = importlib.util.find_spec("prefect")  # finds the package; does not import it
    locations = list(spec.submodule_search_locations or []) if spec else []
    for location in locations:
        path = Path(location) / "_vendor" / "croniter" / "croniter.py"
        if path.is_file():
            module_spec = importlib.util.spec_from_file_location("_cementrisk_croniter", path)
            if module_spec is None or module_spec.loader is None:
                continue
            module = importlib.util.module_from_spec(module_spec)
            module_spec.loader.exec_module(module)
            return module
    try:  # the croniter package, when Prefect stops vendoring it
        import croniter  # type: ignore[import-not-found]
    except ImportError:
        return None  # Prefect still checks the expression when the deployment is registered
    return croniter


# ------------------------------------------------------------------------------------- the deployment


SOURCE_ENV = "CEMENTRISK_SOURCE_URL"
"""serve's environment variable holding a source with a password; each run's parameter is ``env:`` and its name."""


def absolute_source(source: str | Path) -> str:
    """A path source made absolute (flow runs need not share serve's working directory); URLs and references
    (``env:NAME``) as given."""
    from records.sources import is_reference

    text = str(source)
    return text if "://" in text or is_reference(text) else str(Path(text).expanduser().resolve())


def deployment_parameters(source: str | Path, workspace: Path, *, train: bool = True, seed: int | None = None,
                          lock_wait_seconds: float = DEFAULT_LOCK_WAIT_SECONDS,
                          environ: MutableMapping[str, str] | None = None, keep_runs: int | None = None,
                          development_rows: int | None = None) -> dict[str, Any]:
    """The nightly run's parameters of ``run_flow``: no ``run_id`` (each run gets a fresh one), and never a password.

    ``keep_runs``: each night applies the retention policy at its end (the last N runs whole); None keeps everything.
    ``development_rows``: the models' development sample (None: the flow's default).

    A source that holds a password is put in ``environ`` under :data:`SOURCE_ENV` (serve passes its own environment,
    which the runs it starts inherit), and the parameter is the reference ``env:CEMENTRISK_SOURCE_URL``.

    Raises
    ------
    ValueError
        The source holds a password and no ``environ`` was given to hold it.
    """
    from records.sources import SOURCE_ENV_PREFIX, has_password

    text = absolute_source(source)
    if has_password(text):
        if environ is None:
            raise ValueError("the source holds a password: give an environment to hold it (environ=...)")
        environ[SOURCE_ENV] = text
        text = f"{SOURCE_ENV_PREFIX}{SOURCE_ENV}"
    parameters: dict[str, Any] = {"source": text,
                                  "workspace": str(Path(workspace).expanduser().resolve()),
                                  "retrain": False, "train": train, "lock_wait_seconds": float(lock_wait_seconds)}
    if seed is not None:
        parameters["seed"] = int(seed)
    if keep_runs is not None:
        parameters["keep_runs"] = int(keep_runs)
    if development_rows is not None:
        parameters["development_rows"] = int(development_rows)
    return parameters


# ---------------------------------------------------------------------------------- the local server


def free_port(host: str = LOOPBACK) -> int:
    """A TCP port on ``host`` that nothing listens on right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


def api_url(host: str, port: int) -> str:
    return f"http://{host}:{port}/api"


def ui_url(api: str) -> str:
    """The UI's address for an API URL (the UI is served at the API's root, without ``/api``)."""
    return api[: -len("/api")] if api.rstrip("/").endswith("/api") else api.rstrip("/")


def prefect_home(workspace: Path) -> Path:
    """Prefect's home in the workspace (created: :func:`workspace.runs.prefect_home`)."""
    from workspace.runs import prefect_home as home_of

    return home_of(Path(workspace).expanduser())


def ui_environment(api: str) -> dict[str, str]:
    """Prefect's settings for a server's UI calling ``api``: the UI's API URL under its Prefect 3 name and its
    older alias (both, so no stale value of either wins), the UI's own address, and the V1 UI at the UI's
    address. Prefect's V2 UI (the default of Prefect 3.9, at ``/v2``) starts the Amplitude analytics SDK on every
    page load whatever ``PREFECT_SERVER_ANALYTICS_ENABLED`` says, and so asks amplitude.com for its
    configuration; the V1 UI sends nothing off the machine."""
    return {"PREFECT_SERVER_UI_API_URL": api, "PREFECT_UI_API_URL": api, "PREFECT_UI_URL": ui_url(api),
            "PREFECT_SERVER_UI_V2_ENABLED": "false"}


def server_command(host: str, port: int, *, python: str | None = None) -> list[str]:
    """``prefect server start`` with this venv's Prefect, on ``host:port``, analytics off."""
    return [python or sys.executable, "-m", "prefect", "server", "start", "--host", host, "--port", str(port),
            "--analytics-off"]


def server_env(workspace: Path, base: Mapping[str, str] | None = None, *, api: str) -> dict[str, str]:
    """The server's environment: ``base`` (default ``os.environ``) with its home under the workspace,
    analytics off, and its UI calling ``api``, the server's own API URL (``http://host:port/api``; see
    :func:`ui_environment`).

    ``PREFECT_API_URL`` is dropped: the server is the API, it does not point elsewhere. ``--port`` only
    binds the server: the address its UI calls (served to the browser at ``/ui-settings``) is Prefect's
    setting ``server.ui.api_url``, which otherwise comes from ``PREFECT_SERVER_API_HOST`` and
    ``PREFECT_SERVER_API_PORT`` (``http://127.0.0.1:4200/api``) whatever port the server listens on.
    ``PREFECT_UI_URL`` (the UI's address in the server's notification links) is set to match.
    """
    env = dict(os.environ if base is None else base)
    env.pop("PREFECT_API_URL", None)
    env.update(NO_ANALYTICS)
    env.update(ui_environment(api))
    env["PREFECT_HOME"] = str(prefect_home(workspace))
    env.setdefault("PREFECT_SERVER_LOGGING_LEVEL", "WARNING")
    env["PYTHONUNBUFFERED"] = "1"
    return env


@dataclass(frozen=True)
class LocalServer:
    """A ``prefect server start`` that serve started and will stop."""

    process: subprocess.Popen
    api_url: str
    home: Path
    log: Path

    @property
    def pid(self) -> int:
        return self.process.pid

    @property
    def ui_url(self) -> str:
        return ui_url(self.api_url)


def api_healthy(api: str, *, timeout: float = 3.0) -> bool:
    """True when ``GET <api>/health`` answers 200 (proxies bypassed: the API is on loopback)."""
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    try:
        with opener.open(f"{api.rstrip('/')}/health", timeout=timeout) as response:
            return response.status == 200 and json.loads(response.read() or b"false") is True
    except (OSError, ValueError, urllib.error.URLError):
        return False


def wait_for_api(api: str, *, timeout: float = SERVER_START_TIMEOUT_SECONDS,
                 process: subprocess.Popen | None = None, log: Path | None = None,
                 interval: float = 0.5) -> float:
    """Wait until the API's health endpoint answers; return the seconds waited.

    Raises
    ------
    ServerError
        ``process`` exited first, or the API did not answer within ``timeout`` seconds.
    """
    start = time.monotonic()
    while True:
        if api_healthy(api):
            return time.monotonic() - start
        if process is not None and process.poll() is not None:
            raise ServerError(f"the Prefect server exited with code {process.returncode} before its API answered"
                              + _log_tail(log))
        if time.monotonic() - start > timeout:
            raise ServerError(f"the Prefect API at {api} did not answer within {timeout:.0f} s" + _log_tail(log))
        time.sleep(interval)


def _log_tail(log: Path | None, lines: int = 15) -> str:
    if log is None or not log.exists():
        return ""
    tail = log.read_text(encoding="utf-8", errors="replace").splitlines()[-lines:]
    return f"; the end of its log ({log}):\n" + "\n".join(tail) if tail else f"; log: {log}"


def _die_with_parent() -> Callable[[], None] | None:
    """Linux: a ``preexec_fn`` that has the kernel SIGTERM the child when serve dies without cleaning up
    (SIGKILL). libc is loaded here, in the parent; the child only makes the one system call."""
    if not sys.platform.startswith("linux"):
        return None
    try:
        import ctypes

        prctl = ctypes.CDLL(None, use_errno=True).prctl
    except (OSError, AttributeError):
        return None
    pr_set_pdeathsig = 1

    def set_parent_death_signal() -> None:  # pragma: no cover - runs in the child between fork and exec
        prctl(pr_set_pdeathsig, int(signal.SIGTERM))

    return set_parent_death_signal


def start_server(workspace: Path, *, host: str = LOOPBACK, port: int = 0,
                 timeout: float = SERVER_START_TIMEOUT_SECONDS) -> LocalServer:
    """Start ``prefect server start`` in its own process group and wait for its API.

    The server's output goes to ``<workspace>/.prefect/server.log``. On failure the process group is
    stopped before the error propagates.
    """
    home = prefect_home(workspace)
    log = home / SERVER_LOG
    port = port or free_port(host)
    api = api_url(host, port)
    with log.open("ab") as out:
        process = subprocess.Popen(server_command(host, port), env=server_env(workspace, api=api),
                                   stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT,
                                   start_new_session=True, preexec_fn=_die_with_parent())
    server = LocalServer(process=process, api_url=api, home=home, log=log)
    try:
        wait_for_api(server.api_url, timeout=timeout, process=process, log=log)
    except BaseException:
        stop_process_group(process)
        raise
    return server


def stop_process_group(process: subprocess.Popen, *, timeout: float = SERVER_STOP_TIMEOUT_SECONDS) -> int | None:
    """SIGTERM the process's group (it leads one), SIGKILL it after ``timeout`` s; return the exit code."""
    for sig, wait in ((signal.SIGTERM, timeout), (signal.SIGKILL, 10.0)):
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(process.pid, sig)
        try:
            return process.wait(timeout=wait)
        except subprocess.TimeoutExpired:
            continue
    return process.poll()


@contextlib.contextmanager
def local_server(workspace: Path, *, host: str = LOOPBACK, port: int = 0,
                 timeout: float = SERVER_START_TIMEOUT_SECONDS) -> Iterator[LocalServer]:
    """A loopback Prefect server for the duration of the block; stopped however the block ends."""
    server = start_server(workspace, host=host, port=port, timeout=timeout)
    try:
        yield server
    finally:
        stop_process_group(server.process)


@contextlib.contextmanager
def sigterm_as_interrupt() -> Iterator[None]:
    """SIGTERM raises KeyboardInterrupt inside the block, so ``finally`` clauses (stopping the server) run.

    Prefect's runner installs its own SIGTERM handler while it serves (a graceful stop, after which
    serving returns normally); this one covers the time before and after.
    """
    def interrupt(signum: int, frame: FrameType | None) -> None:
        raise KeyboardInterrupt(f"signal {signum}")

    if sys.platform == "win32":  # pragma: no cover
        yield
        return
    previous = signal.signal(signal.SIGTERM, interrupt)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def ignore_late_signals() -> None:
    """Once serve has stopped and cleaned up, a late SIGINT or SIGTERM must not turn the clean stop into a
    death by signal: Python resets its handlers to the defaults while it shuts down, and a signal in that
    window kills the process without a word. Ignored handlers survive the shutdown."""
    if sys.platform == "win32":  # pragma: no cover
        return
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, signal.SIG_IGN)


# ---------------------------------------------------------------------------------------------- serve


def serve_nightly(parameters: Mapping[str, Any], *, cron: str, timezone: str,
                  on_registered: Callable[[str], None] | None = None,
                  on_serving: Callable[[], None] | None = None, limit: int = 1) -> bool:
    """Register ``cementrisk-run/nightly`` on the cron schedule and serve it until stopped.

    Call only after :func:`pipelines.prefect_env.configure_prefect` and with ``PREFECT_API_URL`` set:
    this imports Prefect. ``on_registered`` gets the deployment id once the API has it; ``on_serving`` is
    called (from a helper thread) once the runner has started, which is when a SIGTERM becomes a graceful
    stop that pauses the schedule. At most ``limit`` runs execute at once (a run due while one is running
    waits in the queue); a run that finds the workspace locked by another process waits
    ``lock_wait_seconds`` for it. On SIGTERM or Ctrl-C the runner stops and this returns whether the schedule is
    paused: the runner pauses it on a graceful stop, and this pauses it again in case the stop came while the
    runner was starting, before its shutdown could run. The SIGTERM handler Prefect installs is removed again.
    """
    from prefect.deployments.runner import EntrypointType
    from prefect.exceptions import TerminationSignal
    from prefect.runner import Runner
    from prefect.schedules import Cron

    from pipelines.flows import run_flow

    deployment = run_flow.to_deployment(
        name=DEPLOYMENT_NAME, schedule=Cron(cron, timezone=timezone), parameters=dict(parameters),
        description="cementrisk nightly run: load new batches, check, register, refresh the models, publish.",
        tags=["cementrisk", "nightly"], entrypoint_type=EntrypointType.MODULE_PATH)
    runner = Runner(name=f"cementrisk-{DEPLOYMENT_NAME}", pause_on_shutdown=True, limit=limit)
    deployment_id = runner.add_deployment(deployment)
    if on_registered is not None:
        on_registered(str(deployment_id))
    finished = threading.Event()
    if on_serving is not None:
        threading.Thread(target=_when_started, args=(runner, finished, on_serving), daemon=True,
                         name="cementrisk-serving").start()
    previous = signal.getsignal(signal.SIGTERM)
    try:
        asyncio.run(runner.start())
    except (KeyboardInterrupt, TerminationSignal):
        pass
    except SystemExit as stop:
        # Prefect's SIGTERM handler exits when the signal lands while the runner is still starting
        if stop.code not in (0, None):
            raise
    finally:
        finished.set()
        if threading.current_thread() is threading.main_thread():
            signal.signal(signal.SIGTERM, previous)  # Prefect's handler would exit in the middle of our clean-up
    return pause_deployment(str(deployment_id))


def pause_deployment(deployment_id: str) -> bool:
    """Pause the deployment's schedule at the API (idempotent); False when the API could not be told."""
    from prefect.client.orchestration import get_client

    try:
        with get_client(sync_client=True) as client:
            client.pause_deployment(deployment_id)
    except Exception:  # noqa: BLE001 - the API may be gone; the caller says the schedule may still be active
        return False
    return True


def _when_started(runner: Any, finished: threading.Event, then: Callable[[], None]) -> None:
    """Call ``then`` once ``runner.started`` is true, unless serving ends first."""
    while not finished.wait(0.05):
        if getattr(runner, "started", False):
            then()
            return
