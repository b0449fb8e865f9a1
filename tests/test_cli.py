"""The command line as operators use it: exit codes, one-line errors (commands run in this
process, as tests.cli.run says; `keysvc serve` in processes of its own)."""

from __future__ import annotations

import json
import stat
import urllib.error
import urllib.request
from datetime import UTC, datetime, timedelta
from pathlib import Path

import jwt
import pytest

from keysvc import jose, keygen
from keysvc.backends.file import load_private_key, name_for
from keysvc.secrets import write_private_file
from tests.cli import assert_one_line_error, config_file, private, run, serving
from tests.conftest import write_key
from tests.service import RUN, free_port


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


@pytest.mark.parametrize("workers", [1, 2])
def test_serve_refuses_two_clients_with_one_token(tmp_path: Path, key_dir: Path, workers: int) -> None:
    """The same token for two clients would act with whichever client came last."""
    same = private(tmp_path / "same-token", "cli-test-token\n")
    extra = f'[[clients]]\nname = "twin"\ntoken_file = "{same}"\nscopes = ["keys:read"]\n'
    path = config_file(tmp_path, key_dir, port=free_port())
    path.write_text(path.read_text() + extra)
    result = run("serve", "--config", str(path), "--workers", str(workers), timeout=60)
    assert_one_line_error(result, "clients 't' and 'twin' have the same bearer token")
    assert "cli-test-token" not in result.stderr


@pytest.mark.parametrize("workers", [1, 2])
def test_serve_refuses_bad_backend_settings_before_serving(
    tmp_path: Path, key_dir: Path, workers: int
) -> None:
    """Reading the config loads no backend; the settings are checked when the backends are built,
    still before anything listens: one line naming the key, exit 2."""
    port = free_port()
    path = config_file(tmp_path, key_dir, port=port)
    path.write_text(path.read_text() + '[[backends]]\nname = "b"\ntype = "memory"\ncolour = "red"\n')
    result = run("serve", "--config", str(path), "--workers", str(workers), timeout=60)
    assert_one_line_error(result, "backends[1]: colour: is not a setting keysvc knows")
    assert "keysvc is serving" not in result.stderr


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
        wrong = run("token", "verify", reply["token"], "--issuer", url,
                    "--audience", "sts.amazonaws.com")
        assert_one_line_error(  # what was expected, then what the token has
            wrong, "does not verify: audience: expected 'sts.amazonaws.com', the token has"
            f" {RUN['audience']!r}"
        )
        header, payload, signature = reply["token"].split(".")
        other = jwt.encode({"iss": url}, keygen.private_pem(keygen.generate("ec-p256")),
                           algorithm="ES256", headers={"kid": "not-published"})
        unknown = run("token", "verify", other, "--issuer", url)
        assert_one_line_error(
            unknown, "its kid not-published is not in the JWKS at", url + "/.well-known/jwks",
            f"it has {reply['kid']}",
        )
        forged = ".".join((header, payload, signature[::-1]))
        assert_one_line_error(run("token", "verify", forged, "--issuer", url),
                              f"RS256 signature does not verify with key {reply['kid']}")
        client = jwt.PyJWKClient(url + "/.well-known/jwks")
        claims = jwt.decode(reply["token"], client.get_signing_key_from_jwt(reply["token"]),
                            algorithms=["RS256"], audience=RUN["audience"], issuer=url)
        assert claims["sub"].endswith(":run_phase:plan")
    _, stderr = process.communicate()
    assert "s3cret-client-token" not in stderr and "PRIVATE KEY" not in stderr
    # Every stderr line is a JSON log line, the start announced with its facts as fields.
    lines = [json.loads(line) for line in stderr.splitlines()]
    (started,) = [line for line in lines if line["message"] == "keysvc is serving"]
    assert (started["issuer"], started["listen"], started["workers"]) == (
        url, f"http://127.0.0.1:{port}", 1
    )


