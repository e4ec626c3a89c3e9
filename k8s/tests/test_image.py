"""What can be checked of k8s/Dockerfile without a container engine: its stages, the binaries it
builds and ships (the workspace's binaries, at the paths the chart runs), a non-root user, and a
build context that leaves build output and history out."""

from __future__ import annotations

import re
import tomllib

import yaml

from conftest import CHART, REPO, all_objects, pod_spec

DOCKERFILE = (REPO / "k8s" / "Dockerfile").read_text()
INSTRUCTIONS = [line.strip() for line in re.sub(r"\\\n", " ", DOCKERFILE).splitlines()
                if line.strip() and not line.lstrip().startswith("#")]


def binaries_of(crate: str) -> set[str]:
    manifest = tomllib.loads((REPO / crate / "Cargo.toml").read_text())
    names = {b["name"] for b in manifest.get("bin", [])}
    if (REPO / crate / "src" / "main.rs").exists():
        names.add(manifest["package"]["name"])
    return names


def stages() -> list[list[str]]:
    result: list[list[str]] = []
    for line in INSTRUCTIONS:
        if line.upper().startswith("FROM "):
            result.append([])
        if result:
            result[-1].append(line)
    return result


def test_multi_stage_build_on_a_small_runtime():
    build, runtime = stages()
    assert re.match(r"FROM rust:\$\{RUST_VERSION\}-slim-bookworm AS build$", build[0])
    assert runtime[0].startswith("FROM gcr.io/distroless/cc-debian12:nonroot")
    # The runtime takes only the binaries from the build stage.
    copies = [line for line in runtime if line.startswith("COPY")]
    assert copies and all("--from=build" in line for line in copies)


def test_runtime_user_is_not_root():
    runtime = stages()[-1]
    users = [line.split()[1] for line in runtime if line.startswith("USER ")]
    assert users, "the runtime stage sets no USER"
    user = users[-1].split(":")[0]
    assert user not in {"root", "0"}
    assert int(user) == pod_uid()


def pod_uid() -> int:
    router = next(o for o in all_objects_default() if o["kind"] == "Deployment")
    return pod_spec(router)["securityContext"]["runAsUser"]


def all_objects_default():
    import helm_python as helm

    with helm.Chart.load(CHART) as chart:
        return all_objects(chart)


def test_builds_and_ships_the_workspace_binaries():
    wanted = binaries_of("tier-router") | binaries_of("shard-writer")
    assert wanted == {"tier-router", "shard-writer"}
    build = " ".join(stages()[0])
    assert "cargo build --release --locked" in build
    assert set(re.findall(r"-p ([a-z-]+)", build)) == wanted
    shipped = {m for line in stages()[-1] if line.startswith("COPY")
               for m in re.findall(r"/out/([a-z-]+)", line)}
    assert shipped == wanted
    assert "/usr/local/bin/" in " ".join(stages()[-1])


def test_chart_runs_binaries_the_image_ships():
    values = yaml.safe_load((CHART / "values.yaml").read_text())
    assert values["image"]["repository"] == "hunt-pipeline"
    import helm_python as helm

    with helm.Chart.load(CHART) as chart:
        objects = all_objects(chart, {"shardExample": {"enabled": True}})
    commands = {c["command"][0] for o in objects if o["kind"] == "Deployment" for c in pod_spec(o)["containers"]
                if "command" in c}
    assert commands == {"/usr/local/bin/tier-router", "/usr/local/bin/shard-writer"}


def test_build_context_leaves_out_build_output_and_history():
    ignored = {line.strip() for line in (REPO / ".dockerignore").read_text().splitlines()
               if line.strip() and not line.startswith("#")}
    assert {"target/", ".git", "**/node_modules/", ".venv/"} <= ignored


def oci_labels() -> dict[str, str]:
    runtime = " ".join(line for line in stages()[-1] if line.startswith("LABEL "))
    return dict(re.findall(r'(org\.opencontainers\.image\.[a-z]+)="([^"]*)"', runtime))


def test_runtime_image_carries_the_oci_labels():
    workspace = tomllib.loads((REPO / "Cargo.toml").read_text())["workspace"]["package"]
    labels = oci_labels()
    assert labels["org.opencontainers.image.title"] == "hunt-pipeline"
    assert labels["org.opencontainers.image.description"]
    assert labels["org.opencontainers.image.licenses"] == workspace["license"]
    assert labels["org.opencontainers.image.source"] == workspace["repository"]
    # The version comes from a build argument, declared before the first stage with the
    # workspace's version (the chart's appVersion) and brought into the runtime stage.
    assert labels["org.opencontainers.image.version"] == "${VERSION}"
    assert "ARG VERSION" in stages()[-1]
    (default,) = [line.split("=", 1)[1] for line in INSTRUCTIONS if line.startswith("ARG VERSION=")]
    chart = yaml.safe_load((CHART / "Chart.yaml").read_text())
    assert default == workspace["version"] == chart["appVersion"]
