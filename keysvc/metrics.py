"""Prometheus metrics, all prefixed `keysvc_`.

With `serve --workers N` every process writes to a shared multiprocess directory (set in the
environment before this module is imported), and `/metrics` aggregates them, so a scrape that
lands on any worker sees the whole service.
"""

from __future__ import annotations

import os

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
)

MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"

TOKENS_ISSUED = Counter(
    "keysvc_tokens_issued",
    "Tokens signed (or refused at signing), by endpoint, key, backend and outcome.",
    ["endpoint", "kid", "backend", "outcome"],
)
SIGN_SECONDS = Histogram(
    "keysvc_sign_seconds",
    "Time a backend took to sign one token.",
    ["backend"],
    buckets=(0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5),
)
BACKEND_ERRORS = Counter(
    "keysvc_backend_errors",
    "Backend failures, by backend and operation: list (a failed refresh), sign, rotate.",
    ["backend", "operation"],
)
RING_KEYS = Gauge(
    "keysvc_ring_keys",
    "Keys in the ring by lifecycle state.",
    ["state"],
    multiprocess_mode="max",
)
BACKEND_PROBLEM = Gauge(
    "keysvc_backend_problem",
    "1 while a backend's last refresh failed, by kind (empty_listing: it had keys and listed"
    " none; insecure_key: a key file readable by others, its keys do not sign; refused;"
    " unavailable). Its last good keys are kept meanwhile; /readyz says the same.",
    ["backend", "problem"],
    multiprocess_mode="max",
)
READY = Gauge(
    "keysvc_ready",
    "1 while a key can sign (/readyz answers 200), 0 while none can.",
    multiprocess_mode="min",
)
SIGNING_KEY_AGE = Gauge(
    "keysvc_signing_key_age_seconds",
    "Age of the key that signs now, from its creation (NaN while none signs). Under scheduled"
    " rotation it stays below rotation.period + publish_lead.",
    multiprocess_mode="mostrecent",
)
PENDING_KEY_WAIT = Gauge(
    "keysvc_pending_key_wait_seconds",
    "How long the last pending key still waits before it may sign (0 without one). Above"
    " publish_lead it would stay pending longer than a rotation's key does: its creation time"
    " is in the future (a wrong clock, or a mistyped key name).",
    multiprocess_mode="mostrecent",
)
BACKEND_NEWEST_VERSION = Gauge(
    "keysvc_backend_newest_version_timestamp_seconds",
    "Creation time (Unix seconds) of each backend's newest key version: how long ago the"
    " backend was last rotated.",
    ["backend"],
    multiprocess_mode="max",
)
REQUESTS_REJECTED = Counter(
    "keysvc_requests_rejected",
    "Requests answered with an error, by error code.",
    ["code"],
)

OTFD_REQUESTS = Counter(
    "keysvc_otfd_requests",
    "Requests to otfd for OTF's runner endpoint, by operation (job, workspace) and outcome"
    " (ok, refused, unavailable).",
    ["operation", "outcome"],
)
CONNECTIONS_OPEN = Gauge(
    "keysvc_connections_open",
    "Open client connections (summed over workers).",
    multiprocess_mode="livesum",
)
CONNECTIONS_LIMIT = Gauge(
    "keysvc_connections_limit",
    "The connection cap in force (server.max_connections, or less where the file-descriptor"
    " limit allows less), summed over workers.",
    multiprocess_mode="livesum",
)
CONNECTIONS_DROPPED = Counter(
    "keysvc_connections_dropped",
    "Connections keysvc closed on its own, by reason: evicted (the longest-waiting connection,"
    " closed at the cap to admit a new one), refused (a new one at the cap, every connection"
    " busy), header_timeout, keepalive_timeout.",
    ["reason"],
)


def render() -> tuple[bytes, str]:
    """The exposition text for /metrics and its content type."""
    if os.environ.get(MULTIPROC_ENV):
        from prometheus_client import multiprocess

        registry = CollectorRegistry()
        multiprocess.MultiProcessCollector(registry)
        return generate_latest(registry), CONTENT_TYPE_LATEST
    return generate_latest(), CONTENT_TYPE_LATEST
