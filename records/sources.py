"""Naming a source without its secrets, reading a database URL as meant, and ``env:NAME`` source references.

Every place that names a source (manifest, metrics, report, stdout and stderr, logs, Prefect artefacts) shows
:func:`display_source`, and every driver message passes through :func:`mask_secrets`. A URL's password is masked
wherever it is: in the userinfo, where it may hold unencoded reserved characters (``@ : / ? # %``), in
query parameters named like a credential (``password``, ``sslpassword``, ``token``, ...), and in query values that
are connection strings holding one (libpq's ``conninfo=password=...``, ODBC's ``odbc_connect=...PWD=...``).

How a URL is read. The userinfo ends at the *last* ``@`` that is followed by a host (a DNS name, an IPv4
address or a bracketed IPv6 literal, possibly empty), an optional numeric port, and then ``/``, ``?`` or the
end; the username runs to the first ``:`` of the userinfo and holds no ``/`` or ``?``. So a password may hold
unencoded ``@``, which SQLAlchemy's parser (first ``@``) misreads as part of the host. An ``@`` after the host
(``?password=a@b``, ``?application_name=svc@night``) is read as part of the query when what the last ``@`` would
make the password holds a query (``?name=``); otherwise, in a URL with a userinfo password, write it ``%40``, or
everything up to it is taken for the password (masked, never shown). A ``%`` followed by
two hex digits is a percent escape, as in every URL. A URL that cannot be read this way (no host after that
``@``, a port that is not a number) is masked from ``://`` to its last ``@``: never read at an earlier ``@``,
which would show the rest of a password as the host.

A source may also be given as ``env:NAME``: :func:`resolve_source` reads it from the environment, so a
password never has to be a plain parameter of a Prefect flow (Prefect stores parameters in its database).
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from urllib.parse import quote, quote_plus, unquote, unquote_plus

from records.errors import SourceError

Source = str | os.PathLike[str]

MASK = "***"
SOURCE_ENV_PREFIX = "env:"
"""A source ``env:NAME`` is the value of the environment variable ``NAME``."""

_CREDENTIAL_NAMES = frozenset({"pass", "pwd"})
"""Query parameter names (normalised: lower case, without ``_ - .`` and blanks) that hold a secret..."""
_CREDENTIAL_SUFFIXES = ("password", "passwd", "passphrase", "secret", "token", "apikey", "accesskey", "secretkey")
"""... and the endings that make a name a credential (``sslpassword``, ``sslkey_password``, ``client_secret``)."""
_SHORT_SECRET = 4
"""A secret shorter than this is masked in free text only where it stands alone (not inside a word)."""

_ENV_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_SCHEME = re.compile(r"[A-Za-z][\w+.\-]*://")
_HOST_PORT = re.compile(r"(?P<host>\[[^\[\]/?#@\s]*\]|[A-Za-z0-9._~%\-]*)(?::(?P<port>[0-9]*))?(?=[/?]|\Z)")
_PARAMETER = re.compile(r"(?:\A|&)(?P<name>[^&=]*)=")
_LOOSE_PARAMETER = re.compile(r"[?&;](?P<name>[^&;=?]*)=")
_QUERY_IN_USERINFO = re.compile(r"\?[^=&]*=")
"""A query (``?name=``) inside what the last ``@`` would make the password."""
_URL_IN_TEXT = re.compile(r"[A-Za-z][\w+.\-]*://\S*")
_CREDENTIAL_IN_TEXT = re.compile(
    r"(?i)(?<![\w.\-])(?P<name>pass|pwd|[\w.\-]*?(?:password|passwd|passphrase|secret|token|api[_.\-]?key"
    r"|access[_.\-]?key|secret[_.\-]?key))(?P<equals>\s*=\s*)"
    r"""(?P<value>'(?:[^'\\]|\\.)*'|"(?:[^"\\]|\\.)*"|\{[^}]*\}|[^\s&]+)""")


@dataclass(frozen=True)
class _Url:
    """Where the parts of a URL lie in its text (spans are ``(start, end)`` indices)."""

    text: str
    scheme: str
    username: str | None
    """Raw (percent-encoded as given); None without userinfo."""
    password: tuple[int, int] | None
    """Span of the raw userinfo password; None when the userinfo has no ``:``."""
    host: str
    port: int | None
    tail: int
    """Where the path (``/database``) and query begin."""
    parameters: tuple[tuple[str, tuple[int, int]], ...]
    """Each query parameter's normalised name and the span of its raw value."""

    def raw(self, span: tuple[int, int]) -> str:
        return self.text[span[0]:span[1]]


