"""The Kubernetes manifests: valid against the API schemas (strict), and consistent with each other and the CLI."""

from __future__ import annotations

from pathlib import Path

import kubernetes_validate
import pytest
import yaml
from counterpoint.server.cli import parser
from counterpoint.server.config import load_settings
from counterpoint.server.gateway.discovery import parse_target
from counterpoint.server.worker import metrics as worker_metrics

K8S = Path(__file__).parents[2] / "deploy" / "k8s"
VERSIONS = ["1.29.0", kubernetes_validate.latest_version()]  # an older cluster and the newest schema shipped


def kustomization() -> dict:
    return yaml.safe_load((K8S / "kustomization.yaml").read_text())


def documents() -> list[dict]:
    return [doc for name in kustomization()["resources"] for doc in yaml.safe_load_all((K8S / name).read_text())]


def find(kind: str, component: str | None = None) -> dict:
    docs = [d for d in documents() if d["kind"] == kind
            and (component is None or d["metadata"]["labels"].get("app.kubernetes.io/component") == component)]
    assert len(docs) == 1, f"want one {kind} {component or ''}, found {len(docs)}"
    return docs[0]


def container(deployment: dict) -> dict:
    return deployment["spec"]["template"]["spec"]["containers"][0]


def test_kustomization_lists_every_manifest():
    k = kustomization()
    assert k["apiVersion"] == "kustomize.config.k8s.io/v1beta1" and k["kind"] == "Kustomization"
    listed = set(k["resources"])
    on_disk = {p.name for p in K8S.glob("*.yaml")} - {"kustomization.yaml"}
    assert listed == on_disk
    assert [i["name"] for i in k["images"]] == ["counterpoint"]


@pytest.mark.parametrize("version", VERSIONS)
def test_manifests_pass_the_schema_validator(version):
    kinds = []
    for doc in documents():
        kubernetes_validate.validate(doc, version, strict=True)  # raises on any error or unknown field
        kinds.append(doc["kind"])
    assert sorted(kinds) == sorted(["Namespace", "ConfigMap", "Deployment", "Deployment", "Service", "Service",
                                    "HorizontalPodAutoscaler"])


def test_the_validator_rejects_a_typo():
    doc = find("Deployment", "worker")
    container(doc)["readinessProb"] = container(doc).pop("readinessProbe")
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(doc, VERSIONS[-1], strict=True)


def test_worker_requests_a_gpu_and_is_ready_from_health():
    worker = container(find("Deployment", "worker"))
    assert worker["resources"]["requests"]["nvidia.com/gpu"] == 1 == worker["resources"]["limits"]["nvidia.com/gpu"]
    port = {p["name"]: p["containerPort"] for p in worker["ports"]}["http"]
    assert worker["readinessProbe"]["httpGet"] == {"path": "/health", "port": "http"}
    args = parser().parse_args(worker["args"])
    assert args.command == "worker" and args.port == port


def test_gateway_discovers_workers_through_the_headless_service():
    service = find("Service", "worker")
    assert service["spec"]["clusterIP"] == "None"
    worker = find("Deployment", "worker")
    labels = worker["spec"]["template"]["metadata"]["labels"]
    assert service["spec"]["selector"].items() <= labels.items()
    args = parser().parse_args(container(find("Deployment", "gateway"))["args"])
    assert args.command == "gateway" and not args.worker_urls
    [target] = args.worker_dns
    assert parse_target(target) == (service["metadata"]["name"], service["spec"]["ports"][0]["port"])
    gateway_service = find("Service", "gateway")
    gateway_pod = find("Deployment", "gateway")["spec"]["template"]["metadata"]["labels"]
    assert gateway_service["spec"]["selector"].items() <= gateway_pod.items()
    assert not service["spec"]["selector"].items() <= gateway_pod.items()  # gateways are not workers


def test_hpa_scales_workers_on_their_queue_metric():
    hpa = find("HorizontalPodAutoscaler")
    target = hpa["spec"]["scaleTargetRef"]
    assert (target["kind"], target["name"]) == ("Deployment", find("Deployment", "worker")["metadata"]["name"])
    [metric] = hpa["spec"]["metrics"]
    assert metric["pods"]["metric"]["name"] == worker_metrics.WAITING._name  # a metric the worker exports
    assert hpa["spec"]["minReplicas"] >= 2


def test_configmap_is_a_valid_config_file(tmp_path):
    config = find("ConfigMap")
    [(key, text)] = config["data"].items()
    path = tmp_path / key
    path.write_text(text)
    settings = load_settings(str(path))  # extra="forbid": a misspelt key fails here
    assert settings.model == "smollm2" and settings.health_interval > 0
    for component in ("worker", "gateway"):
        pod = find("Deployment", component)["spec"]["template"]["spec"]
        args = parser().parse_args(pod["containers"][0]["args"])
        mounts = {m["name"]: m["mountPath"] for m in pod["containers"][0]["volumeMounts"]}
        volume = next(v for v in pod["volumes"] if v.get("configMap", {}).get("name") == config["metadata"]["name"])
        assert args.config == f"{mounts[volume['name']]}/{key}"


def test_pods_run_as_non_root():
    for component in ("worker", "gateway"):
        pod = find("Deployment", component)["spec"]["template"]["spec"]
        assert pod["securityContext"]["runAsNonRoot"] is True and pod["securityContext"]["runAsUser"] != 0
        assert pod["containers"][0]["securityContext"]["allowPrivilegeEscalation"] is False
