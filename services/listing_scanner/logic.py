"""Listing-scanner logic: diff each venue's market set against the known set, watch newcomers.

A market is new when it is absent from the known set (persisted in JetStream KV, restored by
``restore``). The venue's native listing time cross-checks the diff: a market that appears
in the diff but was listed more than ``announce_window_ms`` ago (a re-activated market, or
one that appeared while the scanner was down for days) is recorded without an announcement,
and one with a listing time in the future is left for a later scan. The very first scan of a
venue only announces markets whose native listing time is recent; everything else is taken
as the baseline.

Each announced listing is watched: its funding is sampled every ``watch_period_ms`` for
``watch_window_ms``; an absolute rate above ``spike_per_8h`` (per 8 h equivalent) raises one
alert per listing, and a summary (max, mean) is published when the window ends. The watch
state is persisted too, so a restart neither repeats an alert nor loses a watch.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime

import msgspec

from hean.marketdata.spreads import per_8h
from hean.marketdata.validate import MarketLike, checked
from hean.runtime.logic import Input, Output, ServiceLogic
from hean_proto import codec
from hean_proto.events import Alert, DeadLetter, Event, FundingRate, Listing, RiskState
from hean_proto.subjects import RISK_STATE
from hean_proto.types import TOKEN_PATTERN

MINUTE = 60_000
_TOKEN = re.compile(TOKEN_PATTERN)
HOUR = 60 * MINUTE


@dataclass(frozen=True)
class ScannerConfig:
    announce_window_ms: int = 24 * HOUR
    watch_period_ms: int = 15 * MINUTE
    watch_window_ms: int = 24 * HOUR
    spike_per_8h: float = 0.003
    """Absolute funding per 8 h equivalent above which a new listing raises an alert."""
    future_tolerance_ms: int = MINUTE


class KnownMarket(msgspec.Struct, frozen=True):
    first_seen_ms: int
    listed_ms: int | None = None


class Watch(msgspec.Struct, kw_only=True):
    venue: str
    symbol: str
    start_ms: int
    end_ms: int
    next_ms: int
    samples: list[tuple[int, float]] = msgspec.field(default_factory=list)
    """(time, rate per 8 h equivalent)."""
    spiked: bool = False


class ScannerState(msgspec.Struct):
    """Everything persisted: the known set per venue and the running watches."""

    known: dict[str, dict[str, KnownMarket]] = msgspec.field(default_factory=dict)
    watches: list[Watch] = msgspec.field(default_factory=list)
    risk_state: str | None = None
    """The last trading state seen, so a kill-switch change is alerted once across restarts."""


def _utc(ms: int | None) -> str:
    if ms is None:
        return "unknown"
    return datetime.fromtimestamp(ms / 1000, UTC).strftime("%Y-%m-%d %H:%M UTC")


@dataclass
class ListingScannerLogic(ServiceLogic):
    config: ScannerConfig = field(default_factory=ScannerConfig)

    name = "listing-scanner"
    tick_interval_s = 5.0

    def __post_init__(self) -> None:
        self.state = ScannerState()
        self.dirty = False
        self.rejected = 0
        self.scanned: dict[str, int] = {}

    # ------------------------------------------------------------------ persistence

    def dump(self) -> bytes:
        return msgspec.json.encode(self.state)

    def restore(self, data: bytes | None) -> None:
        """Load persisted state; unreadable state is refused loudly rather than guessed."""
        if data:
            self.state = msgspec.json.decode(data, type=ScannerState)
        self.dirty = False

    def knows(self, venue: str) -> bool:
        return venue in self.state.known

    # ------------------------------------------------------------------ scanning

    def on_markets(self, venue: str, markets: Iterable[MarketLike], now_ms: int) -> list[Output]:
        """Diff one venue's perpetuals against the known set; announce the recent newcomers."""
        c = self.config
        markets = list(markets)
        if not markets:
            # an empty answer is an outage, not a venue without markets: taking it as the
            # baseline would announce every market with no native time on the next scan
            return []
        baseline = venue not in self.state.known
        known = self.state.known.setdefault(venue, {})
        out: list[Output] = []
        if baseline:
            self.dirty = True
        for m in markets:
            if not _TOKEN.match(m.symbol or ""):
                self.rejected += 1
                out.append(self._dead(venue, m, "symbol is not a subject token", now_ms))
                continue
            if m.symbol in known or not m.active:
                continue
            listed = m.listed_ms
            if listed is not None and listed > now_ms + c.future_tolerance_ms:
                continue  # announced once it is live
            recent = listed is not None and now_ms - listed <= c.announce_window_ms
            known[m.symbol] = KnownMarket(now_ms, listed)
            self.dirty = True
            if baseline and not recent:
                continue
            if not baseline and listed is not None and not recent:
                continue
            out.extend(self._announce(venue, m, now_ms))
        self.scanned[venue] = now_ms
        return out

    def _dead(self, venue: str, m: object, reason: str, now_ms: int) -> DeadLetter:
        payload = repr(m).encode(errors="replace")
        return DeadLetter(
            ts_ms=now_ms,
            service=self.name,
            subject=f"venue:{venue}:markets",
            reason=reason,
            payload=payload[:65536],
            payload_size=len(payload),
            truncated=len(payload) > 65536,
        )

    def _announce(self, venue: str, m: MarketLike, now_ms: int) -> list[Output]:
        listing = Listing(
            ts_ms=now_ms,
            venue=venue,
            symbol=m.symbol,
            venue_symbol=m.venue_symbol or m.symbol,
            listed_ms=m.listed_ms,
            first_seen_ms=now_ms,
            interval_hours=m.interval_hours,
        )
        try:
            listing = checked(listing)  # type: ignore[assignment]
        except codec.DecodeError as exc:
            self.rejected += 1
            return [self._dead(venue, m, str(exc), now_ms)]
        alert = Alert(
            ts_ms=now_ms,
            key=f"listing:{venue}:{m.symbol}",
            kind="listing",
            severity="info",
            title=f"New perpetual {m.symbol} on {venue}",
            text=(
                f"{m.venue_symbol or m.symbol} listed {_utc(m.listed_ms)}, first seen "
                f"{_utc(now_ms)}; funding every {m.interval_hours or '?'} h. Watching its "
                f"funding every {self.config.watch_period_ms // MINUTE} min for "
                f"{self.config.watch_window_ms // HOUR} h."
            ),
        )
        self.state.watches.append(
            Watch(
                venue=venue,
                symbol=m.symbol,
                start_ms=now_ms,
                end_ms=now_ms + self.config.watch_window_ms,
                next_ms=now_ms,
            )
        )
        self.dirty = True
        return [listing, alert]

    # ------------------------------------------------------------------ watching

    def watches_due(self, now_ms: int) -> dict[str, list[str]]:
        """Venue -> symbols whose funding should be sampled now."""
        due: dict[str, list[str]] = {}
        for w in self.state.watches:
            if w.next_ms <= now_ms < w.end_ms:
                due.setdefault(w.venue, []).append(w.symbol)
        return due

    def on_watch_funding(self, venue: str, rates: Iterable[object], now_ms: int) -> list[Output]:
        out: list[Output] = []
        by_symbol: dict[str, FundingRate] = {}
        for r in rates:
            try:
                if not isinstance(r, FundingRate):
                    raise codec.DecodeError(f"expected FundingRate, got {type(r).__name__}")
                event = checked(r)
            except codec.DecodeError as exc:
                self.rejected += 1
                out.append(self._dead(venue, r, str(exc), now_ms))
                continue
            assert isinstance(event, FundingRate)
            by_symbol[event.symbol] = event
        for w in self.state.watches:
            if w.venue != venue or w.symbol not in by_symbol or now_ms >= w.end_ms:
                continue
            rate = by_symbol[w.symbol]
            value = per_8h(rate.rate, rate.interval_hours)
            w.samples.append((now_ms, value))
            w.next_ms = now_ms + self.config.watch_period_ms
            self.dirty = True
            if abs(value) > self.config.spike_per_8h and not w.spiked:
                w.spiked = True
                out.append(self._spike_alert(w, rate, value, now_ms))
        return out

    def _spike_alert(self, w: Watch, rate: FundingRate, value: float, now_ms: int) -> Alert:
        return Alert(
            ts_ms=now_ms,
            key=f"funding_spike:{w.venue}:{w.symbol}:{w.start_ms}",
            kind="funding_spike",
            severity="warning",
            title=f"Funding spike on new listing {w.symbol} ({w.venue})",
            text=(
                f"funding {rate.rate * 100:.4f} % per {rate.interval_hours:g} h = "
                f"{value * 100:.4f} % per 8 h (threshold {self.config.spike_per_8h * 100:.2f} %)"
            ),
        )

    def on_tick(self, now_ms: int) -> list[Output]:
        """Close the watches whose window ended, with their summary."""
        out: list[Output] = []
        remaining: list[Watch] = []
        for w in self.state.watches:
            if now_ms < w.end_ms:
                remaining.append(w)
                continue
            out.append(self._summary(w, now_ms))
        if len(remaining) != len(self.state.watches):
            self.state.watches = remaining
            self.dirty = True
        return out

    def _summary(self, w: Watch, now_ms: int) -> Alert:
        values = [v for _, v in w.samples]
        if values:
            peak = max(values, key=abs)
            mean = sum(values) / len(values)
            text = (
                f"{len(values)} samples over {(w.end_ms - w.start_ms) // HOUR} h: max "
                f"{peak * 100:.4f} %, mean {mean * 100:.4f} % per 8 h equivalent"
                f"{'; spiked' if w.spiked else ''}"
            )
        else:
            text = "no funding samples were obtained during the watch window"
        return Alert(
            ts_ms=now_ms,
            key=f"listing_summary:{w.venue}:{w.symbol}:{w.start_ms}",
            kind="listing_summary",
            severity="info",
            title=f"Funding summary for new listing {w.symbol} ({w.venue})",
            text=text,
        )

    # ------------------------------------------------------------------ kill switch

    def inputs(self) -> list[Input]:
        return [Input(RISK_STATE.pattern(), (RiskState,), durable="listing-scanner-risk")]

    def on_event(self, event: Event, now_ms: int) -> list[Output]:
        """Turn a change of the trading state (kill switch) into an alert for humans."""
        if not isinstance(event, RiskState):
            return []
        previous = self.state.risk_state
        if event.state == previous:
            return []
        self.state.risk_state = event.state
        self.dirty = True
        if previous is None and event.state == "ACTIVE":
            return []  # first sight of a normal state is not news
        severity = "info" if event.state == "ACTIVE" else "critical"
        return [
            Alert(
                ts_ms=now_ms,
                key=f"risk:{event.state}:{event.seq}:{event.since_ms}",
                kind="risk",
                severity=severity,
                title=f"Trading state {previous or 'unknown'} -> {event.state}",
                text=(
                    f"{event.reason} (equity {event.equity_usd:,.2f} USD, drawdown "
                    f"{event.drawdown_frac * 100:.2f} %, daily loss "
                    f"{event.daily_loss_frac * 100:.2f} %)"
                ),
            )
        ]

    # ------------------------------------------------------------------ health

    def readiness(self, now_ms: int) -> dict[str, bool]:
        return {"markets_scanned": bool(self.scanned)}

    def snapshot(self) -> dict[str, object]:
        return {
            "known": {v: len(s) for v, s in self.state.known.items()},
            "watching": [f"{w.venue}:{w.symbol}" for w in self.state.watches],
            "last_scan_ms": dict(self.scanned),
            "rejected": self.rejected,
        }
