"""deploy/ checked without a container engine: every file parses, agrees with the code's
defaults and with the other files, the alert rules pass promtool, and the lock installs."""

from __future__ import annotations

import json
import re
import shlex
import shutil
import subprocess
import sys
import tomllib
from importlib import metadata
from pathlib import Path
from typing import Any

import anyio
import pytest
import yaml
from packaging.markers import default_environment
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name
from packaging.version import Version

from fanout import __version__
from fanout.config import load_config
from fanout.config.settings import HttpConfig
from fanout.observe.metrics import Metrics

REPO = Path(__file__).resolve().parents[2]
DEPLOY = REPO / "deploy"
K8S = DEPLOY / "kubernetes"
IMAGE = f"fanout:{__version__}"
HTTP_PORT = HttpConfig().port


# -- helpers -----------------------------------------------------------------------------------


def dockerfile() -> list[tuple[str, str]]:
    """(instruction, arguments) of the Dockerfile, continuation lines joined."""
    result: list[tuple[str, str]] = []
    pending = ""
    for raw in (REPO / "Dockerfile").read_text().splitlines():
        line = raw.strip()
        if not pending and (not line or line.startswith("#")):
            continue
        if line.endswith("\\"):
            pending += line[:-1] + " "
            continue
        line = pending + line
        pending = ""
        instruction, _, args = line.partition(" ")
        result.append((instruction.upper(), args.strip()))
    return result


def last(instruction: str) -> str:
    values = [args for ins, args in dockerfile() if ins == instruction]
    assert values, f"Dockerfile has no {instruction}"
    return values[-1]


def runtime_stage() -> list[tuple[str, str]]:
    steps = dockerfile()
    start = max(i for i, (ins, _) in enumerate(steps) if ins == "FROM")
    return steps[start:]


def env_of(steps: list[tuple[str, str]]) -> dict[str, str]:
    env: dict[str, str] = {}
    for ins, args in steps:
        if ins == "ENV":
            for token in shlex.split(args):
                key, _, value = token.partition("=")
                env[key] = value
    return env


def manifests() -> dict[tuple[str, str], dict[str, Any]]:
    docs: dict[tuple[str, str], dict[str, Any]] = {}
    for path in sorted(K8S.glob("*.yaml")):
        for doc in yaml.safe_load_all(path.read_text()):
            assert isinstance(doc, dict), path
            assert {"apiVersion", "kind"} <= set(doc), path
            if doc["kind"] == "Kustomization":
                continue
            docs[(doc["kind"], doc["metadata"]["name"])] = doc
    return docs


def compose() -> dict[str, Any]:
    data = yaml.safe_load((DEPLOY / "compose.yaml").read_text())
    assert isinstance(data, dict)
    return data


def metric_names() -> set[str]:
    """Every sample name fanout exports (histogram _bucket/_sum/_count included)."""
    from prometheus_client import generate_latest
    from prometheus_client.parser import text_string_to_metric_families

    metrics = Metrics()
    metrics.declare(["s"], {"k": ["s"]})
    text = generate_latest(metrics.registry).decode()
    return {s.name for f in text_string_to_metric_families(text) for s in f.samples}


def referenced_metrics(expr: str) -> set[str]:
    return set(re.findall(r"\bfanout_[a-z_]+\b", expr))


def alert_rules() -> list[dict[str, Any]]:
    data = yaml.safe_load((DEPLOY / "prometheus" / "alerts.yaml").read_text())
    return [rule for group in data["groups"] for rule in group["rules"]]


def dashboard() -> dict[str, Any]:
    data = json.loads((DEPLOY / "grafana" / "fanout-dashboard.json").read_text())
    assert isinstance(data, dict)
    return data


def dashboard_exprs() -> list[tuple[str, str]]:
    return [
        (panel["title"], target["expr"])
        for panel in dashboard()["panels"]
        for target in panel.get("targets", [])
    ]


def promtool() -> str:
    found = shutil.which("promtool")
    if found is None:
        pytest.fail(
            "promtool is not installed: it comes with Debian's prometheus package "
            "(`make system-deps`, or `apt-get install prometheus`)",
            pytrace=False,
        )
    return found


def run_promtool(*args: str) -> str:
    result = subprocess.run(
        [promtool(), *args], cwd=DEPLOY / "prometheus", capture_output=True, text=True, timeout=120
    )
    output = result.stdout + result.stderr
    assert result.returncode == 0, output
    return output


