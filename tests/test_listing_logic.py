"""Listing diff, native-time cross-check, watch, spike and summary, persistence of state."""

from __future__ import annotations

from dataclasses import dataclass

from hean_proto.events import Alert, DeadLetter, FundingRate, Listing
from hean_services.listing_scanner.logic import ListingScannerLogic, ScannerConfig

NOW = 1_767_225_600_000
MIN = 60_000
H = 60 * MIN


@dataclass(frozen=True)
class Market:
    venue: str
    symbol: str
    listed_ms: int | None = None
    venue_symbol: str = ""
    interval_hours: float | None = 8.0
    taker_fee: float = 0.0005
    active: bool = True


def kinds(out) -> list[str]:
    return [f"{type(e).__name__}:{getattr(e, 'kind', '')}" for e in out]


def test_first_scan_is_a_baseline_that_announces_only_recent_native_listings() -> None:
    lg = ListingScannerLogic()
    out = lg.on_markets(
        "bybit",
        [
            Market("bybit", "BTCUSDT", NOW - 900 * 24 * H),
            Market("bybit", "OLDUSDT", None),
            Market("bybit", "NEWUSDT", NOW - 2 * H),
        ],
        NOW,
    )
    assert kinds(out) == ["Listing:", "Alert:listing"]
    assert out[0].symbol == "NEWUSDT" and out[0].listed_ms == NOW - 2 * H
    assert lg.watches_due(NOW) == {"bybit": ["NEWUSDT"]}


def test_an_empty_answer_is_not_a_baseline() -> None:
    lg = ListingScannerLogic()
    assert lg.on_markets("okx", [], NOW) == []
    assert not lg.knows("okx")
    out = lg.on_markets("okx", [Market("okx", "AUSDT", None), Market("okx", "BUSDT", None)], NOW)
    assert out == [] and lg.knows("okx")


def test_diff_cross_checked_with_native_listing_time() -> None:
    lg = ListingScannerLogic()
    lg.on_markets("okx", [Market("okx", "BTCUSDT", NOW - 900 * 24 * H)], NOW)
    out = lg.on_markets(
        "okx",
        [
            Market("okx", "BTCUSDT", NOW - 900 * 24 * H),
            Market("okx", "FRESHUSDT", NOW - 10 * MIN),  # new and recent
            Market("okx", "NOTIMEUSDT", None),  # new, no native time: trust the diff
            Market("okx", "REVIVEDUSDT", NOW - 30 * 24 * H),  # new to us but old: no alert
            Market("okx", "SOONUSDT", NOW + 2 * H),  # pre-listing: not yet
            Market("okx", "BAD.SYM", NOW),
        ],
        NOW + MIN,
    )
    announced = [e.symbol for e in out if isinstance(e, Listing)]
    assert announced == ["FRESHUSDT", "NOTIMEUSDT"]
    assert sum(isinstance(e, DeadLetter) for e in out) == 1
    assert lg.on_markets("okx", [Market("okx", "FRESHUSDT", NOW - 10 * MIN)], NOW + 2 * MIN) == []
    later = lg.on_markets("okx", [Market("okx", "SOONUSDT", NOW + 2 * H)], NOW + 3 * H)
    assert [e.symbol for e in later if isinstance(e, Listing)] == ["SOONUSDT"]


def rate(symbol: str, r: float, interval: float) -> FundingRate:
    return FundingRate(ts_ms=NOW, venue="bybit", symbol=symbol, rate=r, interval_hours=interval)


