"""Quotas checked at submission, atomically — on SQLite and PostgreSQL."""

from __future__ import annotations

import dataclasses
import threading
import uuid
from datetime import datetime, timedelta, timezone

import pytest
from sqlalchemy import func, select, update

from automl.db import Dataset, Job, Model, Tenant, Usage, new_id, session_scope
from automl.errors import ParameterError, QuotaError
from automl.quotas import (
    check_storage,
    check_upload_size,
    month_start,
    next_month_start,
    quota_status,
    record_usage,
    submit_job,
    upload_limit,
)

from test_db import SETTINGS, count, engine, new_plan, new_tenant  # noqa: F401 - `engine` is a fixture


def refused(engine, tenant, code, status, **job):
    """Submit, expect the refusal `code`/`status`, and check nothing was inserted."""
    before = count(engine, Job, tenant)
    with pytest.raises(QuotaError) as caught:
        submit_job(engine, tenant, "ann", settings=SETTINGS, **{"kind": "train", **job})
    assert (caught.value.code, caught.value.http_status) == (code, status)
    assert count(engine, Job, tenant) == before
    return caught.value


def set_status(engine, job_id, status):
    with session_scope(engine) as session:
        session.execute(update(Job).where(Job.id == job_id).values(status=status))


# --- concurrent jobs and compute minutes (429) -------------------------------


def test_new_tenant_gets_the_trial_and_its_one_slot(engine):
    tenant = f"new-{uuid.uuid4().hex[:8]}"
    job = submit_job(engine, tenant, "ann", kind="train", params={"target": "y"}, settings=SETTINGS)
    assert (job.tenant, job.owner, job.status, job.device, job.params) == (tenant, "ann", "queued", "cpu",
                                                                           {"target": "y"})
    assert len(job.id) == 32
    with session_scope(engine) as session:
        assert session.get(Tenant, tenant).plan == "trial"
    error = refused(engine, tenant, "quota_jobs_running", 429)
    text = error.message("en")
    assert "'trial'" in text and "(1)" in text and "Wait" in text
    assert "« trial »" in error.message("fr")


def test_a_finished_job_frees_its_slot(engine):
    tenant = new_tenant(engine, new_plan(engine, max_concurrent_jobs=2))
    first = submit_job(engine, tenant, "ann", kind="train", settings=SETTINGS)
    submit_job(engine, tenant, "bob", kind="predict", settings=SETTINGS)
    refused(engine, tenant, "quota_jobs_running", 429)
    set_status(engine, first.id, "running")
    refused(engine, tenant, "quota_jobs_running", 429)
    set_status(engine, first.id, "succeeded")
    submit_job(engine, tenant, "ann", kind="train", settings=SETTINGS)
    assert count(engine, Job, tenant) == 3


def test_job_id_may_be_made_beforehand(engine):
    tenant = new_tenant(engine, "team")
    made = new_id()
    job = submit_job(engine, tenant, "ann", kind="predict", id=made, result_key=f"{tenant}/predictions/{made}/out.csv",
                     settings=SETTINGS)
    assert job.id == made
    with pytest.raises(ValueError):
        submit_job(engine, tenant, "ann", kind="predict", id="../x", settings=SETTINGS)
    assert count(engine, Job, tenant) == 1


def test_other_tenants_jobs_do_not_count(engine):
    plan = new_plan(engine, max_concurrent_jobs=1)
    mine, theirs = new_tenant(engine, plan), new_tenant(engine, plan)
    submit_job(engine, theirs, "bob", kind="train", settings=SETTINGS)
    submit_job(engine, mine, "ann", kind="train", settings=SETTINGS)


def test_monthly_compute_minutes(engine):
    tenant = new_tenant(engine, new_plan(engine, max_concurrent_jobs=5, monthly_compute_minutes=2))
    now = datetime.now(timezone.utc)
    with session_scope(engine) as session:
        # Last month's minutes do not count.
        session.add(Usage(tenant=tenant, user="ann", kind="compute_seconds", amount=10_000,
                          created_at=month_start(now) - timedelta(seconds=1)))
        record_usage(session, tenant, "ann", "compute_seconds", 119)
        record_usage(session, tenant, "ann", "upload", 10**9)  # not compute
    submit_job(engine, tenant, "ann", kind="train", settings=SETTINGS)
    with session_scope(engine) as session:
        record_usage(session, tenant, "ann", "compute_seconds", 1)
    error = refused(engine, tenant, "quota_compute_exhausted", 429)
    assert error.params["limit"] == 2 and error.params["reset"] == next_month_start(now).date().isoformat()
    assert "2 compute minutes" in error.message("en")


