"""``python -m hean.bench`` (``make bench``): run every benchmark, write JSON and a table."""

from __future__ import annotations

import argparse
import importlib
import json
import os
import platform
import tempfile
import time
from pathlib import Path

from hean.bench import bus, pipeline, store
from hean.natsserver import NatsServer
from hean.runtime import eventloop


def _optional(module: str, func: str):
    try:
        return getattr(importlib.import_module(module), func)
    except (ModuleNotFoundError, AttributeError):
        return None


def _fresh(run, sync_interval: str = "always") -> dict:
    """One pipeline run on its own nats-server: a durable consumer would otherwise replay the
    signals an earlier run left in the stream before this run's. ``run`` takes the server's
    URL and its process id (for its CPU time)."""
    with (
        tempfile.TemporaryDirectory() as tmp,
        NatsServer(store_dir=Path(tmp), sync_interval=sync_interval) as server,
    ):
        return eventloop.run(run(server.url, server.proc.pid if server.proc else None))


def _nats_benches(events: int, seconds: float) -> dict:
    out = {"bus": _fresh(lambda url, _: bus.run(url, events))}
    out["store"] = _fresh(lambda url, _: store.run(url))
    out["store_paced"] = [
        _fresh(lambda url, _, n=n: store.paced_latency(url, n))
        for n in (1, len(store.PACED_SUBJECTS))
    ]
    out["pipeline"] = [
        _fresh(lambda url, _, r=rate: pipeline.run_rate(url, r, seconds, "r"))
        for rate in (1000, 5000)
    ]
    out["pipeline_processes"] = [
        _fresh(
            lambda url, pid, r=rate: pipeline.run_rate_processes(
                url, r, seconds, "p", server_pid=pid
            )
        )
        for rate in (200, 1000)
    ]
    # risk deciding only from the stored copy of each signal: the disk's fsync in between
    out["pipeline_processes_stored_only"] = [
        _fresh(
            lambda url, pid: pipeline.run_rate_processes(
                url, 1000, seconds, "o", early=False, server_pid=pid
            )
        )
    ]
    # the same at 1,000/s with the server's default fsync interval: what the pipeline does when
    # the disk's fsync rate is not the limit (durability then comes from replicas, not fsync)
    out["pipeline_processes_sync_2m"] = [
        _fresh(
            lambda url, pid: pipeline.run_rate_processes(url, 1000, seconds, "s", server_pid=pid),
            "2m",
        )
    ]
    return out


def main() -> int:
    parser = argparse.ArgumentParser(prog="python -m hean.bench", description=__doc__)
    parser.add_argument("--out", default="bench-results.json")
    parser.add_argument("--events", type=int, default=20_000)
    parser.add_argument("--seconds", type=float, default=5.0)
    args = parser.parse_args()
    results: dict = {
        "machine": {"python": platform.python_version(), "cpus": os.cpu_count()},
        "started": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }
    results.update(_nats_benches(args.events, args.seconds))
    for key, module, func in (
        ("risk_decision", "hean.bench.risk", "risk_decisions"),
        ("funding_predictor_batch", "hean.bench.models", "funding_batch"),
        ("backtest_replay", "hean.backtest.bench", "replay_throughput"),
    ):
        fn = _optional(module, func)
        results[key] = fn() if fn else {"skipped": f"{module}.{func} not available"}
    Path(args.out).write_text(json.dumps(results, indent=2))
    print(render(results))
    print(f"\nwritten to {args.out}")
    return 0


def render(r: dict) -> str:
    b = r["bus"]
    lines = [
        "bus throughput (same events, same run)",
        f"  raw nats-py publish+subscribe      {b['raw_nats_events_per_s']:>10,} events/s"
        " (reference)",
        f"  HEAN bus + runtime                 {b['hean_runtime_events_per_s']:>10,} events/s"
        f"  ratio {b['ratio']:.2f} (goal >= {b['goal_ratio']})",
        "",
        "JetStream stored messages per second (fsync per message, as deployed)",
        f"  one stream                         {r['store']['one_stream_msgs_per_s']:>10,} msgs/s",
        f"  two streams side by side           {r['store']['two_streams_msgs_per_s']:>10,} msgs/s",
        "",
        "publish -> delivery through the bus at 1,000/s per stream, fsync per message, no service",
        *(
            f"  {p['streams']} stream(s) at once: delivered {p['delivered']} of {p['sent']}, "
            f"p50 {p['p50_ms']} ms  p99 {p['p99_ms']} ms"
            for p in r.get("store_paced", [])
        ),
        "",
        "pipeline collector->predictor->strategy->risk->router over NATS, one process",
    ]
    lines += _pipeline_lines(r["pipeline"])
    lines += ["", "the same pipeline, each stage in its own process (as the services run)"]
    lines += _pipeline_lines(r.get("pipeline_processes", []))
    lines += ["", "the same at 1,000/s, risk deciding each signal only once it is stored"]
    lines += _pipeline_lines(r.get("pipeline_processes_stored_only", []))
    lines += ["", "the same, each stage in its own process, nats-server fsync every 2 min"]
    lines += _pipeline_lines(r.get("pipeline_processes_sync_2m", []))
    for key in ("risk_decision", "funding_predictor_batch", "backtest_replay"):
        lines.append("")
        lines.append(f"{key}: {json.dumps(r[key])}")
    return "\n".join(lines)


def _pipeline_lines(runs: list[dict]) -> list[str]:
    r_cpus = os.cpu_count()
    lines = []
    for p in runs:
        lines.append(
            f"  target {p['target_events_per_s']:>5}/s: offered {p['offered_events_per_s']}/s, "
            f"delivered {p['delivered_events_per_s']}/s, lost {p['lost']} of {p['sent']}"
        )
        if p["lost"]:
            lines.append(f"      reached per stage: {p['reached']}")
        stored = p.get("stored") or {}
        if stored:
            lines.append(
                "      stored per event: "
                + ", ".join(
                    f"{name} {v['per_event']:g} "
                    + ("(acked once written)" if v["waits_for_disk"] else "(written after ack)")
                    for name, v in stored.items()
                )
            )
        for hop, lat in p["hops"].items():
            lines.append(f"      {hop:<22} p50 {lat['p50_ms']} ms  p99 {lat['p99_ms']} ms")
        if p.get("cpu_us_per_event"):
            lines.append(
                f"      CPU per event ({p['cpu_cores_at_rate']} cores at this rate, "
                f"{r_cpus} on the machine): "
                + ", ".join(f"{k} {v} us" for k, v in p["cpu_us_per_event"].items())
            )
    return lines


if __name__ == "__main__":
    raise SystemExit(main())
