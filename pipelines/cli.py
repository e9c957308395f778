"""The ``cementrisk`` command line: run, serve, score, plan, report, validate, synth.

Exit codes: 0 ok, 2 bad input or a busy workspace, 3 source unreachable after retries, 1 internal error.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterator
from contextlib import contextmanager
from enum import Enum
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer
from rich.console import Console
from rich.table import Table
from rich.text import Text

# Only light modules at the top: `cementrisk --help` must not pay for pandas, scikit-learn or skops (a test holds
# that importing this module loads none of them); each command imports what it needs.
from models import DEFAULT_DEVELOPMENT_ROWS, DEFAULT_SEED, MIN_DEVELOPMENT_ROWS
from pipelines.serve import DEFAULT_CRON, DEFAULT_LOCK_WAIT_SECONDS, DEFAULT_TIMEZONE, SERVER_START_TIMEOUT_SECONDS
from records.errors import InputError, SourceUnavailable
from workspace.transaction import CommitIncomplete, WorkspaceBusy

if TYPE_CHECKING:
    from workspace.manifest import TableCounts

EXIT_OK = 0
EXIT_INTERNAL = 1
EXIT_BAD_INPUT = 2
EXIT_UNAVAILABLE = 3  # the source could not be reached after its retries: nothing registered, try again
REPO_ROOT = Path(__file__).resolve().parent.parent
DEFAULT_SOURCE = REPO_ROOT / "data" / "sample"
WORKSPACE_ENV = "CEMENTRISK_WORKSPACE"

app = typer.Typer(add_completion=False, no_args_is_help=True,
                  help="cementrisk: cement leakage and infection risk for kyphoplasty and vertebroplasty.")
_CONTROL = re.compile(r"[\x00-\x08\x0b-\x1f\x7f-\x9f]")


def _visible(text: str) -> str:
    """``text`` with every control character but tab and line feed written as ``\\xNN``: a header or a path holding
    an escape sequence is shown, never sent to the terminal (which would run it)."""
    return _CONTROL.sub(lambda m: f"\\x{ord(m.group(0)):02x}", text)


class _PlainConsole(Console):
    """A console that prints text as it is: no markup, no emoji codes (``:smile:`` in a path stays so), no
    highlighting, control characters made visible, and lines never folded (soft wrap: a log keeps every path and
    message on its line, whatever the width; tables still fit)."""

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(markup=False, emoji=False, highlight=False, soft_wrap=True, **kwargs)

    def print(self, *objects: Any, **kwargs: Any) -> None:  # noqa: A003 - rich's name
        super().print(*(_visible(o) if isinstance(o, str) else o for o in objects), **kwargs)


console = _PlainConsole()
errors = _PlainConsole(stderr=True)


class PrefectUnavailable(Exception):
    """The Prefect API a run was pointed at does not answer (nothing was started)."""


class Engine(str, Enum):
    prefect = "prefect"
    local = "local"


class TaskRunner(str, Enum):
    default = "default"
    dask = "dask"


def _default_workspace() -> Path:
    return Path(os.environ.get(WORKSPACE_ENV, "workspace"))


SourceOption = Annotated[str, typer.Option(
    "--source", "-s", help="Folder of procedures/levels (Parquet or CSV), a SQLite file or a SQLAlchemy URL.")]
WorkspaceOption = Annotated[str, typer.Option(
    "--workspace", "-w", help=f"Workspace folder (default ./workspace or ${WORKSPACE_ENV}).")]


@app.command()
def run(
    source: SourceOption = str(DEFAULT_SOURCE),
    workspace: WorkspaceOption = None,  # type: ignore[assignment]
    engine: Annotated[Engine, typer.Option(help="prefect: run as a Prefect flow (embedded API unless "
                                                "PREFECT_API_URL is set); local: the same steps without Prefect.")]
    = Engine.prefect,
    retrain: Annotated[bool, typer.Option("--retrain", help="Retrain the models even if the registry is unchanged.")]
    = False,
    models: Annotated[bool, typer.Option("--models/--no-models", help="Refresh the risk models after loading.")]
    = True,
    seed: Annotated[int, typer.Option(help="Seed of model development (folds, bootstrap, learners).")]
    = DEFAULT_SEED,
    wait: Annotated[float, typer.Option(min=0, help="Seconds to wait for another run on this workspace to "
                                                    "finish before refusing.")] = 60.0,
    task_runner: Annotated[TaskRunner, typer.Option(help="default: the fits run one after the other; dask: each "
                                                         "outcome's fit and its cross-validation fits run on a Dask "
                                                         "cluster through prefect-dask (with --engine prefect).")]
    = TaskRunner.default,
    dask_address: Annotated[str | None, typer.Option(help="Address of an existing Dask scheduler "
                                                          "(tcp://host:8786); default: a local cluster for the run.")]
    = None,
    replace_batch: Annotated[list[int] | None, typer.Option(
        "--replace-batch", min=1, help="Register this batch as the source now holds it, in place of the registered "
                                       "one (a correction; the registered rows are kept in the registry's history). "
                                       "Repeat for several batches.")] = None,
    keep_runs: Annotated[int | None, typer.Option(
        "--keep-runs", min=0, help="Retention at the end of the run: keep the last N runs whole (and the published "
                                   "and pinned ones); older runs keep their manifest only; model versions that no "
                                   "champion, scored store or kept run uses are removed. Default: keep everything.")]
    = None,
    verify_registered: Annotated[bool, typer.Option(
        "--verify-registered", help="Read every row of a database or Parquet-folder source and compare every "
                                    "registered batch it holds with its recorded content (a night compares their "
                                    "row counts only).")] = False,
    development_rows: Annotated[int, typer.Option(
        "--development-rows", min=0, help="Above this many eligible rows of an outcome, its models are "
                                          "cross-validated, chosen, calibrated and validated on a random sample of "
                                          "whole procedures of this many rows (at least 10,000) and the published "
                                          "model fitted on every row; 0: always every row.")]
    = DEFAULT_DEVELOPMENT_ROWS,
) -> None:
    """Load, check, quarantine and register a source; refresh the risk models; write runs/<run_id>/."""
    from workspace.manifest import new_run_id

    workspace = _checked_workspace(workspace)
    run_id = new_run_id()
    if task_runner is TaskRunner.dask and engine is Engine.local:
        _refused("--task-runner dask needs --engine prefect (the runner is Prefect's)")
        raise typer.Exit(EXIT_BAD_INPUT)
    if 0 < development_rows < MIN_DEVELOPMENT_ROWS:
        _refused(f"--development-rows must be 0 (every row) or at least {MIN_DEVELOPMENT_ROWS:,}; "
                 f"got {development_rows}")
        raise typer.Exit(EXIT_BAD_INPUT)
    manifest_file = Path(workspace) / "runs" / run_id / "manifest.json"
    try:
        reading = _visible(f"run {run_id}: reading, checking and registering {_shown(source)} ...")
        with _progress(reading) as show_step:
            outcome = _run(source, workspace, run_id, engine, retrain=retrain, train=models, seed=seed, wait=wait,
                           on_step=lambda step: show_step(f"run {run_id}: {_STEP_WORDS.get(step, step)} ..."),
                           task_runner=task_runner.value, dask_address=dask_address,
                           replacing=tuple(replace_batch or ()), verify_registered=verify_registered,
                           keep_runs=keep_runs, development_rows=development_rows or None)
    except WorkspaceBusy as error:
        _say("busy:", str(error))
        raise typer.Exit(EXIT_BAD_INPUT) from None
    except CommitIncomplete as error:  # not rolled back: the run stands, its last files are put in place later
        _say("incomplete:", str(error))
        errors.print("the run stands" + _manifest_note(manifest_file))
        raise typer.Exit(EXIT_INTERNAL) from None
    except SourceUnavailable as error:
        _say("source unavailable:", str(error))
        errors.print("nothing was registered" + _manifest_note(manifest_file))
        raise typer.Exit(EXIT_UNAVAILABLE) from None
    except PrefectUnavailable as error:
        _say("prefect unavailable:", str(error))
        errors.print("nothing was registered" + _manifest_note(manifest_file))
        raise typer.Exit(EXIT_UNAVAILABLE) from None
    except InputError as error:
        _refused(str(error))
        errors.print("nothing was registered" + _manifest_note(manifest_file))
        raise typer.Exit(EXIT_BAD_INPUT) from None
    except (Exception, SystemExit) as error:  # noqa: BLE001 - the CLI's last line: a message, never a traceback
        # a SystemExit from inside a step (a library calling sys.exit) failed the run too: never exit 0 for it
        _say("internal error:", f"{type(error).__name__}: {error}")
        errors.print("the run was rolled back" + _manifest_note(manifest_file))
        raise typer.Exit(EXIT_INTERNAL) from None
    manifest = outcome.manifest
    try:
        _print_outcome(outcome, workspace)
    except Exception as error:  # noqa: BLE001 - the run is done and published: printing must not undo that
        _say("note:", f"the run finished ({manifest.status}) but its summary could not be printed: "
                      f"{type(error).__name__}; see {outcome.manifest_path}")
    if manifest.batches_refused:
        for refusal in manifest.batches_refused:
            _refused(str(refusal["reason"]))
        others = ("the other batches were registered and published" if manifest.batches_loaded
                  else "no other batch was new")
        errors.print(f"{others}; manifest: {outcome.manifest_path}")
        raise typer.Exit(EXIT_BAD_INPUT)


def _print_outcome(outcome: Any, workspace: Path) -> None:
    manifest = outcome.manifest
    _print_counts(f"run {manifest.run_id}: {manifest.status}", manifest.tables)
    console.print("batches loaded: " + (", ".join(str(b) for b in manifest.batches_loaded) or "none (nothing new)"))
    if manifest.batches_replaced:
        console.print("batches replaced (the registered rows kept in registry/history/): "
                      + ", ".join(str(b) for b in manifest.batches_replaced))
    _print_models(manifest.models)
    registry = manifest.registry or {}
    # only paths that exist: a run that registered nothing new may have no registry or quarantine yet
    ledger_file = Path(workspace) / "registry" / "ledger.json"
    if ledger_file.is_file():
        console.print(f"registry:   {ledger_file.parent} ({registry.get('batches_after', '?')} batches "
                      f"registered; ledger {ledger_file})")
    if (Path(workspace) / "quarantine").is_dir():
        console.print(f"quarantine: {Path(workspace) / 'quarantine'}")
    console.print(f"manifest:   {outcome.manifest_path}")
    outputs = manifest.outputs or {}
    if (Path(workspace) / "published.json").is_file():
        console.print(f"published:  {outputs.get('published') or manifest.run_id} "
                      f"({Path(workspace) / 'published.json'})")
    for label, key in (("report", "report"), ("metrics", "metrics"), ("qi units", "qi_units"),
                       ("submission", "submission")):
        if outputs.get(key):
            console.print(f"{label + ':':<11} {outputs[key]}")
    for note in outputs.get("notes", []):
        console.print(f"note: {note}")


def _say(label: str, message: str) -> None:
    """One line on stderr: a bold label, then the message as plain text (never read as markup)."""
    errors.print(Text.assemble((label, "bold red"), " ", _visible(message)))


def _refused(message: str) -> None:
    _say("refused:", message)


def _manifest_note(path: Path) -> str:
    """'; manifest: PATH' when the run wrote its manifest; nothing when it did not get that far."""
    return f"; manifest: {path}" if path.is_file() else ""


def _shown(source: str) -> str:
    from records.sources import display_source

    return display_source(source)


def _checked_workspace(workspace: str | Path | None) -> Path:
    """The workspace folder (None: the default), refusing an empty name (an unset shell variable), a file or a
    folder under a file, and the folder of cementrisk's own ``workspace`` package (a run started in the source tree
    without ``--workspace``)."""
    if workspace is not None and not str(workspace).strip():
        _refused(f"--workspace is empty (an unset variable?); pass --workspace DIR (or set {WORKSPACE_ENV})")
        raise typer.Exit(EXIT_BAD_INPUT)
    if workspace is None and WORKSPACE_ENV in os.environ and not os.environ[WORKSPACE_ENV].strip():
        _refused(f"{WORKSPACE_ENV} is set but empty; set it to a folder or pass --workspace DIR")
        raise typer.Exit(EXIT_BAD_INPUT)
    folder = Path(workspace) if workspace is not None else _default_workspace()
    if (folder / "__init__.py").is_file() and (folder / "transaction.py").is_file():
        _refused(f"{folder} is cementrisk's own workspace package, not a workspace; pass --workspace DIR "
                 f"(or set {WORKSPACE_ENV})")
        raise typer.Exit(EXIT_BAD_INPUT)
    blocking = next((p for p in (folder, *folder.parents) if p.exists() and not p.is_dir()), None)
    if blocking is not None:
        where = "is a file" if blocking == folder else f"lies under {blocking}, which is a file"
        _refused(f"workspace {folder} {where}, not a folder; pass --workspace DIR")
        raise typer.Exit(EXIT_BAD_INPUT)
    return folder


_STEP_WORDS = {"read": "reading the source", "guard": "screening for identifiers",
               "validate": "checking the contract", "register": "registering accepted rows and the quarantine",
               "models": "training, calibrating and validating the risk models",
               "report": "scoring the registry and writing the report, QI table and submission",
               "retention": "pruning old runs and unused model versions"}


@contextmanager
def _progress(first: str) -> Iterator[Any]:
    """Show a run's progress: on a terminal, the current step with a spinner and each long task (an outcome's
    cross-validation fits, its bootstrap replicates, the scoring of the batches) as a bar with its counts and the
    time left, each finished task leaving one line; elsewhere (a log) one line per step and per finished task.
    Yields the function that shows a new step."""
    from models import progress

    if not console.is_terminal:
        console.print(first)
        with progress.reporting(progress.LineReporter(console.print, indent="  ")):
            yield console.print
        return

    from rich.progress import (BarColumn, MofNCompleteColumn, Progress, SpinnerColumn, TextColumn, TimeElapsedColumn,
                               TimeRemainingColumn)

    bars = Progress(SpinnerColumn(), TextColumn("{task.description}", markup=False), BarColumn(),
                    MofNCompleteColumn(), TimeElapsedColumn(), TextColumn("left"), TimeRemainingColumn(),
                    console=console, transient=True)
    step = bars.add_task(_visible(first), total=None)

    class Bars:
        def __init__(self) -> None:
            self.tasks: dict[int, Any] = {}

        def start(self, key: int, label: str, total: int) -> None:
            self.tasks[key] = (label, total, bars.add_task(_visible(f"  {label}"), total=max(total, 1)))

        def advance(self, key: int, done: int) -> None:
            bars.update(self.tasks[key][2], completed=done)

        def finish(self, key: int, seconds: float) -> None:
            label, total, task_id = self.tasks.pop(key)
            bars.remove_task(task_id)
            bars.console.print(f"  {label}: {total:,} done in {seconds:.1f} s")

    with bars, progress.reporting(Bars()):
        yield lambda text: bars.update(step, description=_visible(text))


def _run(source: str, workspace: Path, run_id: str, engine: Engine, *, retrain: bool, train: bool, seed: int,
         wait: float, on_step, task_runner: str = "default", dask_address: str | None = None,
         replacing: tuple[int, ...] = (), verify_registered: bool = False, keep_runs: int | None = None,
         development_rows: int | None = DEFAULT_DEVELOPMENT_ROWS):
    if engine is Engine.local:
        from models.training import TrainingConfig
        from pipelines.job import run_job
        from workspace.retention import RetentionPolicy

        return run_job(source, workspace, run_id=run_id,
                       config=TrainingConfig(seed=seed, development_rows=development_rows), retrain=retrain,
                       train=train, lock_wait_seconds=wait, on_step=on_step, replacing=replacing,
                       verify_registered=verify_registered,
                       retention=None if keep_runs is None else RetentionPolicy(keep_runs=keep_runs))
    from pipelines.prefect_env import PrefectConfigError, configure_prefect
    from records.sources import SOURCE_ENV_PREFIX, has_password

    try:
        configure_prefect(workspace)
    except PrefectConfigError as error:
        raise InputError(str(error)) from None
    from pipelines.flows import flow_with_runner

    if has_password(source):  # Prefect stores a flow's parameters: pass the source by reference
        from pipelines.serve import SOURCE_ENV

        os.environ[SOURCE_ENV] = source
        source = f"{SOURCE_ENV_PREFIX}{SOURCE_ENV}"
    on_step(f"run as the Prefect flow cementrisk-run ({task_runner} task runner)")
    run_flow = flow_with_runner(task_runner, dask_address=dask_address)
    try:
        state = run_flow(source=source, workspace=workspace, run_id=run_id, retrain=retrain, train=train, seed=seed,
                         lock_wait_seconds=wait, replace_batches=list(replacing),
                         verify_registered=verify_registered, keep_runs=keep_runs,
                         development_rows=development_rows, return_state=True)
    except RuntimeError as error:
        if "reach API" in str(error):  # PREFECT_API_URL names a server that does not answer: nothing was started
            api = _shown(os.environ.get("PREFECT_API_URL", "?"))
            raise PrefectUnavailable(f"the Prefect API at {api} does not answer; "
                                     "start it, or unset PREFECT_API_URL (or use --engine local)") from None
        raise
    result = state.result(raise_on_failure=False)
    if isinstance(result, BaseException):
        raise result
    return result


def _print_models(models: dict) -> None:
    if not models:
        return
    console.print(f"models: {'trained' if models.get('trained') else 'not trained'}: {models.get('reason')}")
    for name, info in models.get("outcomes", {}).items():
        if not info.get("fitted"):
            console.print(f"  {name}: no model (see metrics.json for why)")
        else:
            state = "champion" if info.get("champion") else "stored, not promoted by the gate"
            console.print(f"  {name}: {info.get('version')} ({state})")


def _checked_cron(value: str) -> str:
    from pipelines.serve import ScheduleError, check_cron

    try:
        return check_cron(value)
    except ScheduleError as error:
        raise typer.BadParameter(str(error)) from None


def _checked_timezone(value: str) -> str:
    from pipelines.serve import ScheduleError, check_timezone

    try:
        return check_timezone(value)
    except ScheduleError as error:
        raise typer.BadParameter(str(error)) from None


@app.command()
def serve(
    source: SourceOption = str(DEFAULT_SOURCE),
    workspace: WorkspaceOption = None,  # type: ignore[assignment]
    cron: Annotated[str, typer.Option(callback=_checked_cron, help="When the nightly run starts: a cron expression "
                                                                   "(minute hour day-of-month month day-of-week).")]
    = DEFAULT_CRON,
    timezone: Annotated[str, typer.Option(callback=_checked_timezone, help="IANA time zone of the schedule, e.g. "
                                                                           "Europe/Zurich.")] = DEFAULT_TIMEZONE,
    models: Annotated[bool, typer.Option("--models/--no-models", help="Refresh the risk models in each run.")]
    = True,
    seed: Annotated[int, typer.Option(help="Seed of model development (folds, bootstrap, learners).")]
    = DEFAULT_SEED,
    wait: Annotated[float, typer.Option(min=0, help="Seconds a run waits for another run on this workspace to "
                                                    "finish before refusing.")] = DEFAULT_LOCK_WAIT_SECONDS,
    port: Annotated[int, typer.Option(min=0, max=65535, help="Port of the loopback Prefect server started when "
                                                             "PREFECT_API_URL is not set (0: a free port).")] = 0,
    server_timeout: Annotated[float, typer.Option(min=1, help="Seconds to wait for the Prefect API to answer.")]
    = SERVER_START_TIMEOUT_SECONDS,
    keep_runs: Annotated[int | None, typer.Option(
        "--keep-runs", min=0, help="Retention at the end of each night: keep the last N runs whole (and the "
                                   "published and pinned ones); default: keep everything.")] = None,
) -> None:
    """Register the nightly deployment cementrisk-run/nightly on a cron schedule and serve it until stopped.

    Uses the Prefect server at PREFECT_API_URL (loopback only), else starts and stops a loopback one of its own.
    """
    from contextlib import ExitStack

    from pipelines import serve as nightly
    from records.sources import display_source, has_password

    workspace = _checked_workspace(workspace)
    secret = has_password(source)
    parameters = nightly.deployment_parameters(source, workspace, train=models, seed=seed, lock_wait_seconds=wait,
                                               environ=os.environ,  # the runs serve starts inherit its environment
                                               keep_runs=keep_runs)
    say = lambda text: console.print(text, soft_wrap=True, highlight=False)  # noqa: E731
    if secret:
        say(f"the source holds a password: each run reads it from serve's environment (${nightly.SOURCE_ENV}); "
            "Prefect stores only the reference. Runs started by another process need that variable set there.")
    registered: list[str] = []
    paused = False
    try:
        with nightly.sigterm_as_interrupt(), ExitStack() as stack:
            api = os.environ.get("PREFECT_API_URL", "")
            if api:
                _configure_prefect(workspace)
                nightly.wait_for_api(api, timeout=server_timeout)
                say(f"Prefect API: {api} (from PREFECT_API_URL)")
            else:
                with console.status(Text("starting a loopback Prefect server (the first start can take a minute) ...")):
                    server = stack.enter_context(nightly.local_server(workspace, port=port, timeout=server_timeout))
                api = os.environ["PREFECT_API_URL"] = server.api_url
                _configure_prefect(workspace)
                say(f"Prefect server started: pid {server.pid}, home {server.home}, "
                    f"log {server.log}; it stops when serve stops")
                say(f"Prefect API: {api}")
            ui = nightly.ui_url(api)
            say(f"Prefect UI: {ui}")

            def announce(deployment_id: str) -> None:
                registered.append(deployment_id)
                upcoming = nightly.next_run(cron, timezone)
                when = f"; next run {upcoming:%Y-%m-%d %H:%M %Z}" if upcoming else ""
                say(f"deployment {nightly.FULL_NAME} registered (id {deployment_id}): cron '{cron}' "
                    f"({timezone}){when}")
                say(f"  each run: source {display_source(parameters['source'])}, workspace "
                    f"{parameters['workspace']}, models {'on' if models else 'off'}, waits up to {wait:g} s "
                    "for a busy workspace")
                say(f"  in the UI: {ui}/deployments/deployment/{deployment_id}")
                say(f"  run it now: PREFECT_API_URL={api} prefect deployment run '{nightly.FULL_NAME}'")

            paused = nightly.serve_nightly(
                parameters, cron=cron, timezone=timezone, on_registered=announce,
                on_serving=lambda: say("serving until stopped (Ctrl-C or SIGTERM) ..."))
    except KeyboardInterrupt:
        pass
    except InputError as error:
        _refused(str(error))
        raise typer.Exit(EXIT_BAD_INPUT) from None
    except nightly.ServerError as error:
        _say("Prefect server:", str(error))
        raise typer.Exit(EXIT_INTERNAL) from None
    except Exception as error:  # noqa: BLE001 - the CLI's last line: a message, never a traceback
        _say("internal error:", f"{type(error).__name__}: {error}")
        raise typer.Exit(EXIT_INTERNAL) from None
    if not registered:
        console.print("stopped")
    elif paused:
        console.print("stopped: the schedule is paused until serve runs again")
    else:
        console.print(f"stopped; could not confirm that the schedule of {nightly.FULL_NAME} is paused: its runs may "
                      "stay due until serve runs again")
    nightly.ignore_late_signals()


def _configure_prefect(workspace: Path) -> None:
    """Prefect's settings for this workspace, before Prefect is imported; a non-loopback API is bad input."""
    from pipelines.prefect_env import PrefectConfigError, configure_prefect

    try:
        configure_prefect(workspace)
    except PrefectConfigError as error:
        raise InputError(str(error)) from None


