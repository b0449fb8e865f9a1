"""`keysvc token issue|verify`: mint a token locally (for testing) or check one as a cloud would."""

from __future__ import annotations

import asyncio
import http.client
import json
import sys
import time
import urllib.error
import urllib.request
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import click
from pydantic import ValidationError

from keysvc.cli.common import CLIError, config_option, echo_json, json_option
from keysvc.cli.loading import load, otfd_options
from keysvc.run_identity import PHASES
from keysvc.service import local_ring


@click.group()
def token() -> None:
    """Issue a token locally, or verify one against an issuer's published keys."""


@token.command()
@config_option
@otfd_options
@click.option("--organization", required=True)
@click.option("--workspace", required=True)
@click.option("--workspace-id", required=True)
@click.option("--run-id", required=True)
@click.option("--phase", "run_phase", type=click.Choice(PHASES), required=True)
@click.option("--audience", required=True)
@click.option("--ttl-seconds", type=int)
@json_option
def issue(
    config_path: Path | None,
    otfd_flags: dict[str, Any],
    as_json: bool,
    **run: Any,
) -> None:
    """Sign a run token with the local keys (for testing trust setups, not for runs)."""
    from keysvc.tokens import RequestError, TokenIssuer, TokenRequest

    config, _ = load(config_path, **otfd_flags)
    try:
        context = TokenRequest(**run)
    except ValidationError as exc:
        from keysvc.tokens import PATTERN_MESSAGES
        from keysvc.validation_errors import location, problem

        err = exc.errors(include_url=False)[0]
        flag = "--" + location(err["loc"]).replace("_", "-")
        raise CLIError(f"{flag}: {problem(err, patterns=PATTERN_MESSAGES)}") from None

    async def run_issue() -> dict[str, Any]:
        async with local_ring(config) as ring:
            issued = await TokenIssuer(ring, config.issuer, config.tokens).issue_for_run(context)
            return issued.reply()

    try:
        reply = asyncio.run(run_issue())
    except RequestError as exc:
        raise CLIError(str(exc)) from None
    if as_json:
        echo_json(reply)
    else:
        click.echo(reply["token"])


def _http_url(url: str, what: str) -> str:
    """`url` if it is an http(s) URL with a host and a valid port, else a one-line error (which
    does not repeat the URL: it may hold a password)."""
    try:
        parts = urlsplit(url)
        parts.port  # noqa: B018 - raises ValueError for a port that is not a number in range
    except ValueError:
        raise CLIError(f"{what} is not a valid URL (bad port or host)") from None
    if parts.scheme not in ("http", "https") or not parts.hostname:
        scheme = f" (not {parts.scheme}:)" if parts.scheme.isalnum() else ""
        raise CLIError(f"{what} must be an http(s) URL with a host{scheme}")
    return url


class _HttpOnlyRedirects(urllib.request.HTTPRedirectHandler):
    """Follow a redirect only to another http(s) URL (urllib would also follow one to ftp)."""

    def redirect_request(self, req, fp, code, msg, headers, newurl):  # type: ignore[no-untyped-def]
        _http_url(newurl, f"{req.full_url} redirects to")
        return super().redirect_request(req, fp, code, msg, headers, newurl)


def _fetch_json(url: str, timeout: float) -> Any:
    _http_url(url, "URL")
    opener = urllib.request.build_opener(_HttpOnlyRedirects)
    try:
        with opener.open(url, timeout=timeout) as response:
            return json.load(response)
    except urllib.error.HTTPError as exc:
        raise CLIError(f"{url}: HTTP {exc.code}") from None
    except (urllib.error.URLError, OSError) as exc:
        raise CLIError(f"{url}: {getattr(exc, 'reason', exc)}") from None
    except http.client.HTTPException as exc:  # e.g. a body cut short
        raise CLIError(f"{url}: {type(exc).__name__}") from None
    except ValueError:
        raise CLIError(f"{url}: not JSON") from None


