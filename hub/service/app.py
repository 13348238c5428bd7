"""The app factory: wiring of settings, metadata, storage, runner and routes,
and the one place where errors become `{"error": code, "message": text}`."""

from __future__ import annotations

import asyncio
import gc
import logging
from contextlib import asynccontextmanager
from collections import OrderedDict
from dataclasses import dataclass, field

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException as StarletteHTTPException

from automl.errors import (
    ArtifactSignatureError,
    AutoMLError,
    DataError,
    ModelFileError,
    ParameterError,
    StorageError,
)
from automl.i18n import message
from automl.settings import Settings, check_secrets, get_settings

log = logging.getLogger(__name__)

# Status of each kind of error, unless the error carries its own `http_status`.
STATUS = (
    (DataError, 422),
    (ParameterError, 422),
    (ArtifactSignatureError, 500),
    (ModelFileError, 500),
    (StorageError, 503),
)


@dataclass
class Platform:
    """What handlers share, built once per app."""

    settings: Settings
    engine: object
    storage: object
    runner: object
    metrics: dict
    # (tenant, model id) -> (storage key, signature): a model's file never changes,
    # so predictions skip the metadata lookup; deleting the model forgets it.
    model_files: OrderedDict = field(default_factory=OrderedDict)


def language(request: Request) -> str | None:
    """The caller's language from Accept-Language when it is one we speak."""
    for part in request.headers.get("accept-language", "").split(","):
        code = part.split(";")[0].strip().lower()[:2]
        if code in ("fr", "en"):
            return code
    return None


def error_response(request: Request, status: int, code: str, headers=None, **params) -> JSONResponse:
    return JSONResponse({"error": code, "message": message(code, language(request), **params)},
                        status_code=status, headers=headers)


def _status(error: AutoMLError) -> int:
    status = getattr(error, "http_status", None)
    if status:
        return status
    for kind, code in STATUS:
        if isinstance(error, kind):
            return code
    return 400


async def _automl_error(request: Request, error: AutoMLError):
    status = _status(error)
    headers = getattr(error, "headers", None)
    if status >= 500:
        log.error("%s %s: %s", request.method, request.url.path, error.code)
    return JSONResponse({"error": error.code, "message": error.message(language(request))},
                        status_code=status, headers=headers)


def describe_validation(errors) -> tuple[str, dict]:
    """The first problem of a request, in words: which field, what is wrong."""
    first = errors[0]
    where = ".".join(str(p) for p in first.get("loc", ()) if p not in ("body", "query", "path"))
    kind = first.get("type", "")
    ctx = {k: v for k, v in (first.get("ctx") or {}).items() if isinstance(v, (int, float, str))}
    if kind == "json_invalid":
        return "invalid_json", {}
    code = {
        "missing": "field_missing",
        "extra_forbidden": "field_unknown",
        "greater_than_equal": "field_too_small",
        "less_than_equal": "field_too_large",
        "string_too_short": "field_too_short",
        "string_too_long": "field_too_long",
        "too_short": "field_too_few",
        "too_long": "field_too_many",
        "literal_error": "field_not_a_choice",
        "string_pattern_mismatch": "field_bad_format",
    }.get(kind, "field_invalid")
    return code, {"field": where or "body", "detail": first.get("msg", ""), **ctx}


async def _validation_error(request: Request, error: RequestValidationError):
    code, params = describe_validation(error.errors())
    return error_response(request, 422, code, **params)


async def _http_error(request: Request, error: StarletteHTTPException):
    code = {404: "route_not_found", 405: "method_not_allowed"}.get(error.status_code, "http_error")
    return error_response(request, error.status_code, code, http_status=error.status_code)


REAP_SECONDS = 10.0


async def _reap(runner, engine):
    """Every REAP_SECONDS: jobs whose process died or hangs are taken back."""
    while True:
        await asyncio.sleep(REAP_SECONDS)
        try:
            taken = await run_in_threadpool(runner.reap, engine)
        except Exception:  # noqa: BLE001 - the reaper must outlive a failing round
            log.exception("reaping jobs failed")
            continue
        if any(taken.values()):
            log.warning("jobs taken back: %s", taken)


def create_app(settings: Settings | None = None, runner=None) -> FastAPI:
    """`runner` defaults to the local process pools; tests may pass their own."""
    settings = settings or get_settings()
    check_secrets(settings)  # production refuses to start on a missing or example secret

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        from automl.db.session import make_engine, upgrade
        from automl.jobs import LocalRunner, metric_table
        from automl.ratelimit import get_rate_limiter
        from automl.storage import get_storage

        upgrade(settings.database_url)
        engine = make_engine(settings.database_url)
        active = runner or LocalRunner(settings)
        metrics = active.call(metric_table).result()
        app.state.platform = Platform(settings, engine, get_storage(settings), active, metrics)
        app.state.rate_limiter = get_rate_limiter(settings)
        recovered = active.recover(engine)
        if any(recovered.values()):
            log.warning("jobs recovered at start: %s", recovered)
        reaper = asyncio.create_task(_reap(active, engine))
        # What start-up built lives as long as the service: kept out of the garbage
        # collector's full passes, which would otherwise pause some requests.
        gc.collect()
        gc.freeze()
        try:
            yield
        finally:
            reaper.cancel()
            if runner is None:
                active.shutdown()
            limiter = app.state.rate_limiter
            if limiter is not None:
                if hasattr(limiter, "aclose"):
                    await limiter.aclose()
                limiter.close()
            engine.dispose()

    prefix = settings.service_prefix.rstrip("/")
    app = FastAPI(
        title="AutoML Hub platform API",
        version="1",
        lifespan=lifespan,
        openapi_url=f"{prefix}/api/openapi.json",
        docs_url=f"{prefix}/api/docs",
        redoc_url=None,
    )
    app.add_exception_handler(AutoMLError, _automl_error)
    app.add_exception_handler(RequestValidationError, _validation_error)
    app.add_exception_handler(StarletteHTTPException, _http_error)

    from .auth import install
    from .routes import admin, core, datasets, jobs, models

    install(app, settings)
    for module in (core, datasets, jobs, models, admin):
        app.include_router(module.router, prefix=f"{prefix}/api")
    return app
