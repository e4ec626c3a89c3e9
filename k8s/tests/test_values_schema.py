"""values.schema.json: it covers every value and rejects bad ones (checked by Helm's engine,
as `helm install` would)."""

from __future__ import annotations

import json

import helm_python as helm
import jsonschema
import pytest
import yaml

from conftest import CHART, VARIANTS

SCHEMA = json.loads((CHART / "values.schema.json").read_text())
DEFAULTS = yaml.safe_load((CHART / "values.yaml").read_text())


def resolve(node: dict) -> dict:
    while "$ref" in node:
        node = SCHEMA["definitions"][node["$ref"].removeprefix("#/definitions/")]
    return node


def walk(values, node, path="values"):
    """Yields (path, schema node) for every value in `values`, failing on a value the schema
    does not describe."""
    node = resolve(node)
    yield path, node
    if isinstance(values, dict):
        for key, value in values.items():
            if key in node.get("properties", {}):
                yield from walk(value, node["properties"][key], f"{path}.{key}")
            else:
                extra = node.get("additionalProperties")
                assert isinstance(extra, dict), f"{path}.{key} is not in values.schema.json"
                yield from walk(value, extra, f"{path}.{key}")


def test_schema_is_a_valid_draft_7_schema():
    jsonschema.Draft7Validator.check_schema(SCHEMA)


# Helm hands a subchart every global of its parent: values.global must take keys it does not know.
OPEN_BY_DESIGN = {"values.global"}


def test_every_default_value_is_described_and_closed():
    seen = 0
    for path, node in walk(DEFAULTS, SCHEMA):
        seen += 1
        if node.get("properties") and path not in OPEN_BY_DESIGN:
            assert node.get("additionalProperties") is False, f"{path} accepts unknown keys"
            assert set(node.get("required", [])) <= set(node["properties"]), path
        elif "anyOf" not in node:
            assert "type" in node or "enum" in node, f"{path} has no type"
    assert seen > 100


def test_global_takes_a_parent_charts_keys_and_types_its_own(chart):
    chart.validate_schema(chart.merge_values({"global": {"imageRegistry": "mirror.example.com", "storageClass": "x"}}))
    with pytest.raises(helm.HelmValuesError):
        chart.validate_schema(chart.merge_values({"global": {"imageRegistry": 5}}))


@pytest.mark.parametrize("variant", VARIANTS)
def test_the_variants_are_valid(chart, variant):
    chart.validate_schema(chart.merge_values(VARIANTS[variant]))


