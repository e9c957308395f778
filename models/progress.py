"""Progress of long steps for the person waiting: what is being done, how much of it is done, how long is left.

The model and report code announce work with :func:`task` (a label and a count of pieces) and advance it piece by
piece; :func:`stage` prefixes the labels of the work inside it (the outcome being trained, say). What is shown is the
caller's choice: :func:`reporting` installs a :class:`Reporter` for the duration of a run (the command line shows a
bar with counts and the time left on a terminal, one line per finished task in a log). With none installed, every
finished task is one INFO line on the logger ``cementrisk.progress`` (what a Prefect worker's log shows when that
logger is among Prefect's extra loggers). Like logging, it is a side channel: no result depends on it.

Work that leaves the process (a Dask mapper) is reported when it comes back, not piece by piece.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from typing import Any, Protocol, TypeVar

R = TypeVar("R")
LOGGER = logging.getLogger("cementrisk.progress")


class Reporter(Protocol):
    """Receives the tasks of a run: started with their count of pieces, advanced, finished."""

    def start(self, key: int, label: str, total: int) -> None: ...

    def advance(self, key: int, done: int) -> None: ...

    def finish(self, key: int, seconds: float) -> None: ...


class LineReporter:
    """One line per finished task, ``leakage_any: cross-validation fits: 45 done in 12.3 s``, given to ``write``
    (default: an INFO line on :data:`LOGGER`)."""

    def __init__(self, write: Callable[[str], None] | None = None, *, indent: str = "") -> None:
        self._tasks: dict[int, tuple[str, int]] = {}
        self._write = write or LOGGER.info
        self._indent = indent

    def start(self, key: int, label: str, total: int) -> None:
        self._tasks[key] = (label, total)

    def advance(self, key: int, done: int) -> None:
        pass

    def finish(self, key: int, seconds: float) -> None:
        label, total = self._tasks.pop(key, ("?", 0))
        self._write(f"{self._indent}{label}: {total:,} done in {seconds:.1f} s")


_lock = threading.Lock()
_reporter: Reporter = LineReporter()
_keys = iter(range(1, 1 << 62))
_prefix = threading.local()


@contextmanager
def reporting(reporter: Reporter) -> Iterator[Reporter]:
    """Show the tasks started inside on ``reporter``; the previous reporter is back afterwards."""
    global _reporter
    with _lock:
        previous, _reporter = _reporter, reporter
    try:
        yield reporter
    finally:
        with _lock:
            _reporter = previous


@contextmanager
def stage(name: str) -> Iterator[None]:
    """Prefix the labels of the tasks started inside (in this thread) with ``name: ``."""
    names = getattr(_prefix, "names", ())
    _prefix.names = (*names, name)
    try:
        yield
    finally:
        _prefix.names = names


def _label(label: str) -> str:
    return ": ".join((*getattr(_prefix, "names", ()), label))


class Task:
    """A started task: :meth:`advance` after each piece; finished when its ``with`` block ends."""

    def __init__(self, label: str, total: int) -> None:
        self.key = next(_keys)
        self.total = int(total)
        self.done = 0
        self._start = time.perf_counter()
        self._reporter = _reporter
        self._reporter.start(self.key, _label(label), self.total)

    def advance(self, pieces: int = 1) -> None:
        self.done += pieces
        self._reporter.advance(self.key, self.done)

    def finish(self) -> None:
        self._reporter.finish(self.key, time.perf_counter() - self._start)


@contextmanager
def task(label: str, total: int) -> Iterator[Task]:
    """A task of ``total`` pieces, labelled ``label`` (under the current :func:`stage`)."""
    started = Task(label, total)
    try:
        yield started
    finally:
        started.finish()


def mapped(mapper: Callable[..., list[R]], fn: Callable[..., R], items: Sequence[Any], shared: tuple[Any, ...] = (),
           *, label: str, local: bool) -> list[R]:
    """``mapper(fn, items, shared)``, reported as a task of ``len(items)`` pieces: piece by piece when the work
    runs here (``local``: the sequential mapper), at once when it comes back from elsewhere. Same results. No
    items, no task."""
    if not items:
        return []
    with task(label, len(items)) as work:
        if not local:
            results = mapper(fn, items, shared)
            work.advance(len(items))
            return results
        results = []
        for item in items:
            results.append(fn(item, *shared))
            work.advance()
        return results
