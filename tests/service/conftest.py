"""A real JupyterHub, with its configurable-http-proxy and the platform service.

`start_hub` runs the repo's jupyterhub_config.py, loaded from a small test config
that moves everything to free loopback ports and a temporary state directory
and adds two teams (groups ``tenant:acme`` and ``tenant:globex``) with one user
per role, plus a user in no team. The session fixtures `hub` (the platform
service) and `gate_hub` (a stand-in serving only the gate) yield its URLs and an
API token per user.
"""

from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import sys
import time
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
from backends import fresh_database, s3_server

ROOT = Path(__file__).resolve().parents[2]
PROXY = ROOT / "node_modules" / ".bin" / "configurable-http-proxy"

# What the hub runs as the `automl` service: the platform service itself, or,
# until hub/service/app.py exists, the stand-in. The stand-in serves only the gate
# (api/me and one route per permission): the gate's own tests run against it.
STANDIN_MODULE = "tests.service.standin_service"
SERVICE_MODULE = "hub.service" if (ROOT / "hub" / "service" / "app.py").exists() else STANDIN_MODULE

# The platform service's settings in the test hub: a small upload limit so that
# "over the limit" costs megabytes, not gigabytes, and a rate limit that the
# suite's own traffic stays under but a test can reach in a few seconds.
SERVICE_ENV = {"MAX_UPLOAD_SIZE": "5MB", "DEFAULT_RATE_LIMIT": "300"}

PASSWORD = "automl-test-password"  # SharedPasswordAuthenticator: 8 characters or more
TENANTS = {"acme": ["ana", "vic", "adm"], "globex": ["tom", "bob"]}
ROLE_USERS = {"data_scientist": ["ana", "bob"], "viewer": ["vic"], "trial": ["tom"], "automl_admin": ["adm"]}
USERS = ["ana", "vic", "tom", "adm", "bob", "nobody"]
START_DEADLINE = 60  # seconds; a start takes a few
STOP_DEADLINE = 10

# Only what the hub needs to run: the developer's AutoML variables stay out.
_ENV_KEEP = ("PATH", "HOME", "LANG", "LC_ALL", "TMPDIR", "VIRTUAL_ENV", "PYTHONPATH", "USER")

_TEST_CONFIG = """\
import sys

load_subconfig({repo_config!r})
c = get_config()
c.JupyterHub.bind_url = "http://127.0.0.1:{port}"
c.JupyterHub.hub_bind_url = "http://127.0.0.1:{hub_port}"
c.ConfigurableHTTPProxy.api_url = "http://127.0.0.1:{proxy_api_port}"
for service in c.JupyterHub.services:
    if service["name"] == "automl":
        service["url"] = "http://127.0.0.1:{service_port}"
        service["command"] = [sys.executable, "-m", {service_module!r}]
        service["environment"] = {{**service["environment"], **{service_env!r}}}

# the harness: a service whose token may create tokens for users
c.JupyterHub.services.append({{"name": "test-harness", "api_token": {harness_token!r}}})
c.JupyterHub.load_roles.append({{"name": "test-harness", "scopes": ["tokens"], "services": ["test-harness"]}})

role_users = {role_users!r}
for role in c.JupyterHub.load_roles:
    if role["name"] in role_users:
        role["users"] = role_users[role["name"]]
c.JupyterHub.load_groups = {{"tenant:" + name: {{"users": users}} for name, users in {tenants!r}.items()}}
c.SharedPasswordAuthenticator.user_password = {password!r}
c.Authenticator.allow_all = False
c.Authenticator.allowed_users = set({users!r})
"""


@dataclass
class Hub:
    url: str  # public URL, through the proxy
    service_url: str  # <url>/services/automl/
    tokens: dict[str, str]  # user -> API token (default scopes: everything the user may do)
    log: Path
    harness_token: str  # may create tokens for any user
    password: str = PASSWORD
    start_seconds: float = 0.0  # from launch to the service answering through the proxy

    def new_token(self, user: str, **body) -> str:
        """Another API token for `user`; `body` as POST /hub/api/users/:name/tokens takes."""
        reply = httpx.post(f"{self.url}/hub/api/users/{user}/tokens", json={"note": "tests", **body},
                           headers={"Authorization": f"token {self.harness_token}"}, timeout=10)
        reply.raise_for_status()
        return reply.json()["token"]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _descendants(pid: int) -> list[tuple[int, str]]:
    """(pid, start time) of every process under `pid`, read from /proc: after the
    hub is gone its children are orphans, and the start time tells a reused pid."""
    parents: dict[int, list[tuple[int, str]]] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        parents.setdefault(int(fields[1]), []).append((int(stat.parent.name), fields[19]))
    found, todo = [], [pid]
    while todo:
        for child in parents.get(todo.pop(), []):
            found.append(child)
            todo.append(child[0])
    return found


def _alive(pid: int, started: str) -> bool:
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return False
    return fields[19] == started and fields[0] != "Z"


def _fail(message: str, log: Path):
    """Fail with the hub's own warnings and errors (the service's tracebacks
    tend to fill the end of the log) and the end of the log."""
    text = log.read_text(errors="replace") if log.exists() else ""
    hub_lines = [line for line in text.splitlines() if re.match(r"\[[WEC] ", line)][-15:]
    pytest.fail(f"{message}\n--- jupyterhub warnings and errors ---\n" + "\n".join(hub_lines)
                + f"\n--- end of the log ({log}) ---\n{text[-4000:]}", pytrace=False)


