"""The chart rendered by Helm's engine, linted, and every manifest validated against the
Kubernetes 1.28 schemas; then what each variant must contain."""

from __future__ import annotations

import json
from urllib.parse import urlsplit

import helm_python as helm
import jsonschema
import kubernetes_validate
import pytest

from conftest import (
    CHART,
    KUBE_VERSION,
    NAMESPACE,
    VARIANTS,
    all_objects,
    env_of,
    find,
    kinds,
    pod_spec,
    router_env_vars,
)

# kubernetes-validate ships no schemas for CRDs: the ServiceMonitor and the PodMonitor are
# checked against this subset of monitoring.coreos.com/v1 (the fields the chart sets, with their
# types).
DURATION = {"type": "string", "pattern": "^(0|(([0-9]+)y)?(([0-9]+)w)?(([0-9]+)d)?(([0-9]+)h)?(([0-9]+)m)?(([0-9]+)s)?(([0-9]+)ms)?)$"}
RELABEL_CONFIGS = {"type": "array", "items": {
    "type": "object", "additionalProperties": False,
    "properties": {
        "sourceLabels": {"type": "array", "items": {"type": "string", "pattern": "^[a-zA-Z_][a-zA-Z0-9_]*$"}},
        "separator": {"type": "string"},
        "targetLabel": {"type": "string"},
        "regex": {"type": "string"},
        "modulus": {"type": "integer", "minimum": 0},
        "replacement": {"type": "string"},
        "action": {"enum": ["replace", "Replace", "keep", "Keep", "drop", "Drop", "hashmod", "HashMod",
                            "labelmap", "LabelMap", "labeldrop", "LabelDrop", "labelkeep", "LabelKeep",
                            "lowercase", "Lowercase", "uppercase", "Uppercase", "keepequal", "KeepEqual",
                            "dropequal", "DropEqual"]},
    }}}
METADATA = {"type": "object", "required": ["name"],
            "properties": {"name": {"type": "string"}, "namespace": {"type": "string"},
                           "labels": {"type": "object", "additionalProperties": {"type": "string"}},
                           "annotations": {"type": "object", "additionalProperties": {"type": "string"}}}}
SERVICE_MONITOR_SHAPE = {
    "type": "object",
    "required": ["apiVersion", "kind", "metadata", "spec"],
    "properties": {
        "apiVersion": {"const": "monitoring.coreos.com/v1"},
        "kind": {"const": "ServiceMonitor"},
        "metadata": METADATA,
        "spec": {
            "type": "object",
            "required": ["selector", "endpoints"],
            "additionalProperties": False,
            "properties": {
                "selector": {"type": "object", "additionalProperties": False, "required": ["matchLabels"],
                             "properties": {"matchLabels": {"type": "object", "additionalProperties": {"type": "string"}}}},
                "namespaceSelector": {"type": "object", "additionalProperties": False,
                                      "properties": {"matchNames": {"type": "array", "items": {"type": "string"}}}},
                "endpoints": {"type": "array", "minItems": 1, "items": {
                    "type": "object", "additionalProperties": False, "required": ["port"],
                    "properties": {
                        "port": {"type": "string"},
                        "path": {"type": "string", "pattern": "^/"},
                        "scheme": {"enum": ["http", "https"]},
                        "interval": DURATION,
                        "scrapeTimeout": DURATION,
                        "relabelings": RELABEL_CONFIGS,
                        "metricRelabelings": RELABEL_CONFIGS,
                    }}},
            },
        },
    },
}


