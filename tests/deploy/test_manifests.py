"""deploy/: every manifest validates against the Kubernetes schemas (kubernetes-validate, offline), the
kustomize builds render what each way of running needs, the providers.yaml each overlay mounts loads,
and the Dockerfile agrees with the manifests (the settlement side of the shared overlay:
test_settlement_manifests.py)."""

from __future__ import annotations

import os
import re
import shlex
from pathlib import Path

import kubernetes_validate
import pytest
import yaml

from router import config as configuration
from tests.deploy.manifests import (
    BASE,
    EXAMPLE_SECRET,
    EXAMPLE_SECRETS,
    EXPORTER,
    KUSTOMIZATIONS,
    LEDGER_SECRET_NAME,
    SECRET_NAME,
    SHARED,
    SIDECAR,
    Doc,
    arg,
    built,
    check_hardened,
    example_secrets,
    mounted_config,
    only,
    router_container,
    selects,
)
from tests.deploy.support import (
    DEPLOY,
    KUBERNETES_VERSION,
    MONITORING,
    ROOT,
    RULES_TEST,
    kustomize_build,
    load_yaml_documents,
)

OPERATOR_API = "monitoring.coreos.com/v1"


# ---- helpers


def kustomization(directory: Path) -> Doc:
    loaded: Doc = yaml.safe_load((directory / "kustomization.yaml").read_text(encoding="utf-8"))
    return loaded


def referenced_files(directory: Path) -> dict[str, set[Path]]:
    """The files a kustomization names, by role (directories in `resources` are other kustomizations)."""
    k = kustomization(directory)
    roles: dict[str, set[Path]] = {"resources": set(), "patches": set(), "generated": set()}
    for entry in k.get("resources", []):
        path = (directory / entry).resolve()
        if path.is_file():
            roles["resources"].add(path)
    for patch in k.get("patches", []):
        if "path" in patch:
            roles["patches"].add((directory / patch["path"]).resolve())
    for generator in k.get("configMapGenerator", []) + k.get("secretGenerator", []):
        for entry in generator.get("files", []):
            roles["generated"].add((directory / entry.split("=")[-1]).resolve())
    return roles


def resource_files() -> list[Path]:
    files = set(EXAMPLE_SECRETS)
    for directory in KUSTOMIZATIONS:
        files |= referenced_files(directory)["resources"]
    return sorted(files)


def validate(doc: Doc, where: str) -> None:
    kind, name = doc.get("kind"), doc.get("metadata", {}).get("name")
    if doc.get("apiVersion") == OPERATOR_API:
        check_operator_resource(doc)
        return
    try:
        kubernetes_validate.validate(doc, KUBERNETES_VERSION, strict=True)
    except kubernetes_validate.ValidationError as exc:
        path = "/".join(str(p) for p in exc.absolute_path)
        pytest.fail(f"{where}: {kind}/{name} at {path or '/'}: {exc.message}")
    except kubernetes_validate.SchemaNotFoundError as exc:
        pytest.fail(f"{where}: {exc.message}")


def check_operator_resource(doc: Doc) -> None:
    """The Prometheus Operator's kinds have no schema in kubernetes-validate: their required shape."""
    spec = doc["spec"]
    assert doc["metadata"]["name"]
    if doc["kind"] == "ServiceMonitor":
        assert spec["selector"]["matchLabels"]
        assert spec["endpoints"] and all(e.get("port") for e in spec["endpoints"])
    elif doc["kind"] == "PrometheusRule":
        assert spec["groups"] and all(g["name"] and g["rules"] for g in spec["groups"])
    else:
        pytest.fail(f"unexpected {OPERATOR_API} kind {doc['kind']}")


def shutdown_needs(config: configuration.Config) -> float:
    """On SIGTERM: server.shutdown_delay (serving while the endpoints update), then server.grace
    (in-flight requests finish); the pod must be given longer than both."""
    return config.server.shutdown_delay + config.server.grace


# ---- every manifest validates