def test_serve_takes_otfd_own_flags_and_variables(tmp_path: Path) -> None:
    """otfd's listen flag is --address (":8080" style) and its issuer is https://<--hostname>;
    keysvc takes both, as flags and as otfd's OTF_* variables, beside the key paths."""
    key = keygen.generate("rsa-2048")
    private_key = private(tmp_path / "otfd.pem", keygen.private_pem(key).decode())
    public_key = tmp_path / "otfd.pub"
    public_key.write_bytes(keygen.public_pem(key.public_key()))
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    with serving("--hostname", f"127.0.0.1:{port}", "--address", f"127.0.0.1:{port}",
                 "--private-key-path", str(private_key), "--public-key-path", str(public_key),
                 url=url):
        with urllib.request.urlopen(url + "/.well-known/openid-configuration") as response:
            assert json.load(response)["issuer"] == f"https://127.0.0.1:{port}"
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    env = {"OTF_ADDRESS": f":{port}", "OTF_HOSTNAME": "otf.example.com",
           "OTF_PRIVATE_KEY_PATH": str(private_key), "OTF_PUBLIC_KEY_PATH": str(public_key)}
    with serving(url=url, env=env):  # ":PORT" listens on every interface, as Go's does
        with urllib.request.urlopen(url + "/.well-known/openid-configuration") as response:
            assert json.load(response)["issuer"] == "https://otf.example.com"
    assert_one_line_error(
        run("serve", "--listen", "127.0.0.1:1", "--address", "127.0.0.1:2", env=env), "disagree"
    )
    assert_one_line_error(
        run("jwks", "--issuer", "https://a.example.com", "--hostname", "b.example.com", env=env),
        "disagree",
    )


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
    azure = "signs ES256, which Azure refuses (Azure accepts only RS256)"
    assert result.stderr.startswith(f"keysvc: warning: key {generated['kid']} {azure}")
    path = config_file(tmp_path, keys)
    result = run("keys", "rotate", "--config", str(path), "--json")
    assert result.returncode == 0, result.stderr
    rotated = json.loads(result.stdout)
    assert f"key {rotated['kid']} {azure}" in result.stderr  # rotated to the newest key's type
    assert rotated["state"] == "pending"
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
    # The key that signs now was created seconds ago: verifiers may not have fetched it yet.
    assert f"keysvc: warning: {rotated['kid']} signs now, but it was created only" in result.stderr
    assert "for up to refresh_interval + jwks_max_age (930s)" in result.stderr
    assert_one_line_error(run("keys", "revoke", "--config", str(path), "nope"), "no key with kid")


def test_rotate_into_an_empty_ring_says_the_key_signs_now(tmp_path: Path) -> None:
    """With no other key, the new one signs at once: rotate, list and the runbook say so, and
    its signs_from is its creation time, not a publish lead ahead."""
    keys = tmp_path / "keys"
    keys.mkdir()
    lifecycle = '[rotation]\npublish_lead = "2m"\njwks_max_age = "30s"\nrefresh_interval = "5s"'
    path = config_file(tmp_path, keys, extra=lifecycle)
    result = run("keys", "rotate", "--config", str(path), "--json")
    assert result.returncode == 0, result.stderr
    rotated = json.loads(result.stdout)
    assert rotated["state"] == "active"
    assert rotated["signs_from"] == rotated["created_at"]
    (listed,) = json.loads(run("keys", "list", "--config", str(path), "--json").stdout)["keys"]
    assert (listed["kid"], listed["state"]) == (rotated["kid"], "active")
    signs_from = datetime.fromisoformat(listed["signs_from"].replace("Z", "+00:00"))
    assert signs_from <= datetime.now(UTC)
    human = run("keys", "rotate", "--config", str(path))
    assert human.returncode == 0, human.stderr
    assert "signs from" in human.stdout and "signs now" not in human.stdout  # a second key waits


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


def _symlinked_dir(tmp_path: Path) -> Path:
    real = tmp_path / "real"
    real.mkdir()
    (tmp_path / "alias").symlink_to(real)
    return tmp_path / "alias"


