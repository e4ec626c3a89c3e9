"""Shared helpers of the chart tests: the chart rendered with Helm's own engine (the Go SDK
through helm-python-sdk, no `helm` binary), and the repository's facts the chart must match."""

from __future__ import annotations

import re
from pathlib import Path

import helm_python as helm
import pytest
import yaml

class StrictLoader(yaml.SafeLoader):
    """A YAML loader that refuses a mapping with a key twice, as kustomize and kubectl apply do
    (Helm itself keeps the last one silently)."""


def _mapping_without_duplicates(loader, node, deep=False):
    keys = [loader.construct_object(key, deep=deep) for key, _ in node.value]
    duplicates = sorted({str(k) for k in keys if keys.count(k) > 1})
    if duplicates:
        raise yaml.constructor.ConstructorError(
            None, None, f"mapping key(s) defined twice: {duplicates}", node.start_mark)
    return loader.construct_mapping(node, deep=deep)


StrictLoader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _mapping_without_duplicates)

REPO = Path(__file__).resolve().parents[2]
CHART = REPO / "k8s" / "hunt-pipeline"
KUBE_VERSION = "1.28"
RELEASE = "hunt"
NAMESPACE = "games"


@pytest.fixture(scope="session")
def chart():
    with helm.Chart.load(CHART) as loaded:
        yield loaded


def render(chart, values: dict | None = None) -> dict[str, list[dict]]:
    """Renders the chart as `helm install` would and returns its objects by template file."""
    manifests = chart.render(values or {}, name=RELEASE, namespace=NAMESPACE, is_install=True)
    objects = {}
    for path, text in manifests.items():
        if path.endswith("NOTES.txt"):
            continue
        docs = [doc for doc in yaml.load_all(text, Loader=StrictLoader) if doc]
        if docs:
            objects[path] = docs
    return objects


def all_objects(chart, values: dict | None = None) -> list[dict]:
    return [doc for docs in render(chart, values).values() for doc in docs]


def find(objects: list[dict], kind: str, name_suffix: str = "") -> dict:
    matches = [o for o in objects if o["kind"] == kind and o["metadata"]["name"].endswith(name_suffix)]
    assert len(matches) == 1, f"expected one {kind} *{name_suffix}, got {[o['metadata']['name'] for o in matches]}"
    return matches[0]


def kinds(objects: list[dict]) -> set[str]:
    return {o["kind"] for o in objects}


def pod_spec(workload: dict) -> dict:
    return workload["spec"]["template"]["spec"]


def env_of(container: dict) -> dict[str, dict]:
    return {entry["name"]: entry for entry in container.get("env", [])}


def metric_names(crate: str, module: str = "metrics.rs") -> set[str]:
    """Every metric name a crate's metrics module declares (`crate` may be `lib/<name>`)."""
    source = (REPO / crate / "src" / module).read_text()
    return set(re.findall(r'pub const \w+: &str = "([a-z_]+)";', source))


def router_env_vars() -> set[str]:
    """The environment variables tier-router's flags read."""
    source = (REPO / "tier-router" / "src" / "main.rs").read_text()
    return set(re.findall(r'env = "([A-Z_]+)"', source))


# A restricted container, as the chart's own: what the escape-hatches variant adds to each pod.
LOCKED_DOWN = {"allowPrivilegeEscalation": False, "readOnlyRootFilesystem": True, "runAsNonRoot": True,
               "privileged": False, "capabilities": {"drop": ["ALL"]}, "seccompProfile": {"type": "RuntimeDefault"}}
SMALL = {"requests": {"cpu": "10m", "memory": "16Mi"}, "limits": {"memory": "32Mi"}}
EXTRA_POD = {
    "extraVolumes": [{"name": "extra-config", "configMap": {"name": "hunt-extra"}}],
    "initContainers": [{"name": "wait", "image": "busybox:1.36", "command": ["true"],
                        "securityContext": LOCKED_DOWN, "resources": SMALL}],
    "sidecars": [{"name": "proxy", "image": "envoyproxy/envoy:v1.31.0", "securityContext": LOCKED_DOWN,
                  "resources": SMALL, "ports": [{"name": "proxy", "containerPort": 10000}]}],
}
EXTRA_CONTAINER = {
    "extraEnv": [{"name": "EXTRA", "value": "1"},
                 {"name": "NODE", "valueFrom": {"fieldRef": {"fieldPath": "spec.nodeName"}}}],
    "extraEnvFrom": [{"secretRef": {"name": "hunt-extra"}}, {"configMapRef": {"name": "hunt-extra", "optional": True}}],
    "extraVolumeMounts": [{"name": "extra-config", "mountPath": "/etc/extra", "readOnly": True}],
}

