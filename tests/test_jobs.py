"""Jobs without the web: what a job child does, and restart safety."""

from __future__ import annotations

import dataclasses
import os
import signal
import threading
import time
from datetime import timedelta

import pytest

from automl import quotas
from automl.datasets import make_churn
from automl.db import models as db
from automl.db.session import make_engine, session_scope, upgrade
from automl.errors import ArtifactSignatureError, DataError
from automl.jobs import LocalRunner, _claim, _finish, predict_rows, profile_upload, run_job
from automl.settings import from_environment
from automl.storage import artifact_key, get_storage


@pytest.fixture
def platform(tmp_path):
    settings = from_environment({"AUTOML_STATE_DIR": str(tmp_path)})
    upgrade(settings.database_url)
    engine = make_engine(settings.database_url)
    yield settings, engine
    engine.dispose()


def add_dataset(settings, engine, tmp_path, rows=300):
    path = tmp_path / "churn.csv"
    make_churn(rows, seed=0).to_csv(path, index=False)
    info = profile_upload(str(path), "churn.csv")
    dataset = db.Dataset(tenant="acme", owner="ana", name="churn", filename="churn.csv", format="csv",
                         size_bytes=path.stat().st_size, created_at=db.utcnow(), **info)
    dataset.storage_key = artifact_key("acme", "datasets", dataset.id, "data.csv")
    get_storage(settings).put_file(dataset.storage_key, str(path))
    with session_scope(engine) as s:
        from automl.db.session import get_or_create_tenant

        get_or_create_tenant(s, "acme", settings)
        s.add(dataset)
    return dataset


def submit(settings, engine, dataset, **params):
    return quotas.submit_job(engine, "acme", "ana", kind="train", dataset_id=dataset.id, settings=settings,
                             params={"target": "churned", "time_budget": None, "max_trials": 2, **params})


def job(engine, job_id):
    with session_scope(engine) as s:
        return s.get(db.Job, job_id)


def test_profile_describes_columns_and_refuses_one_column(tmp_path):
    path = tmp_path / "data.csv"
    make_churn(50, seed=0).to_csv(path, index=False)
    info = profile_upload(str(path), "data.csv")
    assert info["n_rows"] == 50 and len(info["preview"]) == 20
    kinds = {c["name"]: c["kind"] for c in info["columns"]}
    assert kinds["churned"] in ("categorical", "numeric")
    path.write_text("a:b\n1:2\n")
    with pytest.raises(DataError) as caught:
        profile_upload(str(path), "mine.csv")
    assert caught.value.code == "file_one_column" and "mine.csv" in caught.value.message("en")


def test_a_queued_job_runs_to_a_signed_model(platform, tmp_path):
    settings, engine = platform
    dataset = add_dataset(settings, engine, tmp_path)
    queued = submit(settings, engine, dataset)
    assert run_job(queued.id, settings) == "succeeded"
    done = job(engine, queued.id)
    assert done.status == "succeeded" and done.progress["trials"] >= 2 and done.compute_seconds > 0
    with session_scope(engine) as s:
        model = s.get(db.Model, done.model_id)
        assert model.signature.startswith("v1:") and model.size_bytes > 0
        assert get_storage(settings).exists(model.storage_key)
        used = quotas.compute_seconds_this_month(s, "acme")
    assert used == pytest.approx(done.compute_seconds)
    assert run_job(queued.id, settings) == "skipped"  # a redelivered job is not run twice


def test_a_tampered_or_unsigned_model_is_refused_before_unpickling(platform, tmp_path):
    settings, engine = platform
    dataset = add_dataset(settings, engine, tmp_path)
    queued = submit(settings, engine, dataset)
    run_job(queued.id, settings)
    with session_scope(engine) as s:
        model = s.get(db.Model, job(engine, queued.id).model_id)
    rows = [{"customer_id": "x"}]
    path = settings.storage_root / model.storage_key
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0xFF
    path.write_bytes(bytes(data))
    for signature, code in ((model.signature, "artifact_tampered"), ("", "artifact_unsigned")):
        with pytest.raises(ArtifactSignatureError) as caught:
            predict_rows(f"{model.id}-{code}", model.storage_key, signature, rows, settings)
        assert caught.value.code == code


def test_a_job_on_a_bad_target_fails_with_the_engines_reason(platform, tmp_path):
    settings, engine = platform
    dataset = add_dataset(settings, engine, tmp_path)
    queued = submit(settings, engine, dataset, target="nope")
    assert run_job(queued.id, settings) == "failed"
    failed = job(engine, queued.id)
    assert failed.error_code == "target_missing" and failed.error_params["target"] == "nope"