def test_month_boundaries_are_utc():
    assert month_start(datetime(2024, 3, 1, 0, 30, tzinfo=timezone(timedelta(hours=2)))) == datetime(
        2024, 2, 1, tzinfo=timezone.utc)
    assert next_month_start(datetime(2024, 12, 31, 23, 59, tzinfo=timezone.utc)) == datetime(
        2025, 1, 1, tzinfo=timezone.utc)


# --- plan and tenant state (403) ----------------------------------------------


def test_expired_trial_is_refused(engine):
    past = datetime.now(timezone.utc) - timedelta(seconds=1)
    tenant = new_tenant(engine, "trial", trial_expires_at=past)
    error = refused(engine, tenant, "quota_trial_expired", 403)
    assert tenant in error.message("en") and past.date().isoformat() in error.message("en")
    with session_scope(engine) as session:
        session.get(Tenant, tenant).plan = "team"  # an upgraded tenant keeps its old date
    submit_job(engine, tenant, "ann", kind="train", settings=SETTINGS)


def test_running_trial_is_allowed(engine):
    tenant = new_tenant(engine, "trial", trial_expires_at=datetime.now(timezone.utc) + timedelta(hours=1))
    submit_job(engine, tenant, "ann", kind="train", settings=SETTINGS)


def test_disabled_tenant_is_refused(engine):
    tenant = new_tenant(engine, "enterprise", disabled=True)
    refused(engine, tenant, "quota_tenant_disabled", 403)
    with session_scope(engine) as session, pytest.raises(QuotaError) as caught:
        check_storage(session, tenant, 1)
    assert caught.value.code == "quota_tenant_disabled"


def test_gpu_needs_a_plan_with_gpu(engine):
    trial = new_tenant(engine, "trial", trial_expires_at=datetime.now(timezone.utc) + timedelta(days=1))
    error = refused(engine, trial, "quota_gpu_not_allowed", 403, device="gpu")
    assert "'trial'" in error.message("en")
    job = submit_job(engine, new_tenant(engine, "team"), "ann", kind="train", device="gpu", settings=SETTINGS)
    assert job.device == "gpu"


@pytest.mark.parametrize("fields, code", [
    ({"kind": "explain"}, "record_bad_choice"),
    ({"kind": "train", "device": "tpu"}, "record_bad_choice"),
])
def test_bad_job_fields_are_refused(engine, fields, code):
    tenant = new_tenant(engine, "team")
    with pytest.raises(ParameterError) as caught:
        submit_job(engine, tenant, "ann", settings=SETTINGS, **fields)
    assert caught.value.code == code
    with pytest.raises(TypeError):
        submit_job(engine, tenant, "ann", kind="train", status="running", settings=SETTINGS)
    with pytest.raises(TypeError):
        submit_job(engine, tenant, "ann", kind="train", colour="red", settings=SETTINGS)
    assert count(engine, Job, tenant) == 0


def test_bad_tenant_name_is_refused(engine):
    with session_scope(engine) as session:
        before = session.scalar(select(func.count()).select_from(Tenant))
    with pytest.raises(ParameterError):
        submit_job(engine, "../other", "ann", kind="train", settings=SETTINGS)
    with session_scope(engine) as session:
        assert session.scalar(select(func.count()).select_from(Tenant)) == before


# --- storage and uploads ------------------------------------------------------


def test_storage_counts_datasets_and_models(engine):
    tenant = new_tenant(engine, new_plan(engine, storage_bytes=1000))
    with session_scope(engine) as session:
        session.add(Dataset(tenant=tenant, owner="ann", name="d", size_bytes=500))
        session.add(Model(tenant=tenant, owner="ann", name="m", task="binary", metric="auc", target="y",
                          size_bytes=100))
    with session_scope(engine) as session:
        check_storage(session, tenant, 400)
        with pytest.raises(QuotaError) as caught:
            check_storage(session, tenant, 401)
    error = caught.value
    assert (error.code, error.http_status) == ("quota_storage_full", 403)
    assert "'" + error.params["plan"] + "'" in error.message("en")
    with session_scope(engine) as session:
        check_storage(session, new_tenant(engine, "enterprise"), 10**15)  # unlimited


