"""The risk engine: checks every signal, watches equity, latches HALTED.

Pure: events and the current time in, events out. The service binds it to NATS and persists
``record`` (state, high-water mark, positions) in JetStream KV; the backtester runs it as is.

Every check fails closed: a missing price, a stale venue, an unknown state or a value that
is not a finite number rejects the signal with a reason.

A spot leg is priced at the venue's index price (the ``index`` of the perpetual's
``PriceTick``: the venue's composite of spot prices), fresh and not stale like any other
quote. Positions are kept per instrument (``venue:symbol`` for the perpetual,
``venue:symbol:spot`` for the spot holding), and a spot sell may only sell what is held:
spot is not borrowed, so a sell that would open a short is rejected. HALTED is left only through
``resume``, which the service exposes behind a token; no timer ever releases it.
"""

from __future__ import annotations

import math
from collections import OrderedDict, deque
from collections.abc import Iterable
from dataclasses import dataclass, field

import msgspec

from hean.execution import ids
from hean.execution.ledger import position_key, split_key
from hean.risk.limits import RiskLimits
from hean.runtime.logic import Output, Publish
from hean_proto.events import (
    Alert,
    BookTop,
    ControlCommand,
    Fill,
    IntentLeg,
    OrderIntent,
    OrderUpdate,
    Position,
    PriceTick,
    RiskDecision,
    RiskState,
    Signal,
)
from hean_proto.subjects import CONTROL

DAY_MS = 86_400_000
DUST_FRAC = 0.05
"""An exit that would leave less than this part of a position closes all of it."""
EPS = 1e-9
ROUTER = "order-router"
SERVICE = "risk-killswitch"


class PositionView(msgspec.Struct, kw_only=True):
    qty: float = 0.0
    entry_price: float | None = None
    mark_price: float | None = None
    realized_usd: float = 0.0
    funding_usd: float = 0.0
    fees_usd: float = 0.0

    def net_usd(self, mark: float | None) -> float:
        mark = mark or self.mark_price
        unrealized = 0.0
        if self.qty and self.entry_price and mark:
            unrealized = self.qty * (mark - self.entry_price)
        return self.realized_usd + self.funding_usd - self.fees_usd + unrealized


class RiskRecord(msgspec.Struct, kw_only=True):
    """What must survive a restart: the latch above all."""

    state: str = "ACTIVE"
    reason: str = "start"
    since_ms: int = 0
    seq: int = 0
    high_water_usd: float = 0.0
    day: int = -1
    day_start_equity_usd: float = 0.0
    loss_streak: int = 0
    positions: dict[str, PositionView] = msgspec.field(default_factory=dict)


@dataclass
class _Quote:
    price: float
    ts_ms: int
    stale: bool


@dataclass
class _Pending:
    venue: str
    symbol: str
    notional_usd: float
    expires_ms: int
    instrument: str = "perp"
    side: str = "buy"
    qty: float = 0.0


@dataclass
class _Protection:
    """Stop-loss and take-profit of one approved intent, enforced from live marks."""

    intent: OrderIntent
    filled: dict[str, tuple[float, float]] = field(default_factory=dict)  # cid -> (qty, avg)


