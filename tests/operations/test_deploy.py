"""deploy/kubernetes and the Dockerfile: valid against the Kubernetes schemas, consistent with
each other, and the embedded config runs the real service with the probes the Deployment uses."""

from __future__ import annotations

import json
import re
import secrets
import stat
import subprocess
import sys
import time
import tomllib
import urllib.request
from pathlib import Path
from typing import Any

import jwt
import kubernetes_validate
import pytest
import yaml

from keysvc import keygen
from keysvc.config import parse_config
from keysvc.service import build_backends
from tests.cli import private, serving
from tests.conftest import write_key
from tests.service import RUN, free_port

from .deployment import get
from .pod import PodContainer, atomic_writer_volume, empty_dir

ROOT = Path(__file__).resolve().parents[2]
DEPLOY = ROOT / "deploy" / "kubernetes"
KUBERNETES_VERSIONS = ("1.28.0", "1.37.0")


def manifests() -> dict[str, dict[str, Any]]:
    found: dict[str, dict[str, Any]] = {}
    for path in sorted(DEPLOY.glob("*.yaml")):
        if path.name == "kustomization.yaml":
            continue
        for document in yaml.safe_load_all(path.read_text()):
            found[f"{document['kind']}/{document['metadata']['name']}"] = document
    return found


MANIFESTS = manifests()


@pytest.mark.parametrize("name", sorted(MANIFESTS))
@pytest.mark.parametrize("version", KUBERNETES_VERSIONS)
def test_manifest_is_valid_against_the_kubernetes_schema(name: str, version: str) -> None:
    kubernetes_validate.validate(MANIFESTS[name], version, strict=True)


def test_a_broken_manifest_is_caught() -> None:
    broken = yaml.safe_load((DEPLOY / "deployment.yaml").read_text())
    broken["spec"]["replicas"] = "three"
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(broken, KUBERNETES_VERSIONS[-1], strict=True)


def test_kustomization_lists_every_manifest_but_the_secret_examples() -> None:
    kustomization = yaml.safe_load((DEPLOY / "kustomization.yaml").read_text())
    expected = {p.name for p in DEPLOY.glob("*.yaml")} - {"kustomization.yaml"}
    expected = {n for n in expected if not n.endswith(".example.yaml")}
    assert set(kustomization["resources"]) == expected


DEPLOYMENT = MANIFESTS["Deployment/keysvc"]
POD = DEPLOYMENT["spec"]["template"]["spec"]
(KEYSVC,) = POD["containers"]
(INSTALL,) = POD["initContainers"]
VOLUMES = {v["name"]: v for v in POD["volumes"]}
PORTS = {p["name"]: p["containerPort"] for p in KEYSVC["ports"]}


def test_three_non_root_replicas_on_a_read_only_root_filesystem() -> None:
    assert DEPLOYMENT["spec"]["replicas"] == 3
    pod_security = POD["securityContext"]
    assert pod_security["runAsNonRoot"] is True and pod_security["runAsUser"] != 0
    # fsGroup would make Secret files group-readable (0400 -> 0440), which keysvc refuses
    assert "fsGroup" not in pod_security
    security = KEYSVC["securityContext"]
    assert security["readOnlyRootFilesystem"] is True
    assert security["allowPrivilegeEscalation"] is False
    assert security["capabilities"]["drop"] == ["ALL"] and "add" not in security["capabilities"]
    assert "runAsUser" not in security  # the pod's non-root user
    assert POD["automountServiceAccountToken"] is False


def test_probes_and_resources() -> None:
    assert KEYSVC["livenessProbe"]["httpGet"] == {"path": "/healthz", "port": "http"}
    assert KEYSVC["readinessProbe"]["httpGet"] == {"path": "/readyz", "port": "http"}
    assert KEYSVC["startupProbe"]["httpGet"]["path"] == "/healthz"
    for container in (KEYSVC, INSTALL):
        assert set(container["resources"]) == {"requests", "limits"}
        assert {"cpu", "memory"} <= set(container["resources"]["requests"])
        assert {"cpu", "memory"} <= set(container["resources"]["limits"])


def test_secrets_mounted_0400_and_installed_for_the_keysvc_user_only() -> None:
    """The volumes the init container reads and fills; what it does with them is run for real
    below (test_the_init_container_installs_the_secrets_keysvc_then_serves)."""
    for name, secret in (("keys-secret", "keysvc-keys"), ("tokens-secret", "keysvc-client-tokens")):
        assert VOLUMES[name]["secret"] == {"secretName": secret, "defaultMode": 0o400}
    assert VOLUMES["private"]["emptyDir"]["medium"] == "Memory"
    assert INSTALL["securityContext"]["readOnlyRootFilesystem"] is True
    mounts = {m["name"]: m for m in KEYSVC["volumeMounts"]}
    assert "keys-secret" not in mounts and "tokens-secret" not in mounts
    assert mounts["private"] == {"name": "private", "mountPath": "/run/keysvc", "readOnly": True}