# ---------------------------------------------------------------------------------------------- public


def display_source(source: Source) -> str:
    """The source as it may be shown anywhere: a URL's secrets replaced by ``***``, everything else as given.

    Parameters
    ----------
    source
        A path, an ``env:NAME`` reference (shown as given: it holds no secret) or a URL (any text with
        ``://``).

    Returns
    -------
    str
        The text with the userinfo password and every credential query value (``password``, ``pwd``,
        ``sslpassword``, ``token``, ``api_key``, ... in any case, the name plain or percent-encoded) masked.
        An empty password stays empty (``qi:@db``): there is nothing to hide, and it tells why a login failed.
        A URL that cannot be read is masked from ``://`` to its last ``@``, and every credential value after.
    """
    text = _text(source)
    if "://" not in text:
        return text
    return _splice(text, _secrets(text)[0])


def source_password(source: Source) -> str | None:
    """The login password a source carries, percent-decoded; None when it has none (or an empty one).

    A ``password`` query parameter wins over the userinfo, as with SQLAlchemy's psycopg dialect, which passes
    the query after the userinfo. Paths and ``env:NAME`` references (not resolved here) carry none. Other
    secrets (``sslpassword``, ``token``) are not the login password: see :func:`has_password`.
    """
    text = _text(source)
    if "://" not in text:
        return None
    url = _parse_url(text)
    if url is None:
        password = text[text.index("://") + 3:max(text.rfind("@"), 0)].partition(":")[2]
        return unquote(password) if password else None
    for name, span in reversed(url.parameters):
        if name == "password" and url.raw(span):
            return unquote_plus(url.raw(span))
    return unquote(url.raw(url.password)) if url.password and url.raw(url.password) else None


def has_password(source: Source) -> bool:
    """True when the source itself carries a secret: a password, or any credential query value.

    This is the question "would the secret be stored wherever the source is stored" (Prefect's database for a
    deployment's parameters): an ``env:NAME`` reference carries none.
    """
    text = _text(source)
    return "://" in text and any(_secrets(text)[1])


def mask_secrets(text: str, *, source: Source) -> str:
    """``text`` (a driver's error message, a log line) with no secret of ``source`` and no URL shown in clear.

    Each secret of ``source`` (for an ``env:NAME`` reference, of the value it names, when set) is replaced by
    ``***`` in every form it may take: as given, percent-decoded, percent-encoded (``quote``, ``quote_plus``,
    SQLAlchemy's rendering), and escaped as in a libpq connection string or a Python repr; so are the pieces
    before and after each ``@`` of it (what a parser that stops at the first ``@`` takes for the password and
    shows as the host, as SQLAlchemy does: ``failed to resolve host 'ss@127.0.0.1'``). A secret shorter
    than 4 characters is replaced only where it stands alone, not inside a word. Then every URL in the text is
    shown as :func:`display_source` shows it, and every ``password=...``-like pair (libpq's ``key=value``
    connection strings) has its value masked.
    """
    masked = str(text)
    for secret in _secret_forms(source):
        if len(secret) >= _SHORT_SECRET:
            masked = masked.replace(secret, MASK)
        else:
            masked = re.sub(rf"(?<![A-Za-z0-9]){re.escape(secret)}(?![A-Za-z0-9])", MASK, masked)
    masked = _URL_IN_TEXT.sub(lambda match: display_source(match.group(0)), masked)
    return _CREDENTIAL_IN_TEXT.sub(lambda m: m.group("name") + m.group("equals") + MASK, masked)


