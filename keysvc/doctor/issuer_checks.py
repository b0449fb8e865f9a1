"""Checks of an issuer's public face: the URL, the discovery document, the JWKS and its caching.

Each check is a function from what was fetched to findings, so the network part
(`check_issuer`) stays a short sequence and every rule can be read (and tested) on its own.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

import aiohttp

from keysvc.clouds import (
    ACCEPTED_ALGORITHMS,
    ALL_CLOUDS,
    AWS_JWKS_TIMEOUT_SECONDS,
    AWS_MAX_JWKS_KEYS,
    GCP_RECOMMENDED_TOKEN_LIFETIME,
    JWKS_KEYS_WARNING,
    MAX_TOKEN_LIFETIME,
    PRIVATE_JWK_FIELDS,
    Cloud,
)
from keysvc.doctor.findings import Finding, fail, ok, skip, warn
from keysvc.durations import format_duration
from keysvc.http_fetch import Fetched, FetchError, fetch
from keysvc.issuer_url import IssuerURL

DISCOVERY_FIELDS = (
    "issuer",
    "jwks_uri",
    "id_token_signing_alg_values_supported",
    "response_types_supported",
    "subject_types_supported",
)
SLOW_RESPONSE_SECONDS = 2.0
SHORT_MAX_AGE = timedelta(minutes=1)
_MAX_AGE = re.compile(r"(?:^|,)\s*(?:s-)?max-age\s*=\s*\"?(\d+)\"?\s*(?=,|$)", re.IGNORECASE)


@dataclass(frozen=True)
class IssuerCheckOptions:
    clouds: tuple[Cloud, ...] = ALL_CLOUDS
    publish_lead: timedelta | None = None
    max_ttl: timedelta | None = None
    private_ca: bool = False
    service_keys: list[dict[str, Any]] | None = None
    """The keys `GET /v1/keys` lists, when doctor was given API access."""
    local: bool = False
    """A development instance on this machine (`--local`): what only the clouds demand (https,
    no port for AWS, a public CA) is reported as skipped, not failed."""


LOCAL_SKIP = "--local: a cloud demands it, a development instance need not"


def _ms(seconds: float) -> str:
    return f"{seconds * 1000:.0f} ms"


def check_issuer_url(issuer: IssuerURL, options: IssuerCheckOptions) -> list[Finding]:
    if options.local:
        return [skip("issuer_url", f"https, no port, a public CA: {LOCAL_SKIP}")]
    findings = []
    if issuer.is_https:
        findings.append(ok("issuer_url", f"{issuer.url} is an https URL"))
    else:
        findings.append(fail("issuer_url", f"{issuer.url} is not https: no cloud accepts it"))
    if Cloud.AWS in options.clouds and issuer.has_port:
        findings.append(
            fail("issuer_url", "AWS refuses an OIDC provider URL with a port", Cloud.AWS)
        )
    if options.private_ca:
        findings.append(
            warn(
                "tls",
                "TLS was verified against --ca-file: the clouds trust only public CAs",
            )
        )
    return findings


def _status_problem(fetched: Fetched) -> str | None:
    if fetched.status == 200:
        return None
    if 300 <= fetched.status < 400:
        where = fetched.headers.get("Location", "?")
        return f"{fetched.url} redirects ({fetched.status} to {where}); serve it directly"
    return f"{fetched.url} answered HTTP {fetched.status}"


def check_discovery(
    issuer: IssuerURL, fetched: Fetched, *, local: bool = False
) -> tuple[list[Finding], str | None]:
    """Findings about the discovery document, and the jwks_uri to fetch next (None: stop)."""
    problem = _status_problem(fetched)
    if problem:
        return [fail("discovery", problem)], None
    try:
        document = fetched.json()
    except FetchError as exc:
        return [fail("discovery", str(exc))], None
    if not isinstance(document, dict):
        return [fail("discovery", f"{fetched.url} is not a JSON object")], None
    findings = [ok("discovery", f"{fetched.url} answered 200 in {_ms(fetched.elapsed)}")]
    if document.get("issuer") == issuer.url:
        findings.append(ok("discovery_issuer", "the document's issuer equals the issuer URL"))
    else:
        findings.append(
            fail(
                "discovery_issuer",
                f"the document's issuer {document.get('issuer')!r} is not {issuer.url!r}:"
                " verifiers require them to be equal, character for character",
            )
        )
    missing = [f for f in DISCOVERY_FIELDS if f not in document]
    if missing:
        findings.append(warn("discovery_fields", f"missing fields: {', '.join(missing)}"))
    jwks_uri = document.get("jwks_uri")
    if not isinstance(jwks_uri, str) or not jwks_uri:
        findings.append(fail("jwks_uri", "the discovery document has no jwks_uri"))
        return findings, None
    if not jwks_uri.startswith("https://"):
        if local:
            findings.append(skip("jwks_uri", f"jwks_uri {jwks_uri} is not https: {LOCAL_SKIP}"))
        else:
            findings.append(fail("jwks_uri", f"jwks_uri {jwks_uri} is not https"))
    return findings, jwks_uri


def key_algorithm(jwk: Mapping[str, Any]) -> str | None:
    """The JWK's `alg`, or what a verifier would assume for a key without one."""
    if isinstance(jwk.get("alg"), str):
        return jwk["alg"]
    kty, crv = jwk.get("kty"), jwk.get("crv")
    if kty == "RSA":
        return "RS256"
    if kty == "EC":
        return {"P-256": "ES256", "P-384": "ES384", "P-521": "ES512"}.get(str(crv))
    if kty == "OKP":
        return "EdDSA"
    return None