def test_generate_public_out_never_replaces_a_file_or_the_private_key(tmp_path: Path) -> None:
    existing = tmp_path / "existing.pem"
    existing.write_text("someone else's file\n")
    dangling = tmp_path / "dangling.pem"
    dangling.symlink_to(tmp_path / "nowhere")
    alias = _symlinked_dir(tmp_path)
    refusals = [
        (tmp_path / "gen.pem", tmp_path / "gen.pem", "private key's path"),
        (tmp_path / "gen.pem", tmp_path / "." / "gen.pem", "private key's path"),
        (tmp_path / "real" / "gen.pem", alias / "gen.pem", "private key's path"),
        (tmp_path / "gen.pem", existing, "refusing to overwrite"),
        (tmp_path / "gen.pem", dangling, "refusing to overwrite"),
        (tmp_path / "gen.pem", tmp_path / "missing" / "pub.pem", "does not exist"),
    ]
    for out, public_out, fragment in refusals:
        result = run("keys", "generate", "--type", "ec-p256", "--out", str(out),
                     "--public-out", str(public_out))
        assert_one_line_error(result, fragment)
        assert not out.exists(), (out, public_out)  # refused before anything was written
    assert existing.read_text() == "someone else's file\n"
    assert dangling.is_symlink() and not (tmp_path / "nowhere").exists()


def test_generate_removes_the_private_key_when_the_public_key_cannot_be_written(
    tmp_path: Path,
) -> None:
    # A name that fits (255 bytes) while its temp file's name does not: the public write fails
    # after the private key was written, even for root.
    public_out = tmp_path / ("p" * 250)
    out = tmp_path / "gen.pem"
    result = run("keys", "generate", "--type", "ec-p256", "--out", str(out),
                 "--public-out", str(public_out))
    assert_one_line_error(result, "File name too long")
    assert sorted(tmp_path.iterdir()) == []  # neither key, nor a temp file


def test_generate_public_out_writes_the_matching_public_key(tmp_path: Path) -> None:
    keys = tmp_path / "keys"
    keys.mkdir()
    public_out = tmp_path / "public.pem"
    result = run("keys", "generate", "--type", "ec-p256", "--out", str(keys),
                 "--public-out", str(public_out), "--json")
    assert result.returncode == 0, result.stderr
    reply = json.loads(result.stdout)
    assert stat.S_IMODE(public_out.stat().st_mode) == 0o644
    assert stat.S_IMODE(Path(reply["path"]).stat().st_mode) == 0o600
    from cryptography.hazmat.primitives import serialization

    public = serialization.load_pem_public_key(public_out.read_bytes())
    assert jose.thumbprint(public) == reply["kid"]  # type: ignore[arg-type]
    assert reply["public_path"] == str(public_out)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["keys", "public.pem"]  # no temp left


def _two_backends(tmp_path: Path, first: Path, second: Path) -> Path:
    path = config_file(tmp_path, first)
    path.write_text(path.read_text() + f'[[backends]]\nname = "b"\ntype = "file"\npath = "{second}"\n')
    return path


