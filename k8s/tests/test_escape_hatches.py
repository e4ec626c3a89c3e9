"""The operators' escape hatches: extra env, volumes and containers, overridable security contexts
and probes, image registry and digest, common labels and annotations, ServiceMonitor settings, an
Ingress and an HTTPRoute; and the secure defaults they leave alone."""

from __future__ import annotations

import shutil
import tempfile
import tomllib
from pathlib import Path

import helm_python as helm
import kubernetes_validate
import pytest
import yaml

from conftest import (
    CHART,
    EXTRA_CONTAINER,
    EXTRA_POD,
    KUBE_VERSION,
    NAMESPACE,
    REPO,
    VARIANTS,
    StrictLoader,
    all_objects,
    find,
    pod_spec,
)

POD_DEFAULTS = {"runAsNonRoot": True, "runAsUser": 65532, "runAsGroup": 65532, "fsGroup": 65532,
                "seccompProfile": {"type": "RuntimeDefault"}}
REDIS_POD_DEFAULTS = {**POD_DEFAULTS, "runAsUser": 999, "runAsGroup": 999, "fsGroup": 999}
CONTAINER_DEFAULTS = {"allowPrivilegeEscalation": False, "readOnlyRootFilesystem": True, "runAsNonRoot": True,
                      "privileged": False, "capabilities": {"drop": ["ALL"]},
                      "seccompProfile": {"type": "RuntimeDefault"}}
ROUTER_PROBES = {
    "startupProbe": {"grpc": {"port": 50051, "service": "hunt.v1.LeaderboardService"}, "periodSeconds": 2,
                     "failureThreshold": 30},
    "livenessProbe": {"httpGet": {"path": "/healthz", "port": "admin"}, "periodSeconds": 10, "timeoutSeconds": 2,
                      "failureThreshold": 3},
    "readinessProbe": {"httpGet": {"path": "/readyz", "port": "admin"}, "periodSeconds": 5, "timeoutSeconds": 2,
                       "failureThreshold": 2},
}
PING = {"exec": {"command": ["redis-cli", "ping"]}}
REDIS_PROBES = {
    "startupProbe": {**PING, "periodSeconds": 2, "failureThreshold": 150},
    "livenessProbe": {**PING, "periodSeconds": 10, "timeoutSeconds": 5, "failureThreshold": 3},
    "readinessProbe": {**PING, "periodSeconds": 5, "timeoutSeconds": 2},
}
CONNECT = {"tcpSocket": {"port": "ingest"}}
WRITER_PROBES = {
    "startupProbe": {**CONNECT, "periodSeconds": 2, "failureThreshold": 60},
    "livenessProbe": {**CONNECT, "periodSeconds": 10, "failureThreshold": 3},
    "readinessProbe": {**CONNECT, "periodSeconds": 5},
}
PAGE_PATHS = ["/", "/app.js", "/style.css", "/tiers", "/ws"]


def containers(workload: dict) -> dict[str, dict]:
    return {c["name"]: c for c in pod_spec(workload)["containers"]}


def workloads(objects: list[dict], shard: str = "-shard-1") -> dict[str, dict]:
    """The router, the bundled Redis and the shard example of a render."""
    return {"router": find(objects, "Deployment", "-router"), "redis": find(objects, "StatefulSet", "-redis"),
            "shard": find(objects, "Deployment", shard)}


# --- Secure defaults ---------------------------------------------------------------------------

def test_default_security_contexts_are_the_restricted_profile(chart):
    found = workloads(all_objects(chart, {"shardExample": {"enabled": True}}))
    assert pod_spec(found["router"])["securityContext"] == POD_DEFAULTS
    assert pod_spec(found["shard"])["securityContext"] == POD_DEFAULTS
    assert pod_spec(found["redis"])["securityContext"] == REDIS_POD_DEFAULTS
    for workload in found.values():
        for container in pod_spec(workload)["containers"]:
            assert container["securityContext"] == CONTAINER_DEFAULTS, container["name"]
        spec = pod_spec(workload)
        assert "initContainers" not in spec
        assert [v["name"] for v in spec["volumes"]] in (["tmp"], ["config", "tmp"], ["data", "tmp"])