def connectable_url(source: str) -> str:
    """A URL that SQLAlchemy reads as meant: the user, password, host, port and database of ``source``.

    A URL SQLAlchemy already reads right is returned unchanged. Otherwise (a password holding an unencoded
    ``@``) its ``scheme://user:password@host:port`` is rebuilt with :meth:`sqlalchemy.engine.URL.create`, which
    percent-encodes the user and password, and the path and query follow as given (a ``?password=`` stays in
    the query: psycopg takes it as a connection parameter).

    Raises
    ------
    SourceError
        ``source`` is not a URL this module can read (the message shows it masked).
    """
    from sqlalchemy.engine import URL

    text = str(source)
    url = _parse_url(text) if "://" in text else None
    if url is None:
        raise SourceError(f"source {display_source(text)} is not a usable database URL: expected "
                          "dialect+driver://user:password@host:port/database")
    meant = _meant(url)
    if _sqlalchemy_reading(text) == meant:
        return text
    username, password, host, port, _ = meant
    authority = URL.create(url.scheme, username=username, password=password, host=host, port=port)
    # an "@" after the host (in the database name or the query) would end SQLAlchemy's userinfo: encoded, it is read
    # back as "@" (SQLAlchemy decodes both)
    rebuilt = authority.render_as_string(hide_password=False) + text[url.tail:].replace("@", "%40")
    if _sqlalchemy_reading(rebuilt) != meant:
        raise SourceError(f"source {display_source(text)}: SQLAlchemy cannot read this URL as written; "
                          "percent-encode the reserved characters of its user name and database")
    return rebuilt


def is_reference(source: Source) -> bool:
    """True when the source is written ``env:...`` (a reference to an environment variable)."""
    return _text(source).startswith(SOURCE_ENV_PREFIX)


def resolve_source(source: str, *, environ: Mapping[str, str] | None = None) -> str:
    """The source an ``env:NAME`` reference names (the variable's value, stripped); any other source unchanged.

    Parameters
    ----------
    source
        A path, a URL or ``env:NAME``.
    environ
        Where to look ``NAME`` up; default ``os.environ``.

    Raises
    ------
    SourceError
        ``NAME`` is not a valid variable name, or the variable is unset, empty, or itself a reference. The
        message names the variable, never its value.
    """
    if not is_reference(source):
        return source
    name = _text(source)[len(SOURCE_ENV_PREFIX):]
    if not _ENV_NAME.fullmatch(name):
        raise SourceError(f"source {display_source(source)!r} is not a valid reference: write env:NAME, NAME made "
                          "of letters, digits and underscores, not starting with a digit")
    value = (os.environ if environ is None else environ).get(name)
    if value is None:
        raise SourceError(f"source env:{name}: the environment variable {name} is not set")
    value = value.strip()
    if not value:
        raise SourceError(f"source env:{name}: the environment variable {name} is empty")
    if is_reference(value):
        raise SourceError(f"source env:{name}: the environment variable {name} holds another env: reference; "
                          "references do not nest")
    return value


# --------------------------------------------------------------------------------------------- reading


def _text(source: Source) -> str:
    return source if isinstance(source, str) else os.fsdecode(os.fspath(source))


def _parse_url(text: str) -> _Url | None:
    """The parts of a URL, the userinfo read to the last ``@`` that can end it; None if unreadable.

    An ``@`` can end the userinfo when the user name before it (up to the first ``:``) holds no ``/`` or ``?``.
    Only the last such ``@`` is tried: when no host follows it the URL is unreadable (and masked up to it),
    rather than read at an earlier ``@``, which would show the rest of the password as the host. One exception,
    :func:`_rfc_reading`: ``user@host/db?password=a@b`` (no userinfo password) has a query password.
    """
    return _readings(text)[0]


def _readings(text: str) -> tuple[_Url | None, _Url | None]:
    """The reading of a URL (:func:`_parse_url`) and, when it is the RFC 3986 one, the last-``@`` reading it was
    chosen over (else None): whoever shows the URL masks what either calls a secret."""
    scheme = _SCHEME.match(text)
    if scheme is None:
        return None, None
    last = _last_at_reading(text, scheme)
    rfc = _rfc_reading(text, scheme, last)
    return (rfc, last) if rfc is not None else (last, None)