def test_revoke_disables_every_copy_of_the_key(tmp_path: Path) -> None:
    """The ring shows one entry per kid; two files of one key in the key directory and a third
    copy in another backend must all be disabled, or the kid keeps signing."""
    keys, other = tmp_path / "keys", tmp_path / "other"
    keys.mkdir()
    other.mkdir()
    now = datetime.now(UTC)
    key = keygen.generate("ec-p256")
    pem, kid = keygen.private_pem(key), jose.thumbprint(key.public_key())  # type: ignore[arg-type]
    copies = [keys / name_for(now - timedelta(days=3)), keys / name_for(now - timedelta(days=2)),
              other / name_for(now - timedelta(days=1))]
    for copy in copies:
        write_private_file(copy, pem)
    pending = write_key(keys, "ec-p256", now - timedelta(hours=1))
    write_key(other, "ec-p256", now - timedelta(days=4))  # the key that signs afterwards
    path = _two_backends(tmp_path, keys, other)
    listing = json.loads(run("keys", "list", "--config", str(path), "--json").stdout)["keys"]
    assert [k["kid"] for k in listing].count(kid) == 1 and len(listing) == 2
    result = run("keys", "revoke", "--config", str(path), kid, "--json")
    assert result.returncode == 0, result.stderr
    reply = json.loads(result.stdout)
    assert reply["disabled_versions"] == 3 and reply["backends"] == ["b", "local"]
    assert sorted(v["version"] for v in reply["versions"]) == sorted(c.name for c in copies)
    assert reply["signing_kid"] not in (None, kid)
    assert not any(c.exists() for c in copies)
    assert all(c.with_name(c.name + ".revoked").exists() for c in copies)
    listing = json.loads(run("keys", "list", "--config", str(path), "--json").stdout)["keys"]
    assert kid not in [k["kid"] for k in listing]
    write_key(keys)  # so that revoking `pending` leaves the key directory a key
    pending_kid = jose.thumbprint(load_private_key(pending, pending.read_bytes()).public_key())
    human = run("keys", "revoke", "--config", str(path), pending_kid)
    assert human.returncode == 0 and "(1 version disabled) in backend local" in human.stdout


def test_revoke_fails_while_a_copy_still_signs(tmp_path: Path) -> None:
    """A copy the backend cannot disable (a single key file, as otfd uses) keeps the kid in the
    ring: exit 2 naming it, never "revoked"."""
    keys = tmp_path / "keys"
    keys.mkdir()
    pem = keygen.private_pem(keygen.generate("ec-p256"))
    in_dir = keys / name_for(datetime.now(UTC) - timedelta(days=1))
    write_private_file(in_dir, pem)
    write_key(keys, "ec-p256")  # pending: the key directory keeps a key after the revocation
    single = tmp_path / "otfd.pem"
    write_private_file(single, pem)
    path = _two_backends(tmp_path, keys, single)
    listing = json.loads(run("keys", "list", "--config", str(path), "--json").stdout)["keys"]
    listed = next(k for k in listing if k["backend"] == "b")
    result = run("keys", "revoke", "--config", str(path), listed["kid"])
    assert_one_line_error(result, "disabled 1 of 2 versions", "still listed: backend b version otfd.pem",
                          "single key file")
    assert result.stdout == "" and not in_dir.exists() and single.exists()


def test_revoke_never_leaves_a_backend_without_keys(tmp_path: Path) -> None:
    """Every replica takes a backend that suddenly lists no key for a fault and keeps the keys
    it had, so revoking a backend's last key would leave it signing there: refused before
    anything is disabled, naming the way out."""
    keys = tmp_path / "keys"
    keys.mkdir()
    (only,) = [write_key(keys)]
    path = config_file(tmp_path, keys)
    (key,) = json.loads(run("keys", "list", "--config", str(path), "--json").stdout)["keys"]
    result = run("keys", "revoke", "--config", str(path), key["kid"])
    assert_one_line_error(result, "would leave backend local with no key versions",
                          "keys rotate --backend local")
    assert [p.name for p in keys.iterdir()] == [only.name]
    assert run("keys", "rotate", "--config", str(path)).returncode == 0
    assert run("keys", "revoke", "--config", str(path), key["kid"]).returncode == 0
    assert not only.exists()


def test_impossible_timestamp_in_a_key_file_name_is_a_one_line_error(
    tmp_path: Path, key_dir: Path
) -> None:
    bad = key_dir / "key-20261399T999999Z.pem"
    write_private_file(bad, keygen.private_pem(keygen.generate("ec-p256")))
    result = run("keys", "list", "--issuer", "http://127.0.0.1:8080", "--private-key-path",
                 str(key_dir))
    assert_one_line_error(result, str(bad), "not a valid UTC date")
    served = run("serve", "--config", str(config_file(tmp_path, key_dir, port=free_port())),
                 timeout=30)  # refuses to start rather than staying unready
    assert served.returncode == 2 and "Traceback" not in served.stderr, served.stderr
    last = served.stderr.strip().splitlines()[-1]
    assert last.startswith("keysvc: error: ") and str(bad) in last


