"""Logging in to a real OpenBao: token file, VAULT_TOKEN, AppRole; renewal and re-login;
secrets never in a message or a log line."""

from __future__ import annotations

import asyncio
import logging
import os
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
import trustme

from keysvc import jose
from keysvc.backends.base import BackendUnavailable
from keysvc.config import parse_config
from keysvc.service import build_backends
from keysvc.errors import ConfigError
from keysvc.secrets import write_private_file
from tests.vault.bao import BaoServer
from tests.vault.conftest import documented_policy, policy_token, token_file, unique
from tests.vault.kubernetes_fake import KubernetesAPI

ES256 = jose.Algorithm.ES256


def approle(bao: BaoServer, key: str, **role_options: str) -> tuple[str, str]:
    """An AppRole holding the minimal keysvc policy for `key`: (role_id, secret_id)."""
    if "approle/" not in bao.request("GET", "sys/auth")["data"]:
        bao.request("POST", "sys/auth/approle", {"type": "approle"})
    policy = f"keysvc-{key}"
    bao.write_policy(policy, documented_policy(key))
    role = f"role-{key}"
    bao.request("POST", f"auth/approle/role/{role}", {"token_policies": [policy], **role_options})
    role_id = bao.request("GET", f"auth/approle/role/{role}/role-id")["data"]["role_id"]
    secret_id = bao.request("POST", f"auth/approle/role/{role}/secret-id")["data"]["secret_id"]
    return role_id, secret_id


async def sign_ok(backend) -> None:
    (version,) = await backend.list_versions()
    signature = await backend.sign(version, ES256, b"a.b")
    jose.verify_local(version.public_key, ES256, b"a.b", signature)


async def test_token_file_with_minimal_policy(bao: BaoServer, make_backend, key_name: str, tmp_path: Path) -> None:
    token = policy_token(bao, key_name)
    backend = await make_backend(key_name, token_file=str(token_file(tmp_path, token)))
    await sign_ok(backend)
    new = await backend.create_version()  # rotate is in the minimal policy
    assert new.version_id == "2"


async def test_vault_token_environment_variable(bao: BaoServer, make_backend, key_name: str,
                                                monkeypatch: pytest.MonkeyPatch) -> None:
    token = policy_token(bao, key_name)
    monkeypatch.setenv("VAULT_TOKEN", token)
    backend = await make_backend(key_name, auth="token")
    await sign_ok(backend)
    lease = await backend.auth.login()  # an explicit re-check looks the token up again
    assert lease.token == token and lease.renewable and lease.ttl > 0


