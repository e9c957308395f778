"""Sources: a URL's secrets masked wherever they are, URLs SQLAlchemy reads as meant, ``env:NAME`` references."""

from __future__ import annotations

import string
from pathlib import Path
from urllib.parse import quote, unquote

import pytest
import sqlalchemy as sa
from hypothesis import assume, given, settings
from hypothesis import strategies as st
from sqlalchemy.engine import make_url

from records.errors import SourceError
from records.sources import (
    SOURCE_ENV_PREFIX,
    connectable_url,
    display_source,
    has_password,
    is_reference,
    mask_secrets,
    resolve_source,
    source_password,
)

PG = "postgresql+psycopg://"


# ------------------------------------------------------------------------------------------ display_source


@pytest.mark.parametrize(("source", "shown"), [
    pytest.param(f"{PG}qi:hunter2@db:5432/x", f"{PG}qi:***@db:5432/x", id="userinfo-password"),
    pytest.param(f"{PG}qi:p@ss@127.0.0.1:5432/test", f"{PG}qi:***@127.0.0.1:5432/test", id="one-at"),
    pytest.param(f"{PG}qi:p@s@s@127.0.0.1:5432/test", f"{PG}qi:***@127.0.0.1:5432/test", id="two-ats"),
    pytest.param(f"{PG}qi:p:ss@db/x", f"{PG}qi:***@db/x", id="colon"),
    pytest.param(f"{PG}qi:p/ss@db/x", f"{PG}qi:***@db/x", id="slash"),
    pytest.param(f"{PG}qi:p?ss@db/x", f"{PG}qi:***@db/x", id="question-mark"),
    pytest.param(f"{PG}qi:p#ss@db/x", f"{PG}qi:***@db/x", id="hash"),
    pytest.param(f"{PG}qi:p%40ss@db/x", f"{PG}qi:***@db/x", id="percent-encoded-at"),
    pytest.param(f"{PG}qi:50%off@db/x", f"{PG}qi:***@db/x", id="bare-percent"),
    pytest.param(f"{PG}qi:a@b:c/d?e#f%g@db:5432/x?sslmode=require", f"{PG}qi:***@db:5432/x?sslmode=require",
                 id="every-reserved-character"),
    pytest.param(f"{PG}qi:@db/x", f"{PG}qi:@db/x", id="empty-password-stays-empty"),
    pytest.param(f"{PG}qi@db/x", f"{PG}qi@db/x", id="user-without-password"),
    pytest.param(f"{PG}qi@db/x?password=hunter2", f"{PG}qi@db/x?password=***", id="query-password"),
    pytest.param(f"{PG}qi@db/x?sslmode=require&PASSWORD=hunter2", f"{PG}qi@db/x?sslmode=require&PASSWORD=***",
                 id="query-password-upper-case"),
    pytest.param(f"{PG}qi@db/x?sslpassword=k3y&sslmode=verify-full", f"{PG}qi@db/x?sslpassword=***&sslmode=verify-full",
                 id="sslpassword"),
    pytest.param(f"{PG}qi@db/x?password=p%40ss%26w%3D", f"{PG}qi@db/x?password=***", id="query-value-encoded"),
    pytest.param(f"{PG}qi@db/x?pass%77ord=hunter2", f"{PG}qi@db/x?pass%77ord=***", id="query-name-encoded"),
    pytest.param(f"{PG}qi@db/x?password=a&b&sslmode=require", f"{PG}qi@db/x?password=***&sslmode=require",
                 id="query-value-with-bare-ampersand"),
    pytest.param(f"{PG}qi:pw1@db/x?password=pw2&sslkey_password=pw3&application_name=nightly",
                 f"{PG}qi:***@db/x?password=***&sslkey_password=***&application_name=nightly", id="userinfo-and-query"),
    pytest.param(f"{PG}qi@db/x?api_key=1&Access-Key=2&client_secret=3&token=4&pwd=5&tokenizer=6",
                 f"{PG}qi@db/x?api_key=***&Access-Key=***&client_secret=***&token=***&pwd=***&tokenizer=6",
                 id="other-credential-names"),
    pytest.param(f"{PG}qi:p@ss@[::1]:5432/test", f"{PG}qi:***@[::1]:5432/test", id="ipv6-host"),
    pytest.param(f"{PG}qi@srv:p@ss@srv.example/db", f"{PG}qi@srv:***@srv.example/db", id="user-holding-at"),
    pytest.param("sqlite:///data/x.db", "sqlite:///data/x.db", id="sqlite-relative"),
    pytest.param("sqlite:////data/p@th.db", "sqlite:////data/p@th.db", id="sqlite-absolute-with-at"),
    pytest.param(f"{PG}qi@db/my@base", f"{PG}qi@db/my@base", id="at-in-database-without-password"),
])
def test_display_source_masks_every_password_and_nothing_else(source, shown):
    assert display_source(source) == shown


