"""Artifact storage: one behavioural suite run against each backend (a folder,
a real S3 server from moto, the GCS emulator), plus what is particular to each."""

from __future__ import annotations

import dataclasses
import io
import os
import uuid

import pytest
from backends import free_port, gcs_server, s3_server

from automl.errors import ArtifactKeyError, SettingsError, StorageError
from automl.settings import from_environment
from automl.storage import (
    GCSStorage,
    LocalStorage,
    NoStorage,
    S3Storage,
    artifact_key,
    artifact_prefix,
    get_storage,
)

MB = 1000 * 1000
MiB = 1024 * 1024


@pytest.fixture(scope="session")
def s3_endpoint():
    with s3_server() as endpoint:
        yield endpoint


@pytest.fixture(scope="session")
def gcs_endpoint():
    with gcs_server() as endpoint:
        yield endpoint


def _settings(backend: str, request, tmp_path):
    bucket = f"test-{uuid.uuid4().hex[:12]}"  # a fresh bucket: each test starts empty
    base = from_environment({})
    if backend == "local":
        return dataclasses.replace(base, storage_backend="local", storage_root=tmp_path / "artifacts")
    if backend == "s3":
        return dataclasses.replace(
            base, storage_backend="s3", minio_endpoint=request.getfixturevalue("s3_endpoint"),
            minio_access_key="test-access", minio_secret_key="test-secret", minio_bucket=bucket,
            minio_secure=False)
    return dataclasses.replace(base, storage_backend="gcs", gcs_bucket=bucket,
                               gcs_endpoint=request.getfixturevalue("gcs_endpoint"))


@pytest.fixture(params=["local", "s3", "gcs"])
def storage(request, tmp_path):
    return get_storage(_settings(request.param, request, tmp_path))


def stored_objects(storage) -> list[str]:
    """Everything in the backend, read around the interface (which only lists
    valid prefixes), to prove that a refused call wrote nothing anywhere."""
    if isinstance(storage, LocalStorage):
        if not storage.root.exists():
            return []
        return sorted(str(p.relative_to(storage.root)) for p in storage.root.rglob("*") if p.is_file())
    storage._prepare()
    return sorted(key for key, _ in storage._entries(""))


class Trickle:
    """A stream of unknown length that hands out a little at a time, like a socket."""

    def __init__(self, data: bytes, step: int = 64 * 1024):
        self._data = memoryview(data)
        self._step = step
        self._at = 0

    def read(self, size: int = -1) -> bytes:
        size = self._step if size is None or size < 0 else min(size, self._step)
        chunk = bytes(self._data[self._at : self._at + size])
        self._at += len(chunk)
        return chunk


KEY = artifact_key("acme", "models", "m1", "model.pkl")


# -- keys ------------------------------------------------------------------------


def test_artifact_key_and_prefix_are_built_from_checked_parts():
    assert artifact_key("acme-2", "datasets", "Ab_9-x", "sales.2024.csv") == "acme-2/datasets/Ab_9-x/sales.2024.csv"
    assert artifact_prefix("acme") == "acme/"
    assert artifact_prefix("acme", "jobs") == "acme/jobs/"
    assert artifact_prefix("acme", "jobs", "42") == "acme/jobs/42/"
    longest = artifact_key("a" * 63, "predictions", "i" * 64, "n" * 128)
    assert longest.count("/") == 3


