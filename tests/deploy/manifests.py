"""What the manifest tests share: the kustomizations and example Secrets, `kustomize build` run once
per session, lookups in what it renders, and the config a container starts with."""

from __future__ import annotations

import copy
import functools
from pathlib import Path
from typing import Any

from router import config as configuration
from tests.deploy.support import KUBERNETES, MONITORING, kustomize_build, load_yaml_documents

BASE = KUBERNETES / "base"
SIDECAR = KUBERNETES / "overlays" / "sidecar"
SHARED = KUBERNETES / "overlays" / "shared"
KUSTOMIZATIONS = (BASE, SIDECAR, SHARED, MONITORING)
EXAMPLE_SECRET = KUBERNETES / "router-provider-keys.example.yaml"
SECRET_NAME = "router-provider-keys"
LEDGER_EXAMPLE_SECRET = KUBERNETES / "router-ledger-postgres.example.yaml"
LEDGER_SECRET_NAME = "router-ledger-postgres"
EXAMPLE_SECRETS = (EXAMPLE_SECRET, LEDGER_EXAMPLE_SECRET)
EXPORTER = "router-ledger-export"

Doc = dict[str, Any]


@functools.cache
def _build_once(directory: Path) -> tuple[Doc, ...]:
    return tuple(kustomize_build(directory))


def built(directory: Path) -> list[Doc]:
    """`kustomize build` of one of the repository's kustomizations, run once per session (each run
    takes a noticeable fraction of a second); a copy, so a test may change what it gets."""
    return copy.deepcopy(list(_build_once(directory)))


def only(docs: list[Doc], kind: str, name: str | None = None) -> Doc:
    found = [d for d in docs if d["kind"] == kind and (name is None or d["metadata"]["name"] == name)]
    assert len(found) == 1, f"expected one {kind} {name or ''}, found {len(found)}"
    return found[0]


def selects(selector: dict[str, str], labels: dict[str, str]) -> bool:
    return bool(selector) and all(labels.get(k) == v for k, v in selector.items())


def router_container(pod: Doc) -> Doc:
    containers: list[Doc] = pod.get("containers", []) + pod.get("initContainers", [])
    (container,) = [c for c in containers if c["name"] == "router"]
    return container


def arg(container: Doc, flag: str) -> str:
    args: list[str] = container["args"]
    return args[args.index(flag) + 1]


def example_secrets() -> dict[str, dict[str, str]]:
    """The example Secrets' entries, by Secret name."""
    secrets: dict[str, dict[str, str]] = {}
    for path in EXAMPLE_SECRETS:
        (secret,) = load_yaml_documents(path)
        secrets[secret["metadata"]["name"]] = secret["stringData"]
    return secrets


def container_env(container: Doc) -> dict[str, str]:
    """The environment the container gets from the example Secrets: whole Secrets (envFrom) and single
    keys (env valueFrom secretKeyRef), as the kubelet would build it."""
    secrets = example_secrets()
    env: dict[str, str] = {}
    for source in container.get("envFrom", []):
        env.update(secrets[source["secretRef"]["name"]])
    for entry in container.get("env", []):
        if "value" in entry:
            env[entry["name"]] = entry["value"]
        elif "secretKeyRef" in entry.get("valueFrom", {}):
            ref = entry["valueFrom"]["secretKeyRef"]
            env[entry["name"]] = secrets[ref["name"]][ref["key"]]
    return env


def mounted_config(docs: list[Doc], pod: Doc, container: Doc, *, demo: bool = False) -> configuration.Config:
    """The providers.yaml the container is started with, loaded with the environment the example
    Secrets give that container (`demo`: as `router ledger export` loads it, provider keys not needed)."""
    config_path = Path(arg(container, "--config"))
    (mount,) = [m for m in container["volumeMounts"] if m["mountPath"] == str(config_path.parent)]
    assert "subPath" not in mount, "a subPath mount never sees an updated ConfigMap, so no reload"
    (volume,) = [v for v in pod["volumes"] if v["name"] == mount["name"]]
    configmap = only(docs, "ConfigMap", volume["configMap"]["name"])
    text = configmap["data"][config_path.name]
    return configuration.parse(
        text, source=f"ConfigMap {configmap['metadata']['name']}", demo=demo, env=container_env(container)
    )


def check_hardened(pod: Doc, container: Doc) -> None:
    pod_security = pod.get("securityContext", {})
    security = container["securityContext"]
    assert pod_security.get("runAsNonRoot") or security.get("runAsNonRoot")
    assert (security.get("runAsUser") or pod_security.get("runAsUser") or 0) != 0
    assert security["allowPrivilegeEscalation"] is False
    assert security["readOnlyRootFilesystem"] is True
    assert security["capabilities"]["drop"] == ["ALL"]
    assert container["resources"]["limits"]["memory"]
    assert container["resources"]["requests"]["cpu"]
    assert pod.get("automountServiceAccountToken") is False
    assert {"secretRef": {"name": SECRET_NAME}} in container["envFrom"]