@pytest.mark.parametrize(
    ("issuer", "fragment"),
    [
        ("http://127.0.0.1:abc", "port"),
        ("http://127.0.0.1:99999", "port"),
        ("ftp://example.com", "https"),
        ("http://example.com", "https"),
        ("https://example.com/", "trailing slash"),
    ],
)
def test_init_refuses_a_bad_issuer_before_writing_anything(
    tmp_path: Path, issuer: str, fragment: str
) -> None:
    target = tmp_path / "a" / "dev"
    assert_one_line_error(run("init", "--dir", str(target), "--issuer", issuer), "--issuer", fragment)
    assert list(tmp_path.iterdir()) == []


def test_init_writes_valid_toml_for_any_path(tmp_path: Path) -> None:
    import tomllib

    issuer = "http://127.0.0.1:8443/dev"
    target = tmp_path / 'odd "dir" \\ name\n#'
    result = run("init", "--dir", str(target), "--issuer", issuer, "--key-type", "ec-p256")
    assert result.returncode == 0, result.stderr
    config = tomllib.loads((target / "keysvc.toml").read_text())
    assert config["issuer"] == issuer and config["server"] == {"host": "127.0.0.1", "port": 8443}
    assert config["backends"][0]["path"] == str(target / "keys")
    assert config["clients"][0]["token_file"] == str(target / "client-token")
    listing = run("keys", "list", "--config", str(target / "keysvc.toml"), "--json")
    assert listing.returncode == 0, listing.stderr


@pytest.mark.parametrize("issuer", ['http://127.0.0.1:8080/x"y', "http://127.0.0.1:8080/x\\y"])
def test_init_refuses_an_issuer_with_a_quote_or_backslash_before_writing(
    tmp_path: Path, issuer: str
) -> None:
    """No issuer the service accepts holds either (they are not URL characters)."""
    target = tmp_path / "dev"
    result = run("init", "--dir", str(target), "--issuer", issuer, "--key-type", "ec-p256")
    assert_one_line_error(result, "--issuer: must be a URL of printable ASCII characters")
    assert list(tmp_path.iterdir()) == []


def test_init_writes_an_issuer_as_toml_reads_it_back(tmp_path: Path) -> None:
    import tomllib

    issuer = "http://127.0.0.1:8080/a'b%22c$d"  # what the service accepts, quotes and all
    target = tmp_path / "dev"
    result = run("init", "--dir", str(target), "--issuer", issuer, "--key-type", "ec-p256")
    assert result.returncode == 0, result.stderr
    assert tomllib.loads((target / "keysvc.toml").read_text())["issuer"] == issuer


def test_init_removes_what_it_wrote_when_a_later_write_fails(tmp_path: Path) -> None:
    """keysvc.toml (~700 bytes) is written last; with files capped at 500 bytes its write fails
    after the key and the client token were written, and init removes both and its directories,
    so a re-run starts from nothing."""
    import os
    import resource
    import subprocess

    from tests.cli import KEYSVC

    def cap_file_size() -> None:  # Python ignores SIGXFSZ: a write past it fails with EFBIG
        resource.setrlimit(resource.RLIMIT_FSIZE, (500, 500))

    target = tmp_path / "a" / "dev"
    env = {k: v for k, v in os.environ.items() if not k.startswith(("KEYSVC_", "OTF_"))}
    result = subprocess.run(
        [*KEYSVC, "init", "--dir", str(target), "--key-type", "ec-p256"], capture_output=True,
        text=True, env=env, timeout=60, preexec_fn=cap_file_size,
    )
    assert_one_line_error(result, "File too large")
    assert list(tmp_path.iterdir()) == []
    again = run("init", "--dir", str(target), "--key-type", "ec-p256")
    assert again.returncode == 0, again.stderr
    assert len(list((target / "keys").iterdir())) == 1