@pytest.mark.parametrize(
    ("parts", "code"),
    [
        (("Acme", "models", "1", "x"), "storage_bad_tenant"),
        (("-acme", "models", "1", "x"), "storage_bad_tenant"),
        (("acme_co", "models", "1", "x"), "storage_bad_tenant"),
        (("", "models", "1", "x"), "storage_bad_tenant"),
        (("a" * 64, "models", "1", "x"), "storage_bad_tenant"),
        (("acme\n", "models", "1", "x"), "storage_bad_tenant"),
        (("..", "models", "1", "x"), "storage_bad_tenant"),
        ((None, "models", "1", "x"), "storage_bad_tenant"),
        (("acme", "secrets", "1", "x"), "storage_bad_kind"),
        (("acme", "Models", "1", "x"), "storage_bad_kind"),
        (("acme", "", "1", "x"), "storage_bad_kind"),
        (("acme", "models", "", "x"), "storage_bad_id"),
        (("acme", "models", "..", "x"), "storage_bad_id"),
        (("acme", "models", "a/b", "x"), "storage_bad_id"),
        (("acme", "models", "i" * 65, "x"), "storage_bad_id"),
        (("acme", "models", "1", "../x"), "storage_bad_name"),
        (("acme", "models", "1", "a/b"), "storage_bad_name"),
        (("acme", "models", "1", ""), "storage_bad_name"),
        (("acme", "models", "1", "/etc/passwd"), "storage_bad_name"),
        (("acme", "models", "1", ".."), "storage_bad_name"),
        (("acme", "models", "1", "a..b"), "storage_bad_name"),
        (("acme", "models", "1", ".hidden"), "storage_bad_name"),
        (("acme", "models", "1", "a\\b"), "storage_bad_name"),
        (("acme", "models", "1", "x\n"), "storage_bad_name"),
        (("acme", "models", "1", "résumé.csv"), "storage_bad_name"),
        (("acme", "models", "1", "n" * 129), "storage_bad_name"),
        (("acme", "models", "1", 7), "storage_bad_name"),
    ],
)
def test_artifact_key_refuses_each_bad_part(parts, code):
    with pytest.raises(ArtifactKeyError) as caught:
        artifact_key(*parts)
    assert caught.value.code == code
    assert isinstance(caught.value, ValueError) and isinstance(caught.value, StorageError)


def test_artifact_prefix_refuses_an_id_without_kind_and_bad_parts():
    for args in [("acme", None, "1"), ("ACME",), ("acme", "nope"), ("acme", "models", "../1")]:
        with pytest.raises(ArtifactKeyError):
            artifact_prefix(*args)


def test_key_errors_speak_both_languages():
    with pytest.raises(ArtifactKeyError) as caught:
        artifact_key("acme", "models", "1", "../x")
    assert "'../x'" in caught.value.message("en") and "Rename" in caught.value.message("en")
    assert "« ../x »" in caught.value.message("fr")


# -- the same behaviour on every backend --------------------------------------------


def test_bytes_round_trip_and_overwrite(storage):
    assert not storage.exists(KEY)
    assert storage.put_bytes(KEY, b"first version") == 13
    assert storage.exists(KEY)
    assert storage.get_bytes(KEY) == b"first version"
    assert storage.size(KEY) == 13
    assert storage.put_bytes(KEY, b"second") == 6
    assert storage.get_bytes(KEY) == b"second"
    assert storage.size(KEY) == 6


def test_empty_object(storage):
    assert storage.put_bytes(KEY, b"") == 0
    assert storage.exists(KEY)
    assert storage.get_bytes(KEY) == b""
    assert storage.size(KEY) == 0


def test_file_round_trip(storage, tmp_path):
    data = os.urandom(3 * MB)
    source = tmp_path / "upload.bin"
    source.write_bytes(data)
    assert storage.put_file(KEY, source) == len(data)
    target = tmp_path / "download.bin"
    target.write_bytes(b"old content, replaced")
    storage.get_file(KEY, target)
    assert target.read_bytes() == data
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []  # no partial left


def test_put_file_of_a_missing_path_writes_nothing(storage, tmp_path):
    with pytest.raises(FileNotFoundError):
        storage.put_file(KEY, tmp_path / "absent.bin")
    assert stored_objects(storage) == []


def test_stream_of_known_length(storage):
    assert storage.put_stream(KEY, io.BytesIO(b"0123456789extra"), length=10) == 10
    assert storage.get_bytes(KEY) == b"0123456789"  # exactly `length` bytes, as announced


def test_stream_of_unknown_length_larger_than_a_part(storage):
    data = os.urandom(11 * MB)  # three 5 MiB parts on S3, two 8 MiB chunks on GCS
    assert storage.put_stream(KEY, Trickle(data)) == len(data)
    assert storage.size(KEY) == len(data)
    assert storage.get_bytes(KEY) == data


def test_stream_shorter_than_its_length_stores_nothing(storage):
    with pytest.raises(StorageError) as caught:
        storage.put_stream(KEY, io.BytesIO(b"abc"), length=10)
    assert caught.value.code == "artifact_incomplete"
    assert caught.value.params["received"] == 3
    assert stored_objects(storage) == []