@pytest.mark.parametrize(("source", "shown"), [
    pytest.param(f"{PG}qi:pw@db:notaport/x?password=s3cret", f"{PG}***@db:notaport/x?password=***", id="bad-port"),
    pytest.param("not a url://qi:pw@x", "not a url://***@x", id="bad-scheme"),
    pytest.param("pg://qi:pw@h1:1,h2:2/x?sslmode=y&password=z", "pg://***@h1:1,h2:2/x?sslmode=y&password=***",
                 id="libpq-multi-host"),
    pytest.param(f"env:{PG}qi:pw@db/x", f"env:{PG}***@db/x", id="url-after-env-prefix-is-no-reference"),
    pytest.param(f"{PG}qi:x@h/y@db example/qi", f"{PG}***@db example/qi", id="never-read-at-an-earlier-at"),
    pytest.param(f"{PG}qi:p@ss@db/x?password=q@ry&sslmode=require", f"{PG}***&sslmode=require",
                 id="at-in-query-password-after-userinfo-password"),
])
def test_an_unreadable_url_is_masked_from_the_scheme_to_its_last_at(source, shown):
    assert display_source(source) == shown


def test_an_at_after_the_host_of_a_url_with_a_password_is_taken_for_the_password():
    """The documented price of the last-@ rule: over-masked (never shown), and %40 reads as meant."""
    assert display_source(f"{PG}qi:pw@db/x?application_name=svc@night") == f"{PG}qi:***@night"
    assert (display_source(f"{PG}qi:pw@db/x?application_name=svc%40night")
            == f"{PG}qi:***@db/x?application_name=svc%40night")


def test_a_query_password_holding_an_at_connects_as_meant_and_both_readings_are_masked():
    """No userinfo password: the authority ends at the first "/" (RFC 3986), and what the last "@" would call the
    password is masked too (over-masked, never shown)."""
    from sqlalchemy.engine import make_url

    source = f"{PG}postgres@127.0.0.1:5432/test?options=-csearch_path%3Ds&password=Qry@Pass9Zq"
    assert display_source(source) == f"{PG}postgres@127.0.0.1:***"
    assert has_password(source)
    url = make_url(connectable_url(source))
    assert (url.host, url.port, url.database, url.query["password"]) == ("127.0.0.1", 5432, "test", "Qry@Pass9Zq")
    assert "Pass9Zq" not in mask_secrets("could not connect to Pass9Zq (Qry)", source=source)


@pytest.mark.parametrize(("source", "secret", "host"), [
    ("postgresql://u:/ZQ?F=FN@127.0.0.1/db", "/ZQ?F=FN", "127.0.0.1"),
    ("postgresql://admin:2024?pw=Secret@db.example.com/prod", "2024?pw=Secret", "db.example.com"),
    ("postgresql://u:Pa@Ssw0rd?x=1@db.example.com/prod", "Pa@Ssw0rd?x=1", "db.example.com"),
    ("postgresql://svc:k9@Lm?Q=x7@db.example.com:5432/prod", "k9@Lm?Q=x7", "db.example.com"),
])
def test_a_userinfo_password_that_holds_a_query_keeps_the_last_at_reading(source, secret, host):
    """A ":" before the authority's "@" is a password: it may hold "/ ? = @" (the review's counter-examples)."""
    from sqlalchemy.engine import make_url

    shown = display_source(source)
    assert all(piece not in shown for piece in secret_pieces(secret)), shown
    assert has_password(source)
    url = make_url(connectable_url(source))
    assert (url.host, url.password) == (host, secret)