def test_every_file_under_deploy_is_accounted_for() -> None:
    """Each YAML or JSON file is a kustomization, a resource, a patch, a generator's input or an example,
    so none escapes validation by not being listed."""
    known = {RULES_TEST, *EXAMPLE_SECRETS}
    for directory in KUSTOMIZATIONS:
        known.add(directory / "kustomization.yaml")
        for files in referenced_files(directory).values():
            known |= files
    on_disk = {p.resolve() for p in DEPLOY.rglob("*") if p.suffix in (".yaml", ".yml", ".json")}
    assert on_disk - known == set(), "files that no kustomization lists"
    assert known - on_disk == set(), "listed files that do not exist"


@pytest.mark.parametrize("path", resource_files(), ids=lambda p: str(p.relative_to(DEPLOY)))
def test_manifest_file_validates(path: Path) -> None:
    docs = load_yaml_documents(path)
    assert docs, f"{path} holds no manifest"
    for doc in docs:
        validate(doc, str(path.relative_to(ROOT)))


@pytest.mark.parametrize("directory", KUSTOMIZATIONS, ids=lambda p: str(p.relative_to(DEPLOY)))
def test_kustomize_build_validates(directory: Path) -> None:
    docs = built(directory)
    assert docs
    for doc in docs:
        validate(doc, f"kustomize build {directory.relative_to(ROOT)}")


def test_strict_validation_catches_a_misspelt_field() -> None:
    """The validator is not a no-op: an unknown field in a StatefulSet fails."""
    (statefulset,) = load_yaml_documents(BASE / "statefulset.yaml")
    statefulset["spec"]["replica"] = 3
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(statefulset, KUBERNETES_VERSION, strict=True)


def test_example_secret_sets_every_variable_the_configs_need() -> None:
    secrets = example_secrets()
    assert set(secrets) == {SECRET_NAME, LEDGER_SECRET_NAME}
    needed: set[str] = set()
    for overlay in (SIDECAR, SHARED):
        text = (overlay / "providers.yaml").read_text(encoding="utf-8")
        needed |= set(re.findall(r"\$\{([A-Z0-9_]+)\}", text))  # ${VAR} without a default
    assert needed <= set(secrets[SECRET_NAME]), sorted(needed - set(secrets[SECRET_NAME]))


@pytest.mark.parametrize("overlay", (SIDECAR, SHARED), ids=("sidecar", "shared"))
def test_overlay_config_loads(overlay: Path) -> None:
    """Without kustomize too: the providers.yaml an overlay mounts is a valid router config."""
    (secret,) = load_yaml_documents(EXAMPLE_SECRET)
    config = configuration.load(overlay / "providers.yaml", env=secret["stringData"])
    assert set(config.providers) == {"trinity", "chenyu", "real200"}


# ---- the shared endpoint


def test_shared_overlay() -> None:
    docs = built(SHARED)
    deployment = only(docs, "StatefulSet", "router")
    pod = deployment["spec"]["template"]["spec"]
    labels = deployment["spec"]["template"]["metadata"]["labels"]
    container = router_container(pod)
    ports = {p["name"]: p["containerPort"] for p in container["ports"]}
    config = mounted_config(docs, pod, container)

    replicas = deployment["spec"]["replicas"]
    assert replicas >= 2
    assert selects(deployment["spec"]["selector"]["matchLabels"], labels)
    # Interchangeable replicas: created and removed together (the HPA), rolled one at a time.
    assert deployment["spec"]["podManagementPolicy"] == "Parallel"
    assert deployment["spec"]["updateStrategy"] == {"type": "RollingUpdate"}

    assert config.server.shutdown_delay >= 5, "the endpoints need a moment to drop a draining replica"
    assert pod["terminationGracePeriodSeconds"] > shutdown_needs(config) >= 35
    assert container["readinessProbe"]["httpGet"]["path"] == "/readyz"
    assert container["livenessProbe"]["httpGet"]["path"] == "/healthz"
    for probe in ("readinessProbe", "livenessProbe", "startupProbe"):
        assert container[probe]["httpGet"]["port"] in ports, probe
    assert arg(container, "--host") == "0.0.0.0"
    assert int(arg(container, "--port")) == ports["http"] == config.server.port
    check_hardened(pod, container)

    # Anyone in the cluster reaches it, so clients must present keys; limits live in Redis.
    assert config.clients
    redis_service = only(docs, "Service", "router-redis")
    assert config.state.url.startswith(f"redis://{redis_service['metadata']['name']}:")
    assert config.state.url.split(":")[2].split("/")[0] == str(redis_service["spec"]["ports"][0]["port"])
    hpa = only(docs, "HorizontalPodAutoscaler")
    assert hpa["spec"]["scaleTargetRef"] == {"apiVersion": "apps/v1", "kind": "StatefulSet", "name": "router"}
    assert config.state.replicas == replicas == hpa["spec"]["minReplicas"] < hpa["spec"]["maxReplicas"]

    service = only(docs, "Service", "router")
    assert selects(service["spec"]["selector"], labels)
    assert {p["targetPort"] for p in service["spec"]["ports"]} <= set(ports)
    pdb = only(docs, "PodDisruptionBudget")
    assert selects(pdb["spec"]["selector"]["matchLabels"], labels)
    assert pdb["spec"].get("maxUnavailable", 0) >= 1 or pdb["spec"]["minAvailable"] < replicas

    redis = only(docs, "StatefulSet", "router-redis")
    redis_labels = redis["spec"]["template"]["metadata"]["labels"]
    assert selects(redis_service["spec"]["selector"], redis_labels)
    assert not selects(service["spec"]["selector"], redis_labels)
    assert "--appendonly" in redis["spec"]["template"]["spec"]["containers"][0]["args"]
    assert redis["spec"]["volumeClaimTemplates"]
    policy = only(docs, "NetworkPolicy", "router-redis")
    assert selects(policy["spec"]["podSelector"]["matchLabels"], redis_labels)
    assert selects(policy["spec"]["ingress"][0]["from"][0]["podSelector"]["matchLabels"], labels)


