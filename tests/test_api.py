"""The HTTP API through the real service, every token verified with PyJWT against the JWKS the
service served."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import json
import logging
import uuid
from pathlib import Path
from urllib.parse import urlsplit

import aiohttp
import jwt
import pytest
from prometheus_client import REGISTRY

from keysvc.exact_json import TOO_PRECISE as _TOO_PRECISE
from tests.conftest import file_config, write_key
from tests.service import RUN, start_service
from tests.verification import verify_once

TOO_PRECISE = _TOO_PRECISE.problem

TERRAFORM_CLAIMS = {
    "terraform_organization_name": "acme",
    "terraform_workspace_name": "networking",
    "terraform_workspace_id": RUN["workspace_id"],
    "terraform_full_workspace": "organization:acme:workspace:networking",
    "terraform_run_id": RUN["run_id"],
    "terraform_run_phase": "plan",
}


async def test_token_has_otfd_claims_and_verifies(key_dir: Path) -> None:
    async with start_service(file_config(key_dir)) as svc:
        reply = await svc.issue()
        assert set(reply) == {"token", "kid", "alg", "expires_at"}
        claims = await verify_once(svc.url, reply["token"], RUN["audience"])
        assert claims["sub"] == "organization:acme:workspace:networking:run_phase:plan"
        assert claims["aud"] == "aws.workload.identity"  # a string, not a list
        assert claims["iss"] == svc.url
        assert claims["exp"] - claims["iat"] == 3600 and claims["nbf"] == claims["iat"]
        uuid.UUID(claims["jti"])
        assert {k: claims[k] for k in TERRAFORM_CLAIMS} == TERRAFORM_CLAIMS
        assert set(claims) == {"iss", "sub", "aud", "iat", "nbf", "exp", "jti", *TERRAFORM_CLAIMS}
        import jwt

        assert jwt.get_unverified_header(reply["token"]) == {
            "alg": "ES256", "kid": reply["kid"], "typ": "JWT"
        }


async def test_ps256_and_subject_format(tmp_path: Path) -> None:
    directory = tmp_path / "keys"
    directory.mkdir()
    write_key(directory, "rsa-2048")
    config = {
        **file_config(directory),
        "tokens": {"algorithm": "PS256", "subject_format": "org:{organization}:ws:{workspace_id}"},
    }
    async with start_service(config) as svc:
        reply = await svc.issue(run_phase="apply", ttl_seconds=120)
        assert reply["alg"] == "PS256"
        claims = await verify_once(svc.url, reply["token"], RUN["audience"])
        assert claims["sub"] == f"org:acme:ws:{RUN['workspace_id']}"
        assert claims["exp"] - claims["iat"] == 120


async def test_a_whole_ttl_written_as_a_float_is_accepted(key_dir: Path) -> None:
    """`120.0` is the JSON number `120` (and an integer to JSON Schema, which the OpenAPI
    document uses), as a JavaScript or Python client may write it."""
    async with start_service(file_config(key_dir)) as svc:
        for endpoint, body in (("/v1/tokens", {**RUN, "ttl_seconds": 120.0}),
                               ("/v1/sign", {"claims": {"sub": "s", "aud": "a"}, "ttl_seconds": 120.0})):
            status, _, reply = await svc.request("POST", endpoint, json=body)
            assert status == 200, reply
            claims = await verify_once(svc.url, reply["token"], body.get("audience", "a"))
            assert claims["exp"] - claims["iat"] == 120 and isinstance(claims["exp"], int)


async def test_azure_audience_needs_rs256(key_dir: Path) -> None:
    async with start_service(file_config(key_dir)) as svc:  # an EC P-256 key: ES256
        status, _, body = await svc.request(
            "POST", "/v1/tokens", json={**RUN, "audience": "api://AzureADTokenExchange"}
        )
        assert status == 400 and body["error"]["code"] == "algorithm_not_accepted"
        assert "RS256" in body["error"]["message"]


async def test_sign_endpoint(key_dir: Path) -> None:
    async with start_service(file_config(key_dir)) as svc:
        status, _, body = await svc.request(
            "POST", "/v1/sign", json={"claims": {"sub": "svc:x", "aud": "a", "k": [1]}}
        )
        assert status == 200, body
        claims = await verify_once(svc.url, body["token"], "a")
        assert claims["k"] == [1] and claims["iss"] == svc.url
        for reserved in ("iss", "exp", "jti"):
            status, _, body = await svc.request(
                "POST", "/v1/sign", json={"claims": {"sub": "x", reserved: "evil"}}
            )
            assert status == 400 and body["error"]["code"] == "reserved_claim"


async def test_discovery_and_jwks_caching(key_dir: Path) -> None:
    async with start_service(file_config(key_dir)) as svc:
        status, headers, discovery = await svc.request("GET", "/.well-known/openid-configuration")
        assert status == 200
        assert discovery["issuer"] == svc.url
        assert discovery["jwks_uri"] == svc.url + "/.well-known/jwks"
        assert discovery["id_token_signing_alg_values_supported"] == ["ES256"]
        assert discovery["response_types_supported"] == ["id_token"]
        assert discovery["subject_types_supported"] == ["public"]
        assert discovery["scopes_supported"] == ["openid"]
        assert "terraform_run_phase" in discovery["claims_supported"]
        status, headers, jwks = await svc.request("GET", "/.well-known/jwks")
        assert headers["Cache-Control"] == "public, max-age=900"
        (key,) = jwks["keys"]
        assert set(key) == {"kty", "kid", "use", "alg", "crv", "x", "y"}
        status, again, body = await svc.request(
            "GET", "/.well-known/jwks", headers={"If-None-Match": headers["ETag"]}
        )
        assert status == 304 and again["ETag"] == headers["ETag"] and not body
        status, _, _ = await svc.request(
            "GET", "/.well-known/jwks", headers={"If-None-Match": '"other"'}
        )
        assert status == 200
        etag = headers["ETag"]
        for matching in ("*", f'"a", W/{etag}', f' {etag} , "b"'):  # RFC 9110 13.1.2
            status, _, _ = await svc.request(
                "GET", "/.well-known/jwks", headers={"If-None-Match": matching}
            )
            assert status == 304, matching
        status, _, _ = await svc.request(
            "GET", "/.well-known/jwks", headers={"If-None-Match": f'"x{etag[1:]}'}
        )
        assert status == 200  # a tag that merely contains ours is not ours


async def test_bearer_bytes_that_are_not_utf8_get_401(key_dir: Path) -> None:
    """Header bytes are whatever a client sends: a latin-1 token must be refused, not a 500."""
    async with start_service(file_config(key_dir)) as svc:
        parts = urlsplit(svc.url)
        body = json.dumps(RUN).encode()
        reader, writer = await asyncio.open_connection(parts.hostname, parts.port)
        writer.write(
            b"POST /v1/tokens HTTP/1.1\r\nHost: x\r\nConnection: close\r\n"
            b"Authorization: Bearer t\xf6k\xe9n\r\nContent-Type: application/json\r\n"
            b"Content-Length: " + str(len(body)).encode() + b"\r\n\r\n" + body
        )
        reply = await reader.read()
        writer.close()
        head, _, payload = reply.partition(b"\r\n\r\n")
        assert head.startswith(b"HTTP/1.1 401"), head
        assert json.loads(payload)["error"]["code"] == "unauthorized"


async def test_bearer_scheme_is_case_insensitive(key_dir: Path) -> None:
    async with start_service(file_config(key_dir)) as svc:
        for scheme in ("bearer", "BEARER", "Bearer"):
            headers = {"Authorization": f"{scheme} {svc.client_token}"}
            async with svc.session.post(svc.url + "/v1/tokens", json=RUN, headers=headers) as r:
                assert r.status == 200, scheme


async def test_a_body_cut_short_is_a_400_not_an_internal_error(
    key_dir: Path, caplog: pytest.LogCaptureFixture
) -> None:
    def rejected(code: str) -> float:
        return REGISTRY.get_sample_value("keysvc_requests_rejected_total", {"code": code}) or 0.0

    before = {code: rejected(code) for code in ("incomplete_body", "internal_error")}
    async with start_service(file_config(key_dir)) as svc:
        parts = urlsplit(svc.url)
        reader, writer = await asyncio.open_connection(parts.hostname, parts.port)
        writer.write(
            b"POST /v1/tokens HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
            b"Authorization: Bearer " + svc.client_token.encode() + b"\r\n"
            b"Content-Length: 500\r\n\r\n{\"organization\": "
        )
        await writer.drain()
        writer.close()  # gone before the 500 bytes it announced
        await writer.wait_closed()
        for _ in range(500):  # up to 10 s on a loaded machine
            if rejected("incomplete_body") > before["incomplete_body"]:
                break
            await asyncio.sleep(0.02)
        assert rejected("incomplete_body") == before["incomplete_body"] + 1
        assert rejected("internal_error") == before["internal_error"]
        assert not [r for r in caplog.records if r.levelno >= logging.ERROR]


async def test_auth(key_dir: Path, tmp_path: Path) -> None:
    token_file = tmp_path / "reader-token"
    token_file.write_text("reader-secret-token\n")
    token_file.chmod(0o600)
    config = {
        **file_config(key_dir),
        "clients": [
            {"name": "reader", "token_file": str(token_file), "scopes": ["keys:read"]},
            {
                "name": "acme-only",
                "token_sha256": hashlib.sha256(b"acme-token").hexdigest(),
                "scopes": ["tokens:issue", "sign"],
                "organizations": ["acme", "acme-*"],
            },
        ],
    }
    async with start_service(config) as svc:
        for token in ("wrong", ""):
            status, headers, body = await svc.request("POST", "/v1/tokens", token=token, json=RUN)
            assert status == 401 and headers["WWW-Authenticate"].startswith("Bearer")
            assert body["error"]["code"] == "unauthorized"
        async with svc.session.post(svc.url + "/v1/tokens", json=RUN) as response:
            assert response.status == 401
        status, _, body = await svc.request("POST", "/v1/tokens", token="reader-secret-token", json=RUN)
        assert status == 403 and body["error"]["code"] == "forbidden"
        status, _, body = await svc.request("GET", "/v1/keys", token="reader-secret-token")
        assert status == 200 and body["keys"][0]["state"] == "active"
        for org, expected in (("acme", 200), ("acme-dev", 200), ("other", 403), ("acmex", 403)):
            status, _, body = await svc.request(
                "POST", "/v1/tokens", token="acme-token", json={**RUN, "organization": org}
            )
            assert status == expected, (org, body)
        status, _, body = await svc.request("GET", "/v1/keys", token="acme-token")
        assert status == 403
        status, _, body = await svc.request(
            "POST", "/v1/sign", token="acme-token", json={"claims": {"sub": "organization:other"}}
        )
        assert status == 403 and body["error"]["code"] == "organization_forbidden"


BAD_RUNS = [
    ({"workspace": "net:run_phase:apply"}, "invalid_request"),  # would forge another sub
    ({"organization": "acme:workspace:x"}, "invalid_request"),
    ({"organization": "a b"}, "invalid_request"),
    ({"run_id": ""}, "invalid_request"),
    ({"run_phase": "destroy"}, "invalid_request"),
    ({"audience": ""}, "invalid_request"),
    ({"audience": None}, "invalid_request"),
    ({"ttl_seconds": 999999}, "ttl_too_long"),
    ({"ttl_seconds": 0}, "invalid_ttl"),
    ({"ttl_seconds": "60"}, "invalid_request"),
    ({"ttl_seconds": 60.5}, "invalid_request"),
    ({"ttl_seconds": True}, "invalid_request"),
    ({"iss": "https://evil"}, "invalid_request"),
    ({"organization": ["acme"]}, "invalid_request"),
    ({"audience": "   "}, "invalid_request"),
    ({"audience": "a\nb"}, "invalid_request"),
]


@pytest.mark.parametrize(("change", "code"), BAD_RUNS)
async def test_bad_runs_are_400(key_dir: Path, change: dict, code: str) -> None:
    async with start_service(file_config(key_dir)) as svc:
        status, headers, body = await svc.request("POST", "/v1/tokens", json={**RUN, **change})
        assert status == 400, body
        assert headers["Content-Type"].startswith("application/json")
        assert body["error"]["code"] == code and body["error"]["message"]


async def test_refusals_say_what_is_wrong(key_dir: Path) -> None:
    async with start_service(file_config(key_dir)) as svc:
        _, _, body = await svc.request("POST", "/v1/tokens", json={**RUN, "workspace": "a:b"})
        assert body["error"]["message"] == (
            "workspace: must be letters, digits, '.', '_' or '-' (a ':' would forge another sub)"
        )
        _, _, body = await svc.request("POST", "/v1/tokens", json={**RUN, "audience": "x\ty"})
        assert body["error"]["message"] == "audience: must be non-empty printable text"


@pytest.mark.parametrize(
    "claims, where",
    [
        (b'{"n": NaN}', "n is not a finite number"),
        (b'{"n": 1e400}', "n is not a finite number"),
        (b'{"n": -Infinity}', "n is not a finite number"),
        (b'{"n": 36893488147419103232}', "n is an integer beyond 64 bits"),
        (b'{"a": [1, {"b": NaN}]}', "a[1].b is not a finite number"),
        # A double would round these: 0.0, 1.0, 0.1. The token must carry what was sent.
        (b'{"n": 1e-400}', f"n {TOO_PRECISE}"),
        (b'{"n": 1.' + b"0" * 20000 + b'1}', f"n {TOO_PRECISE}"),
        (b'{"a": {"n": 0.1000000000000000000001}}', f"a.n {TOO_PRECISE}"),
        (b'{"n": 1' + b"0" * 20000 + b"}", "n is an integer beyond 64 bits"),
        (b'{"n": -9223372036854775809}', "n is an integer beyond 64 bits"),
        (b'{"s": "\\ud800"}', "s holds text that is not Unicode (a lone surrogate)"),
        (b'{"\\udfff": 1}', "a claim name holds text that is not Unicode (a lone surrogate)"),
        (b'{"d": ' + b"[" * 40 + b"]" * 40 + b"}", "d" + "[0]" * 32 + " nests deeper than 32 levels"),
    ],
)
async def test_sign_refuses_claims_json_cannot_carry(
    key_dir: Path, claims: bytes, where: str
) -> None:
    """Written into a token they would come out as null, Infinity or a rounded number."""
    async with start_service(file_config(key_dir)) as svc:
        status, _, body = await svc.request(
            "POST",
            "/v1/sign",
            data=b'{"claims": ' + claims + b"}",
            headers={"Content-Type": "application/json"},
        )
        assert status == 400 and body["error"]["code"] == "invalid_request"
        assert body["error"]["message"] == f"claims: {where}"
        status, _, body = await svc.request(
            "POST",
            "/v1/sign",
            data=b'{"claims": {"sub": "s", "aud": "a", "big": 18446744073709551615, "small":'
            b' -9223372036854775808, "f": 0.5, "tenth": 0.1, "e": 1E5, "trail": 1.50,'
            b' "tiny": 5e-324, "z": -0.0}}',
            headers={"Content-Type": "application/json"},
        )
        assert status == 200, body
        out = await verify_once(svc.url, body["token"], "a")
        assert (out["big"], out["small"], out["f"]) == (2**64 - 1, -(2**63), 0.5)
        assert (out["tenth"], out["e"], out["trail"], out["tiny"]) == (0.1, 1e5, 1.5, 5e-324)


@pytest.mark.parametrize("name", ["ISS", "Iss", "Exp", "NBF", "iAt", "JTI"])
async def test_sign_refuses_reserved_claims_in_any_letter_case(key_dir: Path, name: str) -> None:
    """Go's encoding/json matches object keys to struct fields without regard to case: a Go
    verifier would read `ISS` as the token's issuer."""
    async with start_service(file_config(key_dir)) as svc:
        status, _, body = await svc.request(
            "POST", "/v1/sign", json={"claims": {"sub": "s", name: "https://evil"}}
        )
        assert status == 400 and body["error"]["code"] == "reserved_claim", body


