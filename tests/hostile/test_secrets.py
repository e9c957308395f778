"""Issue 9, class 4 (secrets): a source's password is never written or printed in clear: not in the manifest,
metrics.json, the report, stdout/stderr, the logs, nor Prefect's database (flow-run parameters, states,
artifacts); the Prefect flow gets the source by reference (``env:CEMENTRISK_SOURCE_URL``), never as a plain
parameter.

The Prefect engine: one fresh process (``driver``) runs the CLI's ``run`` three times on one workspace against
PostgreSQL (a password with unencoded reserved characters in the userinfo; a password in a libpq ``conninfo`` query
parameter; a refused batch from a source with a password); then every file of the workspace, Prefect's SQLite
database and its WAL included, is grepped for each password in every form it may take. The local engine and
``validate`` run in-process, one fresh PostgreSQL schema per case (trust auth: any password is accepted).
"""

from __future__ import annotations

import json
import re
import sqlite3
import textwrap
import uuid
from pathlib import Path

import pytest

from tests.conftest import make_batch, postgres_test_url
from tests.hostile._support import (
    Outcome,
    check_absent,
    check_accounting,
    check_no_traceback,
    cli_inprocess,
    driver,
    files_holding,
    frames_of,
    published,
    secret_forms,
)

LOCAL = ("--engine", "local", "--no-models")
HOST = "127.0.0.1:5432"
SOURCE_REF = "env:CEMENTRISK_SOURCE_URL"


def _authority() -> tuple[str, str, str]:
    """scheme, user, host:port/database of the test database (the URL is ``scheme://user@host:port/database``)."""
    url = postgres_test_url()
    scheme, rest = url.split("://", 1)
    user, _, where = rest.rpartition("@")
    return scheme, user.split(":", 1)[0] or "postgres", where


def _url(password: str | None = None, *, schema: str, query: str = "") -> str:
    """A source URL for ``schema``, the password written into the userinfo as given (never encoded here)."""
    scheme, user, where = _authority()
    userinfo = f"{user}:{password}" if password is not None else user
    return f"{scheme}://{userinfo}@{where}?options=-csearch_path%3D{schema}{query}"


def all_forms(secret: str) -> set[str]:
    """secret_forms plus SQLAlchemy's rendering of the password (it keeps some characters ``quote`` encodes)."""
    from sqlalchemy.engine import URL

    rendered = URL.create("postgresql", username="u", password=secret, host="h").render_as_string(hide_password=False)
    return secret_forms(secret) | {form for form in {rendered[len("postgresql://u:"):rendered.rindex("@h")]}
                                   if len(form) >= 5}


def _new_schema(engine, batch) -> str:
    import sqlalchemy as sa

    name = f"t_{uuid.uuid4().hex[:10]}"
    with engine.begin() as connection:
        connection.execute(sa.text(f"CREATE SCHEMA {name}"))
    for table, frame in frames_of(batch).items():
        frame.astype(object).where(frame.notna(), None).to_sql(table, engine, schema=name, index=False)
    return name


@pytest.fixture(scope="module")
def database():
    """An engine on the test database; each schema made through ``make`` is dropped at the end of the module."""
    import sqlalchemy as sa

    engine = sa.create_engine(postgres_test_url())
    made: list[str] = []

    def make(batch) -> str:
        made.append(_new_schema(engine, batch))
        return made[-1]

    yield make
    with engine.begin() as connection:
        for name in made:
            connection.execute(sa.text(f"DROP SCHEMA {name} CASCADE"))
    engine.dispose()


def _with_email(batch, email: str):
    procedures = batch.procedures.copy()
    procedures["contact"] = ["none"] * (len(procedures) - 1) + [email]
    return type(batch)(procedures=procedures, levels=batch.levels, source="memory")


def _check_clean(outcome: Outcome, ws: Path, secret: str) -> None:
    """No form of ``secret`` in either stream nor in any file of the workspace (Prefect's database included)."""
    forms = all_forms(secret)
    check_absent(outcome.out, *forms)
    assert files_holding(ws, forms) == [], files_holding(ws, forms)