class LeakStructure(str, Enum):
    literature = "literature"
    nonlinear = "nonlinear"


class OutputFormat(str, Enum):
    parquet = "parquet"
    csv = "csv"


@contextmanager
def _exit_codes(*, refused: tuple[type[Exception], ...]) -> Iterator[None]:
    """Bad input -> exit 2; an unreachable source -> exit 3; anything else -> exit 1; a message, never a traceback."""
    try:
        yield
    except refused as error:
        _refused(str(error))
        raise typer.Exit(EXIT_BAD_INPUT) from None
    except SourceUnavailable as error:
        _say("source unavailable:", str(error))
        raise typer.Exit(EXIT_UNAVAILABLE) from None
    except Exception as error:  # noqa: BLE001 - the CLI's last line: a message, never a traceback
        _say("internal error:", f"{type(error).__name__}: {error}")
        raise typer.Exit(EXIT_INTERNAL) from None


@app.command()
def score(
    input: Annotated[str, typer.Option("--input", "-i", help="Records to score (contract format; outcome "
                                                              "columns may be absent): folder, SQLite or URL.")],
    output: Annotated[Path, typer.Option("--output", "-o", help="Folder for levels.<ext> and procedures.<ext>.")],
    workspace: WorkspaceOption = None,  # type: ignore[assignment]
    fmt: Annotated[OutputFormat, typer.Option("--format", help="Output format.")] = OutputFormat.parquet,
) -> None:
    """Score new records with the published (champion) models: calibrated risks per level and procedure."""
    from models.scoring import score_source
    from models.store import ModelStoreError

    workspace = _checked_workspace(workspace)
    scoring = Text(_visible(f"scoring {_shown(input)} ..."))
    with _exit_codes(refused=(InputError, ModelStoreError)), console.status(scoring):
        result = score_source(input, output, workspace=workspace, fmt=fmt.value)
    _print_counts(f"score {_shown(input)}", result.counts)
    for note in result.notes:
        console.print(f"note: {note}")
    console.print("models: " + ", ".join(f"{k} {v or '-'}" for k, v in result.versions.items()))
    for path in result.paths:
        console.print(f"  {path}")