# ---- the sidecar


def test_sidecar_overlay() -> None:
    docs = built(SIDECAR)
    deployment = only(docs, "Deployment")
    pod = deployment["spec"]["template"]["spec"]
    container = router_container(pod)
    config = mounted_config(docs, pod, container)

    # A native sidecar: started before the app, stopped after it.
    assert container in pod["initContainers"]
    assert container["restartPolicy"] == "Always"
    assert [c["name"] for c in pod["containers"]] == ["app"]
    assert arg(container, "--host") == config.server.host == "127.0.0.1"
    assert config.state.url == "memory://"
    assert config.state.journal is None, "state in memory: nothing is settled to a store, no journal"
    assert not config.clients
    app_env = {e["name"]: e.get("value") for e in pod["containers"][0]["env"]}
    assert app_env["OPENAI_BASE_URL"] == f"http://127.0.0.1:{arg(container, '--port')}/v1"
    assert pod["terminationGracePeriodSeconds"] > shutdown_needs(config)

    # The kubelet cannot reach 127.0.0.1 of the pod: probes run in the container.
    for probe in ("startupProbe", "livenessProbe"):
        assert "/healthz" in " ".join(container[probe]["exec"]["command"]), probe
    assert "readinessProbe" not in container
    check_hardened(pod, container)
    assert not [d for d in docs if d["kind"] == "Service"]


# ---- the image name


@pytest.mark.parametrize("overlay", (SIDECAR, SHARED), ids=("sidecar", "shared"))
def test_image_name_is_set_by_kustomize_images(overlay: Path, tmp_path: Path) -> None:
    image = "registry.example.com/platform/router:9.9.9"
    (tmp_path / "kustomization.yaml").write_text(
        yaml.safe_dump(
            {
                "resources": [os.path.relpath(overlay, tmp_path)],
                "images": [{"name": "router", "newName": image.split(":")[0], "newTag": image.split(":")[1]}],
            }
        ),
        encoding="utf-8",
    )
    as_shipped = built(overlay)
    changed = kustomize_build(tmp_path)
    renamed = 0
    for before, after in zip(as_shipped, changed, strict=True):
        if before["kind"] not in ("Deployment", "StatefulSet"):
            continue
        pod_before, pod_after = before["spec"]["template"]["spec"], after["spec"]["template"]["spec"]
        for c_before, c_after in zip(
            pod_before["containers"] + pod_before.get("initContainers", []),
            pod_after["containers"] + pod_after.get("initContainers", []),
            strict=True,
        ):
            if c_before["image"] == "router:0.1.0":  # router, and the ledger exporter
                assert c_after["image"] == image
                renamed += 1
            else:
                assert c_after["image"] == c_before["image"]
    assert renamed == (2 if overlay == SHARED else 1)