# ------------------------------------------------------------------------------------------- the Prefect engine

PREFECT_DRIVER = textwrap.dedent("""
    import json, os, sys
    from pathlib import Path
    from pipelines.cli import app

    workspace, cases = sys.argv[1], json.loads(sys.argv[2])
    # shorter waits between the attempts at an unreachable database (the timing only; the same code paths)
    from pipelines.prefect_env import configure_prefect
    configure_prefect(workspace)
    import pipelines.flows, records.readers
    from records.errors import Retry
    records.readers.SOURCE_RETRY = Retry(attempts=2, delays=(0.1,))
    pipelines.flows.read_task.retry_delay_seconds = [0.1, 0.1]
    for name, args, env in cases:
        os.environ.update(env)
        for stream in (sys.stdout, sys.stderr):
            print(f"\\n=== CASE {name}", file=stream, flush=True)
        try:
            app(["run", *args, "--workspace", workspace, "--no-models"], prog_name="cementrisk")
            code = 0
        except SystemExit as error:
            code = error.code if isinstance(error.code, int) else 1
        sys.stderr.flush()
        print("=== EXIT " + json.dumps(code), flush=True)
""")


def run_cases(workspace: Path, cases: list[tuple[str, list[str], dict]]) -> dict[str, Outcome]:
    """Each case ``(name, args, environment)`` as ``run ARGS --workspace WS --no-models`` (the Prefect engine), one
    after the other in one fresh process (one embedded Prefect server); the outcome of each case."""
    done = driver(PREFECT_DRIVER, str(workspace), json.dumps(cases), timeout=600)
    outs = re.split(r"^=== CASE (\S+)$", done.stdout, flags=re.M)
    errs = re.split(r"^=== CASE (\S+)$", done.stderr, flags=re.M)
    stdout = dict(zip(outs[1::2], outs[2::2]))
    stderr = dict(zip(errs[1::2], errs[2::2]))
    outcomes = {}
    for name, _, _ in cases:
        assert name in stdout, f"case {name} did not run:\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}"
        code = re.search(r"^=== EXIT (-?\d+)$", stdout[name], flags=re.M)
        assert code, f"case {name} did not end:\n{stdout[name]}\n{stderr.get(name, '')}"
        outcomes[name] = Outcome(int(code.group(1)), stdout[name][:code.start()], stderr.get(name, ""))
    return outcomes


def flow_runs(workspace: Path) -> dict[str, dict]:
    """Prefect's flow runs in the workspace's database, by the run_id parameter: parameters, state type, message."""
    with sqlite3.connect(Path(workspace) / ".prefect" / "prefect.db") as connection:
        rows = connection.execute("SELECT f.parameters, f.state_type, s.message FROM flow_run f "
                                  "LEFT JOIN flow_run_state s ON s.id = f.state_id").fetchall()
    runs = {}
    for parameters, state, message in rows:
        parameters = json.loads(parameters)
        runs[parameters.get("run_id")] = {"parameters": parameters, "state": state, "message": message}
    return runs


USERINFO_SECRET = "Pr3f@ct:Pa/ss?w#rd %zz@Q9"  # unencoded @ : / ? # % and a blank in the userinfo
CONNINFO_SECRET = "C0nnInfoKx4Tv"              # libpq's conninfo=password=... in the query
REFUSED_SECRET = "Refu5ed@Wq7Lm"               # a source with a password whose batch is refused
REFUSED_EMAIL = "ward.clerk@hospital.example"
UNREACHABLE_SECRET = "N0@Server:Bj6Wy"          # a database that cannot be reached (port 9)


