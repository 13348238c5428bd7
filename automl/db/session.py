"""Engines, migrations and transactions for the metadata database.

Two backends: SQLite for the embedded default (one file shared by the web
process and the job workers) and PostgreSQL (psycopg 3) in production. What
differs between them lives here, so that the rest of the code writes plain
SQLAlchemy.
"""

from __future__ import annotations

import sqlite3

import re
from contextlib import contextmanager
from datetime import timedelta
from pathlib import Path
from typing import Iterator

from sqlalchemy import Engine, create_engine, event, select, text
from sqlalchemy.engine import make_url
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from ..errors import ParameterError, SettingsError
from ..settings import Settings, get_settings
from .models import Plan, Tenant, utcnow

MIGRATIONS = Path(__file__).parent / "migrations"
SQLITE_BUSY_TIMEOUT_S = 30
TENANT_NAME = re.compile(r"^[a-z0-9][a-z0-9_-]{0,62}$")
DEFAULT_PLAN = "trial"

# An arbitrary constant: the key of the PostgreSQL advisory lock that keeps two
# processes starting at once from running the migrations twice.
_MIGRATION_LOCK = 4_242_001
# Execution option read by the SQLite `begin` hook below.
_SQLITE_BEGIN = "automl_sqlite_begin"


def normalise_url(url: str) -> str:
    """`postgresql://` and `postgres://` -> `postgresql+psycopg://` (the driver we
    ship); refuse backends we do not support, naming the scheme."""
    scheme, sep, rest = url.partition("://")
    if not sep:
        raise SettingsError("database_url_unsupported", scheme=url.split(":", 1)[0][:32])
    if scheme in ("postgresql", "postgres"):
        scheme = "postgresql+psycopg"
    if scheme.split("+")[0] not in ("sqlite", "postgresql"):
        raise SettingsError("database_url_unsupported", scheme=scheme)
    return f"{scheme}://{rest}"


def make_engine(url: str | None = None, *, settings: Settings | None = None, **kwargs) -> Engine:
    """An engine for `url` (the deployment's DATABASE_URL by default).

    SQLite gets foreign keys, WAL (readers do not block the writer, so the web
    process keeps answering while a worker writes progress) and a busy timeout
    (a writer waits for the lock instead of failing at once). It also takes
    transaction control back from pysqlite, which otherwise never emits BEGIN
    before a SELECT: without that, a read-check-then-write is not atomic and
    `session_scope(immediate=True)` could not take the write lock up front.
    """
    url = normalise_url(url or (settings or get_settings()).database_url)
    if not url.startswith("sqlite"):
        kwargs.setdefault("pool_pre_ping", True)
        return create_engine(url, **kwargs)

    database = make_url(url).database
    if database and database != ":memory:" and not database.startswith("file:"):
        Path(database).expanduser().parent.mkdir(parents=True, exist_ok=True)
    # pysqlite's timeout is SQLite's busy timeout: how long a writer waits for the lock.
    connect_args = {"timeout": SQLITE_BUSY_TIMEOUT_S, **kwargs.pop("connect_args", {})}
    engine = create_engine(url, connect_args=connect_args, **kwargs)

    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_connection, connection_record):
        dbapi_connection.isolation_level = None  # we emit BEGIN ourselves
        cursor = dbapi_connection.cursor()
        cursor.execute("PRAGMA foreign_keys=ON")
        try:
            cursor.execute("PRAGMA journal_mode=WAL")
        except sqlite3.OperationalError:
            # Switching to WAL needs the database to itself; when another
            # connection holds it, that one has switched already (the mode is
            # stored in the file), so there is nothing left to do.
            pass
        cursor.close()

    @event.listens_for(engine, "begin")
    def _on_begin(connection):
        connection.exec_driver_sql(connection.get_execution_options().get(_SQLITE_BEGIN, "BEGIN"))

    return engine


@contextmanager
def session_scope(engine: Engine, *, immediate: bool = False) -> Iterator[Session]:
    """A session whose transaction commits at the end of the block, or rolls
    back if it raises. Objects stay readable after the block.

    `immediate=True` is for read-check-then-write transactions (quotas): on
    SQLite it starts with BEGIN IMMEDIATE, taking the database's write lock
    before the first read, so two of them run one after the other instead of
    both reading the same state. (With a plain BEGIN, the second one would
    also fail with "database is locked" when it tries to write after the
    first committed.) PostgreSQL ignores it: lock rows with FOR UPDATE there.
    """
    bind = engine
    if immediate and engine.dialect.name == "sqlite":
        bind = engine.execution_options(**{_SQLITE_BEGIN: "BEGIN IMMEDIATE"})
    session = Session(bind, expire_on_commit=False)
    try:
        yield session
        session.commit()
    except BaseException:
        session.rollback()
        raise
    finally:
        session.close()


def _alembic_config(connection):
    from alembic.config import Config

    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS).replace("%", "%%"))
    config.attributes["connection"] = connection
    return config


def _migrate(url_or_engine, action) -> None:
    engine = url_or_engine if isinstance(url_or_engine, Engine) else make_engine(url_or_engine)
    try:
        bind = engine
        if engine.dialect.name == "sqlite":
            bind = engine.execution_options(**{_SQLITE_BEGIN: "BEGIN IMMEDIATE"})
        with bind.begin() as connection:
            if engine.dialect.name == "postgresql":
                connection.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": _MIGRATION_LOCK})
            action(_alembic_config(connection))
    finally:
        if engine is not url_or_engine:
            engine.dispose()


def upgrade(url_or_engine: str | Engine | None = None, revision: str = "head") -> None:
    """Bring the schema to `revision`, in one transaction and under a lock,
    so that the service and the workers may all call it when they start.
    The migrations ship inside the package: no alembic.ini is needed."""
    from alembic import command

    _migrate(url_or_engine or get_settings().database_url, lambda config: command.upgrade(config, revision))


def downgrade(url_or_engine: str | Engine | None, revision: str = "base") -> None:
    from alembic import command

    _migrate(url_or_engine or get_settings().database_url, lambda config: command.downgrade(config, revision))


def current_revision(engine: Engine) -> str | None:
    from alembic.runtime.migration import MigrationContext

    with engine.connect() as connection:
        return MigrationContext.configure(connection).get_current_revision()


def check_tenant_name(name: str) -> str:
    if not isinstance(name, str) or not TENANT_NAME.match(name):
        raise ParameterError("tenant_name_invalid", name=str(name)[:80])
    return name


def get_or_create_tenant(session: Session, name: str, settings: Settings | None = None) -> Tenant:
    """The tenant `name`, created on first sight on the trial plan.

    Two requests may see a new tenant at once: the insert runs in a savepoint,
    and the loser of the race reads the winner's row instead of failing.
    """
    check_tenant_name(name)
    tenant = session.get(Tenant, name)
    if tenant is not None:
        return tenant
    settings = settings or get_settings()
    plan = session.get(Plan, DEFAULT_PLAN)
    if plan is None:
        choices = ", ".join(session.scalars(select(Plan.name)).all()) or "-"
        raise ParameterError("plan_unknown", plan=DEFAULT_PLAN, choices=choices)
    now = utcnow()
    expires = now + timedelta(days=settings.trial_duration_days) if plan.is_trial else None
    try:
        with session.begin_nested():
            tenant = Tenant(name=name, plan=plan.name, created_at=now, trial_expires_at=expires, disabled=False)
            session.add(tenant)
    except IntegrityError:
        tenant = session.get(Tenant, name, populate_existing=True)
        if tenant is None:
            raise
    return tenant
