"""The service's gate: who is calling, from which team, allowed to do what.

JupyterHub authenticates every request: REST clients send a hub API token
(``Authorization: token <t>`` or ``Bearer <t>``), browsers go through the hub's
OAuth and then carry the token in this service's own signed cookie. The hub
reports the caller's groups and scopes; this module turns them into a `Caller`.

Conventions carried by the hub (see jupyterhub_config.py):

- a team (tenant) is a hub group named ``tenant:<name>``; a caller belongs to
  exactly one;
- permissions are the custom scopes ``custom:automl:read|train|admin``, granted
  through hub roles. JupyterHub stores and hands out custom scopes but never
  enforces them: every handler of the service does, with `require`.

The app calls `install(app)` once; handlers take ``Depends(require("train"))``
(or ``Depends(current_caller)`` for what any team member may do). Failures are
`automl.errors.AuthError` (401/403 with a catalogue code), except a browser's
unauthenticated page visit, which is redirected to the hub's login.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import secrets
from dataclasses import dataclass
from urllib.parse import urlparse

from fastapi import Depends, FastAPI, Request
from fastapi.responses import RedirectResponse, Response
from jupyterhub.services.auth import HubOAuth, check_scopes
from tornado.httputil import url_concat
from tornado.web import HTTPError, create_signed_value, decode_signed_value

from automl.errors import AuthError
from automl.i18n import CATALOGUE
from automl.settings import Settings, get_settings, platform_secret

SERVICE_NAME = "automl"
TENANT_PREFIX = "tenant:"
SCOPE_PREFIX = "custom:automl:"

# Descriptions are what the hub shows on its token and OAuth pages.
SCOPES = {
    f"{SCOPE_PREFIX}read": "Read your team's data sets, models, experiments and jobs in AutoML Hub.",
    f"{SCOPE_PREFIX}train": "Upload data, train models and run predictions in AutoML Hub.",
    f"{SCOPE_PREFIX}admin": "Manage the teams, plans and quotas of AutoML Hub.",
}

# Hub role -> the automl permissions it grants. Order matters: when the hub
# does not report a caller's roles, the first role covered by their scopes names
# them (a trial user then reads as data_scientist: same permissions).
ROLES = {
    "automl_admin": ("read", "train", "admin"),
    "data_scientist": ("read", "train"),
    "trial": ("read", "train"),
    "viewer": ("read",),
}

# Browsers get a hub token in a cookie; these verbs change nothing, so a
# cookie alone may authenticate them (others must come from our own pages).
_SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})
_COOKIE_MAX_AGE_DAYS = 14  # the hub's own cookie lifetime; the hub still checks the token
_STATE_MAX_AGE = 600  # seconds to complete a login, as HubOAuth


@dataclass(frozen=True)
class Caller:
    """An authenticated hub user in exactly one team. `roles` are for display;
    permissions are `scopes` (the custom automl scopes the token holds)."""

    name: str
    tenant: str
    groups: tuple[str, ...]
    scopes: tuple[str, ...]
    roles: tuple[str, ...]
    is_admin: bool

    def can(self, permission: str) -> bool:
        """`permission` is 'read', 'train' or 'admin'."""
        return SCOPE_PREFIX + permission in self.scopes


def caller_from_model(model: dict) -> Caller:
    """The `Caller` described by a hub user model (/hub/api/user).

    Only unfiltered custom scopes count: ``custom:automl:train!group=x`` grants
    nothing here, since the service has no notion of scoping a permission.
    """
    name = model["name"]
    groups = tuple(sorted(model.get("groups") or ()))
    tenants = sorted(group[len(TENANT_PREFIX):] for group in groups if group.startswith(TENANT_PREFIX))
    if not tenants:
        raise AuthError("no_tenant", http_status=403, user=name)
    if len(tenants) > 1:
        raise AuthError("many_tenants", http_status=403, user=name, tenants=", ".join(tenants))
    scopes = tuple(sorted(scope for scope in model.get("scopes") or () if scope in SCOPES))
    held = {scope[len(SCOPE_PREFIX):] for scope in scopes}
    roles = tuple(sorted(role for role in model.get("roles") or () if role in ROLES))
    if not roles:
        roles = tuple(role for role, needs in ROLES.items() if held.issuperset(needs))[:1]
    return Caller(name=name, tenant=tenants[0], groups=groups, scopes=scopes, roles=roles,
                  is_admin="admin" in held)


class LoginRedirect(Exception):
    """A browser must sign in at the hub first; `install` answers with `response`."""

    def __init__(self, response: Response):
        super().__init__("login required")
        self.response = response


class HubGate:
    """Identifies requests with the hub through jupyterhub's `HubOAuth`.

    HubOAuth's cookie handling is written for tornado handlers, so the cookie
    and OAuth-state parts are redone here with tornado's signed values, keyed
    by a key derived from the platform secret. The OAuth state lives in its
    signed cookie, not in process memory, so several workers can share logins.
    """

    def __init__(self, settings: Settings | None = None, hub_auth: HubOAuth | None = None):
        self.settings = settings or get_settings()
        self._hub_auth = hub_auth
        self._cookie_secret: bytes | None = None

    @property
    def callback_path(self) -> str:
        return self.settings.service_prefix + "oauth_callback"

    @property
    def hub_auth(self) -> HubOAuth:
        # Late: HubOAuth refuses to exist without the hub's environment (token,
        # client id), which an app built for a unit test does not have.
        if self._hub_auth is None:
            self._hub_auth = HubOAuth(base_url=self.settings.service_prefix,
                                      oauth_redirect_uri=self.callback_path)
        return self._hub_auth

    @property
    def cookie_secret(self) -> bytes:
        if self._cookie_secret is None:
            key = platform_secret(self.settings)
            self._cookie_secret = hmac.new(key, b"automl hub oauth cookie", hashlib.sha256).hexdigest().encode()
        return self._cookie_secret

    async def identify(self, request: Request) -> Caller:
        token, from_cookie = self._token(request)
        if not token:
            raise self._unauthenticated(request)
        if from_cookie and request.method not in _SAFE_METHODS and not _same_origin(request):
            raise AuthError("cross_site_request", http_status=403)
        model = await self._user_model(request, token)
        if model is None:
            raise self._unauthenticated(request)
        access = self.hub_auth.access_scopes
        if access and not check_scopes(access, set(model.get("scopes") or ())):
            raise AuthError("no_service_access", http_status=403, user=model["name"])
        return caller_from_model(model)

    async def finish_login(self, request: Request) -> Response:
        """The OAuth callback: trade the code for a token, keep it in a cookie,
        go back to the page that asked for the login."""
        auth = self.hub_auth
        params = request.query_params
        if "error" in params:
            raise AuthError("oauth_failed", http_status=400, reason=params.get("error_description") or params["error"])
        saved = self._saved_state(request)
        state, code = params.get("state", ""), params.get("code", "")
        if not code or not state or not hmac.compare_digest(str(saved.get("state", "")), state):
            raise AuthError("oauth_failed", http_status=400, reason="state")
        try:
            token = await auth.token_for_code(code, code_verifier=saved.get("verifier"), sync=False)
        except HTTPError as error:
            raise AuthError("oauth_failed", http_status=400, reason=error.log_message or "token") from None
        if await self._user_model(request, token) is None:
            raise AuthError("oauth_failed", http_status=400, reason="token")
        response = RedirectResponse(self._local_url(saved.get("next")), status_code=302)
        self._set_cookie(request, response, auth.cookie_name, token, max_age=_COOKIE_MAX_AGE_DAYS * 86400)
        response.delete_cookie(auth.state_cookie_name, path=auth.cookie_path)
        return response

    # -- parts -------------------------------------------------------------

    def _token(self, request: Request) -> tuple[str | None, bool]:
        header = request.headers.get(self.hub_auth.auth_header_name)
        if header:
            match = self.hub_auth.auth_header_pat.match(header)
            return (match.group(1).strip() if match else None), False
        name = self.hub_auth.cookie_name
        return self._unsign(name, request.cookies.get(name)), True

    async def _user_model(self, request: Request, token: str) -> dict | None:
        session_id = request.cookies.get("jupyterhub-session-id", "")
        try:
            return await self.hub_auth.user_for_token(token, session_id=session_id, sync=False)
        except HTTPError:
            raise AuthError("hub_unavailable", http_status=503) from None

    def _unauthenticated(self, request: Request) -> Exception:
        """Pages visited by a browser go to the hub's login; API calls get a 401."""
        wants_page = (request.method in ("GET", "HEAD") and "authorization" not in request.headers
                      and "text/html" in request.headers.get("accept", ""))
        if not wants_page:
            return AuthError("not_authenticated", http_status=401)
        auth = self.hub_auth
        verifier, challenge, method = auth.generate_pkce_code_challenge()
        state = secrets.token_urlsafe(16)
        here = request.url.path + (f"?{request.url.query}" if request.url.query else "")
        login = url_concat(auth.login_url, {"state": state, "code_challenge": challenge,
                                            "code_challenge_method": method})
        response = RedirectResponse(login, status_code=302)
        saved = json.dumps({"state": state, "next": here, "verifier": verifier})
        self._set_cookie(request, response, auth.state_cookie_name, saved, max_age=_STATE_MAX_AGE)
        return LoginRedirect(response)

    def _local_url(self, url: str | None) -> str:
        """Only a path under this service: never an open redirect."""
        prefix = self.settings.service_prefix
        if not url or not url.startswith(prefix) or url.startswith("//"):
            return prefix
        return url

    def _set_cookie(self, request: Request, response: Response, name: str, value: str, max_age: int):
        secure = request.headers.get("x-forwarded-proto", request.url.scheme) == "https"
        signed = create_signed_value(self.cookie_secret, name, value).decode("ascii")
        response.set_cookie(name, signed, max_age=max_age, path=self.hub_auth.cookie_path,
                            httponly=True, samesite="lax", secure=secure)

    def _unsign(self, name: str, value: str | None, max_age_days: float = _COOKIE_MAX_AGE_DAYS) -> str | None:
        raw = decode_signed_value(self.cookie_secret, name, value, max_age_days=max_age_days) if value else None
        return None if raw is None else raw.decode("ascii", "replace")

    def _saved_state(self, request: Request) -> dict:
        name = self.hub_auth.state_cookie_name
        text = self._unsign(name, request.cookies.get(name), max_age_days=_STATE_MAX_AGE / 86400)
        try:
            return json.loads(text) if text else {}
        except ValueError:
            return {}


