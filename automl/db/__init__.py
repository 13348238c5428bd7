"""The platform's metadata database: models, engines, migrations, sessions."""

from .models import (
    ACTIVE_STATUSES,
    DEVICES,
    JOB_KINDS,
    JOB_STATUSES,
    USAGE_KINDS,
    Base,
    Dataset,
    Job,
    Model,
    Plan,
    Tenant,
    Usage,
    get_owned,
    is_id,
    new_id,
    owned,
    utcnow,
)
from .session import (
    check_tenant_name,
    current_revision,
    downgrade,
    get_or_create_tenant,
    make_engine,
    normalise_url,
    session_scope,
    upgrade,
)

__all__ = [
    "ACTIVE_STATUSES", "DEVICES", "JOB_KINDS", "JOB_STATUSES", "USAGE_KINDS",
    "Base", "Dataset", "Job", "Model", "Plan", "Tenant", "Usage",
    "get_owned", "is_id", "new_id", "owned", "utcnow",
    "check_tenant_name", "current_revision", "downgrade", "get_or_create_tenant", "make_engine",
    "normalise_url", "session_scope", "upgrade",
]
