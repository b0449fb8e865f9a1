"""deploy/kubernetes/otf: keysvc beside otfd with otf-proxy, validated like the manifests of
deploy/kubernetes (the Kubernetes schemas, strict) and consistent with each other, with the
shipped nginx template and with keysvc's config rules."""

from __future__ import annotations

import tomllib
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import kubernetes_validate
import pytest
import yaml

from keysvc.config import parse_config
from tests.operations.test_deploy import KUBERNETES_VERSIONS
from tests.otf.nginx import TEMPLATE, VARIABLES

ROOT = Path(__file__).resolve().parents[2]
OVERLAY = ROOT / "deploy" / "kubernetes" / "otf"
BASE = ROOT / "deploy" / "kubernetes"


def load(directory: Path) -> dict[str, dict[str, Any]]:
    found: dict[str, dict[str, Any]] = {}
    for path in sorted(directory.glob("*.yaml")):
        if path.name == "kustomization.yaml" or path.name.endswith(".example.yaml"):
            continue
        for document in yaml.safe_load_all(path.read_text()):
            found[f"{document['kind']}/{document['metadata']['name']}"] = document
    return found


MANIFESTS = load(OVERLAY)
KUSTOMIZATION = yaml.safe_load((OVERLAY / "kustomization.yaml").read_text())
PROXY = MANIFESTS["Deployment/otf-proxy"]
POD = PROXY["spec"]["template"]["spec"]
(NGINX,) = POD["containers"]
ENV = {e["name"]: e["value"] for e in NGINX["env"]}
CONFIG = parse_config(tomllib.loads(MANIFESTS["ConfigMap/keysvc-config"]["data"]["keysvc.toml"]))
INGRESS = MANIFESTS["Ingress/keysvc-public"]


@pytest.mark.parametrize("name", sorted(MANIFESTS))
@pytest.mark.parametrize("version", KUBERNETES_VERSIONS)
def test_manifest_is_valid_against_the_kubernetes_schema(name: str, version: str) -> None:
    kubernetes_validate.validate(MANIFESTS[name], version, strict=True)


def test_the_kustomization_is_keysvc_plus_every_file_here() -> None:
    assert KUSTOMIZATION["resources"][0] == "../"
    assert (OVERLAY / KUSTOMIZATION["resources"][0] / "kustomization.yaml").exists()
    listed = set(KUSTOMIZATION["resources"][1:]) | {p["path"] for p in KUSTOMIZATION["patches"]}
    assert listed == {p.name for p in OVERLAY.glob("*.yaml")} - {"kustomization.yaml"}


def test_the_patches_replace_objects_of_the_base() -> None:
    base = load(BASE)
    for patch in KUSTOMIZATION["patches"]:
        (document,) = yaml.safe_load_all((OVERLAY / patch["path"]).read_text())
        assert f"{document['kind']}/{document['metadata']['name']}" in base


def test_the_configmap_carries_the_shipped_template_byte_for_byte() -> None:
    text = MANIFESTS["ConfigMap/otf-proxy-nginx"]["data"][TEMPLATE.name]
    assert text == TEMPLATE.read_text()
    mounts = {m["name"]: m["mountPath"] for m in NGINX["volumeMounts"]}
    volumes = {v["name"]: v for v in POD["volumes"]}
    assert mounts["templates"] == "/etc/nginx/templates"  # where the image renders templates from
    assert volumes["templates"]["configMap"]["name"] == "otf-proxy-nginx"
    assert mounts["conf-d"] == "/etc/nginx/conf.d" and "emptyDir" in volumes["conf-d"]


def test_nginx_gets_the_templates_variables_and_substitutes_nothing_else() -> None:
    assert set(VARIABLES) <= ENV.keys()
    assert ENV["NGINX_ENVSUBST_FILTER"] == "^(" + "|".join(VARIABLES) + ")$"
    for name in VARIABLES:
        assert "${" + name + "}" in TEMPLATE.read_text()


def test_the_addresses_agree() -> None:
    keysvc_service = MANIFESTS.get("Service/keysvc") or load(BASE)["Service/keysvc"]
    (port,) = keysvc_service["spec"]["ports"]
    assert ENV["KEYSVC_UPSTREAM"] == f"{keysvc_service['metadata']['name']}:{port['port']}"
    assert CONFIG.otf is not None
    otfd = urlsplit(CONFIG.otf.url)
    assert ENV["OTFD_UPSTREAM"] == f"{otfd.hostname}:{otfd.port}"  # keysvc asks otfd itself
    (proxy_port,) = MANIFESTS["Service/otf-proxy"]["spec"]["ports"]
    (container_port,) = NGINX["ports"]
    assert ENV["OTF_PROXY_LISTEN"] == str(container_port["containerPort"]) == str(proxy_port["port"])
    assert proxy_port["targetPort"] == container_port["name"]
    selector = MANIFESTS["Service/otf-proxy"]["spec"]["selector"]
    assert selector.items() <= PROXY["spec"]["template"]["metadata"]["labels"].items()
    pdb = MANIFESTS["PodDisruptionBudget/otf-proxy"]["spec"]["selector"]["matchLabels"]
    assert pdb.items() <= PROXY["spec"]["template"]["metadata"]["labels"].items()


def test_the_issuer_is_otfds_host_served_by_the_proxy() -> None:
    (rule,) = INGRESS["spec"]["rules"]
    assert CONFIG.issuer == f"https://{rule['host']}" == f"https://{ENV['OTF_SERVER_NAME']}"
    (path,) = rule["http"]["paths"]
    assert (path["path"], path["pathType"]) == ("/", "Prefix")
    assert path["backend"]["service"] == {"name": "otf-proxy", "port": {"name": "http"}}
    assert INGRESS["spec"]["tls"][0]["hosts"] == [rule["host"]]
    assert CONFIG.otf is not None and CONFIG.otf.allow_http  # otfd's Service speaks http


def test_otf_proxy_runs_unprivileged_on_a_read_only_root() -> None:
    security = POD["securityContext"]
    assert security["runAsNonRoot"] is True and security["runAsUser"] != 0
    container = NGINX["securityContext"]
    assert container["readOnlyRootFilesystem"] is True
    assert container["allowPrivilegeEscalation"] is False
    assert container["capabilities"] == {"drop": ["ALL"]}
    assert int(ENV["OTF_PROXY_LISTEN"]) >= 1024  # no NET_BIND_SERVICE needed
    assert POD["automountServiceAccountToken"] is False
    assert set(NGINX["resources"]) == {"requests", "limits"}
    writable = {m["mountPath"] for m in NGINX["volumeMounts"] if not m.get("readOnly")}
    assert writable == {"/etc/nginx/conf.d", "/var/cache/nginx", "/run"}
