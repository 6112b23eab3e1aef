"""The Kubernetes manifests under deploy/kubernetes/, one folder per layout: every resource valid
against Kubernetes 1.32's schemas in strict mode (an unknown field is an error; the schemas come
in kubernetes-validate's wheel, so no network), every file listed by its kustomization.yaml, and
each ConfigMap's config.toml one that Triage's own loader accepts, with the API keys read from
the Secret where the pod mounts it."""

from __future__ import annotations

import base64
import re
import tomllib
from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
import yaml

from triage_router.router.config import Config
from triage_router.router.config_loader import load_config

ROOT = Path(__file__).resolve().parents[2]
KUBERNETES = ROOT / "deploy" / "kubernetes"
LAYOUTS = sorted(path.parent for path in KUBERNETES.glob("*/kustomization.yaml"))
RESOURCE_FILES = sorted(path for layout in LAYOUTS for path in layout.glob("*.yaml")
                        if path.name != "kustomization.yaml")
KUBERNETES_VERSION = "1.32"
ROUTER_IMAGE = "triage-router:" + tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["version"]
# Where the router image reads its config (deploy/docker/router.Dockerfile).
IMAGE_CONFIG_PATH = re.search(r"TRIAGE_CONFIG=(\S+)", (ROOT / "deploy" / "docker" / "router.Dockerfile").read_text())[1]

Resource = dict[str, Any]


def resources(layout: Path) -> list[Resource]:
    return [doc for path in sorted(layout.glob("*.yaml")) if path.name != "kustomization.yaml"
            for doc in yaml.safe_load_all(path.read_text()) if doc]


def find(layout: Path, kind: str, name: str) -> Resource:
    return next(r for r in resources(layout) if r["kind"] == kind and r["metadata"]["name"] == name)


def pods(layout: Path) -> list[Resource]:
    """The pod templates of the layout's workloads."""
    return [r["spec"]["template"] for r in resources(layout) if r["kind"] in ("Deployment", "StatefulSet")]


def triage_pod(layout: Path) -> tuple[Resource, Resource]:
    """The pod template that runs Triage, and Triage's container in it."""
    found = [(pod, container) for pod in pods(layout) for container in pod["spec"]["containers"]
             if container["image"].startswith("triage-router:")]
    assert len(found) == 1, f"{layout.name}: expected one Triage container, found {len(found)}"
    return found[0]


def vllm_containers(layout: Path) -> list[Resource]:
    return [c for pod in pods(layout) for c in pod["spec"]["containers"] if c["image"].startswith("vllm/")]


def load_triage_config(layout: Path, tmp_path: Path) -> Config:
    """config.toml as the Triage container sees it: from the ConfigMap mounted where the image
    reads it, its key files from the Secrets mounted in the container, loaded by Triage's loader."""
    pod, container = triage_pod(layout)
    volumes = {volume["name"]: volume for volume in pod["spec"]["volumes"]}
    mounts = container["volumeMounts"]
    config_mounts = [m for m in mounts if m["mountPath"] == IMAGE_CONFIG_PATH]
    assert config_mounts, f"{layout.name}: nothing is mounted at {IMAGE_CONFIG_PATH}, where the image reads its config"
    config_mount = config_mounts[0]
    configmap = find(layout, "ConfigMap", volumes[config_mount["name"]]["configMap"]["name"])
    text = configmap["data"][config_mount["subPath"]]
    for mount in mounts:
        secret_volume = volumes[mount["name"]].get("secret")
        if secret_volume is None:
            continue
        secret = find(layout, "Secret", secret_volume["secretName"])
        folder = tmp_path / mount["name"]
        folder.mkdir()
        for key, value in secret_values(secret).items():
            (folder / key).write_text(value)
        text = text.replace(mount["mountPath"] + "/", f"{folder}/")
    path = tmp_path / "config.toml"
    path.write_text(text)
    return load_config(path)


def secret_values(secret: Resource) -> dict[str, str]:
    values = {key: base64.b64decode(value).decode() for key, value in secret.get("data", {}).items()}
    return values | secret.get("stringData", {})


def test_both_layouts_are_there() -> None:
    assert [layout.name for layout in LAYOUTS] == ["gateway", "sidecar"]


@pytest.mark.parametrize("path", RESOURCE_FILES, ids=lambda p: str(p.relative_to(KUBERNETES)))
def test_every_resource_is_valid_against_the_kubernetes_schemas_strictly(path: Path) -> None:
    documents = [doc for doc in yaml.safe_load_all(path.read_text()) if doc]
    assert documents, f"{path.name} holds no resource"
    for resource in documents:
        try:
            kubernetes_validate.validate(resource, KUBERNETES_VERSION, strict=True)
        except kubernetes_validate.ValidationError as error:
            pytest.fail(f"{path.name}: {'.'.join(map(str, error.path))}: {error.message}")
        except kubernetes_validate.SchemaNotFoundError as error:
            pytest.fail(f"{path.name}: {error.message}")


