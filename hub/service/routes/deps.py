"""What handlers need, as FastAPI dependencies."""

from __future__ import annotations

from contextlib import contextmanager

from fastapi import Request

from automl.db.session import session_scope


def platform(request: Request):
    return request.app.state.platform


@contextmanager
def session(request: Request):
    with session_scope(platform(request).engine) as s:
        yield s
