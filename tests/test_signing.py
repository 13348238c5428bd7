"""HMAC signatures: the platform loads a model file only if it signed it."""

from __future__ import annotations

import dataclasses
import hashlib
import hmac
import os

import pytest

from automl import signing
from automl.errors import ArtifactSignatureError, SettingsError
from automl.settings import from_environment
from automl.signing import sign_bytes, sign_file, verify_bytes, verify_file

SECRET = b"a-test-secret-of-decent-length"


@pytest.fixture
def model_file(tmp_path):
    path = tmp_path / "model.pkl"
    path.write_bytes(os.urandom(200_000))
    return path


def _code(call) -> str:
    with pytest.raises(ArtifactSignatureError) as caught:
        call()
    return caught.value.code


def test_signature_is_versioned_hmac_sha256(model_file):
    signature = sign_file(model_file, SECRET)
    expected = hmac.new(SECRET, model_file.read_bytes(), hashlib.sha256).hexdigest()
    assert signature == f"v1:{expected}"
    assert sign_bytes(model_file.read_bytes(), SECRET) == signature
    assert sign_file(model_file, SECRET.decode()) == signature  # a str secret is the same key


def test_good_signature_verifies(model_file):
    verify_file(model_file, sign_file(model_file, SECRET), SECRET)
    verify_bytes(b"payload", sign_bytes(b"payload", SECRET), SECRET)


def test_one_flipped_byte_is_tampering(model_file):
    signature = sign_file(model_file, SECRET)
    data = bytearray(model_file.read_bytes())
    data[123_456] ^= 0x01
    model_file.write_bytes(bytes(data))
    assert _code(lambda: verify_file(model_file, signature, SECRET)) == "artifact_tampered"
    assert _code(lambda: verify_bytes(bytes(data), signature, SECRET)) == "artifact_tampered"


def test_an_altered_signature_is_tampering(model_file):
    signature = sign_file(model_file, SECRET)
    flipped = signature[:-1] + ("0" if signature[-1] != "0" else "1")
    for bad in (flipped, signature[:-2], signature + "00", signature.upper().replace("V1", "v1"),
                "v1:", "v1:é"):
        assert _code(lambda: verify_file(model_file, bad, SECRET)) == "artifact_tampered"


@pytest.mark.parametrize("missing", [None, ""])
def test_missing_signature_is_unsigned(model_file, missing):
    assert _code(lambda: verify_file(model_file, missing, SECRET)) == "artifact_unsigned"
    assert _code(lambda: verify_bytes(b"x", missing, SECRET)) == "artifact_unsigned"


def test_another_secret_is_tampering(model_file):
    signature = sign_file(model_file, b"another platform's secret")
    assert _code(lambda: verify_file(model_file, signature, SECRET)) == "artifact_tampered"


@pytest.mark.parametrize("signature", ["v2:" + "0" * 64, "V1:" + "0" * 64, "0" * 64, "sha256:abc"])
def test_unknown_scheme_is_refused_by_name(model_file, signature):
    with pytest.raises(ArtifactSignatureError) as caught:
        verify_file(model_file, signature, SECRET)
    assert caught.value.code == "artifact_signature_version"
    assert signature.partition(":")[0][:20] in caught.value.message("en")
    assert "train the model again" in caught.value.message("en")


def test_a_file_larger_than_a_chunk_is_hashed_whole(tmp_path):
    data = os.urandom(signing.CHUNK_SIZE * 2 + 12_345)
    path = tmp_path / "big.pkl"
    path.write_bytes(data)
    signature = sign_file(path, SECRET)
    assert signature == sign_bytes(data, SECRET)
    verify_file(path, signature, SECRET)
    with path.open("r+b") as handle:  # a change in the last chunk only
        handle.seek(-1, os.SEEK_END)
        handle.write(bytes([data[-1] ^ 0xFF]))
    assert _code(lambda: verify_file(path, signature, SECRET)) == "artifact_tampered"


def test_default_secret_is_the_platform_secret(tmp_path, model_file):
    settings = dataclasses.replace(from_environment({}), state_dir=tmp_path / "state")
    signature = sign_file(model_file, settings=settings)  # generates the deployment's secret
    verify_file(model_file, signature, settings=settings)
    other = dataclasses.replace(settings, secret_key="another-deployment")
    assert _code(lambda: verify_file(model_file, signature, settings=other)) == "artifact_tampered"
    configured = dataclasses.replace(settings, secret_key=SECRET.decode())
    assert sign_file(model_file, settings=configured) == sign_file(model_file, SECRET)


def test_an_empty_secret_is_refused(model_file):
    with pytest.raises(SettingsError):
        sign_file(model_file, b"")


def test_messages_say_what_to_do():
    for code in ("artifact_unsigned", "artifact_tampered"):
        error = ArtifactSignatureError(code)
        assert error.message("en") != code and error.message("fr") != code
    assert "trained on this platform" in ArtifactSignatureError("artifact_unsigned").message("en")
