"""Artifact storage: one interface, four backends (local folder, S3/MinIO, GCS, none).

Keys are ``<tenant>/<kind>/<id>/<name>`` and only code builds them
(`artifact_key`, `artifact_prefix`): a name that comes from a person is
checked part by part, so no key can reach another tenant's files or, on the
local backend, leave the storage folder. Every method re-checks its key, so a
key assembled by hand is refused too. Data moves in chunks: a multi-gigabyte
upload never sits in memory.
"""

from __future__ import annotations

import abc
import errno
import io
import os
import re
import shutil
import tempfile
import threading
from contextlib import contextmanager
from functools import lru_cache
from pathlib import Path

from .errors import ArtifactKeyError, SettingsError, StorageError
from .settings import Settings, get_settings

__all__ = [
    "KINDS",
    "Storage",
    "LocalStorage",
    "S3Storage",
    "GCSStorage",
    "NoStorage",
    "artifact_key",
    "artifact_prefix",
    "check_key",
    "check_prefix",
    "get_storage",
]

KINDS = ("datasets", "models", "jobs", "reports", "predictions")
CHUNK_SIZE = 1024 * 1024

_TENANT = re.compile(r"[a-z0-9][a-z0-9-]{0,62}")
_ID = re.compile(r"[A-Za-z0-9_-]{1,64}")
_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,127}")


def _shown(value) -> str:
    return str(value)[:100]


def _check(pattern: re.Pattern, value, code: str) -> str:
    # fullmatch, not match + "$": "$" would accept a trailing newline.
    if not isinstance(value, str) or not pattern.fullmatch(value):
        raise ArtifactKeyError(code, value=_shown(value))
    return value


def artifact_key(tenant: str, kind: str, id: str, name: str) -> str:
    """The storage key of file `name` of object `id` of `kind` in `tenant`."""
    prefix = artifact_prefix(tenant, kind, id)
    _check(_NAME, name, "storage_bad_name")
    if ".." in name:
        raise ArtifactKeyError("storage_bad_name", value=_shown(name))
    return prefix + name


def artifact_prefix(tenant: str, kind: str | None = None, id: str | None = None) -> str:
    """The prefix of a tenant, of one kind in it, or of one object: what `list`,
    `delete_prefix` and `usage` accept. It ends with '/', so that tenant 'acme'
    never covers tenant 'acme2'."""
    parts = [_check(_TENANT, tenant, "storage_bad_tenant")]
    if kind is not None:
        if kind not in KINDS:
            raise ArtifactKeyError("storage_bad_kind", value=_shown(kind), choices=", ".join(KINDS))
        parts.append(kind)
    if id is not None:
        if kind is None:
            raise ArtifactKeyError("storage_bad_prefix", value=_shown(f"{tenant}/?/{id}/"))
        parts.append(_check(_ID, id, "storage_bad_id"))
    return "/".join(parts) + "/"


def check_key(key) -> str:
    """`key` if `artifact_key` could have built it; ArtifactKeyError otherwise."""
    parts = key.split("/") if isinstance(key, str) else []
    if len(parts) != 4:
        raise ArtifactKeyError("storage_bad_key", value=_shown(key))
    return artifact_key(*parts)


def check_prefix(prefix) -> str:
    """`prefix` if `artifact_prefix` could have built it; an empty prefix (the
    whole store) is refused, so one call can never delete every tenant."""
    parts = prefix[:-1].split("/") if isinstance(prefix, str) and prefix.endswith("/") else []
    if not 1 <= len(parts) <= 3:
        raise ArtifactKeyError("storage_bad_prefix", value=_shown(prefix))
    return artifact_prefix(*parts)


def _is_key(key: str) -> bool:
    try:
        check_key(key)
    except ArtifactKeyError:
        return False
    return True