class RiskEngine:
    def __init__(self, limits: RiskLimits | None = None, record: RiskRecord | None = None):
        self.limits = limits or RiskLimits()
        self.record = record or RiskRecord()
        if self.record.high_water_usd <= 0:
            self.record.high_water_usd = self.limits.capital_usd
        self.quotes: dict[tuple[str, str, str], _Quote] = {}
        """(venue, symbol, instrument) -> latest price: the mark or book mid for the
        perpetual, the venue's index for spot."""
        self.venue_seen: dict[str, _Quote] = {}
        self.pending: dict[str, _Pending] = {}
        self._pending_usd: dict[tuple[str, str], float] = {}
        """(instrument, symbol) -> notional of ``pending``, kept as it changes: the exposure
        check runs on every signal and must not walk every order in flight."""
        self.rejections: deque[int] = deque()
        self.protections: dict[str, _Protection] = {}
        self.decided: dict[str, None] = {}
        self.recent_outputs: OrderedDict[str, list[Output]] = OrderedDict()
        self.last_publish_ms = 0
        self.dirty = False
        self.counts: dict[str, int] = {}

    # ------------------------------------------------------------------ state

    @property
    def state(self) -> str:
        return self.record.state

    def equity(self) -> float:
        total = self.limits.capital_usd
        for key, pos in self.record.positions.items():
            quote = self.quotes.get(split_key(key))
            total += pos.net_usd(quote.price if quote else None)
        return total

    def drawdown(self, equity: float) -> float:
        hwm = self.record.high_water_usd
        return max(0.0, (hwm - equity) / hwm) if hwm > 0 else 0.0

    def daily_loss(self, equity: float) -> float:
        start = self.record.day_start_equity_usd
        return max(0.0, (start - equity) / start) if start > 0 else 0.0

    def state_event(self, now_ms: int) -> RiskState:
        self.record.seq += 1
        self.last_publish_ms = now_ms
        equity = self.equity()
        return RiskState(
            ts_ms=now_ms,
            state=self.record.state,  # type: ignore[arg-type]
            reason=self.record.reason,
            seq=self.record.seq,
            equity_usd=equity,
            high_water_usd=self.record.high_water_usd,
            drawdown_frac=min(self.drawdown(equity), 1.0),
            daily_loss_frac=min(self.daily_loss(equity), 1.0),
            since_ms=self.record.since_ms,
        )

    def _set_state(self, state: str, reason: str, now_ms: int) -> None:
        self.record.state = state
        self.record.reason = reason
        self.record.since_ms = now_ms
        self.dirty = True

    def halt(self, reason: str, now_ms: int, issued_by: str = SERVICE) -> list[Output]:
        """Stop trading: latch HALTED, cancel open orders, maybe flatten, alert."""
        if self.record.state == "HALTED":
            return []
        self._set_state("HALTED", reason, now_ms)
        self.pending.clear()
        self._pending_usd.clear()
        out: list[Output] = [
            self.state_event(now_ms),
            Publish(
                ControlCommand(
                    ts_ms=now_ms, command="cancel_all", issued_by=issued_by, reason=reason
                ),
                CONTROL.subject(ROUTER),
            ),
        ]
        if self.limits.flatten_on_halt:
            out.append(
                Publish(
                    ControlCommand(
                        ts_ms=now_ms, command="flatten", issued_by=issued_by, reason=reason
                    ),
                    CONTROL.subject(ROUTER),
                )
            )
        out.append(
            Alert(
                ts_ms=now_ms,
                key=f"risk:halted:{now_ms}",
                kind="risk",
                severity="critical",
                title="trading HALTED",
                text=f"{reason}; open orders cancelled"
                + ("; positions flattened" if self.limits.flatten_on_halt else "")
                + ". Resume only with `hean risk resume`.",
            )
        )
        return out

    def resume(self, now_ms: int, issued_by: str, reason: str = "") -> list[Output]:
        """Operator resume: the current equity becomes the new high-water mark and day start.

        Without that reset the drawdown that caused the halt would halt again at once.
        """
        equity = self.equity()
        self.record.high_water_usd = equity
        self.record.day_start_equity_usd = equity
        self.record.loss_streak = 0
        self.rejections.clear()
        self._set_state(
            "ACTIVE", f"resumed by {issued_by}" + (f": {reason}" if reason else ""), now_ms
        )
        return [
            self.state_event(now_ms),
            Publish(
                ControlCommand(ts_ms=now_ms, command="resume", issued_by=issued_by, reason=reason),
                CONTROL.subject(ROUTER),
            ),
            Alert(
                ts_ms=now_ms,
                key=f"risk:resumed:{now_ms}",
                kind="risk",
                severity="warning",
                title="trading resumed",
                text=f"resumed by {issued_by} at equity {equity:.2f} USD",
            ),
        ]

    def set_reducing(self, reason: str, now_ms: int) -> list[Output]:
        if self.record.state != "ACTIVE":
            return []
        self._set_state("REDUCING", reason, now_ms)
        return [self.state_event(now_ms)]

    # ------------------------------------------------------------------ market data

    def on_price(self, tick: PriceTick, now_ms: int) -> list[Output]:
        self._quote(tick.venue, tick.symbol, tick.mark, tick.ts_ms, tick.stale)
        if tick.index is not None:
            self._quote(tick.venue, tick.symbol, tick.index, tick.ts_ms, tick.stale, "spot")
        return self._watch_equity(now_ms) + self._protect(tick.venue, tick.symbol, now_ms)

    def on_book(self, book: BookTop, now_ms: int) -> list[Output]:
        if book.bids and book.asks:
            mid = (book.bids[0].price + book.asks[0].price) / 2
            self._quote(book.venue, book.symbol, mid, book.ts_ms, book.stale)
        else:
            self.venue_seen[book.venue] = _Quote(0.0, book.ts_ms, True)
        return []

    def _quote(
        self,
        venue: str,
        symbol: str,
        price: float,
        ts_ms: int,
        stale: bool,
        instrument: str = "perp",
    ) -> None:
        known = self.quotes.get((venue, symbol, instrument))
        if known is not None and ts_ms < known.ts_ms:
            return
        self.quotes[(venue, symbol, instrument)] = _Quote(price, ts_ms, stale)
        self.venue_seen[venue] = _Quote(price, ts_ms, stale)

    # ------------------------------------------------------------------ trading events

    def on_position(self, pos: Position, now_ms: int) -> list[Output]:
        key = position_key(pos.venue, pos.symbol, pos.instrument)
        old = self.record.positions.get(key)
        view = PositionView(
            qty=pos.qty,
            entry_price=pos.entry_price,
            mark_price=pos.mark_price,
            realized_usd=pos.realized_usd,
            funding_usd=pos.funding_usd,
            fees_usd=pos.fees_usd,
        )
        self.record.positions[key] = view
        self.dirty = True
        out: list[Output] = []
        if old is not None:
            delta = view.realized_usd - old.realized_usd
            if delta < -EPS:
                self.record.loss_streak += 1
            elif delta > EPS:
                self.record.loss_streak = 0
            if self.record.loss_streak >= self.limits.max_loss_streak:
                out += self.halt(f"loss streak of {self.record.loss_streak} trades", now_ms)
        return out + self._watch_equity(now_ms)

    def on_fill(self, fill: Fill, now_ms: int) -> list[Output]:
        prot = self.protections.get(fill.intent_id)
        if prot is not None and any(
            leg.client_order_id == fill.client_order_id for leg in prot.intent.legs
        ):
            qty, avg = prot.filled.get(fill.client_order_id, (0.0, 0.0))
            total = qty + fill.qty
            prot.filled[fill.client_order_id] = (total, (qty * avg + fill.qty * fill.price) / total)
        return []

    def on_order_update(self, update: OrderUpdate, now_ms: int) -> list[Output]:
        if update.status in ("filled", "canceled", "rejected", "unwound", "unknown"):
            self._unpend(update.client_order_id)
        if update.status == "unwound":
            self.protections.pop(update.intent_id, None)
        if update.status != "rejected" or update.reason.startswith("refused"):
            return []
        self.rejections.append(now_ms)
        while self.rejections and now_ms - self.rejections[0] > self.limits.rejection_window_ms:
            self.rejections.popleft()
        if len(self.rejections) >= self.limits.max_rejections:
            return self.halt(
                f"{len(self.rejections)} order rejections within "
                f"{self.limits.rejection_window_ms // 1000} s",
                now_ms,
            )
        return []

    def on_tick(self, now_ms: int) -> list[Output]:
        for cid in [c for c, p in self.pending.items() if p.expires_ms <= now_ms]:
            self._unpend(cid)
        out = self._watch_equity(now_ms)
        if now_ms - self.last_publish_ms >= self.limits.state_publish_ms:
            out.append(self.state_event(now_ms))
        return out

    def _watch_equity(self, now_ms: int) -> list[Output]:
        equity = self.equity()
        if not math.isfinite(equity):
            return self.halt("equity is not a finite number", now_ms)
        day = now_ms // DAY_MS
        if day != self.record.day:
            self.record.day = day
            self.record.day_start_equity_usd = equity
            self.dirty = True
        if self.record.state == "HALTED":
            return []
        if equity > self.record.high_water_usd:
            self.record.high_water_usd = equity
            self.dirty = True
        dd = self.drawdown(equity)
        if dd >= self.limits.max_drawdown_frac:
            return self.halt(
                f"drawdown {dd:.1%} >= {self.limits.max_drawdown_frac:.0%} "
                f"(equity {equity:.2f}, high-water {self.record.high_water_usd:.2f})",
                now_ms,
            )
        daily = self.daily_loss(equity)
        if daily >= self.limits.max_daily_loss_frac:
            return self.halt(
                f"daily loss {daily:.1%} >= {self.limits.max_daily_loss_frac:.0%}", now_ms
            )
        return []

    # ------------------------------------------------------------------ stops on positions

    def _protect(self, venue: str, symbol: str, now_ms: int) -> list[Output]:
        out: list[Output] = []
        if self.record.state == "HALTED":
            return out
        for intent_id, prot in list(self.protections.items()):
            legs = {leg.client_order_id: leg for leg in prot.intent.legs}
            if not prot.filled or not any(
                (leg.venue, leg.symbol) == (venue, symbol) for leg in legs.values()
            ):
                continue
            pnl, base = 0.0, 0.0
            for cid, (qty, avg) in prot.filled.items():
                leg = legs[cid]
                quote = self.quotes.get((leg.venue, leg.symbol, leg.instrument))
                if quote is None:
                    break
                sign = 1.0 if leg.side == "buy" else -1.0
                pnl += sign * qty * (quote.price - avg)
                base = max(base, qty * avg)
            else:
                if base <= 0:
                    continue
                frac = pnl / base
                sl, tp = prot.intent.stop_loss_frac, prot.intent.take_profit_frac
                why = None
                if sl and frac <= -sl:
                    why = f"stop-loss {frac:.2%} <= -{sl:.2%}"
                elif tp and frac >= tp:
                    why = f"take-profit {frac:.2%} >= {tp:.2%}"
                if why:
                    del self.protections[intent_id]
                    out.append(self._exit_intent(prot, why, now_ms))
        return out

    def _forget_protections(self, strategy: str, symbol: str, legs: list[IntentLeg]) -> None:
        """An approved exit closes the unit: its stop-loss and take-profit watch ends with it."""
        closing = {(leg.venue, leg.symbol, leg.instrument) for leg in legs}
        for intent_id, prot in list(self.protections.items()):
            watched = {(leg.venue, leg.symbol, leg.instrument) for leg in prot.intent.legs}
            same_unit = prot.intent.strategy == strategy and prot.intent.symbol == symbol
            if same_unit and watched <= closing:
                del self.protections[intent_id]

    def _exit_intent(self, prot: _Protection, why: str, now_ms: int) -> OrderIntent:
        intent = prot.intent
        legs = []
        for leg in intent.legs:
            qty, avg = prot.filled.get(leg.client_order_id, (0.0, 0.0))
            if qty <= EPS:
                continue
            legs.append(
                IntentLeg(
                    client_order_id=ids.derived_order_id("x", leg.client_order_id),
                    venue=leg.venue,
                    symbol=leg.symbol,
                    side="sell" if leg.side == "buy" else "buy",
                    qty=qty,
                    notional_usd=qty * avg,
                    instrument=leg.instrument,
                    reduce_only=True,
                )
            )
        self.counts["exits"] = self.counts.get("exits", 0) + 1
        return OrderIntent(
            ts_ms=now_ms,
            id=ids.intent_id(f"exit:{intent.id}"),
            signal_id=ids.stop_exit_signal_id(intent.signal_id),
            strategy=intent.strategy,
            symbol=intent.symbol,
            legs=legs,
            reduce_only=True,
        )

    # ------------------------------------------------------------------ signals

    DECIDED_KEPT = 100_000
    OUTPUTS_KEPT = 10_000

    def on_signal(self, signal: Signal, now_ms: int) -> list[Output]:
        """Decide a signal once. A signal seen again (a redelivery) gets its recent decision
        again rather than nothing: if publishing it failed the first time, this publishes it,
        and the store drops what it already holds (same Nats-Msg-Id); the state is not
        touched twice."""
        if signal.id in self.decided:
            self.counts["duplicate"] = self.counts.get("duplicate", 0) + 1
            return list(self.recent_outputs.get(signal.id, ()))
        self.remember_decided((signal.id,))
        out = self._decide(signal, now_ms)
        self.recent_outputs[signal.id] = out
        while len(self.recent_outputs) > self.OUTPUTS_KEPT:
            self.recent_outputs.popitem(last=False)
        return list(out)

    def remember_decided(self, signal_ids: Iterable[str]) -> None:
        """Signals decided here or by an earlier process (read back from the store at
        start): seen again, they are duplicates, not new signals. The oldest are forgotten
        beyond ``DECIDED_KEPT``."""
        for signal_id in signal_ids:
            self.decided[signal_id] = None
        while len(self.decided) > self.DECIDED_KEPT:
            self.decided.pop(next(iter(self.decided)))

    def _decide(self, signal: Signal, now_ms: int) -> list[Output]:
        try:
            reasons, legs = self._check(signal, now_ms)
        except Exception as exc:  # fail closed on anything unexpected
            reasons, legs = [f"internal error: {exc!r}"], []
        if reasons:
            self.counts["rejected"] = self.counts.get("rejected", 0) + 1
            return [
                RiskDecision(
                    ts_ms=now_ms,
                    signal_id=signal.id,
                    strategy=signal.strategy,
                    symbol=signal.symbol,
                    approved=False,
                    reasons=reasons,
                )
            ]
        intent = OrderIntent(
            ts_ms=now_ms,
            id=ids.intent_id(signal.id),
            signal_id=signal.id,
            strategy=signal.strategy,
            symbol=signal.symbol,
            legs=legs,
            reduce_only=signal.reduce_only,
            stop_loss_frac=signal.stop_loss_frac,
            take_profit_frac=signal.take_profit_frac,
        )
        for leg in legs:
            self._pend(
                leg.client_order_id,
                _Pending(
                    leg.venue,
                    leg.symbol,
                    leg.notional_usd,
                    now_ms + self.limits.pending_ttl_ms,
                    leg.instrument,
                    leg.side,
                    leg.qty,
                ),
            )
        if not signal.reduce_only and (signal.stop_loss_frac or signal.take_profit_frac):
            self.protections[intent.id] = _Protection(intent)
        if signal.reduce_only:
            self._forget_protections(signal.strategy, signal.symbol, legs)
        self.counts["approved"] = self.counts.get("approved", 0) + 1
        return [
            RiskDecision(
                ts_ms=now_ms,
                signal_id=signal.id,
                strategy=signal.strategy,
                symbol=signal.symbol,
                approved=True,
                intent_id=intent.id,
            ),
            intent,
        ]

    def _check(self, signal: Signal, now_ms: int) -> tuple[list[str], list[IntentLeg]]:
        lim = self.limits
        reasons: list[str] = []
        state = self.record.state
        if state == "HALTED":
            reasons.append(f"trading state HALTED ({self.record.reason})")
        elif state == "REDUCING" and not signal.reduce_only:
            reasons.append("trading state REDUCING: only reduce-only signals")
        elif state not in ("ACTIVE", "REDUCING"):
            reasons.append(f"unknown trading state {state!r}")
        age = now_ms - signal.ts_ms
        if age > lim.max_signal_age_ms:
            reasons.append(f"signal expired ({age} ms old)")
        if not signal.reduce_only:
            if signal.confidence < lim.min_confidence:
                reasons.append(f"confidence {signal.confidence:.2f} < {lim.min_confidence:.2f}")
            if lim.require_stop_loss and not signal.stop_loss_frac:
                reasons.append("no stop-loss")
            if signal.size_frac > lim.max_trade_frac:
                reasons.append(
                    f"size {signal.size_frac:.2%} of capital > limit {lim.max_trade_frac:.2%}"
                )
        if not signal.legs:
            reasons.append("signal has no legs")
        equity = self.equity()
        if not math.isfinite(equity) or equity <= 0:
            reasons.append(f"no equity ({equity})")
            return reasons, []
        legs: list[IntentLeg] = []
        new_exposure: dict[str, float] = {}
        for i, leg in enumerate(signal.legs):
            key = position_key(leg.venue, leg.symbol, leg.instrument)
            seen = self.venue_seen.get(leg.venue)
            if seen is None or seen.stale or now_ms - seen.ts_ms > lim.max_data_age_ms:
                reasons.append(f"venue {leg.venue} unhealthy (no fresh data)")
                continue
            quote = self.quotes.get((leg.venue, leg.symbol, leg.instrument))
            what = "spot price (venue index)" if leg.instrument == "spot" else "market data"
            if quote is None:
                reasons.append(f"{key}: no {what}")
                continue
            quote_age = now_ms - quote.ts_ms
            if quote.stale or quote_age > lim.max_data_age_ms:
                reasons.append(f"{key}: {what} stale ({quote_age} ms old)")
                continue
            if not math.isfinite(quote.price) or quote.price <= 0:
                reasons.append(f"{key}: unusable price {quote.price}")
                continue
            notional = signal.size_frac * leg.weight * equity
            qty = notional / quote.price
            if signal.reduce_only:
                position = self.record.positions.get(key, PositionView())
                held = position.qty
                reduces = (held > 0 and leg.side == "sell") or (held < 0 and leg.side == "buy")
                if not reduces:
                    reasons.append(f"{key}: reduce-only leg has nothing to reduce")
                    continue
                # an exit names the capital its entry used: count units at the entry price,
                # so a move since then does not leave part of the position open
                qty = notional / (position.entry_price or quote.price)
                if qty <= 0 or qty >= abs(held) * (1.0 - DUST_FRAC):
                    qty = abs(held)
                qty = min(qty, abs(held))
                notional = qty * quote.price
            if not math.isfinite(qty) or qty <= 0:
                reasons.append(f"{key}: quantity {qty} not positive")
                continue
            if leg.instrument == "spot" and leg.side == "sell":
                held = self.spot_held(leg.venue, leg.symbol)
                if qty > held * (1.0 + EPS):
                    reasons.append(
                        f"{key}: spot sell of {qty:.8g} would open a short (holds {held:.8g}; "
                        "spot is not borrowed)"
                    )
                    continue
            new_exposure[leg.symbol] = new_exposure.get(leg.symbol, 0.0) + notional
            legs.append(
                IntentLeg(
                    client_order_id=ids.leg_order_id(signal.id, i),
                    venue=leg.venue,
                    symbol=leg.symbol,
                    side=leg.side,
                    qty=qty,
                    notional_usd=notional,
                    instrument=leg.instrument,
                    reduce_only=signal.reduce_only,
                )
            )
        if not signal.reduce_only and not reasons:
            by_symbol, gross = self.exposure()
            for symbol, add in new_exposure.items():
                total = by_symbol.get(symbol, 0.0) + add
                if total > lim.max_symbol_exposure_frac * equity + EPS:
                    reasons.append(
                        f"{symbol} exposure {total:.2f} USD > limit "
                        f"{lim.max_symbol_exposure_frac:.0%} of equity"
                    )
            total = gross + sum(new_exposure.values())
            if total > lim.max_gross_exposure_frac * equity + EPS:
                reasons.append(
                    f"gross exposure {total:.2f} USD > limit "
                    f"{lim.max_gross_exposure_frac:.0%} of equity"
                )
        return reasons, legs

    def _pend(self, client_order_id: str, p: _Pending) -> None:
        self._unpend(client_order_id)
        self.pending[client_order_id] = p
        key = (p.instrument, p.symbol)
        self._pending_usd[key] = self._pending_usd.get(key, 0.0) + p.notional_usd

    def _unpend(self, client_order_id: str) -> None:
        p = self.pending.pop(client_order_id, None)
        if p is None:
            return
        if not self.pending:  # nothing in flight: drop any rounding left in the sums
            self._pending_usd.clear()
            return
        key = (p.instrument, p.symbol)
        left = self._pending_usd.get(key, 0.0) - p.notional_usd
        if left <= EPS:
            self._pending_usd.pop(key, None)
        else:
            self._pending_usd[key] = left

    def spot_held(self, venue: str, symbol: str) -> float:
        """Spot base units held on a venue, less the spot sells approved but not yet settled."""
        pos = self.record.positions.get(position_key(venue, symbol, "spot"))
        held = pos.qty if pos else 0.0
        for p in self.pending.values():
            if (p.venue, p.symbol, p.instrument, p.side) == (venue, symbol, "spot", "sell"):
                held -= p.qty
        return max(held, 0.0)

    def exposure_by_instrument(self) -> dict[str, dict[str, float]]:
        """Gross notional per instrument and canonical symbol: positions plus pending orders."""
        out: dict[str, dict[str, float]] = {}
        for key, pos in self.record.positions.items():
            venue, symbol, instrument = split_key(key)
            quote = self.quotes.get((venue, symbol, instrument))
            price = (quote.price if quote else None) or pos.mark_price or pos.entry_price or 0.0
            row = out.setdefault(instrument, {})
            row[symbol] = row.get(symbol, 0.0) + abs(pos.qty) * price
        for (instrument, symbol), usd in self._pending_usd.items():
            row = out.setdefault(instrument, {})
            row[symbol] = row.get(symbol, 0.0) + usd
        return out

    def exposure(self) -> tuple[dict[str, float], float]:
        """Gross notional per canonical symbol over all instruments, and in total.

        A spot-hedged unit counts both legs, as a unit hedged on another venue does: the
        limits cap what can be lost when a hedge fails, not the net delta.
        """
        by_symbol: dict[str, float] = {}
        for row in self.exposure_by_instrument().values():
            for symbol, usd in row.items():
                by_symbol[symbol] = by_symbol.get(symbol, 0.0) + usd
        return by_symbol, sum(by_symbol.values())

    def snapshot(self) -> dict[str, object]:
        equity = self.equity()
        by_symbol, gross = self.exposure()
        return {
            "state": self.record.state,
            "reason": self.record.reason,
            "since_ms": self.record.since_ms,
            "equity_usd": round(equity, 2),
            "high_water_usd": round(self.record.high_water_usd, 2),
            "drawdown_frac": round(self.drawdown(equity), 6),
            "loss_streak": self.record.loss_streak,
            "recent_rejections": len(self.rejections),
            "gross_exposure_usd": round(gross, 2),
            "exposure_usd": {k: round(v, 2) for k, v in by_symbol.items()},
            "exposure_by_instrument_usd": {
                i: {k: round(v, 2) for k, v in row.items()}
                for i, row in self.exposure_by_instrument().items()
            },
            "protected_intents": len(self.protections),
            "venues_seen_ms": {v: q.ts_ms for v, q in self.venue_seen.items() if not q.stale},
            "counts": dict(self.counts),
        }