BAD_VALUES = {
    "unknown top-level key": {"replicas": 3},
    "misspelt router key": {"router": {"replica": 3}},
    "zero replicas": {"router": {"replicas": 0}},
    "replicas as text": {"router": {"replicas": "two"}},
    "log format": {"router": {"logFormat": "xml"}},
    "apply batch past 1000": {"router": {"applyBatch": 1001}},
    "max apply batch past 1000": {"router": {"maxApplyBatch": 1001}},
    "lease under 300 ms": {"router": {"leaseTtlMs": 100}},
    "saga batch past 10000": {"router": {"saga": {"batch": 20000}}},
    "fractional grace": {"router": {"terminationGracePeriodSeconds": 1.5}},
    "cpu target over 100": {"router": {"autoscaling": {"targetCPUUtilizationPercentage": 150}}},
    "pdb percentage": {"router": {"podDisruptionBudget": {"maxUnavailable": "half"}}},
    "memory quantity": {"router": {"resources": {"limits": {"memory": "lots"}}}},
    "service type": {"service": {"grpc": {"type": "Ingress"}}},
    "service port": {"service": {"http": {"port": 70000}}},
    "redis mode": {"redis": {"mode": "sentinel"}},
    "redis host with a password": {"redis": {"external": {"host": "user:pw@redis"}}},
    "redis db": {"redis": {"external": {"db": -1}}},
    "redis cluster as text": {"redis": {"external": {"cluster": "yes"}}},
    "secret name": {"redis": {"external": {"existingSecret": "Hunt_Redis"}}},
    "maxmemory": {"redis": {"bundled": {"maxmemory": "2 gigabytes"}}},
    "pull policy": {"image": {"pullPolicy": "Sometimes"}},
    "scrape interval": {"metrics": {"serviceMonitor": {"interval": "30 seconds"}}},
    "monitor label value": {"metrics": {"serviceMonitor": {"labels": {"release": 1}}}},
    "network peers": {"networkPolicy": {"routerFrom": "everyone"}},
    "shard id": {"shardExample": {"shardId": -1}},
    "claim shards": {"shardExample": {"claimShards": 0}},
    "shard on nfs": {"shardExample": {"persistence": {"storageClassName": "nfs-client"}}},
    "shard without storage class": {"shardExample": {"persistence": {"storageClassName": ""}}},
    "sidecar args": {"shardExample": {"sidecar": {"extraArgs": [1]}}},
    # The escape hatches: closed, typed.
    "pod security context key": {"router": {"podSecurityContext": {"runAsUsr": 1000}}},
    "pod security context uid as text": {"router": {"podSecurityContext": {"runAsUser": "nobody"}}},
    "negative uid": {"redis": {"bundled": {"podSecurityContext": {"fsGroup": -1}}}},
    "seccomp type": {"router": {"podSecurityContext": {"seccompProfile": {"type": "Default"}}}},
    "container security context key": {"router": {"containerSecurityContext": {"readOnlyRoot": True}}},
    "privileged as text": {"shardExample": {"game": {"containerSecurityContext": {"privileged": "no"}}}},
    "capabilities as text": {"redis": {"bundled": {"containerSecurityContext": {"capabilities": {"drop": "ALL"}}}}},
    "env var without name": {"router": {"extraEnv": [{"value": "1"}]}},
    "env var as a map": {"router": {"extraEnv": {"EXTRA": "1"}}},
    "env var value as number": {"shardExample": {"sidecar": {"extraEnv": [{"name": "N", "value": 1}]}}},
    "env var key": {"redis": {"bundled": {"extraEnv": [{"name": "N", "valueFrom": {"secret": {"name": "s"}}}]}}},
    "env from key": {"router": {"extraEnvFrom": [{"secret": {"name": "s"}}]}},
    "volume without source": {"router": {"extraVolumes": [{"name": "v"}]}},
    "volume source as text": {"shardExample": {"extraVolumes": [{"name": "v", "emptyDir": "yes"}]}},
    "relative mount path": {"router": {"extraVolumeMounts": [{"name": "v", "mountPath": "etc"}]}},
    "mount key": {"shardExample": {"game": {"extraVolumeMounts": [{"name": "v", "mountPath": "/x", "ro": True}]}}},
    "sidecar without image": {"router": {"sidecars": [{"name": "proxy"}]}},
    "sidecar key": {"redis": {"bundled": {"sidecars": [{"name": "p", "image": "p:1", "imagePullpolicy": "Always"}]}}},
    "init container name": {"shardExample": {"initContainers": [{"name": "Wait", "image": "busybox"}]}},
    "probe key": {"router": {"livenessProbe": {"period": 10}}},
    "probe period 0": {"router": {"readinessProbe": {"periodSeconds": 0}}},
    "probe enabled as text": {"shardExample": {"sidecar": {"startupProbe": {"enabled": "no"}}}},
    "probe handler key": {"redis": {"bundled": {"livenessProbe": {"httpGet": {"url": "/"}}}}},
    "image digest": {"image": {"digest": "latest"}},
    "image registry with a scheme": {"image": {"registry": "https://ghcr.io"}},
    "global registry": {"global": {"imageRegistry": "https://mirror.example.com"}},
    "bundled image digest": {"redis": {"bundled": {"image": {"digest": "sha256:xyz"}}}},
    "common label the chart sets": {"commonLabels": {"app.kubernetes.io/name": "other"}},
    "pod label the chart sets": {"router": {"podLabels": {"app.kubernetes.io/component": "web"}}},
    "common label value": {"commonLabels": {"team": 1}},
    "common label value too long": {"commonLabels": {"team": "x" * 64}},
    "common label key": {"commonLabels": {"a b": "c"}},
    "common annotation value": {"commonAnnotations": {"owner": True}},
    "service account annotations": {"serviceAccount": {"annotations": ["role"]}},
    "monitor namespace": {"metrics": {"serviceMonitor": {"namespace": "Monitoring"}}},
    "relabel action": {"metrics": {"serviceMonitor": {"relabelings": [{"action": "rename"}]}}},
    "relabel key": {"metrics": {"serviceMonitor": {"metricRelabelings": [{"source_labels": ["a"]}]}}},
    "ingress key": {"ingress": {"enabled": True, "class": "nginx"}},
    "ingress enabled as text": {"ingress": {"enabled": "true"}},
    "ingress path type": {"ingress": {"paths": [{"path": "/", "pathType": "PathPrefix"}]}},
    "ingress relative path": {"ingress": {"paths": [{"path": "ws", "pathType": "Exact"}]}},
    "ingress without paths": {"ingress": {"paths": []}},
    "ingress host": {"ingress": {"hosts": ["https://hunt.example.com"]}},
    "ingress tls key": {"ingress": {"tls": [{"secret": "hunt-tls"}]}},
    "http route parent without name": {"httpRoute": {"parentRefs": [{"namespace": "gateways"}]}},
    "http route path type": {"httpRoute": {"paths": [{"path": "/", "pathType": "Prefix"}]}},
    "http route key": {"httpRoute": {"gateway": "edge"}},
}


@pytest.mark.parametrize("values", BAD_VALUES.values(), ids=BAD_VALUES.keys())
def test_bad_values_are_rejected(chart, values):
    with pytest.raises(helm.HelmValuesError):
        chart.validate_schema(chart.merge_values(values))
    # And an install with them never gets to render.
    with pytest.raises(helm.HelmValuesError):
        chart.render(values, name="hunt", namespace="games", is_install=True)