def _rfc_reading(text: str, scheme: re.Match[str], last: _Url | None) -> _Url | None:
    """The reading of ``user@host:5432/db?password=a@b`` (a query holding an ``@``), where the last ``@`` would
    make ``5432/db?password=a`` the password; None when the URL is not of that shape.

    Taken only when the last-``@`` reading's password holds a query (``?name=``) and the authority as RFC 3986
    bounds it (up to the first ``/``, ``?`` or ``#``) is a user name without a password, ``@``, then a host: a
    userinfo password may hold unencoded ``/ ? # @``, so a URL whose authority has a ``:`` before its ``@`` keeps
    the last-``@`` reading. Whoever shows such a URL masks what both readings call a secret (:func:`_secrets`).
    """
    if last is None or last.password is None or not _QUERY_IN_USERINFO.search(last.raw(last.password)):
        return None
    start = scheme.end()
    end = min((i for i in (text.find(c, start) for c in "/?#") if i >= 0), default=len(text))
    at = text.rfind("@", start, end)
    if at < 0 or ":" in text[start:at] or "@" in text[start:at]:
        return None
    return _url_after(text, scheme, at + 1, username=text[start:at], password=None)


def _last_at_reading(text: str, scheme: re.Match[str]) -> _Url | None:
    """The URL with its userinfo read to the last ``@`` whose user name holds no ``/`` or ``?``; None if no host
    follows that ``@``."""
    start = scheme.end()
    for at in (i for i in range(len(text) - 1, start - 1, -1) if text[i] == "@"):
        username, colon, _ = text[start:at].partition(":")
        if "/" not in username and "?" not in username:
            return _url_after(text, scheme, at + 1, username=username,
                              password=(start + len(username) + 1, at) if colon else None)
    return _url_after(text, scheme, start, username=None, password=None)


def _url_after(text: str, scheme: re.Match[str], host_start: int, *, username: str | None,
               password: tuple[int, int] | None) -> _Url | None:
    host_port = _HOST_PORT.match(text, host_start)
    if host_port is None:
        return None
    tail = host_port.end()
    query = text.find("?", tail)
    return _Url(text=text, scheme=scheme.group(0)[:-3], username=username, password=password,
                host=host_port.group("host"), port=int(host_port.group("port")) if host_port.group("port") else None,
                tail=tail, parameters=_parameters(text, query + 1) if query >= 0 else ())


def _parameters(text: str, start: int) -> tuple[tuple[str, tuple[int, int]], ...]:
    """Query parameters from ``start``: a value runs to the next ``&name=`` (so an unencoded ``&`` stays in it)."""
    return tuple((_normal_name(name), span) for name, span in _values(_PARAMETER.finditer(text[start:]), start))


def _values(found: Iterator[re.Match[str]], offset: int = 0) -> list[tuple[str, tuple[int, int]]]:
    """Each parameter's raw name and the span of its value, which runs to the next parameter or the end."""
    matches = list(found)
    if not matches:
        return []
    ends = [match.start() for match in matches[1:]] + [len(matches[0].string)]
    return [(match.group("name"), (offset + match.end(), offset + end))
            for match, end in zip(matches, ends, strict=True)]


def _normal_name(name: str) -> str:
    return re.sub(r"[\s_.\-]", "", unquote_plus(name)).lower()


def _is_credential(name: str) -> bool:
    return name in _CREDENTIAL_NAMES or name.endswith(_CREDENTIAL_SUFFIXES)


def _embedded_secrets(raw: str, *, depth: int = 0) -> list[str]:
    """The credential values inside a query value that is itself a connection string (libpq's ``conninfo``,
    ODBC's ``odbc_connect``: ``password=X``, ``PWD=X``, or a URL with a password, ``conninfo=postgresql://u:X@h``),
    plain or percent-encoded once or twice; [] otherwise."""
    found: list[str] = []
    for decoded in dict.fromkeys((raw, unquote_plus(raw), unquote_plus(unquote_plus(raw)))):
        found += [m.group("value").strip("'\"{}") for m in _CREDENTIAL_IN_TEXT.finditer(decoded)]
        if "://" in decoded and depth < 2:  # a URL inside the value: its own secrets
            found += _secrets(decoded[decoded.index("://") - len(_url_scheme_before(decoded)):], depth=depth + 1)[1]
    return [value for value in found if value]


def _url_scheme_before(text: str) -> str:
    """The scheme letters just before the first ``://`` of ``text`` (``postgresql`` of ``x=postgresql://...``)."""
    head = text[:text.index("://")]
    match = re.search(r"[A-Za-z][\w+.\-]*$", head)
    return match.group(0) if match else ""