def test_init_refuses_an_unfinished_setup(tmp_path: Path) -> None:
    """keys or a client token without keysvc.toml (a set-up that crashed halfway): init does not
    add a second key or replace the token."""
    target = tmp_path / "dev"
    target.mkdir()
    token = private(target / "client-token", "kept\n")
    assert_one_line_error(run("init", "--dir", str(target)), "unfinished")
    assert token.read_text() == "kept\n" and sorted(target.iterdir()) == [token]
    token.unlink()
    (target / "keys").mkdir()
    write_key(target / "keys")
    assert_one_line_error(run("init", "--dir", str(target)), "unfinished")
    assert len(list((target / "keys").iterdir())) == 1 and not (target / "keysvc.toml").exists()


@pytest.mark.parametrize(
    "value",
    ["", "plain", 'q"uote', "back\\slash", "new\nline", "tab\tand\x00nul\x1f\x7f", "ünï ✓ 😀",
     "'single'", '"""', "\\u0041"],
)
def test_toml_string_round_trips(value: str) -> None:
    import tomllib

    from keysvc.cli.init import toml_string

    assert tomllib.loads(f"v = {toml_string(value)}\n")["v"] == value
    assert "\n" not in toml_string(value)


def test_toml_string_refuses_what_toml_cannot_hold() -> None:
    from keysvc.cli.init import toml_string

    with pytest.raises(ValueError, match="not valid Unicode"):
        toml_string("bad\udcff")


class _Documents:
    """A plain-HTTP server on 127.0.0.1 answering fixed bodies by path, in a thread."""

    def __init__(self) -> None:
        import http.server
        import threading

        self.bodies: dict[str, bytes] = {}
        documents = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self) -> None:  # noqa: N802
                body = documents.bodies.get(self.path)
                self.send_response(200 if body is not None else 404)
                self.send_header("Content-Type", "application/json")
                self.end_headers()
                self.wfile.write(body or b"{}")

            def log_message(self, *args: object) -> None:
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


def test_token_verify_bad_input_is_a_one_line_error(tmp_path: Path) -> None:
    assert_one_line_error(run("token", "verify", "t", "--issuer", "http://127.0.0.1:abc"),
                          "--issuer", "not a valid URL")
    assert_one_line_error(run("token", "verify", "t", "--issuer", "file:///etc"), "http(s)")
    leaky = run("token", "verify", "t", "--issuer", "http://u:s3cret@127.0.0.1:x")
    assert_one_line_error(leaky, "not a valid URL")
    assert "s3cret" not in leaky.stderr
    documents = _Documents()
    try:
        discovery = "/.well-known/openid-configuration"
        documents.bodies[discovery] = b'["not", "an", "object"]'
        assert_one_line_error(run("token", "verify", "t", "--issuer", documents.url),
                              "not a JSON object")
        secret = tmp_path / "jwks.json"
        secret.write_text('{"keys": []}')
        for jwks_uri, fragment in [(secret.as_uri(), "must be an http(s) URL with a host (not file:)"),
                                   ("http://127.0.0.1:abc/jwks", "not a valid URL")]:
            documents.bodies[discovery] = json.dumps(
                {"issuer": documents.url, "jwks_uri": jwks_uri}).encode()
            assert_one_line_error(run("token", "verify", "t", "--issuer", documents.url),
                                  "jwks_uri", fragment)
    finally:
        documents.close()