def secret_pieces(secret: str) -> list[str]:
    return [secret, *(p for p in secret.replace("?", "@").split("@") if len(p) >= 4)]


@pytest.mark.parametrize(("source", "secret"), [
    (f"{PG}postgres@h/db?conninfo=password%3DConnInfo1Vx", "ConnInfo1Vx"),
    (f"{PG}postgres@h/db?conninfo=password=ConnInfo1Vx&sslmode=require", "ConnInfo1Vx"),
    (f"{PG}postgres@h/db?conninfo=host%3Dh%20password%3D%27Conn%20Info%27", "Conn Info"),
    ("mssql+pyodbc:///?odbc_connect=DRIVER%3D%7BODBC%7D%3BSERVER%3Dh%3BUID%3Du%3BPWD%3DodbcPWD9Zq", "odbcPWD9Zq"),
    (f"{PG}127.0.0.1:5432/test?conninfo=postgresql%3A%2F%2Fpostgres%3ASecretXy%40127.0.0.1%2Ftest", "SecretXy"),
    (f"{PG}127.0.0.1:5432/test?conninfo=postgresql://postgres:SecretXy@127.0.0.1/test", "SecretXy"),
])
def test_a_connection_string_in_the_query_that_holds_a_password_is_masked_whole(source, secret):
    shown = display_source(source)
    assert secret not in shown and quote(secret) not in shown and "***" in shown
    assert has_password(source)
    assert secret not in mask_secrets(f"login failed for {secret!r}: {source}", source=source)


@pytest.mark.parametrize("source", ["data/sample", "/srv/extracts/2026-01", "[red]x", "env:CEMENTRISK_SOURCE",
                                    "folder:with@at"])
def test_paths_and_references_are_shown_as_given(source):
    assert display_source(source) == source
    assert display_source(Path(source)) == str(Path(source))


# ----------------------------------------------------------------------------- source_password, has_password


@pytest.mark.parametrize(("source", "password"), [
    (f"{PG}qi:hunter2@db/x", "hunter2"),
    (f"{PG}qi:p@ss@127.0.0.1:5432/test", "p@ss"),
    (f"{PG}qi:p%40ss@db/x", "p@ss"),
    (f"{PG}qi:@db/x", None),
    (f"{PG}qi@db/x", None),
    (f"{PG}qi@db/x?password=p%40ss+w", "p@ss w"),
    (f"{PG}qi:user-pw@db/x?password=query-pw", "query-pw"),
    (f"{PG}qi@db/x?sslpassword=k3y", None),
    (f"{PG}qi:pw@db:notaport/x", "pw"),
    ("sqlite:///x.db", None),
    ("data/sample", None),
    ("env:CEMENTRISK_SOURCE", None),
])
def test_source_password_is_the_login_password_decoded(source, password):
    assert source_password(source) == password


@pytest.mark.parametrize(("source", "expected"), [
    (f"{PG}qi:hunter2@db/x", True),
    (f"{PG}qi:p@ss@db/x", True),
    (f"{PG}qi@db/x?sslpassword=k3y", True),
    (f"{PG}qi@db/x?token=t0k", True),
    (f"{PG}qi:@db/x?password=", False),
    (f"{PG}qi@db/x", False),
    (f"{PG}qi@db:bad/x", False),
    ("sqlite:///x.db", False),
    ("env:CEMENTRISK_SOURCE", False),
    (Path("data/sample"), False),
])
def test_has_password_is_true_for_any_secret_the_source_carries(source, expected):
    assert has_password(source) is expected


