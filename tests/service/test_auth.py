"""The service's gate, through the real hub and proxy: tokens, the browser's
OAuth login, teams and permissions. The hub runs the stand-in service
(tests/service/standin_service.py), which mounts the gate and nothing else."""

from __future__ import annotations

import asyncio
import dataclasses
import re
from urllib.parse import parse_qs, urlparse

import httpx
import pytest
from fastapi import Depends, FastAPI
from fastapi.responses import JSONResponse
from jupyterhub.services.auth import HubOAuth

from automl.errors import AuthError
from automl.i18n import CATALOGUE
from automl.settings import from_environment
from hub.service.auth import Caller, caller_from_model, current_caller, install, require

from .conftest import free_port

JSON = {"Accept": "application/json"}
PAGE = {"Accept": "text/html,application/xhtml+xml"}
EXPECTED = {  # user -> (team, permissions, role)
    "ana": ("acme", {"read", "train"}, "data_scientist"),
    "vic": ("acme", {"read"}, "viewer"),
    "adm": ("acme", {"read", "train", "admin"}, "automl_admin"),
    "tom": ("globex", {"read", "train"}, "trial"),
    "bob": ("globex", {"read", "train"}, "data_scientist"),
}


def get(gate_hub, path, token=None, scheme="token", **kwargs):
    headers = {**JSON, **({"Authorization": f"{scheme} {token}"} if token else {})}
    return httpx.get(gate_hub.service_url + path, headers=headers, timeout=10, **kwargs)


@pytest.mark.parametrize("user", sorted(EXPECTED))
def test_token_gives_team_scopes_and_role(gate_hub, user):
    tenant, permissions, role = EXPECTED[user]
    reply = get(gate_hub, "api/me", gate_hub.tokens[user])
    assert reply.status_code == 200, reply.text
    assert reply.json() == {
        "name": user,
        "tenant": tenant,
        "groups": [f"tenant:{tenant}"],
        "scopes": sorted(f"custom:automl:{p}" for p in permissions),
        "roles": [role],
        "is_admin": "admin" in permissions,
    }


def test_bearer_header_works_too(gate_hub):
    reply = get(gate_hub, "api/me", gate_hub.tokens["bob"], scheme="Bearer")
    assert reply.status_code == 200 and reply.json()["name"] == "bob"


@pytest.mark.parametrize("headers", [
    {},
    {"Authorization": "token not-a-hub-token"},
    {"Authorization": "Bearer"},
    {"Authorization": "Basic YW5hOnB3"},
], ids=["none", "unknown-token", "empty-bearer", "basic"])
def test_unauthenticated_api_call_gets_401_json(gate_hub, headers):
    reply = httpx.get(gate_hub.service_url + "api/me", headers={**JSON, **headers}, timeout=10)
    assert reply.status_code == 401
    body = reply.json()
    assert body["error"] == "not_authenticated" and body["message"]


def test_api_client_is_never_redirected_even_asking_for_html(gate_hub):
    reply = httpx.get(gate_hub.service_url + "api/me", headers={**PAGE, "Authorization": "token nope"}, timeout=10)
    assert reply.status_code == 401


def test_user_in_no_team_is_refused(gate_hub):
    reply = get(gate_hub, "api/me", gate_hub.tokens["nobody"])
    assert reply.status_code == 403
    assert reply.json()["error"] == "no_tenant" and "nobody" in reply.json()["message"]


@pytest.mark.parametrize("user,permission,allowed", [
    ("vic", "read", True), ("vic", "train", False), ("vic", "admin", False),
    ("ana", "train", True), ("ana", "admin", False),
    ("tom", "train", True), ("adm", "admin", True),
])
def test_each_permission_is_checked(gate_hub, user, permission, allowed):
    reply = get(gate_hub, f"api/{permission}", gate_hub.tokens[user])
    if allowed:
        assert reply.status_code == 200 and reply.json() == {"user": user}
        return
    assert reply.status_code == 403
    body = reply.json()
    assert body["error"] == "missing_scope"
    # the permission in plain words, in the service's language (French by default)
    assert CATALOGUE[f"permission_{permission}"]["fr"] in body["message"]


def test_token_without_access_to_the_service_is_refused(gate_hub):
    narrow = gate_hub.new_token("ana", scopes=["read:users:name!user=ana"])
    reply = get(gate_hub, "api/me", narrow)
    assert reply.status_code == 403 and reply.json()["error"] == "no_service_access"


def test_token_limited_to_read_cannot_train(gate_hub):
    limited = gate_hub.new_token("ana", scopes=["custom:automl:read", "access:services!service=automl"])
    assert get(gate_hub, "api/read", limited).status_code == 200
    reply = get(gate_hub, "api/train", limited)
    assert reply.status_code == 403 and reply.json()["error"] == "missing_scope"


def test_browser_page_visit_is_sent_to_the_hub_login(gate_hub):
    reply = httpx.get(gate_hub.service_url + "api/me", headers=PAGE, timeout=10)
    assert reply.status_code == 302
    location = urlparse(reply.headers["location"])
    query = parse_qs(location.query)
    assert location.path == "/hub/api/oauth2/authorize"
    assert query["client_id"] == ["service-automl"]
    assert query["redirect_uri"] == ["/services/automl/oauth_callback"]
    assert query["state"] and query["code_challenge_method"] == ["S256"]
    assert "service-automl-oauth-state" in reply.cookies