async def test_sign_refuses_claims_that_read_differently_in_different_verifiers(
    key_dir: Path,
) -> None:
    async with start_service(file_config(key_dir)) as svc:
        for raw, code in (
            (b'{"claims": {"sub": "a", "SUB": "organization:victim"}}', "ambiguous_claims"),
            (b'{"claims": {"sub": "a", "sub": "b"}}', "invalid_request"),  # first or last?
            (b'{"claims": {"x": {"k": 1, "k": 2}}}', "invalid_request"),
            (b'{"claims": {}, "claims": {"iss": "x"}}', "invalid_request"),
            ('{"claims": {"sub": "a"}}'.encode("utf-16"), "malformed_json"),
            (b'{"claims": {"sub": "a"}} {}', "malformed_json"),
        ):
            status, _, body = await svc.request(
                "POST", "/v1/sign", data=raw, headers={"Content-Type": "application/json"}
            )
            assert (status, body["error"]["code"]) == (400, code), (raw, body)


async def test_malformed_requests(key_dir: Path) -> None:
    async with start_service(file_config(key_dir)) as svc:
        missing = {k: v for k, v in RUN.items() if k != "workspace_id"}
        cases = [
            ({"data": b"{not json", "headers": {"Content-Type": "application/json"}}, 400, "malformed_json"),
            ({"data": b"[1,2]", "headers": {"Content-Type": "application/json"}}, 400, "invalid_request"),
            ({"json": missing}, 400, "invalid_request"),
            ({"data": b"organization=acme", "headers": {"Content-Type": "application/x-www-form-urlencoded"}}, 415, "unsupported_media_type"),
            ({"data": b"{" + b" " * (4 * 1024 * 1024) + b"}", "headers": {"Content-Type": "application/json"}}, 413, "body_too_large"),
        ]
        for kwargs, status_expected, code in cases:
            status, _, body = await svc.request("POST", "/v1/tokens", **kwargs)
            assert (status, body["error"]["code"]) == (status_expected, code), body
        status, _, body = await svc.request("GET", "/v1/tokens")
        assert status == 405 and body["error"]["code"] == "method_not_allowed"
        status, _, body = await svc.request("GET", "/nope")
        assert status == 404 and body["error"]["code"] == "not_found"