# -- Prometheus rules ----------------------------------------------------------------------------


def test_promtool_checks_the_alert_rules():
    assert "SUCCESS" in run_promtool("check", "rules", "alerts.yaml")


def test_promtool_unit_tests_of_the_alert_rules_pass():
    assert "SUCCESS" in run_promtool("test", "rules", "alerts_test.yaml")


def test_promtool_checks_the_compose_prometheus_config():
    assert "SUCCESS" in run_promtool("check", "config", "prometheus.yml")


def test_every_alert_is_tested_firing_and_quiet():
    tests = yaml.safe_load((DEPLOY / "prometheus" / "alerts_test.yaml").read_text())
    fired: set[str] = set()
    quiet: set[str] = set()
    for case in tests["tests"]:
        for check in case["alert_rule_test"]:
            (fired if check["exp_alerts"] else quiet).add(check["alertname"])
    names = {rule["alert"] for rule in alert_rules()}
    assert names - fired == set()
    assert names - quiet == set()


def test_the_alerts_cover_what_operators_page_on():
    rules = {rule["alert"]: rule for rule in alert_rules()}
    exprs = " ".join(rule["expr"] for rule in rules.values())
    for needle in (
        "up{",  # worker down
        "fanout_iterator_age_seconds",  # approaching the 24 h retention
        "fanout_stalled_shards",
        "fanout_dlq_records_total",
        "fanout_sink_records_total",  # error ratio
        "fanout_data_loss_events_total",
        "fanout_shards_unowned",  # a shard no worker reads
    ):
        assert needle in exprs, needle
    assert "18 * 3600" in rules["FanoutIteratorAgeNearRetention"]["expr"]
    for rule in rules.values():
        assert rule["labels"]["severity"] in {"warning", "critical"}, rule["alert"]
        assert {"summary", "description"} <= set(rule["annotations"]), rule["alert"]


def test_alerts_and_dashboard_use_only_exported_metrics():
    exported = metric_names()
    used = set()
    for rule in alert_rules():
        used |= referenced_metrics(rule["expr"])
    for _, expr in dashboard_exprs():
        used |= referenced_metrics(expr)
    assert used - exported == set()


# -- Grafana -------------------------------------------------------------------------------------


def test_the_dashboard_shows_every_area():
    data = dashboard()
    assert data["uid"] == "fanout"
    used = set()
    for _, expr in dashboard_exprs():
        used |= referenced_metrics(expr)
    for metric in (
        "fanout_iterator_age_seconds",
        "fanout_end_to_end_lag_seconds_bucket",
        "fanout_sink_records_total",
        "fanout_retries_total",
        "fanout_dlq_records_total",
        "fanout_dlq_write_failures_total",
        "fanout_get_records_calls_total",
        "fanout_shards",
        "fanout_stalled_shards",
        "fanout_data_loss_events_total",
        "fanout_progress_age_seconds",
        "fanout_leases_held",
        "fanout_lease_events_total",
        "fanout_workers",
    ):
        assert metric in used, metric
    assert any('outcome="throttled"' in expr for _, expr in dashboard_exprs())
    variables = {v["name"]: v for v in data["templating"]["list"]}
    assert set(variables) == {"datasource", "stream", "sink"}
    for panel in data["panels"]:
        if panel["type"] == "row":
            continue
        assert panel["datasource"] == {"type": "prometheus", "uid": "${datasource}"}, panel["title"]
        assert panel["targets"], panel["title"]
        assert panel.get("description"), panel["title"]
    ids = [panel["id"] for panel in data["panels"]]
    assert len(ids) == len(set(ids))


def test_grafana_provisioning_matches_compose():
    datasource = yaml.safe_load(
        (DEPLOY / "grafana/provisioning/datasources/prometheus.yaml").read_text()
    )["datasources"][0]
    assert datasource["type"] == "prometheus"
    assert datasource["url"] == "http://prometheus:9090"
    provider = yaml.safe_load((DEPLOY / "grafana/provisioning/dashboards/fanout.yaml").read_text())[
        "providers"
    ][0]
    grafana = compose()["services"]["grafana"]
    targets = {volume.split(":")[1] for volume in grafana["volumes"]}
    assert "/etc/grafana/provisioning" in targets
    assert f"{provider['options']['path']}/fanout-dashboard.json" in targets


# -- compose ---------------------------------------------------------------------------------