def check_jwks_document(
    document: Any, options: IssuerCheckOptions, advertised_algs: Any = None
) -> list[Finding]:
    if not isinstance(document, dict) or not isinstance(document.get("keys"), list):
        return [fail("jwks", 'the JWKS is not a JSON object with a "keys" list')]
    keys = [k for k in document["keys"] if isinstance(k, dict)]
    findings: list[Finding] = []
    if len(keys) != len(document["keys"]) or not keys:
        findings.append(fail("jwks", "the JWKS must hold at least one key, each a JSON object"))
        if not keys:
            return findings
    kids = [k.get("kid") for k in keys]
    if any(not isinstance(kid, str) or not kid for kid in kids):
        findings.append(fail("kids", "a key has no kid: AWS and Azure need one in every key"))
    elif len(set(kids)) != len(kids):
        dupes = sorted({k for k in kids if kids.count(k) > 1})
        findings.append(fail("kids", f"duplicate kid {dupes[0]}: verifiers cannot choose a key"))
    else:
        findings.append(ok("kids", f"{len(kids)} key(s), every kid present and unique"))

    leaked = [str(k.get("kid", i)) for i, k in enumerate(keys) if PRIVATE_JWK_FIELDS & k.keys()]
    if leaked:
        findings.append(
            fail(
                "public_only",
                f"key {leaked[0]} publishes PRIVATE key material: revoke it now",
            )
        )
    elif any({"x5c", "x5t", "x5t#S256"} & k.keys() for k in keys):
        findings.append(
            warn(
                "public_only",
                "keys carry x5c/x5t, which GCP refuses in an uploaded JWKS",
                Cloud.GCP,
            )
        )
    else:
        findings.append(ok("public_only", "only public key members are published"))

    if len(keys) >= AWS_MAX_JWKS_KEYS:
        findings.append(
            fail(
                "jwks_size", f"{len(keys)} keys: AWS stops at about {AWS_MAX_JWKS_KEYS}", Cloud.AWS
            )
        )
    elif len(keys) >= JWKS_KEYS_WARNING:
        findings.append(
            warn("jwks_size", f"{len(keys)} keys: AWS is observed to fail near {AWS_MAX_JWKS_KEYS}")
        )
    else:
        findings.append(
            ok("jwks_size", f"{len(keys)} key(s), well under AWS's ~{AWS_MAX_JWKS_KEYS}")
        )

    algs = {str(k.get("kid")): key_algorithm(k) for k in keys}
    for cloud in options.clouds:
        refused = sorted(
            f"{kid} ({alg})" for kid, alg in algs.items() if alg not in ACCEPTED_ALGORITHMS[cloud]
        )
        accepted = sorted(ACCEPTED_ALGORITHMS[cloud])
        if refused:
            findings.append(
                fail(
                    f"algorithms.{cloud.value}",
                    f"{cloud.title} accepts only {', '.join(accepted)}; a token signed by"
                    f" {', '.join(refused)} would be refused",
                    cloud,
                )
            )
        else:
            findings.append(
                ok(
                    f"algorithms.{cloud.value}",
                    f"every key's algorithm is accepted by {cloud.title}",
                    cloud,
                )
            )
    if isinstance(advertised_algs, list):
        unlisted = sorted({a for a in algs.values() if a and a not in advertised_algs})
        if unlisted:
            findings.append(
                warn(
                    "discovery_fields",
                    "id_token_signing_alg_values_supported does not list " + ", ".join(unlisted),
                )
            )
    return findings


def max_age(cache_control: str | None) -> int | None:
    if not cache_control:
        return None
    match = _MAX_AGE.search(cache_control)
    return int(match.group(1)) if match else None


