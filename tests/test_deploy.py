"""Deployment files: image, docker compose, Kubernetes, Prometheus, Grafana.

No Docker engine or cluster runs here, so the files are checked for what they must say against
the service registry and the code (ports, commands, settings, health paths, metric names); the
NATS config runs in a real nats-server, the Prometheus files pass ``promtool``, the kustomize
overlays render with ``kubectl kustomize``.
"""

from __future__ import annotations

import asyncio
import importlib
import json
import re
import shutil
import subprocess
import sys
import threading
from http.server import BaseHTTPRequestHandler, HTTPServer
from pathlib import Path

import msgspec
import pytest
import yaml
from prometheus_client import CollectorRegistry

from hean import healthcheck, natsauth
from hean.bus.nats import NatsBus, NatsConnectError
from hean.config import free_port
from hean.natsserver import nats_server_binary
from hean.registry import DEFAULT_PORT_BASE, SERVICES, SIM_PORT_OFFSET, spec
from hean.runtime.health import build_app

REPO = Path(__file__).resolve().parents[1]
NAMES = [s.name for s in SERVICES]
SIM_PORT = DEFAULT_PORT_BASE + SIM_PORT_OFFSET


def load(rel: str) -> dict:
    return yaml.safe_load((REPO / rel).read_text())


def settings_fields(name: str) -> set[str]:
    """The HEAN_ environment variables a service understands."""
    module = importlib.import_module(spec(name).module)
    return {"HEAN_" + f.name.upper() for f in msgspec.structs.fields(module.Settings)}


def code_metrics() -> set[str]:
    """Every metric name the code registers, with the series names Prometheus derives."""
    pattern = re.compile(r"(Counter|Gauge|Histogram|counter|gauge|histogram)\(\s*\"(hean_\w+)\"")
    names: set[str] = set()
    for path in [*REPO.glob("libs/**/*.py"), *REPO.glob("services/**/*.py")]:
        for kind, name in pattern.findall(path.read_text()):
            names.add(name)
            if kind.lower() == "histogram":
                names |= {f"{name}_bucket", f"{name}_sum", f"{name}_count"}
    return names


def metric_refs(text: str) -> set[str]:
    return set(re.findall(r"\bhean_[a-z0-9_]+\b", text))


# ---------------------------------------------------------------- runtime paths


def test_probe_paths_exist_in_the_runtime() -> None:
    app = build_app("x", CollectorRegistry(), lambda: {}, lambda: {})
    paths = {r.path for r in app.routes}
    assert {"/healthz", "/readyz", "/metrics"} <= paths


# ---------------------------------------------------------------- image


def test_dockerfile_one_image_non_root_cpu_torch_healthcheck() -> None:
    text = (REPO / "deploy/Dockerfile").read_text()
    assert len(re.findall(r"^FROM ", text, re.M)) == 2  # build stage + small runtime
    assert "download.pytorch.org/whl/cpu" in text
    assert re.search(r"^USER 10001", text, re.M)
    assert 'CMD ["python", "-m", "hean.healthcheck"]' in text
    assert "pip install --no-deps ." in text
    # the image holds the code, not the tests, the venv or local state
    ignored = (REPO / ".dockerignore").read_text().split()
    assert {".venv", ".hean", ".git", "tests"} <= set(ignored)


def test_healthcheck_target_follows_the_container_command() -> None:
    for s in SERVICES:
        url = healthcheck.target(
            ["/opt/hean/bin/python", "/opt/hean/bin/hean", "service", s.name], {}
        )
        assert url == f"http://127.0.0.1:{s.port()}/healthz"
    assert healthcheck.target(
        ["hean", "service", "order-router"], {"HEAN_HEALTH_PORT": "9000"}
    ) == ("http://127.0.0.1:9000/healthz")
    assert healthcheck.target(["hean", "sim", "--port", "8110"], {}).endswith(":8110/sim/state")
    with pytest.raises(ValueError, match="HEAN_HEALTH_PORT"):
        healthcheck.target(["sleep", "1"], {})


