"""`keysvc token issue|verify`: mint a token locally (for testing) or check one as a cloud would."""

from __future__ import annotations

import asyncio
import http.client
import json
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import click
from pydantic import ValidationError

from keysvc.cli.common import CLIError, config_option, echo_json, json_option
from keysvc.cli.loading import load, otfd_options
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
@click.option("--phase", "run_phase", type=click.Choice(["plan", "apply"]), required=True)
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
    from keysvc.tokens import RequestError, RunContext, TokenIssuer

    config, _ = load(config_path, **otfd_flags)
    try:
        context = RunContext(**run)
    except ValidationError as exc:
        err = exc.errors(include_url=False)[0]
        field = ".".join(str(p) for p in err["loc"])
        raise CLIError(f"--{field.replace('_', '-')}: {err['msg'].removeprefix('Value error, ')}") from None

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
    from jwcrypto import jwk, jwt
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
    checks: dict[str, Any] = {"iss": discovery["issuer"], "exp": None, "iat": None}
    if audience:
        checks["aud"] = audience
    try:
        parsed = jwt.JWT(jwt=raw, key=keyset, check_claims=checks,
                         expected_type="JWS", algs=["RS256", "PS256", "ES256", "ES384", "EdDSA"])
    except (JWException, ValueError) as exc:
        raise CLIError(f"token does not verify: {exc}") from None
    claims = json.loads(parsed.claims)
    result = {"valid": True, "header": json.loads(parsed.token.objects["protected"]),
              "claims": claims, "expires_in": int(claims.get("exp", 0) - time.time())}
    if as_json:
        echo_json(result)
    else:
        click.echo(f"valid token, kid {result['header'].get('kid')}, expires in {result['expires_in']}s")
        for name, value in claims.items():
            click.echo(f"  {name}: {value}")