def test_upload_limit_is_the_smaller_of_plan_and_deployment(engine):
    settings = dataclasses.replace(SETTINGS, max_upload_size=100 * 10**6)
    small = new_tenant(engine, new_plan(engine, max_upload_size=10 * 10**6))
    unlimited = new_tenant(engine, new_plan(engine, max_upload_size=None))
    with session_scope(engine) as session:
        assert upload_limit(session, small, settings) == 10 * 10**6
        assert upload_limit(session, unlimited, settings) == 100 * 10**6
        check_upload_size(session, small, 10 * 10**6, settings)
        for tenant, size in ((small, 10 * 10**6 + 1), (unlimited, 100 * 10**6 + 1)):
            with pytest.raises(QuotaError) as caught:
                check_upload_size(session, tenant, size, settings)
            assert (caught.value.code, caught.value.http_status) == ("quota_upload_too_large", 413)
    assert "10.0 MB" in QuotaError("quota_upload_too_large", plan="p", size_mb=20, limit_mb=10).message("en")


@pytest.mark.parametrize("kind, amount", [("cpu", 1), ("compute_seconds", -1), ("upload", float("nan")),
                                          ("compute_seconds", "lots"), ("storage_bytes", float("inf"))])
def test_bad_usage_is_refused(engine, kind, amount):
    tenant = new_tenant(engine)
    with session_scope(engine) as session:
        with pytest.raises(ParameterError):
            record_usage(session, tenant, "ann", kind, amount)
    assert count(engine, Usage, tenant) == 0


def test_quota_status(engine):
    tenant = new_tenant(engine, "team")
    submit_job(engine, tenant, "ann", kind="train", settings=SETTINGS)
    with session_scope(engine) as session:
        record_usage(session, tenant, "ann", "compute_seconds", 90)
        session.add(Dataset(tenant=tenant, owner="ann", name="d", size_bytes=1234))
    with session_scope(engine) as session:
        status = quota_status(session, tenant, SETTINGS)
    assert status["plan"] == "team" and status["active_jobs"] == 1 and status["max_concurrent_jobs"] == 3
    assert status["compute_minutes_used"] == 1.5 and status["monthly_compute_minutes"] == 6000
    assert status["storage_used_bytes"] == 1234 and status["gpu_allowed"] is True


# --- atomicity ----------------------------------------------------------------


def race(engine, tenant, n=8):
    """`n` threads submit at the same instant; returns (jobs, refusals)."""
    barrier = threading.Barrier(n)
    jobs, errors, other = [], [], []

    def submit(user):
        barrier.wait()
        try:
            jobs.append(submit_job(engine, tenant, user, kind="train", settings=SETTINGS))
        except QuotaError as error:
            errors.append(error)
        except Exception as error:  # noqa: BLE001 - reported below
            other.append(error)

    threads = [threading.Thread(target=submit, args=(f"user{i}",)) for i in range(n)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert other == []
    return jobs, errors


def test_racing_submissions_take_the_last_slot_once(engine):
    tenant = new_tenant(engine, new_plan(engine, max_concurrent_jobs=3))
    for _ in range(2):
        submit_job(engine, tenant, "ann", kind="train", settings=SETTINGS)
    jobs, errors = race(engine, tenant)
    assert len(jobs) == 1 and len(errors) == 7
    assert {(e.code, e.http_status) for e in errors} == {("quota_jobs_running", 429)}
    assert count(engine, Job, tenant) == 3


def test_racing_submissions_of_a_new_tenant(engine):
    tenant = f"new-{uuid.uuid4().hex[:8]}"
    jobs, errors = race(engine, tenant)
    assert len(jobs) == 1 and len(errors) == 7
    assert count(engine, Job, tenant) == 1
    with session_scope(engine) as session:
        assert session.scalar(select(func.count()).select_from(Tenant).where(Tenant.name == tenant)) == 1