def _is_secret_value(name: str, raw: str, *, depth: int = 0) -> bool:
    """A query value to mask whole: a credential's (``password``, ``token``, ...) or a connection string's that
    holds one (so ``?conninfo=password%3DX`` and ``?odbc_connect=...PWD%3DX`` never show X)."""
    return _is_credential(name) or bool(_embedded_secrets(raw, depth=depth))


def _secrets(text: str, *, depth: int = 0) -> tuple[list[tuple[int, int]], list[str]]:
    """Of a URL's text: the spans to mask, in order, and the raw secrets they hold (spans may overlap).

    Empty spans are kept (nothing to mask there). Besides the userinfo password and the credential values of
    the query as read, every ``?name=``, ``&name=`` or ``;name=`` with a credential name after ``://`` is
    masked to the next such pair, whatever the reading: an unencoded ``@`` in a query password cannot make
    part of it pass for the host. For a URL that cannot be read, all of ``://`` to the last ``@`` is masked
    (the user name too), and its secret is the part after the first ``:``.
    """
    after = text.index("://") + 3
    loose = [span for name, span in _values(_LOOSE_PARAMETER.finditer(text, after))
             if _is_secret_value(_normal_name(name), text[span[0]:span[1]], depth=depth)]
    url, other = _readings(text)
    if url is not None:
        readings = [url] if other is None else [url, other]  # an ambiguous URL: either reading's secrets are secret
        read = [span for reading in readings for span in (
            ([reading.password] if reading.password else [])
            + [span for name, span in reading.parameters if _is_secret_value(name, reading.raw(span), depth=depth)])]
        spans = read + loose
        raws = [text[start:end] for start, end in spans]
    else:
        last_at = text.rfind("@")
        userinfo = [(after, last_at)] if last_at > after else []
        spans = userinfo + loose
        raws = ([text[after:last_at].partition(":")[2]] if userinfo else []) + [text[a:b] for a, b in loose]
    return spans, raws + [inner for raw in raws for inner in _embedded_secrets(raw, depth=depth)]


def _splice(text: str, spans: list[tuple[int, int]]) -> str:
    """``text`` with each span, overlapping spans merged, replaced by :data:`MASK`."""
    merged: list[list[int]] = []
    for start, end in sorted(span for span in spans if span[1] > span[0]):
        if merged and start <= merged[-1][1]:
            merged[-1][1] = max(merged[-1][1], end)
        else:
            merged.append([start, end])
    for start, end in reversed(merged):
        text = text[:start] + MASK + text[end:]
    return text


def _secret_forms(source: Source) -> list[str]:
    """Every secret of the source, in every form a message may show it, longest first."""
    texts = [_text(source)]
    if is_reference(texts[0]):
        try:
            texts.append(resolve_source(texts[0]))
        except SourceError:
            pass
    raws = [raw for text in texts if "://" in text for raw in _secrets(text)[1]]
    # each reading an "@" allows: SQLAlchemy's own (the first "@") keeps a prefix, and shows the rest as the host
    raws += [piece for raw in raws for i in range(len(raw)) if raw[i] == "@" for piece in (raw[:i], raw[i + 1:])]
    forms: set[str] = set()
    for raw in raws:
        for plain in {raw, unquote(raw), unquote_plus(raw)}:
            forms |= {plain, quote(plain, safe=""), quote(plain, safe=" +"), quote_plus(plain),
                      plain.replace("\\", "\\\\").replace("'", "\\'"), repr(plain)[1:-1]}
    return sorted((form for form in forms if form), key=len, reverse=True)


def _meant(url: _Url) -> tuple[str | None, str | None, str | None, int | None, str | None]:
    """User, password, host, port and database as ``url`` means them (decoded as SQLAlchemy decodes them)."""
    path = url.text[url.tail:].split("?", 1)[0]
    return (unquote(url.username) if url.username is not None else None,
            unquote(url.raw(url.password)) if url.password is not None else None,
            url.host.strip("[]") or None, url.port, unquote(path[1:]) if path.startswith("/") else None)


def _sqlalchemy_reading(text: str) -> tuple[str | None, str | None, str | None, int | None, str | None] | None:
    from sqlalchemy.engine import make_url

    try:
        parsed = make_url(text)
    except Exception:  # noqa: BLE001 - any refusal means "not read as meant"
        return None
    return parsed.username, parsed.password, parsed.host or None, parsed.port, parsed.database