def test_default_probes_are_unchanged(chart):
    found = workloads(all_objects(chart, {"shardExample": {"enabled": True}}))
    for workload, container, probes in [("router", "tier-router", ROUTER_PROBES), ("redis", "redis", REDIS_PROBES),
                                        ("shard", "shard-writer", WRITER_PROBES)]:
        rendered = containers(found[workload])[container]
        for probe, expected in probes.items():
            assert rendered[probe] == expected, (workload, probe)
    assert not {"livenessProbe", "readinessProbe", "startupProbe"} & containers(found["shard"])["game"].keys()


def test_exposure_is_off_by_default(chart):
    kinds = {o["kind"] for o in all_objects(chart)}
    assert not {"Ingress", "HTTPRoute"} & kinds


# --- Extra env, volumes, containers ------------------------------------------------------------

def test_extras_land_in_every_workload(chart):
    objects = all_objects(chart, VARIANTS["escape-hatches"])
    found = workloads(objects, "-shard-2")
    targets = [("router", "tier-router"), ("redis", "redis"), ("shard", "game"), ("shard", "shard-writer")]
    for workload, name in targets:
        container = containers(found[workload])[name]
        env = [e["name"] for e in container["env"]]
        # After the chart's own variables, so $(VAR) references to them expand.
        assert env[-2:] == ["EXTRA", "NODE"], (workload, name)
        assert container["envFrom"][-2:] == EXTRA_CONTAINER["extraEnvFrom"], (workload, name)
        assert container["volumeMounts"][-1] == EXTRA_CONTAINER["extraVolumeMounts"][0], (workload, name)
    for workload in found.values():
        spec = pod_spec(workload)
        assert spec["volumes"][-1] == EXTRA_POD["extraVolumes"][0]
        assert spec["initContainers"] == EXTRA_POD["initContainers"]
        assert spec["containers"][-1] == EXTRA_POD["sidecars"][0]
    # The router keeps its ConfigMap first: extraEnvFrom adds to it, it does not replace it.
    router = containers(found["router"])["tier-router"]
    assert router["envFrom"][0] == {"configMapRef": {"name": "hunt-hunt-pipeline-router"}}
    assert [c["name"] for c in pod_spec(found["router"])["containers"]] == ["tier-router", "proxy"]


# --- Security context overrides ----------------------------------------------------------------

def test_openshift_can_leave_the_uids_to_the_platform(chart):
    found = workloads(all_objects(chart, VARIANTS["openshift"]))
    for workload in found.values():
        context = pod_spec(workload)["securityContext"]
        assert context == {"runAsNonRoot": True, "seccompProfile": {"type": "RuntimeDefault"}}
        for container in pod_spec(workload)["containers"]:
            assert container["securityContext"] == CONTAINER_DEFAULTS


def test_container_security_context_can_be_changed_key_by_key(chart):
    values = {"router": {"containerSecurityContext": {"readOnlyRootFilesystem": False, "runAsUser": 1000,
                                                      "seccompProfile": None}},
              "shardExample": {"enabled": True, "game": {"containerSecurityContext": {"capabilities": {"add": ["NET_BIND_SERVICE"]}}}}}
    objects = all_objects(chart, values)
    router = containers(find(objects, "Deployment", "-router"))["tier-router"]["securityContext"]
    assert router == {**{k: v for k, v in CONTAINER_DEFAULTS.items() if k != "seccompProfile"},
                      "readOnlyRootFilesystem": False, "runAsUser": 1000}
    shard = containers(find(objects, "Deployment", "-shard-1"))
    assert shard["game"]["securityContext"]["capabilities"] == {"drop": ["ALL"], "add": ["NET_BIND_SERVICE"]}
    # The other container of the pod keeps its own.
    assert shard["shard-writer"]["securityContext"] == CONTAINER_DEFAULTS
    for obj in objects:
        kubernetes_validate.validate(obj, KUBE_VERSION, strict=True)


# --- Probes ------------------------------------------------------------------------------------

def router_probes(chart, **overrides) -> dict:
    router = containers(find(all_objects(chart, {"router": overrides}), "Deployment", "-router"))["tier-router"]
    return {probe: router.get(probe) for probe in ROUTER_PROBES}


def test_probe_timings_merge_over_the_defaults(chart):
    probes = router_probes(chart, livenessProbe={"periodSeconds": 20, "initialDelaySeconds": 5})
    assert probes["livenessProbe"] == {**ROUTER_PROBES["livenessProbe"], "periodSeconds": 20, "initialDelaySeconds": 5}
    assert probes["readinessProbe"] == ROUTER_PROBES["readinessProbe"]


