"""JupyterHub configuration of AutoML Hub: one file for every deployment.

Settings come from `automl.settings` only; with no environment this is the
embedded default: hub, proxy and platform service on 127.0.0.1, their state
under AUTOML_STATE_DIR/hub, local accounts with generated passwords
(hub/embedded.py, which `make start` runs).

Conventions the platform service relies on (hub/service/auth.py):

- a team (tenant) is a hub group named ``tenant:<name>``, and a user belongs
  to exactly one team;
- permissions are the custom scopes ``custom:automl:read``, ``...:train`` and
  ``...:admin``, granted by the roles ``viewer``, ``data_scientist``, ``trial``
  and ``automl_admin``. JupyterHub only carries custom scopes; the service
  checks them on every request.

Tests load this file from their own config and override ports, users and
groups (tests/service/conftest.py).
"""

import sys
from pathlib import Path

from automl.settings import embedded_secrets, get_settings, to_environment
from hub import embedded
from hub.service.auth import ROLES, SCOPE_PREFIX, SCOPES, SERVICE_NAME, TENANT_PREFIX

c = get_config()  # noqa: F821 (defined by traitlets when it loads this file)
settings = get_settings()
ROOT = Path(__file__).resolve().parent
HUB_STATE = settings.state_dir / "hub"
HUB_STATE.mkdir(parents=True, exist_ok=True)

# --- network: loopback only ------------------------------------------------------
c.JupyterHub.bind_url = settings.hub_url
c.JupyterHub.hub_bind_url = "http://127.0.0.1:8081"
c.ConfigurableHTTPProxy.api_url = "http://127.0.0.1:8001"
_proxy = ROOT / "node_modules" / ".bin" / "configurable-http-proxy"  # `npm ci` at the repo root
if _proxy.exists():
    c.ConfigurableHTTPProxy.command = [str(_proxy)]

# --- the hub's own state, out of the working directory -------------------------------
c.JupyterHub.db_url = f"sqlite:///{HUB_STATE / 'jupyterhub.sqlite'}"
c.JupyterHub.cookie_secret_file = str(HUB_STATE / "jupyterhub_cookie_secret")
c.ConfigurableHTTPProxy.pid_file = str(HUB_STATE / "jupyterhub-proxy.pid")

# --- permissions ------------------------------------------------------------------
_ACCESS_SERVICE = f"access:services!service={SERVICE_NAME}"
_ROLE_DESCRIPTIONS = {
    "viewer": "AutoML Hub: sees the team's data, models and jobs",
    "data_scientist": "AutoML Hub: uploads data, trains and predicts",
    "trial": "AutoML Hub: trains and predicts during a free trial",
    "automl_admin": "AutoML Hub: manages teams, plans and quotas",
}
c.JupyterHub.custom_scopes = {scope: {"description": text} for scope, text in SCOPES.items()}
c.JupyterHub.load_roles = [
    {
        "name": role,
        "description": _ROLE_DESCRIPTIONS[role],
        "scopes": [SCOPE_PREFIX + permission for permission in permissions] + [_ACCESS_SERVICE],
    }
    for role, permissions in ROLES.items()
]
# Every user may reach the service (it then answers 403 to one outside a team
# or without the permission); 'self' already lets a token read its owner's groups.
c.JupyterHub.extra_user_scopes = [_ACCESS_SERVICE]


# --- the platform service -----------------------------------------------------------


c.JupyterHub.services = [
    {
        "name": SERVICE_NAME,
        "url": settings.service_url,  # http://127.0.0.1:10101 unless the environment says otherwise
        "command": [sys.executable, "-m", "hub.service"],
        "cwd": str(ROOT),
        "environment": to_environment(settings),
        # Browser OAuth tokens carry the caller's automl scopes, and may read the
        # caller's own model with its roles (name and groups come with any token).
        "oauth_client_allowed_scopes": [*SCOPES, "read:users!user"],
        "oauth_no_confirm": True,  # part of the platform, not a third party
    }
]

# --- login: local accounts (the hub issue replaces this with Keycloak) ------------------
# See hub/embedded.py: one administrator in one team; others by the shared password.

_passwords = embedded_secrets(settings)
c.JupyterHub.authenticator_class = "shared-password"
c.SharedPasswordAuthenticator.user_password = _passwords["hub_password"]
c.SharedPasswordAuthenticator.admin_password = _passwords["hub_admin_password"]
c.Authenticator.admin_users = {embedded.ADMIN}
c.Authenticator.allow_all = True  # anyone with the password; teams and roles still gate the service
c.JupyterHub.load_groups = {TENANT_PREFIX + embedded.TEAM: {"users": [embedded.ADMIN]}}
for _role in c.JupyterHub.load_roles:
    if _role["name"] in embedded.ADMIN_ROLES:
        _role["users"] = [embedded.ADMIN]
# No single-user server yet (JupyterLab and the dashboards come with the hub
# issue): a login lands on the hub's home, which lists the service, rather
# than on a spawn that has nothing to start.
c.JupyterHub.default_url = "/hub/home"