@pytest.mark.parametrize(
    ("body", "message"),
    [
        # every missing field at once, not only the first
        ({"organization": "acme", "run_phase": "plan"},
         "missing required fields: workspace, workspace_id, run_id, audience"),
        ({**RUN, "workspace_id": None, "ttl_seconds": "60", "colour": "red"},
         "workspace_id: must be a string; ttl_seconds: must be a whole number;"
         " colour: is not a field of this request"),
        ({**RUN, "run_phase": "destroy"}, "run_phase: must be 'plan' or 'apply'"),
        ({k: v for k, v in RUN.items() if k != "run_id"} | {"organization": "a:b"},
         "missing required field: run_id; organization: must be letters, digits"),
        ({**RUN, "workspace": ""}, "workspace: must not be empty"),
    ],
)
async def test_request_errors_name_every_field_in_plain_words(
    key_dir: Path, body: dict, message: str
) -> None:
    async with start_service(file_config(key_dir)) as svc:
        status, _, reply = await svc.request("POST", "/v1/tokens", json=body)
    assert status == 400 and reply["error"]["code"] == "invalid_request"
    assert reply["error"]["message"].startswith(message), reply
    for pydantic_words in ("Field required", "Extra inputs", "Input should", "valid integer"):
        assert pydantic_words not in reply["error"]["message"]


