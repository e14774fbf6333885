"""Deployment files: Kubernetes manifests validate against the API schemas; compose and the image
agree with the settings the code reads."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
import yaml

from pipeline.settings import Settings

DEPLOY = Path(__file__).resolve().parents[2] / "deploy"
K8S = DEPLOY / "k8s"
KUBERNETES_VERSION = "1.33.0"


def manifests() -> list[tuple[str, dict[str, Any]]]:
    docs = []
    for path in sorted(K8S.glob("*.yaml")):
        if path.name == "kustomization.yaml":
            continue
        docs.extend((path.name, doc) for doc in yaml.safe_load_all(path.read_text()) if doc)
    return docs


def settings_env_names() -> set[str]:
    return {f"GRUWATCH_{name.upper()}" for name in Settings.model_fields}


@pytest.mark.parametrize(("name", "doc"), manifests(), ids=lambda v: v if isinstance(v, str) else "")
def test_manifest_is_valid_kubernetes(name: str, doc: dict[str, Any]) -> None:
    kubernetes_validate.validate(doc, KUBERNETES_VERSION, strict=True)


def test_kustomization_lists_every_manifest() -> None:
    listed = yaml.safe_load((K8S / "kustomization.yaml").read_text())["resources"]
    assert sorted(listed) == sorted(p.name for p in K8S.glob("*.yaml") if p.name != "kustomization.yaml")


def test_worker_deployment_wiring() -> None:
    by_kind = {doc["kind"]: doc for _, doc in manifests()}
    deployment, service, hpa = by_kind["Deployment"], by_kind["Service"], by_kind["HorizontalPodAutoscaler"]
    pod = deployment["spec"]["template"]["spec"]
    (container,) = pod["containers"]
    port = {p["name"]: p["containerPort"] for p in container["ports"]}["http"]
    config = by_kind["ConfigMap"]["data"]
    assert int(config["GRUWATCH_HTTP_PORT"]) == port == 8099
    for probe in ("readinessProbe", "livenessProbe"):
        assert container[probe]["httpGet"] == {"path": "/health", "port": "http"}
    refs = {ref.get("configMapRef", ref.get("secretRef"))["name"] for ref in container["envFrom"]}
    assert refs == {by_kind["ConfigMap"]["metadata"]["name"], by_kind["Secret"]["metadata"]["name"]}
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert service["spec"]["selector"] == deployment["spec"]["selector"]["matchLabels"]
    assert hpa["spec"]["scaleTargetRef"]["name"] == deployment["metadata"]["name"]
    assert hpa["spec"]["metrics"][0]["external"]["metric"]["name"] == "gruwatch_consumer_lag"


def test_every_setting_named_in_deploy_files_exists() -> None:
    known = settings_env_names()
    texts = [p.read_text() for p in [*K8S.glob("*.yaml"), DEPLOY / "compose.yaml", DEPLOY / "Dockerfile"]]
    named = {m for text in texts for m in re.findall(r"GRUWATCH_[A-Z_]+", text)}
    assert named and named <= known, named - known


def test_compose_services_hang_together() -> None:
    compose = yaml.safe_load((DEPLOY / "compose.yaml").read_text())
    services = compose["services"]
    for name, service in services.items():
        assert "image" in service or "build" in service, name
        for dependency in service.get("depends_on", {}):
            assert dependency in services, f"{name} depends on unknown {dependency}"
    assert services["worker"]["command"] == ["worker"]
    assert services["kafka"]["image"].startswith("apache/kafka:4.")
    assert {"worker", "producer", "alerts", "redis", "kafka"} <= set(services)


def test_dockerfile_runs_the_worker_as_non_root() -> None:
    text = (DEPLOY / "Dockerfile").read_text()
    assert re.search(r"^USER 10001$", text, re.M)
    assert 'ENTRYPOINT ["gruwatch"]' in text and "EXPOSE 8099" in text
    assert "python:3.11-slim" in text
