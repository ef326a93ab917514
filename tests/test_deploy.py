"""The Kubernetes deployment (deploy/, docs/deploy.md) checked without a cluster.

The Helm chart is rendered with `helm template` (built by `make setup`'s helm target) for its default values, the
production values and every optional part switched on, and each manifest is validated against the Kubernetes
schemas that `kubernetes-validate` ships (offline). The settings each service reads are checked against what the
chart sets, as tests/test_compose.py does for docker-compose.yml. The operators' resources (Strimzi, CloudNativePG)
are custom resources the validator cannot know: they are checked for agreement with the code and the chart.
"""

from __future__ import annotations

import functools
import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import kubernetes_validate  # type: ignore[import-untyped]
import pytest
import yaml
from pydantic import BaseModel

from console.settings import ConsoleSettings
from contracts.topics import TOPIC_SPECS
from devtools.deploy import kafka_topics
from devtools.platform import CONSOLE, CONSOLE_BACKENDS
from servicekit.migrate import settings_class
from servicekit.settings import ServiceSettings

ROOT = Path(__file__).resolve().parents[1]
CHART = ROOT / "deploy" / "helm" / "order-status-platform"
OPERATORS = ROOT / "deploy" / "operators"
SERVICES = sorted(p.name for p in (ROOT / "services").iterdir() if (p / "pyproject.toml").exists())
# The oldest Kubernetes the chart supports (Chart.yaml's kubeVersion) and the newest the validator knows.
KUBERNETES_VERSIONS = ("1.27", kubernetes_validate.latest_version())

Manifest = dict[str, Any]

# The renders the tests look at: the defaults, production, and every optional part on (autoscaling).
RENDERS: dict[str, list[str]] = {
    "default": [],
    "production": ["-f", str(CHART / "values-production.yaml")],
    "everything": ["--set", ",".join(f"services.{s}.autoscaling.enabled=true" for s in SERVICES)],
}

# Variables the chart sets that no settings field reads: the parts of DATABASE_URL (and OTEL_*, the exporter's own).
HELPER_VARIABLES = {"DATABASE_USERNAME", "DATABASE_PASSWORD"}
# A notifier provider's settings matter only when it is the one selected.
PROVIDER_PREFIXES = {"console": "CONSOLE_", "http": "HTTP_PROVIDER_", "smpp": "SMPP_"}
# What a service cannot run in a cluster without, whatever its defaults.
ALWAYS_REQUIRED = {"HTTP_HOST", "HTTP_PORT", "KAFKA_BOOTSTRAP_SERVERS", "DATABASE_URL", "TOKEN_ISSUER"}


def helm() -> str:
    """The helm that `make setup` builds (the Makefile exports HELM), else one on PATH. Missing helm fails."""
    candidates = [os.environ.get("HELM", ""), *sorted(map(str, ROOT.glob(".state/tools/helm-*/helm"))), "helm"]
    for candidate in candidates:
        if candidate and (found := shutil.which(candidate)):
            return found
    pytest.fail(
        "helm is missing: `make test` (or `make setup` then the helm target, `make .state/tools/helm-v4.3.2/helm`) "
        "builds it from the Go module proxy into .state/tools; or set HELM to a helm binary",
        pytrace=False,
    )


