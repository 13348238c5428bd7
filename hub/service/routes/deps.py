"""What handlers need, as FastAPI dependencies."""

from __future__ import annotations

from contextlib import contextmanager

from fastapi import Request

from automl.db.session import session_scope


def platform(request: Request):
    return request.app.state.platform


@contextmanager
def session(request: Request, write: bool = False):
    """A metadata session. `write=True` for any transaction that may write:
    on SQLite it takes the write lock first, so it cannot fail half-way with
    "database is locked" when a job's heartbeat writes in between."""
    with session_scope(platform(request).engine, immediate=write) as s:
        yield s