class _Counted:
    """The caller's stream as a backend reads it: counts bytes (the S3 API does
    not return them for an unknown length), stops at `length`, and refuses a
    stream that ends before `length`, so the upload is aborted, not truncated."""

    def __init__(self, stream, key: str, length: int | None = None):
        self._stream = stream
        self._key = key
        self._length = length
        self.count = 0

    def readable(self) -> bool:
        return True

    def tell(self) -> int:  # the GCS client asks where the upload starts
        return self.count

    def read(self, size: int | None = -1) -> bytes:
        left = None if self._length is None else self._length - self.count
        if size is None or size < 0:
            size = left
        elif left is not None:
            size = min(size, left)
        if size is None:
            data = self._stream.read()
        else:
            data = self._stream.read(size) if size else b""
            while data and len(data) < size:  # a socket may return less: read on
                more = self._stream.read(size - len(data))
                if not more:
                    break
                data += more
        data = bytes(data or b"")
        self.count += len(data)
        if left is not None and size and len(data) < size:
            raise StorageError("artifact_incomplete", key=self._key, expected=self._length,
                               received=self.count)
        return data


class _Download(io.RawIOBase):
    """A remote object read as a file: every read goes through the backend's
    error translation, and closing hands the connection back."""

    def __init__(self, storage: Storage, key: str, read, close):
        self._storage = storage
        self._key = key
        self._read = read
        self._close = close

    def readable(self) -> bool:
        return True

    def readinto(self, buffer) -> int:
        with self._storage._call(self._key):
            data = self._read(len(buffer))
        buffer[: len(data)] = data
        return len(data)

    def readall(self) -> bytes:
        chunks = []
        while chunk := self.read(CHUNK_SIZE):
            chunks.append(chunk)
        return b"".join(chunks)

    def close(self) -> None:
        if not self.closed:
            try:
                self._close()
            finally:
                super().close()


def _copy_whole(source, path: Path, prefix: str) -> None:
    """Copy `source` to `path` whole or not at all: into a hidden file beside it,
    renamed at the end, so that no reader ever sees half a file."""
    fd, partial = tempfile.mkstemp(dir=path.parent, prefix=prefix, suffix=".part")
    try:
        with os.fdopen(fd, "wb") as target:
            shutil.copyfileobj(source, target, CHUNK_SIZE)
        os.replace(partial, path)
    except BaseException:
        Path(partial).unlink(missing_ok=True)
        raise


class Storage(abc.ABC):
    """Where the platform keeps datasets, models, reports and predictions.

    Public methods check keys and translate backend errors into StorageError;
    a backend implements the underscored methods only.
    """

    def put_file(self, key: str, path) -> int:
        """Store the file at `path`; returns the bytes stored."""
        key = check_key(key)
        path = Path(path)
        if not path.is_file():  # before the backend, so it is not read as a missing key
            raise FileNotFoundError(errno.ENOENT, os.strerror(errno.ENOENT), str(path))
        with self._call(key):
            return self._put_file(key, path)

    def put_stream(self, key: str, stream, length: int | None = None) -> int:
        """Store what `stream` yields (exactly `length` bytes when given, up to
        its end otherwise); returns the bytes stored."""
        key = check_key(key)
        counted = _Counted(stream, key, length)
        with self._call(key):
            self._put(key, counted, length)
        return counted.count

    def put_bytes(self, key: str, data: bytes) -> int:
        return self.put_stream(key, io.BytesIO(data), len(data))

    def open(self, key: str):
        """A binary file that streams the object; close it (or use `with`)."""
        key = check_key(key)
        with self._call(key):
            return self._open(key)

    def get_bytes(self, key: str) -> bytes:
        with self.open(key) as source:
            return source.read()

    def get_file(self, key: str, path) -> None:
        """Copy the object to `path`, whole or not at all: a failed download
        leaves no partial file behind."""
        path = Path(path)
        with self.open(key) as source:
            _copy_whole(source, path, prefix=f".{path.name}.")

    def size(self, key: str) -> int:
        key = check_key(key)
        with self._call(key):
            return self._size(key)

    def exists(self, key: str) -> bool:
        try:
            self.size(key)
        except StorageError as error:
            if error.code == "artifact_missing":
                return False
            raise
        return True

    def delete(self, key: str) -> None:
        """Remove the object; a missing one is not an error (deleting twice is safe)."""
        key = check_key(key)
        with self._call(key):
            self._delete(key)

    def list(self, prefix: str) -> list[str]:
        """Sorted keys under `prefix` (from `artifact_prefix`)."""
        prefix = check_prefix(prefix)
        with self._call():
            return sorted(key for key, _ in self._entries(prefix))

    def delete_prefix(self, prefix: str) -> int:
        """Remove every object under `prefix`; returns how many were removed."""
        keys = self.list(prefix)
        for key in keys:
            self.delete(key)
        return len(keys)

    def usage(self, tenant: str) -> int:
        """Bytes stored for `tenant`, for its storage quota."""
        prefix = artifact_prefix(tenant)
        with self._call():
            return sum(size for _, size in self._entries(prefix))

    # -- what a backend provides ------------------------------------------------

    @contextmanager
    def _call(self, key: str | None = None):
        """Prepare the backend once, and turn its errors into StorageError."""
        try:
            self._prepare()
            yield
        except StorageError:
            raise
        except Exception as error:
            translated = self._translate(error, key)
            if translated is None:
                raise
            raise translated from error

    def _prepare(self) -> None:
        """Called before each operation; a remote backend creates its bucket here."""

    def _translate(self, error: Exception, key: str | None) -> StorageError | None:
        """The StorageError that `error` means, or None to let it through."""
        return None

    def _put_file(self, key: str, path: Path) -> int:
        with path.open("rb") as source:
            counted = _Counted(source, key)
            self._put(key, counted, None)
            return counted.count

    @abc.abstractmethod
    def _put(self, key: str, stream: _Counted, length: int | None) -> None: ...

    @abc.abstractmethod
    def _open(self, key: str): ...

    @abc.abstractmethod
    def _size(self, key: str) -> int: ...

    @abc.abstractmethod
    def _delete(self, key: str) -> None: ...

    @abc.abstractmethod
    def _entries(self, prefix: str):
        """(key, size) of each object under `prefix`."""


