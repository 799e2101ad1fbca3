"""``python -m hean.bench`` (``make bench``): run every benchmark, write JSON and a table."""

from __future__ import annotations

import argparse
import importlib
import json
import os
import platform
import statistics
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


def _nats_benches(events: int, seconds: float, repeats: int) -> dict:
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
    out["goal"] = _goal_runs(seconds, repeats)
    return out


GOAL_RATE = 1000
GOAL_HOP = "strategy->risk"
GOAL_P99_MS = 5.0


def _goal_runs(seconds: float, repeats: int, rate: int = GOAL_RATE) -> dict:
    """The latency goal's runs: at 1,000/s, each stage its own process, HEAN's stages and the
    bare nats-py floor (``hean.bench.bare``) by turns, with nats-server fsyncing every write
    (as deployed) and every 2 minutes (the server's default: what the disk costs the tail).

    By turns and repeated, because on a shared machine a tail moves more from one run to the
    next than between the two: a single pair would compare the moments, not the code."""
    out: dict = {"rate": rate}
    for sync in ("always", "2m"):
        runs: dict[str, list[dict]] = {"hean": [], "floor": []}
        for i in range(repeats):
            for kind, runs_of_kind in runs.items():
                runs_of_kind.append(
                    _fresh(
                        lambda url, pid, k=kind, i=i: pipeline.run_rate_processes(
                            url, rate, seconds, f"{k}{i}", server_pid=pid, bare=k == "floor"
                        ),
                        sync,
                    )
                )
        out[sync] = {
            "runs": runs,
            "summary": {kind: _goal_summary(r) for kind, r in runs.items()},
        }
    return out


def _goal_summary(runs: list[dict]) -> dict:
    """Signal -> intent p50 and p99 across runs (median, lowest, highest), loss and cores."""
    p99 = sorted(r["hops"][GOAL_HOP]["p99_ms"] for r in runs)
    p50 = sorted(r["hops"][GOAL_HOP]["p50_ms"] for r in runs)
    return {
        "runs": len(runs),
        "p99_ms": {"median": statistics.median(p99), "low": p99[0], "high": p99[-1]},
        "p50_ms_median": statistics.median(p50),
        "runs_meeting_goal": sum(1 for v in p99 if v < GOAL_P99_MS),
        "lost": sum(r["lost"] for r in runs),
        "cores_median": statistics.median(r["cpu_cores_at_rate"] for r in runs),
    }


def main() -> int:
    parser = argparse.ArgumentParser(prog="python -m hean.bench", description=__doc__)
    parser.add_argument("--out", default="bench-results.json")
    parser.add_argument("--events", type=int, default=20_000)
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument(
        "--only",
        choices=["goal"],
        help="goal: only the latency goal's runs (and the disk's stored rate), about 3 minutes",
    )
    parser.add_argument(
        "--repeats", type=int, default=3, help="runs of each setting for the latency goal"
    )
    args = parser.parse_args()
    if args.repeats < 1:
        parser.error("--repeats must be at least 1")
    results: dict = {
        "machine": {"python": platform.python_version(), "cpus": os.cpu_count()},
        "started": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }
    if args.only == "goal":
        results["store"] = _fresh(lambda url, _: store.run(url))  # the disk's state
        results["goal"] = _goal_runs(args.seconds, args.repeats)
        Path(args.out).write_text(json.dumps(results, indent=2))
        print(render_goal(results))
        print(f"\nwritten to {args.out}")
        return 0
    results.update(_nats_benches(args.events, args.seconds, args.repeats))
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


def render_goal(r: dict) -> str:
    store_rate = r["store"]["one_stream_msgs_per_s"]
    head = f"one JetStream stream, fsync per message: {store_rate:,} msgs/s stored"
    return "\n".join([head, *_goal_lines(r["goal"])])


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
    lines += _goal_lines(r.get("goal", {}))
    for key in ("risk_decision", "funding_predictor_batch", "backtest_replay"):
        lines.append("")
        lines.append(f"{key}: {json.dumps(r[key])}")
    return "\n".join(lines)


def _goal_lines(goal: dict) -> list[str]:
    lines = []
    for sync, what in (("always", "fsync every write (as deployed)"), ("2m", "fsync every 2 min")):
        if sync not in goal:
            continue
        lines += [
            "",
            f"the goal: signal -> intent ({GOAL_HOP}) p99 < {GOAL_P99_MS:g} ms at"
            f" {goal['rate']:,}/s,"
            f" {what}; HEAN and the bare nats-py floor by turns",
        ]
        for kind, s in goal[sync]["summary"].items():
            p99 = s["p99_ms"]
            lines.append(
                f"  {kind:<5} p99 median {p99['median']} ms ({p99['low']} to {p99['high']} over"
                f" {s['runs']} runs, {s['runs_meeting_goal']} under the goal),"
                f" p50 median {s['p50_ms_median']} ms, lost {s['lost']},"
                f" {s['cores_median']} cores"
            )
        for kind, runs in goal[sync]["runs"].items():
            lines.append(f"  each {kind} run:")
            lines += ["  " + line for line in _pipeline_lines(runs)]
    return lines


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