async def test_no_credentials_at_all(make_backend, key_name: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("VAULT_TOKEN", raising=False)
    backend = await make_backend(key_name, auth="token", open_=False)
    with pytest.raises(ConfigError, match="no Vault credentials"):
        await backend.open()


async def test_token_file_readable_by_others_is_refused(bao: BaoServer, make_backend, key_name: str,
                                                       tmp_path: Path) -> None:
    path = token_file(tmp_path, bao.root_token)
    os.chmod(path, 0o644)
    backend = await make_backend(key_name, token_file=str(path), open_=False)
    with pytest.raises(ConfigError, match="accessible by group or others") as err:
        await backend.open()
    assert bao.root_token not in str(err.value)


async def test_token_is_renewed_before_it_expires(bao: BaoServer, make_backend, key_name: str,
                                                 tmp_path: Path) -> None:
    token = policy_token(bao, key_name, ttl="3s", renewable=True)
    backend = await make_backend(key_name, token_file=str(token_file(tmp_path, token)))
    for _ in range(20):  # 5 s: well past the token's original 3 s TTL
        await sign_ok(backend)
        await asyncio.sleep(0.25)
    assert backend.auth.renewals >= 2
    looked_up = bao.request("POST", "auth/token/lookup", {"token": token})["data"]
    assert looked_up["last_renewal"]  # Vault saw the renewals: the same token lives on
    expires = datetime.fromisoformat(looked_up["expire_time"].split(".")[0] + "+00:00")
    assert expires > datetime.now(UTC) - timedelta(seconds=1)


async def test_approle_login_renewal_and_relogin_at_max_ttl(bao: BaoServer, make_backend, tmp_path: Path,
                                                           caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    key = unique("approle")
    bao.create_key(key, "ecdsa-p256")
    role_id, secret_id = approle(bao, key, token_ttl="2s", token_max_ttl="4s")
    secret_path = tmp_path / "secret-id"
    write_private_file(secret_path, secret_id.encode())
    backend = await make_backend(key, role_id=role_id, secret_id_file=str(secret_path))
    first_token = backend.auth.token
    for _ in range(24):  # 6 s: past the 4 s max TTL, so a fresh login was needed
        await sign_ok(backend)
        await asyncio.sleep(0.25)
    assert backend.auth.renewals >= 1
    assert backend.auth.logins >= 2
    assert backend.auth.token != first_token
    assert secret_id not in caplog.text and first_token not in caplog.text


async def test_approle_with_a_wrong_secret_id_recovers_once_fixed(
    bao: BaoServer, make_backend, tmp_path: Path, caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.DEBUG)
    key = unique("approle-bad")
    bao.create_key(key, "ecdsa-p256")
    role_id, secret_id = approle(bao, key)
    secret_path = tmp_path / "secret-id"
    wrong = "00000000-1111-2222-3333-444444444444"
    write_private_file(secret_path, wrong.encode())
    backend = await make_backend(key, role_id=role_id, secret_id_file=str(secret_path), open_=False)
    with pytest.raises(BackendUnavailable, match="approle auth .* failed") as err:
        await backend.open()
    assert wrong not in str(err.value)
    with pytest.raises(BackendUnavailable, match="not logged in"):
        await backend.list_versions()
    write_private_file(secret_path, secret_id.encode())  # the operator fixes the secret
    deadline = asyncio.get_running_loop().time() + 15
    while True:
        try:
            await sign_ok(backend)
            break
        except BackendUnavailable:
            assert asyncio.get_running_loop().time() < deadline, "never recovered"
            await asyncio.sleep(0.5)
    assert wrong not in caplog.text and secret_id not in caplog.text


async def test_revoked_token_is_503_then_recovers_from_a_new_token_file(
    bao: BaoServer, make_backend, key_name: str, tmp_path: Path, caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.DEBUG)
    token = policy_token(bao, key_name)
    path = token_file(tmp_path, token)
    backend = await make_backend(key_name, token_file=str(path))
    (version,) = await backend.list_versions()
    bao.request("POST", "auth/token/revoke", {"token": token})
    with pytest.raises(BackendUnavailable, match="HTTP 403") as err:
        await backend.sign(version, ES256, b"a.b")
    assert token not in str(err.value)
    # A Vault Agent (or the operator) writes a new token: the next 403 re-reads the file.
    replacement = policy_token(bao, key_name)
    write_private_file(path, replacement.encode())
    signature = await backend.sign(version, ES256, b"a.b")
    jose.verify_local(version.public_key, ES256, b"a.b", signature)
    assert token not in caplog.text and replacement not in caplog.text


async def test_policy_without_rotate_is_refused_clearly(bao: BaoServer, make_backend, key_name: str,
                                                       tmp_path: Path) -> None:
    bao.write_policy(f"ro-{key_name}", f'path "transit/keys/{key_name}" {{ capabilities = ["read"] }}')
    token = bao.create_token([f"ro-{key_name}"])
    backend = await make_backend(key_name, token_file=str(token_file(tmp_path, token)))
    assert len(await backend.list_versions()) == 1
    with pytest.raises(BackendUnavailable, match="403.*policy lacks"):
        await backend.create_version()


@pytest.mark.parametrize(
    ("settings", "message"),
    [
        ({"role_id": "r"}, "AppRole auth needs both role_id and secret_id_file"),
        ({"role_id": "r", "secret_id_file": "/s", "role": "k"}, "role belongs to Kubernetes auth"),
        ({"auth": "kubernetes"}, "Kubernetes auth needs role"),
        ({"role": "k", "token_file": "/t"}, "token_file belongs to token auth"),
        ({"address": "vault.example.com"}, "must be an http(s) URL"),
        ({"address": "https://vault.example.com/v1"}, "without a path"),
        ({"batch_window": "2s"}, "at most 1s"),
        ({"max_batch": 0}, "max_batch"),
        ({"tls_skip_verify": True, "ca_cert": "/ca.pem"}, "ca_file or insecure (formerly ca_cert, tls_skip_verify)"),
        ({"secret": "x"}, "secret"),
    ],
)
def test_bad_settings_name_the_problem(settings: dict, message: str) -> None:
    backend = {"name": "v", "type": "vault", "address": "https://vault.example.com", "key": "k",
               **settings}
    with pytest.raises(ConfigError) as err:
        build_backends(parse_config({"issuer": "https://issuer.example.com", "backends": [backend]}))
    assert message in str(err.value) and str(err.value).startswith("backends")


async def test_kubernetes_auth_with_the_pods_service_account_token(
    bao: BaoServer, make_backend, tmp_path: Path, caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.DEBUG)
    key = unique("k8s")
    bao.create_key(key, "ecdsa-p256")
    policy_token(bao, key)  # writes the keysvc-<key> policy
    mount = f"kubernetes-{key}"
    async with KubernetesAPI() as kubernetes:
        bao.request("POST", f"sys/auth/{mount}", {"type": "kubernetes"})
        bao.request("POST", f"auth/{mount}/config", {
            "kubernetes_host": kubernetes.address, "disable_local_ca_jwt": True,
            "kubernetes_ca_cert": trustme.CA().cert_pem.bytes().decode(),
        })
        bao.request("POST", f"auth/{mount}/role/keysvc", {
            "bound_service_account_names": ["keysvc"], "bound_service_account_namespaces": ["keysvc"],
            "token_policies": [f"keysvc-{key}"], "token_ttl": "60s", "audience": "vault",
        })
        jwt_path = tmp_path / "token"
        jwt = kubernetes.service_account_token("keysvc", "keysvc")
        jwt_path.write_text(jwt)
        os.chmod(jwt_path, 0o644)  # as Kubernetes mounts projected tokens: accepted
        backend = await make_backend(key, role="keysvc", auth_mount=mount,
                                     service_account_token_file=str(jwt_path))
        await sign_ok(backend)
        assert [r["spec"]["token"] for r in kubernetes.reviews] == [jwt]  # Vault asked the API

        # A pod of another namespace is refused by the role's binding.
        jwt_path.write_text(kubernetes.service_account_token("other", "keysvc"))
        refused = await make_backend(key, role="keysvc", auth_mount=mount,
                                     service_account_token_file=str(jwt_path), open_=False)
        with pytest.raises(BackendUnavailable, match="kubernetes auth .* failed") as err:
            await refused.open()
        assert "namespace" in str(err.value)
    assert jwt not in caplog.text and jwt not in str(err.value)


async def test_kubernetes_auth_without_a_token_file(make_backend, key_name: str, tmp_path: Path) -> None:
    backend = await make_backend(key_name, role="keysvc",
                                 service_account_token_file=str(tmp_path / "absent"), open_=False)
    with pytest.raises(ConfigError, match="service_account_token_file.*cannot be read"):
        await backend.open()


async def test_approle_token_revoked_is_replaced_within_the_same_request(
    bao: BaoServer, make_backend, tmp_path: Path,
) -> None:
    key = unique("approle-revoked")
    bao.create_key(key, "ecdsa-p256")
    role_id, secret_id = approle(bao, key)
    secret_path = tmp_path / "secret-id"
    write_private_file(secret_path, secret_id.encode())
    backend = await make_backend(key, role_id=role_id, secret_id_file=str(secret_path))
    await sign_ok(backend)
    bao.request("POST", "auth/token/revoke", {"token": backend.auth.token})
    await sign_ok(backend)  # 403 → one fresh AppRole login → the retry succeeds
    assert backend.auth.logins == 2


async def test_a_policy_gap_does_not_turn_every_request_into_a_login(
    bao: BaoServer, make_backend, tmp_path: Path,
) -> None:
    key = unique("approle-gap")
    bao.create_key(key, "ecdsa-p256")
    role_id, secret_id = approle(bao, key)
    bao.write_policy(f"keysvc-{key}", f'path "transit/keys/{key}" {{ capabilities = ["read"] }}')
    secret_path = tmp_path / "secret-id"
    write_private_file(secret_path, secret_id.encode())
    backend = await make_backend(key, role_id=role_id, secret_id_file=str(secret_path))
    (version,) = await backend.list_versions()
    for _ in range(10):
        with pytest.raises(BackendUnavailable, match="HTTP 403"):
            await backend.sign(version, ES256, b"a.b")
    assert backend.auth.logins == 2  # the first login, and one retry for the first 403