@token.command()
@click.argument("token_value", metavar="TOKEN", required=False)
@click.option("--issuer", required=True, help="Issuer URL; discovery is fetched from it.")
@click.option("--audience", help="Require this audience.")
@click.option("--timeout", type=float, default=10.0, show_default=True)
@json_option
def verify(token_value: str | None, issuer: str, audience: str | None, timeout: float,
           as_json: bool) -> None:
    """Verify TOKEN (or stdin) as a cloud does: discovery → jwks_uri → signature and claims."""
    from jwcrypto import jwk
    from jwcrypto.common import JWException

    _http_url(issuer, "--issuer")
    raw = (token_value or sys.stdin.read()).strip()
    if not raw:
        raise CLIError("no token given")
    discovery_url = issuer.rstrip("/") + "/.well-known/openid-configuration"
    discovery = _fetch_json(discovery_url, timeout)
    if not isinstance(discovery, dict):
        raise CLIError(f"{discovery_url}: the discovery document is not a JSON object")
    if discovery.get("issuer") != issuer.rstrip("/"):
        raise CLIError(f"discovery issuer {discovery.get('issuer')!r} does not equal {issuer!r}")
    jwks_uri = discovery.get("jwks_uri")
    if not isinstance(jwks_uri, str):
        raise CLIError("discovery document has no jwks_uri")
    _http_url(jwks_uri, "discovery jwks_uri")
    try:
        keyset = jwk.JWKSet.from_json(json.dumps(_fetch_json(jwks_uri, timeout)))
    except JWException:
        raise CLIError(f"{jwks_uri}: not a valid JWKS") from None
    header, claims = _verified(raw, keyset, jwks_uri, discovery["issuer"], audience)
    result = {"valid": True, "header": header,
              "claims": claims, "expires_in": int(claims.get("exp", 0) - time.time())}
    if as_json:
        echo_json(result)
    else:
        click.echo(f"valid token, kid {result['header'].get('kid')}, expires in {result['expires_in']}s")
        for name, value in claims.items():
            click.echo(f"  {name}: {value}")


VERIFY_ALGORITHMS = ("RS256", "PS256", "ES256", "ES384", "EdDSA")
LEEWAY = 60
"""Seconds of clock skew allowed for exp and nbf, as jwcrypto and the clouds' verifiers allow."""


def _refused(why: str) -> CLIError:
    return CLIError(f"token does not verify: {why}")


def _when(timestamp: float) -> str:
    moment = datetime.fromtimestamp(timestamp, UTC).isoformat().replace("+00:00", "Z")
    delta = int(time.time() - timestamp)
    return f"{moment} ({abs(delta)}s {'ago' if delta >= 0 else 'from now'})"


def _verified(
    raw: str, keyset: Any, jwks_uri: str, issuer: str, audience: str | None
) -> tuple[dict[str, Any], dict[str, Any]]:
    """(header, claims) of a token that verifies as a cloud verifies it; otherwise a CLIError
    that says what was expected and what the token has (the kid and jwks_uri for its key)."""
    from jwcrypto import jws
    from jwcrypto.common import JWException

    token = jws.JWS()
    try:
        token.deserialize(raw)
        header = token.jose_header
    except (JWException, ValueError, TypeError):
        raise _refused("it is not a compact JWS (header.payload.signature)") from None
    if not isinstance(header, dict):
        raise _refused("its header is not a JSON object")
    kid, alg = header.get("kid"), header.get("alg")
    published = sorted(str(k.get("kid")) for k in keyset["keys"])
    has = f"it has {', '.join(published)}" if published else "it has no keys"
    if not isinstance(kid, str):
        raise _refused(f"its header names no kid, and {jwks_uri} holds several keys ({has})")
    key = keyset.get_key(kid)
    if key is None:
        raise _refused(
            f"its kid {kid} is not in the JWKS at {jwks_uri} ({has}): the key was revoked or"
            " has left the JWKS, or the token is from another issuer"
        )
    if alg not in VERIFY_ALGORITHMS:
        raise _refused(f"its alg {alg!r} is not one of {', '.join(VERIFY_ALGORITHMS)}")
    try:
        token.verify(key, alg=alg)
    except (JWException, ValueError, TypeError):
        raise _refused(f"its {alg} signature does not verify with key {kid} from {jwks_uri}") from None
    try:
        claims = json.loads(token.payload)
    except ValueError:
        raise _refused("its payload is not JSON") from None
    if not isinstance(claims, dict):
        raise _refused("its payload is not a JSON object")
    _check_claims(claims, issuer, audience)
    return header, claims


def _check_claims(claims: dict[str, Any], issuer: str, audience: str | None) -> None:
    if claims.get("iss") != issuer:
        raise _refused(f"issuer: expected {issuer!r}, the token has {claims.get('iss')!r}")
    if audience is not None:
        aud = claims.get("aud")
        audiences = aud if isinstance(aud, list) else [aud]
        if audience not in audiences:
            raise _refused(f"audience: expected {audience!r}, the token has {aud!r}")
    now = time.time()
    for name in ("exp", "iat"):
        if not isinstance(claims.get(name), (int, float)) or isinstance(claims.get(name), bool):
            raise _refused(f"it has no numeric {name} claim")
    if claims["exp"] + LEEWAY < now:
        raise _refused(f"it expired at {_when(claims['exp'])}")
    nbf = claims.get("nbf")
    if isinstance(nbf, (int, float)) and not isinstance(nbf, bool) and nbf - LEEWAY > now:
        raise _refused(f"it is not valid before {_when(nbf)}")