class RecordingRunner(LocalRunner):
    """The runner's bookkeeping without its process pools."""

    def __init__(self, settings):
        self.settings, self.submitted = settings, []
        self._broken = threading.Event()

    def submit(self, job_id):
        self.submitted.append(job_id)


def test_restart_requeues_interrupted_jobs_then_fails_them_with_a_reason(platform, tmp_path):
    settings, engine = platform
    dataset = add_dataset(settings, engine, tmp_path)
    queued = submit(settings, engine, dataset)
    assert _claim(engine, queued.id).attempt == 1  # a child took it, then the service died
    runner = RecordingRunner(settings)
    assert runner.recover(engine)["requeued"] == [queued.id]
    assert job(engine, queued.id).status == "queued" and runner.submitted == [queued.id]
    _claim(engine, queued.id)  # second attempt, interrupted again
    assert runner.recover(engine)["failed"] == [queued.id]
    failed = job(engine, queued.id)
    assert failed.status == "failed" and failed.error_code == "job_interrupted"
    assert runner.recover(engine) == {"requeued": [], "failed": [], "queued": []}


def test_a_run_taken_over_after_a_restart_writes_nothing(platform, tmp_path):
    """The old child may still be running when the restarted service queues the job
    again: it must notice, stop, and leave the new run's job alone."""
    settings, engine = platform
    dataset = add_dataset(settings, engine, tmp_path, rows=2000)
    queued = submit(settings, engine, dataset, time_budget=120, max_trials=None)
    result = {}
    old = threading.Thread(target=lambda: result.update(old=run_job(queued.id, settings)))
    old.start()
    deadline = time.monotonic() + 60
    while job(engine, queued.id).status != "running" and time.monotonic() < deadline:
        time.sleep(0.05)
    RecordingRunner(settings).recover(engine)  # the restart: job queued again (attempt 2 to come)
    claim = _claim(engine, queued.id)
    old.join(timeout=60)
    assert result["old"] == "superseded"
    current = job(engine, queued.id)
    assert current.status == "running" and current.attempts == claim.attempt == 2 and current.model_id is None
    assert _finish(engine, queued.id, dataclasses.replace(claim, attempt=1), status="succeeded") is False
    with session_scope(engine) as s:
        assert s.query(db.Model).count() == 0


def test_reap_takes_back_a_job_whose_heartbeat_stopped(platform, tmp_path):
    settings, engine = platform
    dataset = add_dataset(settings, engine, tmp_path)
    queued = submit(settings, engine, dataset)
    _claim(engine, queued.id)
    runner = RecordingRunner(settings)
    assert runner.reap(engine, stale_after=30)["requeued"] == []  # its heartbeat is fresh
    with session_scope(engine) as s:
        s.get(db.Job, queued.id).heartbeat_at = db.utcnow() - timedelta(seconds=31)
    assert runner.reap(engine, stale_after=30)["requeued"] == [queued.id]
    _claim(engine, queued.id)
    with session_scope(engine) as s:
        s.get(db.Job, queued.id).heartbeat_at = db.utcnow() - timedelta(seconds=31)
    assert runner.reap(engine, stale_after=30)["failed"] == [queued.id]
    assert job(engine, queued.id).error_code == "job_lost"


def wait(predicate, deadline=90.0):
    end = time.monotonic() + deadline
    while not predicate():
        assert time.monotonic() < end, "timed out"
        time.sleep(0.1)


def test_a_killed_job_process_is_replaced_and_its_job_runs_again(platform, tmp_path):
    settings, engine = platform
    dataset = add_dataset(settings, engine, tmp_path, rows=2000)
    queued = submit(settings, engine, dataset, time_budget=60, max_trials=None)
    runner = LocalRunner(settings)
    try:
        runner.submit(queued.id)
        wait(lambda: job(engine, queued.id).status == "running")
        for pid in list(runner.jobs._processes):  # the pool's children: kill them as the OOM killer would
            os.kill(pid, signal.SIGKILL)
        taken = {}
        wait(lambda: taken.update(runner.reap(engine)) or taken.get("requeued"))
        assert taken["requeued"] == [queued.id]
        wait(lambda: job(engine, queued.id).attempts == 2 and job(engine, queued.id).status == "running")
        with session_scope(engine) as s:
            s.get(db.Job, queued.id).cancel_requested = True
        wait(lambda: job(engine, queued.id).status not in ("queued", "running"))
        done = job(engine, queued.id)
        assert done.status == "cancelled" and done.attempts == 2 and done.model_id
    finally:
        runner.shutdown()
