"""`hean up` with per-service NATS users, scraped by a real Prometheus (Debian's package).

Every service must come up ready under its own NATS user (no permission violation in the
server log), the CLI must work with the operator user, and Prometheus must see every
service's /metrics with the scrape config of deploy/prometheus/prometheus.yml (targets moved
to the local ports).
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import urllib.parse
from pathlib import Path

import httpx
import pytest
import yaml

from hean import natsauth
from hean.config import free_port
from hean.registry import SERVICES
from tests.proc_helpers import HEAN, free_port_range, http_status, run_hean, wait_until

pytestmark = pytest.mark.e2e
REPO = Path(__file__).resolve().parents[1]


def _prometheus_config(tmp_path: Path, run: dict) -> Path:
    conf = yaml.safe_load((REPO / "deploy/prometheus/prometheus.yml").read_text())
    conf["global"]["scrape_interval"] = "1s"
    job = next(j for j in conf["scrape_configs"] if j["job_name"] == "hean")
    for target in job["static_configs"]:
        name = target["labels"]["service"]
        target["targets"] = [f"127.0.0.1:{run['services'][name]['port']}"]
    conf["scrape_configs"] = [job]
    path = tmp_path / "prometheus" / "prometheus.yml"
    path.parent.mkdir(parents=True)
    shutil.copy(REPO / "deploy/prometheus/alerts.yml", path.parent / "alerts.yml")
    path.write_text(yaml.safe_dump(conf))
    return path


def _query(base: str, expr: str) -> list[dict]:
    r = httpx.get(f"{base}/api/v1/query?query={urllib.parse.quote(expr)}", timeout=5)
    r.raise_for_status()
    return r.json()["data"]["result"]


@pytest.mark.skipif(shutil.which("prometheus") is None, reason="prometheus not installed")
def test_hean_up_with_nats_users_scraped_by_prometheus(tmp_path: Path) -> None:
    state = tmp_path / "state"
    env = dict(os.environ)
    for key in ("HEAN_NATS_URL", "HEAN_NATS_USER", "HEAN_NATS_PASSWORD_FILE"):
        env.pop(key, None)
    env.update(
        HEAN_STATE_DIR=str(state),
        HEAN_PORT_BASE=str(free_port_range(12)),
        HEAN_UP_NATS_PORT="0",
        HEAN_UP_NATS_AUTH="true",
    )
    names = [s.name for s in SERVICES]
    up = subprocess.Popen([*HEAN, "up"], env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    prom = None
    try:

        def run() -> dict:
            return json.loads((state / "run.json").read_text())

        def all_ready() -> bool:
            services = run()["services"]
            return all(
                http_status(f"http://127.0.0.1:{services[n]['port']}/readyz") == 200 for n in names
            )

        wait_until(all_ready, 150, "all seven services ready under their NATS users")

        # the server refuses a connection without a user, so the services really logged in
        anonymous = run_hean(["tap", "hean.>", "--count", "1", "--timeout", "5"], env)
        assert anonymous.returncode != 0
        cli_env = dict(
            env,
            HEAN_NATS_USER=natsauth.OPERATOR,
            HEAN_NATS_PASSWORD_FILE=str(
                natsauth.password_path(state / "nats-auth", natsauth.OPERATOR)
            ),
        )
        tap = run_hean(["tap", "hean.heartbeat.>", "--count", "7", "--timeout", "30"], cli_env)
        assert tap.returncode == 0, tap.stderr
        assert sum(" Heartbeat " in ln for ln in tap.stdout.splitlines()) == 7

        port = free_port()
        prom = subprocess.Popen(
            [
                "prometheus",
                f"--config.file={_prometheus_config(tmp_path, run())}",
                f"--storage.tsdb.path={tmp_path / 'prometheus' / 'data'}",
                f"--web.listen-address=127.0.0.1:{port}",
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        base = f"http://127.0.0.1:{port}"

        def scraped() -> bool:
            up_series = _query(base, 'up{job="hean"} == 1')
            ready = _query(base, "hean_service_ready == 1")
            return len(up_series) == len(names) and len(ready) == len(names)

        wait_until(scraped, 60, "Prometheus sees every service up and ready")
        services = {r["metric"]["service"] for r in _query(base, 'up{job="hean"}')}
        assert services == set(names)
        rules = httpx.get(f"{base}/api/v1/rules", timeout=5).json()["data"]["groups"]
        assert {g["name"] for g in rules} >= {"hean-services", "hean-trading"}

        log = (state / "logs" / "nats-server.log").read_text()
        violations = [ln for ln in log.splitlines() if "Violation" in ln and "user:" in ln]
        assert violations == [], violations[:5]
    finally:
        if prom is not None:
            prom.terminate()
            prom.wait(20)
        up.send_signal(signal.SIGTERM)
        try:
            up.wait(60)
        except subprocess.TimeoutExpired:
            up.kill()
            up.wait()