class LocalStorage(Storage):
    """A folder: the embedded default. Files are written to a hidden temporary
    file and renamed, so a reader never sees half an artifact."""

    def __init__(self, root):
        self.root = Path(root).absolute()

    def __repr__(self) -> str:
        return f"LocalStorage({str(self.root)!r})"

    def _path(self, name: str) -> Path:
        # Keys are checked already; this also catches a symlink inside the root
        # that points elsewhere.
        root = self.root.resolve()
        path = (root / name).resolve()
        if path == root or not path.is_relative_to(root):
            raise ArtifactKeyError("storage_outside_root", key=_shown(name))
        return path

    def _translate(self, error, key):
        if isinstance(error, FileNotFoundError) and key is not None:
            return StorageError("artifact_missing", key=key)
        return None

    def _put(self, key, stream, length):
        path = self._path(key)
        path.parent.mkdir(parents=True, exist_ok=True)
        _copy_whole(stream, path, prefix=".")

    def _open(self, key):
        return self._path(key).open("rb")

    def _size(self, key):
        return self._path(key).stat().st_size

    def _delete(self, key):
        self._path(key).unlink(missing_ok=True)

    def _entries(self, prefix):
        top = self._path(prefix.rstrip("/"))
        root = self.root.resolve()
        # os.walk does not follow symlinked folders; stray and temporary files
        # (hidden names) are not keys and are skipped.
        for folder, _, files in os.walk(top):
            for name in files:
                path = Path(folder, name)
                key = path.relative_to(root).as_posix()
                if _is_key(key):
                    yield key, path.stat().st_size

    def delete_prefix(self, prefix):
        count = super().delete_prefix(prefix)
        top = self._path(check_prefix(prefix).rstrip("/"))
        for folder, _, _ in sorted(os.walk(top), reverse=True):  # deepest first
            try:
                os.rmdir(folder)
            except OSError:
                pass  # not empty: another upload is landing there
        return count


class _BucketStorage(Storage):
    """A backend with a bucket that is created on first use, once per instance."""

    endpoint = ""

    def __init__(self):
        self._lock = threading.Lock()
        self._ready = False

    def _prepare(self):
        if self._ready:
            return
        with self._lock:
            if not self._ready:
                self.ensure_bucket()
                self._ready = True

    @abc.abstractmethod
    def ensure_bucket(self) -> None:
        """Create the bucket when it does not exist."""


