"""The model fits' fan-out on a Dask cluster: each outcome's fit, and inside it each cross-validation fit.

Plain functions that run on Dask workers; they never talk to Prefect (a worker needs no Prefect API). The flow
reaches the cluster through its prefect-dask task runner (:func:`pipelines.flows.flow_with_runner`); everything here
also works with any ``distributed.Client``.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from distributed import Client, worker_client

from models.outcomes import OUTCOMES
from models.training import OutcomeResult, TrainingConfig, train_outcome_from


def fit_outcomes(client: Client, workspace: Path, frames_dir: Path,
                 config: TrainingConfig) -> dict[str, OutcomeResult]:
    """Every outcome's fit as one piece of work on the cluster, results in :data:`OUTCOMES` order."""
    futures = {spec.name: client.submit(fit_outcome, spec.name, str(frames_dir), config, str(workspace), pure=False,
                                        key=f"fit-{spec.name}-{Path(frames_dir).name}")
               for spec in OUTCOMES}
    return {name: future.result() for name, future in futures.items()}


def fit_outcome(outcome: str, frames_dir: str, config: TrainingConfig, workspace: str) -> OutcomeResult:
    """On a worker: one outcome's fit, its cross-validation fits spread over the cluster."""
    return train_outcome_from(outcome, Path(frames_dir), config=config, workspace=Path(workspace),
                              mapper=on_cluster)


def on_cluster(fn: Callable[..., Any], items: Sequence[Any], shared: tuple[Any, ...] = ()) -> list[Any]:
    """A :class:`models.fanout.Mapper` for code already running on a worker: the shared inputs are sent once."""
    with worker_client() as client:  # leaves the worker's thread free while it waits for the pieces
        # hash=False: keys of their own, so two fits that share an equal input (an int, a frame) never release
        # each other's copy ("lost dependencies")
        scattered = client.scatter(list(shared), broadcast=True, hash=False) if shared else []
        futures = client.map(fn, items, *[[s] * len(items) for s in scattered], pure=False)
        return client.gather(futures)