async def test_body_limit_without_content_length(key_dir: Path) -> None:
    async def chunks():  # type: ignore[no-untyped-def]
        for _ in range(100):
            yield b" " * 4096

    async with start_service(file_config(key_dir)) as svc:
        status, _, body = await svc.request(
            "POST", "/v1/tokens", data=chunks(), headers={"Content-Type": "application/json"}
        )
        assert status == 413 and body["error"]["code"] == "body_too_large"


async def test_health_readiness_metrics(key_dir: Path, tmp_path: Path) -> None:
    async with start_service(file_config(key_dir)) as svc:
        assert (await svc.request("GET", "/healthz"))[0] == 200
        status, _, body = await svc.request("GET", "/readyz")
        assert status == 200 and body["signing_kid"] == (await svc.kids())[0]
        await svc.issue()
        status, headers, text = await svc.request("GET", "/metrics")
        assert status == 200 and headers["Content-Type"].startswith("text/plain")
        assert 'keysvc_tokens_issued_total{backend="local",endpoint="tokens"' in text
        assert "keysvc_sign_seconds_bucket" in text and 'keysvc_ring_keys{state="active"}' in text
    empty = tmp_path / "empty"
    empty.mkdir()
    async with start_service(file_config(empty)) as svc:
        status, headers, body = await svc.request("GET", "/readyz")
        assert status == 503 and body["error"]["code"] == "not_ready"
        status, headers, body = await svc.request("POST", "/v1/tokens", json=RUN)
        # The backend answers but holds no key: its own code, not a backend outage.
        assert status == 503 and headers["Retry-After"] and body["error"]["code"] == "no_signing_key"
        assert "no key can sign" in body["error"]["message"]
        assert "unavailable" not in body["error"]["message"]
        assert (await svc.jwks()) == {"keys": []}