def test_open_streams_in_pieces(storage):
    data = os.urandom(3 * MB)
    storage.put_bytes(KEY, data)
    with storage.open(KEY) as stream:
        head = stream.read(64 * 1024)
        rest = stream.read()
    assert head + rest == data
    assert stream.closed


def test_missing_key(storage, tmp_path):
    storage.put_bytes(KEY, b"present")  # the bucket exists; only the key is missing
    missing = artifact_key("acme", "models", "m1", "absent.pkl")
    for call in (storage.get_bytes, storage.open, storage.size,
                 lambda key: storage.get_file(key, tmp_path / "out.bin")):
        with pytest.raises(StorageError) as caught:
            call(missing)
        assert caught.value.code == "artifact_missing"
        assert missing in caught.value.message("en")
    assert [p.name for p in tmp_path.iterdir() if p.name != "artifacts"] == []  # not even a partial
    assert storage.exists(missing) is False
    storage.delete(missing)  # not an error
    storage.delete(KEY)
    storage.delete(KEY)  # twice neither
    assert not storage.exists(KEY)


def _fill(storage):
    objects = {
        artifact_key("acme", "models", "1", "model.pkl"): b"m" * 100,
        artifact_key("acme", "models", "1", "report.html"): b"r" * 20,
        artifact_key("acme", "models", "2", "model.pkl"): b"n" * 5,
        artifact_key("acme", "datasets", "7", "sales.csv"): b"d" * 1000,
        artifact_key("acme2", "models", "1", "model.pkl"): b"x" * 7,  # 'acme' must not cover it
    }
    for key, data in objects.items():
        storage.put_bytes(key, data)
    return objects


def test_list_stays_under_its_prefix(storage):
    _fill(storage)
    assert storage.list(artifact_prefix("acme")) == [
        "acme/datasets/7/sales.csv",
        "acme/models/1/model.pkl",
        "acme/models/1/report.html",
        "acme/models/2/model.pkl",
    ]
    assert storage.list(artifact_prefix("acme", "models", "1")) == [
        "acme/models/1/model.pkl", "acme/models/1/report.html"]
    assert storage.list(artifact_prefix("acme2")) == ["acme2/models/1/model.pkl"]
    assert storage.list(artifact_prefix("nobody")) == []


def test_delete_prefix_counts_and_spares_the_rest(storage):
    _fill(storage)
    assert storage.delete_prefix(artifact_prefix("acme", "models", "1")) == 2
    assert storage.list(artifact_prefix("acme")) == ["acme/datasets/7/sales.csv", "acme/models/2/model.pkl"]
    assert storage.delete_prefix(artifact_prefix("acme")) == 2
    assert storage.delete_prefix(artifact_prefix("acme")) == 0
    assert storage.list(artifact_prefix("acme")) == []
    assert storage.get_bytes("acme2/models/1/model.pkl") == b"x" * 7


def test_usage_counts_a_tenant_only(storage):
    assert storage.usage("acme") == 0
    _fill(storage)
    assert storage.usage("acme") == 1125
    assert storage.usage("acme2") == 7
    storage.delete("acme/datasets/7/sales.csv")
    assert storage.usage("acme") == 125


BAD_KEYS = [
    "../x", "a/b", "", "/etc/passwd", "acme/models/1/../x", "acme/models/1/a/b",
    "acme/models/../../../x", "acme/models/1/", "acme//1/x", "Acme/models/1/x",
    "acme/secrets/1/x", "acme/models/1/.hidden", "acme/models/1/x\n", "/acme/models/1/x",
    "acme/models/1/..", None,
]


@pytest.mark.parametrize("key", BAD_KEYS)
def test_each_bad_key_is_refused_and_nothing_is_written(storage, key, tmp_path):
    source = tmp_path / "f.bin"
    source.write_bytes(b"data")
    calls = [
        lambda: storage.put_bytes(key, b"data"),
        lambda: storage.put_stream(key, io.BytesIO(b"data")),
        lambda: storage.put_file(key, source),
        lambda: storage.get_bytes(key),
        lambda: storage.get_file(key, tmp_path / "out.bin"),
        lambda: storage.open(key),
        lambda: storage.size(key),
        lambda: storage.exists(key),
        lambda: storage.delete(key),
    ]
    for call in calls:
        with pytest.raises(ArtifactKeyError):
            call()
    assert stored_objects(storage) == []
    assert not (tmp_path / "out.bin").exists()