@functools.cache
def render(name: str) -> tuple[Manifest, ...]:
    result = subprocess.run(
        [helm(), "template", "platform", str(CHART), "--namespace", "platform", *RENDERS[name]],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode == 0, f"helm template ({name}) failed:\n{result.stderr}"
    return tuple(doc for doc in yaml.safe_load_all(result.stdout) if doc)


def of_kind(manifests: tuple[Manifest, ...], kind: str) -> dict[str, Manifest]:
    return {m["metadata"]["name"]: m for m in manifests if m["kind"] == kind}


def component(manifest: Manifest) -> str:
    return str(manifest["metadata"]["labels"]["app.kubernetes.io/component"])


def deployments(name: str) -> dict[str, Manifest]:
    """The render's Deployments by service."""
    return {component(d): d for d in of_kind(render(name), "Deployment").values()}


def load(path: Path) -> list[Manifest]:
    return [doc for doc in yaml.safe_load_all(path.read_text()) if doc]


def values(name: str = "values.yaml") -> dict[str, Any]:
    loaded: dict[str, Any] = yaml.safe_load((CHART / name).read_text())
    return loaded


# --- the chart renders and every manifest is a valid Kubernetes object ---------------------------------------


@pytest.mark.parametrize("name", RENDERS)
def test_the_chart_renders_valid_kubernetes_manifests(name: str) -> None:
    manifests = render(name)
    assert manifests
    failures = []
    for manifest in manifests:
        for version in KUBERNETES_VERSIONS:
            try:
                kubernetes_validate.validate(manifest, version, strict=True)
            except kubernetes_validate.ValidationError as error:
                where = ".".join(map(str, error.path))
                failures.append(f"{manifest['kind']}/{manifest['metadata']['name']} ({version}) {where}: {error}")
            except kubernetes_validate.SchemaNotFoundError:
                failures.append(f"{manifest['kind']} ({manifest['apiVersion']}): no schema for Kubernetes {version}")
    assert not failures, "\n".join(failures)


@pytest.mark.parametrize("name", RENDERS)
def test_helm_lint_finds_nothing(name: str) -> None:
    result = subprocess.run(
        [helm(), "lint", "--strict", str(CHART), *RENDERS[name]], capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_the_validator_rejects_what_kubernetes_would() -> None:
    """The validation above can fail: a misspelt field and a wrong type are refused."""
    deployment = next(iter(deployments("default").values()))
    misspelt = {**deployment, "spec": {**deployment["spec"], "replica": 2}}
    wrong_type = {**deployment, "spec": {**deployment["spec"], "replicas": "two"}}
    for broken in (misspelt, wrong_type):
        with pytest.raises(kubernetes_validate.ValidationError):
            kubernetes_validate.validate(broken, KUBERNETES_VERSIONS[-1], strict=True)


# --- what each service gets ------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", RENDERS)
def test_every_service_has_a_deployment_service_and_disruption_budget(name: str) -> None:
    manifests = render(name)
    expected = set(SERVICES)
    assert set(deployments(name)) == expected
    assert {component(s) for s in of_kind(manifests, "Service").values()} == expected
    assert {component(p) for p in of_kind(manifests, "PodDisruptionBudget").values()} == expected
    assert {component(c) for c in of_kind(manifests, "ConfigMap").values()} == expected


@pytest.mark.parametrize("name", RENDERS)
def test_pods_are_probed_limited_and_scraped(name: str) -> None:
    for service, deployment in deployments(name).items():
        pod = deployment["spec"]["template"]
        (container,) = pod["spec"]["containers"]
        port = container["ports"][0]["containerPort"]
        assert container["readinessProbe"]["httpGet"]["path"] == "/readyz", service
        assert container["livenessProbe"]["httpGet"]["path"] == "/healthz", service
        assert container["startupProbe"]["httpGet"]["path"] == "/healthz", service
        assert {"cpu", "memory"} <= set(container["resources"]["requests"]), service
        assert "memory" in container["resources"]["limits"], service
        annotations = pod["metadata"]["annotations"]
        assert annotations["prometheus.io/scrape"] == "true"
        assert annotations["prometheus.io/port"] == str(port)
        assert annotations["prometheus.io/path"] == "/metrics"
        assert container["securityContext"]["readOnlyRootFilesystem"] is True


def test_autoscaling_is_a_value_and_takes_over_the_replica_count() -> None:
    hpas = {component(h): h for h in of_kind(render("everything"), "HorizontalPodAutoscaler").values()}
    assert set(hpas) == set(deployments("everything"))
    for service, deployment in deployments("everything").items():
        assert "replicas" not in deployment["spec"], f"{service}: the HPA owns the replica count"
        assert hpas[service]["spec"]["scaleTargetRef"]["name"] == deployment["metadata"]["name"]
    assert not of_kind(render("default"), "HorizontalPodAutoscaler")
    assert all(d["spec"]["replicas"] == 1 for d in deployments("default").values())


@pytest.mark.parametrize("name", RENDERS)
def test_migrations_run_once_per_release_before_the_rollout(name: str) -> None:
    jobs = of_kind(render(name), "Job")
    migrated = set()
    for job in jobs.values():
        annotations = job["metadata"]["annotations"]
        assert set(annotations["helm.sh/hook"].split(",")) == {"pre-install", "pre-upgrade"}
        (container,) = job["spec"]["template"]["spec"]["containers"]
        module, service = container["command"][2:]
        assert container["command"][:2] == ["python", "-m"]
        assert module == "servicekit.migrate"
        assert settings_class(service)().service_name == service  # the entry point knows the service
        assert {e["name"] for e in container["env"]} >= {"DATABASE_URL"}
        migrated.add(service)
        # The Job's pod is nobody's backend: no Service or Deployment of the chart selects it.
        labels = job["spec"]["template"]["metadata"]["labels"]
        for selector in [s["spec"]["selector"] for s in of_kind(render(name), "Service").values()] + [
            d["spec"]["selector"]["matchLabels"] for d in deployments(name).values()
        ]:
            assert not selector.items() <= labels.items(), f"{selector} selects the migration Job of {service}"
    assert migrated == set(deployments(name))


def test_a_chart_created_secret_that_the_migration_job_reads_exists_before_it() -> None:
    """A pre-install hook runs before the release's ordinary objects: the database Secret must be a hook too."""
    secrets = of_kind(render("default"), "Secret")
    for job in of_kind(render("default"), "Job").values():
        (container,) = job["spec"]["template"]["spec"]["containers"]
        for variable in container["env"]:
            if "valueFrom" in variable:
                secret = secrets[variable["valueFrom"]["secretKeyRef"]["name"]]
                hook_weight = int(secret["metadata"]["annotations"]["helm.sh/hook-weight"])
                assert hook_weight < int(job["metadata"]["annotations"]["helm.sh/hook-weight"])


def test_production_takes_every_secret_from_existing_secrets() -> None:
    assert not of_kind(render("production"), "Secret"), "production values should reference Secrets, not carry them"
    for service, deployment in deployments("production").items():
        (container,) = deployment["spec"]["template"]["spec"]["containers"]
        env = {e["name"]: e for e in container["env"]}
        for name in ("DATABASE_PASSWORD",):
            assert "secretKeyRef" in env[name]["valueFrom"], f"{service}: {name}"
        assert "$(DATABASE_PASSWORD)" in env["DATABASE_URL"]["value"]


# --- the settings the services read are the ones the chart sets --------------------------------------------------


def environment(name: str, service: str) -> dict[str, str]:
    """What a service's container sees: its ConfigMap (envFrom) and its env (literal values, or a secret's mark)."""
    deployment = deployments(name)[service]
    (container,) = deployment["spec"]["template"]["spec"]["containers"]
    config_maps = of_kind(render(name), "ConfigMap")
    seen: dict[str, str] = {}
    for source in container.get("envFrom", []):
        seen.update(config_maps[source["configMapRef"]["name"]]["data"])
    for variable in container.get("env", []):
        seen[variable["name"]] = variable.get("value", "<secret>")
    return seen


def laptop_default(settings: type[BaseModel], field: str) -> bool:
    """A default that only works on a developer's machine: a local address or path, or a development secret."""
    default = str(settings.model_fields[field].default)
    local = any(mark in default for mark in ("127.0.0.1", "localhost", "local-dev", "/.state/"))
    return local or field.endswith(("_secret", "_password", "_token"))


def required_variables(settings: type[ServiceSettings], env: dict[str, str]) -> set[str]:
    required = ALWAYS_REQUIRED | {f.upper() for f in settings.model_fields if laptop_default(settings, f)}
    if "notifier_provider" not in settings.model_fields:
        return required
    selected = env.get("NOTIFIER_PROVIDER", "")
    unselected = tuple(prefix for provider, prefix in PROVIDER_PREFIXES.items() if provider != selected)
    return {variable for variable in required if not variable.startswith(unselected)}


@pytest.mark.parametrize("name", ["everything", "production"])
@pytest.mark.parametrize("service", SERVICES)
def test_the_chart_sets_what_each_service_needs_in_a_cluster(name: str, service: str) -> None:
    settings = settings_class(service)
    env = environment(name, service)
    known = {field.upper() for field in settings.model_fields} | HELPER_VARIABLES
    unknown = {v for v in env if v not in known and not v.startswith("OTEL_")}
    assert not unknown, f"{service}: variables no settings field reads: {sorted(unknown)}"
    missing = required_variables(settings, env) - set(env)
    assert not missing, f"{service}: the chart leaves these at their laptop defaults: {sorted(missing)}"

    defaults = settings()
    assert env["HTTP_HOST"] == "0.0.0.0"
    assert int(env["HTTP_PORT"]) == defaults.http_port
    assert env["DATABASE_URL"].split("?")[0].rsplit("/", 1)[1] == defaults.database_url.rsplit("/", 1)[1]
    # The values parse as the settings' types.
    settings.model_validate(
        {k.lower(): v for k, v in env.items() if v != "<secret>" and k.lower() in settings.model_fields}
    )


@pytest.mark.parametrize("name", RENDERS)
def test_the_console_calls_the_services_through_their_kubernetes_services(name: str) -> None:
    services = {component(s): s for s in of_kind(render(name), "Service").values()}
    console = environment(name, CONSOLE)
    for variable, service in CONSOLE_BACKENDS.items():
        target = services[service]
        (port,) = target["spec"]["ports"]
        assert console[variable] == f"http://{target['metadata']['name']}:{port['port']}", variable


@pytest.mark.parametrize("name", RENDERS)
def test_identity_issues_tokens_naming_its_kubernetes_service(name: str) -> None:
    """A token's `iss` is where verifiers fetch the JWKS: identity's Service, unless the values name another; every
    service verifies with the issuer identity signs as."""
    services = {component(s): s for s in of_kind(render(name), "Service").values()}
    identity = services["identity"]
    (port,) = identity["spec"]["ports"]
    for service in (s for s in SERVICES if s != CONSOLE):
        issuer = environment(name, service)["TOKEN_ISSUER"]
        assert issuer == f"http://{identity['metadata']['name']}:{port['port']}", service


def test_identity_issuer_set_in_the_values_is_kept() -> None:
    result = subprocess.run(
        [
            helm(),
            "template",
            "platform",
            str(CHART),
            "--set",
            "services.identity.config.TOKEN_ISSUER=https://id.example",
        ],
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    )
    configs = [m for m in yaml.safe_load_all(result.stdout) if m and m["kind"] == "ConfigMap" and component(m)]
    issuers = {component(m): m["data"].get("TOKEN_ISSUER") for m in configs if component(m) != "console"}
    assert issuers == dict.fromkeys((s for s in SERVICES if s != CONSOLE), "https://id.example")


def test_production_sends_the_console_session_cookie_over_https_only() -> None:
    env = environment("production", CONSOLE)
    assert ConsoleSettings(session_cookie_secure=env["SESSION_COOKIE_SECURE"]).session_cookie_secure is True


def test_the_required_variables_rule_catches_a_laptop_default() -> None:
    """The rule above is not vacuous: a laptop address, a dev secret and a selected provider's URL are required."""
    from notifier.settings import NotifierSettings

    assert {"HTTP_PROVIDER_URL", "HTTP_PROVIDER_TOKEN", "DELIVERY_REPORT_SECRET"} <= required_variables(
        NotifierSettings, {"NOTIFIER_PROVIDER": "http"}
    )
    assert "SMPP_HOST" not in required_variables(NotifierSettings, {"NOTIFIER_PROVIDER": "http"})
    assert "CONSOLE_OUTBOX_FILE" in required_variables(NotifierSettings, {"NOTIFIER_PROVIDER": "console"})


# --- the operators' resources agree with the code and the chart -------------------------------------------------


def test_the_committed_kafka_topics_are_the_generated_ones() -> None:
    committed = (OPERATORS / "strimzi-topics.yaml").read_text()
    generated = subprocess.run(
        [sys.executable, "-m", "devtools.deploy", "topics"], capture_output=True, text=True, check=True, timeout=60
    ).stdout
    assert committed == generated, "regenerate: python -m devtools.deploy topics > deploy/operators/strimzi-topics.yaml"


def test_every_topic_is_a_kafka_topic_of_the_strimzi_cluster() -> None:
    (kafka,) = [m for m in load(OPERATORS / "strimzi-kafka.yaml") if m["kind"] == "Kafka"]
    cluster = kafka["metadata"]["name"]
    topics = {t["spec"]["topicName"]: t for t in load(OPERATORS / "strimzi-topics.yaml")}
    assert set(topics) == {str(spec.topic) for spec in TOPIC_SPECS}
    for spec in TOPIC_SPECS:
        topic = topics[str(spec.topic)]
        assert topic["apiVersion"] == kafka["apiVersion"]
        assert topic["kind"] == "KafkaTopic"
        assert topic["metadata"]["labels"]["strimzi.io/cluster"] == cluster
        assert topic["spec"]["partitions"] == spec.partitions
        assert topic["spec"].get("config", {}) == spec.config
        assert topic["spec"]["replicas"] > int(kafka["spec"]["kafka"]["config"]["min.insync.replicas"])
    prefixed = yaml.safe_load_all(kafka_topics(cluster=cluster, replicas=3, prefix="staging."))
    assert {t["spec"]["topicName"] for t in prefixed if t} == {f"staging.{spec.topic}" for spec in TOPIC_SPECS}


def test_the_strimzi_cluster_runs_kraft_node_pools_the_chart_points_at() -> None:
    manifests = load(OPERATORS / "strimzi-kafka.yaml")
    (kafka,) = [m for m in manifests if m["kind"] == "Kafka"]
    cluster = kafka["metadata"]["name"]
    pools = [m for m in manifests if m["kind"] == "KafkaNodePool"]
    assert all(pool["metadata"]["labels"]["strimzi.io/cluster"] == cluster for pool in pools)
    roles = [role for pool in pools for role in pool["spec"]["roles"]]
    assert "controller" in roles and "broker" in roles
    brokers = sum(pool["spec"]["replicas"] for pool in pools if "broker" in pool["spec"]["roles"])
    assert brokers >= max(t["spec"]["replicas"] for t in load(OPERATORS / "strimzi-topics.yaml"))
    assert kafka["spec"]["kafka"]["config"]["auto.create.topics.enable"] is False
    assert "topicOperator" in kafka["spec"]["entityOperator"]
    plain = next(listener for listener in kafka["spec"]["kafka"]["listeners"] if not listener["tls"])
    for values_file in ("values.yaml", "values-production.yaml"):
        assert values(values_file)["kafka"]["bootstrapServers"] == f"{cluster}-kafka-bootstrap:{plain['port']}"


def test_cloudnativepg_gives_every_service_its_database_and_owner() -> None:
    manifests = load(OPERATORS / "cloudnativepg.yaml")
    (cluster,) = [m for m in manifests if m["kind"] == "Cluster"]
    assert cluster["apiVersion"] == "postgresql.cnpg.io/v1"
    name = cluster["metadata"]["name"]
    initdb = cluster["spec"]["bootstrap"]["initdb"]
    # database -> (owner, the owner's credentials Secret)
    owners = {initdb["database"]: (initdb["owner"], initdb["secret"]["name"])}
    roles = {r["name"]: r["passwordSecret"]["name"] for r in cluster["spec"]["managed"]["roles"]}
    for resource in (m for m in manifests if m["kind"] == "Database"):
        assert resource["spec"]["cluster"]["name"] == name
        owners[resource["spec"]["name"]] = (resource["spec"]["owner"], roles[resource["spec"]["owner"]])

    production = values("values-production.yaml")
    assert production["database"]["host"] == values()["database"]["host"] == f"{name}-rw"
    for service in SERVICES:
        database = settings_class(service)().database_url.rsplit("/", 1)[1]
        assert database in owners, f"no database {database} for {service}"
        owner, secret = owners[database]
        assert production["services"][service]["database"] == {
            "name": database,
            "existingSecret": secret,
            "password": "",
        }
        assert values()["services"][service]["database"]["username"] == owner
