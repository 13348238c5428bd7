"""HMAC signatures of the artifacts the platform writes.

Model files are pickles, and unpickling runs code: the platform loads only a
file that it signed itself with its secret (`settings.platform_secret`), and
checks the signature before reading a byte of it as a model. A signature reads
"v1:<hex HMAC-SHA256>"; the version lets the scheme change later while old
signatures are still recognised, or refused by name.
"""

from __future__ import annotations

import hashlib
import hmac
from functools import partial

from .errors import ArtifactSignatureError, SettingsError
from .settings import Settings, platform_secret

__all__ = ["VERSION", "sign_bytes", "sign_file", "verify_bytes", "verify_file"]

VERSION = "v1"
CHUNK_SIZE = 1024 * 1024  # files are hashed in chunks: a large model never sits in memory


def _mac(secret: bytes | str | None, settings: Settings | None):
    if secret is None:
        secret = platform_secret(settings)
    if isinstance(secret, str):
        secret = secret.encode()
    if not secret:  # an empty key would make every signature forgeable
        raise SettingsError("secret_missing", name="SECRET_KEY")
    return hmac.new(secret, digestmod=hashlib.sha256)


def _signature(mac) -> str:
    return f"{VERSION}:{mac.hexdigest()}"


def _check_scheme(signature: str | None) -> None:
    """Refuse a missing or unknown signature before hashing anything."""
    if not signature:
        raise ArtifactSignatureError("artifact_unsigned")
    version = signature.partition(":")[0]
    if version != VERSION:
        raise ArtifactSignatureError("artifact_signature_version", version=version[:20])


def _compare(signature: str, expected: str) -> None:
    # Bytes, because compare_digest refuses non-ASCII text; constant time, so
    # the comparison does not tell how many leading characters were right.
    if not hmac.compare_digest(signature.encode(), expected.encode()):
        raise ArtifactSignatureError("artifact_tampered")


def sign_bytes(data: bytes, secret: bytes | str | None = None, *, settings: Settings | None = None) -> str:
    mac = _mac(secret, settings)
    mac.update(data)
    return _signature(mac)


def sign_file(path, secret: bytes | str | None = None, *, settings: Settings | None = None) -> str:
    """The signature of the file at `path`, read in chunks."""
    mac = _mac(secret, settings)
    with open(path, "rb") as source:
        for chunk in iter(partial(source.read, CHUNK_SIZE), b""):
            mac.update(chunk)
    return _signature(mac)


def verify_bytes(data: bytes, signature: str | None, secret: bytes | str | None = None, *,
                 settings: Settings | None = None) -> None:
    """Return quietly when `signature` is ours for `data`; raise ArtifactSignatureError
    (artifact_unsigned, artifact_signature_version, artifact_tampered) otherwise."""
    _check_scheme(signature)
    _compare(signature, sign_bytes(data, secret, settings=settings))


def verify_file(path, signature: str | None, secret: bytes | str | None = None, *,
                settings: Settings | None = None) -> None:
    """As `verify_bytes`, for the file at `path`, read in chunks."""
    _check_scheme(signature)
    _compare(signature, sign_file(path, secret, settings=settings))
