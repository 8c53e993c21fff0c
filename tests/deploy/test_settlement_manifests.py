"""The shared overlay's settlement side: each replica's journal on a volume of its own, and the one
ledger exporter (`router ledger export`), reaching Redis and PostgreSQL, scraped under the job its alert
and the dashboard read."""

from __future__ import annotations

import json
import re
from pathlib import PurePosixPath
from urllib.parse import urlsplit

from tests.deploy.manifests import (
    EXPORTER,
    LEDGER_SECRET_NAME,
    SHARED,
    arg,
    built,
    check_hardened,
    mounted_config,
    only,
    router_container,
    selects,
)
from tests.deploy.support import DASHBOARD, MONITORING, rule_groups


def test_journal_outlives_the_container() -> None:
    """state.journal lies on the replica's own PersistentVolumeClaim, not the container's filesystem or an
    emptyDir: a restarted or rescheduled replica gets it back and replays what Redis did not take."""
    docs = built(SHARED)
    statefulset = only(docs, "StatefulSet", "router")
    pod = statefulset["spec"]["template"]["spec"]
    labels = statefulset["spec"]["template"]["metadata"]["labels"]
    container = router_container(pod)
    config = mounted_config(docs, pod, container)

    assert config.state.url.startswith("redis://") and config.state.journal
    journal = PurePosixPath(config.state.journal)
    mounts = [m for m in container["volumeMounts"] if journal.is_relative_to(m["mountPath"])]
    mount = max(mounts, key=lambda m: len(m["mountPath"]))  # the innermost mount holds it
    assert not mount.get("readOnly") and "subPath" not in mount
    claims = {claim["metadata"]["name"]: claim for claim in statefulset["spec"]["volumeClaimTemplates"]}
    assert mount["name"] in claims, f"{journal} is on {mount['name']}, not on a volume of the replica's own"
    assert mount["name"] not in {volume["name"] for volume in pod["volumes"]}
    claim = claims[mount["name"]]["spec"]
    assert claim["accessModes"] == ["ReadWriteOnce"]
    assert re.fullmatch(r"[1-9][0-9]*Gi", claim["resources"]["requests"]["storage"])
    # uid 10001 writes it, while the rest of the filesystem stays read-only.
    assert pod["securityContext"]["fsGroup"] == pod["securityContext"]["runAsGroup"]
    assert container["securityContext"]["readOnlyRootFilesystem"] is True
    # A replica removed by a scale-down keeps its journal until its ordinal returns.
    assert statefulset["spec"]["persistentVolumeClaimRetentionPolicy"]["whenScaled"] == "Retain"
    # The StatefulSet's governing Service: headless, over these pods.
    governing = only(docs, "Service", statefulset["spec"]["serviceName"])
    assert governing["spec"]["clusterIP"] == "None"
    assert selects(governing["spec"]["selector"], labels)