def test_healthcheck_exit_code_against_a_real_http_server(monkeypatch) -> None:
    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            self.send_response(200 if self.path == "/healthz" else 404)
            self.end_headers()

        def log_message(self, *args) -> None:
            pass

    server = HTTPServer(("127.0.0.1", 0), Handler)
    port = server.server_address[1]
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    monkeypatch.setenv("HEAN_HEALTH_PORT", str(port))
    try:
        assert healthcheck.main(["hean", "service", "order-router"]) == 0
    finally:
        server.shutdown()
        server.server_close()
    assert healthcheck.main(["hean", "service", "order-router"]) == 1


# ---------------------------------------------------------------- docker compose


@pytest.fixture(scope="module")
def compose() -> dict:
    return load("docker-compose.yml")


def test_compose_runs_every_registry_service(compose) -> None:
    services = compose["services"]
    for s in SERVICES:
        svc = services[s.name]
        assert svc["command"] == ["hean", "service", s.name]
        assert svc["build"]["dockerfile"] == "deploy/Dockerfile"
        assert svc["restart"] == "unless-stopped"
        assert svc["depends_on"]["nats"] == {"condition": "service_healthy"}
        assert svc["healthcheck"]["test"] == ["CMD", "python", "-m", "hean.healthcheck"]
        env = svc["environment"]
        assert env["HEAN_HEALTH_PORT"] == str(s.port())
        assert env["HEAN_NATS_USER"] == s.name
        assert env["HEAN_NATS_URL"].endswith("nats://nats:4222}")
        assert env["HEAN_SIM_URL"] == f"http://sim:{SIM_PORT}"
        unknown = set(env) - settings_fields(s.name)
        assert not unknown, f"{s.name}: not settings of the service: {unknown}"
        # its own NATS password only
        nats_mount = next(v for v in svc["volumes"] if isinstance(v, dict))
        assert nats_mount["volume"]["subpath"] == s.name
        assert nats_mount["read_only"] is True
        assert env["HEAN_NATS_PASSWORD_FILE"] == nats_mount["target"] + "/password"
        assert svc["expose"] == [str(s.port())]
    assert services["order-router"]["environment"]["HEAN_LIVE"].endswith(":-false}")


def test_compose_nats_sim_prometheus_grafana(compose) -> None:
    services = compose["services"]
    nats = services["nats"]
    mounts = " ".join(nats["volumes"])
    for f in ("nats.conf", "auth.conf", "entrypoint.sh"):
        assert f"./deploy/nats/{f}:/etc/nats/{f}:ro" in mounts
    assert "nats-data:/data" in mounts
    assert "8222/healthz" in " ".join(nats["healthcheck"]["test"])
    assert nats["depends_on"]["nats-auth"]["condition"] == "service_completed_successfully"
    assert services["nats-auth"]["command"][:3] == ["python", "-m", "hean.natsauth"]
    sim = services["sim"]
    assert sim["command"] == ["hean", "sim", "--host", "0.0.0.0", "--port", str(SIM_PORT)]
    assert sim["healthcheck"]["test"] == ["CMD", "python", "-m", "hean.healthcheck"]
    prom = services["prometheus"]
    assert any("deploy/prometheus/prometheus.yml" in v for v in prom["volumes"])
    graf = services["grafana"]
    assert any("deploy/grafana/dashboards" in v for v in graf["volumes"])
    for svc in services.values():
        for v in svc.get("volumes", []):
            rel = v.split(":")[0] if isinstance(v, str) else ""
            if rel.startswith("./"):
                assert (REPO / rel).exists(), rel


