"""Errors of a run's input, and retrying what may succeed a moment later.

:class:`InputError` and its subclasses refuse a whole input (manifest ``refused``; the CLI maps them to
exit code 2). :class:`SourceUnavailable` is not one of them: the input was never judged because the
source could not be reached or was lost in the middle of a read, so the run fails (manifest ``failed``)
and is worth running again later. :func:`retry_call` with a :class:`Retry` policy retries only such
transient failures, never a bad input or a programming error.
"""

from __future__ import annotations

import errno
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TypeVar

T = TypeVar("T")


class InputError(Exception):
    """The input as a whole cannot be taken: a clear message, no traceback, nothing registered."""


class SourceError(InputError):
    """The source cannot be read: missing, empty, truncated, not UTF-8, not a database."""


class ContractError(InputError):
    """The source does not have the shape of the contract (a required column is absent)."""


class SourceUnavailable(Exception):
    """The source could not be reached, or the connection was lost mid-read (a database down, a network
    share gone): not a bad input but a failed run, worth a retry. Raised only after the reader's own retries;
    the message names the host and port, never a password. ``detail`` is what failed, without the source."""

    def __init__(self, message: str, *, detail: str | None = None) -> None:
        super().__init__(message)
        self.detail = detail if detail is not None else message

    def __reduce__(self) -> tuple[object, ...]:  # pickled by Prefect with its task's state: keep ``detail``
        return (type(self), (str(self),), {"detail": self.detail})


@dataclass(frozen=True)
class Retry:
    """How often to try, and how long to wait before each further attempt.

    Parameters
    ----------
    attempts
        Attempts in all (1: no retry).
    delays
        Seconds to wait before the 2nd, 3rd, ... attempt; the last delay repeats when there are more
        attempts than delays.
    """

    attempts: int = 3
    delays: tuple[float, ...] = (1.0, 4.0)

    def __post_init__(self) -> None:
        if not isinstance(self.attempts, int) or self.attempts < 1:
            raise ValueError(f"attempts must be an integer >= 1; got {self.attempts!r}")
        if any(d < 0 for d in self.delays) or (self.attempts > 1 and not self.delays):
            raise ValueError(f"delays must be seconds >= 0, at least one when retrying; got {self.delays!r}")

    def delay(self, attempt: int) -> float:
        """Seconds to wait after failed attempt number ``attempt`` (1-based)."""
        return float(self.delays[min(attempt, len(self.delays)) - 1])

    def describe(self) -> str:
        waits = ", ".join(f"{self.delay(a):g} s" for a in range(1, self.attempts))
        return f"{self.attempts} attempts" + (f" (waiting {waits})" if waits else "")


def retry_call(action: Callable[[], T], *, policy: Retry, retry_if: Callable[[BaseException], bool],
               sleep: Callable[[float], None] = time.sleep) -> T:
    """``action()``, tried again after ``policy``'s delays while it raises an error ``retry_if`` accepts.

    Any other error, and the accepted error of the last attempt, propagates unchanged.
    """
    for attempt in range(1, policy.attempts + 1):
        try:
            return action()
        except Exception as error:
            if attempt >= policy.attempts or not retry_if(error):
                raise
        sleep(policy.delay(attempt))
    raise AssertionError("unreachable")  # pragma: no cover


# Errors of a file write that can clear by themselves: a busy or stale network share, an interrupted or
# timed-out call, an I/O error of a remote file system. A full disk (ENOSPC), a missing folder, a
# permission or a programming error is not retried: it does not clear in seconds.
TRANSIENT_WRITE_ERRNOS = frozenset(code for code in (
    errno.EAGAIN, errno.EWOULDBLOCK, errno.EINTR, errno.EBUSY, errno.ETIMEDOUT, errno.EIO,
    getattr(errno, "ESTALE", None)) if code is not None)
WRITE_RETRY = Retry(attempts=3, delays=(0.2, 1.0))


def is_transient_write_error(error: BaseException) -> bool:
    return isinstance(error, OSError) and error.errno in TRANSIENT_WRITE_ERRNOS


def retry_write(action: Callable[[], T], *, policy: Retry | None = None,
                sleep: Callable[[float], None] = time.sleep) -> T:
    """A file write (``action`` must start from scratch each time, e.g. write a temporary file and rename
    it) retried on :data:`TRANSIENT_WRITE_ERRNOS` only."""
    return retry_call(action, policy=policy or WRITE_RETRY, retry_if=is_transient_write_error, sleep=sleep)
