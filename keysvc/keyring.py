"""The key ring: every configured backend's key versions, in one lifecycle.

Each version's state is computed from its creation time and the config alone, so every replica
that sees the same versions gives the same answer at the same moment, without talking to the
others and without state of its own:

- a version is *published* as soon as it is seen, and may sign from
  `signs_from = created_at + publish_lead`;
- the newest version past its `signs_from` is *active* (it signs); newer ones are *pending*;
  when none is past its `signs_from` (a first start) the oldest signs at once. So the oldest
  version's `signs_from` is its creation time: nothing older can sign before it, and that is
  the time shown for it (`keys list`, `/v1/keys`), so a key that signs is never shown as
  signing only from a later time. Every other version waits its full `publish_lead`;
- a version stopped signing when its successor became active, and stays published (*retiring*)
  for `max_ttl + jwks_max_age` more, so every token it signed verifies until it expires and every
  verifier cache has seen the successor. Then it drops out.

A backend whose refresh fails keeps its last good versions: an unreachable backend, a refused key
file, and a backend that had versions and suddenly lists none (every key file deleted, a mount
gone: a fault, never a rotation). Each such problem is logged, counted and shown by `/readyz`
(`problems()`). One kind also stops signing: a key file that became readable by group or others,
whose backend's keys stay published (tokens they signed still verify) but sign no more.

The ring knows no HTTP: the service and the CLI both read `view()` and call `sign()`.
"""

from __future__ import annotations

import asyncio
import bisect
import dataclasses
import enum
import functools
import logging
import time
import traceback
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from datetime import UTC, datetime, timedelta

from keysvc import jose, keygen, metrics
from keysvc.backends.base import BackendError, BackendUnavailable, KeyBackend, KeyVersion
from keysvc.backends.retry import deadline
from keysvc.config import DEFAULT_RSA_SIGNING, RsaSigning
from keysvc.errors import ConfigError, InsecureKeyError, Overloaded
from keysvc.loop_signer import LoopSigner

log = logging.getLogger("keysvc.keyring")

Clock = Callable[[], datetime]
FAR_FUTURE = datetime.max.replace(tzinfo=UTC)


def utcnow() -> datetime:
    return datetime.now(UTC)


@dataclass(frozen=True)
class Lifecycle:
    publish_lead: timedelta
    jwks_max_age: timedelta
    max_ttl: timedelta

    @property
    def retention(self) -> timedelta:
        """How long a key stays published after it stopped signing."""
        return self.max_ttl + self.jwks_max_age


class KeyState(str, enum.Enum):
    PENDING = "pending"
    ACTIVE = "active"
    RETIRING = "retiring"


@dataclass(frozen=True)
class RingKey:
    """A key version with everything derived from it once: kid, algorithm, JWK, JWS header."""

    kid: str
    alg: jose.Algorithm
    backend: KeyBackend = field(compare=False, repr=False)
    version: KeyVersion = field(compare=False, repr=False)
    created_at: datetime
    signs_from: datetime
    """`created_at + publish_lead`, when the key may sign unless it is the ring's oldest (which
    signs from its creation: see KeyStatus.signs_from)."""
    jwk: dict[str, str] = field(compare=False, repr=False)
    header_b64: bytes = field(compare=False, repr=False)
    ecdsa_size: int = field(default=0, compare=False, repr=False)
    """The length of a JWS ECDSA signature (r‖s) with this key; 0 for RSA and EdDSA."""

    @property
    def backend_name(self) -> str:
        return self.backend.name


@dataclass(frozen=True)
class KeyStatus:
    key: RingKey
    state: KeyState
    published_until: datetime | None  # None while the key signs or waits to sign
    signs_from: datetime
    """When the key signs (or signed) in this ring: its creation for the oldest key, else
    `key.signs_from`."""