POD_MONITOR_SHAPE = {
    "type": "object",
    "required": ["apiVersion", "kind", "metadata", "spec"],
    "properties": {
        "apiVersion": {"const": "monitoring.coreos.com/v1"},
        "kind": {"const": "PodMonitor"},
        "metadata": SERVICE_MONITOR_SHAPE["properties"]["metadata"],
        "spec": {
            "type": "object",
            "required": ["selector", "podMetricsEndpoints"],
            "additionalProperties": False,
            "properties": {
                "selector": SERVICE_MONITOR_SHAPE["properties"]["spec"]["properties"]["selector"],
                "namespaceSelector": SERVICE_MONITOR_SHAPE["properties"]["spec"]["properties"]["namespaceSelector"],
                "podMetricsEndpoints": {"type": "array", "minItems": 1, "items": {
                    "type": "object", "additionalProperties": False, "required": ["port"],
                    "properties": {
                        "port": {"type": "string"},
                        "path": {"type": "string", "pattern": "^/"},
                        "scheme": {"enum": ["http", "https"]},
                        "interval": DURATION,
                        "scrapeTimeout": DURATION,
                        "relabelings": RELABEL_CONFIGS,
                        "metricRelabelings": RELABEL_CONFIGS,
                    }}},
            },
        },
    },
}


# No schema for the Gateway API either: HTTPRoute is checked against this subset of
# gateway.networking.k8s.io/v1 (the fields the chart sets, with their types and limits).
GATEWAY_NAME = {"type": "string", "minLength": 1, "maxLength": 253}
HTTP_ROUTE_SHAPE = {
    "type": "object",
    "required": ["apiVersion", "kind", "metadata", "spec"],
    "properties": {
        "apiVersion": {"const": "gateway.networking.k8s.io/v1"},
        "kind": {"const": "HTTPRoute"},
        "metadata": METADATA,
        "spec": {
            "type": "object",
            "required": ["parentRefs", "rules"],
            "additionalProperties": False,
            "properties": {
                "parentRefs": {"type": "array", "minItems": 1, "maxItems": 32, "items": {
                    "type": "object", "additionalProperties": False, "required": ["name"],
                    "properties": {
                        "group": {"type": "string", "maxLength": 253},
                        "kind": {"type": "string", "minLength": 1, "maxLength": 63},
                        "namespace": {"type": "string", "minLength": 1, "maxLength": 63},
                        "name": GATEWAY_NAME,
                        "sectionName": GATEWAY_NAME,
                        "port": {"type": "integer", "minimum": 1, "maximum": 65535},
                    }}},
                "hostnames": {"type": "array", "maxItems": 16, "items": {
                    "type": "string", "pattern": r"^(\*\.)?[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$"}},
                "rules": {"type": "array", "minItems": 1, "maxItems": 16, "items": {
                    "type": "object", "additionalProperties": False,
                    "properties": {
                        "matches": {"type": "array", "maxItems": 64, "items": {
                            "type": "object", "additionalProperties": False,
                            "properties": {"path": {
                                "type": "object", "additionalProperties": False, "required": ["type", "value"],
                                "properties": {"type": {"enum": ["Exact", "PathPrefix", "RegularExpression"]},
                                               "value": {"type": "string", "pattern": "^/", "maxLength": 1024}}}}}},
                        "backendRefs": {"type": "array", "minItems": 1, "items": {
                            "type": "object", "additionalProperties": False, "required": ["name", "port"],
                            "properties": {"name": GATEWAY_NAME,
                                           "port": {"type": "integer", "minimum": 1, "maximum": 65535}}}},
                    }}},
            },
        },
    },
}
CRD_SHAPES = {"ServiceMonitor": SERVICE_MONITOR_SHAPE, "PodMonitor": POD_MONITOR_SHAPE, "HTTPRoute": HTTP_ROUTE_SHAPE}


@pytest.mark.parametrize("variant", VARIANTS)
def test_lint_is_clean(variant):
    report = helm.lint(CHART, VARIANTS[variant], strict=True, namespace=NAMESPACE, kube_version=f"v{KUBE_VERSION}.0")
    assert report["errors"] == []
    # Severity 1 is informational ("icon is recommended"); warnings and errors fail.
    assert [m for m in report["messages"] if m["severity"] >= 2] == []


@pytest.mark.parametrize("variant", VARIANTS)
def test_every_manifest_is_valid_for_kubernetes_1_28(chart, variant):
    objects = all_objects(chart, VARIANTS[variant])
    assert objects
    for obj in objects:
        if obj["kind"] in CRD_SHAPES:
            jsonschema.validate(obj, CRD_SHAPES[obj["kind"]])
        else:
            # Strict: an unknown field is an error, as a server-side apply would report it.
            kubernetes_validate.validate(obj, KUBE_VERSION, strict=True)
        assert obj["metadata"]["labels"]["app.kubernetes.io/part-of"] == "hunt-pipeline"