@pytest.mark.parametrize(
    ("claims", "audience", "message"),
    [
        ({"iss": "https://b.example"}, None,
         "issuer: expected 'https://a.example', the token has 'https://b.example'"),
        ({"aud": ["x", "y"]}, "z", "audience: expected 'z', the token has ['x', 'y']"),
        ({"exp": 1_000_000_000}, None, "it expired at 2001-09-09T01:46:40Z ("),
        ({"nbf": 4_000_000_000}, None, "it is not valid before 2096-10-02T07:06:40Z ("),
        ({"iat": None}, None, "it has no numeric iat claim"),
    ],
)
def test_token_verify_says_what_was_expected_and_what_it_found(
    claims: dict, audience: str | None, message: str
) -> None:
    from keysvc.cli.common import CLIError
    from keysvc.cli.token import _check_claims

    now = int(datetime.now(UTC).timestamp())
    good = {"iss": "https://a.example", "aud": "x", "iat": now, "exp": now + 60}
    _check_claims(good, "https://a.example", "x")
    with pytest.raises(CLIError) as refused:
        _check_claims({**good, **claims}, "https://a.example", audience)
    assert refused.value.format_message().startswith(f"token does not verify: {message}")


def test_keys_list_all_names_every_version_with_its_file(tmp_path: Path) -> None:
    """--all: the published keys, the ones that left the JWKS (`gone`) and the revoked ones
    (`revoked`), each with the file to delete, so the runbooks' "delete the file" is exact."""
    keys = tmp_path / "keys"
    keys.mkdir()
    now = datetime.now(UTC)
    # publish_lead 24h, max_ttl 2h, jwks_max_age 15m (the defaults)
    oldest = write_key(keys, created=now - timedelta(days=30))  # left the JWKS 45m ago
    retiring = write_key(keys, created=now - timedelta(hours=27))  # stopped signing 1h ago
    active = write_key(keys, created=now - timedelta(hours=25))
    revoked = write_key(keys, created=now - timedelta(hours=1))  # was pending
    path = config_file(tmp_path, keys)
    kid = {p.name: jose.thumbprint(load_private_key(p, p.read_bytes()).public_key())
           for p in (oldest, retiring, active, revoked)}
    result = run("keys", "revoke", "--config", str(path), kid[revoked.name])
    assert result.returncode == 0, result.stderr
    plain = json.loads(run("keys", "list", "--config", str(path), "--json").stdout)["keys"]
    assert [k["kid"] for k in plain] == [kid[retiring.name], kid[active.name]]
    result = run("keys", "list", "--config", str(path), "--all", "--json")
    assert result.returncode == 0, result.stderr
    rows = {(k["kid"], k["state"], k["version"]) for k in json.loads(result.stdout)["keys"]}
    assert rows == {
        (kid[oldest.name], "gone", oldest.name),
        (kid[retiring.name], "retiring", retiring.name),
        (kid[active.name], "active", active.name),
        (kid[revoked.name], "revoked", revoked.name + ".revoked"),
    }
    table = run("keys", "list", "--config", str(path), "--all")
    assert table.stdout.splitlines()[0].split()[-1] == "VERSION"
    assert any(line.split()[-1] == revoked.name + ".revoked" for line in table.stdout.splitlines())


def test_keys_list_url_reads_a_running_replica(tmp_path: Path, key_dir: Path) -> None:
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    path = config_file(tmp_path, key_dir, port=port)
    local = json.loads(run("keys", "list", "--config", str(path), "--json").stdout)["keys"]
    with serving("--config", str(path), url=url):
        result = run("keys", "list", "--url", url, "--token-file", str(tmp_path / "token"),
                     "--json")
        assert result.returncode == 0, result.stderr
        assert json.loads(result.stdout)["keys"] == local
        table = run("keys", "list", "--url", url, "--token-file", str(tmp_path / "token"))
        assert table.returncode == 0 and local[0]["kid"] in table.stdout
        wrong = private(tmp_path / "wrong", "not-the-token\n")
        assert_one_line_error(run("keys", "list", "--url", url, "--token-file", str(wrong)),
                              "refused the client token", "keys:read")
    assert_one_line_error(run("keys", "list", "--url", url), "--token-file")
    assert_one_line_error(run("keys", "list", "--url", url, "--all", "--token-file",
                              str(tmp_path / "token")), "--all needs the backends")


