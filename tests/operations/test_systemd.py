"""deploy/systemd: the rotation service and its timer pass `systemd-analyze verify`, and the
service's ExecStart command lines run for real, in order, under the unit's own restrictions:
its User (uid 10001 here), UMask, NoNewPrivileges, an empty CapabilityBoundingSet, and
ProtectSystem=strict with the key directory as the only ReadWritePaths (the pod sandbox of
tests/operations/pod.py: a read-only root, the config read-only, the key directory writable)."""

from __future__ import annotations

import json
import os
import shlex
import subprocess
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path

from tests.conftest import write_key

from .pod import PodContainer

SYSTEMD = Path(__file__).resolve().parents[2] / "deploy" / "systemd"
SERVICE = SYSTEMD / "keysvc-rotate.service"
TIMER = SYSTEMD / "keysvc-rotate.timer"
KEYSVC_BINARY = "/usr/local/bin/keysvc"
USER_ID = 10001  # User=keysvc: the uid keysvc runs as (the container image's, the Deployment's)


def unit(path: Path) -> dict[str, dict[str, list[str]]]:
    """A unit file's sections and settings (a setting given twice keeps both, in order)."""
    sections: dict[str, dict[str, list[str]]] = {}
    current: dict[str, list[str]] = {}
    for raw in path.read_text().splitlines():
        line = raw.strip()
        if not line or line.startswith(("#", ";")):
            continue
        if line.startswith("["):
            current = sections.setdefault(line.strip("[]"), {})
            continue
        key, _, value = line.partition("=")
        current.setdefault(key.strip(), []).append(value.strip())
    return sections


def test_systemd_analyze_verify_accepts_the_pair(tmp_path: Path) -> None:
    """Checked as installed, with the binary where this checkout's virtualenv has it (verify
    insists that ExecStart's program exists)."""
    keysvc = Path(sys.executable).with_name("keysvc")
    assert keysvc.exists()
    for path in (SERVICE, TIMER):
        (tmp_path / path.name).write_text(path.read_text().replace(KEYSVC_BINARY, str(keysvc)))
    verified = subprocess.run(
        ["systemd-analyze", "verify", *(str(tmp_path / p.name) for p in (SERVICE, TIMER))],
        capture_output=True, text=True, timeout=60,
    )
    assert verified.returncode == 0 and verified.stderr == "", verified.stderr
    broken = tmp_path / SERVICE.name
    broken.write_text(broken.read_text().replace("Type=oneshot", "Type=oneshot\nExecStrat=x"))
    complaint = subprocess.run(["systemd-analyze", "verify", str(broken)],
                               capture_output=True, text=True, timeout=60)
    assert "Unknown key" in complaint.stderr  # the check above can fail


def test_the_timer_runs_the_service_hourly_and_catches_up() -> None:
    timer = unit(TIMER)["Timer"]
    assert timer["OnCalendar"] == ["hourly"] and timer["Persistent"] == ["true"]
    assert unit(TIMER)["Install"]["WantedBy"] == ["timers.target"]
    service = unit(SERVICE)["Service"]
    assert service["Type"] == ["oneshot"]
    assert [shlex.split(c)[1:3] for c in service["ExecStart"]] == [
        ["keys", "rotate"], ["keys", "prune"]]


def sandbox(service: dict[str, list[str]], keys: Path, config: Path) -> PodContainer:
    """A container as the unit confines the process: uid, capabilities, read-only system."""
    assert service["User"] == ["keysvc"] and service["NoNewPrivileges"] == ["yes"]
    assert service["CapabilityBoundingSet"] == [""] and service["ProtectSystem"] == ["strict"]
    (writable,) = service["ReadWritePaths"]
    env = dict(e.split("=", 1) for e in service["Environment"])
    container = {
        "name": "keysvc-rotate",
        "securityContext": {
            "runAsUser": USER_ID, "runAsGroup": USER_ID, "readOnlyRootFilesystem": True,
            "allowPrivilegeEscalation": False, "capabilities": {"drop": ["ALL"]},
        },
        "volumeMounts": [
            {"name": "keys", "mountPath": writable.removeprefix("-")},
            {"name": "config", "mountPath": str(Path(env["KEYSVC_CONFIG"]).parent),
             "readOnly": True},
        ],
        "env": [{"name": k, "value": v} for k, v in env.items()],
    }
    return PodContainer({}, container, {"keys": keys, "config": config})


def test_the_exec_start_lines_rotate_when_due_then_prune(tmp_path: Path) -> None:
    service = unit(SERVICE)["Service"]
    (writable,) = service["ReadWritePaths"]
    keys = tmp_path / "keys"
    keys.mkdir(mode=0o700)
    old = write_key(keys, "ec-p256", datetime.now(UTC) - timedelta(days=40))
    current = write_key(keys, "ec-p256", datetime.now(UTC) - timedelta(days=9))
    config = tmp_path / "etc"
    config.mkdir()
    (config / "keysvc.toml").write_text(
        'issuer = "https://keys.example.com"\n[rotation]\nperiod = "7d"\n'
        f'[[backends]]\nname = "local"\ntype = "file"\npath = "{writable.removeprefix("-")}"\n'
    )
    for path in (keys, *keys.iterdir()):
        os.chown(path, USER_ID, USER_ID)
    umask = service["UMask"][0]

    def run_service() -> list[dict[str, object]]:
        """Each ExecStart in order, as systemd runs a oneshot (stop at the first failure)."""
        box = sandbox(service, keys, config)
        replies = []
        for line in service["ExecStart"]:
            argv = shlex.split(line)
            assert argv[0] == KEYSVC_BINARY
            command = ["sh", "-c", f'umask {umask} && exec "$@"', "sh",
                       sys.executable, "-m", "keysvc", *argv[1:]]
            done = box.run(command, timeout=120)
            assert done.returncode == 0, (line, done.stdout, done.stderr)
            replies.append(json.loads(done.stdout))
        return replies

    rotated, pruned = run_service()
    assert rotated["rotated"] is True and rotated["if_older_than"] == "7d"
    new = keys / rotated["version"]
    st = new.stat()
    assert (st.st_uid, st.st_mode & 0o777) == (USER_ID, 0o600)
    assert [p["version"] for p in pruned["pruned"]] == [old.name]
    assert sorted(p.name for p in keys.glob("*.pem*")) == sorted(
        [old.name + ".revoked", current.name, new.name])

    again_rotated, again_pruned = run_service()
    assert again_rotated["rotated"] is False and again_pruned["pruned"] == []