def test_probe_with_the_same_handler_keeps_the_admin_port(chart):
    probes = router_probes(chart, readinessProbe={"httpGet": {"path": "/healthz"}})
    assert probes["readinessProbe"]["httpGet"] == {"path": "/healthz", "port": "admin"}


def test_probe_with_another_handler_replaces_the_default(chart):
    probes = router_probes(chart, startupProbe={"tcpSocket": {"port": "grpc"}, "failureThreshold": 60})
    assert probes["startupProbe"] == {"tcpSocket": {"port": "grpc"}, "periodSeconds": 2, "failureThreshold": 60}


def test_probe_can_be_turned_off(chart):
    probes = router_probes(chart, livenessProbe={"enabled": False})
    assert probes["livenessProbe"] is None
    assert probes["readinessProbe"] == ROUTER_PROBES["readinessProbe"]
    # enabled: true changes nothing.
    assert router_probes(chart, livenessProbe={"enabled": True}) == ROUTER_PROBES


def test_probe_overrides_of_redis_and_the_writer(chart):
    objects = all_objects(chart, VARIANTS["escape-hatches"])
    redis = containers(find(objects, "StatefulSet", "-redis"))["redis"]
    assert redis["livenessProbe"] == {**REDIS_PROBES["livenessProbe"], "timeoutSeconds": 3}
    writer = containers(find(objects, "Deployment", "-shard-2"))["shard-writer"]
    assert "readinessProbe" not in writer
    assert writer["livenessProbe"] == WRITER_PROBES["livenessProbe"]


# --- Images ------------------------------------------------------------------------------------

def images(chart, values: dict) -> dict[str, str]:
    objects = all_objects(chart, {"shardExample": {"enabled": True}, **values})
    return {name: c["image"] for w in workloads(objects).values() for name, c in containers(w).items()}


def test_default_images(chart):
    assert images(chart, {}) == {"tier-router": "hunt-pipeline:0.1.0", "shard-writer": "hunt-pipeline:0.1.0",
                                 "redis": "redis:7.2-alpine",
                                 "game": "registry.example.com/treasure-hunt/game-server:latest"}


def test_image_registry_and_digest(chart):
    digest = "sha256:" + "0123456789abcdef" * 4
    found = images(chart, {"image": {"registry": "ghcr.io/acme", "tag": "9.9.9", "digest": digest}})
    # The digest pins the image: the tag is not used.
    assert found["tier-router"] == found["shard-writer"] == f"ghcr.io/acme/hunt-pipeline@{digest}"
    assert images(chart, {"image": {"registry": "registry.local:5000"}})["tier-router"] == (
        "registry.local:5000/hunt-pipeline:0.1.0")
    redis = images(chart, {"redis": {"bundled": {"image": {"digest": digest}}}})["redis"]
    assert redis == f"redis@{digest}"


def test_global_image_registry_wins_over_every_image_registry(chart):
    found = images(chart, {"global": {"imageRegistry": "mirror.example.com:5000"},
                           "image": {"registry": "ghcr.io/acme"}})
    assert found == {"tier-router": "mirror.example.com:5000/hunt-pipeline:0.1.0",
                     "shard-writer": "mirror.example.com:5000/hunt-pipeline:0.1.0",
                     "redis": "mirror.example.com:5000/redis:7.2-alpine",
                     "game": "mirror.example.com:5000/treasure-hunt/game-server:latest"}


# --- Common labels and annotations, ServiceAccount ---------------------------------------------

