"""docs/openapi.yaml: a valid OpenAPI 3.1 document, served as GET /openapi.json, naming every
route the service registers, and matched by the service's replies (tests/openapi.py checks
every reply of the in-process service in every test; here each operation and status once)."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

from openapi_spec_validator import validate

from keysvc.app import create_app
from tests.conftest import file_config
from tests.fakes.otfd import FakeOtfd
from tests.openapi import CONFORMANCE, ROOT, OpenAPI, load_document
from tests.otf.conftest import keysvc_for
from tests.service import RUN, start_service

DOCUMENT = load_document()


def test_the_document_is_valid_openapi_3_1() -> None:
    assert DOCUMENT["openapi"].startswith("3.1.")
    validate(DOCUMENT)


def test_the_packaged_json_is_the_yaml(tmp_path: Path) -> None:
    """keysvc/openapi.json is written by `make openapi` (scripts/build-openapi)."""
    packaged = json.loads((ROOT / "keysvc" / "openapi.json").read_text())
    assert packaged == DOCUMENT, "docs/openapi.yaml changed: run `make openapi`"


async def test_get_openapi_json_serves_the_document(key_dir: Path) -> None:
    async with start_service(file_config(key_dir)) as svc:
        status, headers, body = await svc.request("GET", "/openapi.json", token="")
        assert status == 200 and headers["Content-Type"].startswith("application/json")
        assert body == DOCUMENT


def registered_operations(app: Any) -> set[tuple[str, str]]:
    """(METHOD, path) of every route but the catch-alls: `*` (405 for other methods, 404 for
    unknown paths) and the HEAD that each GET gets."""
    found = set()
    for resource in app.router.resources():
        info = resource.get_info()
        path = info.get("path") or info.get("formatter")
        if path == "/{path}":
            continue
        for route in resource:
            if route.method not in ("*", "HEAD"):
                found.add((route.method, path))
    return found


async def test_every_route_is_documented_and_every_operation_is_routed(
    otfd: FakeOtfd, key_dir: Path
) -> None:
    async with keysvc_for(otfd.url, key_dir) as svc:  # with [otf]: every route there is
        app = create_app(svc.service)
    registered = registered_operations(app)
    assert ("POST", "/otfapi/jobs/{job_id}/dynamic-credentials") in registered
    assert registered == OpenAPI(DOCUMENT).operations()


def test_the_conformance_check_catches_replies_that_break_the_document() -> None:
    openapi = OpenAPI(DOCUMENT)
    error = json.dumps({"error": {"code": "unauthorized", "message": "m"}}).encode()
    json_type = {"Content-Type": "application/json"}
    good = {"token": "a.b.c", "kid": "k" * 43, "alg": "ES256", "expires_at": "2030-01-01T00:00:00Z"}
    assert openapi.problems("POST", "/v1/tokens", 200, json_type, json.dumps(good).encode()) == []
    cases: list[tuple[Any, ...]] = [
        ("POST", "/v1/tokens", 200, json_type, json.dumps({**good, "alg": "HS256"}).encode()),
        ("POST", "/v1/tokens", 200, json_type, json.dumps({**good, "extra": 1}).encode()),
        ("POST", "/v1/tokens", 200, json_type, json.dumps({**good, "expires_at": "soon"}).encode()),
        ("POST", "/v1/tokens", 200, {"Content-Type": "text/plain"}, b"x"),
        ("POST", "/v1/tokens", 401, json_type, error),  # no WWW-Authenticate
        ("POST", "/v1/tokens", 418, json_type, error),  # an undocumented status
        ("POST", "/v1/tokens", 400, json_type, b'{"error": "flat"}'),
        ("GET", "/v1/tokens", 200, json_type, error),  # an undocumented method
        ("GET", "/nowhere", 200, json_type, error),
        ("GET", "/.well-known/jwks", 200, json_type, b'{"keys": [{"kty": "RSA", "d": "x"}]}'),
        ("GET", "/.well-known/jwks", 304, {"ETag": '"e"'}, None),  # no Cache-Control
        ("GET", "/readyz", 503, json_type, error),  # no Retry-After
        ("POST", "/otfapi/jobs/j/dynamic-credentials", 200, {"Content-Type": "text/plain"}, b"x"),
        ("POST", "/otfapi/jobs/j/dynamic-credentials", 403, json_type, error),
    ]
    for case in cases:
        assert openapi.problems(*case), case


def post_raw(body: bytes, content_type: str = "application/json") -> dict[str, Any]:
    return {"data": body, "headers": {"Content-Type": content_type}}


async def test_each_operation_and_status_matches_the_document(
    otfd: FakeOtfd, key_dir: Path, tmp_path: Path
) -> None:
    """One request for each documented reply the suite can provoke in-process; the autouse
    fixture fails this test if any reply breaks the document."""
    before = CONFORMANCE.checked
    async with keysvc_for(otfd.url, key_dir) as svc:
        etag = (await svc.request("GET", "/.well-known/jwks"))[1]["ETag"]
        requests: list[tuple[str, str, int, dict[str, Any]]] = [
            ("GET", "/.well-known/openid-configuration", 200, {}),
            ("GET", "/.well-known/jwks", 304, {"headers": {"If-None-Match": etag}}),
            ("HEAD", "/.well-known/jwks", 200, {}),
            ("POST", "/v1/tokens", 200, {"json": RUN}),
            ("POST", "/v1/tokens", 400, {"json": {**RUN, "workspace": "a:b"}}),
            ("POST", "/v1/tokens", 401, {"json": RUN, "token": "wrong"}),
            ("POST", "/v1/tokens", 413, post_raw(b" " * 70000)),
            ("POST", "/v1/tokens", 415, post_raw(b"{}", "text/plain")),
            ("POST", "/v1/sign", 200, {"json": {"claims": {"sub": "s"}}}),
            ("POST", "/v1/sign", 400, {"json": {"claims": {"ISS": "x"}}}),
            ("GET", "/v1/keys", 200, {}),
            ("DELETE", "/v1/keys", 405, {}),
            ("GET", "/healthz", 200, {}),
            ("GET", "/readyz", 200, {}),
            ("GET", "/metrics", 200, {}),
            ("GET", "/openapi.json", 200, {}),
            ("GET", "/nowhere", 404, {}),
            ("POST", "/otfapi/jobs/job-x/dynamic-credentials", 401, {"json": {"audience": "a"}}),
        ]
        for method, path, expected, kwargs in requests:
            status, _, body = await svc.request(method, path, **kwargs)
            assert status == expected, (method, path, body)
        job, token = otfd.running_job()
        status, _, body = await svc.request(
            "POST", f"/otfapi/jobs/{job.id}/dynamic-credentials", token=token,
            **post_raw(b'{"audience": "aws.workload.identity"}', "application/vnd.api+json"),
        )
        assert status == 200, body
    empty = tmp_path / "empty"
    empty.mkdir()
    async with start_service(file_config(empty)) as svc:  # no key yet: the 503s
        assert (await svc.request("GET", "/readyz"))[0] == 503
        assert (await svc.request("POST", "/v1/tokens", json=RUN))[0] == 503
    reader = {"name": "reader", "token_sha256": hashlib.sha256(b"reader").hexdigest(),
              "scopes": ["keys:read"]}
    async with start_service({**file_config(key_dir), "clients": [reader]}) as svc:
        status, _, _ = await svc.request("POST", "/v1/sign", token="reader", json={"claims": {}})
        assert status == 403
    assert CONFORMANCE.checked - before >= len(requests) + 4


def test_the_documented_readyz_problems_are_the_rings() -> None:
    from keysvc.keyring import PROBLEMS

    readyz = DOCUMENT["paths"]["/readyz"]["get"]["responses"]["200"]
    problem = readyz["content"]["application/json"]["schema"]["properties"]["problems"]["items"]
    assert problem["properties"]["problem"]["enum"] == list(PROBLEMS)