@app.command()
def plan(
    case: Annotated[Path, typer.Option("--case", "-c", help="One planned procedure as JSON (patient and fracture "
                                                             "fields of the contract, no outcome).")],
    workspace: WorkspaceOption = None,  # type: ignore[assignment]
    out: Annotated[Path | None, typer.Option(help="Where to write the HTML page (default: next to the case, "
                                                  "<case>.plan.html).")] = None,
) -> None:
    """Leakage risks of a planned case across cement volumes, viscosities and approaches, with uncertainty."""
    from models.store import ModelStoreError
    from reports.planner import load_case, plan_case, plan_text, render_plan_html

    workspace = _checked_workspace(workspace)
    target = out or case.with_suffix(".plan.html")
    with _exit_codes(refused=(InputError, ModelStoreError)):
        result = plan_case(load_case(case), workspace=workspace)
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(render_plan_html(result), encoding="utf-8")
    console.print(plan_text(result), markup=False, highlight=False)
    console.print(f"page: {target}")


class Audience(str, Enum):
    internal = "internal"
    published = "published"


@app.command()
def report(
    workspace: WorkspaceOption = None,  # type: ignore[assignment]
    audience: Annotated[Audience, typer.Option(help="internal: exact counts and every verdict, each page marked "
                                                    "'internal: not for release', written to internal/<run_id>/ "
                                                    "(never published, never in a submission); published: "
                                                    "suppressed as the run's own report, to reports/<run_id>/.")]
    = Audience.internal,
    alert: Annotated[float, typer.Option(help="Two-sided level of the alert limits.")] = 0.95,
    alarm: Annotated[float, typer.Option(help="Two-sided level of the alarm limits (above --alert).")] = 0.998,
    wait: Annotated[float, typer.Option(min=0, help="Seconds to wait for a run on this workspace to finish.")]
    = 60.0,
) -> None:
    """The published run's QI report again, for the QI team (internal) or with other alert and alarm limits."""
    from reports.publish import report_for_audience
    from workspace.manifest import new_run_id
    from workspace.transaction import workspace_lock

    workspace = _checked_workspace(workspace)
    if not (0 < alert < alarm < 1):
        _refused(f"--alert and --alarm must be levels with 0 < alert < alarm < 1; got {alert:g} and {alarm:g}")
        raise typer.Exit(EXIT_BAD_INPUT)
    with _exit_codes(refused=(InputError, FileNotFoundError, WorkspaceBusy)), \
            console.status(Text(f"writing the {audience.value} report ...")):
        with workspace_lock(workspace, run_id=new_run_id(), wait_seconds=wait):
            result = report_for_audience(workspace, audience=audience.value, limits=(alert, alarm))
    if audience is Audience.internal:
        console.print("internal: not for release (exact counts and every verdict)")
    for label, path in (("report", result.report), ("metrics", result.metrics), ("qi units", result.qi_units)):
        console.print(f"{label + ':':<11} {path}")