class S3Storage(_BucketStorage):
    """MinIO or any S3 service, through the `minio` SDK. Uploads of unknown
    length go in `part_size` parts: memory stays at a few parts whatever the
    size."""

    part_size = 5 * 1024 * 1024  # the S3 minimum; 10,000 parts allow ~50 GB

    def __init__(self, endpoint: str, access_key: str, secret_key: str, bucket: str,
                 secure: bool = True, retries: int = 3):
        import urllib3
        from minio import Minio

        super().__init__()
        if "://" in endpoint:  # tolerate a URL where host:port is expected
            scheme, _, endpoint = endpoint.partition("://")
            secure = scheme == "https"
        self.endpoint = endpoint.rstrip("/")
        self.bucket = bucket
        # minio's default client waits 5 minutes to connect and retries 5 times:
        # a storage outage would hang every request instead of reporting it.
        http = urllib3.PoolManager(
            timeout=urllib3.Timeout(connect=10, read=300),
            retries=urllib3.Retry(total=retries, backoff_factor=0.2,
                                  status_forcelist=[500, 502, 503, 504]),
            maxsize=10,
        )
        self._client = Minio(self.endpoint, access_key=access_key or None,
                             secret_key=secret_key or None, secure=secure, http_client=http)

    def __repr__(self) -> str:
        return f"S3Storage({self.endpoint!r}, bucket={self.bucket!r})"

    def ensure_bucket(self):
        from minio.error import S3Error

        if self._client.bucket_exists(self.bucket):
            return
        try:
            self._client.make_bucket(self.bucket)
        except S3Error as error:  # another process created it meanwhile
            if error.code not in ("BucketAlreadyOwnedByYou", "BucketAlreadyExists"):
                raise

    def _translate(self, error, key):
        import urllib3
        from minio.error import MinioException, S3Error

        if isinstance(error, S3Error):
            # moto answers NoSuchKey for a missing bucket as well.
            if key is not None and error.code in ("NoSuchKey", "NoSuchBucket"):
                return StorageError("artifact_missing", key=key)
            return StorageError("storage_failed", endpoint=self.endpoint, reason=error.code)
        if isinstance(error, MinioException):
            return StorageError("storage_failed", endpoint=self.endpoint, reason=type(error).__name__)
        if isinstance(error, urllib3.exceptions.HTTPError):
            reason = getattr(error, "reason", None) or error
            # "<HTTPConnection object at 0x..>: Failed to ...: [Errno 111] Connection refused"
            return StorageError("storage_unreachable", endpoint=self.endpoint,
                                reason=str(reason).rsplit(": ", 1)[-1])
        return None

    def _put_file(self, key, path):
        size = path.stat().st_size
        self._client.fput_object(self.bucket, key, str(path))  # parts sized from the file
        return size

    def _put(self, key, stream, length):
        self._client.put_object(self.bucket, key, stream, -1 if length is None else length,
                                part_size=self.part_size)

    def _open(self, key):
        response = self._client.get_object(self.bucket, key)

        def close():
            response.close()
            response.release_conn()

        return io.BufferedReader(_Download(self, key, response.read, close), CHUNK_SIZE)

    def _size(self, key):
        return self._client.stat_object(self.bucket, key).size

    def _delete(self, key):
        self._client.remove_object(self.bucket, key)  # S3 deletes a missing key silently

    def _entries(self, prefix):
        for item in self._client.list_objects(self.bucket, prefix=prefix, recursive=True):
            yield item.object_name, item.size