async def test_no_secrets_in_replies_or_logs(key_dir: Path, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    key_text = next(key_dir.iterdir()).read_text()
    secret_body = key_text.split("-----")[2].strip().splitlines()[1]
    async with start_service(file_config(key_dir)) as svc:
        replies = [json.dumps(await svc.issue())]
        for method, path in (("GET", "/.well-known/jwks"), ("GET", "/v1/keys"), ("GET", "/metrics"),
                             ("GET", "/.well-known/openid-configuration"), ("GET", "/readyz")):
            replies.append(json.dumps((await svc.request(method, path))[2]))
        replies.append(json.dumps((await svc.request("POST", "/v1/tokens", token="bad", json=RUN))[2]))
        token = svc.client_token
    audit = [r for r in caplog.records if r.name == "keysvc.audit"]
    assert len(audit) == 1 and audit[0].__dict__["client"] == "test" and audit[0].__dict__["jti"]
    everything = "\n".join(replies) + "\n".join(
        json.dumps(r.__dict__, default=str) for r in caplog.records
    )
    assert secret_body not in everything and "PRIVATE KEY" not in everything
    assert token not in everything and "bad" not in "".join(r.getMessage() for r in caplog.records)
    assert '"d"' not in "".join(replies)


async def test_backend_failure_is_503_and_jwks_survives(tmp_path: Path) -> None:
    directory = tmp_path / "keys"
    directory.mkdir()
    write_key(directory, "ec-p256")
    async with start_service(file_config(directory), refresh_loop=False) as svc:
        kids = await svc.kids()
        await svc.issue()
        # The key directory disappears (a bad mount): a refresh fails, the last good ring stays.
        directory.rename(tmp_path / "gone")
        errors = await svc.ring.refresh()
        assert "local" in errors
        assert await svc.kids() == kids
        await svc.issue()


async def test_unsupported_content_never_500(key_dir: Path) -> None:
    async with start_service(file_config(key_dir)) as svc:
        for data in (b"\xff\xfe", b"null", b'{"claims": 5}', b"1e999999"):
            status, _, body = await svc.request(
                "POST", "/v1/sign", data=data, headers={"Content-Type": "application/json"}
            )
            assert status == 400, (data, body)
        async with aiohttp.ClientSession() as session:
            async with session.post(
                svc.url + "/v1/tokens", headers={**svc.auth(), "Content-Type": "application/json; charset=utf-8"},
                data=json.dumps(RUN),
            ) as response:
                assert response.status == 200


ENDPOINT_SCOPES = {
    "tokens:issue": ("POST", "/v1/tokens", {"json": RUN}),
    "sign": ("POST", "/v1/sign", {"json": {"claims": {"sub": "svc:x", "aud": "a"}}}),
    "keys:read": ("GET", "/v1/keys", {}),
}


async def test_each_endpoint_needs_its_own_scope(key_dir: Path) -> None:
    """A client holding only `tokens:issue` must not sign arbitrary claims, and so on for every
    scope: each endpoint answers 200 to a client holding just its scope, and 403 to one holding
    every scope but its own."""
    from keysvc.config import ALL_SCOPES

    clients = []
    for scope in ALL_SCOPES:
        for name, scopes in ((f"only {scope}", [scope]),
                             (f"all but {scope}", [s for s in ALL_SCOPES if s != scope])):
            digest = hashlib.sha256(name.encode()).hexdigest()
            clients.append({"name": name, "token_sha256": digest, "scopes": scopes})
    async with start_service({**file_config(key_dir), "clients": clients}) as svc:
        for scope, (method, path, kwargs) in ENDPOINT_SCOPES.items():
            status, _, body = await svc.request(method, path, token=f"only {scope}", **kwargs)
            assert status == 200, (scope, body)
            for other in ALL_SCOPES:
                if other != scope:
                    status, _, body = await svc.request(method, path, token=f"only {other}", **kwargs)
                    assert (status, body["error"]["code"]) == (403, "forbidden"), (path, other)
            status, _, body = await svc.request(method, path, token=f"all but {scope}", **kwargs)
            assert (status, body["error"]["code"]) == (403, "forbidden"), (path, body)
            assert repr(scope) in body["error"]["message"]


async def test_organization_limits_are_case_sensitive(key_dir: Path) -> None:
    """OTF organization names are case-sensitive: a client limited to `acme` is not `ACME`'s.
    Only the part a `*` stands for may be anything."""
    client = {
        "name": "acme-only",
        "token_sha256": hashlib.sha256(b"acme-token").hexdigest(),
        "scopes": ["tokens:issue"],
        "organizations": ["acme", "acme-*"],
    }
    async with start_service({**file_config(key_dir), "clients": [client]}) as svc:
        for org, expected in (("ACME", 403), ("Acme", 403), ("ACME-dev", 403), ("acme-DEV", 200)):
            status, _, body = await svc.request(
                "POST", "/v1/tokens", token="acme-token", json={**RUN, "organization": org}
            )
            assert status == expected, (org, body)
            if expected == 403:
                assert body["error"]["code"] == "organization_forbidden"


async def test_the_bearer_scheme_is_required(key_dir: Path) -> None:
    async with start_service(file_config(key_dir)) as svc:
        token = svc.client_token
        basic = base64.b64encode(f"test:{token}".encode()).decode()
        for header in (f"Basic {token}", f"Basic {basic}", token, f"Token {token}"):
            async with svc.session.post(
                svc.url + "/v1/tokens", json=RUN, headers={"Authorization": header}
            ) as response:
                assert response.status == 401, header.split()[0]
                assert response.headers["WWW-Authenticate"].startswith("Bearer")
                assert (await response.json())["error"]["code"] == "unauthorized"


async def test_ttl_seconds_up_to_max_ttl_is_accepted(key_dir: Path) -> None:
    config = {**file_config(key_dir), "tokens": {"default_ttl": "1m", "max_ttl": "10m"}}
    requests = {
        "/v1/tokens": lambda ttl: {**RUN, "ttl_seconds": ttl},
        "/v1/sign": lambda ttl: {"claims": {"sub": "s", "aud": RUN["audience"]}, "ttl_seconds": ttl},
    }
    async with start_service(config) as svc:
        for path, body_for in requests.items():
            for ttl in (600, 1):  # max_ttl itself, and the shortest
                status, _, body = await svc.request("POST", path, json=body_for(ttl))
                assert status == 200, (path, ttl, body)
                if ttl == 600:  # verified; a 1 s token may have expired before it is checked
                    await verify_once(svc.url, body["token"], RUN["audience"])
                claims = jwt.decode(body["token"], options={"verify_signature": False})
                assert claims["exp"] - claims["iat"] == ttl, path
            status, _, body = await svc.request("POST", path, json=body_for(601))
            assert (status, body["error"]["code"]) == (400, "ttl_too_long"), path
            assert body["error"]["message"] == "ttl_seconds 601 exceeds max_ttl (600s)"