@app.command()
def prune(
    workspace: WorkspaceOption = None,  # type: ignore[assignment]
    keep_runs: Annotated[int, typer.Option("--keep-runs", min=0, help="Keep the last N runs whole (and the published "
                                                                      "and pinned ones); older runs keep their "
                                                                      "manifest only.")] = 30,
    keep_days: Annotated[float, typer.Option("--keep-days", min=0, help="Also keep whole every run started within "
                                                                        "this many days.")] = 0.0,
    pin: Annotated[list[str] | None, typer.Option("--pin", help="Keep this run whole for as long as the workspace "
                                                               "lives (a registry received its submission); repeat "
                                                               "for several. Needs --reason.")] = None,
    reason: Annotated[str | None, typer.Option(help="Why the runs given with --pin are kept (kept in their "
                                                    "keep.json).")] = None,
    dry_run: Annotated[bool, typer.Option("--dry-run", help="Say what would be removed and why; remove nothing.")]
    = False,
    wait: Annotated[float, typer.Option(min=0, help="Seconds to wait for a run on this workspace to finish.")]
    = 60.0,
) -> None:
    """Apply the retention policy now: old runs' outputs and unused model versions go; the registry, quarantine,
    the scored store, the published run, champions and pinned runs never do."""
    import datetime as dt

    from workspace.retention import RetentionError, RetentionPolicy, pin_run, plan_retention, prune_workspace, \
        read_inventory

    workspace = _checked_workspace(workspace)
    if pin and not (reason or "").strip():
        _refused("--pin needs --reason: say why the run is kept (e.g. the registry received its submission)")
        raise typer.Exit(EXIT_BAD_INPUT)
    if not workspace.is_dir():
        _refused(f"the workspace {workspace} is not a folder: nothing to prune")
        raise typer.Exit(EXIT_BAD_INPUT)
    policy = RetentionPolicy(keep_runs=keep_runs, keep_days=keep_days)
    with _exit_codes(refused=(FileNotFoundError, WorkspaceBusy, RetentionError)):
        for run_id in pin or ():
            console.print(f"pinned:    {pin_run(workspace, run_id, reason=(reason or '').strip())}")
        if dry_run:
            plan = plan_retention(read_inventory(workspace), policy, now=dt.datetime.now(dt.timezone.utc))
            for removal in plan.removals:
                console.print(Text(f"would remove {removal.path}: {removal.reason}"))
            console.print(f"dry run: {len(plan.removals)} paths would be removed, {len(plan.kept)} runs and model "
                          "versions kept; nothing was removed")
            return
        report = prune_workspace(workspace, policy, wait_seconds=wait).to_dict()
    console.print(Text(f"runs pruned: {len(report['runs_pruned'])}, model versions removed: "
                       f"{len(report['models_pruned'])}, runs kept whole: {report['runs_kept']}, "
                       f"{report['bytes_freed'] / 1e6:.1f} MB freed in {report['seconds']:.2f} s"))
    for note in report["notes"]:
        console.print(Text(f"note: {note}"))


