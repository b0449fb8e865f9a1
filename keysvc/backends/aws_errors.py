"""How AWS client failures become keysvc backend errors: one table (FAILURES).

Throttling, 5xx and dropped connections are `Transient`: the backend's RetryPolicy tries again
(botocore's own retries are off, see NO_RETRIES), and one still failing reaches the client as
503 with Retry-After. Everything else (permissions, a missing or disabled key, bad credentials)
is a typed `BackendError` whose message says what to fix. AWS's own error text names the caller's role and account: it is
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

from keysvc.backends.base import (
    BackendError,
    BackendUnavailable,
    NotFound,
    PermissionDenied,
    Unauthenticated,
)
from keysvc.backends.failures import Failure, lookup, status_class

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



RETRY_AFTER_THROTTLED = 1.0
"""KMS quotas are per second: a throttled caller has its share again one second later."""
RETRY_AFTER_SERVER_ERROR = 2.0
RETRY_AFTER_UNREACHABLE = 5.0
"""A network path or endpoint that is down rarely comes back within a second."""

_THROTTLED = Failure(
    BackendUnavailable,
    "AWS is throttling {action} ({code}); the account's KMS request quota is exhausted",
    retry_after=RETRY_AFTER_THROTTLED,
    retry=True,
)
_UNREACHABLE = Failure(
    BackendUnavailable,
    "cannot reach AWS for {action} ({kind})",
    retry_after=RETRY_AFTER_UNREACHABLE,
    retry=True,
)
_NO_CREDENTIALS = Failure(
    Unauthenticated,
    "no AWS credentials found through the standard chain (environment, web identity token"
    " file, shared config/profile, container or instance role)",
)
FAILURES: dict[object, Failure] = {
    # ClientError: AWS answered with an error code (looked up first) and an HTTP status.
    **dict.fromkeys(THROTTLING_CODES, _THROTTLED),
    429: _THROTTLED,
    "5xx": Failure(
        BackendUnavailable,
        "AWS {action} failed with a server error ({code}, HTTP {status})",
        retry_after=RETRY_AFTER_SERVER_ERROR,
        retry=True,
    ),
    **dict.fromkeys(DENIED_CODES, Failure(
        PermissionDenied,
        "AWS denied {action} on {subject}: the credentials lack that permission"
        " (see docs/backends/aws-kms.md for the IAM policy)",
    )),
    "NotFoundException": Failure(
        NotFound, "AWS KMS has no key {subject} in this account and region"
    ),
    **dict.fromkeys(KEY_STATE_CODES, Failure(
        BackendError, "AWS KMS key {subject} cannot be used: it is disabled or pending deletion"
    )),
    **dict.fromkeys(CREDENTIAL_CODES, Failure(
        Unauthenticated, "AWS rejected the credentials for {action} ({code})"
    )),
    ClientError: Failure(BackendError, "AWS {action} on {subject} failed ({code}, HTTP {status})"),
    # BotoCoreError: nothing came back from AWS (by class, most specific first).
    SSLError: Failure(
        BackendError, "TLS to AWS failed for {action}: check the endpoint and the CA bundle"
    ),
    AwsConnectionError: _UNREACHABLE,  # EndpointConnectionError, ConnectTimeoutError, ...
    HTTPClientError: _UNREACHABLE,  # ReadTimeoutError, ConnectionClosedError, ...
    CredentialRetrievalError: Failure(
        BackendUnavailable,
        "AWS credentials could not be fetched (STS or the instance metadata service failed);"
        " retrying later",
        retry_after=RETRY_AFTER_UNREACHABLE,
    ),
    NoCredentialsError: _NO_CREDENTIALS,
    PartialCredentialsError: _NO_CREDENTIALS,
    NoRegionError: Failure(
        BackendError, "no AWS region configured: set region in the backend's settings"
    ),
    BotoCoreError: Failure(BackendError, "AWS {action} on {subject} failed ({kind})"),
}
"""botocore's failures → keysvc's errors: by AWS error code, then HTTP status, then class."""


NO_RETRIES: dict[str, Any] = {"mode": "standard", "total_max_attempts": 1}
"""botocore's `retries` setting: none. keysvc's RetryPolicy retries what FAILURES marks (within
retry_budget, max_attempts and the caller's deadline, which botocore cannot know); spelled out
rather than inherited from AWS_MAX_ATTEMPTS / AWS_RETRY_MODE so every replica behaves alike."""
TIMED_OUT = Failure(
    BackendUnavailable,
    "AWS did not answer {action} within {seconds:g}s",
    retry_after=RETRY_AFTER_UNREACHABLE,
)


def translate(exc: Exception, action: str, subject: str) -> BackendError:
    """The BackendError for a failed AWS call. `action` is the IAM action (`kms:Sign`),
    `subject` the key or alias concerned (or a short description)."""
    if not isinstance(exc, AWS_ERRORS):
        raise TypeError(f"not an AWS client error: {type(exc).__name__}")
    code, status = "", 0
    if isinstance(exc, ClientError):
        error = exc.response.get("Error", {})
        code = str(error.get("Code", ""))
        status = int(exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode") or 0)
        log.debug(
            "AWS %s on %s failed: %s (HTTP %s): %s", action, subject, code, status,
            error.get("Message", ""),
        )
    else:
        log.debug("AWS %s on %s failed: %s: %s", action, subject, type(exc).__name__, exc)
    failure = lookup(FAILURES, code or None, status or None, status_class(status), exc,
                     default=FAILURES[BotoCoreError])
    return failure(action=action, subject=subject, code=code, status=status,
                   kind=type(exc).__name__)


AWS_ERRORS: tuple[type[Exception], ...] = (ClientError, BotoCoreError)
"""What an AWS client call can raise; each is turned into a BackendError by `translate`."""
