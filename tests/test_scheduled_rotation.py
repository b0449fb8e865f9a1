"""`keys rotate --if-older-than` and `POST /v1/keys/rotate`: a version only when the newest one
is old enough, at most one from runs started at once on one key directory, and a reply that says
what was done or why not."""

from __future__ import annotations

import json
import multiprocessing
import subprocess
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from keysvc.backends.file import LOCK_NAME
from keysvc.config import merge, parse_config
from keysvc.service import local_ring
from tests.cli import KEYSVC, assert_one_line_error, config_file, run
from tests.conftest import FAST_ROTATION, file_config, write_key
from tests.service import start_service

HOUR_AGO = datetime.now(UTC) - timedelta(hours=1)


def pem_files(directory: Path) -> list[str]:
    return sorted(p.name for p in directory.glob("*.pem"))


def keys_dir(tmp_path: Path, created: datetime, key_type: str = "ec-p256") -> Path:
    directory = tmp_path / "keys"
    directory.mkdir(mode=0o700)
    write_key(directory, key_type, created)
    return directory


# -- the command line -------------------------------------------------------------------------


def test_rotates_only_when_the_newest_version_is_older_than_the_duration(tmp_path: Path) -> None:
    keys = keys_dir(tmp_path, datetime.now(UTC) - timedelta(hours=2))
    config = str(config_file(tmp_path, keys))
    first = run("keys", "rotate", "--config", config, "--if-older-than", "1h", "--json")
    assert first.returncode == 0, first.stderr
    done = json.loads(first.stdout)
    assert done["rotated"] is True and done["reason"] == "older"
    assert done["if_older_than"] == "1h" and done["state"] == "pending"
    assert done["newest_before"]["version"] in pem_files(keys)
    assert done["version"] in pem_files(keys) and len(pem_files(keys)) == 2
    created = datetime.fromisoformat(done["created_at"])
    assert datetime.fromisoformat(done["signs_from"]) == created + timedelta(hours=24)

    again = run("keys", "rotate", "--config", config, "--if-older-than", "1h", "--json")
    assert again.returncode == 0, again.stderr
    skipped = json.loads(again.stdout)
    assert skipped["rotated"] is False and skipped["reason"] == "recent"
    assert skipped["newest_before"]["kid"] == done["kid"]
    assert "kid" not in skipped and len(pem_files(keys)) == 2
    text = run("keys", "rotate", "--config", config, "--if-older-than", "1h")
    assert text.returncode == 0 and text.stdout.startswith("nothing to do: the newest version")
    assert "not older than 1h" in text.stdout and len(pem_files(keys)) == 2


def test_the_period_is_the_default_duration(tmp_path: Path) -> None:
    keys = keys_dir(tmp_path, datetime.now(UTC) - timedelta(days=3))
    with_period = str(config_file(tmp_path, keys, extra='[rotation]\nperiod = "7d"'))
    # The flag alone, before another option: rotation.period.
    result = run("keys", "rotate", "--if-older-than", "--config", with_period, "--json")
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout).items() >= {"rotated": False, "if_older_than": "7d"}.items()
    forced = run("keys", "rotate", "--config", with_period, "--if-older-than", "2d", "--json")
    assert json.loads(forced.stdout)["rotated"] is True

    no_period = tmp_path / "np"
    no_period.mkdir()
    plain = str(config_file(no_period, keys))
    assert_one_line_error(
        run("keys", "rotate", "--config", plain, "--if-older-than"), "rotation.period"
    )
    bad = run("keys", "rotate", "--config", plain, "--if-older-than", "soon")
    assert bad.returncode == 2 and "invalid duration 'soon'" in bad.stderr
    # Without the flag: a version every time, as before.
    for _ in range(2):
        assert run("keys", "rotate", "--config", plain, "--json").returncode == 0
    assert len(pem_files(keys)) == 4


