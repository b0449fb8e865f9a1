"""How AWS client failures become keysvc backend errors.

botocore has already retried what is worth retrying (throttling, 5xx, dropped connections: see
`retry_config`) by the time an exception reaches here, so a transient failure that is still
failing is `BackendUnavailable` (HTTP 503 with Retry-After: callers should come back later), and
everything else (permissions, a missing or disabled key, bad credentials) is a `BackendError`
whose message says what to fix. AWS's own error text names the caller's role and account: it is
kept out of the messages clients see and logged at debug level only (the key ring already logs
each refresh failure once, and a throttled burst would otherwise log a line per token).
"""

from __future__ import annotations

import logging
from typing import Any

from botocore.exceptions import (
    BotoCoreError,
    ClientError,
    CredentialRetrievalError,
    HTTPClientError,
    NoCredentialsError,
    NoRegionError,
    PartialCredentialsError,
    SSLError,
)
from botocore.exceptions import ConnectionError as AwsConnectionError

from keysvc.backends.base import BackendError, BackendUnavailable

log = logging.getLogger("keysvc.backends.aws")

THROTTLING_CODES = frozenset(
    {
        "ThrottlingException",
        "Throttling",
        "ThrottledException",
        "RequestThrottledException",
        "TooManyRequestsException",
        "RequestLimitExceeded",
        "LimitExceededException",
        "SlowDown",
    }
)
DENIED_CODES = frozenset({"AccessDeniedException", "AccessDenied"})
CREDENTIAL_CODES = frozenset(
    {
        "UnrecognizedClientException",
        "InvalidClientTokenId",
        "InvalidSignatureException",
        "SignatureDoesNotMatch",
        "ExpiredTokenException",
        "ExpiredToken",
        "IncompleteSignature",
        "MissingAuthenticationToken",
    }
)
KEY_STATE_CODES = frozenset({"DisabledException", "KMSInvalidStateException"})



class KeyNotFound(BackendError):
    """KMS has no such key or alias (deleted, or never in this account and region)."""


RETRY_AFTER_THROTTLED = 1.0
"""KMS quotas are per second: a throttled caller has its share again one second later."""
RETRY_AFTER_SERVER_ERROR = 2.0
RETRY_AFTER_UNREACHABLE = 5.0
"""A network path or endpoint that is down rarely comes back within a second."""


def retry_config(max_attempts: int) -> dict[str, Any]:
    """botocore's `retries` setting, spelled out rather than inherited from the environment
    (AWS_MAX_ATTEMPTS / AWS_RETRY_MODE) so every replica behaves the same: "standard" mode
    retries throttling, 5xx and connection errors with exponential backoff and full jitter,
    `max_attempts` tries in all, and fails fast on anything else."""
    return {"mode": "standard", "total_max_attempts": max_attempts}


def translate(exc: Exception, action: str, subject: str, attempts: int) -> BackendError:
    """The BackendError for a failed AWS call. `action` is the IAM action (`kms:Sign`),
    `subject` the key or alias concerned (or a short description)."""
    if isinstance(exc, ClientError):
        error = exc.response.get("Error", {})
        code = str(error.get("Code", ""))
        status = int(exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode") or 0)
        log.debug(
            "AWS %s on %s failed: %s (HTTP %s): %s", action, subject, code, status,
            error.get("Message", ""),
        )
        if code in THROTTLING_CODES or status == 429:
            return BackendUnavailable(
                f"AWS is throttling {action} ({code}) after {attempts} attempts; "
                "the account's KMS request quota is exhausted",
                retry_after=RETRY_AFTER_THROTTLED,
            )
        if status >= 500:
            return BackendUnavailable(
                f"AWS {action} failed with a server error ({code}, HTTP {status}) "
                f"after {attempts} attempts",
                retry_after=RETRY_AFTER_SERVER_ERROR,
            )
        if code in DENIED_CODES:
            return BackendError(
                f"AWS denied {action} on {subject}: the credentials lack that permission "
                "(see docs/backends/aws-kms.md for the IAM policy)"
            )
        if code == "NotFoundException":
            return KeyNotFound(f"AWS KMS has no key {subject} in this account and region")
        if code in KEY_STATE_CODES:
            return BackendError(
                f"AWS KMS key {subject} cannot be used: it is disabled or pending deletion"
            )
        if code in CREDENTIAL_CODES:
            return BackendError(f"AWS rejected the credentials for {action} ({code})")
        return BackendError(f"AWS {action} on {subject} failed ({code}, HTTP {status})")
    log.debug("AWS %s on %s failed: %s: %s", action, subject, type(exc).__name__, exc)
    if isinstance(exc, SSLError):
        return BackendError(
            f"TLS to AWS failed for {action}: check the endpoint and the CA bundle"
        )
    if isinstance(exc, (AwsConnectionError, HTTPClientError)):
        # EndpointConnectionError, ConnectTimeoutError, ReadTimeoutError, ConnectionClosedError…
        return BackendUnavailable(
            f"cannot reach AWS for {action} after {attempts} attempts ({type(exc).__name__})",
            retry_after=RETRY_AFTER_UNREACHABLE,
        )
    if isinstance(exc, CredentialRetrievalError):
        return BackendUnavailable(
            "AWS credentials could not be fetched (STS or the instance metadata service "
            "failed); retrying later",
            retry_after=RETRY_AFTER_UNREACHABLE,
        )
    if isinstance(exc, (NoCredentialsError, PartialCredentialsError)):
        return BackendError(
            "no AWS credentials found through the standard chain (environment, web identity "
            "token file, shared config/profile, container or instance role)"
        )
    if isinstance(exc, NoRegionError):
        return BackendError("no AWS region configured: set region in the backend's settings")
    if isinstance(exc, BotoCoreError):
        return BackendError(f"AWS {action} on {subject} failed ({type(exc).__name__})")
    raise TypeError(f"not an AWS client error: {type(exc).__name__}")


AWS_ERRORS: tuple[type[Exception], ...] = (ClientError, BotoCoreError)
"""What an AWS client call can raise; each is turned into a BackendError by `translate`."""
