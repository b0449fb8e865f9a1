"""The command line as operators use it: real subprocesses, exit codes, one-line errors."""

from __future__ import annotations

import json
import stat
import urllib.request
from datetime import UTC, datetime, timedelta
from pathlib import Path

import jwt
import pytest

from keysvc import jose, keygen
from keysvc.backends.file import name_for
from keysvc.secrets import write_private_file
from tests.cli import assert_one_line_error, private, run, serving
from tests.conftest import write_key
from tests.service import RUN, free_port


def config_file(tmp_path: Path, keys: Path, extra: str = "", port: int = 8080) -> Path:
    token = private(tmp_path / "token", "cli-test-token\n")
    path = tmp_path / "keysvc.toml"
    path.write_text(
        f'issuer = "http://127.0.0.1:{port}"\n{extra}\n'
        f'[server]\nport = {port}\n'
        f'[[clients]]\nname = "t"\ntoken_file = "{token}"\n'
        f'scopes = ["tokens:issue", "keys:read", "keys:rotate", "sign"]\n'
        f'[[backends]]\nname = "local"\ntype = "file"\npath = "{keys}"\n'
    )
    return path


@pytest.mark.parametrize(
    ("extra", "fragment"),
    [
        ('[rotation]\npublish_lead = "10s"\njwks_max_age = "15s"', "publish_lead"),
        ('[rotation]\njwks_max_age = "soon"', "rotation.jwks_max_age"),
        ('[tokens]\nalgorithm = "HS256"', "tokens.algorithm"),
        ('[tokens]\ndefault_ttl = "3h"\nmax_ttl = "1h"', "default_ttl"),
        ('[server]\nworkerz = 2', "server.workerz"),
        ('[tokens]\nsubject_format = "org:{org}"', "subject_format"),
    ],
)
def test_bad_config_names_the_key(tmp_path: Path, key_dir: Path, extra: str, fragment: str) -> None:
    path = config_file(tmp_path, key_dir)
    text = path.read_text()
    if extra.startswith("[server]"):  # add to the existing table
        text = text.replace("[server]\n", extra + "\n", 1)
    else:
        text = text.replace("\n[server]", f"\n{extra}\n[server]", 1)
    path.write_text(text)
    assert_one_line_error(run("keys", "list", "--config", str(path)), fragment)


def test_bad_config_files(tmp_path: Path, key_dir: Path) -> None:
    assert_one_line_error(run("keys", "list", "--config", str(tmp_path / "nope.toml")), "does not exist")
    broken = tmp_path / "broken.toml"
    broken.write_text("issuer = \n")
    assert_one_line_error(run("keys", "list", "--config", str(broken)), "not valid TOML")
    path = config_file(tmp_path, key_dir)
    path.write_text(path.read_text().replace('type = "file"', 'type = "floppy"'))
    assert_one_line_error(run("keys", "list", "--config", str(path)), "backends[0]", "floppy")
    path = config_file(tmp_path, key_dir)
    path.write_text(path.read_text().replace("http://127.0.0.1:8080", "http://example.com"))
    assert_one_line_error(run("keys", "list", "--config", str(path)), "issuer", "https")
    assert_one_line_error(run("serve"), "no configuration")


def test_otfd_flags_mismatched_pair_and_world_readable(tmp_path: Path) -> None:
    key, other = keygen.generate("rsa-2048"), keygen.generate("rsa-2048")
    private_key = private(tmp_path / "private.pem", keygen.private_pem(key).decode())
    public = tmp_path / "public.pem"
    public.write_bytes(keygen.public_pem(other.public_key()))
    args = ["--issuer", "https://otf.example.com", "--private-key-path", str(private_key)]
    assert_one_line_error(run("serve", *args, "--public-key-path", str(public)), "does not match")
    private_key.chmod(0o644)
    assert_one_line_error(run("serve", *args), "group or others", "chmod 600")
    private_key.chmod(0o600)
    # The same flags through otfd's own environment variables, with the matching public key.
    public.write_bytes(keygen.public_pem(key.public_key()))
    result = run("jwks", "--issuer", "https://otf.example.com",
                 env={"OTF_PRIVATE_KEY_PATH": str(private_key), "OTF_PUBLIC_KEY_PATH": str(public)})
    assert result.returncode == 0, result.stderr
    (published,) = json.loads(result.stdout)["keys"]
    assert published["alg"] == "RS256" and published["kty"] == "RSA"