@app.command()
def validate(
    source: SourceOption = str(DEFAULT_SOURCE),
    workspace: Annotated[str | None, typer.Option(
        "--workspace", "-w", help="Also check against this workspace's registry (read only).")] = None,
    show: Annotated[int, typer.Option(help="How many quarantined rows to list per table.")] = 10,
) -> None:
    """Dry run: say what would be accepted and why rows would be quarantined. Writes nothing."""
    from pipelines.ingest import check_batch, load_batch, screen_batch
    from records.validation import REASON
    from workspace.manifest import TableCounts

    folder = _checked_workspace(workspace) if workspace is not None else None
    with _exit_codes(refused=(InputError,)), console.status(Text(_visible(f"checking {_shown(source)} ..."))):
        registry = folder if folder is not None and folder.exists() else None
        raw = load_batch(source, workspace=registry)
        screen_batch(raw)
        result = check_batch(raw, workspace=registry)
        rules = result.reason_counts()
    _print_counts(f"validate {_shown(source)} (dry run, nothing written)", {
        name: TableCounts(rows_in=outcome.rows_in, rows_accepted=len(outcome.accepted),
                          rows_quarantined=len(outcome.quarantined), rows_skipped_registered=outcome.skipped,
                          rows_refused=outcome.refused, columns_dropped=list(outcome.dropped_columns),
                          quarantine_rules=rules[name])
        for name, outcome in result.tables().items()})
    for name, outcome in result.tables().items():
        for row in outcome.quarantined.head(show).itertuples(index=False):
            console.print(f"  {name} row {getattr(row, 'source_row')}: {getattr(row, REASON)}")
    for change in result.conflicts.values():
        _refused(change.describe())
    if result.conflicts:
        raise typer.Exit(EXIT_BAD_INPUT)


