"""What every measurement shares: the keys, the key directories, the client token, the request
body, a real JWS signing input and the JWKS bytes keysvc will serve.

Everything is derived with keysvc's own code (file-backend names, the key ring, the token layout,
the public documents) so the limits are measured on exactly what keysvc signs and serves.
"""

from __future__ import annotations

import asyncio
import json
import secrets
import shutil
import time
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives.asymmetric import ec, rsa

from keysvc import jose, keygen
from keysvc.backends.file import name_for
from keysvc.config import Config, parse_config
from keysvc.documents import PublicDocuments
from keysvc.secrets import write_private_file
from keysvc.service import local_ring
from keysvc.tokens import TokenIssuer, TokenRequest
from tests.service import RUN  # the run every test issues for: the body of each POST

ISSUER = "http://127.0.0.1:8080"


@dataclass(frozen=True)
class Fixtures:
    work: Path
    token: str
    token_file: Path
    rsa_key: rsa.RSAPrivateKey
    ec_key: ec.EllipticCurvePrivateKey
    key_dirs: dict[str, Path]
    """Per algorithm ("RS256", "ES256"): a key directory in which that key signs while the other
    one is published as pending, so both instances serve a realistic two-key JWKS."""
    signing_inputs: dict[str, bytes]
    jwks_body: bytes
    jwks_etag: str
    jwks_cache_control: str
    token_length: int

    @property
    def body(self) -> bytes:
        return json.dumps(RUN).encode()

    def serve_args(self, alg: str, port: int, workers: int) -> list[str]:
        """`keysvc serve` otfd-style: the key directory, a client token file, no config file."""
        return [
            "serve",
            "--issuer",
            ISSUER,
            "--private-key-path",
            str(self.key_dirs[alg]),
            "--client-token-file",
            str(self.token_file),
            "--listen",
            f"127.0.0.1:{port}",
            "--workers",
            str(workers),
        ]


def config_data(key_dir: Path, token_file: Path) -> dict[str, Any]:
    """The config `serve_args` amounts to (for deriving the JWKS and signing input locally)."""
    return {
        "issuer": ISSUER,
        "clients": [{"name": "default", "token_file": str(token_file), "scopes": ["tokens:issue"]}],
        "backends": [{"name": "otfd", "type": "file", "path": str(key_dir)}],
    }


def _key_dir(path: Path, signing: bytes, pending: bytes) -> Path:
    """A file-backend directory: `signing` created two days ago (active), `pending` just now."""
    path.mkdir(mode=0o700)
    now = datetime.now(UTC)
    write_private_file(path / name_for(now - timedelta(days=2)), signing)
    write_private_file(path / name_for(now), pending)
    return path


async def _derive(config: Config, body: dict[str, Any]) -> tuple[bytes, PublicDocuments]:
    async with local_ring(config) as ring:
        signer = ring.view().signer
        assert signer is not None
        issuer = TokenIssuer(ring, config.issuer, config.tokens)
        now = int(time.time())
        claims = issuer.run_claims(TokenRequest.model_validate(body))
        payload = {
            "iss": config.issuer,
            **claims,
            "iat": now,
            "nbf": now,
            "exp": now + 3600,
            "jti": "0b6d2c1e-8f61-4d5e-9a57-3c2f1b0e4d7a",
        }
        message = jose.signing_input(signer.header_b64, payload)
        documents = PublicDocuments.build(ring.view(), config.issuer, config.rotation.jwks_max_age)
        return message, documents


def prepare(work: Path) -> Fixtures:
    """Create the work directory afresh with keys, token and derived inputs."""
    if work.exists():
        shutil.rmtree(work)
    work.mkdir(parents=True, mode=0o700)
    rsa_key = keygen.generate("rsa-4096")
    ec_key = keygen.generate("ec-p256")
    rsa_pem, ec_pem = keygen.private_pem(rsa_key), keygen.private_pem(ec_key)
    token = secrets.token_urlsafe(32)
    token_file = work / "client-token"
    write_private_file(token_file, (token + "\n").encode())
    key_dirs = {
        "RS256": _key_dir(work / "keys-rs256", rsa_pem, ec_pem),
        "ES256": _key_dir(work / "keys-es256", ec_pem, rsa_pem),
    }
    signing_inputs: dict[str, bytes] = {}
    documents: dict[str, PublicDocuments] = {}
    for alg, key_dir in key_dirs.items():
        config = parse_config(config_data(key_dir, token_file))
        signing_inputs[alg], documents[alg] = asyncio.run(_derive(config, RUN))
    jwks = documents["ES256"].jwks
    signature_b64 = 86  # ES256: 64 raw bytes, base64url
    return Fixtures(
        work=work,
        token=token,
        token_file=token_file,
        rsa_key=rsa_key,  # type: ignore[arg-type]
        ec_key=ec_key,  # type: ignore[arg-type]
        key_dirs=key_dirs,
        signing_inputs=signing_inputs,
        jwks_body=jwks.body,
        jwks_etag=jwks.etag,
        jwks_cache_control=jwks.cache_control,
        token_length=len(signing_inputs["ES256"]) + 1 + signature_b64,
    )