@pytest.mark.parametrize("variant", VARIANTS)
def test_every_container_is_locked_down(chart, variant):
    for obj in all_objects(chart, VARIANTS[variant]):
        if obj["kind"] not in {"Deployment", "StatefulSet"}:
            continue
        spec = pod_spec(obj)
        assert spec["securityContext"]["runAsNonRoot"] is True
        # Fixed by default; left to the platform (OpenShift's SCC) in the openshift variant.
        assert spec["securityContext"].get("runAsUser") != 0
        assert spec["automountServiceAccountToken"] is False
        for container in spec["containers"] + spec.get("initContainers", []):
            context = container["securityContext"]
            assert context["runAsNonRoot"] is True, container["name"]
            assert context["readOnlyRootFilesystem"] is True, container["name"]
            assert context["allowPrivilegeEscalation"] is False, container["name"]
            assert context["privileged"] is False, container["name"]
            assert context["capabilities"]["drop"] == ["ALL"], container["name"]
            assert "add" not in context["capabilities"], container["name"]
            assert container["resources"]["requests"] and container["resources"]["limits"]


def test_default_router(chart):
    objects = all_objects(chart)
    assert {"Deployment", "Service", "ConfigMap", "PodDisruptionBudget", "HorizontalPodAutoscaler",
            "NetworkPolicy", "StatefulSet", "ServiceAccount"} <= kinds(objects)
    assert "ServiceMonitor" not in kinds(objects)
    router = find(objects, "Deployment", "-router")
    # The autoscaler owns the replica count; it starts at 2.
    assert "replicas" not in router["spec"]
    assert find(objects, "HorizontalPodAutoscaler")["spec"]["minReplicas"] == 2
    spec = pod_spec(router)
    (container,) = spec["containers"]
    assert container["command"] == ["/usr/local/bin/tier-router"]
    assert container["livenessProbe"]["httpGet"]["path"] == "/healthz"
    assert container["readinessProbe"]["httpGet"]["path"] == "/readyz"
    assert container["startupProbe"]["grpc"] == {"port": 50051, "service": "hunt.v1.LeaderboardService"}
    assert {p["name"]: p["containerPort"] for p in container["ports"]} == {
        "grpc": 50051, "http": 8080, "admin": 9101}
    # Probes go to the admin port, which spectators cannot fill.
    assert container["livenessProbe"]["httpGet"]["port"] == "admin"
    assert container["readinessProbe"]["httpGet"]["port"] == "admin"
    config = find(objects, "ConfigMap", "-router")["data"]
    # Kubernetes waits longer than the router's own drain before SIGKILL.
    assert spec["terminationGracePeriodSeconds"] * 1000 > int(config["HUNT_SHUTDOWN_GRACE_MS"])
    assert {c["topologyKey"] for c in spec["topologySpreadConstraints"]} == {
        "kubernetes.io/hostname", "topology.kubernetes.io/zone"}
    assert config["HUNT_LOG_FORMAT"] == "json"
    pdb = find(objects, "PodDisruptionBudget")
    assert pdb["spec"]["selector"]["matchLabels"].items() <= router["spec"]["template"]["metadata"]["labels"].items()


def test_router_settings_are_flags_the_router_reads(chart):
    config = find(all_objects(chart), "ConfigMap", "-router")["data"]
    flags = router_env_vars()
    for name in config:
        assert name == "RUST_LOG" or name in flags, f"{name} is not an environment variable of tier-router"
    # Every flag but the Redis URL (a Secret's business), the cluster mode, the replica
    # acknowledgements and the CA file (set with the URL, only for redis.external.cluster,
    # redis.external.replicaAcks and redis.external.tls.caSecret) and the per-process router id
    # is set.
    assert flags - set(config) == {
        "HUNT_REDIS_URL", "HUNT_REDIS_CLUSTER", "HUNT_CLAIM_REPLICAS", "HUNT_REDIS_CA_FILE", "HUNT_ROUTER_ID"}