def test_compose_runs_fanout_with_dynamodb_local_prometheus_and_grafana():
    services = compose()["services"]
    assert {"fanout", "dynamodb-local", "prometheus", "grafana"} <= set(services)
    fanout = services["fanout"]
    assert fanout["image"] == IMAGE
    assert fanout["build"]["context"] == ".."
    assert (DEPLOY / fanout["build"]["context"] / fanout["build"]["dockerfile"]).is_file()
    config_path = env_of(runtime_stage())["FANOUT_CONFIG"]
    assert fanout["environment"]["FANOUT_CONFIG"] == config_path
    assert f"./config.yaml:{config_path}:ro" in fanout["volumes"]
    assert fanout["ports"] == [f"127.0.0.1:{HTTP_PORT}:{HTTP_PORT}"]
    for service in services.values():
        for volume in service.get("volumes", []):
            source = volume.split(":")[0]
            if source.startswith("."):
                assert (DEPLOY / source).exists(), volume
        for port in service.get("ports", []):
            assert port.startswith("127.0.0.1:"), port  # published on loopback only
    scrape = yaml.safe_load((DEPLOY / "prometheus/prometheus.yml").read_text())["scrape_configs"]
    assert scrape[0]["job_name"] == "fanout"
    assert scrape[0]["static_configs"][0]["targets"] == [f"fanout:{HTTP_PORT}"]


def test_the_compose_config_is_valid_and_keeps_its_state_on_the_volume():
    config = load_config(DEPLOY / "config.yaml")
    settings = config.settings
    assert settings.http.port == HTTP_PORT
    assert settings.checkpoints.path.startswith("/var/lib/fanout/")
    assert "fanout-state:/var/lib/fanout" in compose()["services"]["fanout"]["volumes"]
    assert settings.streams["orders"].endpoint_url == "http://dynamodb-local:8000"


# -- Dockerfile ----------------------------------------------------------------------------------


def test_dockerfile_builds_from_the_lock_and_runs_as_a_user():
    steps = dockerfile()
    froms = [args for ins, args in steps if ins == "FROM"]
    assert all(f.startswith("python:3.11-slim") for f in froms)
    install = [args for ins, args in steps if ins == "RUN" and "requirements.lock" in args]
    assert len(install) == 1
    assert "--require-hashes" in install[0]
    assert "--no-deps" in install[0]
    assert ("COPY", "deploy/requirements.lock /tmp/requirements.lock") in steps
    # the project itself goes in without pulling anything the lock does not pin
    assert any(ins == "RUN" and "pip install --no-deps ." in args for ins, args in steps)
    for ins, args in steps:
        if ins == "COPY" and "--from" not in args:
            for source in args.split()[:-1]:
                assert (REPO / source).exists(), source
    runtime = runtime_stage()
    user = [args for ins, args in runtime if ins == "USER"]
    assert user
    assert user[-1].split(":")[0] not in {"0", "root"}
    assert last("EXPOSE") == str(HTTP_PORT)


def test_dockerfile_entrypoint_is_the_console_script_and_cmd_a_command():
    pyproject = tomllib.loads((REPO / "pyproject.toml").read_text())
    assert pyproject["project"]["scripts"]["fanout"] == "fanout.cli:main"
    assert json.loads(last("ENTRYPOINT")) == ["fanout"]
    cmd = json.loads(last("CMD"))
    assert cmd == ["run"]
    from fanout.cli import _parser

    assert _parser().parse_args(cmd).command == "run"
    # the installed console script works
    script = Path(sys.executable).parent / "fanout"
    assert script.exists()
    result = subprocess.run([str(script), "--version"], capture_output=True, text=True, timeout=60)
    assert result.stdout.strip() == f"fanout {__version__}"


