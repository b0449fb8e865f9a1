"""deploy/kubernetes/rotation: the CronJob that rotates and prunes, valid against the Kubernetes
schemas, consistent with the Deployment, and run for real: each container's command under its
manifest's securityContext (tests/operations/pod.py), on volumes laid out as the kubelet writes
them, against a real OpenBao, over a short period (the schedule's runs are the test's calls).

The job reads the service's ConfigMap; here that config's [rotation] and [tokens] are shortened
and its backend is Vault Transit with a token file at the path the job installs it to."""

from __future__ import annotations

import json
import sys
import time
import tomllib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
import yaml

from keysvc.backends.vault import parse_creation_time
from tests.vault.bao import BaoServer, transit_server

from .pod import PodContainer, atomic_writer_volume, empty_dir
from .test_deploy import CONFIG_MAP, DEPLOYMENT, KUBERNETES_VERSIONS

ROTATION = Path(__file__).resolve().parents[2] / "deploy" / "kubernetes" / "rotation"
MANIFESTS = {
    f"{doc['kind']}/{doc['metadata']['name']}": doc
    for path in sorted(ROTATION.glob("*.yaml"))
    if path.name != "kustomization.yaml"
    for doc in yaml.safe_load_all(path.read_text())
}
CRONJOB = MANIFESTS["CronJob/keysvc-rotate"]
JOB = CRONJOB["spec"]["jobTemplate"]["spec"]
POD = JOB["template"]["spec"]
INSTALL, ROTATE = POD["initContainers"]
(PRUNE,) = POD["containers"]
SERVICE_POD = DEPLOYMENT["spec"]["template"]["spec"]


@pytest.mark.parametrize("name", sorted(MANIFESTS))
@pytest.mark.parametrize("version", KUBERNETES_VERSIONS)
def test_manifest_is_valid_against_the_kubernetes_schema(name: str, version: str) -> None:
    kubernetes_validate.validate(MANIFESTS[name], version, strict=True)


def test_kustomization_lists_every_manifest_but_the_secret_example() -> None:
    kustomization = yaml.safe_load((ROTATION / "kustomization.yaml").read_text())
    expected = {p.name for p in ROTATION.glob("*.yaml")} - {"kustomization.yaml"}
    assert set(kustomization["resources"]) == {n for n in expected if ".example." not in n}


def test_one_run_at_a_time_rotate_before_prune_and_bounded() -> None:
    spec = CRONJOB["spec"]
    assert spec["concurrencyPolicy"] == "Forbid"
    assert spec["startingDeadlineSeconds"] < 3600  # a missed hour is skipped, not piled up
    assert POD["restartPolicy"] == "Never" and JOB["activeDeadlineSeconds"] <= 3600
    assert ROTATE["args"][:4] == ["keys", "rotate", "--if-older-than", "--json"]
    assert PRUNE["args"][:3] == ["keys", "prune", "--json"]


def test_the_job_runs_like_the_service_and_reads_its_config() -> None:
    """Same non-root user, same read-only, capability-free containers, the service's own
    ConfigMap (one config: the job and the replicas agree on the lifecycle)."""
    assert POD["securityContext"] == SERVICE_POD["securityContext"]
    service_container = SERVICE_POD["containers"][0]
    for container in (ROTATE, PRUNE):
        assert container["securityContext"] == service_container["securityContext"]
        assert container["image"] == service_container["image"]
        assert container["args"][-2:] == service_container["args"][-2:]  # --config PATH
    volumes = {v["name"]: v for v in POD["volumes"]}
    assert volumes["config"]["configMap"]["name"] == CONFIG_MAP["metadata"]["name"]
    assert volumes["credentials-secret"]["secret"]["defaultMode"] == 0o400
    assert POD["serviceAccountName"] == MANIFESTS["ServiceAccount/keysvc-rotate"]["metadata"]["name"]


# --- the job, run -----------------------------------------------------------------------------

KEY = "rotated-by-cronjob"
PERIOD = 8.0
FAST = {"publish_lead": "3s", "jwks_max_age": "1s", "refresh_interval": "500ms",
        "period": f"{PERIOD:g}s", "prune_margin": "1s"}
TOKENS = {"default_ttl": "1s", "max_ttl": "1s"}
PRUNABLE_AFTER = 3 + 1 + 1 + 1
"""v1 leaves the JWKS publish_lead + max_ttl + jwks_max_age after v2's creation; prune may act
prune_margin later."""


@pytest.fixture(scope="module")
def bao(tmp_path_factory: pytest.TempPathFactory) -> Iterator[BaoServer]:
    with transit_server(tmp_path_factory.mktemp("openbao")) as server:
        yield server


