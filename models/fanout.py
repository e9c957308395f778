"""Fan-out of independent pieces of work (cross-validation fits, bootstrap replicates, per-outcome fits).

The model code says *what* is independent by calling a :class:`Mapper`; *where* it runs is the caller's choice:
:func:`sequential` here (the default, no dependency), or a Dask cluster through prefect-dask (``pipelines``). Every
piece is a pure function of its item and the shared inputs, seeded by the item, and results come back in item order,
so any mapper gives the same results.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any, Protocol, TypeVar

T = TypeVar("T")
R = TypeVar("R")


class Mapper(Protocol):
    """``mapper(fn, items, shared)`` returns ``[fn(item, *shared) for item in items]``, in order, anywhere."""

    def __call__(self, fn: Callable[..., R], items: Sequence[Any], shared: tuple[Any, ...] = ()) -> list[R]: ...


def sequential(fn: Callable[..., R], items: Sequence[Any], shared: tuple[Any, ...] = ()) -> list[R]:
    """Run every piece here, one after the other."""
    return [fn(item, *shared) for item in items]


PIECES = 8
"""Pieces a cheap, even workload (bootstrap replicates) is cut into when it leaves the process."""


def pieces_for(mapper: Mapper, items: int, *, most: int = PIECES) -> int:
    """How many pieces to cut ``items`` equal pieces of work into: one for :func:`sequential` (no overhead)."""
    return 1 if mapper is sequential else max(1, min(int(items), most))