def test_serve_with_otfd_flags_issues_verifiable_tokens(tmp_path: Path) -> None:
    key = keygen.generate("rsa-2048")
    private_key = private(tmp_path / "otfd.pem", keygen.private_pem(key).decode())
    token_file = private(tmp_path / "client-token", "s3cret-client-token\n")
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    with serving("--issuer", url, "--private-key-path", str(private_key), "--listen",
                 f"127.0.0.1:{port}", "--client-token-file", str(token_file), url=url) as process:
        request = urllib.request.Request(
            url + "/v1/tokens", data=json.dumps(RUN).encode(), method="POST",
            headers={"Authorization": "Bearer s3cret-client-token", "Content-Type": "application/json"},
        )
        with urllib.request.urlopen(request) as response:
            reply = json.load(response)
        verified = run("token", "verify", reply["token"], "--issuer", url,
                       "--audience", RUN["audience"], "--json")
        assert verified.returncode == 0, verified.stderr
        assert json.loads(verified.stdout)["claims"]["terraform_run_phase"] == "plan"
        wrong = run("token", "verify", reply["token"], "--issuer", url, "--audience", "other")
        assert_one_line_error(wrong, "does not verify")
        client = jwt.PyJWKClient(url + "/.well-known/jwks")
        claims = jwt.decode(reply["token"], client.get_signing_key_from_jwt(reply["token"]),
                            algorithms=["RS256"], audience=RUN["audience"], issuer=url)
        assert claims["sub"].endswith(":run_phase:plan")
    _, stderr = process.communicate()
    assert "s3cret-client-token" not in stderr and "PRIVATE KEY" not in stderr


def test_serve_with_two_workers(tmp_path: Path, key_dir: Path) -> None:
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    path = config_file(tmp_path, key_dir, port=port)
    with serving("--config", str(path), "--workers", "2", url=url):
        kids = set()
        for _ in range(6):
            with urllib.request.urlopen(url + "/.well-known/jwks") as response:
                kids.add(json.load(response)["keys"][0]["kid"])
        assert len(kids) == 1
        with urllib.request.urlopen(url + "/metrics") as response:
            assert b"keysvc_ring_keys" in response.read()


def test_keys_generate_list_rotate_revoke(tmp_path: Path) -> None:
    keys = tmp_path / "keys"
    keys.mkdir()
    result = run("keys", "generate", "--type", "ec-p256", "--out", str(keys), "--json")
    assert result.returncode == 0, result.stderr
    generated = json.loads(result.stdout)
    assert stat.S_IMODE(Path(generated["path"]).stat().st_mode) == 0o600
    path = config_file(tmp_path, keys)
    result = run("keys", "rotate", "--config", str(path), "--json")
    assert result.returncode == 0, result.stderr
    rotated = json.loads(result.stdout)
    listing = json.loads(run("keys", "list", "--config", str(path), "--json").stdout)["keys"]
    assert [(k["kid"], k["state"]) for k in listing] == [
        (generated["kid"], "active"), (rotated["kid"], "pending")
    ]
    human = run("keys", "list", "--config", str(path))
    assert human.returncode == 0 and "pending" in human.stdout and "KID" in human.stdout
    assert_one_line_error(
        run("keys", "generate", "--type", "ec-p256", "--out", generated["path"]),
        "refusing to overwrite",
    )
    result = run("keys", "revoke", "--config", str(path), generated["kid"], "--json")
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout)["signing_kid"] == rotated["kid"]
    assert_one_line_error(run("keys", "revoke", "--config", str(path), "nope"), "no key with kid")


def test_revoke_takes_a_kid_that_begins_with_a_dash(tmp_path: Path) -> None:
    """A kid is base64url: one in 64 begins with "-", and must not be read as an option.

    The hardest such kid begins with "-h": click alone would read it as "-h" (help) plus junk."""
    keys = tmp_path / "keys"
    keys.mkdir()
    while True:
        key = keygen.generate("ec-p256")
        kid = jose.thumbprint(key.public_key())  # type: ignore[arg-type]
        if kid.startswith("-h"):
            break
    write_private_file(keys / name_for(datetime.now(UTC) - timedelta(days=2)), keygen.private_pem(key))  # type: ignore[arg-type]
    write_key(keys, "ec-p256", datetime.now(UTC) - timedelta(days=1))
    path = config_file(tmp_path, keys)
    result = run("keys", "revoke", "--config", str(path), kid, "--json")
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout)["revoked"] == kid
    assert_one_line_error(run("keys", "revoke", "--config", str(path), "-Unknown"), "no key with kid -Unknown")