def test_services_for_grpc_and_http(chart):
    objects = all_objects(chart)
    router_labels = find(objects, "Deployment", "-router")["spec"]["template"]["metadata"]["labels"]
    for kind, port in [("grpc", 50051), ("http", 8080)]:
        service = find(objects, "Service", f"-{kind}")
        assert service["spec"]["selector"].items() <= router_labels.items()
        assert service["spec"]["ports"] == [
            {"name": kind, "port": port, "targetPort": kind, "protocol": "TCP", "appProtocol": "grpc" if kind == "grpc" else "http"}]


def test_bundled_redis_keeps_an_append_only_file(chart):
    objects = all_objects(chart, VARIANTS["bundled-redis"])
    redis = find(objects, "StatefulSet", "-redis")
    conf = find(objects, "ConfigMap", "-redis")["data"]["redis.conf"].splitlines()
    assert "appendonly yes" in conf
    assert "appendfsync everysec" in conf
    assert "maxmemory-policy noeviction" in conf
    assert "maxmemory 2gb" in conf
    (claim,) = redis["spec"]["volumeClaimTemplates"]
    assert claim["spec"]["resources"]["requests"]["storage"] == "20Gi"
    assert claim["spec"]["storageClassName"] == "fast-ssd"
    assert redis["spec"]["replicas"] == 1
    assert find(objects, "Deployment", "-router")["spec"]["replicas"] == 3
    # The routers reach it through its Service, and the NetworkPolicy lets only clients in.
    url = env_of(pod_spec(find(objects, "Deployment", "-router"))["containers"][0])["HUNT_REDIS_URL"]["value"]
    service = find(objects, "Service", "-redis")
    assert urlsplit(url).hostname == service["metadata"]["name"]
    assert urlsplit(url).port == service["spec"]["ports"][0]["port"] == 6379
    policy = find(objects, "NetworkPolicy", "-redis")
    allowed = policy["spec"]["ingress"][0]["from"][0]["podSelector"]["matchLabels"]
    router_labels = find(objects, "Deployment", "-router")["spec"]["template"]["metadata"]["labels"]
    assert allowed.items() <= router_labels.items()


def test_external_redis_password_comes_from_the_secret(chart):
    objects = all_objects(chart, VARIANTS["external-redis"])
    assert "StatefulSet" not in kinds(objects)
    env = pod_spec(find(objects, "Deployment", "-router"))["containers"][0]["env"]
    names = [e["name"] for e in env]
    # Kubernetes expands $(REDIS_PASSWORD) only from variables defined before it.
    assert names.index("REDIS_PASSWORD") < names.index("HUNT_REDIS_URL")
    assert env[names.index("REDIS_PASSWORD")]["valueFrom"]["secretKeyRef"] == {"name": "hunt-redis", "key": "password"}
    url = env[names.index("HUNT_REDIS_URL")]["value"]
    assert url == "redis://hunt:$(REDIS_PASSWORD)@redis-primary.data.svc.cluster.local:6380/2"
    policy = find(objects, "NetworkPolicy", "-router")
    redis_rule = [rule for rule in policy["spec"]["egress"] if rule["ports"][0]["port"] == 6380]
    assert redis_rule and redis_rule[0]["to"] == [{"ipBlock": {"cidr": "10.20.0.0/16"}}]


def test_external_redis_url_from_a_secret(chart):
    objects = all_objects(chart, VARIANTS["external-redis-url-secret"])
    env = env_of(pod_spec(find(objects, "Deployment", "-router"))["containers"][0])
    assert env["HUNT_REDIS_URL"]["valueFrom"]["secretKeyRef"] == {"name": "hunt-redis", "key": "url"}
    assert "REDIS_PASSWORD" not in env