class GCSStorage(_BucketStorage):
    """Google Cloud Storage. With `endpoint` (the emulator's URL) the client
    talks to it anonymously; otherwise it uses Google's default credentials.
    Transfers go in `chunk_size` pieces (resumable uploads, ranged reads)."""

    chunk_size = 8 * 1024 * 1024  # a multiple of 256 KiB, as GCS requires

    def __init__(self, bucket: str, project: str = "", endpoint: str = "",
                 retry_deadline: float = 30.0):
        from google.api_core.retry import Retry
        from google.cloud.storage.retry import DEFAULT_RETRY

        super().__init__()
        self.bucket_name = bucket
        self.project = project
        self.api_endpoint = endpoint.rstrip("/")
        self.endpoint = self.api_endpoint or "Google Cloud Storage"
        # The client's default retries a refused connection for two minutes.
        self._retry: Retry = DEFAULT_RETRY.with_timeout(retry_deadline)
        self._bucket = None

    def __repr__(self) -> str:
        return f"GCSStorage({self.bucket_name!r}, endpoint={self.endpoint!r})"

    def ensure_bucket(self):
        from google.api_core.exceptions import Conflict
        from google.auth.credentials import AnonymousCredentials
        from google.cloud import storage

        if self.api_endpoint:
            client = storage.Client(project=self.project or "automl",
                                    credentials=AnonymousCredentials(),
                                    client_options={"api_endpoint": self.api_endpoint})
        else:
            client = storage.Client(project=self.project or None)
        bucket = client.lookup_bucket(self.bucket_name, retry=self._retry)
        if bucket is None:
            try:
                bucket = client.create_bucket(self.bucket_name, retry=self._retry)
            except Conflict:  # another process created it meanwhile
                bucket = client.bucket(self.bucket_name)
        self._bucket = bucket

    def _translate(self, error, key):
        import requests
        from google.api_core.exceptions import GoogleAPICallError, NotFound, RetryError
        from google.auth.exceptions import GoogleAuthError

        if isinstance(error, NotFound) and key is not None:
            return StorageError("artifact_missing", key=key)
        if isinstance(error, GoogleAPICallError):
            return StorageError("storage_failed", endpoint=self.endpoint, reason=type(error).__name__)
        if isinstance(error, GoogleAuthError):
            return StorageError("storage_failed", endpoint=self.endpoint, reason=str(error)[:200])
        if isinstance(error, RetryError | requests.exceptions.ConnectionError | requests.exceptions.Timeout):
            cause = error.cause if isinstance(error, RetryError) and error.cause else error
            return StorageError("storage_unreachable", endpoint=self.endpoint,
                                reason=type(cause).__name__)
        return None

    def _blob(self, key):
        return self._bucket.blob(key, chunk_size=self.chunk_size)

    def _put_file(self, key, path):
        blob = self._blob(key)
        blob.upload_from_filename(str(path), retry=self._retry)
        return blob.size

    def _put(self, key, stream, length):
        # No retry: a stream read once cannot be replayed; the caller retries.
        self._blob(key).upload_from_file(stream, size=length, retry=None)

    def _open(self, key):
        from google.cloud.storage.fileio import BlobReader

        blob = self._bucket.get_blob(key, retry=self._retry)  # pins the generation read
        if blob is None:
            raise StorageError("artifact_missing", key=key)
        reader = BlobReader(blob, chunk_size=self.chunk_size, retry=self._retry)
        return io.BufferedReader(_Download(self, key, reader.read, reader.close), CHUNK_SIZE)

    def _size(self, key):
        blob = self._bucket.get_blob(key, retry=self._retry)
        if blob is None:
            raise StorageError("artifact_missing", key=key)
        return blob.size

    def _delete(self, key):
        from google.api_core.exceptions import NotFound

        try:
            self._bucket.delete_blob(key, retry=self._retry)
        except NotFound:
            pass

    def _entries(self, prefix):
        for blob in self._bucket.list_blobs(prefix=prefix, retry=self._retry):
            yield blob.name, blob.size


class NoStorage(Storage):
    """Storage turned off (STORAGE_BACKEND=none): every operation says so
    plainly, instead of failing later on a missing file."""

    def __repr__(self) -> str:
        return "NoStorage()"

    def _prepare(self):
        raise StorageError("storage_disabled", setting="STORAGE_BACKEND")

    def put_file(self, key, path):  # disabled first, before looking at `path`
        self._prepare()

    def _unreachable(self, *args):  # `_call` raised before any of these runs
        self._prepare()

    _put = _open = _size = _delete = _entries = _unreachable


def get_storage(settings: Settings | None = None) -> Storage:
    """The deployment's storage. One instance per settings: one connection
    pool, and one bucket check, per process."""
    return _storage_for(settings or get_settings())


@lru_cache(maxsize=8)
def _storage_for(settings: Settings) -> Storage:
    backend = settings.storage_backend
    if backend == "local":
        return LocalStorage(settings.storage_root)
    if backend == "s3":
        if not settings.minio_endpoint:
            raise SettingsError("storage_not_configured", backend="s3", setting="MINIO_ENDPOINT")
        return S3Storage(settings.minio_endpoint, settings.minio_access_key, settings.minio_secret_key,
                         settings.minio_bucket, secure=settings.minio_secure)
    if backend == "gcs":
        return GCSStorage(settings.gcs_bucket, project=settings.gcs_project, endpoint=settings.gcs_endpoint)
    if backend == "none":
        return NoStorage()
    raise SettingsError("setting_bad_choice", name="STORAGE_BACKEND", value=backend,
                        choices="local, s3, gcs, none")