# Values of the variants every test renders: each must render, lint clean and validate.
VARIANTS: dict[str, dict] = {
    "default": {},
    "bundled-redis": {
        "redis": {"mode": "bundled", "bundled": {"maxmemory": "2gb", "persistence": {"size": "20Gi", "storageClassName": "fast-ssd"}}},
        "router": {"autoscaling": {"enabled": False}, "replicas": 3},
    },
    "external-redis": {
        "redis": {"mode": "external", "external": {
            "host": "redis-primary.data.svc.cluster.local", "port": 6380, "db": 2, "username": "hunt",
            "existingSecret": "hunt-redis", "passwordKey": "password"}},
        "networkPolicy": {"externalRedisTo": [{"ipBlock": {"cidr": "10.20.0.0/16"}}]},
    },
    "external-redis-cluster": {
        "redis": {"mode": "external", "external": {
            "host": "redis-cluster.data.svc.cluster.local", "existingSecret": "hunt-redis",
            "passwordKey": "password", "cluster": True}},
        "shardExample": {"enabled": True, "shardId": 3},
    },
    "external-redis-sentinel": {
        "redis": {"mode": "external", "external": {
            "host": "redis-sentinel.data.svc.cluster.local", "port": 26379, "existingSecret": "hunt-redis",
            "passwordKey": "password", "sentinelMaster": "hunt", "replicaAcks": 1}},
        "shardExample": {"enabled": True, "shardId": 4},
    },
    "external-redis-tls": {
        "redis": {"mode": "external", "external": {
            "host": "hunt.redis.example.cloud", "port": 6380, "username": "hunt", "existingSecret": "hunt-redis",
            "passwordKey": "password", "cluster": True,
            "tls": {"enabled": True, "caSecret": "hunt-redis-ca", "caKey": "ca.pem"}}},
        "shardExample": {"enabled": True, "shardId": 5},
    },
    "external-redis-url-secret": {
        "redis": {"mode": "external", "external": {"existingSecret": "hunt-redis", "urlKey": "url"}},
    },
    "sidecar-example": {
        "shardExample": {"enabled": True, "shardId": 7},
    },
    "service-monitor": {
        "metrics": {"serviceMonitor": {"enabled": True, "labels": {"release": "prometheus"}},
                    "dashboard": {"enabled": True}},
    },
    "service-monitor-with-shard": {
        "metrics": {"serviceMonitor": {"enabled": True, "labels": {"release": "prometheus"}}},
        "shardExample": {"enabled": True, "shardId": 5},
    },
    "escape-hatches": {
        "image": {"registry": "registry.example.com/hunt", "digest": "sha256:" + "a" * 64},
        "serviceAccount": {"annotations": {"eks.amazonaws.com/role-arn": "arn:aws:iam::123456789012:role/hunt"}},
        "router": {**EXTRA_POD, **EXTRA_CONTAINER, "podLabels": {"team": "games"}, "podAnnotations": {"team": "games"},
                   "livenessProbe": {"periodSeconds": 20}, "readinessProbe": {"httpGet": {"path": "/readyz"}, "failureThreshold": 4},
                   "startupProbe": {"tcpSocket": {"port": "grpc"}}},
        "redis": {"bundled": {**EXTRA_POD, **EXTRA_CONTAINER, "livenessProbe": {"timeoutSeconds": 3}}},
        "shardExample": {"enabled": True, "shardId": 2, **EXTRA_POD,
                         "game": EXTRA_CONTAINER, "sidecar": {**EXTRA_CONTAINER, "readinessProbe": {"enabled": False}}},
        "metrics": {"serviceMonitor": {"enabled": True, "namespace": "monitoring", "labels": {"release": "prometheus"},
                                       "relabelings": [{"sourceLabels": ["__meta_kubernetes_pod_node_name"], "targetLabel": "node"}],
                                       "metricRelabelings": [{"sourceLabels": ["__name__"], "regex": "go_.*", "action": "drop"}]}},
    },
    "openshift": {
        # The restricted-v2 SCC picks the UID and GID: the chart's fixed ones are dropped.
        "router": {"podSecurityContext": {"runAsUser": None, "runAsGroup": None, "fsGroup": None}},
        "redis": {"bundled": {"podSecurityContext": {"runAsUser": None, "runAsGroup": None, "fsGroup": None}}},
        "shardExample": {"enabled": True, "podSecurityContext": {"runAsUser": None, "runAsGroup": None, "fsGroup": None}},
    },
    "common-metadata": {
        "commonLabels": {"team": "games", "cost-center": "hunt", "example.com/tier": "gold"},
        "commonAnnotations": {"example.com/owner": "games-team", "helm.sh/resource-policy": "delete"},
        # The same keys in an object's own labels: it wins, and no key appears twice.
        "router": {"podLabels": {"team": "router-team"}},
        "metrics": {"serviceMonitor": {"enabled": True, "labels": {"team": "monitoring", "release": "prometheus"}},
                    "dashboard": {"enabled": True, "labels": {"grafana_dashboard": "1", "cost-center": "dashboards"}}},
        "service": {"http": {"type": "ClusterIP", "port": 8080, "annotations": {"example.com/owner": "http-team"}}},
        "serviceAccount": {"annotations": {"iam.gke.io/gcp-service-account": "hunt@project.iam.gserviceaccount.com"}},
        "shardExample": {"enabled": True},
        "ingress": {"enabled": True},
        "httpRoute": {"enabled": True, "parentRefs": [{"name": "edge"}]},
    },
    "ingress": {
        "ingress": {"enabled": True, "className": "nginx", "hosts": ["hunt.example.com", "*.hunt.example.org"],
                    "annotations": {"nginx.ingress.kubernetes.io/proxy-read-timeout": "3600"},
                    "tls": [{"secretName": "hunt-tls", "hosts": ["hunt.example.com"]}]},
    },
    "http-route": {
        "httpRoute": {"enabled": True, "annotations": {"example.com/owner": "games-team"},
                      "parentRefs": [{"name": "edge", "namespace": "gateways", "sectionName": "https"}],
                      "hostnames": ["hunt.example.com"]},
    },
    "everything-off": {
        "networkPolicy": {"enabled": False},
        "serviceAccount": {"create": False},
        "router": {"podDisruptionBudget": {"enabled": False}, "autoscaling": {"enabled": False}},
    },
}
