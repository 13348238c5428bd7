"""`make start`: the platform on its embedded default (hub/embedded.py), logged
into as its banner says, by a browser through the hub's form and OAuth."""

from __future__ import annotations

import json
import os
import re
import stat
import subprocess
import sys
from urllib.parse import urlparse

import httpx
import pytest

from .conftest import _ENV_KEEP, ROOT, _descendants, _stop, _wait_ready, free_port

PAGE = {"Accept": "text/html,application/xhtml+xml"}


@pytest.fixture(scope="module")
def started(tmp_path_factory):
    """`python -m hub.embedded` as `make start` runs it, on free ports: the
    public one through HUB_URL, the hub's and the proxy's API as the arguments
    it hands to JupyterHub, the service's through JupyterHub's own variable."""
    directory = tmp_path_factory.mktemp("embedded")
    port, hub_port, proxy_api_port, service_port = (free_port() for _ in range(4))
    url = f"http://127.0.0.1:{port}"
    env = {name: os.environ[name] for name in _ENV_KEEP if name in os.environ}
    env.update(AUTOML_STATE_DIR=str(directory / "state"), HUB_URL=url, DEFAULT_LANGUAGE="en",
               JUPYTERHUB_SERVICE_URL=f"http://127.0.0.1:{service_port}")
    log = directory / "start.log"
    with log.open("wb") as output:
        process = subprocess.Popen(
            [sys.executable, "-m", "hub.embedded", f"--JupyterHub.hub_bind_url=http://127.0.0.1:{hub_port}",
             f"--ConfigurableHTTPProxy.api_url=http://127.0.0.1:{proxy_api_port}"],
            cwd=ROOT, env=env, stdout=output, stderr=subprocess.STDOUT, start_new_session=True)
    children: set[tuple[int, str]] = set()
    try:
        _wait_ready(process, f"{url}/services/automl/", log, children)
        yield url, log.read_text(errors="replace"), directory / "state" / "secrets.json"
    finally:
        if process.poll() is None:
            children.update(_descendants(process.pid))
        _stop(process, children)


def sign_in(url: str, browser: httpx.Client, user: str, password: str) -> httpx.Response:
    """Open the service's `api/me` like a browser, sign in on the hub's form, follow back."""
    page = browser.get(f"{url}/services/automl/api/me")
    assert urlparse(str(page.url)).path == "/hub/login", page.url
    xsrf = re.search(r'name="_xsrf"\s+value="([^"]+)"', page.text).group(1)
    return browser.post(page.url, data={"username": user, "password": password, "_xsrf": xsrf})


def test_the_banner_says_where_and_how_to_log_in(started):
    url, banner, secrets_file = started
    passwords = json.loads(secrets_file.read_text())
    assert stat.S_IMODE(secrets_file.stat().st_mode) == 0o600
    assert f"{url}/hub/login" in banner
    assert f"admin / {passwords['hub_admin_password']}" in banner
    assert f"any name / {passwords['hub_password']}" in banner
    assert len(passwords["hub_admin_password"]) >= 32 and passwords["hub_password"] != passwords["hub_admin_password"]


def test_the_administrator_logs_in_to_the_default_team_with_every_permission(started):
    url, _, secrets_file = started
    password = json.loads(secrets_file.read_text())["hub_admin_password"]
    with httpx.Client(headers=PAGE, follow_redirects=True, timeout=10) as browser:
        reply = sign_in(url, browser, "admin", password)
        assert reply.status_code == 200, reply.text
        me = reply.json()
        assert (me["user"], me["tenant"]) == ("admin", "default")
        assert set(me["roles"]) == {"automl_admin", "data_scientist"}
        assert set(me["scopes"]) == {"custom:automl:read", "custom:automl:train", "custom:automl:admin"}


def test_others_log_in_with_the_shared_password_but_reach_nothing_without_a_team(started):
    url, _, secrets_file = started
    password = json.loads(secrets_file.read_text())["hub_password"]
    with httpx.Client(headers=PAGE, follow_redirects=True, timeout=10) as browser:
        reply = sign_in(url, browser, "carol", password)
        assert reply.status_code == 403 and reply.json()["error"] == "no_tenant"


@pytest.mark.parametrize("user, which", [("admin", "hub_password"), ("carol", "hub_admin_password"),
                                         ("admin", None)])
def test_a_wrong_password_does_not_log_in(started, user, which):
    """The administrator only with the admin password; others never with it."""
    url, _, secrets_file = started
    password = json.loads(secrets_file.read_text())[which] if which else "not-the-password"
    with httpx.Client(headers=PAGE, follow_redirects=True, timeout=10) as browser:
        reply = sign_in(url, browser, user, password)
        assert reply.status_code == 403 and urlparse(str(reply.url)).path == "/hub/login"
        assert "service-automl" not in browser.cookies


def test_a_login_lands_on_the_hub_home_that_lists_the_service(started):
    url, _, secrets_file = started
    password = json.loads(secrets_file.read_text())["hub_admin_password"]
    with httpx.Client(headers=PAGE, follow_redirects=True, timeout=10) as browser:
        page = browser.get(f"{url}/hub/login")
        xsrf = re.search(r'name="_xsrf"\s+value="([^"]+)"', page.text).group(1)
        home = browser.post(f"{url}/hub/login", data={"username": "admin", "password": password, "_xsrf": xsrf})
        assert home.status_code == 200 and urlparse(str(home.url)).path == "/hub/home"
        assert "/services/automl/" in home.text
