"""`python -m hub.embedded`: the platform on its embedded default, as `make start` runs it.

Its login is JupyterHub's shared-password authenticator with passwords that
`automl.settings.embedded_secrets` generates on first run, and one
administrator in one team, so that a fresh start can log in and train at once.
Others log in with the shared password under any name; they reach the platform
once an administrator puts them in a team (a hub group ``tenant:<name>``) and
gives them a role. The hub issue replaces this login with Keycloak.
"""

import os
import sys
from pathlib import Path

from automl.i18n import message
from automl.settings import embedded_secrets, get_settings

ADMIN = "admin"
TEAM = "default"
ADMIN_ROLES = ("automl_admin", "data_scientist")
ROOT = Path(__file__).resolve().parent.parent


def main():
    settings = get_settings()
    passwords = embedded_secrets(settings)
    print(message("start_banner", url=settings.hub_url, state_dir=settings.state_dir, admin=ADMIN,
                  admin_password=passwords["hub_admin_password"], team=TEAM,
                  password=passwords["hub_password"]), flush=True)
    # Further arguments go to JupyterHub (e.g. --JupyterHub.hub_bind_url=...).
    os.execv(sys.executable, [sys.executable, "-m", "jupyterhub", "-f", str(ROOT / "jupyterhub_config.py"), *sys.argv[1:]])


if __name__ == "__main__":
    main()