# --- the pod, run: init container, then keysvc, under the manifest's securityContexts ---------

SECRET_EXAMPLES = {
    doc["metadata"]["name"]: doc
    for path in sorted(DEPLOY.glob("secret-*.example.yaml"))
    for doc in yaml.safe_load_all(path.read_text())
}
CONFIG_MAP = MANIFESTS["ConfigMap/keysvc-config"]


def pod_volumes(root: Path, secret_mode: int) -> tuple[dict[str, Path], dict[str, bytes]]:
    """Every volume of the pod as a host directory, the Secrets with real content under the
    names their examples use. Returns the volumes and the client tokens."""
    keys = SECRET_EXAMPLES["keysvc-keys"]["stringData"]
    tokens = {name: secrets.token_urlsafe(32).encode()
              for name in SECRET_EXAMPLES["keysvc-client-tokens"]["stringData"]}
    contents = {
        "keysvc-keys": {name: keygen.private_pem(keygen.generate("rsa-2048")) for name in keys},
        "keysvc-client-tokens": tokens,
    }
    volumes: dict[str, Path] = {}
    for volume in POD["volumes"]:
        where = root / volume["name"]
        if "secret" in volume:
            name = volume["secret"]["secretName"]
            volumes[volume["name"]] = atomic_writer_volume(where, contents[name], secret_mode)
        elif "configMap" in volume:
            data = {k: v.encode() for k, v in CONFIG_MAP["data"].items()}
            mode = volume["configMap"].get("defaultMode", 0o644)
            volumes[volume["name"]] = atomic_writer_volume(where, data, mode)
        else:
            volumes[volume["name"]] = empty_dir(where)
    return volumes, tokens


def owner_and_mode(path: Path) -> tuple[int, int, int]:
    st = path.lstat()
    return st.st_uid, st.st_gid, stat.S_IMODE(st.st_mode)


def test_the_sandbox_applies_the_init_containers_security_context(tmp_path: Path) -> None:
    """What the runs below rest on: in the sandbox a process has exactly the manifest's uid,
    gid and capabilities (CHOWN and FOWNER only), and a read-only root."""
    volumes, _ = pod_volumes(tmp_path, 0o400)
    probe = PodContainer(POD, INSTALL, volumes).run(
        ["sh", "-c", "grep -E '^Cap(Eff|Bnd)' /proc/self/status; id -u; id -g; touch /x"]
    )
    lines = probe.stdout.split()
    assert lines == ["CapEff:", "0000000000000009", "CapBnd:", "0000000000000009", "0", "10001"]
    assert probe.returncode != 0 and "Read-only file system" in probe.stderr


@pytest.mark.parametrize("secret_mode", [VOLUMES["keys-secret"]["secret"]["defaultMode"], 0o644],
                         ids=["manifest-defaultMode", "kubernetes-default-0644"])