def test_a_period_not_longer_than_the_publish_lead_is_refused() -> None:
    base = {"issuer": "https://keys.example.com", **file_config(Path("/nonexistent"))}
    with pytest.raises(ValueError, match="period must be longer than publish_lead"):
        parse_config(merge(base, {"rotation": {"publish_lead": "24h", "period": "24h"}}))
    config = parse_config(merge(base, {"rotation": {"period": "30d"}}))
    assert config.rotation.period == timedelta(days=30)
    assert config.rotation.prune_margin == timedelta(hours=1)


def test_concurrent_runs_of_the_command_create_one_version(tmp_path: Path) -> None:
    """Four `keys rotate --if-older-than` processes started at once (RSA keys: a generation
    takes long enough for the runs to overlap)."""
    keys = keys_dir(tmp_path, datetime.now(UTC) - timedelta(hours=2), "rsa-2048")
    config = str(config_file(tmp_path, keys))
    argv = [*KEYSVC, "keys", "rotate", "--config", config, "--if-older-than", "1h", "--json"]
    processes = [subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                  text=True) for _ in range(4)]
    results = [p.communicate(timeout=120) for p in processes]
    assert all(p.returncode == 0 for p in processes), results
    replies = [json.loads(out) for out, _ in results]
    assert sorted(r["rotated"] for r in replies) == [False, False, False, True]
    assert len(pem_files(keys)) == 2
    (created,) = [r["kid"] for r in replies if r["rotated"]]
    assert {r["newest_before"]["kid"] for r in replies if not r["rotated"]} == {created}


def _rotate_at_the_barrier(config_data: dict[str, Any], barrier: Any, out: Any) -> None:
    import asyncio

    from keysvc import rotation

    async def go() -> bool:
        async with local_ring(parse_config(config_data)) as ring:
            barrier.wait()  # every process has listed the ring: now all rotate at once
            return (await rotation.rotate(ring, None, timedelta(hours=1))).rotated

    out.put(asyncio.run(go()))


def test_processes_released_at_one_instant_create_one_version(tmp_path: Path) -> None:
    """The race without the luck of process start-up: four processes, each with its ring
    loaded, released together by a barrier. Without the lock file each would see the old
    newest version and create one (this test fails so when rotation_lock is a no-op)."""
    keys = keys_dir(tmp_path, datetime.now(UTC) - timedelta(hours=2), "rsa-2048")
    data = {"issuer": "https://keys.example.com", **file_config(keys)}
    context = multiprocessing.get_context("spawn")
    barrier, out = context.Barrier(4), context.Queue()
    workers = [context.Process(target=_rotate_at_the_barrier, args=(data, barrier, out))
               for _ in range(4)]
    for worker in workers:
        worker.start()
    outcomes = [out.get(timeout=120) for _ in workers]
    for worker in workers:
        worker.join(30)
    assert sorted(outcomes) == [False, False, False, True]
    assert len(pem_files(keys)) == 2
    assert (keys / LOCK_NAME).stat().st_mode & 0o777 == 0o600


def test_a_read_only_or_single_file_backend_says_it_cannot_rotate(tmp_path: Path) -> None:
    key = write_key(tmp_path)
    config = str(config_file(tmp_path, key))
    assert_one_line_error(
        run("keys", "rotate", "--config", config, "--if-older-than", "1h"), "cannot rotate"
    )


def test_a_planted_symlink_is_never_followed_as_the_lock(tmp_path: Path) -> None:
    keys = keys_dir(tmp_path, HOUR_AGO)
    target = tmp_path / "elsewhere"
    (keys / LOCK_NAME).symlink_to(target)
    result = run("keys", "rotate", "--config", str(config_file(tmp_path, keys)), "--if-older-than",
                 "1m")
    assert_one_line_error(result, "rotation lock")
    assert not target.exists() and len(pem_files(keys)) == 1


# -- over HTTP ----------------------------------------------------------------------------------


