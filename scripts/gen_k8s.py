"""Write the per-service Kubernetes manifests of deploy/k8s/base/services from the registry.

One Deployment, Service and ConfigMap per service, all alike except name, port and the few
service-specific choices below; generating them keeps the seven in step with the registry and
with each other. ``--check`` exits 1 when a committed file differs (tests run it).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import yaml

from hean.registry import SERVICES, ServiceSpec

ROOT = Path(__file__).resolve().parents[1]
OUT = ROOT / "deploy/k8s/base/services"
IMAGE = "hean"
VENUES = ("bybit", "binance", "okx")

# one instance only: two risk services or two routers on one account would double-decide
SINGLETON = {"risk-killswitch", "order-router"}
RESOURCES = {
    "funding-predictor": ({"cpu": "250m", "memory": "768Mi"}, {"cpu": "2", "memory": "2Gi"}),
    "liquidation-predictor": ({"cpu": "200m", "memory": "512Mi"}, {"cpu": "1", "memory": "1Gi"}),
}
DEFAULT_RESOURCES = ({"cpu": "100m", "memory": "256Mi"}, {"cpu": "1", "memory": "768Mi"})


def _venue_env() -> list[dict]:
    env = []
    for v in VENUES:
        for part in ("API_KEY", "API_SECRET"):
            env.append(
                {
                    "name": f"HEAN_{v.upper()}_{part}_FILE",
                    "value": f"/run/secrets/venues/{v}-{part.lower().replace('_', '-')}",
                }
            )
    # the venue client reads _PASSPHRASE, the router's start check _PASSWORD: same file
    for part in ("API_PASSPHRASE", "API_PASSWORD"):
        env.append(
            {"name": f"HEAN_OKX_{part}_FILE", "value": "/run/secrets/venues/okx-api-passphrase"}
        )
    return env


def manifests(s: ServiceSpec) -> list[dict]:
    port = s.port()
    labels = {"app.kubernetes.io/name": s.name, "app.kubernetes.io/part-of": "hean"}
    requests, limits = RESOURCES.get(s.name, DEFAULT_RESOURCES)
    env = [
        {"name": "HEAN_NATS_USER", "value": s.name},
        {"name": "HEAN_NATS_PASSWORD_FILE", "value": "/run/secrets/nats/password"},
        {"name": "HEAN_HEALTH_PORT", "value": str(port)},
        {"name": "HEAN_INSTANCE", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}},
    ]
    mounts = [
        {"name": "nats-password", "mountPath": "/run/secrets/nats", "readOnly": True},
        {"name": "state", "mountPath": "/var/lib/hean"},
        {"name": "tmp", "mountPath": "/tmp"},
    ]
    volumes = [
        {
            "name": "nats-password",
            "secret": {
                "secretName": "hean-nats-auth",
                "items": [{"key": s.name, "path": "password"}],
                "defaultMode": 0o400,
            },
        },
        {"name": "state", "emptyDir": {}},
        {"name": "tmp", "emptyDir": {"medium": "Memory", "sizeLimit": "64Mi"}},
    ]
    if s.name == "order-router":
        env += _venue_env()
        mounts.append({"name": "venue-keys", "mountPath": "/run/secrets/venues", "readOnly": True})
        # optional: paper trading needs no keys; live trading refuses to start without them
        volumes.append(
            {
                "name": "venue-keys",
                "secret": {"secretName": "hean-venue-keys", "optional": True, "defaultMode": 0o400},
            }
        )

    def probe(path: str, **kw: int) -> dict:
        return {"httpGet": {"path": path, "port": "http"}, "timeoutSeconds": 3, **kw}

    container = {
        "name": s.name,
        "image": IMAGE,
        "imagePullPolicy": "IfNotPresent",
        "command": ["hean", "service", s.name],
        "envFrom": [
            {"configMapRef": {"name": "hean-config"}},
            {"configMapRef": {"name": f"hean-{s.name}"}},
        ],
        "env": env,
        "ports": [{"name": "http", "containerPort": port, "protocol": "TCP"}],
        "startupProbe": probe("/healthz", periodSeconds=5, failureThreshold=36),
        "livenessProbe": probe("/healthz", periodSeconds=10, failureThreshold=3),
        "readinessProbe": probe("/readyz", periodSeconds=5, failureThreshold=2),
        "resources": {"requests": requests, "limits": limits},
        "securityContext": {
            "allowPrivilegeEscalation": False,
            "readOnlyRootFilesystem": True,
            "runAsNonRoot": True,
            "capabilities": {"drop": ["ALL"]},
        },
        "volumeMounts": mounts,
    }
    deployment = {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": s.name, "labels": dict(labels)},
        "spec": {
            "replicas": 1,
            "revisionHistoryLimit": 5,
            "strategy": {"type": "Recreate"}
            if s.name in SINGLETON
            else {"type": "RollingUpdate", "rollingUpdate": {"maxUnavailable": 0, "maxSurge": 1}},
            "selector": {"matchLabels": {"app.kubernetes.io/name": s.name}},
            "template": {
                "metadata": {
                    "labels": dict(labels),
                    "annotations": {
                        "prometheus.io/scrape": "true",
                        "prometheus.io/port": str(port),
                        "prometheus.io/path": "/metrics",
                    },
                },
                "spec": {
                    "automountServiceAccountToken": False,
                    "terminationGracePeriodSeconds": 40,
                    "securityContext": {
                        "runAsNonRoot": True,
                        "runAsUser": 10001,
                        "runAsGroup": 10001,
                        "fsGroup": 10001,
                        "seccompProfile": {"type": "RuntimeDefault"},
                    },
                    "containers": [container],
                    "volumes": volumes,
                },
            },
        },
    }
    service = {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {"name": s.name, "labels": dict(labels)},
        "spec": {
            "selector": {"app.kubernetes.io/name": s.name},
            "ports": [{"name": "http", "port": port, "targetPort": "http"}],
        },
    }
    config = {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {"name": f"hean-{s.name}", "labels": dict(labels)},
        "data": {"HEAN_LOG_LEVEL": "INFO"},
    }
    if s.name == "order-router":
        config["data"]["HEAN_LIVE"] = "false"
    return [deployment, service, config]


def render(s: ServiceSpec) -> str:
    head = f"# {s.name}: {s.description}\n# Generated by scripts/gen_k8s.py; edit that, not this.\n"
    return head + yaml.safe_dump_all(manifests(s), sort_keys=False, width=100)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--check", action="store_true")
    args = p.parse_args(argv)
    stale = []
    for s in SERVICES:
        path = OUT / f"{s.name}.yaml"
        text = render(s)
        if args.check:
            if not path.is_file() or path.read_text() != text:
                stale.append(path)
        else:
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(text)
    for path in stale:
        print(f"out of date: {path} (run python scripts/gen_k8s.py)")
    return 1 if stale else 0


if __name__ == "__main__":
    sys.exit(main())