def _same_origin(request: Request) -> bool:
    """A state-changing request authenticated by cookie must come from our own
    pages: the browser's Origin (or Referer) names the host it was sent to."""
    source = request.headers.get("origin") or request.headers.get("referer")
    return bool(source) and urlparse(source).netloc == request.headers.get("host")


def install(app: FastAPI, settings: Settings | None = None, hub_auth: HubOAuth | None = None) -> HubGate:
    """Put the gate on `app`: the OAuth callback route and the login redirect."""
    gate = HubGate(settings, hub_auth)
    app.state.hub_gate = gate
    app.add_api_route(gate.callback_path, gate.finish_login, methods=["GET"], include_in_schema=False)
    app.add_exception_handler(LoginRedirect, lambda request, error: error.response)
    return gate


async def current_caller(request: Request) -> Caller:
    """Dependency: the authenticated caller, once per request (also kept on
    ``request.state.caller`` for middleware such as rate limits)."""
    caller = getattr(request.state, "caller", None)
    if caller is None:
        gate = getattr(request.app.state, "hub_gate", None)
        if gate is None:
            raise RuntimeError("hub.service.auth.install(app) was not called")
        caller = request.state.caller = await gate.identify(request)
    return caller


def require(permission: str):
    """Dependency factory: the caller, who must hold ``custom:automl:<permission>``."""
    if SCOPE_PREFIX + permission not in SCOPES:
        raise ValueError(f"unknown permission {permission!r}; choose one of read, train, admin")

    async def caller_with_permission(request: Request, caller: Caller = Depends(current_caller)) -> Caller:
        if not caller.can(permission):
            raise AuthError("missing_scope", http_status=403, user=caller.name, scope=SCOPE_PREFIX + permission,
                            permission=CATALOGUE[f"permission_{permission}"])
        limiter = getattr(request.app.state, "rate_limiter", None)
        if limiter is not None:  # per user, after authentication: anonymous calls never reach a handler
            await limiter.acheck(caller.name)
        return caller

    return caller_with_permission