# -------------------------------------------------------------------------------------------- mask_secrets


@pytest.mark.parametrize(("source", "text", "masked"), [
    pytest.param(f"{PG}qi:p@ss@127.0.0.1:5432/test", 'missing "=" after "p@ss" in connection info string',
                 'missing "=" after "***" in connection info string', id="psycopg-conninfo-as-given"),
    pytest.param(f"{PG}qi:p@ss@127.0.0.1:5432/test",
                 "failed to resolve host 'ss@127.0.0.1': [Errno -2] Name or service not known",
                 "failed to resolve host '***@127.0.0.1': [Errno -2] Name or service not known",
                 id="sqlalchemy-misreading-shows-the-rest-as-host"),
    pytest.param(f"{PG}qi:p%zz@127.0.0.1:5432/test", 'invalid percent-encoded token: "p%zz"',
                 'invalid percent-encoded token: "***"', id="psycopg-percent-token"),
    pytest.param(f"{PG}qi:p%40ss@db/x", 'connection is bad: invalid sslmode value: "p@ss"',
                 'connection is bad: invalid sslmode value: "***"', id="decoded-form"),
    pytest.param(f"{PG}qi:p@ss@db/x", "cannot use p%40ss here", "cannot use *** here", id="encoded-form"),
    pytest.param(f"{PG}qi@db/x?password=se%20cret", "password was se cret", "password was ***", id="query-decoded"),
    pytest.param(f"{PG}qi:p'ss\\w@db/x", "host=db password='p\\'ss\\\\w' port=5432",
                 "host=db password=*** port=5432", id="libpq-escaped"),
    pytest.param("data/sample", "could not reach postgresql+psycopg://qi:hunter2@db:5432/x (refused)",
                 "could not reach postgresql+psycopg://qi:***@db:5432/x (refused)", id="url-in-text"),
    pytest.param("data/sample", "dsn: host=db user=qi password=hunter2 sslmode=require",
                 "dsn: host=db user=qi password=*** sslmode=require", id="key-value-in-text"),
    pytest.param(f"{PG}qi:ab@db/x", 'table abc: ab refused "ab"', 'table abc: *** refused "***"',
                 id="short-secret-only-where-it-stands-alone"),
    pytest.param(f"{PG}qi:hunter2@127.0.0.1:5432/test",
                 '(psycopg.OperationalError) connection failed: connection to server at "127.0.0.1", port 5432 failed: '
                 'FATAL:  password authentication failed for user "qi"\n'
                 "(Background on this error at: https://sqlalche.me/e/21/e3q8)",
                 '(psycopg.OperationalError) connection failed: connection to server at "127.0.0.1", port 5432 failed: '
                 'FATAL:  password authentication failed for user "qi"\n'
                 "(Background on this error at: https://sqlalche.me/e/21/e3q8)", id="nothing-to-mask"),
])
def test_mask_secrets_hides_the_password_in_every_form(source, text, masked):
    assert mask_secrets(text, source=source) == masked


def test_mask_secrets_resolves_a_reference_to_find_its_password(monkeypatch):
    monkeypatch.setenv("CEMENTRISK_TEST_SOURCE", f"{PG}qi:hunter2@db/x")
    assert mask_secrets("auth failed with hunter2", source="env:CEMENTRISK_TEST_SOURCE") == "auth failed with ***"


# ----------------------------------------------------------------------------------------- connectable_url


