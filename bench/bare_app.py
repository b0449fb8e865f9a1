"""The framework ceiling: a bare aiohttp app with keysvc's process set-up and nothing else.

`POST /v1/tokens` reads and parses the JSON body and answers a token-shaped JSON reply without
signing; `GET /.well-known/jwks` answers the same JWKS bytes and cache headers keysvc serves.
It runs the way `keysvc serve` runs (uvloop when installed, access log off, backlog 1024; with
`--processes N` > 1, N spawned processes sharing the port with SO_REUSEPORT under a parent that
forwards SIGTERM), so the only difference left is keysvc's own work per request.

With `--sign-key PEM --signing-input FILE` it is the signing floor instead: the same app, and
each POST signs that real token's signing input with the key the way keysvc's file backend
does (EC batched per event-loop iteration, RSA in a pool of one thread per core) and answers
the real token. What it
reaches is what signing alone leaves of the framework ceiling, with no claims, checks, audit
line or metrics at all: the most any service on this stack can do.

    python bench/bare_app.py --port 8081 --processes 2 --jwks jwks.json --etag '"..."' \
        --cache-control 'public, max-age=900' --token-length 650
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import json
import multiprocessing
import os
import signal
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from aiohttp import web
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa
from cryptography.hazmat.primitives.asymmetric.utils import decode_dss_signature

_JSON = "application/json"
_ECDSA = ec.ECDSA(hashes.SHA256())
_PKCS1 = padding.PKCS1v15()
_SHA256 = hashes.SHA256()


def create_app(
    jwks: bytes, etag: str, cache_control: str, token_length: int, signer: Signer | None = None
) -> web.Application:
    fixed = "e" * token_length
    jwks_headers = {"Cache-Control": cache_control, "ETag": etag}

    async def tokens(request: web.Request) -> web.Response:
        run = json.loads(await request.read())
        reply = {
            "token": fixed if signer is None else await signer.token(),
            "kid": run["organization"],
            "alg": "ES256" if signer is None else signer.alg,
            "expires_at": "2026-01-01T00:00:00Z",
        }
        return web.Response(body=json.dumps(reply).encode(), content_type=_JSON)

    async def get_jwks(request: web.Request) -> web.Response:
        return web.Response(body=jwks, content_type=_JSON, headers=jwks_headers)

    app = web.Application(client_max_size=64 * 1024)
    app.router.add_post("/v1/tokens", tokens)
    app.router.add_get("/.well-known/jwks", get_jwks)
    return app


class Signer:
    """The signing floor's one job per request, done as keysvc's file backend does it: RSA in a
    pool of one thread per core, EC at the end of the event-loop iteration together with the
    other signatures requested in it (keysvc/loop_signer.py)."""

    def __init__(self, key_pem: bytes, signing_input: bytes) -> None:
        key = serialization.load_pem_private_key(key_pem, password=None)
        if not isinstance(key, (ec.EllipticCurvePrivateKey, rsa.RSAPrivateKey)):
            raise SystemExit("--sign-key: an EC (ES256) or RSA (RS256) private key")
        self.key = key
        self.alg = "ES256" if isinstance(key, ec.EllipticCurvePrivateKey) else "RS256"
        self.message = signing_input
        self.pool = ThreadPoolExecutor(max_workers=os.cpu_count() or 2)
        self.batch: list[asyncio.Future[bytes]] = []

    def _sign(self) -> bytes:
        if isinstance(self.key, ec.EllipticCurvePrivateKey):
            r, s = decode_dss_signature(self.key.sign(self.message, _ECDSA))
            return r.to_bytes(32, "big") + s.to_bytes(32, "big")
        return self.key.sign(self.message, _PKCS1, _SHA256)

    def _flush(self) -> None:
        batch, self.batch = self.batch, []
        for future in batch:
            future.set_result(self._sign())

    async def token(self) -> str:
        loop = asyncio.get_running_loop()
        if isinstance(self.key, rsa.RSAPrivateKey):
            signature = await loop.run_in_executor(self.pool, self._sign)
        else:
            future = loop.create_future()
            if not self.batch:
                loop.call_soon(self._flush)
            self.batch.append(future)
            signature = await future
        return (
            self.message + b"." + base64.urlsafe_b64encode(signature).rstrip(b"=")
        ).decode()


async def serve_async(args: dict[str, Any], reuse_port: bool) -> None:
    signer = None
    if args["sign_key"]:
        with open(args["sign_key"], "rb") as key, open(args["signing_input"], "rb") as message:
            signer = Signer(key.read(), message.read())
    app = create_app(
        args["jwks_body"], args["etag"], args["cache_control"], args["token_length"], signer
    )
    runner = web.AppRunner(app, access_log=None, handle_signals=False)
    await runner.setup()
    site = web.TCPSite(
        runner, "127.0.0.1", args["port"], reuse_port=reuse_port or None, backlog=1024
    )
    await site.start()
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    try:
        await stop.wait()
    finally:
        await runner.cleanup()


def _run_loop(coro: Any) -> None:
    try:
        import uvloop

        uvloop.run(coro)
    except ImportError:
        asyncio.run(coro)


def _worker(args: dict[str, Any]) -> None:
    _run_loop(serve_async(args, reuse_port=True))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--processes", type=int, default=1)
    parser.add_argument("--jwks", required=True, help="file holding the JWKS bytes to serve")
    parser.add_argument("--etag", required=True)
    parser.add_argument("--cache-control", required=True)
    parser.add_argument("--token-length", type=int, required=True)
    parser.add_argument("--sign-key", help="PEM private key: sign every token (the signing floor)")
    parser.add_argument("--signing-input", help="file holding the JWS signing input to sign")
    args = vars(parser.parse_args())
    if bool(args["sign_key"]) != bool(args["signing_input"]):
        parser.error("--sign-key and --signing-input go together")
    with open(args["jwks"], "rb") as fh:
        args["jwks_body"] = fh.read()
    if args["processes"] == 1:
        _run_loop(serve_async(args, reuse_port=False))
        return
    context = multiprocessing.get_context("spawn")
    workers = [context.Process(target=_worker, args=(args,)) for _ in range(args["processes"])]
    for process in workers:
        process.start()

    def forward(signum: int, _frame: Any) -> None:
        for process in workers:
            if process.is_alive() and process.pid is not None:
                os.kill(process.pid, signal.SIGTERM)

    signal.signal(signal.SIGTERM, forward)
    signal.signal(signal.SIGINT, forward)
    for process in workers:
        process.join()


if __name__ == "__main__":
    main()
