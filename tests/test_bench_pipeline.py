"""The pipeline benchmark itself (``make bench``): the HEAN stages and the bare nats-py floor
relay every event end to end on a real nats-server under both fsync settings, and the report
counts what each stage saw and what each stream stored. Speed is measured by ``make bench``,
never asserted here."""

from __future__ import annotations

import pytest

from hean.bench import pipeline
from hean.bench.__main__ import GOAL_HOP, _goal_lines, _goal_runs, render_goal

EVENTS = 100


@pytest.fixture(scope="module")
def goal() -> dict:
    return _goal_runs(1.0, 1, rate=EVENTS)


@pytest.mark.parametrize("sync", ["always", "2m"])
@pytest.mark.parametrize("kind", ["hean", "floor"])
def test_every_event_reaches_the_router_and_is_counted(goal: dict, sync: str, kind: str) -> None:
    (report,) = goal[sync]["runs"][kind]
    assert report["stages"] == ("bare nats-py" if kind == "floor" else "hean")
    assert (report["sent"], report["lost"]) == (EVENTS, 0)
    assert report["reached"] == dict.fromkeys(("predictor", "strategy", "risk", "router"), EVENTS)
    # an approved signal is stored twice (its signal, its intent), both acked once on disk;
    # market data goes to the history stream, written after its ack
    assert report["stored"] == {
        "HEAN_SIGNALS": {"per_event": 1.0, "waits_for_disk": True},
        "HEAN_TRADING": {"per_event": 1.0, "waits_for_disk": True},
        "HEAN_HISTORY": {"per_event": 1.0, "waits_for_disk": False},
    }
    for hop in pipeline.HOPS:
        lat = report["hops"][hop]
        assert 0 < lat["p50_ms"] <= lat["p99_ms"], hop
    cpu = report["cpu_us_per_event"]
    assert set(cpu) == {
        "collector (offering)",
        "predictor",
        "strategy",
        "risk",
        "router",
        "nats-server",
    }
    assert all(v > 0 for v in cpu.values())

    summary = goal[sync]["summary"][kind]
    p99 = report["hops"][GOAL_HOP]["p99_ms"]
    assert summary["p99_ms"] == {"median": p99, "low": p99, "high": p99}
    assert summary["runs_meeting_goal"] == (1 if p99 < 5.0 else 0)
    assert (summary["runs"], summary["lost"]) == (1, 0)


def test_the_table_gives_each_setting_and_each_run(goal: dict) -> None:
    text = "\n".join(_goal_lines(goal))
    assert "fsync every write (as deployed)" in text and "fsync every 2 min" in text
    assert text.count(f"ms at {EVENTS}/s, fsync every") == 2  # the rate the runs were offered
    assert text.count("  hean  p99 median") == 2 and text.count("  floor p99 median") == 2
    assert text.count(f"lost 0 of {EVENTS}") == 4
    # ``python -m hean.bench --only goal`` heads the same lines with the disk's stored rate
    only = render_goal({"store": {"one_stream_msgs_per_s": 4321}, "goal": goal})
    assert only.splitlines()[0] == "one JetStream stream, fsync per message: 4,321 msgs/s stored"
    assert only.endswith(text)