@pytest.fixture(scope="module")
def prefect_story(tmp_path_factory, database):
    ws = tmp_path_factory.mktemp("secrets-prefect") / "ws"
    userinfo = _url(USERINFO_SECRET, schema=database(make_batch(3, batch=1)))
    conninfo = _url(schema=database(make_batch(3, batch=2, start=20)),
                    query=f"&conninfo=password%3D{CONNINFO_SECRET}")
    refused = _url(REFUSED_SECRET, schema=database(_with_email(make_batch(3, batch=3, start=30), REFUSED_EMAIL)))
    scheme, user, _ = _authority()
    unreachable = f"{scheme}://{user}:{UNREACHABLE_SECRET}@127.0.0.1:9/test"
    published_after = {}
    cases = [("userinfo", ["--source", userinfo], {}),
             ("conninfo", ["--source", conninfo], {}),
             ("refused", ["--source", refused], {}),
             ("unreachable", ["--source", unreachable], {})]
    outcomes = run_cases(ws, cases)
    published_after["end"] = published(ws)
    return {"ws": ws, "outcomes": outcomes, "runs": flow_runs(ws), "published": published_after}


def test_prefect_a_userinfo_password_with_reserved_characters_reaches_no_file_and_no_stream(prefect_story):
    outcome = prefect_story["outcomes"]["userinfo"]
    ws = prefect_story["ws"]
    assert outcome.returncode == 0, outcome.out
    check_no_traceback(outcome)
    assert "run " in outcome.flat and ": ok" in outcome.flat
    manifest = outcome.manifest()
    check_accounting(manifest)
    assert manifest["status"] == "ok" and manifest["batches_loaded"] == [1]
    assert manifest["source"].startswith("postgresql") and ":***@" in manifest["source"], manifest["source"]
    assert (ws / ".prefect" / "prefect.db").is_file()  # Prefect's database is part of what is grepped
    _check_clean(outcome, ws, USERINFO_SECRET)
    flow = prefect_story["runs"][manifest["run_id"]]
    assert flow["state"] == "COMPLETED"
    assert flow["parameters"]["source"] == SOURCE_REF  # by reference, never the URL


def test_prefect_a_conninfo_password_in_the_query_reaches_no_file_and_is_no_flow_parameter(prefect_story):
    outcome = prefect_story["outcomes"]["conninfo"]
    ws = prefect_story["ws"]
    assert outcome.returncode == 0, outcome.out
    check_no_traceback(outcome)
    manifest = outcome.manifest()
    check_accounting(manifest)
    assert manifest["batches_loaded"] == [2]
    flow = prefect_story["runs"][manifest["run_id"]]
    assert flow["parameters"]["source"] == SOURCE_REF, flow["parameters"]["source"]
    _check_clean(outcome, ws, CONNINFO_SECRET)


def test_prefect_a_refused_batch_from_a_source_with_a_password_names_neither_password_nor_value(prefect_story):
    outcome = prefect_story["outcomes"]["refused"]
    ws = prefect_story["ws"]
    assert outcome.returncode == 2, outcome.out
    check_no_traceback(outcome)
    text = outcome.flat
    assert "refused:" in text and "procedures.contact: e-mail address" in text, outcome.out
    manifest = outcome.manifest()
    assert manifest["status"] == "refused"
    check_accounting(manifest)
    _check_clean(outcome, ws, REFUSED_SECRET)
    check_absent(outcome.out + json.dumps(manifest), REFUSED_EMAIL)
    flow = prefect_story["runs"][manifest["run_id"]]
    assert flow["state"] == "FAILED" and flow["message"] == f"refused: {manifest['reason']}"
    assert flow["parameters"]["source"] == SOURCE_REF
    # the refusal changed nothing published: the last run that published is the conninfo run (batch 2)
    conninfo_run = prefect_story["outcomes"]["conninfo"].manifest()["run_id"]
    assert prefect_story["published"]["end"] == conninfo_run