def job_config(bao: BaoServer) -> str:
    """The shipped ConfigMap's keysvc.toml with short durations and a Vault backend."""
    data = tomllib.loads(CONFIG_MAP["data"]["keysvc.toml"])
    lines = [f"issuer = {json.dumps(data['issuer'])}", "[rotation]"]
    lines += [f"{k} = {json.dumps(v)}" for k, v in FAST.items()]
    lines += ["[tokens]", *(f"{k} = {json.dumps(v)}" for k, v in TOKENS.items())]
    lines += ["[[backends]]", 'name = "vault"', 'type = "vault"',
              f"address = {json.dumps(bao.address)}", f"key = {json.dumps(KEY)}",
              'token_file = "/run/keysvc/credentials/vault-token"']
    return "\n".join(lines) + "\n"


def job_volumes(root: Path, config: str, token: str) -> dict[str, Path]:
    volumes: dict[str, Path] = {}
    for volume in POD["volumes"]:
        where = root / volume["name"]
        if "configMap" in volume:
            volumes[volume["name"]] = atomic_writer_volume(
                where, {"keysvc.toml": config.encode()}, volume["configMap"].get("defaultMode", 0o644))
        elif "secret" in volume:
            volumes[volume["name"]] = atomic_writer_volume(
                where, {"vault-token": token.encode()}, volume["secret"]["defaultMode"])
        else:
            volumes[volume["name"]] = empty_dir(where)
    return volumes


def run_container(container: dict[str, Any], volumes: dict[str, Path]) -> Any:
    """The container's process as the pod runs it (keysvc containers: the image's entrypoint
    `keysvc` with the manifest's args, as this checkout's interpreter runs it)."""
    argv = container.get("command") or [sys.executable, "-m", "keysvc", *container["args"]]
    done = PodContainer(POD, container, volumes).run(argv, timeout=120)
    assert done.returncode == 0, (container["name"], done.stdout, done.stderr)
    return json.loads(done.stdout) if "command" not in container else None


def test_the_cronjob_rotates_when_due_and_prunes_what_left_the_jwks(
    tmp_path: Path, bao: BaoServer
) -> None:
    bao.create_key(KEY, "ecdsa-p256")
    policy = "\n".join(
        [f'path "transit/keys/{KEY}" {{ capabilities = ["read"] }}']
        + [f'path "transit/keys/{KEY}/{op}" {{ capabilities = ["update"] }}'
           for op in ("rotate", "config")]
    )
    bao.write_policy("keysvc-rotate", policy)
    volumes = job_volumes(tmp_path, job_config(bao), bao.create_token(["keysvc-rotate"]))

    def age(version: int) -> float:
        """Seconds since Vault created the key's version (Vault dates versions itself)."""
        data = bao.request("GET", f"transit/keys/{KEY}")["data"]
        created = parse_creation_time(data["keys"][str(version)]["creation_time"])
        return time.time() - created.timestamp()

    def wait_until_older(version: int, seconds: float) -> None:
        time.sleep(max(0.0, seconds - age(version)))

    # A run right after the key was made: nothing is due (if the run outlasts the period on
    # a loaded machine, it may rotate, and rightly so: then only the count is checked).
    run_container(INSTALL, volumes)
    first = run_container(ROTATE, volumes)
    if age(1) < PERIOD:
        assert first["rotated"] is False and first["reason"] == "recent", first
    pruned = run_container(PRUNE, volumes)
    assert pruned["pruned"] == [] and pruned["failed"] == []
    installed = volumes["private"] / "credentials" / "vault-token"
    assert installed.stat().st_uid == 10001 and installed.stat().st_mode & 0o777 == 0o400

    # Past the period: the next run rotates, once.
    wait_until_older(1, PERIOD + 0.5)
    run_container(INSTALL, volumes)  # each run's pod installs the credentials afresh
    rotated = run_container(ROTATE, volumes)
    latest = bao.request("GET", f"transit/keys/{KEY}")["data"]["latest_version"]
    if first["rotated"] is False:
        assert rotated["rotated"] is True and rotated["version"] == "2", rotated
        assert rotated["newest_before"]["version"] == "1" and latest == 2
    again = run_container(ROTATE, volumes)
    if age(latest) < PERIOD:
        assert again["rotated"] is False, again  # the newest is recent: nothing to do

    # Once v1 has left the JWKS (and the margin passed), prune retires it, and only it.
    wait_until_older(2, PRUNABLE_AFTER + 0.5)
    pruned = run_container(PRUNE, volumes)
    assert [(s["version"], s["action"]) for s in pruned["pruned"]] == [("1", "disable")]
    key = bao.request("GET", f"transit/keys/{KEY}")["data"]
    assert key["min_decryption_version"] == 2