def test_redis_cluster_mode_reaches_the_router_and_the_sidecar(chart):
    objects = all_objects(chart, VARIANTS["external-redis-cluster"])
    assert "StatefulSet" not in kinds(objects)
    router = pod_spec(find(objects, "Deployment", "-router"))["containers"][0]
    sidecar = {c["name"]: c for c in pod_spec(find(objects, "Deployment", "-shard-3"))["containers"]}["shard-writer"]
    for container in (router, sidecar):
        env = env_of(container)
        assert env["HUNT_REDIS_CLUSTER"]["value"] == "true"
        # The seed the cluster is discovered from; the password still comes from the Secret.
        assert env["HUNT_REDIS_URL"]["value"] == "redis://:$(REDIS_PASSWORD)@redis-cluster.data.svc.cluster.local:6379/0"
    # Without cluster mode the setting is absent: the binaries default to one Redis.
    for variant in ("default", "external-redis"):
        plain = pod_spec(find(all_objects(chart, VARIANTS[variant]), "Deployment", "-router"))["containers"][0]
        assert "HUNT_REDIS_CLUSTER" not in env_of(plain)


def test_redis_sentinel_and_replica_acks_reach_the_router_and_the_sidecar(chart):
    objects = all_objects(chart, VARIANTS["external-redis-sentinel"])
    router = pod_spec(find(objects, "Deployment", "-router"))["containers"][0]
    sidecar = {c["name"]: c for c in pod_spec(find(objects, "Deployment", "-shard-4"))["containers"]}["shard-writer"]
    for container in (router, sidecar):
        env = env_of(container)
        assert env["HUNT_REDIS_URL"]["value"] == (
            "redis+sentinel://:$(REDIS_PASSWORD)@redis-sentinel.data.svc.cluster.local:26379/hunt"
        )
        assert env["HUNT_CLAIM_REPLICAS"]["value"] == "1"
        assert "HUNT_REDIS_CLUSTER" not in env
    # Without replicas nothing waits: the setting is absent and the binaries default to 0.
    plain = pod_spec(find(all_objects(chart, VARIANTS["external-redis"]), "Deployment", "-router"))["containers"][0]
    assert "HUNT_CLAIM_REPLICAS" not in env_of(plain)


def test_redis_over_tls_with_an_acl_user_and_a_ca_secret(chart):
    objects = all_objects(chart, VARIANTS["external-redis-tls"])
    router = pod_spec(find(objects, "Deployment", "-router"))
    sidecar_pod = pod_spec(find(objects, "Deployment", "-shard-5"))
    sidecar = {c["name"]: c for c in sidecar_pod["containers"]}["shard-writer"]
    for pod, container in ((router, router["containers"][0]), (sidecar_pod, sidecar)):
        env = env_of(container)
        assert env["HUNT_REDIS_URL"]["value"] == "rediss://hunt:$(REDIS_PASSWORD)@hunt.redis.example.cloud:6380/0"
        assert env["HUNT_REDIS_CA_FILE"]["value"] == "/etc/hunt/redis-ca/ca.pem"
        mount = {m["name"]: m for m in container["volumeMounts"]}["redis-ca"]
        assert mount == {"name": "redis-ca", "mountPath": "/etc/hunt/redis-ca", "readOnly": True}
        volume = {v["name"]: v for v in pod["volumes"]}["redis-ca"]
        assert volume["secret"] == {"secretName": "hunt-redis-ca", "items": [{"key": "ca.pem", "path": "ca.pem"}]}
    # TLS without a CA Secret trusts the image's authorities: no file, no volume.
    values = {"redis": {"mode": "external", "external": {
        "host": "r.example", "tls": {"enabled": True, "caSecret": "", "caKey": "ca.crt"}}}}
    router = pod_spec(find(all_objects(chart, values), "Deployment", "-router"))
    assert env_of(router["containers"][0])["HUNT_REDIS_URL"]["value"] == "rediss://r.example:6379/0"
    assert "HUNT_REDIS_CA_FILE" not in env_of(router["containers"][0])
    assert "redis-ca" not in {v["name"] for v in router["volumes"]}
    # Sentinel over TLS.
    values = {"redis": {"mode": "external", "external": {
        "host": "s.example", "port": 26379, "sentinelMaster": "hunt",
        "tls": {"enabled": True, "caSecret": "", "caKey": "ca.crt"}}}}
    router = pod_spec(find(all_objects(chart, values), "Deployment", "-router"))["containers"][0]
    assert env_of(router)["HUNT_REDIS_URL"]["value"] == "rediss+sentinel://s.example:26379/hunt"
    assert "HUNT_REDIS_CA_FILE" not in env_of(router)
    # Sentinel over TLS with a private authority: the same file serves sentinels and primary.
    values["redis"]["external"]["tls"]["caSecret"] = "hunt-redis-ca"
    router = pod_spec(find(all_objects(chart, values), "Deployment", "-router"))["containers"][0]
    assert env_of(router)["HUNT_REDIS_URL"]["value"] == "rediss+sentinel://s.example:26379/hunt"
    assert env_of(router)["HUNT_REDIS_CA_FILE"]["value"] == "/etc/hunt/redis-ca/ca.crt"
    # The default stays plain text.
    plain = pod_spec(find(all_objects(chart, VARIANTS["external-redis"]), "Deployment", "-router"))["containers"][0]
    assert env_of(plain)["HUNT_REDIS_URL"]["value"].startswith("redis://")