def test_common_labels_and_annotations_reach_every_object(chart):
    # all_objects parses with a loader that refuses a key twice in any mapping.
    objects = all_objects(chart, VARIANTS["common-metadata"])
    assert {"Ingress", "HTTPRoute", "ServiceMonitor", "PodMonitor", "PersistentVolumeClaim",
            "StatefulSet"} <= {o["kind"] for o in objects}
    for obj in objects:
        labels, annotations = obj["metadata"]["labels"], obj["metadata"]["annotations"]
        assert labels["example.com/tier"] == "gold", obj["metadata"]["name"]
        assert annotations["example.com/owner"] in {"games-team", "http-team"}, obj["metadata"]["name"]
        if obj["kind"] in {"Deployment", "StatefulSet"}:
            assert obj["spec"]["template"]["metadata"]["labels"]["cost-center"] == "hunt"
    # An object's own labels and annotations win over the common ones.
    router = find(objects, "Deployment", "-router")
    assert router["metadata"]["labels"]["team"] == "games"
    assert router["spec"]["template"]["metadata"]["labels"]["team"] == "router-team"
    assert find(objects, "ServiceMonitor")["metadata"]["labels"]["team"] == "monitoring"
    assert find(objects, "ConfigMap", "-dashboard")["metadata"]["labels"]["cost-center"] == "dashboards"
    assert find(objects, "Service", "-http")["metadata"]["annotations"]["example.com/owner"] == "http-team"
    assert find(objects, "Service", "-grpc")["metadata"]["annotations"]["example.com/owner"] == "games-team"
    # The shard's data outlives an uninstall, whatever commonAnnotations say.
    claim = find(objects, "PersistentVolumeClaim", "-shard-1-data")
    assert claim["metadata"]["annotations"]["helm.sh/resource-policy"] == "keep"
    account = find(objects, "ServiceAccount")["metadata"]["annotations"]
    assert account == {"iam.gke.io/gcp-service-account": "hunt@project.iam.gserviceaccount.com",
                       "example.com/owner": "games-team", "helm.sh/resource-policy": "delete"}


def test_selectors_ignore_common_labels(chart):
    objects = all_objects(chart, VARIANTS["common-metadata"])
    plain = all_objects(chart, {"shardExample": {"enabled": True}})
    for kind, suffix in [("Deployment", "-router"), ("StatefulSet", "-redis"), ("Deployment", "-shard-1")]:
        assert find(objects, kind, suffix)["spec"]["selector"] == find(plain, kind, suffix)["spec"]["selector"]


def test_no_metadata_without_values(chart):
    for obj in all_objects(chart):
        if obj["kind"] not in {"PersistentVolumeClaim"}:
            assert "annotations" not in obj["metadata"], obj["metadata"]["name"]


def test_labels_the_chart_sets_are_dropped_even_without_the_schema(chart):
    # helm install --skip-schema-validation: the chart still renders no key twice.
    values = chart.merge_values({"commonLabels": {"app.kubernetes.io/name": "x", "team": "games"},
                                 "router": {"podLabels": {"app.kubernetes.io/component": "x"}}})
    with pytest.raises(helm.HelmValuesError):
        chart.validate_schema(values)
    text = helm_template_without_schema(values)
    objects = [doc for doc in yaml.load_all(text, Loader=StrictLoader) if doc]
    router = find(objects, "Deployment", "-router")
    assert router["metadata"]["labels"]["app.kubernetes.io/name"] == "hunt-pipeline"
    assert router["metadata"]["labels"]["team"] == "games"
    assert router["spec"]["template"]["metadata"]["labels"]["app.kubernetes.io/component"] == "router"


def helm_template_without_schema(values: dict) -> str:
    """The chart rendered without its values.schema.json (a copy of the chart without it)."""
    with tempfile.TemporaryDirectory() as tmp:
        copy = Path(tmp) / "hunt-pipeline"
        shutil.copytree(CHART, copy)
        (copy / "values.schema.json").unlink()
        with helm.Chart.load(copy) as loaded:
            rendered = loaded.render(values, name="hunt", namespace=NAMESPACE, is_install=True)
    return "\n---\n".join(t for path, t in rendered.items() if not path.endswith("NOTES.txt"))


# --- ServiceMonitor ----------------------------------------------------------------------------

def test_service_monitor_settings_reach_both_monitors(chart):
    objects = all_objects(chart, VARIANTS["escape-hatches"])
    monitor_values = VARIANTS["escape-hatches"]["metrics"]["serviceMonitor"]
    for kind, endpoints in [("ServiceMonitor", "endpoints"), ("PodMonitor", "podMetricsEndpoints")]:
        monitor = find(objects, kind)
        assert monitor["metadata"]["namespace"] == "monitoring"
        # It still scrapes the release's namespace.
        assert monitor["spec"]["namespaceSelector"]["matchNames"] == [NAMESPACE]
        (endpoint,) = monitor["spec"][endpoints]
        assert endpoint["relabelings"] == monitor_values["relabelings"]
        assert endpoint["metricRelabelings"] == monitor_values["metricRelabelings"]
    plain = find(all_objects(chart, VARIANTS["service-monitor"]), "ServiceMonitor")
    assert "namespace" not in plain["metadata"]
    assert not {"relabelings", "metricRelabelings"} & plain["spec"]["endpoints"][0].keys()


