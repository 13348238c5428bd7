"""A stand-in for the platform service: only the gate, so that the hub fixture
can exercise authentication through the real hub and proxy whatever the state
of hub/service/app.py. Run by JupyterHub as `python -m tests.service.standin_service`.

Routes (under the service prefix): ``api/me`` answers the `Caller` of any team
member; ``api/read``, ``api/train`` and ``api/admin`` (GET and POST) answer the
caller's name when they hold that permission.
"""

from __future__ import annotations

from dataclasses import asdict
from urllib.parse import urlparse

import uvicorn
from fastapi import Depends, FastAPI
from fastapi.responses import JSONResponse

from automl.errors import AuthError
from automl.settings import Settings, get_settings
from hub.service.auth import Caller, current_caller, install, require


def create_app(settings: Settings | None = None) -> FastAPI:
    settings = settings or get_settings()
    prefix = settings.service_prefix
    app = FastAPI()
    install(app, settings)

    @app.exception_handler(AuthError)
    async def auth_error(request, error: AuthError):
        return JSONResponse({"error": error.code, "message": error.message()}, status_code=error.http_status)

    @app.get(prefix + "api/me")
    async def me(caller: Caller = Depends(current_caller)):
        return asdict(caller)

    for permission in ("read", "train", "admin"):
        async def probe(caller: Caller = Depends(require(permission))):
            return {"user": caller.name}

        app.add_api_route(f"{prefix}api/{permission}", probe, methods=["GET", "POST"])
    return app


def main():
    url = urlparse(get_settings().service_url)
    uvicorn.run(create_app(), host=url.hostname, port=url.port, log_level="warning")


if __name__ == "__main__":
    main()
