"""Administration of the platform (scope custom:automl:admin): tenants, plans,
quotas and usage, across tenants — the only routes that are not tenant-scoped."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

from fastapi import APIRouter, Depends, Query, Request
from sqlalchemy import func, select

from automl import quotas
from automl.db import models as db
from automl.db.session import check_tenant_name, get_or_create_tenant
from automl.errors import NotFoundError

from ..auth import Caller, require
from ..schemas import PlanIn, PlanOut, TenantOut, TenantUpdate, UsageRow
from .deps import platform, session

router = APIRouter(prefix="/admin", tags=["admin"])


def tenant_out(s, tenant: db.Tenant, settings) -> TenantOut:
    return TenantOut(name=tenant.name, created_at=tenant.created_at, quota=quotas.quota_status(s, tenant.name, settings))


@router.get("/tenants", response_model=list[TenantOut])
def list_tenants(request: Request, caller: Caller = Depends(require("admin"))):
    with session(request, write=True) as s:
        settings = platform(request).settings
        return [tenant_out(s, t, settings) for t in s.scalars(select(db.Tenant).order_by(db.Tenant.name))]


@router.put("/tenants/{name}", response_model=TenantOut)
def update_tenant(name: str, body: TenantUpdate, request: Request, caller: Caller = Depends(require("admin"))):
    """Create or change a tenant: its plan, whether it is disabled, its trial end
    (`extend_trial_days` counts from today)."""
    settings = platform(request).settings
    with session(request, write=True) as s:
        tenant = get_or_create_tenant(s, check_tenant_name(name), settings)
        if body.plan is not None:
            plan = s.get(db.Plan, body.plan)
            if plan is None:
                raise NotFoundError("not_found", kind="plan", id=body.plan)
            tenant.plan = plan.name
            if not plan.is_trial:
                tenant.trial_expires_at = None
        if body.disabled is not None:
            tenant.disabled = body.disabled
        if body.extend_trial_days is not None:
            tenant.trial_expires_at = datetime.now(timezone.utc) + timedelta(days=body.extend_trial_days)
        s.flush()
        return tenant_out(s, tenant, settings)


@router.get("/plans", response_model=list[PlanOut])
def list_plans(request: Request, caller: Caller = Depends(require("admin"))):
    with session(request) as s:
        return [PlanOut.model_validate(p, from_attributes=True) for p in s.scalars(select(db.Plan).order_by(db.Plan.name))]


@router.put("/plans/{name}", response_model=PlanOut)
def put_plan(name: str, body: PlanIn, request: Request, caller: Caller = Depends(require("admin"))):
    """Create or replace a plan; its tenants follow the new limits at once."""
    check_tenant_name(name)  # same slug rules: plan names appear in URLs and messages
    with session(request, write=True) as s:
        plan = s.get(db.Plan, name) or db.Plan(name=name)
        for field, value in body.model_dump().items():
            setattr(plan, field, value)
        s.add(plan)
        s.flush()
        return PlanOut.model_validate(plan, from_attributes=True)


@router.get("/usage", response_model=list[UsageRow])
def usage(request: Request, month: str | None = Query(None, pattern=r"^\d{4}-(0[1-9]|1[0-2])$",
                                                      description="YYYY-MM, this month by default"),
          caller: Caller = Depends(require("admin"))):
    """Usage per tenant, user and kind for one calendar month (UTC)."""
    start = quotas.month_start(datetime.now(timezone.utc)) if month is None else \
        datetime.strptime(month + "-01", "%Y-%m-%d").replace(tzinfo=timezone.utc)
    end = quotas.next_month_start(start)
    with session(request) as s:
        rows = s.execute(
            select(db.Usage.tenant, db.Usage.user, db.Usage.kind, func.sum(db.Usage.amount), func.count())
            .where(db.Usage.created_at >= start, db.Usage.created_at < end)
            .group_by(db.Usage.tenant, db.Usage.user, db.Usage.kind)
            .order_by(db.Usage.tenant, db.Usage.user, db.Usage.kind))
        return [UsageRow(month=start.strftime("%Y-%m"), tenant=t, user=u, kind=k, amount=float(a), events=n)
                for t, u, k, a, n in rows]