@pytest.mark.parametrize("prefix", ["", "/", "acme", "../", "acme/../", "acme//", "ACME/",
                                    "acme/nope/", "acme/models/1/x/", "acme/models/1/x", None])
def test_each_bad_prefix_is_refused(storage, prefix):
    storage.put_bytes(KEY, b"kept")
    for call in (storage.list, storage.delete_prefix):
        with pytest.raises(ArtifactKeyError):
            call(prefix)
    assert storage.get_bytes(KEY) == b"kept"


@pytest.mark.parametrize("tenant", ["", "acme/", "../acme", "ACME", None])
def test_usage_refuses_a_bad_tenant(storage, tenant):
    with pytest.raises(ArtifactKeyError):
        storage.usage(tenant)


# -- local folder ---------------------------------------------------------------------


def test_local_creates_its_root_and_hides_partial_files(tmp_path):
    storage = LocalStorage(tmp_path / "new" / "root")
    storage.put_bytes(KEY, b"x")
    assert (tmp_path / "new" / "root" / "acme" / "models" / "m1" / "model.pkl").read_bytes() == b"x"
    (storage.root / "acme" / "models" / "m1" / ".model.pkl.123.part").write_bytes(b"half")
    (storage.root / "acme" / "stray file").write_bytes(b"?")
    assert storage.list("acme/") == [KEY]
    assert storage.usage("acme") == 1


def test_local_failed_stream_leaves_nothing(tmp_path):
    storage = LocalStorage(tmp_path / "root")

    class Broken:
        def __init__(self):
            self.calls = 0

        def read(self, size=-1):
            self.calls += 1
            if self.calls > 2:
                raise ConnectionResetError("client went away")
            return b"x" * 1000

    with pytest.raises(ConnectionResetError):
        storage.put_stream(KEY, Broken())
    assert stored_objects(storage) == []


def test_local_refuses_a_symlink_out_of_its_root(tmp_path):
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "secret.txt").write_bytes(b"not yours")
    storage = LocalStorage(tmp_path / "root")
    storage.root.mkdir()
    (storage.root / "acme").symlink_to(outside, target_is_directory=True)
    key = artifact_key("acme", "models", "1", "x")
    for call in (lambda: storage.put_bytes(key, b"escape"), lambda: storage.get_bytes(key),
                 lambda: storage.list("acme/"), lambda: storage.usage("acme"),
                 lambda: storage.delete_prefix("acme/")):
        with pytest.raises(ArtifactKeyError) as caught:
            call()
        assert caught.value.code == "storage_outside_root"
    assert sorted(p.name for p in outside.rglob("*")) == ["secret.txt"]


def test_local_refuses_a_file_symlink_out_of_its_root(tmp_path):
    secret = tmp_path / "secret.txt"
    secret.write_bytes(b"not yours")
    storage = LocalStorage(tmp_path / "root")
    storage.put_bytes(KEY, b"mine")
    path = storage.root / KEY
    path.unlink()
    path.symlink_to(secret)
    with pytest.raises(ArtifactKeyError):
        storage.get_bytes(KEY)
    with pytest.raises(ArtifactKeyError):
        storage.put_bytes(KEY, b"overwrite")
    assert secret.read_bytes() == b"not yours"


def test_local_delete_prefix_removes_empty_folders(tmp_path):
    storage = LocalStorage(tmp_path / "root")
    _fill(storage)
    storage.delete_prefix("acme/")
    assert not (storage.root / "acme").exists()
    assert (storage.root / "acme2").is_dir()


# -- S3 (moto) --------------------------------------------------------------------------


def test_s3_creates_its_bucket_and_uploads_in_parts(s3_endpoint):
    storage = S3Storage(s3_endpoint, "k", "s", f"parts-{uuid.uuid4().hex[:8]}", secure=False)
    assert not storage._client.bucket_exists(storage.bucket)
    data = os.urandom(11 * MB)
    assert storage.put_stream(KEY, Trickle(data)) == len(data)
    assert storage._client.bucket_exists(storage.bucket)
    # A multipart upload's ETag ends with its part count: 11 MB in 5 MiB parts.
    assert storage._client.stat_object(storage.bucket, KEY).etag.endswith("-3")
    assert storage.get_bytes(KEY) == data