def _wait_ready(process: subprocess.Popen, service_url: str, log: Path, children: set):
    """Ready when the service, through the proxy, answers an anonymous API call
    with its own 401: then hub, proxy routes and service are all up.

    Collects the hub's processes into `children` meanwhile: a hub that gives up
    on its own leaves its proxy and service behind."""
    deadline = time.monotonic() + START_DEADLINE
    while time.monotonic() < deadline:
        children.update(_descendants(process.pid))
        if process.poll() is not None:
            _fail(f"jupyterhub exited with status {process.returncode} while starting", log)
        try:
            reply = httpx.get(service_url + "api/me", headers={"Accept": "application/json"}, timeout=2)
            if reply.status_code == 401 and reply.headers.get("content-type", "").startswith("application/json"):
                return
        except httpx.TransportError:
            pass
        time.sleep(0.1)
    _fail(f"jupyterhub was not ready within {START_DEADLINE} s", log)


def _stop(process: subprocess.Popen, children: set[tuple[int, str]]):
    """SIGTERM lets the hub stop its proxy and services; whatever outlives the
    deadline is killed."""
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(STOP_DEADLINE)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
    deadline = time.monotonic() + STOP_DEADLINE
    while any(_alive(*child) for child in children) and time.monotonic() < deadline:
        time.sleep(0.05)
    for pid, started in children:
        if _alive(pid, started):
            os.kill(pid, signal.SIGKILL)


@contextmanager
def start_hub(directory: Path, service_module: str, service_env: dict | None = None, extra_config: str = ""):
    """Run JupyterHub with the repo's config in `directory`; yield a `Hub`.

    `service_env` adds variables to the service's environment (e.g. DATABASE_URL);
    `extra_config` is appended to the test config (lines of `c.X.y = ...`).
    """
    if not PROXY.exists():
        pytest.fail(f"configurable-http-proxy is missing ({PROXY}): run `npm ci` at the repo root "
                    "(`make test` does it).", pytrace=False)
    port, hub_port, proxy_api_port, service_port = (free_port() for _ in range(4))
    harness_token = os.urandom(16).hex()
    config = directory / "jupyterhub_test_config.py"
    config.write_text(_TEST_CONFIG.format(
        repo_config=str(ROOT / "jupyterhub_config.py"), port=port, hub_port=hub_port,
        proxy_api_port=proxy_api_port, service_port=service_port, service_module=service_module,
        service_env=dict(service_env or {}), harness_token=harness_token, role_users=ROLE_USERS,
        tenants=TENANTS, password=PASSWORD, users=USERS) + extra_config)
    env = {name: os.environ[name] for name in _ENV_KEEP if name in os.environ}
    env["AUTOML_STATE_DIR"] = str(directory / "state")
    log = directory / "jupyterhub.log"
    url = f"http://127.0.0.1:{port}"
    started = time.monotonic()
    with log.open("wb") as output:
        # cwd: the repo root, so that `hub` and `tests` import as the service command expects
        process = subprocess.Popen([sys.executable, "-m", "jupyterhub", "-f", str(config)], cwd=ROOT, env=env,
                                   stdout=output, stderr=subprocess.STDOUT, start_new_session=True)
    children: set[tuple[int, str]] = set()
    try:
        _wait_ready(process, f"{url}/services/automl/", log, children)
        start_seconds = time.monotonic() - started
        hub = Hub(url=url, service_url=f"{url}/services/automl/", tokens={}, log=log,
                  harness_token=harness_token, start_seconds=start_seconds)
        hub.tokens = {user: hub.new_token(user) for user in USERS}
        yield hub
    finally:
        if process.poll() is None:
            children.update(_descendants(process.pid))
        _stop(process, children)


@pytest.fixture(scope="session", params=["sqlite+local", "postgresql+s3"])
def hub(request, tmp_path_factory):
    """The hub with the platform service, on the embedded default (SQLite, local
    artifacts) and on the production backends (PostgreSQL, S3 on moto): the same
    suite runs on both."""
    directory = tmp_path_factory.mktemp(request.param.replace("+", "-"))
    if request.param == "sqlite+local":
        with start_hub(directory, SERVICE_MODULE, service_env=SERVICE_ENV) as running:
            yield running
        return
    with fresh_database("postgresql", directory) as url, s3_server() as endpoint:
        env = {**SERVICE_ENV, "DATABASE_URL": url, "STORAGE_BACKEND": "s3", "MINIO_ENDPOINT": endpoint,
               "MINIO_SECURE": "false", "MINIO_ACCESS_KEY": "testing", "MINIO_SECRET_KEY": "testing",
               "MINIO_BUCKET": "automl-test"}
        with start_hub(directory, SERVICE_MODULE, service_env=env) as running:
            yield running


@pytest.fixture(scope="session")
def gate_hub(tmp_path_factory):
    """The hub with the stand-in service: the gate alone, for its own tests."""
    with start_hub(tmp_path_factory.mktemp("gate_hub"), STANDIN_MODULE) as running:
        yield running