def check_caching(headers: Mapping[str, str], options: IssuerCheckOptions) -> list[Finding]:
    cache_control = headers.get("Cache-Control")
    directives = {d.strip().split("=")[0].lower() for d in (cache_control or "").split(",")}
    seconds = max_age(cache_control)
    if {"no-store", "no-cache"} & directives or not seconds:
        return [
            fail(
                "cache_control",
                f"JWKS Cache-Control is {cache_control!r}: send a real max-age (AWS STS changed"
                " behaviour for issuers without one, and every fetch hits the issuer)",
            ),
            skip("publish_lead", "needs a JWKS max-age"),
        ]
    age = timedelta(seconds=seconds)
    described = f"JWKS Cache-Control {cache_control!r} (max-age {format_duration(age)})"
    if age < SHORT_MAX_AGE:
        found = warn(
            "cache_control",
            f"{described}: under {format_duration(SHORT_MAX_AGE)}, so every verifier refetches"
            " the JWKS about that often (load on the issuer, and an issuer outage fails tokens"
            " at once instead of after the cache runs out); keysvc's default is 15m",
        )
    else:
        found = ok("cache_control", described)
    findings = [found]
    lead = options.publish_lead
    if lead is None:
        findings.append(
            skip(
                "publish_lead",
                "publish lead unknown: give --publish-lead, --config, or --client-token-file for"
                " /v1/keys",
            )
        )
    elif age >= lead:
        findings.append(
            fail(
                "publish_lead",
                f"max-age {format_duration(age)} is not shorter than the publish lead"
                f" {format_duration(lead)}: a verifier may meet a new key's tokens before it"
                " has fetched the key",
            )
        )
    else:
        findings.append(
            ok(
                "publish_lead",
                f"max-age {format_duration(age)} is shorter than the publish lead"
                f" {format_duration(lead)}",
            )
        )
    return findings


def check_response_time(fetched: Fetched) -> Finding:
    took = _ms(fetched.elapsed)
    if fetched.elapsed >= AWS_JWKS_TIMEOUT_SECONDS:
        return fail(
            "jwks_response_time", f"the JWKS took {took}: AWS gives up after about 5 s", Cloud.AWS
        )
    if fetched.elapsed >= SLOW_RESPONSE_SECONDS:
        return warn(
            "jwks_response_time", f"the JWKS took {took}: verifiers time out (AWS after ~5 s)"
        )
    return ok("jwks_response_time", f"the JWKS answered in {took}")


def check_token_lifetime(options: IssuerCheckOptions) -> list[Finding]:
    clouds = [c for c in options.clouds if c in MAX_TOKEN_LIFETIME]
    if options.max_ttl is None:
        return [
            skip("token_lifetime", "token lifetime unknown: give --max-ttl or --config", *clouds)
        ]
    ttl = options.max_ttl
    findings = []
    for cloud in clouds:
        limit = MAX_TOKEN_LIFETIME[cloud]
        check = f"token_lifetime.{cloud.value}"
        if ttl > limit:
            findings.append(
                fail(
                    check,
                    f"tokens may live {format_duration(ttl)}; {cloud.title} refuses over"
                    f" {format_duration(limit)}",
                    cloud,
                )
            )
        elif cloud is Cloud.GCP and ttl > GCP_RECOMMENDED_TOKEN_LIFETIME:
            findings.append(
                warn(
                    check,
                    f"tokens may live {format_duration(ttl)}; Google recommends under 6h",
                    cloud,
                )
            )
        else:
            findings.append(
                ok(
                    check,
                    f"tokens live at most {format_duration(ttl)} (limit {format_duration(limit)})",
                    cloud,
                )
            )
    return findings


def check_service_keys(service_keys: list[dict[str, Any]], jwks: Any) -> list[Finding]:
    """Every key keysvc may sign with (active) or soon will (pending) must be public already."""
    published = {k.get("kid") for k in jwks.get("keys", []) if isinstance(k, dict)}
    missing = [
        f"{k.get('kid')} ({k.get('state')})"
        for k in service_keys
        if k.get("state") in ("active", "pending") and k.get("kid") not in published
    ]
    if missing:
        return [
            fail(
                "keys_published",
                f"keysvc's key(s) {', '.join(missing)} are not in the public JWKS: tokens they"
                " sign will be refused (is a static copy out of date?)",
            )
        ]
    return [ok("keys_published", f"all {len(service_keys)} key(s) of /v1/keys are published")]


async def check_issuer(
    issuer: IssuerURL, client: aiohttp.ClientSession, options: IssuerCheckOptions
) -> list[Finding]:
    findings = check_issuer_url(issuer, options)
    try:
        discovery = await fetch(client, issuer.discovery_url)
    except FetchError as exc:
        return [*findings, fail("discovery", str(exc))]
    discovery_findings, jwks_uri = check_discovery(issuer, discovery, local=options.local)
    findings += discovery_findings
    if jwks_uri is None:
        return findings
    try:
        jwks = await fetch(client, jwks_uri)
    except FetchError as exc:
        return [*findings, fail("jwks", str(exc))]
    problem = _status_problem(jwks)
    if problem:
        return [*findings, fail("jwks", problem)]
    try:
        jwks_document = jwks.json()
    except FetchError as exc:
        return [*findings, fail("jwks", str(exc))]
    findings.append(ok("jwks", f"{jwks_uri} answered 200"))
    findings.append(check_response_time(jwks))
    advertised = discovery.json().get("id_token_signing_alg_values_supported")
    findings += check_jwks_document(jwks_document, options, advertised)
    findings += check_caching(jwks.headers, options)
    findings += check_token_lifetime(options)
    if options.service_keys is not None and isinstance(jwks_document, dict):
        findings += check_service_keys(options.service_keys, jwks_document)
    return findings
