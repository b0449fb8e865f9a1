"""The failure tables: lookup picks the most specific entry, and each backend's table turns its
library's own exceptions into keysvc's typed errors (library exceptions built as the libraries
raise them; the servers and fakes in each backend's tests raise them for real)."""

from __future__ import annotations

import pytest
import requests
from botocore.exceptions import (
    ClientError,
    EndpointConnectionError,
    NoCredentialsError,
    ReadTimeoutError,
    SSLError,
)
from google.api_core import exceptions as gexc

from keysvc.backends.aws_errors import translate
from keysvc.errors import BackendError, BackendUnavailable
from keysvc.errors import NotFound, PermissionDenied, Unauthenticated
from keysvc.backends.failures import Failure, lookup, status_class
from keysvc.backends.retry import Transient
from keysvc.backends.gcp_kms import GcpKmsBackend, GcpKmsSettings
from keysvc.backends.vault_auth import vault_error_text

REFUSED = Failure(BackendError, "refused {what}")
TABLE = {
    OSError: Failure(BackendUnavailable, "{what}: unreachable", retry_after=5, retry=True),
    ConnectionRefusedError: Failure(BackendUnavailable, "{what}: refused"),
    404: Failure(NotFound, "{what}: not found"),
    "5xx": Failure(BackendUnavailable, "{what}: failed"),
}


def test_lookup_prefers_the_most_specific_class_then_its_bases() -> None:
    assert lookup(TABLE, ConnectionRefusedError(), default=REFUSED).message == "{what}: refused"
    assert lookup(TABLE, ConnectionResetError(), default=REFUSED).message == "{what}: unreachable"
    assert lookup(TABLE, ValueError(), default=REFUSED) is REFUSED


def test_lookup_tries_keys_in_order_and_skips_none() -> None:
    assert lookup(TABLE, None, 404, "4xx", default=REFUSED).error is NotFound
    assert lookup(TABLE, 503, status_class(503), default=REFUSED).message == "{what}: failed"
    assert lookup(TABLE, 418, status_class(418), default=REFUSED) is REFUSED
    assert status_class(None) is None


def test_a_failure_builds_its_error_with_the_servers_retry_hint_or_its_own() -> None:
    unreachable = TABLE[OSError]
    error = unreachable(what="vault")
    assert isinstance(error, BackendUnavailable) and str(error) == "vault: unreachable"
    assert error.retry_after == 5 and unreachable.retry
    assert unreachable(retry_after=9, what="vault").retry_after == 9
    assert type(TABLE[404](retry_after=9, what="key")) is NotFound


def client_error(code: str, status: int) -> ClientError:
    response = {"Error": {"Code": code, "Message": "User: arn:aws:sts::1:assumed-role/x is not"},
                "ResponseMetadata": {"HTTPStatusCode": status}}
    return ClientError(response, "Sign")  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("exc", "kind", "text"),
    [
        (client_error("AccessDeniedException", 400), PermissionDenied, "denied kms:Sign on k"),
        (client_error("NotFoundException", 400), NotFound, "has no key k"),
        (client_error("UnrecognizedClientException", 400), Unauthenticated, "rejected the"),
        (client_error("ThrottlingException", 400), Transient, "throttling kms:Sign"),
        (client_error("KMSInternalException", 500), Transient, "server error"),
        (client_error("DisabledException", 400), BackendError, "disabled or pending deletion"),
        (client_error("ValidationException", 400), BackendError, "(ValidationException, HTTP 400)"),
        (EndpointConnectionError(endpoint_url="https://k"), Transient, "cannot reach"),
        (ReadTimeoutError(endpoint_url="https://k"), Transient, "cannot reach"),
        (SSLError(endpoint_url="https://kms", error="x"), BackendError, "TLS to AWS failed"),
        (NoCredentialsError(), Unauthenticated, "no AWS credentials found"),
    ],
)
def test_aws_table(exc: Exception, kind: type, text: str) -> None:
    error = translate(exc, "kms:Sign", "k")
    assert type(error) is kind and text in str(error)
    assert "assumed-role" not in str(error)  # AWS's own text stays out of the message


@pytest.mark.parametrize(
    ("exc", "kind", "text"),
    [
        (gexc.PermissionDenied("no"), PermissionDenied, "denied backend 'gcp' permission"),
        (gexc.NotFound("gone"), NotFound, "k not found (gone)"),
        (gexc.Unauthenticated("who"), Unauthenticated, "rejected the credentials"),
        (gexc.ServiceUnavailable("down"), Transient, "(UNAVAILABLE: down)"),
        (gexc.DeadlineExceeded("slow"), BackendUnavailable, "(DEADLINE_EXCEEDED: slow)"),
        (gexc.FailedPrecondition("disabled"), BackendError, "refused to sign with k"),
        (gexc.Aborted("x"), Transient, "(ABORTED: x)"),
    ],
)
def test_gcp_table(exc: Exception, kind: type, text: str) -> None:
    key = "projects/p/locations/l/keyRings/r/cryptoKeys/k"
    backend = GcpKmsBackend("gcp", GcpKmsSettings(key=key))
    error = backend._error(exc, "sign with", "k")  # noqa: SLF001
    assert type(error) is kind and text in str(error)


@pytest.mark.parametrize(
    ("exc", "text"),
    [
        (requests.exceptions.ConnectTimeout(), "timed out"),
        (requests.exceptions.ReadTimeout(), "timed out"),
        (requests.exceptions.SSLError(), "TLS verification failed"),
        (requests.exceptions.ConnectionError(), "connection failed"),
        (requests.exceptions.ChunkedEncodingError(), "ChunkedEncodingError"),
    ],
)
def test_vault_auth_reasons(exc: Exception, text: str) -> None:
    assert text in vault_error_text(exc)
