"""Progress is a side channel: tasks reach the installed reporter with their stage, counts and end; the results of a
mapped piece of work are the same with or without it, local or not."""

from __future__ import annotations

import logging

from models import progress
from models.fanout import sequential


class Recorder:
    def __init__(self) -> None:
        self.events: list[tuple] = []

    def start(self, key: int, label: str, total: int) -> None:
        self.events.append(("start", label, total))

    def advance(self, key: int, done: int) -> None:
        self.events.append(("advance", done))

    def finish(self, key: int, seconds: float) -> None:
        self.events.append(("finish", seconds >= 0))


def square(item: int, offset: int) -> int:
    return item * item + offset


def test_a_local_mapping_is_reported_piece_by_piece_under_its_stage():
    recorder = Recorder()
    with progress.reporting(recorder), progress.stage("leakage_any"):
        results = progress.mapped(sequential, square, [1, 2, 3], (10,), label="fits", local=True)
    assert results == [11, 14, 19] == sequential(square, [1, 2, 3], (10,))
    assert recorder.events == [("start", "leakage_any: fits", 3), ("advance", 1), ("advance", 2), ("advance", 3),
                               ("finish", True)]


def test_work_done_elsewhere_is_reported_when_it_comes_back():
    recorder, calls = Recorder(), []

    def remote(fn, items, shared=()):
        calls.append(len(items))
        return [fn(item, *shared) for item in items]

    with progress.reporting(recorder):
        assert progress.mapped(remote, square, [4, 5], (0,), label="replicates", local=False) == [16, 25]
    assert calls == [2]
    assert recorder.events == [("start", "replicates", 2), ("advance", 2), ("finish", True)]


def test_without_a_reporter_each_finished_task_is_one_log_line(caplog):
    with caplog.at_level(logging.INFO, logger="cementrisk.progress"), progress.stage("infection_90d"):
        with progress.task("bootstrap", 7) as work:
            work.advance(7)
    assert [r.getMessage().split(" in ")[0] for r in caplog.records] == ["infection_90d: bootstrap: 7 done"]


def test_the_previous_reporter_is_back_after_a_run_even_when_it_failed():
    outer, inner = Recorder(), Recorder()
    with progress.reporting(outer):
        try:
            with progress.reporting(inner):
                raise RuntimeError("the run failed")
        except RuntimeError:
            pass
        with progress.task("after", 1):
            pass
    assert inner.events == [] and outer.events[0] == ("start", "after", 1)
