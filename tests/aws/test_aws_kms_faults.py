"""Failures injected in the test server: botocore retries what is transient, a bounded number
of times, and the backend then reports BackendUnavailable (503 + Retry-After) or a clear
BackendError, never an AWS traceback or AWS's own text."""

from __future__ import annotations

import socket
from typing import Any

import pytest
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec

from keysvc import jose
from keysvc.backends import (
    BackendError,
    BackendUnavailable,
    NotFound,
    PermissionDenied,
    Unauthenticated,
)

from .conftest import create_key

MESSAGE = b"header.payload"
ROLE_ARN = "arn:aws:sts::123456789012:assumed-role/ci-secret-role/session"


async def one_version(kms: Any, make_backend: Any, **settings: Any) -> tuple[Any, Any]:
    meta = create_key(kms, "ECC_NIST_P256")
    backend = await make_backend(key_ids=[meta["Arn"]], **settings)
    (version,) = await backend.list_versions()
    return backend, version


def assert_verifies(kms: Any, version: Any, signature: bytes) -> None:
    """The DER ES256 signature verifies, with cryptography alone, against the public key KMS's
    own GetPublicKey returns for the key."""
    public_der = kms.get_public_key(KeyId=version.version_id)["PublicKey"]
    public_key: Any = serialization.load_der_public_key(public_der)
    public_key.verify(signature, MESSAGE, ec.ECDSA(hashes.SHA256()))


async def test_throttling_is_retried_then_succeeds(
    kms: Any, make_backend: Any, faults: Any
) -> None:
    backend, version = await one_version(kms, make_backend)
    faults.clear()
    faults.inject("Sign", "ThrottlingException", times=2)
    signature = await backend.sign(version, jose.Algorithm.ES256, MESSAGE)
    assert_verifies(kms, version, signature)
    assert faults.count("Sign") == 3


@pytest.mark.parametrize("max_attempts", [1, 3])
async def test_persistent_throttling_is_bounded_then_unavailable(
    kms: Any, make_backend: Any, faults: Any, max_attempts: int
) -> None:
    backend, version = await one_version(kms, make_backend, max_attempts=max_attempts)
    faults.clear()
    faults.inject("Sign", "ThrottlingException")
    with pytest.raises(BackendUnavailable) as caught:
        await backend.sign(version, jose.Algorithm.ES256, MESSAGE)
    assert caught.value.retry_after == 1.0
    assert "throttling kms:Sign" in str(caught.value)
    assert faults.count("Sign") == max_attempts
    faults.clear()  # the quota recovers: signing works again
    assert_verifies(kms, version, await backend.sign(version, jose.Algorithm.ES256, MESSAGE))


async def test_server_errors_are_retried_then_unavailable(
    kms: Any, make_backend: Any, faults: Any
) -> None:
    backend, version = await one_version(kms, make_backend)
    faults.clear()
    faults.inject("Sign", "KMSInternalException", status=500, message="internal")
    with pytest.raises(BackendUnavailable) as caught:
        await backend.sign(version, jose.Algorithm.ES256, MESSAGE)
    assert caught.value.retry_after > 0
    assert faults.count("Sign") == 3


async def test_listing_under_throttling_is_unavailable(
    kms: Any, make_backend: Any, faults: Any
) -> None:
    create_key(kms, tags={"k": "v"})
    backend = await make_backend(tag="k=v", max_attempts=2)
    faults.inject("GetResources", "ThrottlingException")
    with pytest.raises(BackendUnavailable, match="throttling tag:GetResources"):
        await backend.list_versions()
    assert faults.count("GetResources") == 2


async def test_unreachable_endpoint_is_unavailable(make_backend: Any) -> None:
    with socket.socket() as sock:  # a port nobody listens on
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    backend = await make_backend(
        key_ids=["alias/any"], endpoint_url=f"http://127.0.0.1:{port}", max_attempts=2
    )
    with pytest.raises(BackendUnavailable) as caught:
        await backend.list_versions()
    assert caught.value.retry_after == 5.0
    assert "cannot reach AWS for kms:DescribeKey" in str(caught.value)


async def test_access_denied_is_a_clear_error_without_aws_text(
    kms: Any, make_backend: Any, faults: Any
) -> None:
    backend, version = await one_version(kms, make_backend)
    faults.clear()
    faults.inject(
        "Sign", "AccessDeniedException",
        message=f"User: {ROLE_ARN} is not authorized to perform: kms:Sign",
    )
    with pytest.raises(BackendError) as caught:
        await backend.sign(version, jose.Algorithm.ES256, MESSAGE)
    assert isinstance(caught.value, PermissionDenied)
    message = str(caught.value)
    assert "denied kms:Sign" in message and version.version_id in message
    assert ROLE_ARN not in message and "ci-secret-role" not in message
    assert faults.count("Sign") == 1  # a permission problem is not retried


async def test_missing_key_is_a_clear_error(make_backend: Any) -> None:
    backend = await make_backend(key_ids=["alias/does-not-exist"])
    with pytest.raises(NotFound, match="has no key alias/does-not-exist"):
        await backend.list_versions()


async def test_rejected_credentials_are_a_clear_error(
    kms: Any, make_backend: Any, faults: Any
) -> None:
    create_key(kms, alias="alias/x")
    backend = await make_backend(key_ids=["alias/x"])
    faults.inject("DescribeKey", "UnrecognizedClientException",
                  message="The security token included in the request is invalid.")
    with pytest.raises(Unauthenticated, match=r"rejected the credentials.*UnrecognizedClient"):
        await backend.list_versions()


async def test_no_credentials_anywhere(
    make_backend: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("AWS_ACCESS_KEY_ID")
    monkeypatch.delenv("AWS_SECRET_ACCESS_KEY")
    backend = await make_backend(key_ids=["alias/x"])
    with pytest.raises(Unauthenticated, match="no AWS credentials found"):
        await backend.list_versions()