def test_ledger_exporter() -> None:
    """One `router ledger export` (one consumer of the Redis consumer group), on the routers' own config,
    PostgreSQL's DSN from a Secret only it reads, outside every object aimed at the serving replicas."""
    docs = built(SHARED)
    exporter = only(docs, "Deployment", EXPORTER)
    pod = exporter["spec"]["template"]["spec"]
    labels = exporter["spec"]["template"]["metadata"]["labels"]
    (container,) = pod["containers"]
    statefulset = only(docs, "StatefulSet", "router")
    router_pod = statefulset["spec"]["template"]["spec"]
    serving = router_container(router_pod)

    assert exporter["spec"]["replicas"] == 1
    assert exporter["spec"]["strategy"] == {"type": "Recreate"}, "a rollout must never run two exporters"
    assert not [
        hpa
        for hpa in docs
        if hpa["kind"] == "HorizontalPodAutoscaler" and hpa["spec"]["scaleTargetRef"]["name"] == EXPORTER
    ]
    assert container["image"] == serving["image"]
    assert container["args"][:2] == ["ledger", "export"]
    ports = {p["name"]: p["containerPort"] for p in container["ports"]}
    assert int(arg(container, "--metrics-port")) == ports["metrics"]
    assert arg(container, "--metrics-host") == "0.0.0.0", "on loopback (the default) nothing scrapes it"
    check_hardened(pod, container)

    # The replicas' providers.yaml: the same Redis, the same clients (a ledger stream each). The
    # exporter loads it as --demo does (no provider is called); it must load that way too.
    config = mounted_config(docs, pod, container)
    as_exporter = mounted_config(docs, pod, container, demo=True)
    assert (as_exporter.state, as_exporter.clients, as_exporter.ledger) == (
        config.state,
        config.clients,
        config.ledger,
    )
    router_config = mounted_config(docs, router_pod, serving)
    assert config.state.url == router_config.state.url
    assert [c.name for c in config.clients] == [c.name for c in router_config.clients]
    # PostgreSQL's DSN reaches the exporter alone, from its own Secret.
    assert config.ledger.postgres and config.ledger.table
    assert router_config.ledger.postgres is None
    dsn = [e for e in container["env"] if e["name"] == "LEDGER_POSTGRES_DSN"]
    assert [e["valueFrom"]["secretKeyRef"] for e in dsn] == [
        {"name": LEDGER_SECRET_NAME, "key": "LEDGER_POSTGRES_DSN"}
    ]
    assert LEDGER_SECRET_NAME not in json.dumps(router_pod)

    # Not a serving replica: no traffic, no disruption budget, not the StatefulSet's.
    assert not selects(statefulset["spec"]["selector"]["matchLabels"], labels)
    for kind, name in (("Service", "router"), ("Service", "router-metrics")):
        assert not selects(only(docs, kind, name)["spec"]["selector"], labels), name
    assert not selects(only(docs, "PodDisruptionBudget")["spec"]["selector"]["matchLabels"], labels)

    # It reaches Redis (which lets it in), PostgreSQL's port and DNS.
    redis_labels = only(docs, "StatefulSet", "router-redis")["spec"]["template"]["metadata"]["labels"]
    redis_policy = only(docs, "NetworkPolicy", "router-redis")
    admitted = [
        peer["podSelector"]["matchLabels"]
        for rule in redis_policy["spec"]["ingress"]
        for peer in rule["from"]
    ]
    assert any(selects(peer, labels) for peer in admitted)
    (egress,) = [
        policy
        for policy in docs
        if policy["kind"] == "NetworkPolicy" and selects(policy["spec"]["podSelector"]["matchLabels"], labels)
    ]
    assert egress["spec"]["policyTypes"] == ["Egress"]

    def allowed(port: int, protocol: str = "TCP", peer: dict[str, str] | None = None) -> bool:
        for rule in egress["spec"]["egress"]:
            if not any(p["port"] == port and p.get("protocol", "TCP") == protocol for p in rule["ports"]):
                continue
            if "to" not in rule or (
                peer
                and any(selects(t.get("podSelector", {}).get("matchLabels", {}), peer) for t in rule["to"])
            ):
                return True
        return False

    redis_port = int(config.state.url.split(":")[2].split("/")[0])
    assert allowed(redis_port, peer=redis_labels)
    assert allowed(urlsplit(config.ledger.postgres).port or 5432)
    assert allowed(53, "UDP", {"k8s-app": "kube-dns"}) and allowed(53, "TCP", {"k8s-app": "kube-dns"})


def test_the_exporter_job_is_the_one_the_alert_and_the_dashboard_read() -> None:
    """The replicas report the exporter's gauges too (as 0), so the exporter's absence and its lag are
    read by its job: the name of its Service, which the ServiceMonitor makes the job label."""
    assert "jobLabel" not in only(built(MONITORING), "ServiceMonitor")["spec"]
    docs = built(SHARED)
    labels = only(docs, "Deployment", EXPORTER)["spec"]["template"]["metadata"]["labels"]
    (service,) = [d for d in docs if d["kind"] == "Service" and selects(d["spec"]["selector"], labels)]
    job = service["metadata"]["name"]
    (down,) = [r for r in rule_groups()[0]["rules"] if r["alert"] == "RouterLedgerExportDown"]
    assert f'job="{job}"' in down["expr"]
    board = json.loads(DASHBOARD.read_text(encoding="utf-8"))
    (variable,) = [v for v in board["templating"]["list"] if v["name"] == "exporter"]
    assert variable["query"] == variable["current"]["value"] == job
