"""`keysvc publish`: static copies of the public documents in a directory, in S3 (moto) and in
Cloud Storage (gcp-storage-emulator, a GCS JSON API server the real google-cloud-storage client
talks to over HTTP)."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import stat
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import boto3
import pytest
from click.testing import CliRunner
from moto.server import ThreadedMotoServer

from keysvc.cli import cli
from tests.cli import KEYSVC, assert_one_line_error, run
from tests.service import free_port

from .deployment import FAST_LEAD, Deployment, get

PATHS = (".well-known/jwks", ".well-known/openid-configuration")
S3_ENV = {
    "AWS_ACCESS_KEY_ID": "testing",
    "AWS_SECRET_ACCESS_KEY": "testing",
    "AWS_DEFAULT_REGION": "us-east-1",
}


def refused(*args: str) -> str:
    """Run `keysvc publish ARGS` in-process; it must fail with one line on stderr (exit 2)."""
    result = CliRunner().invoke(cli, ["publish", *args])
    assert result.exit_code == 2 and result.stdout == "", (result.stdout, result.stderr)
    lines = result.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("keysvc: error: "), result.stderr
    return lines[0]


def test_directory_copy_has_the_services_bytes_and_cache_metadata(tmp_path: Path) -> None:
    deployment = Deployment.create(tmp_path, rotation={"publish_lead": "1h", "jwks_max_age": "10m"})
    out = tmp_path / "www"
    with deployment.serve():
        result = run("publish", "--config", str(deployment.config), "--to", str(out))
        assert result.returncode == 0, result.stderr
        assert result.stdout.startswith(f"published {out}: ") and "(active)" in result.stdout
        manifest = json.loads((out / ".keysvc-publish.json").read_text())
        for path in PATHS:
            body, headers = get(f"{deployment.issuer}/{path}")
            assert (out / path).read_bytes() == body
            assert (
                manifest[path]["cache_control"] == headers["Cache-Control"] == "public, max-age=600"
            )
            assert manifest[path]["etag"] == headers["ETag"]
            assert manifest[path]["content_type"] == "application/json"
            assert stat.S_IMODE((out / path).stat().st_mode) == 0o644
    assert sorted(p.name for p in (out / ".well-known").iterdir()) == [
        "jwks",
        "openid-configuration",
    ]


def test_json_output_and_replacing_an_existing_copy(tmp_path: Path) -> None:
    deployment = Deployment.create(tmp_path)
    out = tmp_path / "www"
    first = run("publish", "--config", str(deployment.config), "--to", str(out), "--json")
    inode = (out / PATHS[0]).stat().st_ino
    # A copy of the key under another name has the same kid: the documents are the same.
    (deployment.keys / "extra.pem").write_bytes(next(deployment.keys.iterdir()).read_bytes())
    os.chmod(deployment.keys / "extra.pem", 0o600)
    same = run("publish", "--config", str(deployment.config), "--to", str(out), "--json")
    assert first.returncode == same.returncode == 0, same.stderr
    assert json.loads(same.stdout)["changed"] is False
    assert (out / PATHS[0]).stat().st_ino == inode
    (deployment.keys / "extra.pem").unlink()
    assert run("keys", "rotate", "--config", str(deployment.config)).returncode == 0
    second = run("publish", "--config", str(deployment.config), "--to", str(out), "--json")
    assert second.returncode == 0, second.stderr
    report = json.loads(second.stdout)
    assert report["changed"] is True and set(report["documents"]) == set(PATHS)
    assert [k["state"] for k in report["keys"]] == ["active", "pending"]
    assert (out / PATHS[0]).stat().st_ino != inode  # replaced by rename, never rewritten in place
    # Nothing new to publish: nothing written, and the report says so.
    inode = (out / PATHS[0]).stat().st_ino
    third = run("publish", "--config", str(deployment.config), "--to", str(out), "--json")
    assert third.returncode == 0, third.stderr
    assert json.loads(third.stdout)["changed"] is False
    assert (out / PATHS[0]).stat().st_ino == inode
    human = run("publish", "--config", str(deployment.config), "--to", str(out))
    assert human.stdout.startswith(f"unchanged {out}: "), human.stdout
    # A copy edited by hand (or a different Cache-Control) is not "unchanged": it is replaced.
    (out / PATHS[0]).write_bytes(b'{"keys":[]}')
    fourth = run("publish", "--config", str(deployment.config), "--to", str(out), "--json")
    assert json.loads(fourth.stdout)["changed"] is True
    assert json.loads((out / PATHS[0]).read_text())["keys"]


def test_otfd_flags_work_without_a_config(tmp_path: Path) -> None:
    key = tmp_path / "key.pem"
    assert run("keys", "generate", "--type", "rsa-2048", "--out", str(key)).returncode == 0
    result = run(
        "publish",
        "--issuer",
        "https://otf.example.com",
        "--private-key-path",
        str(key),
        "--to",
        str(tmp_path / "www"),
    )
    assert result.returncode == 0, result.stderr
    discovery = json.loads((tmp_path / "www" / PATHS[1]).read_text())
    assert discovery["jwks_uri"] == "https://otf.example.com/.well-known/jwks"


@pytest.mark.parametrize(
    ("to", "fragment"),
    [
        ("ftp://host/x", "give a directory, s3://BUCKET[/PREFIX] or gs://"),
        ("s3://", "name the bucket (s3://BUCKET"),
        ("gs://", "name the bucket (gs://BUCKET"),
        ("FILE", "not a directory"),
    ],
)
def test_bad_targets(tmp_path: Path, to: str, fragment: str) -> None:
    deployment = Deployment.create(tmp_path)
    target = str(deployment.config) if to == "FILE" else to
    assert fragment in refused("--config", str(deployment.config), "--to", target)


def test_unwritable_directory_is_a_one_line_error(tmp_path: Path) -> None:
    deployment = Deployment.create(tmp_path)
    out = tmp_path / "www"
    (out / ".well-known").mkdir(parents=True)
    (out / ".well-known" / "jwks").mkdir()  # a directory where the file should go
    error = refused("--config", str(deployment.config), "--to", str(out))
    assert "cannot write" in error and "jwks" in error
    assert [p.name for p in (out / ".well-known").iterdir()] == ["jwks"]  # nothing half-written


def test_watch_refuses_an_interval_that_breaks_the_publish_lead(tmp_path: Path) -> None:
    deployment = Deployment.create(tmp_path)
    error = refused(
        "--config",
        str(deployment.config),
        "--to",
        str(tmp_path / "w"),
        "--watch",
        "--interval",
        "5s",
    )
    assert "--interval 5s" in error and "publish_lead 6s" in error


# --- S3 ---------------------------------------------------------------------------------------


@pytest.fixture
def s3_endpoint() -> Iterator[str]:
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=free_port(), verbose=False)
    server.start()
    try:
        yield f"http://127.0.0.1:{server._port}"  # noqa: SLF001 - moto keeps the port there
    finally:
        server.stop()


def s3(endpoint: str) -> Any:
    return boto3.client(
        "s3",
        endpoint_url=endpoint,
        region_name="us-east-1",
        aws_access_key_id="testing",
        aws_secret_access_key="testing",
    )


def test_s3_objects_carry_the_services_bytes_and_cache_control(
    tmp_path: Path, s3_endpoint: str
) -> None:
    deployment = Deployment.create(tmp_path, rotation={"publish_lead": "1h", "jwks_max_age": "10m"})
    s3(s3_endpoint).create_bucket(Bucket="issuer")
    with deployment.serve():
        result = run(
            "publish",
            "--config",
            str(deployment.config),
            "--to",
            "s3://issuer/otf",
            "--s3-endpoint-url",
            s3_endpoint,
            env=S3_ENV,
        )
        assert result.returncode == 0, result.stderr
        assert result.stdout.startswith("published s3://issuer/otf/: ")
        for path in PATHS:
            body, headers = get(f"{deployment.issuer}/{path}")
            stored = s3(s3_endpoint).get_object(Bucket="issuer", Key=f"otf/{path}")
            assert stored["Body"].read() == body
            assert stored["CacheControl"] == headers["Cache-Control"]
            assert stored["ContentType"] == "application/json"
            assert stored["Metadata"]["keysvc-etag"] == headers["ETag"].strip('"')
        again = run(
            "publish", "--config", str(deployment.config), "--to", "s3://issuer/otf",
            "--s3-endpoint-url", s3_endpoint, "--json", env=S3_ENV,
        )
        assert again.returncode == 0, again.stderr
        assert json.loads(again.stdout)["changed"] is False


def test_s3_errors_are_one_line(tmp_path: Path, s3_endpoint: str) -> None:
    deployment = Deployment.create(tmp_path)
    result = run(
        "publish",
        "--config",
        str(deployment.config),
        "--to",
        "s3://missing-bucket",
        "--s3-endpoint-url",
        s3_endpoint,
        env=S3_ENV,
    )
    assert_one_line_error(result, "s3://missing-bucket/.well-known/jwks", "NoSuchBucket")
    assert "testing" not in result.stderr


@pytest.fixture
def gcs_endpoint(tmp_path: Path) -> Iterator[str]:
    """A GCS emulator on 127.0.0.1 with one bucket, "issuer"."""
    port = free_port()
    log = (tmp_path / "gcs.log").open("wb")
    server = subprocess.Popen(
        [str(Path(sys.executable).parent / "gcp-storage-emulator"), "start", "--host", "127.0.0.1",
         "--port", str(port), "--in-memory", "--default-bucket", "issuer", "--quiet"],
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    endpoint = f"http://127.0.0.1:{port}"
    try:
        wait_for_port(port, server)
        yield endpoint
    finally:
        server.terminate()
        server.wait(timeout=10)
        log.close()


def wait_for_port(port: int, process: subprocess.Popen[bytes], timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        assert process.poll() is None, "the emulator exited"
        with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), 0.2):
            return
        time.sleep(0.05)
    raise AssertionError(f"nothing listens on port {port}")


def gcs_bucket(endpoint: str) -> Any:
    from google.auth.credentials import AnonymousCredentials
    from google.cloud import storage

    client = storage.Client(
        project="test", credentials=AnonymousCredentials(), client_options={"api_endpoint": endpoint}
    )
    return client.bucket("issuer")


def test_gcs_objects_carry_the_services_bytes_and_cache_control(
    tmp_path: Path, gcs_endpoint: str
) -> None:
    deployment = Deployment.create(tmp_path, rotation={"publish_lead": "1h", "jwks_max_age": "10m"})
    with deployment.serve():
        for verb in ("published", "unchanged"):  # the second run finds the same objects
            result = run(
                "publish", "--config", str(deployment.config), "--to", "gs://issuer/otf",
                env={"STORAGE_EMULATOR_HOST": gcs_endpoint},
            )
            assert result.returncode == 0, result.stderr
            assert result.stdout.startswith(f"{verb} gs://issuer/otf/: "), result.stdout
        bucket = gcs_bucket(gcs_endpoint)
        assert sorted(b.name for b in bucket.list_blobs()) == sorted(f"otf/{p}" for p in PATHS)
        for path in PATHS:
            body, headers = get(f"{deployment.issuer}/{path}")
            blob = bucket.get_blob(f"otf/{path}")  # the object's resource, as stored
            assert blob.cache_control == headers["Cache-Control"] == "public, max-age=600"
            assert blob.content_type == "application/json"
            assert blob.metadata == {"keysvc-etag": headers["ETag"].strip('"')}
            assert blob.download_as_bytes() == body


def test_gcs_errors_are_one_line(tmp_path: Path, gcs_endpoint: str) -> None:
    deployment = Deployment.create(tmp_path)
    env = {"STORAGE_EMULATOR_HOST": gcs_endpoint}
    result = run("publish", "--config", str(deployment.config), "--to", "gs://missing", env=env)
    assert_one_line_error(result, "gs://missing/.well-known/jwks", "NOT_FOUND")


def test_gcs_without_credentials_is_a_one_line_error(tmp_path: Path) -> None:
    deployment = Deployment.create(tmp_path)
    env = {
        "STORAGE_EMULATOR_HOST": "",
        "GOOGLE_APPLICATION_CREDENTIALS": str(tmp_path / "none.json"),
        "HOME": str(tmp_path),
    }
    result = run("publish", "--config", str(deployment.config), "--to", "gs://issuer", env=env)
    assert_one_line_error(result, "Google credentials")


# --- --watch across a rotation ----------------------------------------------------------------


def read_kids(path: Path) -> list[str]:
    return [k["kid"] for k in json.loads(path.read_text())["keys"]]


def test_watch_publishes_new_keys_before_they_sign_and_drops_retired_ones(tmp_path: Path) -> None:
    deployment = Deployment.create(tmp_path)  # publish lead 6s, max-age 1s, max_ttl 1s
    out = tmp_path / "www"
    process = subprocess.Popen(
        [
            *KEYSVC,
            "publish",
            "--config",
            str(deployment.config),
            "--to",
            str(out),
            "--watch",
            "--json",
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        first = json.loads(process.stdout.readline())  # type: ignore[union-attr]
        (old_kid,) = [k["kid"] for k in first["keys"]]
        new_kid, created = deployment.rotate()
        signs_from = created + FAST_LEAD
        retired_at = signs_from + 2  # max_ttl 1s + jwks_max_age 1s after the old key stops
        seen: list[tuple[float, list[str]]] = []
        while time.time() < retired_at + 1.5:
            seen.append((time.time(), read_kids(out / PATHS[0])))  # always whole JSON
            time.sleep(0.05)
    finally:
        process.send_signal(signal.SIGTERM)
        _, stderr = process.communicate(timeout=10)
    assert process.returncode == 0, stderr
    first_seen = min(t for t, kids in seen if new_kid in kids)
    assert first_seen + 1 <= signs_from, "a verifier caching 1s must see the key before it signs"
    assert all(old_kid in kids for t, kids in seen if t < retired_at)
    last_old = max(t for t, kids in seen if old_kid in kids)
    assert retired_at <= last_old + 0.1 and last_old < retired_at + 0.5
    assert seen[-1][1] == [new_kid]


# --- never an empty JWKS over a good one; never through a symlink ------------------------------


def test_an_empty_jwks_is_never_written_unless_asked(tmp_path: Path) -> None:
    """Every key file deleted: publish refuses (exit 2) and the published copy stays as it was;
    `--allow-empty` writes the empty JWKS on purpose."""
    deployment = Deployment.create(tmp_path)
    out = tmp_path / "www"
    assert run("publish", "--config", str(deployment.config), "--to", str(out)).returncode == 0
    good = (out / PATHS[0]).read_bytes()
    assert json.loads(good)["keys"]
    for path in deployment.keys.iterdir():
        path.unlink()
    error = refused("--config", str(deployment.config), "--to", str(out))
    assert "the JWKS would be empty" in error and "--allow-empty" in error
    assert (out / PATHS[0]).read_bytes() == good
    result = run("publish", "--config", str(deployment.config), "--to", str(out), "--allow-empty")
    assert result.returncode == 0, result.stderr
    assert json.loads((out / PATHS[0]).read_text()) == {"keys": []}


class Watch:
    """`keysvc publish --watch --json` in a child process, its log read as it comes."""

    def __init__(self, deployment: Deployment, out: Path) -> None:
        self.process = subprocess.Popen(
            [*KEYSVC, "publish", "--config", str(deployment.config), "--to", str(out),
             "--watch", "--json"],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        self.log: list[str] = []
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        for line in self.process.stderr:  # type: ignore[union-attr]
            self.log.append(line)

    def wait_for_log(self, text: str, timeout: float = 30) -> None:
        deadline = time.monotonic() + timeout
        while not any(text in line for line in self.log):
            assert self.process.poll() is None, "".join(self.log)
            assert time.monotonic() < deadline, f"never logged {text!r}: {''.join(self.log)}"
            time.sleep(0.05)

    def next_report(self) -> Any:
        return json.loads(self.process.stdout.readline())  # type: ignore[union-attr]

    def stop(self) -> str:
        self.process.send_signal(signal.SIGTERM)
        self.process.wait(timeout=10)
        self._reader.join(10)
        assert self.process.returncode == 0, "".join(self.log)
        return "".join(self.log)


def test_watch_keeps_the_last_good_keys_when_every_key_file_goes(tmp_path: Path) -> None:
    deployment = Deployment.create(tmp_path)  # refreshes every 250ms
    out = tmp_path / "www"
    watch = Watch(deployment, out)
    try:
        first = watch.next_report()
        good = (out / PATHS[0]).read_bytes()
        assert [k["kid"] for k in first["keys"]] == read_kids(out / PATHS[0])
        for path in deployment.keys.iterdir():
            path.unlink()
        watch.wait_for_log("listed no key versions after listing 1")
        time.sleep(1)  # more refreshes and publish rounds
        assert (out / PATHS[0]).read_bytes() == good
    finally:
        log = watch.stop()
    assert log.count("listed no key versions after listing 1") == 1, log


def test_watch_on_an_empty_key_directory_waits_for_a_key(tmp_path: Path) -> None:
    deployment = Deployment.create(tmp_path)
    (key,) = deployment.keys.iterdir()
    key.unlink()
    out = tmp_path / "www"
    watch = Watch(deployment, out)
    try:
        watch.wait_for_log("the JWKS would be empty")
        time.sleep(1)
        assert not (out / PATHS[0]).exists()
        kid, _ = deployment.rotate()
        first = watch.next_report()
        assert [k["kid"] for k in first["keys"]] == [kid] == read_kids(out / PATHS[0])
    finally:
        log = watch.stop()
    assert log.count("the JWKS would be empty") == 1, log


@pytest.mark.parametrize("link", [".well-known", ".well-known/jwks", ".keysvc-publish.json"])
def test_directory_target_never_writes_through_a_symlink(tmp_path: Path, link: str) -> None:
    """Was: a symlinked .well-known sent the documents elsewhere. Now refused, and what the
    link points at is untouched."""
    deployment = Deployment.create(tmp_path)
    out = tmp_path / "www"
    (out / ".well-known").mkdir(parents=True)
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    victim = elsewhere / "jwks" if link == ".well-known" else elsewhere / "file"
    victim.write_text("keep me\n")
    if link == ".well-known":
        (out / link).rmdir()
    (out / link).symlink_to(elsewhere if link == ".well-known" else victim)
    error = refused("--config", str(deployment.config), "--to", str(out))
    assert error == f"keysvc: error: {out / link} is a symbolic link; refusing to write through it"
    assert victim.read_text() == "keep me\n"
    assert sorted(p.name for p in elsewhere.iterdir()) == [victim.name]


def test_the_target_directory_itself_may_be_a_symlink(tmp_path: Path) -> None:
    """--to is the operator's own path: a link to the web root is followed, as before."""
    deployment = Deployment.create(tmp_path)
    real = tmp_path / "srv"
    real.mkdir()
    (tmp_path / "www").symlink_to(real)
    result = run("publish", "--config", str(deployment.config), "--to", str(tmp_path / "www"))
    assert result.returncode == 0, result.stderr
    assert read_kids(real / PATHS[0])


