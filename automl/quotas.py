"""What a tenant's plan allows, checked by the platform service at submission.

The checks read the database and the decision must hold when the row is
written, so a job is checked and inserted in ONE transaction that holds the
tenant's lock (`submit_job`): two submissions racing for the last free slot
run one after the other, and the second sees the first one's job. The
container never checks quotas; the service does, here.
"""

from __future__ import annotations

import math
from datetime import datetime, timezone

from sqlalchemy import Engine, func, select
from sqlalchemy.orm import Session

from .db.models import (
    ACTIVE_STATUSES,
    DEVICES,
    JOB_KINDS,
    USAGE_KINDS,
    Dataset,
    Job,
    Model,
    Plan,
    Tenant,
    Usage,
    is_id,
    utcnow,
)
from .db.session import check_tenant_name, get_or_create_tenant, session_scope
from .errors import ParameterError, QuotaError
from .settings import Settings, get_settings

TOO_MANY = 429  # frees up with time: retry later
FORBIDDEN = 403  # needs an administrator
TOO_LARGE = 413


def month_start(now: datetime) -> datetime:
    """Compute minutes are counted per calendar month, in UTC."""
    return now.astimezone(timezone.utc).replace(day=1, hour=0, minute=0, second=0, microsecond=0)


def next_month_start(now: datetime) -> datetime:
    start = month_start(now)
    return start.replace(year=start.year + 1, month=1) if start.month == 12 else start.replace(month=start.month + 1)


def _plan(session: Session, tenant: Tenant) -> Plan:
    return session.get(Plan, tenant.plan)


def _check_tenant_state(tenant: Tenant, plan: Plan, now: datetime) -> None:
    if tenant.disabled:
        raise QuotaError("quota_tenant_disabled", http_status=FORBIDDEN, tenant=tenant.name, plan=plan.name)
    if plan.is_trial and tenant.trial_expires_at is not None and tenant.trial_expires_at <= now:
        raise QuotaError("quota_trial_expired", http_status=FORBIDDEN, tenant=tenant.name, plan=plan.name,
                         expired=tenant.trial_expires_at.date().isoformat())


def active_jobs(session: Session, tenant: str) -> int:
    query = select(func.count()).select_from(Job).where(Job.tenant == tenant, Job.status.in_(ACTIVE_STATUSES))
    return session.scalar(query)


def compute_seconds_this_month(session: Session, tenant: str, now: datetime | None = None) -> float:
    query = select(func.coalesce(func.sum(Usage.amount), 0.0)).where(
        Usage.tenant == tenant, Usage.kind == "compute_seconds", Usage.created_at >= month_start(now or utcnow()))
    return float(session.scalar(query))


def storage_used(session: Session, tenant: str) -> int:
    """Bytes held by the tenant's data sets and models, counted from their rows
    so that a deletion frees its space without bookkeeping."""
    datasets = session.scalar(select(func.coalesce(func.sum(Dataset.size_bytes), 0)).where(Dataset.tenant == tenant))
    models = session.scalar(select(func.coalesce(func.sum(Model.size_bytes), 0)).where(Model.tenant == tenant))
    return int(datasets) + int(models)


def check_job(session: Session, tenant: Tenant, device: str = "cpu", now: datetime | None = None) -> None:
    """Raise QuotaError if `tenant` may not start a job on `device` now. On its
    own this is advice (a form can grey out its button); only `submit_job`,
    which calls it under the tenant's lock, makes the answer hold."""
    now = now or utcnow()
    plan = _plan(session, tenant)
    _check_tenant_state(tenant, plan, now)
    if device == "gpu" and not plan.gpu_allowed:
        raise QuotaError("quota_gpu_not_allowed", http_status=FORBIDDEN, plan=plan.name)
    active = active_jobs(session, tenant.name)
    if active >= plan.max_concurrent_jobs:
        raise QuotaError("quota_jobs_running", http_status=TOO_MANY, plan=plan.name, active=active,
                         limit=plan.max_concurrent_jobs)
    if plan.monthly_compute_minutes is not None:
        used = compute_seconds_this_month(session, tenant.name, now) / 60
        if used >= plan.monthly_compute_minutes:
            raise QuotaError("quota_compute_exhausted", http_status=TOO_MANY, plan=plan.name, used=used,
                             limit=plan.monthly_compute_minutes, reset=next_month_start(now).date().isoformat())


def _lock_tenant(session: Session, name: str, settings: Settings) -> Tenant:
    """The tenant's row, locked until the transaction ends (PostgreSQL: FOR
    UPDATE; SQLite: the caller's BEGIN IMMEDIATE already holds the database)."""
    query = select(Tenant).where(Tenant.name == name).with_for_update().execution_options(populate_existing=True)
    tenant = session.execute(query).scalar_one_or_none()
    if tenant is None:
        get_or_create_tenant(session, name, settings)
        tenant = session.execute(query).scalar_one()
    return tenant


