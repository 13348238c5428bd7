"""Metadata database: migrations, models, tenant scoping — on SQLite and PostgreSQL."""

from __future__ import annotations

import dataclasses
import threading
import uuid
from datetime import datetime, timedelta, timezone

import pytest
from backends import fresh_database
from sqlalchemy import func, inspect, select
from sqlalchemy.exc import IntegrityError, OperationalError

from automl.db import (
    Dataset,
    Job,
    Model,
    Plan,
    Tenant,
    Usage,
    current_revision,
    downgrade,
    get_or_create_tenant,
    get_owned,
    make_engine,
    normalise_url,
    owned,
    session_scope,
    upgrade,
)
from automl.errors import NotFoundError, ParameterError, SettingsError
from automl.settings import from_environment

BACKENDS = ["sqlite", "postgresql"]
SETTINGS = dataclasses.replace(from_environment({}), trial_duration_days=14)
EXPECTED_PLANS = {
    "trial": (1, 600, 10**9, 200 * 10**6, False, 14),
    "team": (3, 6000, 50 * 10**9, 2 * 10**9, True, None),
    "enterprise": (10, None, None, 10 * 10**9, True, None),
}


@pytest.fixture(scope="session", params=BACKENDS)
def engine(request, tmp_path_factory):
    """A migrated database per backend, shared by the session: tests keep
    apart by using their own tenants."""
    with fresh_database(request.param, tmp_path_factory.mktemp(request.param)) as url:
        upgrade(url)
        engine = make_engine(url)
        yield engine
        engine.dispose()


@pytest.fixture(params=BACKENDS)
def empty_url(request, tmp_path):
    with fresh_database(request.param, tmp_path) as url:
        yield url


def new_tenant(engine, plan: str = "trial", **fields) -> str:
    name = f"t-{uuid.uuid4().hex[:10]}"
    with session_scope(engine) as session:
        session.add(Tenant(name=name, plan=plan, **fields))
    return name


def new_plan(engine, **limits) -> str:
    name = f"p-{uuid.uuid4().hex[:10]}"
    values = dict(max_concurrent_jobs=1, monthly_compute_minutes=None, storage_bytes=None, max_upload_size=None,
                  gpu_allowed=False, trial_days=None)
    with session_scope(engine) as session:
        session.add(Plan(name=name, **{**values, **limits}))
    return name


def count(engine, cls, tenant: str) -> int:
    with session_scope(engine) as session:
        return session.scalar(select(func.count()).select_from(cls).where(cls.tenant == tenant))


def _plans(url) -> dict:
    engine = make_engine(url)
    try:
        with session_scope(engine) as session:
            return {p.name: (p.max_concurrent_jobs, p.monthly_compute_minutes, p.storage_bytes, p.max_upload_size,
                             p.gpu_allowed, p.trial_days) for p in session.scalars(select(Plan))}
    finally:
        engine.dispose()


def _tables(url) -> set[str]:
    engine = make_engine(url)
    try:
        return set(inspect(engine).get_table_names())
    finally:
        engine.dispose()


# --- migrations ---------------------------------------------------------------