def test_reading_back_a_copy_never_follows_or_blocks(tmp_path: Path) -> None:
    """Before writing, publish reads what the directory holds (so an unchanged copy is not
    rewritten): a FIFO, a symlink or a symlinked .well-known there is "nothing stored", read
    neither through nor blocking on."""
    import asyncio

    from keysvc.publish.targets import MANIFEST, DirectoryTarget

    out = tmp_path / "www"
    (out / ".well-known").mkdir(parents=True)
    (out / MANIFEST).write_text(json.dumps({".well-known/jwks": {"cache_control": "x"}}))
    os.mkfifo(out / ".well-known" / "jwks")
    (tmp_path / "elsewhere").write_text("{}")
    (out / ".well-known" / "openid-configuration").symlink_to(tmp_path / "elsewhere")
    target = DirectoryTarget(out)
    assert asyncio.run(target.stored(".well-known/jwks")) is None
    assert asyncio.run(target.stored(".well-known/openid-configuration")) is None
    (tmp_path / "real").mkdir()
    (tmp_path / "real" / "jwks").write_text("{}")
    linked = tmp_path / "linked"
    linked.mkdir()
    (linked / MANIFEST).write_text((out / MANIFEST).read_text())
    (linked / ".well-known").symlink_to(tmp_path / "real")
    assert asyncio.run(DirectoryTarget(linked).stored(".well-known/jwks")) is None