@pytest.mark.parametrize(
    ("values", "message"),
    [
        ({"redis": {"mode": "external", "external": {"host": "r", "cluster": True, "sentinelMaster": "m"}}},
         "exclude each other"),
        ({"redis": {"mode": "external", "external": {"existingSecret": "s", "urlKey": "u", "sentinelMaster": "m"}}},
         "not urlKey"),
        ({"router": {"terminationGracePeriodSeconds": 10}}, "must be longer than router.shutdownGraceMs"),
        ({"router": {"readBlockMs": 2000}}, "readBlockMs must be shorter than a third"),
        ({"router": {"applyBatch": 300, "maxApplyBatch": 200}}, "maxApplyBatch must be at least router.applyBatch"),
        ({"redis": {"mode": "external"}}, "needs redis.external.host"),
        ({"redis": {"mode": "external", "external": {"urlKey": "url"}}}, "urlKey needs redis.external.existingSecret"),
        ({"redis": {"mode": "external", "external": {"host": "r", "passwordKey": "p"}}}, "passwordKey needs"),
        ({"redis": {"mode": "external", "external": {"host": "r", "db": 1, "cluster": True}}}, "needs redis.external.db 0"),
        ({"router": {"autoscaling": {"minReplicas": 5, "maxReplicas": 3}}}, "minReplicas must not exceed"),
    ],
)
def test_inconsistent_values_fail_with_a_clear_message(chart, values, message):
    with pytest.raises(helm.HelmRenderError, match=message):
        all_objects(chart, values)


def test_sidecar_example(chart):
    objects = all_objects(chart, VARIANTS["sidecar-example"])
    shard = find(objects, "Deployment", "-shard-7")
    assert shard["spec"]["replicas"] == 1
    assert shard["spec"]["strategy"] == {"type": "Recreate"}
    spec = pod_spec(shard)
    containers = {c["name"]: c for c in spec["containers"]}
    assert set(containers) == {"game", "shard-writer"}
    sidecar = containers["shard-writer"]
    assert sidecar["command"] == ["/usr/local/bin/shard-writer"]
    args = sidecar["args"]
    assert args[0] == "serve"
    flags = dict(zip(args[1::2], args[2::2]))
    assert flags == {"--db": "/data/shard.sqlite", "--shard-id": "7", "--redis-url": "$(HUNT_REDIS_URL)",
                     "--grpc-addr": "0.0.0.0:50052", "--metrics-addr": "0.0.0.0:9102",
                     "--claim-shards": "1"}
    ports = {p["name"]: p["containerPort"] for p in sidecar["ports"]}
    assert ports == {"ingest": 50052, "metrics": 9102}
    # Without the ServiceMonitor switch nothing scrapes it.
    assert "PodMonitor" not in kinds(objects)
    assert "HUNT_REDIS_URL" in env_of(sidecar)
    assert env_of(containers["game"])["HUNT_INGEST_ADDR"]["value"] == "http://127.0.0.1:50052"
    # Only the writer sees the shard file.
    assert [m["mountPath"] for m in sidecar["volumeMounts"]] == ["/data", "/tmp"]
    assert all(m["mountPath"] != "/data" for m in containers["game"]["volumeMounts"])
    claim = find(objects, "PersistentVolumeClaim", "-shard-7-data")
    assert claim["spec"]["accessModes"] == ["ReadWriteOnce"]
    assert claim["spec"]["storageClassName"] == "local-path"
    assert claim["metadata"]["annotations"]["helm.sh/resource-policy"] == "keep"
    data = next(v for v in spec["volumes"] if v["name"] == "data")
    assert data["persistentVolumeClaim"]["claimName"] == claim["metadata"]["name"]
    # The shard may reach the bundled Redis.
    assert shard["spec"]["template"]["metadata"]["labels"]["hunt-pipeline/redis-client"] == "true"