@app.command()
def synth(
    procedures: Annotated[int, typer.Option("--procedures", "-n", min=1, help="Number of procedures.")] = 20_000,
    seed: Annotated[int, typer.Option(help="Random seed.")] = 20261125,
    out: Annotated[Path, typer.Option(help="Output folder (procedures.parquet, levels.parquet, truth/).")]
    = Path("synthetic"),
    leak_structure: Annotated[LeakStructure, typer.Option(
        "--leak-structure", help="Leakage model of the truth: literature (main effects) or nonlinear (fill-ratio "
                                 "threshold, viscosity interactions).")] = LeakStructure.literature,
) -> None:
    """Write a synthetic, de-identified registry in the contract, with literature-based risks; truth/ holds the
    true and the observable-only risks (the truth given what the records hold)."""
    from synth.generator import generate_registry, write_registry

    with _exit_codes(refused=()), console.status(Text(f"generating {procedures:,} procedures (seed {seed}) ...")):
        registry = generate_registry(procedures, seed=seed, leak_structure=leak_structure.value)
        paths = write_registry(registry, out)
    console.print(f"{len(registry.procedures):,} procedures, {len(registry.levels):,} levels written:")
    for path in paths.values():
        console.print(f"  {path}")


def _print_counts(title: str, tables: dict[str, TableCounts]) -> None:
    """Row accounting per table and, where rows were quarantined, how many each rule caught."""
    table = Table(title=_visible(title))
    for column in ("table", "rows in", "accepted", "quarantined", "skipped (registered)", "refused",
                   "columns dropped"):
        table.add_column(column)
    for name, counts in tables.items():
        table.add_row(name, str(counts.rows_in), str(counts.rows_accepted), str(counts.rows_quarantined),
                      str(counts.rows_skipped_registered), str(counts.rows_refused),
                      _visible(", ".join(counts.columns_dropped)) or "-")
    console.print(table)
    for name, counts in tables.items():
        if counts.columns_dropped:  # in full: a narrow table cuts its cells
            console.print(f"{name} columns dropped (not in the contract): " + ", ".join(counts.columns_dropped))
        if counts.quarantine_rules:
            console.print(f"{name} rows quarantined by rule: "
                          + ", ".join(f"{rule} {n}" for rule, n in counts.quarantine_rules.items()))


def main() -> None:
    app()


if __name__ == "__main__":
    main()