@pytest.mark.parametrize(("source", "meant"), [
    (f"{PG}qi:p@ss@127.0.0.1:5432/test", ("qi", "p@ss", "127.0.0.1", 5432, "test")),
    (f"{PG}qi:p@s@s@127.0.0.1:5432/test", ("qi", "p@s@s", "127.0.0.1", 5432, "test")),
    (f"{PG}qi:a@b:c/d?e#f%g@db:5432/x?sslmode=require", ("qi", "a@b:c/d?e#f%g", "db", 5432, "x")),
    (f"{PG}qi:p@ss@[::1]:5432/test", ("qi", "p@ss", "::1", 5432, "test")),
    (f"{PG}qi@srv:p@ss@srv.example/db", ("qi@srv", "p@ss", "srv.example", None, "db")),
    (f"{PG}qi:p%40ss@db/x", ("qi", "p@ss", "db", None, "x")),
    (f"{PG}qi@db/x?password=hunter2", ("qi", None, "db", None, "x")),
    ("sqlite:////data/p@th.db", (None, None, None, None, "/data/p@th.db")),
])
def test_connectable_url_is_read_by_sqlalchemy_as_meant(source, meant):
    parsed = make_url(connectable_url(source))
    assert (parsed.username, parsed.password, parsed.host, parsed.port, parsed.database) == meant


def test_connectable_url_encodes_only_the_userinfo_and_keeps_the_query():
    assert (connectable_url(f"{PG}qi:p@ss@127.0.0.1:5432/test?password=q%40ry&sslmode=require")
            == f"{PG}qi:p%40ss@127.0.0.1:5432/test?password=q%40ry&sslmode=require")
    assert make_url(connectable_url(f"{PG}qi@db/x?password=p%40ss")).query == {"password": "p@ss"}


@pytest.mark.parametrize("source", [f"{PG}qi:hunter2@db:5432/x", f"{PG}qi:p%40ss@db/x", "sqlite:///x.db"])
def test_connectable_url_leaves_a_url_sqlalchemy_reads_right_unchanged(source):
    assert connectable_url(source) == source


@pytest.mark.parametrize("source", [f"{PG}qi:s3cret@db:notaport/x", "data/sample"])
def test_connectable_url_refuses_what_it_cannot_read_without_showing_the_password(source):
    with pytest.raises(SourceError, match="is not a usable database URL") as raised:
        connectable_url(source)
    assert "s3cret" not in str(raised.value)


def test_connectable_url_reaches_the_meant_database(postgres_url):
    """Trust auth accepts any password: this checks the user, host, port and database actually reached."""
    base = make_url(postgres_url)
    password = base.password or "p@ss:w/rd?#%"
    source = f"{base.drivername}://{base.username}:{password}@{base.host}:{base.port or 5432}/{base.database}"
    engine = sa.create_engine(connectable_url(source))
    try:
        with engine.connect() as connection:
            row = connection.execute(sa.text("SELECT current_user, current_database(), inet_server_port()")).one()
    finally:
        engine.dispose()
    assert tuple(row) == (base.username, base.database, base.port or 5432)


# ------------------------------------------------------------------------------------------ env: references


def test_a_reference_resolves_to_the_variable_stripped(monkeypatch):
    monkeypatch.setenv("CEMENTRISK_TEST_SOURCE", f"  {PG}qi:p@ss@db/x\n")
    assert resolve_source("env:CEMENTRISK_TEST_SOURCE") == f"{PG}qi:p@ss@db/x"
    assert is_reference("env:CEMENTRISK_TEST_SOURCE") and SOURCE_ENV_PREFIX == "env:"
    assert not has_password("env:CEMENTRISK_TEST_SOURCE")


@pytest.mark.parametrize("source", ["data/sample", f"{PG}qi:pw@db/x", "sqlite:///x.db"])
def test_other_sources_resolve_to_themselves(source):
    assert resolve_source(source) == source and not is_reference(source)


def test_resolve_source_reads_the_mapping_it_is_given():
    assert resolve_source("env:DB", environ={"DB": "sqlite:///x.db"}) == "sqlite:///x.db"


@pytest.mark.parametrize(("value", "match"), [(None, "CEMENTRISK_TEST_SOURCE is not set"),
                                              ("", "CEMENTRISK_TEST_SOURCE is empty"),
                                              (" \n", "CEMENTRISK_TEST_SOURCE is empty"),
                                              ("env:OTHER", "references do not nest")])
