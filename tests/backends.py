"""Real backends for tests: throwaway PostgreSQL databases and loopback S3/GCS
servers, shared by the metadata, storage and service suites."""

from __future__ import annotations

import socket
import time
import urllib.error
import urllib.request
import uuid
from contextlib import contextmanager

import pytest
from sqlalchemy import create_engine, text
from sqlalchemy.exc import OperationalError

PG_SERVER = "postgresql+psycopg://postgres@127.0.0.1:5432/"


def wait_until_answers(url: str, deadline: float = 15.0) -> None:
    """Poll `url` until it answers HTTP at all, or fail after `deadline` seconds."""
    end = time.monotonic() + deadline
    while True:
        try:
            urllib.request.urlopen(url, timeout=1).close()
            return
        except urllib.error.HTTPError:
            return  # an HTTP error is an answer: the server is up
        except OSError:
            if time.monotonic() > end:
                raise
        time.sleep(0.05)


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@contextmanager
def fresh_database(backend: str, directory):
    """The URL of an empty database, removed afterwards. PostgreSQL is part of
    the test environment (CI has it): its absence fails, it is not skipped."""
    if backend == "sqlite":
        yield f"sqlite:///{directory / 'automl.sqlite'}"
        return
    admin = create_engine(PG_SERVER + "postgres", isolation_level="AUTOCOMMIT")
    name = f"automl_test_{uuid.uuid4().hex[:12]}"
    try:
        with admin.connect() as connection:
            connection.execute(text(f'CREATE DATABASE "{name}"'))
    except OperationalError as error:
        admin.dispose()
        pytest.fail(f"no PostgreSQL on 127.0.0.1:5432 (user postgres, trust auth): {error.orig}")
    try:
        yield PG_SERVER + name
    finally:
        with admin.connect() as connection:
            connection.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()


@contextmanager
def s3_server():
    """moto's S3 server on loopback; yields its endpoint, host:port."""
    from moto.server import ThreadedMotoServer

    server = ThreadedMotoServer("127.0.0.1", 0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    try:
        wait_until_answers(f"http://{host}:{port}/")
        yield f"{host}:{port}"
    finally:
        server.stop()


@contextmanager
def gcs_server():
    """gcp-storage-emulator on loopback; yields its URL."""
    from gcp_storage_emulator.server import create_server

    port = free_port()
    server = create_server("127.0.0.1", port, in_memory=True)
    server.start()
    endpoint = f"http://127.0.0.1:{port}"
    try:
        wait_until_answers(endpoint + "/")
        yield endpoint
    finally:
        server.stop()
