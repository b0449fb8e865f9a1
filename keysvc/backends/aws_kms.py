"""AWS KMS backend: every asymmetric SIGN_VERIFY KMS key of the configured set is one key version.

AWS KMS keys have no versions, so each KMS key is one entry of the ring: its key ARN is the
`version_id`, its `CreationDate` the creation time, and only keys in state `Enabled` are
published (a disabled or pending-deletion key drops out at the next refresh). The set is
`key_ids` (key ids, ARNs or `alias/...` names), or every SIGN_VERIFY key carrying `tag`, or both.

Rotation (`create_version`) creates a new KMS key of the newest key's KeySpec. So that the
previous key stays published after rotation (tokens it signed must keep verifying until they
expire), the new key must be found again by the next refresh without the old one being lost:
- with `tag`, the new key carries the tag, and discovery finds old and new alike;
- with an alias in `key_ids`, the alias is moved to the new key, and the new key is tagged
  `keysvc:previous-key = <ARN of the key the alias named until then>`. Listing an alias walks
  that chain back (DescribeKey + ListResourceTags, already in the read-only policy), so every
  earlier key that is still enabled stays in the ring until an operator disables or deletes it.
  KMS itself keeps no alias history; the chain is that history, stored on the keys.
- with plain key ids and no tag, keysvc could not find a new key again: rotation is refused
  (add the key to `key_ids` by hand, or use an alias or a tag).

Client choice: aiobotocore, the asyncio port of botocore. KMS calls are pure network I/O
(10-30 ms each), so on the event loop they cost no thread and their concurrency is bounded only
by the connection pool (`max_connections`); boto3 in an executor would cap concurrent signs at
the thread count and add a thread hand-off per token. aiobotocore uses botocore's own credential
chain and endpoint resolution, so behaviour matches the AWS CLI. Retries are keysvc's shared
RetryPolicy (`max_attempts` tries with jittered exponential backoff within `retry_budget`, never
past the token request's deadline; botocore's own are off), and short timeouts keep a stuck KMS
from holding token requests for botocore's default 60 s.

Signing always uses `MessageType=DIGEST` over `alg.digest(message)`: the JWS signing input
never leaves the process (only its hash does), and its length is never an issue (KMS takes at
most 4096 bytes of RAW message). ECDSA signatures come back DER (`signature_encoding = "der"`).
"""

from __future__ import annotations

import asyncio
import logging
from contextlib import AsyncExitStack
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any, Literal

from aiobotocore.config import AioConfig
from aiobotocore.session import AioSession
from botocore.exceptions import ProfileNotFound
from cryptography.hazmat.primitives import serialization
from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from keysvc import jose
from keysvc.backends.aws_errors import AWS_ERRORS, NO_RETRIES, TIMED_OUT, translate
from keysvc.backends.base import BackendSettings, Capability, KeyBackend, KeyVersion, require
from keysvc.backends.base import CreatesVersions, DestroysVersions, DisablesVersions
from keysvc.backends.retry import RetryPolicy, time_left
from keysvc.durations import Duration
from keysvc.errors import BackendError, ConfigError, NotFound

log = logging.getLogger("keysvc.backends.aws_kms")

KeySpec = Literal["RSA_2048", "RSA_3072", "RSA_4096", "ECC_NIST_P256", "ECC_NIST_P384"]
_RSA_ALGORITHMS = {
    "RSASSA_PKCS1_V1_5_SHA_256": jose.Algorithm.RS256,
    "RSASSA_PSS_SHA_256": jose.Algorithm.PS256,
}
SPEC_ALGORITHMS: dict[str, dict[str, jose.Algorithm]] = {
    "RSA_2048": _RSA_ALGORITHMS,
    "RSA_3072": _RSA_ALGORITHMS,
    "RSA_4096": _RSA_ALGORITHMS,
    "ECC_NIST_P256": {"ECDSA_SHA_256": jose.Algorithm.ES256},
    "ECC_NIST_P384": {"ECDSA_SHA_384": jose.Algorithm.ES384},
}
"""KMS KeySpec → the KMS signing algorithms keysvc uses → their JWS names."""
KMS_ALGORITHM = {
    jose_alg: kms_alg for table in SPEC_ALGORITHMS.values() for kms_alg, jose_alg in table.items()
}
DEFAULT_KEY_SPEC: KeySpec = "RSA_2048"
"""Used by rotation only when the ring is empty and `key_spec` is unset: RS256 on a 2048-bit
key is what every cloud's token exchange accepts, and it is KMS's cheapest RSA key."""
PREVIOUS_KEY_TAG = "keysvc:previous-key"
MAX_ALIAS_HISTORY = 32
"""How far back an alias's chain of keys is walked: far more keys than a ring ever publishes
at once (a key leaves the JWKS max_ttl + jwks_max_age after it stops signing)."""
PUBLISHED_STATE = "Enabled"
IAM_PREFIXES = {"resourcegroupstaggingapi": "tag"}
"""botocore service name → IAM action prefix, where they differ (errors name IAM actions)."""