@dataclass(frozen=True)
class RingView:
    """The ring at one moment: which keys are published, in which state, and which one signs.
    `valid_until` is the next moment any state changes."""

    keys: tuple[KeyStatus, ...]
    signer: RingKey | None
    valid_until: datetime

    @property
    def published(self) -> list[RingKey]:
        return [status.key for status in self.keys]

    def listing(self) -> list[dict[str, Any]]:
        """What `GET /v1/keys` and `keysvc keys list` show for each key."""
        return [
            {
                "kid": s.key.kid,
                "alg": s.key.alg.value,
                "backend": s.key.backend_name,
                "created_at": iso(s.key.created_at),
                "state": s.state.value,
                "signs_from": iso(s.signs_from),
                "published_until": iso(s.published_until),
            }
            for s in self.keys
        ]


class EmptyListing(BackendError):
    """A backend that had key versions listed none."""


@dataclass(frozen=True)
class BackendProblem:
    """Why a backend's last refresh failed, for `/readyz` and the metrics: a kind and what the
    ring does about it, never the backend's own text (that goes to the log)."""

    backend: str
    problem: str  # one of PROBLEMS
    message: str

    def to_json(self) -> dict[str, str]:
        return {"backend": self.backend, "problem": self.problem, "message": self.message}


PROBLEMS = ("empty_listing", "insecure_key", "refused", "unavailable")


def _problem(backend: str, exc: BaseException, kept: bool) -> BackendProblem:
    still = "; its last good keys are kept" if kept else ""
    if isinstance(exc, EmptyListing):
        return BackendProblem(
            backend,
            "empty_listing",
            "it listed no key versions after listing some; its last good keys are kept"
            " (published and signing) until it lists keys again",
        )
    if isinstance(exc, InsecureKeyError):
        return BackendProblem(
            backend,
            "insecure_key",
            "a private key file is readable by group or others: its keys do not sign until"
            " the file is mode 0600 (see the log)",
        )
    if isinstance(exc, ConfigError):
        return BackendProblem(backend, "refused", f"its key versions were refused (see the log){still}")
    return BackendProblem(backend, "unavailable", f"it could not be listed (see the log){still}")


def describe_unexpected(exc: BaseException) -> str:
    """An unexpected exception for the log without its text, which may carry request details
    or secrets: its type and where it was raised."""
    frames = traceback.extract_tb(exc.__traceback__)
    where = f" at {Path(frames[-1].filename).name}:{frames[-1].lineno}" if frames else ""
    return f"unexpected {type(exc).__name__}{where}"


async def open_backend(backend: KeyBackend) -> None:
    """Open `backend`. Its own errors (ConfigError, BackendError) pass through; anything else (a
    plugin's bug, an unmapped library error) becomes a one-line BackendError naming the
    exception's type and place but not its text, which may carry request details."""
    try:
        await backend.open()
    except (ConfigError, BackendError):
        raise
    except Exception as exc:
        log.debug("backend %s failed to open", backend.name, exc_info=True)
        raise BackendError(
            f"backend {backend.name!r} failed to open: {describe_unexpected(exc)}"
        ) from None


def iso(value: datetime | None) -> str | None:
    """A time as the listings show it: ISO 8601 UTC with a Z."""
    return None if value is None else value.isoformat().replace("+00:00", "Z")


def compute_view(
    keys: Sequence[RingKey], lifecycle: Lifecycle, now: datetime
) -> RingView:
    """The lifecycle rules of the module docstring, as a pure function of keys and time."""
    ordered = sorted(keys, key=lambda k: (k.created_at, k.kid))
    starts = [k.signs_from for k in ordered]
    if ordered:
        # The oldest key signs while none is past its signs_from: from its creation on. Still
        # sorted: created_at <= created_at + publish_lead <= the next key's signs_from.
        starts[0] = ordered[0].created_at
    eligible = bisect.bisect_right(starts, now)
    # Before the oldest key's creation (a clock behind the backend's) it signs all the same.
    signer_index = eligible - 1 if eligible else (0 if ordered else -1)
    statuses: list[KeyStatus] = []
    boundaries: list[datetime] = []
    for index, key in enumerate(ordered):
        if index == signer_index:
            statuses.append(KeyStatus(key, KeyState.ACTIVE, None, starts[index]))
        elif index > signer_index:
            statuses.append(KeyStatus(key, KeyState.PENDING, None, starts[index]))
            boundaries.append(starts[index])
        else:
            until = starts[index + 1] + lifecycle.retention
            if until > now:
                statuses.append(KeyStatus(key, KeyState.RETIRING, until, starts[index]))
                boundaries.append(until)
    return RingView(
        keys=tuple(statuses),
        signer=ordered[signer_index] if signer_index >= 0 else None,
        valid_until=min((b for b in boundaries if b > now), default=FAR_FUTURE),
    )


