"""`keysvc keys prune` through the real command line, on file backends: versions past their
published_until (plus rotation.prune_margin) are renamed aside as revoke does (deleted with
--destroy); nothing in the JWKS is touched; what was done is listed; a dry run changes nothing.
(Every other backend: tests/<backend>/test_prune.py, and the contract's
pruning_keeps_only_the_newest; the safety rule over random histories: test_prune_property.py.)"""

from __future__ import annotations

import json
import shutil
from datetime import UTC, datetime, timedelta
from pathlib import Path

from tests.cli import assert_one_line_error, config_file, run
from tests.conftest import write_key

NOW = datetime.now(UTC)


def history(directory: Path, *ages: timedelta) -> list[str]:
    """Key files created `ages` ago (oldest first), as file names."""
    directory.mkdir(mode=0o700, exist_ok=True)
    return [write_key(directory, "ec-p256", NOW - age).name for age in ages]


def names(directory: Path) -> list[str]:
    return sorted(p.name for p in directory.iterdir() if not p.name.startswith("."))


def prune(config: Path, *args: str) -> dict:  # type: ignore[type-arg]
    result = run("keys", "prune", "--config", str(config), "--json", *args)
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)


def test_prune_renames_aside_what_left_the_jwks_and_nothing_else(tmp_path: Path) -> None:
    keys = tmp_path / "keys"
    # With the defaults (publish_lead 24h, max_ttl 2h, jwks_max_age 15m, prune_margin 1h):
    # a and b left the JWKS days ago; d signs since 2h ago, so c stays published (retiring) for
    # 15 more minutes; e is pending.
    a, b, c, d, e = history(keys, timedelta(days=30), timedelta(days=20), timedelta(days=3),
                            timedelta(hours=26), timedelta(hours=1))
    config = config_file(tmp_path, keys)
    listed = json.loads(run("keys", "list", "--config", str(config), "--json").stdout)["keys"]
    assert [k["state"] for k in listed] == ["retiring", "active", "pending"]

    dry = prune(config, "--dry-run")
    assert dry["dry_run"] is True and [s["version"] for s in dry["pruned"]] == [a, b]
    assert names(keys) == sorted([a, b, c, d, e])

    text = run("keys", "prune", "--config", str(config))
    assert text.returncode == 0, text.stderr
    lines = text.stdout.splitlines()
    assert [line.split()[:2] for line in lines] == [["disabled", a], ["disabled", b]]
    assert names(keys) == sorted([a + ".revoked", b + ".revoked", c, d, e])

    again = prune(config)
    assert again["pruned"] == [] and again["failed"] == []
    quiet = run("keys", "prune", "--config", str(config))
    assert quiet.stdout.startswith("nothing to prune in backend local: every version is in the")
    after = json.loads(run("keys", "list", "--config", str(config), "--json").stdout)["keys"]
    fields = ("kid", "state", "published_until")  # the same keys, states and times (signs_from:
    # the oldest key's now reads as its creation, the ring's way of showing the oldest key)
    assert [[k[f] for f in fields] for k in after] == [[k[f] for f in fields] for k in listed]


def test_prune_destroy_deletes_the_files(tmp_path: Path) -> None:
    keys = tmp_path / "keys"
    old, current = history(keys, timedelta(days=40), timedelta(days=10))
    report = prune(config_file(tmp_path, keys), "--destroy")
    assert [(s["version"], s["action"]) for s in report["pruned"]] == [(old, "destroy")]
    assert names(keys) == [current]


def test_a_backends_last_version_is_kept_and_a_key_held_twice_goes_whole(tmp_path: Path) -> None:
    """Two key directories: `old` holds two keys that left the JWKS long ago, the newer one
    also held by `new`, beside the signing key. `old` keeps its last version (emptying a backend
    is a fault to every replica), so the copy in `new` stays too (alone, it would come back
    into the ring with its own creation time); the other goes. With --backend local, the copy
    is kept as well: the one in `old` would stay."""
    old, new = tmp_path / "old", tmp_path / "new"
    (only,) = history(old, timedelta(days=60))
    retired, signing = history(new, timedelta(days=50), timedelta(days=10))
    shutil.copy2(new / retired, old / retired)  # the same key, in both backends
    config = config_file(tmp_path, new)
    text = config.read_text() + f'[[backends]]\nname = "old"\ntype = "file"\npath = "{old}"\n'
    config.write_text(text)

    narrowed = prune(config, "--backend", "local", "--dry-run")
    assert narrowed["pruned"] == []
    assert {k["reason"] for k in narrowed["kept"]} == {
        "the same key is also in backend old: prune both (without --backend)"}

    report = prune(config)
    assert [(s["backend"], s["version"]) for s in report["pruned"]] == [("old", only)]
    assert sorted((k["backend"], k["version"]) for k in report["kept"]) == [
        ("local", retired), ("old", retired)]
    assert all("last version of backend old" in k["reason"] for k in report["kept"])
    assert names(old) == sorted([only + ".revoked", retired])
    assert names(new) == sorted([retired, signing])


def test_prune_margin_comes_from_the_config_and_bad_input_is_one_line(tmp_path: Path) -> None:
    keys = tmp_path / "keys"
    old, _ = history(keys, timedelta(days=3), timedelta(hours=30))
    # old left the JWKS 30h - 24h - 2h15m = 3h45m ago: within a 4h margin, past a 3h one.
    wide = config_file(tmp_path, keys, extra='[rotation]\nprune_margin = "4h"')
    assert prune(wide)["pruned"] == []
    narrow = config_file(tmp_path, keys, extra='[rotation]\nprune_margin = "3h"')
    assert [s["version"] for s in prune(narrow)["pruned"]] == [old]
    assert_one_line_error(
        run("keys", "prune", "--config", str(narrow), "--backend", "nope"), "no backend named"
    )