def _check_choice(field: str, value, choices: tuple[str, ...]) -> None:
    if value not in choices:
        raise ParameterError("record_bad_choice", field=field, value=str(value)[:64], choices=", ".join(choices))


def submit_job(engine: Engine, tenant: str, user: str, *, kind: str, device: str = "cpu",
               settings: Settings | None = None, **job_fields) -> Job:
    """Check the quotas and insert a queued job, atomically.

    Raises QuotaError (429 or 403, see `http_status`) and inserts nothing when
    the plan refuses. `job_fields` are other `Job` columns (dataset_id,
    model_id, params, result_key, or an `id` made beforehand with `new_id`). The tenant is created on first sight, on the trial
    plan. The returned job is detached and readable.
    """
    settings = settings or get_settings()
    check_tenant_name(tenant)
    _check_choice("kind", kind, JOB_KINDS)
    _check_choice("device", device, DEVICES)
    for reserved in ("tenant", "owner", "status"):
        if reserved in job_fields:
            raise TypeError(f"submit_job() sets {reserved!r} itself")
    if "id" in job_fields and not is_id(job_fields["id"]):
        raise ValueError(f"job id {job_fields['id']!r} is not one made by new_id()")
    with session_scope(engine, immediate=True) as session:
        row = _lock_tenant(session, tenant, settings)
        check_job(session, row, device)
        job = Job(tenant=tenant, owner=user, kind=kind, device=device, status="queued", **job_fields)
        session.add(job)
        session.flush()
    return job


def check_storage(session: Session, tenant: str, extra_bytes: int, settings: Settings | None = None) -> None:
    """Raise QuotaError (403) if adding `extra_bytes` would exceed the plan's
    storage. Checked before an upload is accepted; not atomic with the upload
    itself, so two uploads at once may overshoot by one file."""
    row = get_or_create_tenant(session, tenant, settings)
    plan = _plan(session, row)
    _check_tenant_state(row, plan, utcnow())
    if plan.storage_bytes is None:
        return
    used = storage_used(session, tenant)
    if used + max(int(extra_bytes), 0) > plan.storage_bytes:
        raise QuotaError("quota_storage_full", http_status=FORBIDDEN, plan=plan.name, needed_gb=extra_bytes / 1e9,
                         used_gb=used / 1e9, limit_gb=plan.storage_bytes / 1e9)


def upload_limit(session: Session, tenant: str, settings: Settings | None = None) -> int:
    """The largest file `tenant` may upload: the smaller of its plan's limit and
    the deployment's MAX_UPLOAD_SIZE."""
    settings = settings or get_settings()
    plan = _plan(session, get_or_create_tenant(session, tenant, settings))
    if plan.max_upload_size is None:
        return settings.max_upload_size
    return min(plan.max_upload_size, settings.max_upload_size)


def check_upload_size(session: Session, tenant: str, size: int, settings: Settings | None = None) -> None:
    """Raise QuotaError (413) for a file larger than `upload_limit`."""
    settings = settings or get_settings()
    limit = upload_limit(session, tenant, settings)
    if size > limit:
        plan = session.get(Tenant, tenant).plan
        raise QuotaError("quota_upload_too_large", http_status=TOO_LARGE, plan=plan, size_mb=size / 1e6,
                         limit_mb=limit / 1e6)


def record_usage(session: Session, tenant: str, user: str, kind: str, amount: float,
                 job_id: str | None = None) -> Usage:
    """Add one consumption event. `storage_bytes` may be negative (a deletion);
    the other kinds may not."""
    _check_choice("usage kind", kind, USAGE_KINDS)
    try:
        amount = float(amount)
    except (TypeError, ValueError):
        raise ParameterError("usage_amount_invalid", kind=kind, value=amount) from None
    if not math.isfinite(amount) or (amount < 0 and kind != "storage_bytes"):
        raise ParameterError("usage_amount_invalid", kind=kind, value=amount)
    usage = Usage(tenant=tenant, user=user, kind=kind, amount=amount, job_id=job_id, created_at=utcnow())
    session.add(usage)
    session.flush()
    return usage


def quota_status(session: Session, tenant: str, settings: Settings | None = None) -> dict:
    """Usage against limits, for the dashboards and the admin panel (None:
    unlimited)."""
    settings = settings or get_settings()
    row = get_or_create_tenant(session, tenant, settings)
    plan = _plan(session, row)
    return {
        "tenant": row.name,
        "plan": plan.name,
        "disabled": row.disabled,
        "trial_expires_at": row.trial_expires_at.isoformat() if plan.is_trial and row.trial_expires_at else None,
        "active_jobs": active_jobs(session, tenant),
        "max_concurrent_jobs": plan.max_concurrent_jobs,
        "compute_minutes_used": compute_seconds_this_month(session, tenant) / 60,
        "monthly_compute_minutes": plan.monthly_compute_minutes,
        "storage_used_bytes": storage_used(session, tenant),
        "storage_bytes": plan.storage_bytes,
        "max_upload_size": upload_limit(session, tenant, settings),
        "gpu_allowed": plan.gpu_allowed,
    }
