"""Restarting the platform service while a job runs loses nothing."""

from __future__ import annotations

import os
import signal
import time

import httpx
import pytest

from automl.datasets import make_churn

from .conftest import SERVICE_ENV, SERVICE_MODULE, start_hub


@pytest.fixture(scope="module")
def restarting_hub(tmp_path_factory):
    # The hub restarts a managed service that exits, at its next poll: poll often.
    with start_hub(tmp_path_factory.mktemp("restart"), SERVICE_MODULE, service_env=SERVICE_ENV,
                   extra_config="\nc.LocalProcessSpawner.poll_interval = 1\n") as running:
        yield running


def service_pid(hub) -> int | None:
    """The process running `python -m hub.service` for this hub (other hubs may
    run on this machine): the one whose environment names this hub's state dir."""
    state = f"AUTOML_STATE_DIR={hub.log.parent / 'state'}".encode()
    for pid in os.listdir("/proc"):
        if not pid.isdigit():
            continue
        try:
            with open(f"/proc/{pid}/cmdline", "rb") as handle:
                argv = handle.read().split(b"\0")
            with open(f"/proc/{pid}/environ", "rb") as handle:
                environ = handle.read().split(b"\0")
        except OSError:
            continue
        if SERVICE_MODULE.encode() in argv and state in environ:
            return int(pid)
    return None


def until(predicate, deadline=90.0):
    end = time.monotonic() + deadline
    while True:
        try:
            value = predicate()
        except (httpx.HTTPError, ValueError):
            value = None  # the service is restarting: the proxy answers with its own error page
        if value:
            return value
        assert time.monotonic() < end, "timed out"
        time.sleep(0.2)


def test_a_job_running_when_the_service_dies_runs_again(restarting_hub):
    client = httpx.Client(base_url=restarting_hub.service_url + "api/", timeout=30,
                          headers={"Authorization": f"token {restarting_hub.tokens['ana']}"})
    data = make_churn(2000, seed=1).to_csv(index=False).encode()
    dataset = client.post("datasets", params={"filename": "churn.csv"}, content=data).json()
    job = client.post("jobs", json={"dataset_id": dataset["id"], "target": "churned", "time_budget": 120}).json()
    until(lambda: client.get(f"jobs/{job['id']}").json()["status"] == "running")
    before = service_pid(restarting_hub)
    os.kill(before, signal.SIGKILL)
    until(lambda: service_pid(restarting_hub) not in (None, before))
    again = until(lambda: (j := client.get(f"jobs/{job['id']}").json())["attempts"] == 2
                  and j["status"] == "running" and j)
    assert again["error"] is None
    assert client.post(f"jobs/{job['id']}/cancel").status_code == 202
    done = until(lambda: (j := client.get(f"jobs/{job['id']}").json())["status"] not in ("queued", "running") and j)
    assert done["status"] == "cancelled" and done["attempts"] == 2 and done["model_id"]
    client.close()