@pytest.mark.parametrize(
    ("args", "kid", "config", "as_json"),
    [
        (["-hELP"], "-hELP", None, False),
        (["--help-me", "--json"], "--help-me", None, True),
        (["--jsonX"], "--jsonX", None, False),
        (["-c"], "-c", None, False),
        (["--config", "-odd.toml", "-x"], "-x", "-odd.toml", False),
        (["--config=k.toml", "--json", "-Ab"], "-Ab", "k.toml", True),
        (["--", "--json"], "--json", None, False),
        (["plain"], "plain", None, False),
    ],
)
def test_revoke_parses_dash_kids(args: list[str], kid: str, config: str | None, as_json: bool) -> None:
    from keysvc.cli.keys import revoke

    ctx = revoke.make_context("revoke", args)
    assert ctx.params["kid"] == kid
    assert ctx.params["as_json"] is as_json
    assert (str(ctx.params["config_path"]) if ctx.params["config_path"] else None) == config


def test_rotate_needs_backend_choice_with_two(tmp_path: Path, key_dir: Path) -> None:
    other = tmp_path / "other"
    other.mkdir()
    write_key(other)
    path = config_file(tmp_path, key_dir)
    path.write_text(path.read_text() + f'[[backends]]\nname = "b"\ntype = "file"\npath = "{other}"\n')
    assert_one_line_error(run("keys", "rotate", "--config", str(path)), "--backend")
    result = run("keys", "rotate", "--config", str(path), "--backend", "b", "--json")
    assert result.returncode == 0 and json.loads(result.stdout)["backend"] == "b"


def test_jwks_for_gcp_and_token_issue(tmp_path: Path) -> None:
    keys = tmp_path / "keys"
    keys.mkdir()
    write_key(keys, "ec-p384")
    path = config_file(tmp_path, keys)
    result = run("jwks", "--config", str(path), "--for", "gcp")
    assert result.returncode == 0 and json.loads(result.stdout) == {"keys": []}
    assert "Google accepts RS256 and ES256 only" in result.stderr
    write_key(keys, "rsa-2048")
    document = json.loads(run("jwks", "--config", str(path), "--for", "gcp").stdout)
    assert [k["alg"] for k in document["keys"]] == ["RS256"]
    assert set(document["keys"][0]) <= {"kty", "alg", "use", "kid", "n", "e", "x", "y", "crv"}
    issued = run("token", "issue", "--config", str(path), "--organization", "acme", "--workspace",
                 "net", "--workspace-id", "ws-1", "--run-id", "run-1", "--phase", "apply",
                 "--audience", "x", "--json")
    assert issued.returncode == 0, issued.stderr
    assert jwt.get_unverified_header(json.loads(issued.stdout)["token"])["alg"] == "ES384"
    bad = run("token", "issue", "--config", str(path), "--organization", "a:b", "--workspace",
              "net", "--workspace-id", "ws-1", "--run-id", "run-1", "--phase", "apply",
              "--audience", "x")
    assert_one_line_error(bad, "--organization")


def test_init_creates_a_private_dev_setup(tmp_path: Path) -> None:
    target = tmp_path / "dev"
    result = run("init", "--dir", str(target), "--key-type", "ec-p256")
    assert result.returncode == 0, result.stderr
    assert "curl" in result.stderr and "/v1/tokens" in result.stderr
    for path in (target / "keysvc.toml", target / "client-token", *(target / "keys").iterdir()):
        assert stat.S_IMODE(path.stat().st_mode) == 0o600, path
    token = (target / "client-token").read_text().strip()
    assert token not in result.stderr + result.stdout
    listing = run("keys", "list", "--config", str(target / "keysvc.toml"), "--json")
    assert json.loads(listing.stdout)["keys"][0]["state"] == "active"
    again = run("init", "--dir", str(target))
    assert again.returncode == 0 and "using" in again.stderr


def test_help_everywhere() -> None:
    for args in (["--help"], ["serve", "--help"], ["keys", "--help"], ["keys", "rotate", "--help"],
                 ["jwks", "--help"], ["token", "verify", "--help"], ["init", "--help"]):
        result = run(*args)
        assert result.returncode == 0 and "Usage:" in result.stdout, args
    assert run("nonsense").returncode == 2