def test_doctor_local_judges_a_development_instance(tmp_path: Path, key_dir: Path) -> None:
    """`make run`'s instance (http on 127.0.0.1): --local skips only what the clouds alone
    demand (https, no port, a public CA) and judges the rest; without it those checks fail."""
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    path = config_file(tmp_path, key_dir, port=port)
    with serving("--config", str(path), url=url):
        # (an EC key: Azure would refuse its tokens, which --local still says; judge for the
        # other two clouds here)
        local = run("doctor", "--issuer", url, "--local", "--json", "--client-token-file",
                    str(tmp_path / "token"), "--cloud", "aws", "--cloud", "gcp")
        assert local.returncode == 0, local.stdout + local.stderr
        findings = json.loads(local.stdout)["findings"]
        status = {f["check"]: f["status"] for f in findings}
        assert status["issuer_url"] == "skip" and status["jwks_uri"] == "skip"
        assert status["discovery"] == status["discovery_issuer"] == "ok"
        assert status["keys_published"] == "ok" and status["publish_lead"] == "ok"
        assert "fail" not in status.values()
        cloud = run("doctor", "--issuer", url, "--json")
        assert cloud.returncode == 1
        assert {f["check"] for f in json.loads(cloud.stdout)["findings"]
                if f["status"] == "fail"} >= {"issuer_url", "jwks_uri"}
    assert_one_line_error(run("doctor", "--issuer", "https://keys.example.com", "--local"),
                          "--local judges an instance on this machine")


def test_serve_host_sets_the_listen_address_and_keeps_the_port(
    tmp_path: Path, key_dir: Path
) -> None:
    """KEYSVC_HOST (the container image's 0.0.0.0) replaces server.host only; --listen wins."""
    port = free_port()
    path = config_file(tmp_path, key_dir, port=port)
    path.write_text(path.read_text().replace("[server]\n", '[server]\nhost = "127.0.0.9"\n'))
    url = f"http://127.0.0.1:{port}"
    with serving("--config", str(path), url=url, env={"KEYSVC_HOST": "127.0.0.1"}) as process:
        pass
    _, stderr = process.communicate()
    started = next(json.loads(line) for line in stderr.splitlines() if "serving" in line)
    assert started["listen"] == f"http://127.0.0.1:{port}"
    other = free_port()
    with serving("--config", str(path), "--listen", f"127.0.0.1:{other}",
                 url=f"http://127.0.0.1:{other}", env={"KEYSVC_HOST": "127.0.0.9"}):
        pass


def test_metrics_port_serves_the_metrics_alone(tmp_path: Path, key_dir: Path) -> None:
    """server.metrics_port: /metrics on a port of its own, with nothing else there, so a
    NetworkPolicy can give Prometheus that port and not the token API."""
    port, metrics_port = free_port(), free_port()
    path = config_file(tmp_path, key_dir, port=port)
    path.write_text(path.read_text().replace("[server]\n", f"[server]\nmetrics_port = {metrics_port}\n"))
    url, metrics_url = f"http://127.0.0.1:{port}", f"http://127.0.0.1:{metrics_port}"
    for workers in ("1", "2"):
        with serving("--config", str(path), "--workers", workers, url=url):
            with urllib.request.urlopen(metrics_url + "/metrics") as response:
                assert b"keysvc_ring_keys" in response.read()
            for other in ("/v1/keys", "/.well-known/jwks", "/healthz"):
                with pytest.raises(urllib.error.HTTPError) as refused:
                    urllib.request.urlopen(metrics_url + other)
                assert refused.value.code == 404
                assert json.load(refused.value)["error"]["code"] == "not_found"
            with urllib.request.urlopen(url + "/metrics") as response:  # still there too
                assert response.status == 200
    same = path.read_text().replace(f"metrics_port = {metrics_port}", f"metrics_port = {port}")
    path.write_text(same)
    assert_one_line_error(run("serve", "--config", str(path)), "metrics_port must differ from port")