class KeyTag(BaseModel):
    """A KMS resource tag; in the config either `{key = "k", value = "v"}` or `"k=v"`."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    key: str = Field(min_length=1, max_length=128)
    value: str = Field(max_length=256)

    @model_validator(mode="before")
    @classmethod
    def _from_text(cls, data: Any) -> Any:
        if isinstance(data, str):
            key, sep, value = data.partition("=")
            if not sep or not key.strip():
                raise ValueError('must be "key=value" or {key = "...", value = "..."}')
            return {"key": key.strip(), "value": value.strip()}
        return data

    def __str__(self) -> str:
        return f"{self.key}={self.value}"


class AwsKmsSettings(BackendSettings):
    key_ids: list[str] = Field(default_factory=list)
    """KMS keys by key id, key ARN, alias name (`alias/...`) or alias ARN."""
    tag: KeyTag | None = None
    """Discovery: every SIGN_VERIFY key carrying this tag is part of the ring."""
    region: str | None = None
    """AWS region; by default the standard chain's (AWS_REGION, AWS_DEFAULT_REGION, profile)."""
    endpoint: str | None = Field(None, validation_alias="endpoint_url")
    """KMS endpoint override (a VPC endpoint, or a local emulator in tests; formerly
    `endpoint_url`)."""
    tagging_endpoint: str | None = Field(None, validation_alias="tagging_endpoint_url")
    """Resource Groups Tagging API endpoint override for `tag` discovery; defaults to
    `endpoint` when that is set, else AWS's regional endpoint (formerly
    `tagging_endpoint_url`)."""
    ca_file: Path | None = None
    """PEM roots to trust for AWS's endpoints instead of botocore's bundle (a TLS-inspecting
    proxy, a private VPC endpoint's CA)."""
    profile: str | None = None
    """Named profile of the shared AWS config; credentials otherwise come from the standard
    chain (environment, web identity token file, container or instance role)."""
    key_spec: KeySpec | None = None
    """KeySpec of keys created by rotation; by default that of the newest key."""
    max_attempts: int = Field(3, ge=1, le=10)
    """Tries per AWS call, including the first, on throttling, 5xx and connection errors."""
    retry_budget: Duration = timedelta(seconds=2)
    """How long, in all, one call may wait between those tries (exponential backoff from
    0.1 s); never past tokens.sign_timeout."""
    connect_timeout: Duration = timedelta(seconds=2)
    timeout: Duration = Field(timedelta(seconds=5), validation_alias="read_timeout")
    """How long one KMS call may wait for its answer (formerly `read_timeout`)."""
    max_connections: int = Field(32, ge=1, le=1024)
    """Concurrent KMS requests (HTTP connection pool size)."""

    @field_validator("key_ids")
    @classmethod
    def _key_ids(cls, value: list[str]) -> list[str]:
        cleaned = [k.strip() for k in value]
        if any(not k for k in cleaned):
            raise ValueError("key ids must not be empty")
        if len(set(cleaned)) != len(cleaned):
            raise ValueError("key ids must be unique")
        return cleaned

    @field_validator("endpoint", "tagging_endpoint")
    @classmethod
    def _url(cls, value: str | None) -> str | None:
        if value is not None and not value.startswith(("https://", "http://")):
            raise ValueError("must be an http(s) URL")
        return value

    @model_validator(mode="after")
    def _some_keys(self) -> AwsKmsSettings:
        if not self.key_ids and self.tag is None:
            raise ValueError("set key_ids, tag (discovery) or both")
        return self

    @property
    def aliases(self) -> list[str]:
        return [k for k in self.key_ids if is_alias(k)]


def is_alias(key_id: str) -> bool:
    return key_id.startswith("alias/") or (key_id.startswith("arn:") and ":alias/" in key_id)


@dataclass(frozen=True)
class KmsKey:
    """What keysvc keeps of a KMS key between calls (the KeyVersion's handle)."""

    arn: str
    key_spec: str