def _sign_in(gate_hub, browser: httpx.Client, user: str, start: str) -> httpx.Response:
    """Open `start` like a browser, sign in on the hub's form, follow back."""
    page = browser.get(start)
    assert urlparse(str(page.url)).path == "/hub/login", page.url
    xsrf = re.search(r'name="_xsrf"\s+value="([^"]+)"', page.text).group(1)
    return browser.post(page.url, data={"username": user, "password": gate_hub.password, "_xsrf": xsrf})


def test_browser_login_through_hub_oauth(gate_hub):
    with httpx.Client(base_url=gate_hub.url, headers=PAGE, follow_redirects=True, timeout=10) as browser:
        reply = _sign_in(gate_hub, browser, "tom", "/services/automl/api/me")
        assert reply.status_code == 200, reply.text
        assert str(reply.url) == gate_hub.service_url + "api/me"
        me = reply.json()
        # 'trial' (not 'data_scientist', same scopes) shows the OAuth token may read its roles
        assert (me["name"], me["tenant"], me["roles"]) == ("tom", "globex", ["trial"])
        assert me["scopes"] == ["custom:automl:read", "custom:automl:train"]
        # the cookie now authenticates API calls too, without a new round trip
        again = browser.get("/services/automl/api/train", headers=JSON, follow_redirects=False)
        assert again.status_code == 200 and again.json() == {"user": "tom"}


def test_browser_of_a_viewer_cannot_train(gate_hub):
    with httpx.Client(base_url=gate_hub.url, headers=PAGE, follow_redirects=True, timeout=10) as browser:
        assert _sign_in(gate_hub, browser, "vic", "/services/automl/api/read").json() == {"user": "vic"}
        reply = browser.get("/services/automl/api/train", headers=JSON)
        assert reply.status_code == 403 and reply.json()["error"] == "missing_scope"


def test_cookie_authenticated_change_needs_same_origin(gate_hub):
    with httpx.Client(base_url=gate_hub.url, headers=PAGE, follow_redirects=True, timeout=10) as browser:
        _sign_in(gate_hub, browser, "bob", "/services/automl/api/me")
        foreign = browser.post("/services/automl/api/train", headers={**JSON, "Origin": "http://evil.example"})
        assert foreign.status_code == 403 and foreign.json()["error"] == "cross_site_request"
        bare = browser.post("/services/automl/api/train", headers=JSON)
        assert bare.status_code == 403 and bare.json()["error"] == "cross_site_request"
        own = browser.post("/services/automl/api/train", headers={**JSON, "Origin": gate_hub.url})
        assert own.status_code == 200 and own.json() == {"user": "bob"}


def test_forged_cookie_is_not_accepted(gate_hub):
    cookies = {"service-automl": gate_hub.tokens["ana"]}  # a real token, but not signed by the service
    reply = httpx.get(gate_hub.service_url + "api/me", headers=JSON, cookies=cookies, timeout=10)
    assert reply.status_code == 401


@pytest.mark.parametrize("query", ["code=abc&state=forged", "code=abc", "error=access_denied"])
def test_oauth_callback_refuses_what_it_did_not_start(gate_hub, query):
    reply = httpx.get(f"{gate_hub.service_url}oauth_callback?{query}", headers=JSON, timeout=10)
    assert reply.status_code == 400 and reply.json()["error"] == "oauth_failed"


# -- the hub's user model -> Caller, without a hub ---------------------------------------


def model(**fields):
    return {"name": "eve", "groups": ["tenant:acme"], "scopes": [], **fields}


def test_caller_from_model_needs_exactly_one_team():
    with pytest.raises(AuthError) as error:
        caller_from_model(model(groups=["tenant:acme", "tenant:globex", "staff"]))
    assert (error.value.code, error.value.http_status) == ("many_tenants", 403)
    assert error.value.params["tenants"] == "acme, globex"
    with pytest.raises(AuthError) as error:
        caller_from_model(model(groups=["staff", "tenants:acme"]))
    assert error.value.code == "no_tenant"


def test_caller_from_model_counts_only_unfiltered_automl_scopes():
    caller = caller_from_model(model(scopes=["custom:automl:read", "custom:automl:train!group=tenant:acme",
                                             "custom:other:admin", "read:users!user=eve"]))
    assert caller.scopes == ("custom:automl:read",)
    assert caller.can("read") and not caller.can("train") and not caller.is_admin
    assert caller.roles == ("viewer",)  # named from the scopes when the hub does not report roles


def test_caller_roles_reported_by_the_hub_win():
    caller = caller_from_model(model(scopes=["custom:automl:read", "custom:automl:train"], roles=["trial", "user"]))
    assert caller == Caller("eve", "acme", ("tenant:acme",), ("custom:automl:read", "custom:automl:train"),
                            ("trial",), False)


def test_require_knows_only_the_three_permissions():
    with pytest.raises(ValueError, match="read, train, admin"):
        require("delete")


def test_hub_out_of_reach_answers_503(tmp_path):
    settings = dataclasses.replace(from_environment({}), state_dir=tmp_path)
    hub_auth = HubOAuth(api_token="service-token", oauth_client_id="service-automl",
                        api_url=f"http://127.0.0.1:{free_port()}/hub/api")  # nothing listens there
    app = FastAPI()
    install(app, settings, hub_auth)
    app.add_exception_handler(AuthError, lambda request, error: JSONResponse(
        {"error": error.code, "message": error.message()}, status_code=error.http_status))
    app.add_api_route("/services/automl/api/me", lambda caller=Depends(current_caller): caller.name)

    async def call():
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app), base_url="http://test") as client:
            return await client.get("/services/automl/api/me", headers={"Authorization": "token abc"})

    reply = asyncio.run(call())
    assert reply.status_code == 503 and reply.json()["error"] == "hub_unavailable"