def left_jwks(
    keys: Sequence[RingKey], lifecycle: Lifecycle, now: datetime
) -> list[tuple[RingKey, datetime, datetime]]:
    """The keys the backends still list that have left the JWKS (no longer published: their
    tokens have expired and every cache has refetched), each with when it signed from and when
    it left. Nothing uses them any more; they stay until pruned, revoked or deleted
    (`keysvc keys list --all` shows them)."""
    ordered = sorted(keys, key=lambda k: (k.created_at, k.kid))
    published = {s.key.kid for s in compute_view(ordered, lifecycle, now).keys}
    return [
        (
            key,
            key.created_at if index == 0 else key.signs_from,  # as compute_view's starts
            ordered[index + 1].signs_from + lifecycle.retention,
        )
        for index, key in enumerate(ordered)
        if key.kid not in published and index + 1 < len(ordered)
    ]


class KeyRing:
    """The union of all backends' key versions, refreshed in the background.

    A refresh that fails for one backend keeps that backend's last good versions, so the JWKS
    keeps being served (and keys keep signing where their backend still answers).
    """

    def __init__(
        self,
        backends: Sequence[KeyBackend],
        lifecycle: Lifecycle,
        algorithm: jose.Algorithm | None = None,
        *,
        sign_timeout: float = 5.0,
        list_timeout: float = 15.0,
        rsa_signing: RsaSigning = DEFAULT_RSA_SIGNING,
        clock: Clock = utcnow,
    ) -> None:
        self.backends = list(backends)
        self.lifecycle = lifecycle
        self.algorithm = algorithm
        self.sign_timeout = sign_timeout
        self.list_timeout = list_timeout
        self.rsa_on_loop = rsa_signing == "loop"
        """tokens.rsa_signing: in-process RSA keys sign on the event loop, queued (else through
        their backend's sign(), in its thread pool)."""
        self.clock = clock
        self._versions: dict[str, list[RingKey]] = {}
        self._unopened: set[str] = set()
        """Backends whose open() failed (see open_later): opened again before being listed."""
        self._derived: dict[tuple[str, str, bytes], RingKey] = {}
        self._view: RingView | None = None
        self.last_errors: dict[str, str] = {}
        self._problems: dict[str, BackendProblem] = {}
        for backend in self.backends:  # at 0 from the start, so that rate() and increase()
            for operation in ("list", "sign", "rotate"):  # count a backend's first failure
                metrics.BACKEND_ERRORS.labels(backend.name, operation)
        self._sign_seconds = functools.cache(metrics.SIGN_SECONDS.labels)
        """The histogram child per backend, looked up once rather than per signature."""
        self._loop_signer = LoopSigner(sign_timeout)
        self._wake = asyncio.Event()

    # -- building -----------------------------------------------------------------------------

    def _ring_key(self, backend: KeyBackend, version: KeyVersion) -> RingKey:
        cache_key = (backend.name, version.version_id, keygen.public_pem(version.public_key))
        cached = self._derived.get(cache_key)
        if cached is not None and cached.created_at == version.created_at:
            return cached
        alg = jose.choose_algorithm(version.public_key, self.algorithm, version.algorithms)
        kid = jose.thumbprint(version.public_key)
        key = RingKey(
            kid=kid,
            alg=alg,
            backend=backend,
            version=version,
            created_at=version.created_at,
            signs_from=version.created_at + self.lifecycle.publish_lead,
            jwk=jose.public_jwk(version.public_key, alg),
            header_b64=jose.encode_header(kid, alg),
            ecdsa_size=2 * alg.ec_coordinate_size if alg.is_ecdsa else 0,
        )
        self._derived[cache_key] = key
        return key

    def _check_times(self, backend: KeyBackend, version: KeyVersion) -> None:
        """Refuse a version whose creation time the lifecycle cannot use: without a time zone
        (it cannot be compared with the others or the clock), or so late that its lifecycle
        dates fall outside datetime's range. Only that backend's refresh fails; the ring keeps
        its last good versions."""
        created = version.created_at
        where = f"backend {backend.name!r}, key version {version.version_id}"
        if not isinstance(created, datetime) or created.utcoffset() is None:
            raise BackendError(f"{where}: created_at has no time zone")
        try:
            created + self.lifecycle.publish_lead + self.lifecycle.retention
        except OverflowError:
            raise BackendError(f"{where}: created_at {iso(created)} is out of range") from None

    def open_later(self, backend: KeyBackend) -> None:
        """Leave `backend`, whose open() failed, to the refreshes: each one calls open() again
        before listing it, and until one succeeds the backend has no keys in the ring (one that
        never opened has nothing trustworthy to list)."""
        self._unopened.add(backend.name)

    async def _refresh_backend(self, backend: KeyBackend, quiet: bool) -> None:
        try:
            if backend.name in self._unopened:
                async with deadline(self.list_timeout):
                    await open_backend(backend)
                self._unopened.discard(backend.name)
            async with deadline(self.list_timeout):
                versions = await backend.list_versions()
            had = len(self._versions.get(backend.name, []))
            if not versions and had:
                raise EmptyListing(
                    f"listed no key versions after listing {had}: a fault (key files deleted, a"
                    " mount gone), not a rotation; its last good keys are kept"
                )
            keys: list[RingKey] = []
            for version in versions:
                self._check_times(backend, version)
                try:
                    keys.append(self._ring_key(backend, version))
                except jose.UnsupportedKeyError as exc:
                    raise ConfigError(
                        f"backend {backend.name!r}, key version {version.version_id}: {exc}"
                    ) from None
        except Exception as exc:
            metrics.BACKEND_ERRORS.labels(backend.name, "list").inc()
            if isinstance(exc, TimeoutError):  # before OSError, its base class
                message = f"timed out after {self.list_timeout:g}s"
            elif isinstance(exc, (BackendError, ConfigError, OSError)):
                message = str(exc)
            else:  # an unmapped library error: its text may carry request details
                message = f"unexpected {type(exc).__name__}"
            if not quiet and self.last_errors.get(backend.name) != message:
                # A refusal (a bad key file, two unstamped keys) or vanished keys wait for the
                # operator; an unreachable backend may come back by itself.
                serious = isinstance(exc, (ConfigError, EmptyListing))
                level = logging.ERROR if serious else logging.WARNING
                log.log(level, "refresh of backend %s failed: %s", backend.name, message)
            self.last_errors[backend.name] = message
            self._problems[backend.name] = _problem(
                backend.name, exc, bool(self._versions.get(backend.name))
            )
            raise
        self.last_errors.pop(backend.name, None)
        self._problems.pop(backend.name, None)
        self._versions[backend.name] = keys

    async def refresh(
        self, *, raise_errors: bool = False, quiet: bool = False
    ) -> dict[str, BaseException]:
        """List every backend concurrently; return the failures by backend name (and raise
        the first one when asked, as the CLI does). `quiet` leaves the logging to the caller."""
        results = await asyncio.gather(
            *(self._refresh_backend(b, quiet) for b in self.backends), return_exceptions=True
        )
        errors = {
            b.name: r for b, r in zip(self.backends, results, strict=True) if isinstance(r, BaseException)
        }
        self._view = None
        self._check_algorithm()
        self._update_gauges()
        if raise_errors and errors:
            raise next(iter(errors.values()))
        return errors

    def _check_algorithm(self) -> None:
        if self.algorithm is None:
            return
        keys = self.all_keys()
        if keys and not any(k.alg is self.algorithm for k in keys):
            raise ConfigError(
                f"tokens.algorithm: {self.algorithm.value} fits none of the configured keys "
                f"({', '.join(sorted({jose.describe_key(k.version.public_key) for k in keys}))})"
            )

    def _update_gauges(self) -> None:
        view = self.view()
        for state in KeyState:
            metrics.RING_KEYS.labels(state.value).set(
                sum(1 for s in view.keys if s.state is state)
            )
        for backend in self.backends:
            found = self._problems.get(backend.name)
            for problem in PROBLEMS:
                current = found is not None and found.problem == problem
                metrics.BACKEND_PROBLEM.labels(backend.name, problem).set(1 if current else 0)
            versions = self._versions.get(backend.name)
            if versions:
                newest = max(k.created_at for k in versions)
                metrics.BACKEND_NEWEST_VERSION.labels(backend.name).set(newest.timestamp())
        self._update_clock_gauges()

    def _update_clock_gauges(self) -> None:
        """The gauges that move with the clock alone: whether a key signs, its age, how long
        the last pending key still waits. Set at each refresh: as of at most refresh_interval
        ago, which is plenty for alerts counted in hours and days."""
        now = self.clock()
        view = self.view()
        signer = view.signer
        metrics.READY.set(1 if signer is not None else 0)
        age = (now - signer.created_at).total_seconds() if signer is not None else float("nan")
        metrics.SIGNING_KEY_AGE.set(age)
        waits = [(s.key.signs_from - now).total_seconds() for s in view.keys
                 if s.state is KeyState.PENDING]
        metrics.PENDING_KEY_WAIT.set(max(waits, default=0.0))

    def problems(self) -> list[BackendProblem]:
        """Why each backend whose last refresh failed is not current, in backend order."""
        return [self._problems[b.name] for b in self.backends if b.name in self._problems]

    def _signing_refused(self, backend_name: str) -> bool:
        found = self._problems.get(backend_name)
        return found is not None and found.problem == "insecure_key"

    def refresh_soon(self) -> None:
        """Have the refresh loop (run) refresh now rather than at the end of its interval: for
        an operator who has just revoked or added a key (SIGHUP)."""
        self._wake.set()

    async def run(
        self, interval: float, after_refresh: Callable[[], None] | None = None
    ) -> None:
        """Refresh every `interval` seconds, or at once when refresh_soon() asks, until
        cancelled; `after_refresh` is called after each (the service logs ring changes)."""
        while True:
            try:
                await asyncio.wait_for(self._wake.wait(), interval)
            except TimeoutError:
                pass
            self._wake.clear()
            try:
                await self.refresh()
            except ConfigError as exc:
                log.error("key ring refresh refused: %s", exc)
            except Exception as exc:  # a bug: keep refreshing, or the ring would freeze for good
                log.error("key ring refresh failed: %s", describe_unexpected(exc))
            if after_refresh is not None:
                try:
                    after_refresh()
                except Exception as exc:  # a bug there must not stop the refreshes either
                    log.error("after a key ring refresh: %s", describe_unexpected(exc))

    # -- reading ------------------------------------------------------------------------------

    def all_keys(self) -> list[RingKey]:
        """Every version of every backend, one entry per kid (the oldest wins a duplicate)."""
        by_kid: dict[str, RingKey] = {}
        for key in sorted(
            (k for keys in self._versions.values() for k in keys),
            key=lambda k: (k.created_at, k.kid),
        ):
            by_kid.setdefault(key.kid, key)
        return list(by_kid.values())

    def versions_in(self, backend_name: str) -> list[RingKey]:
        """Every version the backend listed at the last good refresh."""
        return list(self._versions.get(backend_name, []))

    def versions_of(self, kid: str) -> list[RingKey]:
        """Every version with this kid in every backend, duplicates included (`all_keys` keeps
        one per kid): what must all be disabled to revoke the kid."""
        return [k for keys in self._versions.values() for k in keys if k.kid == kid]

    def view(self, now: datetime | None = None) -> RingView:
        """The ring now (cached until the next state change or refresh)."""
        at = now or self.clock()
        cached = self._view
        if now is None and cached is not None and at < cached.valid_until:
            return cached
        view = compute_view(self.all_keys(), self.lifecycle, at)
        if view.signer is not None and self._signing_refused(view.signer.backend_name):
            view = dataclasses.replace(view, signer=None)
        if now is None:
            self._view = view
        return view

    @property
    def ready(self) -> bool:
        return self.view().signer is not None

    def backend(self, name: str | None) -> KeyBackend:
        """The backend called `name`, or the only one when `name` is None."""
        if name is None:
            if len(self.backends) != 1:
                names = ", ".join(b.name for b in self.backends)
                raise ConfigError(f"several backends are configured ({names}): choose one with --backend")
            return self.backends[0]
        for backend in self.backends:
            if backend.name == name:
                return backend
        raise ConfigError(f"no backend named {name!r}")

    # -- signing ------------------------------------------------------------------------------

    async def sign(self, key: RingKey, message: bytes) -> bytes:
        """Sign with exactly `key`, returning the JWS-form signature.

        Every failure becomes a BackendError (BackendUnavailable when a retry may help), with
        a message fit for a client: never a traceback, never a backend's raw exception text."""
        backend = key.backend
        started = time.perf_counter()
        try:
            in_process = backend.signs_at_once(key.version, key.alg)
            if in_process and not key.alg.is_rsa:
                # Microseconds on this thread: no timer, batched per loop iteration.
                signature = await self._loop_signer.batch(backend, key.version, key.alg, message)
            elif in_process and self.rsa_on_loop:
                # Milliseconds on this thread, one signature per loop iteration; the queue
                # enforces the sign timeout itself (no timer either).
                signature = await self._loop_signer.queue(backend, key.version, key.alg, message)
            else:
                # A deadline (asyncio.timeout the backend can read), not wait_for: no Task per
                # signature, and the backend's retries and call timeouts fit inside it.
                async with deadline(self.sign_timeout):
                    signature = await backend.sign(key.version, key.alg, message)
        except Overloaded:  # keysvc's own queue is full: not the backend's failure
            raise
        except BackendError:
            metrics.BACKEND_ERRORS.labels(backend.name, "sign").inc()
            raise
        except TimeoutError:
            metrics.BACKEND_ERRORS.labels(backend.name, "sign").inc()
            raise BackendUnavailable(
                f"backend {backend.name!r} did not sign within {self.sign_timeout:g}s"
            ) from None
        except Exception as exc:  # a backend bug or an unmapped library error
            metrics.BACKEND_ERRORS.labels(backend.name, "sign").inc()
            log.error("backend %s failed to sign: %s", backend.name, type(exc).__name__)
            raise BackendUnavailable(f"backend {backend.name!r} failed to sign") from None
        self._sign_seconds(backend.name).observe(time.perf_counter() - started)
        size = key.ecdsa_size
        if size:
            if backend.signature_encoding == "der":
                try:
                    signature = jose.der_to_raw(signature, key.alg)
                except (ValueError, OverflowError, TypeError):  # not DER, cut short, r/s too wide
                    raise self._malformed(backend, key.alg) from None
            elif not isinstance(signature, (bytes, bytearray)) or len(signature) != size:
                raise self._malformed(backend, key.alg)
        elif not isinstance(signature, (bytes, bytearray)) or not signature:
            raise self._malformed(backend, key.alg)
        return signature

    @staticmethod
    def _malformed(backend: KeyBackend, alg: jose.Algorithm) -> BackendError:
        metrics.BACKEND_ERRORS.labels(backend.name, "sign").inc()
        log.error("backend %s returned a malformed %s signature", backend.name, alg.value)
        return BackendError(f"backend {backend.name!r} returned a malformed signature")

    async def close(self) -> None:
        await asyncio.gather(*(b.close() for b in self.backends), return_exceptions=True)