def test_migrations_upgrade_downgrade_upgrade(empty_url, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # no alembic.ini here: the migrations come from the package
    upgrade(empty_url)
    assert {"plans", "tenants", "datasets", "jobs", "models", "usage"} <= _tables(empty_url)
    assert _plans(empty_url) == EXPECTED_PLANS

    downgrade(empty_url)
    assert _tables(empty_url) <= {"alembic_version"}

    upgrade(empty_url)
    engine = make_engine(empty_url)
    assert current_revision(engine) == "0001"
    engine.dispose()
    assert _plans(empty_url) == EXPECTED_PLANS


def test_concurrent_upgrades_migrate_once(empty_url):
    """The service and the workers all call upgrade() when they start."""
    barrier = threading.Barrier(4)
    errors = []

    def start():
        barrier.wait()
        try:
            upgrade(empty_url)
        except Exception as error:  # noqa: BLE001 - reported below
            errors.append(error)

    threads = [threading.Thread(target=start) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []
    assert _plans(empty_url) == EXPECTED_PLANS


def test_models_match_migrated_schema(engine):
    from alembic.autogenerate import compare_metadata
    from alembic.runtime.migration import MigrationContext

    from automl.db import Base

    with engine.connect() as connection:
        context = MigrationContext.configure(connection, opts={"compare_type": True})
        assert compare_metadata(context, Base.metadata) == []


# --- engines ------------------------------------------------------------------


def test_normalise_url():
    assert normalise_url("postgresql://u:p@h/db") == "postgresql+psycopg://u:p@h/db"
    assert normalise_url("postgres://u:p@h/db") == "postgresql+psycopg://u:p@h/db"
    assert normalise_url("postgresql+psycopg://h/db") == "postgresql+psycopg://h/db"
    assert normalise_url("sqlite:////tmp/a.sqlite") == "sqlite:////tmp/a.sqlite"
    for bad in ("mysql://h/db", "not a url", ""):
        with pytest.raises(SettingsError) as caught:
            normalise_url(bad)
        assert caught.value.code == "database_url_unsupported"


def test_sqlite_engine_shares_the_file_safely(tmp_path):
    engine = make_engine(f"sqlite:///{tmp_path / 'state' / 'automl.sqlite'}")  # parent created
    with engine.connect() as connection:
        assert connection.exec_driver_sql("PRAGMA journal_mode").scalar() == "wal"
        assert connection.exec_driver_sql("PRAGMA foreign_keys").scalar() == 1
        assert connection.exec_driver_sql("PRAGMA busy_timeout").scalar() >= 1000
    engine.dispose()


def test_sqlite_immediate_session_takes_the_write_lock(tmp_path):
    url = f"sqlite:///{tmp_path / 'automl.sqlite'}"
    upgrade(url)
    engine = make_engine(url)
    other = make_engine(url, connect_args={"timeout": 0})
    with session_scope(engine, immediate=True) as session:
        session.scalar(select(func.count()).select_from(Plan))  # a read only, yet the lock is held
        with pytest.raises(OperationalError, match="locked"):
            with session_scope(other) as writer:
                writer.add(Plan(name="x", max_concurrent_jobs=1, gpu_allowed=False))
    with session_scope(engine) as session:  # a plain session only reads
        session.scalar(select(func.count()).select_from(Plan))
        with session_scope(other) as writer:
            writer.add(Plan(name="x", max_concurrent_jobs=1, gpu_allowed=False))
    engine.dispose()
    other.dispose()


def test_session_scope_rolls_back_on_error(engine):
    tenant = new_tenant(engine)
    with pytest.raises(RuntimeError):
        with session_scope(engine) as session:
            session.add(Dataset(tenant=tenant, owner="ann", name="d"))
            session.flush()
            raise RuntimeError("boom")
    assert count(engine, Dataset, tenant) == 0


# --- models -------------------------------------------------------------------


def test_round_trip_of_every_model(engine):
    tenant = new_tenant(engine)
    columns = [{"name": "âge", "kind": "numeric", "missing": 0.1}, {"name": "ville", "kind": "category"}]
    with session_scope(engine) as session:
        dataset = Dataset(tenant=tenant, owner="ann", name="clients", filename="clients.csv", format="csv",
                          size_bytes=3 * 10**9, n_rows=400, n_columns=2, columns=columns,
                          profile={"âge": {"mean": 41.5, "nulls": None}}, preview={"rows": [[1, "lyon"]]},
                          guardrails=[{"code": "id_like", "column": "id"}], storage_key=f"{tenant}/datasets/x")
        session.add(dataset)
        session.flush()
        job = Job(tenant=tenant, owner="ann", kind="train", dataset_id=dataset.id,
                  params={"target": "ville", "time_budget": 30}, progress={"trials": 3, "best": 0.81})
        session.add(job)
        session.flush()
        model = Model(tenant=tenant, owner="ann", job_id=job.id, dataset_id=dataset.id, name="m", task="binary",
                      metric="roc_auc", target="ville", best_score=0.875,
                      leaderboard=[{"model": "xgboost", "score": 0.875}],
                      details={"classes": ["no", "yes"], "importance": {"âge": 0.7}},
                      size_bytes=1234, signature="ab" * 32)
        session.add(model)
        session.add(Usage(tenant=tenant, user="ann", kind="compute_seconds", amount=12.5, job_id=job.id))
        ids = dataset.id, job.id, model.id

    with session_scope(engine) as session:
        dataset, job, model = (get_owned(session, cls, tenant, id) for cls, id in zip((Dataset, Job, Model), ids))
        usage = session.scalars(owned(Usage, tenant)).one()
    assert all(len(id) == 32 and int(id, 16) >= 0 for id in ids)
    assert dataset.columns == columns and dataset.profile == {"âge": {"mean": 41.5, "nulls": None}}
    assert dataset.size_bytes == 3 * 10**9  # beyond 32 bits
    assert dataset.guardrails == [{"code": "id_like", "column": "id"}]
    assert job.status == "queued" and job.device == "cpu" and job.attempts == 0 and not job.cancel_requested
    assert job.progress == {"trials": 3, "best": 0.81} and job.leaderboard == []
    assert model.details["importance"] == {"âge": 0.7} and model.best_score == 0.875
    assert usage.amount == 12.5 and usage.user == "ann" and usage.job_id == ids[1]
    for when in (dataset.created_at, job.created_at, model.created_at, usage.created_at):
        assert when.tzinfo is not None and when.utcoffset() == timedelta(0)
        assert abs(datetime.now(timezone.utc) - when) < timedelta(minutes=1)


def test_timestamps_are_stored_in_utc(engine):
    paris = timezone(timedelta(hours=2))
    tenant = new_tenant(engine)
    with session_scope(engine) as session:
        job = Job(tenant=tenant, owner="ann", kind="train", created_at=datetime(2024, 6, 1, 12, 0, tzinfo=paris))
        session.add(job)
    with session_scope(engine) as session:
        assert get_owned(session, Job, tenant, job.id).created_at == datetime(2024, 6, 1, 10, 0, tzinfo=timezone.utc)
    with pytest.raises(Exception, match="naive datetime"):
        with session_scope(engine) as session:
            session.add(Job(tenant=tenant, owner="ann", kind="train", created_at=datetime(2024, 6, 1)))
    assert count(engine, Job, tenant) == 1


@pytest.mark.parametrize("field, value", [("status", "done"), ("kind", "explain"), ("device", "tpu")])
def test_database_refuses_unknown_job_values(engine, field, value):
    tenant = new_tenant(engine)
    with pytest.raises(IntegrityError):
        with session_scope(engine) as session:
            session.add(Job(tenant=tenant, owner="ann", **{"kind": "train", field: value}))
    assert count(engine, Job, tenant) == 0


def test_database_refuses_rows_of_unknown_tenant(engine):
    with pytest.raises(IntegrityError):
        with session_scope(engine) as session:
            session.add(Dataset(tenant="nobody-" + uuid.uuid4().hex[:8], owner="ann", name="d"))


# --- tenant scoping -----------------------------------------------------------


@pytest.mark.parametrize("cls", [Dataset, Job, Model])
def test_another_tenants_row_reads_as_missing(engine, cls):
    mine, theirs = new_tenant(engine), new_tenant(engine)
    fields = {Dataset: dict(name="d"), Job: dict(kind="train"), Model: dict(name="m", task="binary", metric="auc",
                                                                            target="y")}[cls]
    with session_scope(engine) as session:
        row = cls(tenant=theirs, owner="bob", **fields)
        session.add(row)
    with session_scope(engine) as session:
        assert get_owned(session, cls, theirs, row.id).id == row.id
        assert session.scalars(owned(cls, mine)).all() == []
        errors = []
        for id in (row.id, uuid.uuid4().hex, "../etc/passwd", None):
            with pytest.raises(NotFoundError) as caught:
                get_owned(session, cls, mine, id)
            errors.append(caught.value)
    assert {e.code for e in errors} == {"not_found"}
    assert {e.params["kind"] for e in errors} == {cls.__name__.lower()}
    # Another tenant's id and a random one read exactly alike.
    assert errors[0].message("en").replace(row.id, "X") == errors[1].message("en").replace(errors[1].params["id"], "X")
    assert errors[0].http_status == 404


def test_get_or_create_tenant(engine):
    settings = dataclasses.replace(SETTINGS, trial_duration_days=3)
    name = f"new-{uuid.uuid4().hex[:8]}"
    with session_scope(engine) as session:
        tenant = get_or_create_tenant(session, name, settings)
    assert tenant.plan == "trial" and not tenant.disabled
    assert abs(tenant.trial_expires_at - (datetime.now(timezone.utc) + timedelta(days=3))) < timedelta(minutes=1)
    with session_scope(engine) as session:
        again = get_or_create_tenant(session, name, dataclasses.replace(settings, trial_duration_days=30))
    assert again.trial_expires_at == tenant.trial_expires_at  # found, not re-created


@pytest.mark.parametrize("name", ["", "Acme", "a/b", "../x", "-x", "x" * 64, "é"])
def test_bad_tenant_name_is_refused(engine, name):
    with session_scope(engine) as session:
        before = session.scalar(select(func.count()).select_from(Tenant))
        with pytest.raises(ParameterError) as caught:
            get_or_create_tenant(session, name, SETTINGS)
        assert session.scalar(select(func.count()).select_from(Tenant)) == before
    assert caught.value.code == "tenant_name_invalid"