class AwsKmsBackend(KeyBackend, CreatesVersions, DisablesVersions, DestroysVersions):
    Settings = AwsKmsSettings
    settings: AwsKmsSettings
    signature_encoding = "der"
    scheduled = True  # PendingDeletion: CancelKeyDeletion restores it for 30 days

    def __init__(self, name: str, settings: AwsKmsSettings) -> None:
        super().__init__(name, settings)
        self._stack = AsyncExitStack()
        self._kms: Any = None
        self._tagging: Any = None
        self._public_keys: dict[str, jose.PublicKey] = {}
        self._previous: dict[str, str | None] = {}
        self._rotation_lock = asyncio.Lock()
        self._retry = RetryPolicy.of(settings.retry_budget, settings.max_attempts)

    # -- connection -------------------------------------------------------------------------

    async def open(self) -> None:
        s = self.settings
        session = AioSession(profile=s.profile)
        config = AioConfig(
            retries=NO_RETRIES,
            connect_timeout=s.connect_timeout.total_seconds(),
            read_timeout=s.timeout.total_seconds(),
            max_pool_connections=s.max_connections,
        )
        try:
            region = s.region or session.get_config_variable("region")
        except ProfileNotFound:
            raise ConfigError(
                f"backends.{self.name}.profile: no profile {s.profile!r} in the AWS config"
            ) from None
        if not region:
            raise ConfigError(
                f"backends.{self.name}.region: not set, and the AWS environment names no region"
                " (AWS_REGION, AWS_DEFAULT_REGION or the profile's region)"
            )
        verify: str | None = None
        if s.ca_file is not None:
            if not s.ca_file.is_file():
                raise ConfigError(f"backends.{self.name}.ca_file: {s.ca_file} is not a file")
            verify = str(s.ca_file)
        self._kms = await self._stack.enter_async_context(
            session.create_client(
                "kms", region_name=region, endpoint_url=s.endpoint, config=config, verify=verify
            )
        )
        if s.tag is not None:
            self._tagging = await self._stack.enter_async_context(
                session.create_client(
                    "resourcegroupstaggingapi",
                    region_name=region,
                    endpoint_url=s.tagging_endpoint or s.endpoint,
                    verify=verify,
                    config=config,
                )
            )

    async def close(self) -> None:
        await self._stack.aclose()
        self._kms = self._tagging = None

    async def _call(self, client: Any, operation: str, subject: str, **params: Any) -> Any:
        """One AWS API call, each try bounded by connect_timeout + timeout (less when the
        caller's deadline is nearer), retried by the backend's RetryPolicy; failures become
        BackendErrors."""
        if client is None:
            raise BackendError(f"backend {self.name!r} is not open")
        service = client.meta.service_model.service_name
        prefix = IAM_PREFIXES.get(service, service)
        action = f"{prefix}:{client.meta.method_to_api_mapping[operation]}"
        limit = (self.settings.connect_timeout + self.settings.timeout).total_seconds()

        async def attempt() -> Any:
            seconds = time_left(limit)
            try:
                async with asyncio.timeout(seconds):
                    return await getattr(client, operation)(**params)
            except AWS_ERRORS as exc:
                raise translate(exc, action, subject) from None
            except TimeoutError:
                raise TIMED_OUT(action=action, seconds=seconds) from None

        return await self._retry.run(attempt)

    # -- listing ----------------------------------------------------------------------------

    async def _describe(self, key_id: str) -> dict[str, Any]:
        response = await self._call(self._kms, "describe_key", key_id, KeyId=key_id)
        return response["KeyMetadata"]

    async def _describe_one(self, key_id: str) -> list[dict[str, Any]]:
        return [await self._describe(key_id)]

    async def _public_key(self, arn: str) -> jose.PublicKey:
        cached = self._public_keys.get(arn)
        if cached is None:
            response = await self._call(self._kms, "get_public_key", arn, KeyId=arn)
            loaded = serialization.load_der_public_key(response["PublicKey"])
            try:
                jose.check_supported(loaded)
            except jose.UnsupportedKeyError as exc:
                raise ConfigError(f"backends.{self.name}: KMS key {arn}: {exc}") from None
            cached = self._public_keys[arn] = loaded  # type: ignore[assignment]
        return cached

    async def _previous_key(self, arn: str) -> str | None:
        """The key an alias named before rotation moved it to `arn` (its keysvc:previous-key
        tag). Set once when keysvc creates the key, so it is cached for the process."""
        if arn not in self._previous:
            tags: list[dict[str, str]] = []
            params: dict[str, Any] = {"KeyId": arn}
            while True:
                page = await self._call(self._kms, "list_resource_tags", arn, **params)
                tags.extend(page.get("Tags", []))
                if not page.get("Truncated"):
                    break
                params["Marker"] = page["NextMarker"]
            found = [t["TagValue"] for t in tags if t["TagKey"] == PREVIOUS_KEY_TAG]
            self._previous[arn] = found[0] if found else None
        return self._previous[arn]

    async def _alias_history(self, alias: str) -> list[dict[str, Any]]:
        """The key `alias` names now, then each key it named before (newest first)."""
        chain = [await self._describe(alias)]
        seen = {chain[0]["Arn"]}
        while len(chain) < MAX_ALIAS_HISTORY:
            previous = await self._previous_key(chain[-1]["Arn"])
            if previous is None or previous in seen:
                break
            try:
                chain.append(await self._describe(previous))
            except NotFound:
                break  # a deleted key ends the history
            seen.add(previous)
        return chain

    async def _tagged_key_arns(self) -> list[str]:
        tag = self.settings.tag
        assert tag is not None
        arns: list[str] = []
        params: dict[str, Any] = {
            "ResourceTypeFilters": ["kms:key"],
            "TagFilters": [{"Key": tag.key, "Values": [tag.value]}],
        }
        while True:
            page = await self._call(self._tagging, "get_resources", f"tag {tag}", **params)
            arns.extend(r["ResourceARN"] for r in page.get("ResourceTagMappingList", []))
            token = page.get("PaginationToken")
            if not token:
                return arns
            params["PaginationToken"] = token

    async def _describe_if_present(self, arn: str) -> dict[str, Any] | None:
        try:
            return await self._describe(arn)
        except NotFound:
            return None

    async def _tagged_keys(self) -> list[dict[str, Any]]:
        # The tagging index lags behind deletions a little: keys already gone are skipped.
        described = await asyncio.gather(
            *(self._describe_if_present(arn) for arn in await self._tagged_key_arns())
        )
        metadata = [m for m in described if m is not None]
        # Discovery means "the SIGN_VERIFY keys with the tag"; an encryption key that happens
        # to share the tag is not a candidate.
        return [m for m in metadata if m.get("KeyUsage") == "SIGN_VERIFY"]

    async def _candidates(self) -> list[dict[str, Any]]:
        """Metadata of every key of the configured set, whatever its state, deduplicated."""
        lookups = [
            self._alias_history(key_id) if is_alias(key_id) else self._describe_one(key_id)
            for key_id in self.settings.key_ids
        ]
        if self.settings.tag is not None:
            lookups.append(self._tagged_keys())
        found = [meta for group in await asyncio.gather(*lookups) for meta in group]
        unique: dict[str, dict[str, Any]] = {}
        for meta in found:
            unique.setdefault(meta["Arn"], meta)
        return list(unique.values())

    def _check_usable(self, meta: dict[str, Any]) -> dict[str, jose.Algorithm]:
        """The JWS algorithms of a key's spec, or a ConfigError naming what is wrong."""
        arn, spec, usage = meta["Arn"], meta.get("KeySpec"), meta.get("KeyUsage")
        if usage != "SIGN_VERIFY":
            raise ConfigError(
                f"backends.{self.name}: KMS key {arn} has KeyUsage {usage}; keysvc needs an "
                "asymmetric SIGN_VERIFY key"
            )
        table = SPEC_ALGORITHMS.get(str(spec))
        if table is None:
            raise ConfigError(
                f"backends.{self.name}: KMS key {arn} has KeySpec {spec}; keysvc signs with "
                f"{', '.join(SPEC_ALGORITHMS)}"
            )
        return table

    async def _version(self, meta: dict[str, Any]) -> KeyVersion:
        table = self._check_usable(meta)
        algorithms = frozenset(
            table[name] for name in meta.get("SigningAlgorithms", []) if name in table
        )
        if not algorithms:
            raise ConfigError(
                f"backends.{self.name}: KMS key {meta['Arn']} offers none of the signing "
                f"algorithms keysvc uses ({', '.join(table)})"
            )
        return KeyVersion(
            version_id=meta["Arn"],
            created_at=meta["CreationDate"],
            public_key=await self._public_key(meta["Arn"]),
            algorithms=algorithms,
            handle=KmsKey(arn=meta["Arn"], key_spec=meta["KeySpec"]),
        )

    async def list_versions(self) -> list[KeyVersion]:
        publishable = [m for m in await self._candidates() if m.get("KeyState") == PUBLISHED_STATE]
        return list(await asyncio.gather(*(self._version(meta) for meta in publishable)))

    # -- signing ----------------------------------------------------------------------------

    async def sign(self, version: KeyVersion, alg: jose.Algorithm, message: bytes) -> bytes:
        if version.algorithms is not None and alg not in version.algorithms:
            raise BackendError(f"KMS key {version.version_id} cannot sign {alg.value}")
        response = await self._call(
            self._kms,
            "sign",
            version.version_id,
            KeyId=version.version_id,
            Message=alg.digest(message),
            MessageType="DIGEST",
            SigningAlgorithm=KMS_ALGORITHM[alg],
        )
        return response["Signature"]

    # -- rotation and revocation ------------------------------------------------------------

    def limitation(self, capability: Capability) -> str | None:
        if capability is not CreatesVersions:
            return None
        aliases = self.settings.aliases
        if len(aliases) > 1:
            return (
                f"it names {len(aliases)} aliases in key_ids; rotation moves one alias, so list"
                " a single alias (other keys by id) or use tag discovery"
            )
        if not aliases and self.settings.tag is None:
            return (
                "it lists fixed key ids and no tag, so a new key would not be found again;"
                " create the key yourself and add it to key_ids, or configure an alias in"
                " key_ids or a tag"
            )
        return None

    def _rotation_alias(self) -> str | None:
        require(self, CreatesVersions)
        aliases = self.settings.aliases
        return aliases[0] if aliases else None

    async def create_version(self) -> KeyVersion:
        async with self._rotation_lock:
            return await self._create()

    async def _create(self) -> KeyVersion:
        alias = self._rotation_alias()
        tags: list[dict[str, str]] = []
        if self.settings.tag is not None:
            tags.append({"TagKey": self.settings.tag.key, "TagValue": self.settings.tag.value})
        if alias is not None:
            current = await self._describe(alias)
            tags.append({"TagKey": PREVIOUS_KEY_TAG, "TagValue": current["Arn"]})
        key_spec = self.settings.key_spec or await self._newest_key_spec()
        created = await self._call(
            self._kms,
            "create_key",
            f"a new {key_spec} key",
            KeySpec=key_spec,
            KeyUsage="SIGN_VERIFY",
            Description=f"keysvc signing key (backend {self.name})",
            **({"Tags": tags} if tags else {}),
        )
        meta = created["KeyMetadata"]
        if alias is not None:
            await self._move_alias(alias, meta["Arn"])
        log.info("backend %s: created KMS key %s (%s)", self.name, meta["Arn"], key_spec)
        return await self._version(meta)

    async def _newest_key_spec(self) -> str:
        versions = await self.list_versions()
        if not versions:
            return DEFAULT_KEY_SPEC
        newest = max(versions, key=lambda v: v.created_at)
        return str(newest.handle.key_spec)

    async def _move_alias(self, alias: str, arn: str) -> None:
        """Point the alias at the new key. If that fails, disable the new key so that no
        half-done rotation is left signing; the error names it for clean-up."""
        alias_name = alias.split(":", 5)[-1] if alias.startswith("arn:") else alias
        try:
            await self._call(
                self._kms, "update_alias", alias_name, AliasName=alias_name, TargetKeyId=arn
            )
        except BackendError as exc:
            try:
                await self._call(self._kms, "disable_key", arn, KeyId=arn)
            except BackendError:
                log.warning("backend %s: could not disable orphaned key %s", self.name, arn)
            raise BackendError(
                f"rotation created KMS key {arn} but could not move {alias_name} to it ({exc}); "
                "the new key was disabled: schedule its deletion"
            ) from None

    async def disable_version(self, version: KeyVersion) -> None:
        """DisableKey: the key stops signing and is no longer published; EnableKey undoes it."""
        await self._call(
            self._kms, "disable_key", version.version_id, KeyId=version.version_id
        )

    async def destroy_version(self, version: KeyVersion) -> None:
        """ScheduleKeyDeletion: the key is PendingDeletion at once (no longer listed or usable)
        and deleted after AWS's waiting period (30 days), until when CancelKeyDeletion can
        still undo it."""
        await self._call(
            self._kms, "schedule_key_deletion", version.version_id, KeyId=version.version_id
        )