def test_python_m_fanout_help_lists_every_command():
    result = subprocess.run(
        [sys.executable, "-m", "fanout", "--help"], capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0, result.stderr
    for command in ("run", "validate", "status", "schema", "dlq", "import", "backfill"):
        assert command in result.stdout


def test_the_config_path_the_image_reads_works_with_fanout(tmp_path):
    config_path = env_of(runtime_stage())["FANOUT_CONFIG"]
    assert config_path == "/etc/fanout/config.yaml"
    copy = tmp_path / "config.yaml"
    shutil.copy(DEPLOY / "config.yaml", copy)
    result = subprocess.run(
        [sys.executable, "-m", "fanout", "validate"],
        env={"FANOUT_CONFIG": str(copy), "PATH": "/usr/bin:/bin"},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("ok:")


async def test_the_healthcheck_command_probes_healthz(tmp_path):
    from fanout.app import Worker
    from fanout.config import build_config
    from fanout.observe.health import serve

    healthcheck = last("HEALTHCHECK")
    command = json.loads(healthcheck[healthcheck.index("CMD") + 3 :].strip())
    assert command[:2] == ["python", "-c"]
    assert f"127.0.0.1:{HTTP_PORT}/healthz" in command[2]
    config = build_config(
        {
            "streams": {"orders": {"table": "Orders"}},
            "checkpoints": {"path": str(tmp_path / "fanout.db")},
            "http": {"host": "127.0.0.1", "port": 0},
            "sinks": {"audit": {"type": "file", "path": str(tmp_path / "a.jsonl")}},
        }
    )
    worker = Worker(config, handle_signals=False)
    async with anyio.create_task_group() as tg:
        port = await tg.start(serve, worker)
        probe = command[2].replace(f":{HTTP_PORT}/", f":{port}/")
        ok = await anyio.run_process([sys.executable, "-c", probe], check=False)
        bad = await anyio.run_process(
            [sys.executable, "-c", probe.replace("/healthz", "/nope")], check=False
        )
        tg.cancel_scope.cancel()
    assert ok.returncode == 0, ok.stderr
    assert bad.returncode != 0


# -- the lock ------------------------------------------------------------------------------------


def lock() -> dict[str, tuple[Version, list[str]]]:
    """name -> (version, hashes) of deploy/requirements.lock."""
    text = (DEPLOY / "requirements.lock").read_text().replace("\\\n", " ")
    pins: dict[str, tuple[Version, list[str]]] = {}
    for line in text.splitlines():
        line = line.split("#", 1)[0].strip()
        if not line:
            continue
        assert not line.startswith("-"), f"unexpected option in the lock: {line}"
        spec, *options = line.split()
        name, sep, version = spec.partition("==")
        assert sep, f"not pinned: {spec}"
        hashes = [o.removeprefix("--hash=") for o in options if o.startswith("--hash=sha256:")]
        pins[canonicalize_name(name)] = (Version(version), hashes)
    return pins


def runtime_requirements() -> list[Requirement]:
    pyproject = tomllib.loads((REPO / "pyproject.toml").read_text())
    return [Requirement(r) for r in pyproject["project"]["dependencies"]]


def test_the_lock_pins_every_runtime_dependency_within_its_range():
    pins = lock()
    for requirement in runtime_requirements():
        dep = canonicalize_name(requirement.name)
        assert dep in pins, f"{dep} is a dependency but not in deploy/requirements.lock"
        version, hashes = pins[dep]
        assert requirement.specifier.contains(version, prereleases=True), (dep, version)
    for pinned, (_, hashes) in pins.items():
        assert hashes, f"{pinned} has no hash (the Dockerfile installs with --require-hashes)"
    for test_only in ("pytest", "moto", "mypy", "ruff", "boto3", "hypothesis"):
        assert test_only not in pins


def _requires(name: str, version: Version, extras: set[str]) -> list[Requirement] | None:
    """Requirements of the installed distribution, if it is the locked version."""
    try:
        dist = metadata.distribution(name)
    except metadata.PackageNotFoundError:
        return None
    if Version(dist.version) != version:
        return None
    env: dict[str, str] = {str(k): str(v) for k, v in default_environment().items()}
    env["python_version"] = "3.11"  # the image's Python
    env["python_full_version"] = "3.11.0"
    found = []
    for raw in dist.requires or []:
        requirement = Requirement(raw)
        marker = requirement.marker
        if marker is None or any(
            marker.evaluate({**env, "extra": extra}) for extra in (extras or {""})
        ):
            found.append(requirement)
    return found


def test_the_lock_is_closed_under_dependencies():
    """Every requirement of every locked package is locked at a version it accepts.

    Checked through the metadata of the installed distributions, for the packages whose
    installed version is the locked one (the lock was made from this environment).
    """
    pins = lock()
    extras: dict[str, set[str]] = {}
    for requirement in runtime_requirements():
        extras.setdefault(canonicalize_name(requirement.name), set()).update(requirement.extras)
    checked = 0
    for name, (version, _) in pins.items():
        requires = _requires(name, version, extras.get(name, set()))
        if requires is None:
            continue
        checked += 1
        for requirement in requires:
            dep = canonicalize_name(requirement.name)
            assert dep in pins, f"{name} {version} needs {requirement}, which is not locked"
            assert requirement.specifier.contains(pins[dep][0], prereleases=True), (
                f"{name} {version} needs {requirement}, the lock has {pins[dep][0]}"
            )
    assert checked >= len(runtime_requirements()), "the lock and the environment diverged"


def _runtime_closure() -> dict[str, str]:
    """name -> installed version of every distribution the runtime needs here: the project's
    dependencies and its ``sentry`` extra (the image has both), and theirs."""
    pyproject = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    todo = [Requirement(r) for r in pyproject["dependencies"]]
    todo += [Requirement(r) for r in pyproject["optional-dependencies"]["sentry"]]
    env: dict[str, str] = {str(k): str(v) for k, v in default_environment().items()}
    found: dict[str, str] = {}
    while todo:
        requirement = todo.pop()
        name = canonicalize_name(requirement.name)
        if name in found:
            continue
        dist = metadata.distribution(name)
        found[name] = dist.version
        for raw in dist.requires or []:
            inner = Requirement(raw)
            marker = inner.marker
            extras = requirement.extras or {""}
            if marker is None or any(marker.evaluate({**env, "extra": e}) for e in extras):
                todo.append(inner)
    return found


def test_the_lock_pins_exactly_what_the_tests_run_with():
    """The image installs what the tests ran with: regenerate the lock when this fails
    (docs/operations.md, Regenerating the lock)."""
    pinned = {name: str(version) for name, (version, _) in lock().items()}
    installed = _runtime_closure()
    drifted = {
        name: (pinned.get(name), installed.get(name))
        for name in set(pinned) | set(installed)
        if pinned.get(name) != installed.get(name)
    }
    assert drifted == {}, f"deploy/requirements.lock has drifted (lock, tests): {drifted}"


# -- Kubernetes ----------------------------------------------------------------------------------


def test_kustomization_lists_every_manifest():
    kustomization = yaml.safe_load((K8S / "kustomization.yaml").read_text())
    for resource in kustomization["resources"]:
        assert (K8S / resource).is_file(), resource
    assert kustomization["images"][0]["name"] == IMAGE.split(":")[0]
    assert kustomization["images"][0]["newTag"] == __version__
    listed = set(kustomization["resources"])
    on_disk = {p.name for p in K8S.glob("*.yaml")} - {"kustomization.yaml"}
    assert on_disk - listed == {"secret.example.yaml"}  # made by the operator, not applied


def test_deployment_matches_the_image_and_the_code_defaults():
    docs = manifests()
    deployment = docs[("Deployment", "fanout")]
    spec = deployment["spec"]
    # several replicas sharing the shards; a rolling update relies on the graceful hand-over
    assert spec["replicas"] > 1
    assert spec["strategy"]["type"] == "RollingUpdate"
    assert spec["strategy"]["rollingUpdate"] == {"maxUnavailable": 1, "maxSurge": 1}
    pod = spec["template"]["spec"]
    labels = spec["template"]["metadata"]["labels"]
    assert spec["selector"]["matchLabels"].items() <= labels.items()
    (container,) = pod["containers"]
    assert container["image"] == IMAGE
    assert container.get("args", ["run"]) == json.loads(last("CMD"))
    ports = {p["name"]: p["containerPort"] for p in container["ports"]}
    assert ports == {"http": HTTP_PORT}
    assert container["livenessProbe"]["httpGet"] == {"path": "/healthz", "port": "http"}
    assert container["readinessProbe"]["httpGet"] == {"path": "/readyz", "port": "http"}
    assert container["startupProbe"]["httpGet"]["path"] == "/healthz"
    assert container["resources"]["requests"]["cpu"]
    assert container["resources"]["requests"]["memory"]
    # the config file lands where the image looks for it
    config_path = env_of(runtime_stage())["FANOUT_CONFIG"]
    env = {e["name"]: e.get("value") for e in container["env"]}
    assert env["FANOUT_CONFIG"] == config_path
    mounts = {m["name"]: m for m in container["volumeMounts"]}
    volumes = {v["name"]: v for v in pod["volumes"]}
    config_mount = next(m for m in mounts.values() if "configMap" in volumes[m["name"]])
    configmap = docs[("ConfigMap", volumes[config_mount["name"]]["configMap"]["name"])]
    assert f"{config_mount['mountPath']}/config.yaml" == config_path
    assert "config.yaml" in configmap["data"]
    # the Secret is referenced, optional, and not applied from here
    refs = [e["secretRef"] for e in container["envFrom"]]
    assert refs == [{"name": "fanout-secrets", "optional": True}]
    example = yaml.safe_load((K8S / "secret.example.yaml").read_text())
    assert example["metadata"]["name"] == "fanout-secrets"
    # no claim: the checkpoints and leases live in the DynamoDB table; the pod runs as the
    # image's user
    assert not any("persistentVolumeClaim" in v for v in volumes.values())
    assert not [kind for kind, _ in docs if kind == "PersistentVolumeClaim"]
    runtime_user = [args for ins, args in runtime_stage() if ins == "USER"][-1]
    assert str(pod["securityContext"]["runAsUser"]) == runtime_user.split(":")[0]
    assert container["securityContext"]["readOnlyRootFilesystem"] is True
    assert docs[("ServiceAccount", pod["serviceAccountName"])]


def test_the_configmap_config_is_valid_and_fits_the_pod(tmp_path):
    docs = manifests()
    deployment = docs[("Deployment", "fanout")]
    pod = deployment["spec"]["template"]["spec"]
    (container,) = pod["containers"]
    path = tmp_path / "config.yaml"
    path.write_text(docs[("ConfigMap", "fanout-config")]["data"]["config.yaml"])
    config = load_config(path)
    settings = config.settings
    assert settings.http.port == container["ports"][0]["containerPort"]
    # the replicas share one application's shards through the DynamoDB lease table
    assert settings.checkpoints.store == "dynamodb"
    assert settings.application  # not "config", from the mounted file's name
    # pods come and go: dead letters must not land on a pod's disk
    assert all(sink.dead_letter.type != "file" for sink in config.sinks.values())
    # SIGTERM: drain for shutdown_grace, checkpoint and release the leases (bounded by the
    # lease duration) before the kubelet kills the pod
    assert (
        pod["terminationGracePeriodSeconds"]
        > settings.shutdown_grace + max(5.0, settings.checkpoints.lease_duration) + 10
    )


def test_the_servicemonitor_is_opt_in():
    # kubectl apply -k must work on a cluster without the Prometheus Operator's CRDs
    assert ("ServiceMonitor", "fanout") not in manifests()
    kustomization = yaml.safe_load((K8S / "kustomization.yaml").read_text())
    assert "components" not in kustomization
    assert "components/servicemonitor" in (K8S / "kustomization.yaml").read_text()


def test_service_servicemonitor_and_pdb_select_the_pods():
    docs = manifests()
    pod_labels = docs[("Deployment", "fanout")]["spec"]["template"]["metadata"]["labels"]
    service = docs[("Service", "fanout")]
    assert service["spec"]["selector"].items() <= pod_labels.items()
    assert service["spec"]["publishNotReadyAddresses"] is True
    (port,) = service["spec"]["ports"]
    assert (port["name"], port["port"], port["targetPort"]) == ("http", HTTP_PORT, "http")
    component = K8S / "components" / "servicemonitor"
    assert yaml.safe_load((component / "kustomization.yaml").read_text()) == {
        "apiVersion": "kustomize.config.k8s.io/v1alpha1",
        "kind": "Component",
        "resources": ["servicemonitor.yaml"],
    }
    monitor = yaml.safe_load((component / "servicemonitor.yaml").read_text())
    assert monitor["apiVersion"] == "monitoring.coreos.com/v1"
    assert (
        monitor["spec"]["selector"]["matchLabels"].items() <= service["metadata"]["labels"].items()
    )
    assert monitor["spec"]["endpoints"] == [{"port": "http", "path": "/metrics", "interval": "15s"}]
    # Prometheus names the job after the Service; the alert rules expect job="fanout"
    assert 'job="fanout"' in alert_rules()[0]["expr"]
    assert service["metadata"]["name"] == "fanout"
    pdb = docs[("PodDisruptionBudget", "fanout")]
    assert pdb["spec"]["selector"]["matchLabels"].items() <= pod_labels.items()
    assert pdb["spec"]["maxUnavailable"] == 1


# -- IAM ------------------------------------------------------------------------------------------


def test_the_iam_policy_is_least_privilege_with_a_sid_per_purpose():
    policy = json.loads((DEPLOY / "iam-policy.json").read_text())
    assert policy["Version"] == "2012-10-17"
    statements = policy["Statement"]
    sids = [s["Sid"] for s in statements]
    assert len(sids) == len(set(sids))
    actions: dict[str, set[str]] = {}
    for statement in statements:
        assert statement["Effect"] == "Allow"
        assert re.fullmatch(r"[A-Za-z0-9]+", statement["Sid"])
        for action in statement["Action"]:
            assert "*" not in action, action
        for resource in statement["Resource"]:
            assert resource != "*"
            assert resource.startswith("arn:aws:"), resource
        actions[statement["Sid"]] = set(statement["Action"])
    everything = set().union(*actions.values())
    for needed in (
        "dynamodb:DescribeTable",
        "dynamodb:DescribeStream",
        "dynamodb:GetShardIterator",
        "dynamodb:GetRecords",
        "sqs:SendMessage",
        "sqs:GetQueueAttributes",  # queue size lookups (sqs sink, SQS dead-letter queue)
        "sqs:ReceiveMessage",  # fanout dlq inspect / redrive
        "sqs:DeleteMessage",
        "sqs:ChangeMessageVisibility",
        "sns:Publish",  # covers PublishBatch
        "events:PutEvents",
        "s3:PutObject",  # the notification sinks' claim check (large_messages)
        "s3:GetObject",  # S3 dead letters and SQS overflows, read back by fanout dlq
        "s3:DeleteObject",
        "s3:ListBucket",
        "sqs:GetQueueUrl",  # an SQS dead-letter queue given by queue_name
        "dynamodb:BatchGetItem",  # the aggregate sink
        "es:ESHttpPost",
    ):
        assert needed in everything, needed
    # only what exists: no statements for stores fanout does not have
    assert "CheckpointTable" not in actions
    # nothing fanout never calls (it finds a table's stream with DescribeTable)
    assert "dynamodb:ListStreams" not in everything
    stream = next(s for s in statements if "dynamodb:GetRecords" in s["Action"])
    assert all(r.endswith("/stream/*") for r in stream["Resource"])
    assert not any(a.startswith("dynamodb:") and "Write" in a for a in actions["ReadTableStream"])


def test_the_backfill_statement_grants_exactly_what_fanout_backfill_calls_on_the_table():
    policy = json.loads((DEPLOY / "iam-policy.json").read_text())
    (statement,) = [s for s in policy["Statement"] if s["Sid"] == "BackfillScan"]
    source = "\n".join(path.read_text() for path in (REPO / "fanout" / "backfill").glob("*.py"))
    calls = set(re.findall(r"ddb\.(\w+)\b", source))
    assert calls == {"describe_table", "scan"}
    assert set(statement["Action"]) == {"dynamodb:DescribeTable", "dynamodb:Scan"}
    assert statement["Resource"] == ["arn:aws:dynamodb:REGION:ACCOUNT_ID:table/TABLE_NAME"]


def test_the_lease_table_statements_grant_exactly_what_the_store_calls():
    policy = json.loads((DEPLOY / "iam-policy.json").read_text())
    actions = {s["Sid"]: set(s["Action"]) for s in policy["Statement"]}
    source = "".join(p.read_text() for p in (REPO / "fanout" / "progress").glob("dynamodb*.py"))
    calls = set(re.findall(r'_call\(\s*"(\w+)"', source))
    iam = {
        "query": {"dynamodb:Query"},
        "get_item": {"dynamodb:GetItem"},
        "update_item": {"dynamodb:UpdateItem"},
        "delete_item": {"dynamodb:DeleteItem"},
        # a transaction needs the rights of each of its parts
        "transact_write_items": {"dynamodb:UpdateItem", "dynamodb:ConditionCheckItem"},
        "describe_table": {"dynamodb:DescribeTable"},
        "create_table": {"dynamodb:CreateTable"},
    }
    assert set(iam) == calls
    creating = {"dynamodb:DescribeTable", "dynamodb:CreateTable"}
    assert actions["LeaseTableCreate"] == creating  # only with create_table: true
    assert actions["LeaseTable"] == set().union(*iam.values()) - creating
    (table,) = {
        r
        for sid in ("LeaseTable", "LeaseTableCreate")
        for r in policy["Statement"][[s["Sid"] for s in policy["Statement"]].index(sid)]["Resource"]
    }
    assert table.endswith(":table/LEASE_TABLE_NAME")