def test_the_init_container_installs_the_secrets_keysvc_then_serves(
    tmp_path: Path, secret_mode: int
) -> None:
    """Was Init:CrashLoopBackOff: the script copied as root, without DAC_OVERRIDE, into 0700
    directories it had already given to uid 10001 ("Permission denied"). Now: the real script
    from the manifest, run twice (an init container may run again in the same pod), under its
    securityContext, against Secret volumes laid out as the kubelet writes them; then keysvc,
    as uid 10001 under its own securityContext with the ConfigMap's config, reads them and
    signs a token that verifies against the JWKS it serves."""
    volumes, tokens = pod_volumes(tmp_path, secret_mode)
    init = PodContainer(POD, INSTALL, volumes)
    for _ in range(2):
        installed = init.run(INSTALL["command"])
        assert installed.returncode == 0, installed.stderr
    uid = POD["securityContext"]["runAsUser"]
    gid = POD["securityContext"]["runAsGroup"]
    private = volumes["private"]
    keys = SECRET_EXAMPLES["keysvc-keys"]["stringData"]
    for directory, names in (("keys", keys), ("tokens", tokens)):
        assert owner_and_mode(private / directory) == (uid, gid, 0o700)
        assert sorted(p.name for p in (private / directory).iterdir()) == sorted(names)
        for name in names:
            assert owner_and_mode(private / directory / name) == (uid, gid, 0o400)
    for name, token in tokens.items():
        assert (private / "tokens" / name).read_bytes() == token

    port = free_port()
    url = f"http://127.0.0.1:{port}"
    argv = [sys.executable, "-m", "keysvc", *KEYSVC["args"], "--listen", f"127.0.0.1:{port}",
            "--metrics-port", str(free_port())]  # not the manifest's 9090: tests run side by side
    process, new_root = PodContainer(POD, KEYSVC, volumes).popen(argv)
    try:
        deadline = time.monotonic() + 60
        while True:
            assert process.poll() is None, process.communicate()[1]
            try:
                body, _ = get(url + KEYSVC["readinessProbe"]["httpGet"]["path"])
                break
            except OSError:
                assert time.monotonic() < deadline, "keysvc never became ready"
                time.sleep(0.2)
        assert json.loads(body)["status"] == "ready"
        issuer = parse_config(tomllib.loads(CONFIG_TEXT)).issuer
        reply = post_json(url + "/v1/tokens", RUN, tokens["otfd"].decode())
        jwks = jwt.PyJWKSet.from_json(get(url + "/.well-known/jwks")[0].decode())
        key = next(k for k in jwks.keys if k.key_id == reply["kid"])
        claims = jwt.decode(reply["token"], key, algorithms=["RS256"], audience=RUN["audience"],
                            issuer=issuer)
        assert claims["sub"] == "organization:acme:workspace:networking:run_phase:plan"
    finally:
        process.terminate()
        try:
            process.communicate(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.communicate()
        new_root.rmdir()


def post_json(url: str, body: dict[str, Any], token: str) -> Any:
    request = urllib.request.Request(url, data=json.dumps(body).encode(), method="POST")
    request.add_header("Authorization", f"Bearer {token}")
    request.add_header("Content-Type", "application/json")
    with urllib.request.urlopen(request, timeout=10) as response:
        return json.load(response)


def test_selectors_agree() -> None:
    labels = DEPLOYMENT["spec"]["template"]["metadata"]["labels"]
    assert DEPLOYMENT["spec"]["selector"]["matchLabels"].items() <= labels.items()
    assert (
        MANIFESTS["PodDisruptionBudget/keysvc"]["spec"]["selector"]["matchLabels"].items()
        <= labels.items()
    )
    assert MANIFESTS["PodDisruptionBudget/keysvc"]["spec"]["maxUnavailable"] == 1
    service = MANIFESTS["Service/keysvc"]["spec"]
    assert service["selector"].items() <= labels.items()
    assert service["ports"][0]["targetPort"] in PORTS


def test_ingress_exposes_only_the_two_well_known_documents() -> None:
    (rule,) = MANIFESTS["Ingress/keysvc-public"]["spec"]["rules"]
    paths = {(p["path"], p["pathType"]) for p in rule["http"]["paths"]}
    assert paths == {("/.well-known/openid-configuration", "Exact"), ("/.well-known/jwks", "Exact")}


CONFIG_TEXT = MANIFESTS["ConfigMap/keysvc-config"]["data"]["keysvc.toml"]


def test_configmap_config_is_valid_and_matches_the_deployment() -> None:
    config = parse_config(tomllib.loads(CONFIG_TEXT))
    assert config.server.host == "0.0.0.0" and config.server.port == PORTS["http"]
    (backend,) = build_backends(config)
    assert str(backend.settings.path).startswith("/run/keysvc/keys")  # type: ignore[attr-defined]
    for client in config.clients:
        assert str(client.token_file).startswith("/run/keysvc/tokens/")
    config_mount = next(m for m in KEYSVC["volumeMounts"] if m["name"] == "config")
    assert KEYSVC["args"] == ["serve", "--config", f"{config_mount['mountPath']}/keysvc.toml"]
    host = MANIFESTS["Ingress/keysvc-public"]["spec"]["rules"][0]["host"]
    assert config.issuer == f"https://{host}"


def test_the_drain_timeout_fits_the_grace_period() -> None:
    """On SIGTERM keysvc lets requests finish for drain_timeout, then closes its backends and
    exits: all of it before Kubernetes' SIGKILL at the end of the grace period."""
    config = parse_config(tomllib.loads(CONFIG_TEXT))
    grace = DEPLOYMENT["spec"]["template"]["spec"]["terminationGracePeriodSeconds"]
    assert config.server.drain_timeout.total_seconds() + 5 <= grace
    assert parse_config({**tomllib.loads(CONFIG_TEXT), "server": {}}).server.drain_timeout == (
        config.server.drain_timeout
    ), "the default drain_timeout fits too"


def test_the_configmap_config_serves_the_probe_paths(tmp_path: Path) -> None:
    """Run the real service on the ConfigMap's config, with /run/keysvc moved to a temp dir."""
    run_dir = tmp_path / "run"
    (run_dir / "keys").mkdir(parents=True, mode=0o700)
    (run_dir / "tokens").mkdir(mode=0o700)
    write_key(run_dir / "keys", "ec-p256")
    for name in ("otfd", "operator"):
        private(run_dir / "tokens" / name, f"{name}-token\n")
    config = tmp_path / "keysvc.toml"
    config.write_text(CONFIG_TEXT.replace("/run/keysvc", str(run_dir)))
    url = f"http://127.0.0.1:{free_port()}"
    metrics_url = f"http://127.0.0.1:{free_port()}"
    with serving("--config", str(config), "--listen", url.removeprefix("http://"),
                 "--metrics-port", metrics_url.rsplit(":", 1)[1], url=url):
        metrics, _ = get(metrics_url + "/metrics")  # what the monitoring namespace may scrape
        assert b"keysvc_ring_keys" in metrics
        for probe in ("livenessProbe", "readinessProbe"):
            body, _ = get(url + KEYSVC[probe]["httpGet"]["path"])
            assert body.startswith(b"{")
        listing, _ = get(url + "/v1/keys", token="operator-token")
        assert b'"state":"active"' in listing.replace(b" ", b"")


DOCKERFILE = (ROOT / "Dockerfile").read_text()


def test_dockerfile_runs_keysvc_serve_as_the_deployments_user() -> None:
    stages = re.findall(r"^FROM (\S+)", DOCKERFILE, re.MULTILINE)
    assert stages and all(s == "python:3.11-slim" for s in stages)
    (user,) = re.findall(r"^USER (\S+)", DOCKERFILE, re.MULTILINE)
    uid = POD["securityContext"]["runAsUser"]
    assert user == f"{uid}:{POD['securityContext']['runAsGroup']}"
    assert 'ENTRYPOINT ["keysvc"]' in DOCKERFILE
    assert 'CMD ["serve", "--config", "/etc/keysvc/keysvc.toml"]' in DOCKERFILE
    assert f"EXPOSE {PORTS['http']}" in DOCKERFILE
    assert DOCKERFILE.rstrip().splitlines()[-1].startswith("CMD")


def test_dockerignore_keeps_keys_and_tokens_out_of_the_image() -> None:
    rules = [
        line
        for line in (ROOT / ".dockerignore").read_text().splitlines()
        if line and not line.startswith("#")
    ]
    assert rules[0] == "**"  # everything is excluded unless listed
    allowed = {r[1:] for r in rules if r.startswith("!")}
    assert allowed == {"pyproject.toml", "README.md", "constraints.txt", "keysvc/"}
    assert "**/*.pem" in rules and "**/.keysvc" in rules
    for copied in re.findall(r"^COPY (?!--from)(.+) \S+$", DOCKERFILE, re.MULTILINE):
        for source in copied.split():
            assert source in allowed or source + "/" in allowed, source


def test_network_policy_admits_only_otfd_ingress_and_monitoring_to_the_pods() -> None:
    """NetworkPolicy filters ports, not paths: the monitoring namespace reaches only the port that
    serves /metrics alone, otfd's and the ingress controller's the API port, nothing else."""
    policy = MANIFESTS["NetworkPolicy/keysvc"]["spec"]
    labels = DEPLOYMENT["spec"]["template"]["metadata"]["labels"]
    assert policy["podSelector"]["matchLabels"].items() <= labels.items()
    assert policy["policyTypes"] == ["Ingress"]
    admitted: dict[str, list[str]] = {}
    for rule in policy["ingress"]:
        ports = [p["port"] for p in rule["ports"]]
        assert all(port in PORTS for port in ports)
        for peer in rule["from"]:
            assert set(peer) == {"namespaceSelector"}  # never an ipBlock or every pod
            namespace = peer["namespaceSelector"]["matchLabels"]["kubernetes.io/metadata.name"]
            admitted[namespace] = ports
    # Prometheus gets the port that serves /metrics alone, never the token API's
    assert admitted == {"otf": ["http"], "ingress-nginx": ["http"], "monitoring": ["metrics"]}
    overlay = yaml.safe_load((DEPLOY / "otf" / "keysvc-configmap.yaml").read_text())
    for text in (CONFIG_TEXT, overlay["data"]["keysvc.toml"]):  # the otf overlay's replaces it
        config = parse_config(tomllib.loads(text))
        assert (config.server.port, config.server.metrics_port) == (PORTS["http"], PORTS["metrics"])


def test_the_image_listens_on_every_interface_as_a_container_must() -> None:
    (host,) = re.findall(r"^ENV KEYSVC_HOST=(\S+)$", DOCKERFILE, re.MULTILINE)
    assert host == "0.0.0.0"
    assert tomllib.loads(CONFIG_TEXT)["server"]["host"] == "0.0.0.0"