def test_sidecar_extra_args_follow_the_flags(chart):
    values = {"shardExample": {"enabled": True, "sidecar": {"extraArgs": ["--log-format=json"]}}}
    shard = find(all_objects(chart, values), "Deployment", "-shard-1")
    sidecar = next(c for c in pod_spec(shard)["containers"] if c["name"] == "shard-writer")
    assert sidecar["args"][-1] == "--log-format=json"


def test_service_monitor_scrapes_the_http_service(chart):
    objects = all_objects(chart, VARIANTS["service-monitor"])
    monitor = find(objects, "ServiceMonitor")
    assert monitor["metadata"]["labels"]["release"] == "prometheus"
    http = find(objects, "Service", "-http")
    grpc = find(objects, "Service", "-grpc")
    selector = monitor["spec"]["selector"]["matchLabels"]
    assert selector.items() <= http["metadata"]["labels"].items()
    assert not selector.items() <= grpc["metadata"]["labels"].items()
    (endpoint,) = monitor["spec"]["endpoints"]
    assert endpoint["path"] == "/metrics"
    assert endpoint["port"] in {p["name"] for p in http["spec"]["ports"]}
    assert monitor["spec"]["namespaceSelector"]["matchNames"] == [NAMESPACE]
    dashboard = find(objects, "ConfigMap", "-dashboard")
    assert json.loads(dashboard["data"]["hunt-pipeline.json"])["uid"] == "hunt-pipeline"


def test_service_monitor_also_scrapes_the_shard_example(chart):
    objects = all_objects(chart, VARIANTS["service-monitor-with-shard"])
    find(objects, "ServiceMonitor", "-router")
    monitor = find(objects, "PodMonitor", "-shard-writer")
    assert monitor["metadata"]["labels"]["release"] == "prometheus"
    shard = find(objects, "Deployment", "-shard-5")
    pod_labels = shard["spec"]["template"]["metadata"]["labels"]
    assert monitor["spec"]["selector"]["matchLabels"].items() <= pod_labels.items()
    router = find(objects, "Deployment", "-router")
    assert not monitor["spec"]["selector"]["matchLabels"].items() <= router["spec"]["template"]["metadata"]["labels"].items()
    (endpoint,) = monitor["spec"]["podMetricsEndpoints"]
    assert endpoint["path"] == "/metrics"
    sidecar = next(c for c in pod_spec(shard)["containers"] if c["name"] == "shard-writer")
    assert endpoint["port"] in {p["name"] for p in sidecar["ports"]}
    assert monitor["spec"]["namespaceSelector"]["matchNames"] == [NAMESPACE]
    # The ServiceMonitor alone (no shard example) renders no PodMonitor.
    assert "PodMonitor" not in kinds(all_objects(chart, VARIANTS["service-monitor"]))


def test_switches_remove_what_they_name(chart):
    objects = all_objects(chart, VARIANTS["everything-off"])
    assert not {"NetworkPolicy", "PodDisruptionBudget", "HorizontalPodAutoscaler", "ServiceAccount"} & kinds(objects)
    router = find(objects, "Deployment", "-router")
    assert router["spec"]["replicas"] == 2
    assert pod_spec(router)["serviceAccountName"] == "default"


def test_notes_name_the_services(chart):
    notes = chart.render({}, name="hunt", namespace=NAMESPACE, is_install=True)["hunt-pipeline/templates/NOTES.txt"]
    assert "hunt-hunt-pipeline-grpc.games.svc:50051" in notes
    assert "bundled single instance" in notes
