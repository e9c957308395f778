"""``cementrisk serve`` seen as a person sees it: the UI of serve's own loopback server, opened in Debian's
Chromium at the address serve prints, reaches its API (not Prefect's default port), lists the nightly
deployment and shows a completed run with its artifacts, and asks nothing of any other address."""

from __future__ import annotations

import json
import os
import re
import signal
import sys
from pathlib import Path
from urllib.parse import urlsplit

import pytest

from pipelines.serve import DEPLOYMENT_NAME, FLOW_NAME
from tests.pipelines.test_serve import (RUN_SECONDS, SERVER_START_SECONDS, _alive, _api, _clean_env, _eventually,
                                        _kill_group, _popen, _show, _sigterm_and_wait,
                                        small_source)  # noqa: F401 - a fixture
from tests.reports.test_publish import CHROMIUM, CHROMIUM_FLAGS, _browser_or_skip

FINAL_STATES = ("COMPLETED", "FAILED", "CRASHED", "CANCELLED")
SUMMARY_KEY = "cementrisk-run-summary"
NO_API = re.compile(r"Can.t connect to Server API|Unable to connect to Prefect server")
UI_TIMEOUT_MS = 30_000  # for each page's content: the UI fills it from the API, slowly on a busy machine


def _printed(pattern: str, output: str) -> str:
    match = re.search(pattern, output)
    assert match, f"serve did not print {pattern!r}:\n{output}"
    return match.group(1)


def _run_to_the_end(api: str, deployment_id: str, key: str) -> dict:
    """A run of the deployment, started through the API now (not at 02:00), once it has finished."""
    flow_run = _api("POST", f"{api}/deployments/{deployment_id}/create_flow_run", {"idempotency_key": key})
    return _eventually(lambda: (run := _api("GET", f"{api}/flow_runs/{flow_run['id']}"))["state_type"] in
                       FINAL_STATES and run, RUN_SECONDS, "the triggered flow run did not finish", every=1)


@pytest.mark.slow
def test_the_ui_serve_prints_shows_the_deployment_and_a_completed_run_with_its_artifacts(small_source, tmp_path):
    sync_api = _browser_or_skip()
    workspace, log = tmp_path / "ws", tmp_path / "serve.log"
    # the runner looks for due runs every 2 s instead of 10: the triggered run starts at once
    serve = _popen([sys.executable, "-m", "pipelines.cli", "serve", "--source", str(small_source),
                    "--workspace", str(workspace), "--no-models"], log, _clean_env(PREFECT_RUNNER_POLL_FREQUENCY="2"))
    server_pid = None
    try:
        _eventually(lambda: "serving until stopped" in log.read_text() or serve.poll() is not None,
                    SERVER_START_SECONDS, "serve did not start serving")
        assert serve.poll() is None, log.read_text()
        output = log.read_text()
        server_pid = int(_printed(r"Prefect server started: pid (\d+)", output))
        api, ui = _printed(r"Prefect API: (\S+)", output), _printed(r"Prefect UI: (\S+)", output)
        deployment_id = _printed(r"registered \(id ([0-9a-f-]+)\)", output)
        deployment_page = _printed(r"in the UI: (\S+)", output)
        run = _run_to_the_end(api, deployment_id, f"test-serve-ui-{tmp_path.name}")
        assert run["state_type"] == "COMPLETED", log.read_text()
        run_id = json.loads((workspace / "published.json").read_text())["run_id"]
        artifacts = _api("POST", f"{api}/artifacts/filter", {"artifacts": {"flow_run_id": {"any_": [run["id"]]}}})
        artifact_keys = sorted(artifact["key"] for artifact in artifacts)
        assert SUMMARY_KEY in artifact_keys

        seen = _look_at_the_ui(sync_api, ui=ui, deployment_page=deployment_page, run=run, run_id=run_id,
                               artifact_keys=artifact_keys, shots=tmp_path / "ui")
        origin = "{0.scheme}://{0.netloc}".format(urlsplit(ui))
        assert seen["api_calls"] and all(url.startswith(f"{api}/") for url in seen["api_calls"]), seen["api_calls"]
        assert [url for url in seen["requests"] if not url.startswith(origin)] == []  # no 4200, nothing off the machine

        assert _sigterm_and_wait(serve) == 0, log.read_text()
        _eventually(lambda: not _alive(server_pid), 30, "serve's Prefect server outlived serve")
    finally:
        _kill_group(serve)
        _show(log, workspace / ".prefect" / "server.log")
        if server_pid is not None and _alive(server_pid):
            os.killpg(server_pid, signal.SIGKILL)


def _look_at_the_ui(sync_api, *, ui: str, deployment_page: str, run: dict, run_id: str, artifact_keys: list[str],
                    shots: Path) -> dict[str, list[str]]:
    """Open the UI's pages as a person would, from its menu, and check what they show; what the browser asked for.

    The UI is a single-page app that fills its pages from the API: each check waits for what only the API's
    answer can show, then finds no "cannot reach the API" banner.
    """
    expect = sync_api.expect
    shots.mkdir()
    requests: list[str] = []
    with sync_api.sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_FLAGS[1:], headless=True)
        try:
            page = browser.new_page(viewport={"width": 1400, "height": 1000})
            page.set_default_timeout(UI_TIMEOUT_MS)
            page.on("request", lambda request: requests.append(request.url))
            page.on("websocket", lambda socket: requests.append(socket.url.replace("ws", "http", 1)))

            def click(text: str) -> None:
                page.locator("a", has_text=re.compile(f"^{re.escape(text)}$")).first.click()

            def look(name: str, *texts: str) -> None:
                for text in texts:
                    expect(page.get_by_text(text, exact=True).first).to_be_visible(timeout=UI_TIMEOUT_MS)
                expect(page.get_by_text(NO_API)).to_have_count(0)
                page.screenshot(path=str(shots / f"{name}.png"))

            page.goto(ui)  # the address serve printed: the dashboard
            click("Deployments")
            look("deployments", DEPLOYMENT_NAME, FLOW_NAME)
            page.goto(deployment_page)  # the deployment's page, as serve printed it
            look("deployment", DEPLOYMENT_NAME, FLOW_NAME, run["name"], "Completed")
            click("Runs")
            look("runs", run["name"], "Completed")
            click(run["name"])
            look("flow-run", run["name"], "Completed")
            page.get_by_role("tablist").get_by_text("Artifacts", exact=True).click()
            look("flow-run-artifacts", *artifact_keys)
            page.get_by_text(SUMMARY_KEY, exact=True).first.click()
            look("summary", f"cementrisk run {run_id}: ok")  # the markdown's heading, rendered
            page.goto(f"{ui}/artifacts")  # not in the menu of Prefect's V1 UI
            look("artifacts", *artifact_keys)
        finally:
            browser.close()
    page_requests = [url for url in requests if url.startswith(("http:", "https:"))]
    return {"requests": page_requests,
            "api_calls": [url for url in page_requests if urlsplit(url).path.startswith("/api/")]}
