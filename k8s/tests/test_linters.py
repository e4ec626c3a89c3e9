"""Every rendered variant through the linters operators run on charts: yamllint's key-duplicates
rule (kustomize and `kubectl apply` refuse a mapping with a key twice, Helm keeps the last one
silently) and checkov, clean apart from the documented skip list below."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from yamllint import linter
from yamllint.config import YamlLintConfig

from conftest import CHART, NAMESPACE, RELEASE, VARIANTS

# Checks that do not fit this chart, each with why. Everything else checkov finds fails the test.
CHECKOV_SKIPS = {
    # Helm sets the namespace at install (`-n`); manifests name none.
    "CKV_K8S_21": "the namespace comes from helm install -n",
    # CPU limits throttle the router's tick-bound work; requests are set and memory is limited.
    "CKV_K8S_11": "no CPU limits by design: requests set, CFS throttling avoided",
    # Tags are immutable release versions; `image.digest` pins by digest where wanted.
    "CKV_K8S_15": "IfNotPresent with immutable tags; Always would make every start need the registry",
    "CKV_K8S_43": "a digest is optional (image.digest); tags are the default",
    # The Redis password is spliced into HUNT_REDIS_URL by Kubernetes' $(VAR) expansion, which
    # only works with environment variables; the URL never appears in a rendered manifest.
    "CKV_K8S_35": "the Redis password must be an environment variable for $(VAR) expansion",
    # The bundled Redis runs as the redis image's own user (999); the chart's own images run as
    # 65532. Both are overridable (securityContext values; OpenShift picks its own).
    "CKV_K8S_40": "the bundled Redis image's user is 999",
}

# The shard example's game container is the operator's own image (no probes, a placeholder
# tag), and its pod talks to the game's own clients, which no chart policy can describe.
SHARD_EXAMPLE_SKIPS = {
    "CKV_K8S_8": "the operator's game container: its probes are the game's",
    "CKV_K8S_9": "the operator's game container: its probes are the game's",
    "CKV_K8S_14": "the operator's game image tag is a placeholder",
    "CKV2_K8S_6": "the game's own clients reach the shard pod; no chart policy can name them",
}

# The escape-hatches variant adds made-up containers, volumes and probes to show the values
# work; it is not a deployment and is left out of checkov.
CHECKOV_VARIANTS = [name for name in VARIANTS if name != "escape-hatches"]


def rendered(chart, values: dict) -> str:
    manifests = chart.render(values, name=RELEASE, namespace=NAMESPACE, is_install=True)
    return "\n---\n".join(text for path, text in manifests.items() if not path.endswith("NOTES.txt"))


@pytest.mark.parametrize("variant", VARIANTS)
def test_yamllint_finds_no_duplicate_keys(chart, variant):
    config = YamlLintConfig("rules: {key-duplicates: enable}")
    problems = list(linter.run(rendered(chart, VARIANTS[variant]), config))
    assert problems == [], [str(problem) for problem in problems]


def checkov_failures(directory: Path, skips: dict[str, str]) -> list[tuple[str, str, str]]:
    run = subprocess.run(
        [sys.executable, "-m", "checkov.main", "-d", str(directory), "--framework", "kubernetes",
         "--quiet", "--compact", "-o", "json", "--skip-check", ",".join(skips)],
        capture_output=True, text=True, timeout=600, check=False,
    )
    reports = json.loads(run.stdout or "[]")
    reports = reports if isinstance(reports, list) else [reports]
    return sorted(
        (check["check_id"], check["file_path"], check["resource"])
        for report in reports if "results" in report
        for check in report["results"]["failed_checks"]
    )


def test_checkov_is_clean_apart_from_the_skip_list(chart, tmp_path):
    plain, with_shard = tmp_path / "plain", tmp_path / "with-shard"
    plain.mkdir()
    with_shard.mkdir()
    for name in CHECKOV_VARIANTS:
        values = VARIANTS[name]
        target = with_shard if values.get("shardExample", {}).get("enabled") else plain
        (target / f"{name}.yaml").write_text(rendered(chart, values))
    assert list(plain.iterdir()) and list(with_shard.iterdir())
    assert checkov_failures(plain, CHECKOV_SKIPS) == []
    assert checkov_failures(with_shard, CHECKOV_SKIPS | SHARD_EXAMPLE_SKIPS) == []


def test_checkov_still_checks(chart, tmp_path):
    # The same run finds what it should when the chart is made worse: a container allowed to
    # escalate privileges.
    values = {"router": {"containerSecurityContext": {"allowPrivilegeEscalation": True}}}
    (tmp_path / "worse.yaml").write_text(rendered(chart, values))
    failures = checkov_failures(tmp_path, CHECKOV_SKIPS)
    assert any(check == "CKV_K8S_20" for check, _, _ in failures), failures