def test_prefect_an_unreachable_database_exits_3_and_its_password_is_nowhere(prefect_story):
    outcome = prefect_story["outcomes"]["unreachable"]
    ws = prefect_story["ws"]
    assert outcome.returncode == 3, outcome.out
    text = outcome.flat
    assert "source unavailable:" in text and "port 9" in text and "nothing was registered" in text, outcome.out
    manifest = outcome.manifest()
    check_accounting(manifest)
    assert manifest["status"] != "ok"
    _check_clean(outcome, ws, UNREACHABLE_SECRET)
    flow = prefect_story["runs"][manifest["run_id"]]
    assert flow["state"] in ("FAILED", "CRASHED") and flow["parameters"]["source"] == SOURCE_REF
    assert UNREACHABLE_SECRET not in (flow["message"] or "")


def test_prefect_an_unreachable_database_prints_no_traceback(prefect_story):
    outcome = prefect_story["outcomes"]["unreachable"]
    assert outcome.returncode == 3, outcome.out
    check_no_traceback(outcome)


# ---------------------------------------------------------------------------------------------- the local engine

def _local_run(database, tmp_path, batch, source_of) -> tuple[Outcome, Path]:
    ws = tmp_path / "ws"
    outcome = cli_inprocess("run", "--source", source_of(database(batch)), "--workspace", ws, *LOCAL)
    return outcome, ws


GOOD = [
    pytest.param("Hunter@2xQ9zz", lambda s, pw: _url(pw, schema=s), id="userinfo-unencoded-at"),
    pytest.param("a@b@c:d/e?f#g@h3Rb", lambda s, pw: _url(pw, schema=s), id="userinfo-many-reserved"),
    pytest.param("Percent@Enc5Yd", lambda s, pw: _url(pw.replace("@", "%40"), schema=s), id="userinfo-percent-encoded"),
    pytest.param("QueryPw2Jn", lambda s, pw: _url(schema=s, query=f"&password={pw}"), id="query-password"),
    pytest.param("SslKeyPw6Hs", lambda s, pw: _url(schema=s, query=f"&sslpassword={pw}"), id="query-sslpassword"),
]


@pytest.mark.parametrize(("secret", "source_of"), GOOD)
def test_local_a_password_in_the_source_is_masked_everywhere(database, tmp_path, secret, source_of):
    outcome, ws = _local_run(database, tmp_path, make_batch(3, batch=1), lambda s: source_of(s, secret))
    assert outcome.returncode == 0, outcome.out
    check_no_traceback(outcome)
    manifest = outcome.manifest()
    check_accounting(manifest)
    assert manifest["status"] == "ok" and manifest["batches_loaded"] == [1]
    assert "***" in manifest["source"], manifest["source"]
    assert published(ws) == manifest["run_id"]
    assert (Path(manifest["outputs"]["report"])).is_file()
    _check_clean(outcome, ws, secret)


def test_local_an_env_reference_reads_the_url_and_shows_it_masked(database, tmp_path, monkeypatch):
    secret = "Env@Ref:Pw8Gc"
    schema = database(make_batch(3, batch=1))
    monkeypatch.setenv("HOSTILE_SOURCE_URL", _url(secret, schema=schema))
    ws = tmp_path / "ws"
    outcome = cli_inprocess("run", "--source", "env:HOSTILE_SOURCE_URL", "--workspace", ws, *LOCAL)
    assert outcome.returncode == 0, outcome.out
    check_no_traceback(outcome)
    manifest = outcome.manifest()
    check_accounting(manifest)
    assert manifest["batches_loaded"] == [1] and published(ws) == manifest["run_id"]
    assert "***" in manifest["source"] or manifest["source"] == "env:HOSTILE_SOURCE_URL", manifest["source"]
    _check_clean(outcome, ws, secret)


def test_local_a_query_password_holding_an_at_sign_works_and_is_never_shown(database, tmp_path):
    secret = "Qry@Pass9Zq"
    outcome, ws = _local_run(database, tmp_path, make_batch(3, batch=1),
                             lambda s: _url(schema=s, query=f"&password={secret}"))
    _check_clean(outcome, ws, secret)  # the leak first: it is the worse half of this bug
    assert outcome.returncode == 0, outcome.out
    check_no_traceback(outcome)
    manifest = outcome.manifest()
    check_accounting(manifest)
    assert published(ws) == manifest["run_id"]