def test_watch_spike_once_and_summary_at_window_end() -> None:
    cfg = ScannerConfig(watch_period_ms=15 * MIN, watch_window_ms=H)
    lg = ListingScannerLogic(config=cfg)
    lg.on_markets("bybit", [Market("bybit", "BTCUSDT", NOW - 900 * 24 * H)], NOW)
    lg.on_markets("bybit", [Market("bybit", "NEWUSDT", NOW, interval_hours=4)], NOW)
    # 0.1 % per 4 h = 0.2 % per 8 h: below 0.3 %
    assert lg.on_watch_funding("bybit", [rate("NEWUSDT", 0.001, 4)], NOW) == []
    assert lg.watches_due(NOW + MIN) == {}
    assert lg.watches_due(NOW + 15 * MIN) == {"bybit": ["NEWUSDT"]}
    # 0.2 % per 4 h = 0.4 % per 8 h: spike
    spike = lg.on_watch_funding("bybit", [rate("NEWUSDT", -0.002, 4)], NOW + 15 * MIN)
    assert kinds(spike) == ["Alert:funding_spike"]
    again = lg.on_watch_funding("bybit", [rate("NEWUSDT", -0.003, 4)], NOW + 30 * MIN)
    assert again == []  # one spike alert per listing
    bad = lg.on_watch_funding("bybit", [rate("NEWUSDT", float("nan"), 4)], NOW + 31 * MIN)
    assert isinstance(bad[0], DeadLetter)
    assert lg.on_tick(NOW + 59 * MIN) == []
    (summary,) = lg.on_tick(NOW + H)
    assert isinstance(summary, Alert) and summary.kind == "listing_summary"
    assert "max -0.6000 %" in summary.text  # -0.3 % per 4 h
    assert "mean -0.2667 %" in summary.text  # (0.2 - 0.4 - 0.6) / 3
    assert lg.on_tick(NOW + 2 * H) == []


def test_state_survives_a_restart() -> None:
    lg = ListingScannerLogic()
    lg.on_markets("binance", [Market("binance", "AUSDT", NOW - 400 * 24 * H)], NOW)
    lg.on_markets("binance", [Market("binance", "BUSDT", NOW)], NOW + MIN)
    lg.on_watch_funding(
        "binance",
        [FundingRate(ts_ms=NOW, venue="binance", symbol="BUSDT", rate=0.01, interval_hours=8)],
        NOW + MIN,
    )
    saved = lg.dump()
    fresh = ListingScannerLogic()
    fresh.restore(saved)
    assert fresh.knows("binance") and not fresh.knows("okx")
    out = fresh.on_markets(
        "binance",
        [Market("binance", s, NOW) for s in ("AUSDT", "BUSDT", "CUSDT")],
        NOW + 2 * MIN,
    )
    assert [e.symbol for e in out if isinstance(e, Listing)] == ["CUSDT"]
    # the spike flag persisted: no second alert for BUSDT
    spike = fresh.on_watch_funding(
        "binance",
        [FundingRate(ts_ms=NOW, venue="binance", symbol="BUSDT", rate=0.02, interval_hours=8)],
        NOW + 20 * MIN,
    )
    assert spike == []


def test_kill_switch_changes_become_alerts_once() -> None:
    from hean_proto.events import RiskState

    def rs(state: str, seq: int) -> RiskState:
        return RiskState(
            ts_ms=NOW,
            state=state,
            reason="drawdown 12 % > 10 %",
            seq=seq,
            equity_usd=8800,
            high_water_usd=10_000,
            drawdown_frac=0.12,
            since_ms=NOW + seq,
        )

    lg = ListingScannerLogic()
    assert lg.on_event(rs("ACTIVE", 1), NOW) == []
    assert lg.on_event(rs("ACTIVE", 1), NOW) == []  # liveness beacon
    (halt,) = lg.on_event(rs("HALTED", 2), NOW)
    assert halt.kind == "risk" and halt.severity == "critical"
    assert "ACTIVE -> HALTED" in halt.title
    assert lg.on_event(rs("HALTED", 2), NOW) == []
    restarted = ListingScannerLogic()
    restarted.restore(lg.dump())
    assert restarted.on_event(rs("HALTED", 2), NOW) == []
    (resume,) = restarted.on_event(rs("ACTIVE", 3), NOW)
    assert resume.severity == "info"
