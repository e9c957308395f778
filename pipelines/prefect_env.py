"""Prefect settings for cementrisk: analytics off, the API on this machine only, ephemeral by default.

Call :func:`configure_prefect` before anything imports ``prefect``: Prefect reads its settings at import.
"""

from __future__ import annotations

import os
from pathlib import Path
from urllib.parse import urlparse

from workspace.runs import PREFECT_DIR, prefect_home

LOOPBACK_HOSTS = ("127.0.0.1", "localhost", "::1", "[::1]")


class PrefectConfigError(RuntimeError):
    """PREFECT_API_URL points off this machine."""


def configure_prefect(workspace: Path) -> dict[str, str]:
    """Set Prefect's environment for a run and return what was set.

    Without ``PREFECT_API_URL`` Prefect runs its embedded, ephemeral API with its home under the
    workspace. With it, the URL must be on this machine (loopback).

    Raises
    ------
    PrefectConfigError
        ``PREFECT_API_URL`` names a host other than loopback.
    """
    settings = {
        "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
        "DO_NOT_TRACK": "1",
        "PREFECT_HOME": str(Path(workspace).resolve() / PREFECT_DIR),
        "PREFECT_SERVER_EPHEMERAL_ENABLED": "true",
        "PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS": "180",
        "PREFECT_LOGGING_LEVEL": "WARNING",
        "PREFECT_LOGGING_TO_API_ENABLED": "false",
        "PREFECT_RESULTS_PERSIST_BY_DEFAULT": "false",
        "PREFECT_TASKS_DEFAULT_PERSIST_RESULT": "false",
    }
    api_url = os.environ.get("PREFECT_API_URL", "")
    if api_url:
        host = urlparse(api_url).hostname or ""
        if host not in LOOPBACK_HOSTS:
            raise PrefectConfigError(
                f"PREFECT_API_URL must point to a Prefect server on this machine (loopback), not {host!r}")
    applied = {}
    for key, value in settings.items():
        if key == "PREFECT_SERVER_ANALYTICS_ENABLED" or key == "DO_NOT_TRACK":
            os.environ[key] = value  # never overridable: no analytics leave the machine
        else:
            os.environ.setdefault(key, value)
        applied[key] = os.environ[key]
    if Path(applied["PREFECT_HOME"]) == Path(workspace).resolve() / PREFECT_DIR:
        prefect_home(workspace)  # the workspace's own: made by its owner
    else:
        Path(applied["PREFECT_HOME"]).mkdir(parents=True, exist_ok=True)  # a home the user chose, elsewhere
    return applied