def test_s3_accepts_an_endpoint_written_as_url(s3_endpoint):
    storage = S3Storage(f"http://{s3_endpoint}/", "k", "s", f"url-{uuid.uuid4().hex[:8]}")
    assert storage.endpoint == s3_endpoint
    assert storage.put_bytes(KEY, b"ok") == 2


def test_s3_unreachable_names_the_endpoint_not_the_secret():
    endpoint = f"127.0.0.1:{free_port()}"  # nothing listens there
    storage = S3Storage(endpoint, "access", "TOP-SECRET-VALUE", "automl", secure=False, retries=0)
    with pytest.raises(StorageError) as caught:
        storage.put_bytes(KEY, b"x")
    error = caught.value
    assert error.code == "storage_unreachable"
    for lang in ("en", "fr"):
        assert endpoint in error.message(lang)
        assert "TOP-SECRET-VALUE" not in error.message(lang)
    assert "refused" in error.message("en").lower()


# -- GCS (emulator) -------------------------------------------------------------------


def test_gcs_creates_its_bucket(gcs_endpoint):
    storage = GCSStorage(f"new-{uuid.uuid4().hex[:8]}", endpoint=gcs_endpoint)
    storage.put_bytes(KEY, b"x")
    assert storage._bucket.exists()
    assert storage.list("acme/") == [KEY]


def test_gcs_unreachable_names_the_endpoint():
    endpoint = f"http://127.0.0.1:{free_port()}"
    storage = GCSStorage("automl", endpoint=endpoint, retry_deadline=0.5)
    with pytest.raises(StorageError) as caught:
        storage.size(KEY)
    assert caught.value.code == "storage_unreachable"
    assert endpoint in caught.value.message("en")


# -- none, and the factory ------------------------------------------------------------


def test_none_refuses_every_operation_plainly(tmp_path):
    storage = get_storage(dataclasses.replace(from_environment({}), storage_backend="none"))
    assert isinstance(storage, NoStorage)
    source = tmp_path / "f.bin"
    source.write_bytes(b"data")
    calls = [
        lambda: storage.put_bytes(KEY, b"data"),
        lambda: storage.put_stream(KEY, io.BytesIO(b"data")),
        lambda: storage.put_file(KEY, source),
        lambda: storage.put_file(KEY, tmp_path / "absent"),
        lambda: storage.get_bytes(KEY),
        lambda: storage.get_file(KEY, tmp_path / "out.bin"),
        lambda: storage.open(KEY),
        lambda: storage.size(KEY),
        lambda: storage.exists(KEY),
        lambda: storage.delete(KEY),
        lambda: storage.list("acme/"),
        lambda: storage.delete_prefix("acme/"),
        lambda: storage.usage("acme"),
    ]
    for call in calls:
        with pytest.raises(StorageError) as caught:
            call()
        assert caught.value.code == "storage_disabled"
        assert "STORAGE_BACKEND" in caught.value.message("en")
        assert "STORAGE_BACKEND" in caught.value.message("fr")
    assert not (tmp_path / "out.bin").exists()


def test_get_storage_follows_the_settings(tmp_path):
    base = from_environment({})
    local = dataclasses.replace(base, storage_backend="local", storage_root=tmp_path / "a")
    storage = get_storage(local)
    assert isinstance(storage, LocalStorage) and storage.root == tmp_path / "a"
    assert get_storage(local) is storage  # one instance per deployment
    gcs = get_storage(dataclasses.replace(base, storage_backend="gcs", gcs_endpoint="http://127.0.0.1:1"))
    assert isinstance(gcs, GCSStorage)
    s3 = get_storage(dataclasses.replace(base, storage_backend="s3", minio_endpoint="127.0.0.1:1"))
    assert isinstance(s3, S3Storage)


def test_get_storage_s3_needs_an_endpoint():
    settings = dataclasses.replace(from_environment({}), storage_backend="s3", minio_endpoint="")
    with pytest.raises(SettingsError) as caught:
        get_storage(settings)
    assert caught.value.code == "storage_not_configured"
    assert "MINIO_ENDPOINT" in caught.value.message("en")
