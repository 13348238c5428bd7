"""Health and the caller's own view: who, which tenant, which plan, what is used."""

from __future__ import annotations

from fastapi import APIRouter, Depends, Request

import automl
from automl import quotas

from ..auth import Caller, require
from ..schemas import Health, MeOut
from .deps import platform, session

router = APIRouter(tags=["platform"])


@router.get("/health", response_model=Health)
def health():
    """Unauthenticated liveness probe: says nothing about any tenant."""
    return {"status": "ok", "version": automl.__version__}


@router.get("/me", response_model=MeOut)
def me(request: Request, caller: Caller = Depends(require("read"))):
    with session(request, write=True) as s:  # a first visit creates the tenant
        quota = quotas.quota_status(s, caller.tenant, platform(request).settings)
    return MeOut(user=caller.name, tenant=caller.tenant, roles=list(caller.roles), scopes=list(caller.scopes),
                 quota=quota)