# ---- monitoring


def test_service_monitor_scrapes_the_metrics_port_and_the_traffic_service_does_not_expose_it() -> None:
    """/metrics has its own listener (server.metrics_port; the exporter's --metrics-port), reached
    through a Service of its own: one for the replicas, one for the ledger exporter."""
    monitor = only(built(MONITORING), "ServiceMonitor")
    docs = built(SHARED)
    statefulset = only(docs, "StatefulSet", "router")
    pod = statefulset["spec"]["template"]["spec"]
    container = router_container(pod)
    ports = {p["name"]: p["containerPort"] for p in container["ports"]}
    assert mounted_config(docs, pod, container).server.metrics_port == ports["metrics"]
    exporter = only(docs, "Deployment", EXPORTER)

    services = [d for d in docs if d["kind"] == "Service"]
    scraped = {
        s["metadata"]["name"]: s
        for s in services
        if selects(monitor["spec"]["selector"]["matchLabels"], s["metadata"]["labels"])
    }
    assert sorted(scraped) == [EXPORTER, "router-metrics"]
    for workload, service in ((statefulset, scraped["router-metrics"]), (exporter, scraped[EXPORTER])):
        assert service["spec"]["clusterIP"] == "None", "headless: every pod is scraped, none balanced"
        assert selects(service["spec"]["selector"], workload["spec"]["template"]["metadata"]["labels"])
        (scraped_container,) = [
            c for c in workload["spec"]["template"]["spec"]["containers"] if c["image"] == "router:0.1.0"
        ]
        container_ports = {p["name"] for p in scraped_container["ports"]}
        by_name = {p["name"]: p for p in service["spec"]["ports"]}
        for endpoint in monitor["spec"]["endpoints"]:
            assert by_name[endpoint["port"]]["targetPort"] == "metrics" in container_ports
            assert endpoint["path"] == "/metrics"
    traffic = only(docs, "Service", "router")
    assert {p["targetPort"] for p in traffic["spec"]["ports"]} == {"http"}


# ---- the Dockerfile


def dockerfile() -> list[tuple[str, str]]:
    """(instruction, rest) per instruction, continuation lines joined, comments dropped."""
    text = (DEPLOY / "Dockerfile").read_text(encoding="utf-8")
    text = re.sub(r"\\\n\s*", " ", "\n".join(s for s in text.splitlines() if not s.lstrip().startswith("#")))
    return [
        (line.split(None, 1)[0].upper(), line.split(None, 1)[1]) for line in text.splitlines() if line.strip()
    ]


def test_dockerfile_agrees_with_the_manifests() -> None:
    instructions = dockerfile()
    values: dict[str, list[str]] = {}
    for name, rest in instructions:
        values.setdefault(name, []).append(rest)
    assert all("-slim" in image.split()[0] for image in values["FROM"])
    (user,) = values["USER"]
    uid = int(user.split(":")[0])
    assert uid != 0
    (healthcheck,) = values["HEALTHCHECK"]
    assert "/healthz" in healthcheck
    assert yaml.safe_load(values["ENTRYPOINT"][0]) == ["router"]

    (base,) = load_yaml_documents(BASE / "statefulset.yaml")
    pod = base["spec"]["template"]["spec"]
    container = router_container(pod)
    assert yaml.safe_load(values["CMD"][0]) == container["args"]
    assert pod["securityContext"]["runAsUser"] == uid
    assert container["ports"][0]["containerPort"] == int(values["EXPOSE"][0])

    # What the image copies from the build context exists and is not excluded by its .dockerignore.
    ignore = (DEPLOY / "Dockerfile.dockerignore").read_text(encoding="utf-8").splitlines()
    kept = {line[1:] for line in ignore if line.startswith("!")}
    for rest in values["COPY"]:
        if rest.startswith("--from"):
            continue
        *sources, _dest = shlex.split(rest)
        for source in sources:
            assert (ROOT / source).exists(), source
            assert source.rstrip("/") in kept, f"{source} is excluded by Dockerfile.dockerignore"