@pytest.mark.parametrize("layout", LAYOUTS, ids=lambda p: p.name)
def test_the_kustomization_lists_exactly_the_resource_files(layout: Path) -> None:
    listed = yaml.safe_load((layout / "kustomization.yaml").read_text())["resources"]
    missing = [name for name in listed if not (layout / name).is_file()]
    assert not missing, f"listed but absent: {missing}"
    present = sorted(p.name for p in layout.glob("*.yaml") if p.name != "kustomization.yaml")
    assert sorted(listed) == present, "every resource file is listed once"


@pytest.mark.parametrize("layout", LAYOUTS, ids=lambda p: p.name)
def test_the_configmaps_config_loads_with_the_secrets_keys(layout: Path, tmp_path: Path) -> None:
    config = load_triage_config(layout, tmp_path)
    assert config.backends
    assert config.api_keys and all(key.key_sha256 for key in config.api_keys)
    # Every backend is a vLLM that Triage sends priorities to, and every vLLM accepts them.
    assert all(b.kind == "vllm" and b.scheduling == "priority" for b in config.backends)
    assert all("--scheduling-policy=priority" in c["args"] for c in vllm_containers(layout))


@pytest.mark.parametrize("layout", LAYOUTS, ids=lambda p: p.name)
def test_the_repositorys_secrets_hold_placeholders_only(layout: Path) -> None:
    for secret in (r for r in resources(layout) if r["kind"] == "Secret"):
        for key, value in secret_values(secret).items():
            assert "REPLACE-ME" in value, f"{secret['metadata']['name']}.{key}: not a placeholder"


@pytest.mark.parametrize("layout", LAYOUTS, ids=lambda p: p.name)
def test_triage_runs_the_router_image_non_root_with_probes_and_resources(layout: Path) -> None:
    pod, container = triage_pod(layout)
    assert container["image"] == ROUTER_IMAGE, "the image built from deploy/docker/router.Dockerfile, this version"
    ports = {port["name"]: port["containerPort"] for port in container["ports"]}
    assert ports == {"http": 8080}, "the port the image listens on (its CMD, EXPOSE)"
    assert container["readinessProbe"]["httpGet"] == {"path": "/ready", "port": "http"}
    assert container["livenessProbe"]["httpGet"] == {"path": "/health", "port": "http"}
    assert pod["spec"]["securityContext"]["runAsNonRoot"] is True
    assert container["securityContext"]["allowPrivilegeEscalation"] is False
    for workload in pods(layout):
        for each in workload["spec"]["containers"]:
            assert {"cpu", "memory"} <= each["resources"]["requests"].keys(), each["name"]
            assert "memory" in each["resources"]["limits"], each["name"]


@pytest.mark.parametrize("layout", LAYOUTS, ids=lambda p: p.name)
def test_the_triage_service_reaches_triages_port(layout: Path) -> None:
    pod, container = triage_pod(layout)
    service = find(layout, "Service", "triage")
    assert service["spec"]["selector"].items() <= pod["metadata"]["labels"].items()
    targets = [port["targetPort"] for port in service["spec"]["ports"]]
    owners = [each["name"] for each in pod["spec"]["containers"] for port in each.get("ports", [])
              if port["name"] in targets or port["containerPort"] in targets]
    assert owners == [container["name"]], f"the Service reaches {owners}, not Triage alone"


def test_sidecar_triage_sends_to_its_own_pods_vllm(tmp_path: Path) -> None:
    layout = KUBERNETES / "sidecar"
    pod, _ = triage_pod(layout)
    (vllm,) = vllm_containers(layout)
    assert vllm in pod["spec"]["containers"], "vLLM runs in Triage's pod"
    port = next(arg.split("=")[1] for arg in vllm["args"] if arg.startswith("--port="))
    (backend,) = load_triage_config(layout, tmp_path).backends
    assert backend.url == f"http://127.0.0.1:{port}"


def test_gateway_triage_lists_every_vllm_pod_by_its_stable_name(tmp_path: Path) -> None:
    layout = KUBERNETES / "gateway"
    statefulset = next(r for r in resources(layout) if r["kind"] == "StatefulSet")
    name, service_name = statefulset["metadata"]["name"], statefulset["spec"]["serviceName"]
    assert find(layout, "Service", service_name)["spec"].get("clusterIP") == "None", "a headless Service"
    (vllm,) = vllm_containers(layout)
    port = next(arg.split("=")[1] for arg in vllm["args"] if arg.startswith("--port="))
    urls = {backend.url for backend in load_triage_config(layout, tmp_path).backends}
    assert urls == {f"http://{name}-{i}.{service_name}:{port}" for i in range(statefulset["spec"]["replicas"])}