def test_compose_overrides_tls_and_live(compose) -> None:
    tls = load("docker-compose.tls.yml")
    assert tls["services"]["nats"]["command"] == ["-c", "/etc/nats/nats-tls.conf"]
    for name in NAMES:
        env = tls["services"][name]["environment"]
        assert env["HEAN_NATS_URL"] == "tls://nats:4222"
        assert set(env) <= settings_fields(name)
    live = load("docker-compose.live.yml")
    assert set(live["services"]) == {"order-router"}  # keys reach the router only
    env = live["services"]["order-router"]["environment"]
    for venue in ("BYBIT", "BINANCE", "OKX"):
        assert env[f"HEAN_{venue}_API_KEY_FILE"].startswith("/run/secrets/")
        assert env[f"HEAN_{venue}_API_SECRET_FILE"].startswith("/run/secrets/")
    mounted = set(live["services"]["order-router"]["secrets"])
    assert mounted == set(live["secrets"])
    for path in env.values():
        assert Path(path).name in mounted
    assert (REPO / "deploy/secrets/.gitignore").read_text().splitlines()[1] == "*"


def _start_compose_nats(tmp_path: Path, tls_dir: Path | None = None):
    """deploy/nats/*.conf through entrypoint.sh in a real nats-server (ports and paths moved)."""
    conf_dir = tmp_path / "etc"
    conf_dir.mkdir()
    port, http = free_port(), free_port()
    text = (REPO / "deploy/nats/nats.conf").read_text()
    text = text.replace("0.0.0.0:4222", f"127.0.0.1:{port}")
    text = text.replace("0.0.0.0:8222", f"127.0.0.1:{http}")
    text = text.replace("/data/jetstream", str(tmp_path / "js"))
    (conf_dir / "nats.conf").write_text(text)
    main = conf_dir / "nats.conf"
    if tls_dir is not None:
        tls = (REPO / "deploy/nats/nats-tls.conf").read_text()
        (conf_dir / "nats-tls.conf").write_text(tls.replace("/etc/nats/tls", str(tls_dir)))
        main = conf_dir / "nats-tls.conf"
    shutil.copy(REPO / "deploy/nats/auth.conf", conf_dir / "auth.conf")
    secrets = tmp_path / "secrets"
    natsauth.make_secrets(secrets)
    bin_dir = str(Path(nats_server_binary()).parent)
    proc = subprocess.Popen(
        ["sh", str(REPO / "deploy/nats/entrypoint.sh"), "-c", str(main)],
        env={"PATH": f"{bin_dir}:/usr/bin:/bin", "HEAN_NATS_PASSWORD_DIR": str(secrets)},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    return proc, port, secrets


async def _connect_when_up(proc, url: str, password_file: Path, **kw) -> NatsBus:
    for _ in range(100):
        try:
            return await NatsBus.connect(
                url,
                "t",
                connect_timeout_s=2,
                user="order-router",
                password_file=str(password_file),
                **kw,
            )
        except Exception:
            assert proc.poll() is None, "nats-server exited"
            await asyncio.sleep(0.1)
    raise AssertionError("nats-server never accepted the order-router user")


async def test_compose_nats_config_and_entrypoint_run(tmp_path: Path) -> None:
    proc, port, secrets = _start_compose_nats(tmp_path)
    try:
        pw = natsauth.password_path(secrets, "order-router")
        bus = await _connect_when_up(proc, f"nats://127.0.0.1:{port}", pw)
        await bus.ensure_streams()
        info = await bus.js.stream_info("HEAN_TRADING")
        assert info.config.name == "HEAN_TRADING"
        await bus.close()
    finally:
        proc.terminate()
        proc.wait(10)


def _certificates(d: Path) -> None:
    """A throwaway CA and a server certificate for ``nats`` and 127.0.0.1."""
    d.mkdir()
    (d / "san.ext").write_text("subjectAltName=DNS:nats,IP:127.0.0.1\n")
    for cmd in (
        "req -x509 -newkey rsa:2048 -nodes -keyout ca.key -out ca.crt -days 1 -subj /CN=hean-ca",
        "req -newkey rsa:2048 -nodes -keyout server.key -out server.csr -subj /CN=nats",
        "x509 -req -in server.csr -CA ca.crt -CAkey ca.key -CAcreateserial -out server.crt "
        "-days 1 -extfile san.ext",
    ):
        subprocess.run(["openssl", *cmd.split()], cwd=d, check=True, capture_output=True)


@pytest.mark.skipif(shutil.which("openssl") is None, reason="openssl not installed")
async def test_compose_nats_tls_config_with_ca_file(tmp_path: Path) -> None:
    tls_dir = tmp_path / "tls"
    _certificates(tls_dir)
    proc, port, secrets = _start_compose_nats(tmp_path, tls_dir)
    try:
        pw = natsauth.password_path(secrets, "order-router")
        bus = await _connect_when_up(
            proc, f"tls://127.0.0.1:{port}", pw, tls_ca_file=str(tls_dir / "ca.crt")
        )
        await bus.ensure_streams()
        await bus.close()
        # a client that does not trust the CA is refused
        with pytest.raises(NatsConnectError):
            await NatsBus.connect(
                f"tls://127.0.0.1:{port}",
                "t",
                connect_timeout_s=2,
                user="order-router",
                password_file=str(pw),
            )
    finally:
        proc.terminate()
        proc.wait(10)


# ---------------------------------------------------------------- Prometheus


def test_prometheus_scrapes_every_service() -> None:
    conf = load("deploy/prometheus/prometheus.yml")
    job = next(j for j in conf["scrape_configs"] if j["job_name"] == "hean")
    assert job["metrics_path"] == "/metrics"
    targets = {t["labels"]["service"]: t["targets"] for t in job["static_configs"]}
    assert targets == {s.name: [f"{s.name}:{s.port()}"] for s in SERVICES}


@pytest.mark.skipif(shutil.which("promtool") is None, reason="promtool not installed")
def test_promtool_accepts_config_and_rules() -> None:
    for args in (
        ["check", "config", "deploy/prometheus/prometheus.yml"],
        ["check", "rules", "deploy/prometheus/alerts.yml"],
    ):
        out = subprocess.run(["promtool", *args], cwd=REPO, capture_output=True, text=True)
        assert out.returncode == 0, out.stdout + out.stderr


def test_alert_rules_use_real_metrics() -> None:
    rules = load("deploy/prometheus/alerts.yml")
    exprs = [r["expr"] for g in rules["groups"] for r in g["rules"]]
    names = {r["alert"] for g in rules["groups"] for r in g["rules"]}
    assert {"HeanServiceNotReady", "HeanStaleMarketData", "HeanOrderRejections"} <= names
    assert {"HeanFundingPredictorError", "HeanRiskServiceDown"} <= names
    missing = metric_refs("\n".join(exprs)) - code_metrics()
    assert not missing, f"alert rules use metrics no code exports: {missing}"


# ---------------------------------------------------------------- Grafana


def test_grafana_provisioning_and_dashboard() -> None:
    ds = load("deploy/grafana/provisioning/datasources/prometheus.yml")["datasources"][0]
    assert ds["type"] == "prometheus" and ds["url"] == "http://prometheus:9090"
    provider = load("deploy/grafana/provisioning/dashboards/hean.yml")["providers"][0]
    assert provider["options"]["path"] == "/var/lib/grafana/dashboards"
    dash = json.loads((REPO / "deploy/grafana/dashboards/hean-overview.json").read_text())
    titles = " | ".join(p["title"].lower() for p in dash["panels"])
    for topic in ("messages per second", "dead letters", "funding spread", "risk", "venue health"):
        assert topic in titles, topic
    for topic in ("forecast", "cascade", "signals", "orders", "service health"):
        assert topic in titles, topic
    exprs = [t["expr"] for p in dash["panels"] for t in p["targets"]]
    assert all(p["datasource"]["uid"] == ds["uid"] for p in dash["panels"])
    missing = metric_refs("\n".join(exprs)) - code_metrics()
    assert not missing, f"dashboard uses metrics no code exports: {missing}"
    ids = [p["id"] for p in dash["panels"]]
    assert len(ids) == len(set(ids))


# ---------------------------------------------------------------- Kubernetes


def test_k8s_service_manifests_are_generated() -> None:
    out = subprocess.run(
        [sys.executable, "scripts/gen_k8s.py", "--check"], cwd=REPO, capture_output=True, text=True
    )
    assert out.returncode == 0, out.stdout


def render(overlay: str) -> list[dict]:
    if shutil.which("kubectl") is None:
        pytest.skip("kubectl not installed")
    out = subprocess.run(
        ["kubectl", "kustomize", f"deploy/k8s/overlays/{overlay}"],
        cwd=REPO,
        capture_output=True,
        text=True,
    )
    assert out.returncode == 0, out.stderr
    return [d for d in yaml.safe_load_all(out.stdout) if d]


def by_kind(docs: list[dict], kind: str) -> dict[str, dict]:
    return {d["metadata"]["name"]: d for d in docs if d["kind"] == kind}


@pytest.mark.parametrize("overlay", ["dev", "prod"])
def test_k8s_deployments_probes_ports_security(overlay: str) -> None:
    docs = render(overlay)
    assert all(d["metadata"].get("namespace", "hean") == "hean" for d in docs)
    deployments = by_kind(docs, "Deployment")
    services = by_kind(docs, "Service")
    for s in SERVICES:
        dep = deployments[s.name]
        pod = dep["spec"]["template"]
        (c,) = pod["spec"]["containers"]
        assert c["command"] == ["hean", "service", s.name]
        assert c["ports"] == [{"name": "http", "containerPort": s.port(), "protocol": "TCP"}]
        for probe, path in (
            ("startupProbe", "/healthz"),
            ("livenessProbe", "/healthz"),
            ("readinessProbe", "/readyz"),
        ):
            assert c[probe]["httpGet"] == {"path": path, "port": "http"}, (s.name, probe)
        assert c["resources"]["requests"] and c["resources"]["limits"]
        assert c["securityContext"]["runAsNonRoot"] is True
        assert c["securityContext"]["readOnlyRootFilesystem"] is True
        assert c["securityContext"]["allowPrivilegeEscalation"] is False
        assert pod["spec"]["securityContext"]["runAsUser"] == 10001
        ann = pod["metadata"]["annotations"]
        assert ann["prometheus.io/scrape"] == "true"
        assert ann["prometheus.io/port"] == str(s.port())
        env = {e["name"]: e for e in c["env"]}
        assert env["HEAN_NATS_USER"]["value"] == s.name
        assert set(env) <= settings_fields(s.name) | {
            n for n in env if re.fullmatch(r"HEAN_[A-Z]+_API_\w+_FILE", n)
        }
        nats_secret = next(v for v in pod["spec"]["volumes"] if v["name"] == "nats-password")
        assert nats_secret["secret"]["items"] == [{"key": s.name, "path": "password"}]
        secrets = {v["secret"]["secretName"] for v in pod["spec"]["volumes"] if "secret" in v}
        # venue keys are mounted into the order router only
        assert ("hean-venue-keys" in secrets) == (s.name == "order-router")
        strategy = dep["spec"]["strategy"]["type"]
        assert strategy == (
            "Recreate" if s.name in ("risk-killswitch", "order-router") else "RollingUpdate"
        )
        if s.name in ("risk-killswitch", "order-router"):
            assert dep["spec"]["replicas"] == 1
        svc = services[s.name]
        assert svc["spec"]["ports"][0]["port"] == s.port()
        config = by_kind(docs, "ConfigMap")
        assert any(n.startswith(f"hean-{s.name}") for n in config)


@pytest.mark.parametrize("overlay", ["dev", "prod"])
def test_k8s_nats_cluster(overlay: str) -> None:
    docs = render(overlay)
    sts = by_kind(docs, "StatefulSet")["nats"]
    assert sts["spec"]["replicas"] == 3
    assert sts["spec"]["volumeClaimTemplates"][0]["metadata"]["name"] == "data"
    (c,) = sts["spec"]["template"]["spec"]["containers"]
    env = {e["name"]: e for e in c["env"]}
    for user in natsauth.users():
        ref = env[natsauth.password_env(user)]["valueFrom"]["secretKeyRef"]
        assert ref == {"name": "hean-nats-auth", "key": user}
    config = next(
        d
        for d in docs
        if d["kind"] == "ConfigMap" and d["metadata"]["name"].startswith("nats-config")
    )
    conf = config["data"]["nats.conf"]
    assert "sync_interval: always" in conf and "include auth.conf" in conf
    routes = re.findall(r"nats://(nats-\d)\.nats-headless:6222", conf)
    assert routes == ["nats-0", "nats-1", "nats-2"]
    assert config["data"]["auth.conf"] == natsauth.render()
    volume = next(v for v in sts["spec"]["template"]["spec"]["volumes"] if v["name"] == "config")
    assert volume["configMap"]["name"] == config["metadata"]["name"]
    cfg = by_kind(docs, "ConfigMap")
    shared = next(v for k, v in cfg.items() if k.startswith("hean-config"))
    assert shared["data"]["HEAN_NATS_URL"] == "nats://nats:4222"
    assert shared["data"]["HEAN_NATS_REPLICAS"] == "3"
    assert by_kind(docs, "PodDisruptionBudget")["nats"]["spec"]["maxUnavailable"] == 1
    assert "default-deny-ingress" in by_kind(docs, "NetworkPolicy")


def test_k8s_overlays_differ_where_they_should() -> None:
    dev, prod = render("dev"), render("prod")
    dev_cfg = next(d for d in dev if d["metadata"]["name"].startswith("hean-config"))
    prod_cfg = next(d for d in prod if d["metadata"]["name"].startswith("hean-config"))
    assert dev_cfg["data"]["HEAN_VENUE_MODE"] == "sim"
    assert prod_cfg["data"]["HEAN_VENUE_MODE"] == "live"
    assert "hean-sim" in by_kind(dev, "Deployment") and "hean-sim" not in by_kind(
        prod, "Deployment"
    )
    router_cfg = next(d for d in prod if d["metadata"]["name"].startswith("hean-order-router"))
    assert router_cfg["data"]["HEAN_LIVE"] == "false"  # live orders are an explicit change
    pdbs = by_kind(prod, "PodDisruptionBudget")
    assert {"funding-predictor", "liquidation-predictor"} <= set(pdbs)
    assert by_kind(prod, "Deployment")["funding-predictor"]["spec"]["replicas"] == 2
    assert "hean" in by_kind(prod, "ServiceMonitor")


def test_k8s_secret_from_password_files(tmp_path: Path) -> None:
    natsauth.make_secrets(tmp_path)
    doc = yaml.safe_load(natsauth.k8s_secret(tmp_path))
    assert doc["kind"] == "Secret" and doc["metadata"]["name"] == "hean-nats-auth"
    assert set(doc["data"]) == set(natsauth.users())


def test_k8s_nats_conf_is_accepted_by_nats_server(tmp_path: Path) -> None:
    """``nats-server -t``: the cluster config with the auth include, as the pods get it."""
    for f in ("nats.conf", "auth.conf"):
        text = (REPO / "deploy/k8s/base/nats" / f).read_text()
        text = text.replace("/data/jetstream", str(tmp_path / "js"))
        (tmp_path / f).write_text(text.replace("/var/run/nats", str(tmp_path)))
    env = {natsauth.password_env(u): "p4ssword" for u in natsauth.users()}
    out = subprocess.run(
        [nats_server_binary(), "-t", "-c", str(tmp_path / "nats.conf")],
        env={**env, "POD_NAME": "nats-0", "PATH": "/usr/bin:/bin"},
        capture_output=True,
        text=True,
    )
    assert out.returncode == 0, out.stdout + out.stderr
