"""The platform's metadata: plans, tenants and their data sets, jobs, models, usage.

The metadata database is the source of truth of the platform (jobs survive a
broker restart because their row does). Every tenant-scoped row carries its
tenant, and `get_owned` / `owned` are the way to read one, so that a query can
never forget the tenant filter. The schema itself is created by the Alembic
migrations next to this file; `tests/test_db.py` checks that both agree.

JSON columns are not tracked for in-place changes: assign a new value
(`job.progress = {**job.progress, "trials": 3}`), do not mutate the old one.
"""

from __future__ import annotations

import re
import uuid
from datetime import datetime, timezone
from typing import Any, TypeVar

from sqlalchemy import (
    JSON,
    BigInteger,
    CheckConstraint,
    DateTime,
    Float,
    ForeignKey,
    Index,
    Integer,
    MetaData,
    String,
    TypeDecorator,
    select,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, Session, mapped_column

from ..errors import NotFoundError

JOB_KINDS = ("train", "predict")
JOB_STATUSES = ("queued", "running", "succeeded", "failed", "cancelled")
ACTIVE_STATUSES = ("queued", "running")
DEVICES = ("cpu", "gpu")
USAGE_KINDS = ("compute_seconds", "storage_bytes", "upload")

_ID = re.compile(r"^[0-9a-f]{32}$")


def new_id() -> str:
    """A 32-character hex id made by code, so that a row's id (and the storage
    key built from it) is known before the insert and never guessable."""
    return uuid.uuid4().hex


def is_id(value) -> bool:
    return isinstance(value, str) and _ID.match(value) is not None


def utcnow() -> datetime:
    return datetime.now(timezone.utc)


class UTCDateTime(TypeDecorator):
    """A timezone-aware UTC timestamp on every backend. SQLite has no time
    zones, so it stores naive UTC and gets `tzinfo=UTC` back on read; a naive
    value is refused rather than guessed, since its zone is unknowable."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value, dialect):
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError(f"naive datetime {value!r}: use a timezone-aware one, e.g. datetime.now(timezone.utc)")
        value = value.astimezone(timezone.utc)
        return value.replace(tzinfo=None) if dialect.name == "sqlite" else value

    def process_result_value(self, value, dialect):
        if value is None:
            return None
        if value.tzinfo is None:
            return value.replace(tzinfo=timezone.utc)
        return value.astimezone(timezone.utc)


def _one_of(column: str, values: tuple[str, ...]) -> CheckConstraint:
    listed = ", ".join(f"'{v}'" for v in values)
    return CheckConstraint(f"{column} IN ({listed})", name=f"{column}_valid")


class Base(DeclarativeBase):
    # Named constraints, so that a later migration can alter them by name on
    # every backend (SQLite batch mode needs names too).
    metadata = MetaData(naming_convention={
        "ix": "ix_%(table_name)s_%(column_0_N_name)s",
        "uq": "uq_%(table_name)s_%(column_0_N_name)s",
        "ck": "ck_%(table_name)s_%(constraint_name)s",
        "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
        "pk": "pk_%(table_name)s",
    })
    type_annotation_map = {datetime: UTCDateTime, dict[str, Any]: JSON, list[Any]: JSON}

    def __repr__(self) -> str:
        key = getattr(self, "id", None) or getattr(self, "name", None)
        return f"<{type(self).__name__} {key}>"


class _NewId:
    """Rows whose id exists from construction, before any flush: the code
    that writes an artifact builds its storage key from it."""

    def __init__(self, **fields):
        fields.setdefault("id", new_id())
        super().__init__(**fields)


class Plan(Base):
    """What a tenant may use. `None` limits are unlimited; a plan with
    `trial_days` is a trial, whose tenants expire."""

    __tablename__ = "plans"

    name: Mapped[str] = mapped_column(String(64), primary_key=True)
    max_concurrent_jobs: Mapped[int] = mapped_column(Integer)
    monthly_compute_minutes: Mapped[int | None] = mapped_column(Integer)
    storage_bytes: Mapped[int | None] = mapped_column(BigInteger)
    max_upload_size: Mapped[int | None] = mapped_column(BigInteger)
    gpu_allowed: Mapped[bool] = mapped_column(default=False)
    trial_days: Mapped[int | None] = mapped_column(Integer)

    @property
    def is_trial(self) -> bool:
        return self.trial_days is not None


class Tenant(Base):
    """A team: the unit of isolation, of quotas and of billing."""

    __tablename__ = "tenants"

    name: Mapped[str] = mapped_column(String(63), primary_key=True)
    plan: Mapped[str] = mapped_column(String(64), ForeignKey("plans.name"))
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    trial_expires_at: Mapped[datetime | None]
    disabled: Mapped[bool] = mapped_column(default=False)


class Dataset(_NewId, Base):
    __tablename__ = "datasets"

    id: Mapped[str] = mapped_column(String(32), primary_key=True, default=new_id)
    tenant: Mapped[str] = mapped_column(String(63), ForeignKey("tenants.name"), index=True)
    owner: Mapped[str] = mapped_column(String(255))
    name: Mapped[str] = mapped_column(String(255))
    filename: Mapped[str] = mapped_column(String(255), default="")
    format: Mapped[str] = mapped_column(String(32), default="")
    size_bytes: Mapped[int] = mapped_column(BigInteger, default=0)
    n_rows: Mapped[int] = mapped_column(Integer, default=0)
    n_columns: Mapped[int] = mapped_column(Integer, default=0)
    columns: Mapped[list[Any]] = mapped_column(default=list)
    profile: Mapped[dict[str, Any]] = mapped_column(default=dict)
    preview: Mapped[list[Any]] = mapped_column(default=list)
    guardrails: Mapped[list[Any]] = mapped_column(default=list)
    storage_key: Mapped[str] = mapped_column(String(512), default="")
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


class Job(_NewId, Base):
    """A unit of long work: `queued -> running -> succeeded | failed | cancelled`.
    Workers heartbeat into `heartbeat_at` and `progress`; the reaper reads them."""

    __tablename__ = "jobs"
    __table_args__ = (
        _one_of("kind", JOB_KINDS),
        _one_of("status", JOB_STATUSES),
        _one_of("device", DEVICES),
        Index(None, "tenant", "status"),
    )

    id: Mapped[str] = mapped_column(String(32), primary_key=True, default=new_id)
    tenant: Mapped[str] = mapped_column(String(63), ForeignKey("tenants.name"))
    owner: Mapped[str] = mapped_column(String(255))
    kind: Mapped[str] = mapped_column(String(16))
    dataset_id: Mapped[str | None] = mapped_column(String(32), ForeignKey("datasets.id", ondelete="SET NULL"))
    # No foreign key: models.job_id already points at jobs, and a cycle of
    # foreign keys cannot be created in one step on SQLite.
    model_id: Mapped[str | None] = mapped_column(String(32))
    params: Mapped[dict[str, Any]] = mapped_column(default=dict)
    status: Mapped[str] = mapped_column(String(16), default="queued", index=True)
    progress: Mapped[dict[str, Any]] = mapped_column(default=dict)
    leaderboard: Mapped[list[Any]] = mapped_column(default=list)
    error_code: Mapped[str | None] = mapped_column(String(64))
    error_params: Mapped[dict[str, Any] | None] = mapped_column(default=None)  # rendered per caller's language
    cancel_requested: Mapped[bool] = mapped_column(default=False)
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    device: Mapped[str] = mapped_column(String(8), default="cpu")
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    started_at: Mapped[datetime | None]
    finished_at: Mapped[datetime | None]
    heartbeat_at: Mapped[datetime | None]
    compute_seconds: Mapped[float] = mapped_column(Float, default=0.0)
    result_key: Mapped[str | None] = mapped_column(String(512))


class Model(_NewId, Base):
    """A trained model: its artifact lives at `storage_key`, signed with the
    platform secret (`signature`) so that only files we wrote get unpickled."""

    __tablename__ = "models"

    id: Mapped[str] = mapped_column(String(32), primary_key=True, default=new_id)
    tenant: Mapped[str] = mapped_column(String(63), ForeignKey("tenants.name"), index=True)
    owner: Mapped[str] = mapped_column(String(255))
    job_id: Mapped[str | None] = mapped_column(String(32), ForeignKey("jobs.id", ondelete="SET NULL"))
    dataset_id: Mapped[str | None] = mapped_column(String(32), ForeignKey("datasets.id", ondelete="SET NULL"))
    name: Mapped[str] = mapped_column(String(255))
    task: Mapped[str] = mapped_column(String(32))
    metric: Mapped[str] = mapped_column(String(64))
    target: Mapped[str] = mapped_column(String(255))
    best_score: Mapped[float | None] = mapped_column(Float)
    leaderboard: Mapped[list[Any]] = mapped_column(default=list)
    details: Mapped[dict[str, Any]] = mapped_column(default=dict)
    storage_key: Mapped[str] = mapped_column(String(512), default="")
    size_bytes: Mapped[int] = mapped_column(BigInteger, default=0)
    signature: Mapped[str] = mapped_column(String(128), default="")
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


class Usage(Base):
    """One consumption event; the monthly compute quota is the sum of this
    month's `compute_seconds` rows."""

    __tablename__ = "usage"
    __table_args__ = (
        _one_of("kind", USAGE_KINDS),
        Index(None, "tenant", "created_at"),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    tenant: Mapped[str] = mapped_column(String(63), ForeignKey("tenants.name"))
    user: Mapped[str] = mapped_column(String(255))
    kind: Mapped[str] = mapped_column(String(32))
    amount: Mapped[float] = mapped_column(Float)
    job_id: Mapped[str | None] = mapped_column(String(32), ForeignKey("jobs.id", ondelete="SET NULL"))
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


TenantRow = TypeVar("TenantRow", Dataset, Job, Model, Usage)


def owned(cls: type[TenantRow], tenant: str):
    """`select(cls)` already filtered on `tenant`: start every listing here."""
    return select(cls).where(cls.tenant == tenant)


def get_owned(session: Session, cls: type[TenantRow], tenant: str, id, *, lock: bool = False) -> TenantRow:
    """The row `id` of `cls` if it belongs to `tenant`, else NotFoundError —
    the same error whether the row is missing or another tenant's.
    `lock=True` holds the row (`FOR UPDATE`) until the transaction ends."""
    kind = cls.__name__.lower()
    if cls is not Usage and not is_id(id):
        raise NotFoundError("not_found", kind=kind, id=str(id)[:64])
    query = owned(cls, tenant).where(cls.id == id)
    if lock:
        query = query.with_for_update()
    row = session.execute(query).scalar_one_or_none()
    if row is None:
        raise NotFoundError("not_found", kind=kind, id=str(id)[:64])
    return row