@pytest.mark.parametrize("encoded", [True, False], ids=["percent-encoded", "plain"])
def test_local_a_conninfo_password_is_masked(database, tmp_path, encoded):
    secret = "ConnInfo1Vx"
    query = f"&conninfo=password%3D{secret}" if encoded else f"&conninfo=password={secret}"
    outcome, ws = _local_run(database, tmp_path, make_batch(3, batch=1), lambda s: _url(schema=s, query=query))
    assert outcome.returncode == 0, outcome.out
    check_no_traceback(outcome)
    manifest = outcome.manifest()
    check_accounting(manifest)
    assert published(ws) == manifest["run_id"]
    _check_clean(outcome, ws, secret)


def test_local_an_odbc_connect_password_is_masked_in_a_refusal(tmp_path):
    from urllib.parse import quote_plus

    secret = "OdbcPwd4Nf"
    source = "mssql+pyodbc:///?odbc_connect=" + quote_plus(
        f"DRIVER={{ODBC Driver 18 for SQL Server}};SERVER=127.0.0.1;DATABASE=qi;UID=reader;PWD={secret}")
    ws = tmp_path / "ws"
    outcome = cli_inprocess("run", "--source", source, "--workspace", ws, *LOCAL)
    assert outcome.returncode == 2, outcome.out  # no pyodbc here: refused as an unusable URL, or unreachable
    check_no_traceback(outcome)
    assert "refused:" in outcome.flat
    check_accounting(outcome.manifest())
    assert published(ws) is None
    _check_clean(outcome, ws, secret)


def test_local_an_unreachable_database_names_host_and_port_never_the_password(tmp_path):
    secret = "Unre@chable:Pw5Ku"
    scheme, user, _ = _authority()
    source = f"{scheme}://{user}:{secret}@127.0.0.1:9/test"
    ws = tmp_path / "ws"
    outcome = cli_inprocess("run", "--source", source, "--workspace", ws, *LOCAL)
    assert outcome.returncode == 3, outcome.out
    check_no_traceback(outcome)
    text = outcome.flat
    assert "source unavailable:" in text and "port 9" in text and "nothing was registered" in text, outcome.out
    manifest = outcome.manifest()
    check_accounting(manifest)
    assert manifest["status"] != "ok"
    assert published(ws) is None
    _check_clean(outcome, ws, secret)


def test_local_an_unknown_dialect_is_refused_with_the_password_masked(tmp_path):
    secret = "Dial@ect:Pw3Mz"
    ws = tmp_path / "ws"
    outcome = cli_inprocess("run", "--source", f"nosuchdb+driver://reader:{secret}@127.0.0.1/qi", "--workspace", ws,
                            *LOCAL)
    assert outcome.returncode == 2, outcome.out
    check_no_traceback(outcome)
    assert "refused:" in outcome.flat and "not a usable database URL" in outcome.flat, outcome.out
    check_accounting(outcome.manifest())
    assert published(ws) is None
    _check_clean(outcome, ws, secret)


def test_validate_shows_the_source_masked_and_writes_nothing(database, tmp_path):
    secret = "Valid@te:Pw7Qe"
    batch = make_batch(3, batch=1)
    batch.procedures.loc[1, "age_years"] = 150  # one quarantined row: validate lists it by position and rule
    schema = database(batch)
    before = set(tmp_path.rglob("*"))
    outcome = cli_inprocess("validate", "--source", _url(secret, schema=schema))
    assert outcome.returncode == 0, outcome.out
    check_no_traceback(outcome)
    text = outcome.flat
    assert "(dry run, nothing written)" in text and "postgres" in text and ":***@" in text, outcome.out
    assert "range" in text
    check_absent(outcome.out, *all_forms(secret))
    assert set(tmp_path.rglob("*")) == before