async def test_post_rotate_creates_a_version_or_says_why_not(tmp_path: Path) -> None:
    keys = keys_dir(tmp_path, datetime.now(UTC) - timedelta(seconds=30))
    config = merge(FAST_ROTATION, file_config(keys))
    async with start_service(config, refresh_loop=False) as svc:
        (old_kid,) = await svc.kids()
        status, _, body = await svc.request("POST", "/v1/keys/rotate", json={})
        assert status == 200, body
        assert body["rotated"] is True and body["backend"] == "local"
        assert body["reason"] == "older" and body["if_older_than"] == "4s"
        assert body["state"] == "pending" and body["newest_before"]["kid"] == old_kid
        created = datetime.fromisoformat(body["created_at"].replace("Z", "+00:00"))
        assert body["signs_from"] == (created + timedelta(seconds=4)).isoformat().replace(
            "+00:00", "Z")
        assert sorted(await svc.kids()) == sorted([old_kid, body["kid"]])  # published at once

        # The newest is younger than publish_lead: nothing, whatever if_older_than says.
        for request in ({}, {"if_older_than": "1s"}, {"backend": "local", "if_older_than": "1h"}):
            status, _, again = await svc.request("POST", "/v1/keys/rotate", json=request)
            assert status == 200 and again["rotated"] is False and again["reason"] == "recent"
            assert again["newest_before"]["kid"] == body["kid"]
        assert "not older than 1h" in again["message"]
        assert len(pem_files(keys)) == 2


async def test_post_rotate_refusals(tmp_path: Path) -> None:
    keys = keys_dir(tmp_path, HOUR_AGO)
    other = write_key(tmp_path, created=HOUR_AGO - timedelta(minutes=1))  # one key file
    config = {**FAST_ROTATION, "backends": [
        {"name": "dir", "type": "file", "path": str(keys)},
        {"name": "one", "type": "file", "path": str(other)},
    ]}
    async with start_service(config, refresh_loop=False) as svc:
        cases = [
            ({}, 400, "backend_required"),
            ({"backend": "nope"}, 400, "unknown_backend"),
            ({"backend": "one"}, 409, "cannot_rotate"),
            ({"backend": "dir", "if_older_than": "a while"}, 400, "invalid_request"),
            ({"backend": "dir", "if_older_than": 60}, 400, "invalid_request"),
            ({"backend": "dir", "force": True}, 400, "invalid_request"),
        ]
        for request, expected, code in cases:
            status, _, body = await svc.request("POST", "/v1/keys/rotate", json=request)
            assert (status, body["error"]["code"]) == (expected, code), (request, body)
        assert "a while" not in json.dumps(body)
        status, _, body = await svc.request(
            "POST", "/v1/keys/rotate", data=b"backend=dir",
            headers={"Content-Type": "application/x-www-form-urlencoded"})
        assert status == 415
        assert len(pem_files(keys)) == 1


async def test_post_rotate_needs_the_keys_rotate_scope(tmp_path: Path) -> None:
    keys = keys_dir(tmp_path, HOUR_AGO)
    reader = {"name": "reader", "scopes": ["keys:read"],
              "token_sha256": "a" * 64}
    async with start_service({**file_config(keys), "clients": [reader]},
                             refresh_loop=False) as svc:
        status, headers, _ = await svc.request("POST", "/v1/keys/rotate", json={}, token="x")
        assert status == 401 and headers["WWW-Authenticate"].startswith("Bearer")
    import hashlib

    token = "reader-token"
    reader["token_sha256"] = hashlib.sha256(token.encode()).hexdigest()
    async with start_service({**file_config(keys), "clients": [reader]},
                             refresh_loop=False) as svc:
        status, _, body = await svc.request("POST", "/v1/keys/rotate", json={}, token=token)
        assert status == 403 and body["error"]["code"] == "forbidden"
    assert len(pem_files(keys)) == 1