def test_an_unset_or_empty_variable_is_refused_by_name(monkeypatch, value, match):
    if value is None:
        monkeypatch.delenv("CEMENTRISK_TEST_SOURCE", raising=False)
    else:
        monkeypatch.setenv("CEMENTRISK_TEST_SOURCE", value)
    with pytest.raises(SourceError, match=match):
        resolve_source("env:CEMENTRISK_TEST_SOURCE")


@pytest.mark.parametrize("source", ["env:", "env:1ST", "env:A-B", "env:A B", f"env:{PG}qi:s3cret@db/x"])
def test_an_invalid_variable_name_is_refused_without_its_secrets(source):
    with pytest.raises(SourceError, match="is not a valid reference: write env:NAME") as raised:
        resolve_source(source)
    assert "s3cret" not in str(raised.value)


def test_the_refusal_never_shows_the_value(monkeypatch):
    monkeypatch.setenv("CEMENTRISK_TEST_SOURCE", "env:s3cret")
    with pytest.raises(SourceError) as raised:
        resolve_source("env:CEMENTRISK_TEST_SOURCE")
    assert "s3cret" not in str(raised.value)


# -------------------------------------------------------------------------------------------- properties
# The rule tested: for any non-empty password of printable characters, the display is exactly the URL with the
# password replaced by "***". So it shows the host, port and database, and it contains the password only when
# the password is a piece of that fixed text ("5432", "qi", "***@"): such passwords are set aside, which for
# 4 characters or more leaves the test "the password is never shown".

PASSWORDS = st.text(alphabet=string.printable, min_size=1, max_size=40)


@settings(max_examples=400, deadline=None)
@given(password=PASSWORDS)
def test_a_userinfo_password_is_never_shown(password):
    shown = display_source(f"{PG}user:{password}@db.example:5432/qi")
    expected = f"{PG}user:***@db.example:5432/qi"
    assert shown == expected
    assume(len(password) >= 4 and password not in expected)
    assert password not in shown


@settings(max_examples=400, deadline=None)
@given(password=PASSWORDS, tail=st.text(alphabet=string.printable + "@@::??//&&==", max_size=30))
def test_a_userinfo_password_is_never_shown_whatever_follows(password, tail):
    """Whatever follows the password (a broken host, more @), it is masked up to the last @ after it."""
    shown = display_source(f"{PG}user:{password}@{tail}")
    after = f"@{tail}"
    skeletons = [prefix + after[i:] for i, char in enumerate(after) if char == "@"
                 for prefix in (f"{PG}user:***", f"{PG}***")]
    assume(len(password) >= 4 and "*" not in password and not any(password in text for text in skeletons))
    assert password not in shown


@settings(max_examples=400, deadline=None)
@given(password=PASSWORDS)
def test_a_query_password_is_never_shown(password):
    shown = display_source(f"{PG}user@db.example:5432/qi?sslmode=require&password={quote(password)}")
    expected = f"{PG}user@db.example:5432/qi?sslmode=require&password=***"
    assert shown == expected
    assume(len(password) >= 4 and password not in expected and quote(password) not in expected)
    assert password not in shown and quote(password) not in shown


@settings(max_examples=400, deadline=None)
@given(password=PASSWORDS)
def test_connectable_url_carries_any_password_to_sqlalchemy(password):
    parsed = make_url(connectable_url(f"{PG}user:{password}@db.example:5432/qi"))
    assert (parsed.username, parsed.password, parsed.host, parsed.port, parsed.database) == (
        "user", unquote(password), "db.example", 5432, "qi")


@settings(max_examples=400, deadline=None)
@given(password=PASSWORDS)
def test_a_driver_message_never_shows_the_password(password):
    skeleton = 'connection failed: missing "=" after "{}" in connection info string'
    masked = mask_secrets(skeleton.format(password), source=f"{PG}user:{password}@db.example:5432/qi")
    assume(len(password) >= 4 and password not in skeleton.format("***"))
    assert password not in masked