# --- Ingress and HTTPRoute ---------------------------------------------------------------------

def test_ingress_routes_the_page_and_its_websocket_only(chart):
    objects = all_objects(chart, VARIANTS["ingress"])
    ingress = find(objects, "Ingress")
    kubernetes_validate.validate(ingress, KUBE_VERSION, strict=True)
    http = find(objects, "Service", "-http")
    spec = ingress["spec"]
    assert spec["ingressClassName"] == "nginx"
    assert spec["tls"] == [{"secretName": "hunt-tls", "hosts": ["hunt.example.com"]}]
    assert ingress["metadata"]["annotations"] == {"nginx.ingress.kubernetes.io/proxy-read-timeout": "3600"}
    assert [rule["host"] for rule in spec["rules"]] == ["hunt.example.com", "*.hunt.example.org"]
    for rule in spec["rules"]:
        paths = rule["http"]["paths"]
        assert [(p["path"], p["pathType"]) for p in paths] == [(path, "Exact") for path in PAGE_PATHS]
        for path in paths:
            assert path["backend"]["service"] == {"name": http["metadata"]["name"], "port": {"name": "http"}}
    assert "http" in {p["name"] for p in http["spec"]["ports"]}


def test_ingress_without_hosts_serves_any_host(chart):
    ingress = find(all_objects(chart, {"ingress": {"enabled": True, "paths": [{"path": "/", "pathType": "Prefix"}]}}),
                   "Ingress")
    (rule,) = ingress["spec"]["rules"]
    assert "host" not in rule
    assert rule["http"]["paths"][0]["pathType"] == "Prefix"
    assert "ingressClassName" not in ingress["spec"] and "tls" not in ingress["spec"]


def test_http_route_attaches_to_the_gateway(chart):
    objects = all_objects(chart, VARIANTS["http-route"])
    route = find(objects, "HTTPRoute")
    http = find(objects, "Service", "-http")
    assert route["metadata"]["annotations"] == {"example.com/owner": "games-team"}
    assert route["spec"]["parentRefs"] == [{"name": "edge", "namespace": "gateways", "sectionName": "https"}]
    assert route["spec"]["hostnames"] == ["hunt.example.com"]
    (rule,) = route["spec"]["rules"]
    assert [m["path"] for m in rule["matches"]] == [{"type": "Exact", "value": path} for path in PAGE_PATHS]
    assert rule["backendRefs"] == [{"name": http["metadata"]["name"], "port": http["spec"]["ports"][0]["port"]}]


def test_http_route_needs_a_parent(chart):
    with pytest.raises(helm.HelmRenderError, match="needs httpRoute.parentRefs"):
        all_objects(chart, {"httpRoute": {"enabled": True}})


def test_notes_tell_about_websocket_timeouts_and_tls(chart):
    values = {"ingress": {"enabled": True, "hosts": ["hunt.example.com"]}}
    notes = chart.render(values, name="hunt", namespace=NAMESPACE, is_install=True)["hunt-pipeline/templates/NOTES.txt"]
    assert "Ingress hunt-hunt-pipeline-http (hunt.example.com)" in notes
    assert "TLS is terminated at the edge" in notes
    assert "60 s" in notes


def test_websocket_timeouts_named_in_the_chart_are_the_routers(chart):
    source = (REPO / "tier-router" / "src" / "config.rs").read_text()
    assert "ping_interval: Duration::from_secs(20)" in source
    assert "idle_timeout: Duration::from_secs(60)" in source


# --- Chart metadata ----------------------------------------------------------------------------

def test_chart_metadata_points_at_the_project():
    meta = yaml.safe_load((CHART / "Chart.yaml").read_text())
    workspace = tomllib.loads((REPO / "Cargo.toml").read_text())["workspace"]["package"]
    assert meta["apiVersion"] == "v2"
    assert meta["home"] == workspace["repository"]
    assert meta["sources"] == [workspace["repository"]]
    assert meta["icon"].startswith(workspace["repository"])
    assert meta["maintainers"] and all(m["name"] for m in meta["maintainers"])
    assert meta["appVersion"] == workspace["version"]
