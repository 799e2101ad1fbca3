"""PnL attribution from what the live services published during a replay.

The router's ledger is the book of record (positions, realised and unrealised PnL, fees,
funding). Slippage is inside the fill prices there; it is taken out again by comparing each
fill with the recorded price the synthetic book was built around, so that

    pnl = funding + price_pnl - fees - slippage

where ``price_pnl`` is the ledger's realised plus unrealised PnL with slippage added back
(what the positions made at the recorded prices). Funding and fees are also summed from the
``FundingPayment`` and ``Fill`` events, which must agree with the ledger.
"""

from __future__ import annotations

import math
import re
from collections import Counter
from dataclasses import dataclass, field

from hean.backtest.engine import Replay
from hean.execution import ids
from hean_proto.events import Fill


@dataclass
class IntentRow:
    """One executed unit: an entry, an exit, a stop exit, an unwind or the final flatten."""

    intent_id: str
    ts_ms: int
    kind: str
    strategy: str
    symbol: str
    reason: str = ""
    fills: list[Fill] = field(default_factory=list)
    fees_usd: float = 0.0
    slippage_usd: float = 0.0
    notional_usd: float = 0.0
    status: str = ""
    unwound: bool = False
    unwind_cost_usd: float = 0.0


@dataclass
class Accounts:
    capital: float
    funding_usd: float
    fees_usd: float
    slippage_usd: float
    realized_usd: float
    unrealized_usd: float
    turnover_usd: float
    rows: list[IntentRow]
    rejections: dict[str, int]
    refusals: dict[str, int]
    leg_failures: int
    unwinds: int
    unwind_cost_usd: float
    late_legs: int
    late_leg_move_usd: float
    """What late legs' price moves cost (positive) or gained (negative); part of price PnL."""
    halts: list[str]
    funding_from_payments: float
    fees_from_fills: float

    @property
    def pnl_usd(self) -> float:
        return self.realized_usd + self.unrealized_usd + self.funding_usd - self.fees_usd

    @property
    def price_pnl_usd(self) -> float:
        return self.realized_usd + self.unrealized_usd + self.slippage_usd

    @property
    def trades(self) -> int:
        """Units opened and kept: entries with fills that were not unwound."""
        return sum(1 for r in self.rows if r.kind == "entry" and r.fills and not r.unwound)


def _reason_key(reason: str) -> str:
    return re.sub(r"-?\d[\d.,]*%?", "N", reason)[:80]


def slippage_of(fill: Fill, ref: float | None) -> float:
    """What the fill paid beyond the recorded price: positive is a cost."""
    if ref is None:
        return 0.0
    return (fill.price - ref) * fill.qty if fill.side == "buy" else (ref - fill.price) * fill.qty


def accounts(r: Replay, capital: float) -> Accounts:
    rec = r.record
    totals = r.stack.router.book.ledger.totals()
    signals = {s.id: s for s in rec.signals}
    rows: dict[str, IntentRow] = {}
    for intent in rec.intents:
        sig = signals.get(intent.signal_id)
        if ids.is_stop_exit(intent.signal_id):
            kind = "stop exit"
        elif intent.reduce_only:
            kind = "exit"
        else:
            kind = "entry"
        rows[intent.id] = IntentRow(
            intent.id,
            intent.ts_ms,
            kind,
            intent.strategy,
            intent.symbol,
            sig.reason if sig else "risk stop-loss/take-profit",
        )
    venues = [*r.stack.venues.values(), *r.stack.spot_venues.values()]
    late = {cid: leg for v in venues for cid, leg in v.late.items()}
    slippage = turnover = late_move = 0.0
    for f in rec.fills:
        row = rows.get(f.intent_id)
        if row is None:
            row = rows[f.intent_id] = IntentRow(
                f.intent_id, f.ts_ms, "flatten", "", f.symbol, "end of backtest: flatten"
            )
        refs = r.stack.spot_refs if f.instrument == "spot" else r.ref_prices
        ref = refs.get((f.venue, f.symbol, f.ts_ms))
        leg = late.get(f.client_order_id)
        if leg is not None and ref is not None:
            # the move during the delay is price, not slippage: measure slippage from there
            moved = ref * math.exp(leg.move)
            late_move += slippage_of(f, ref) - slippage_of(f, moved)
            ref = moved
        s = slippage_of(f, ref)
        row.fills.append(f)
        row.fees_usd += f.fee_usd
        row.slippage_usd += s
        row.notional_usd += f.qty * f.price
        slippage += s
        turnover += f.qty * f.price
        if f.client_order_id.startswith("U"):
            row.unwound = True
    leg_failures = 0
    refusals: Counter[str] = Counter()
    for u in rec.updates:
        row = rows.get(u.intent_id)
        if u.status == "rejected":
            if u.reason.startswith("refused"):
                refusals[_reason_key(u.reason)] += 1
            else:
                leg_failures += 1
        if row is not None and u.status in ("filled", "canceled", "rejected", "unwound"):
            row.status = u.status if not row.status or u.status == "unwound" else row.status
    unwinds = 0
    unwind_cost = 0.0
    for row in rows.values():
        if row.unwound:
            unwinds += 1
            row.unwind_cost_usd = row.fees_usd + row.slippage_usd
            unwind_cost += row.unwind_cost_usd
    rejections: Counter[str] = Counter()
    for d in rec.decisions:
        if not d.approved:
            for why in d.reasons:
                rejections[_reason_key(why)] += 1
    return Accounts(
        capital=capital,
        funding_usd=totals["funding_usd"],
        fees_usd=totals["fees_usd"],
        slippage_usd=slippage,
        realized_usd=totals["realized_usd"],
        unrealized_usd=totals["unrealized_usd"],
        turnover_usd=turnover,
        rows=sorted(rows.values(), key=lambda x: (x.ts_ms, x.intent_id)),
        rejections=dict(sorted(rejections.items())),
        refusals=dict(sorted(refusals.items())),
        leg_failures=leg_failures,
        unwinds=unwinds,
        unwind_cost_usd=unwind_cost,
        late_legs=len(late),
        late_leg_move_usd=late_move,
        halts=[f"{h.ts_ms}: {h.reason}" for h in rec.halts],
        funding_from_payments=sum(p.amount_usd for p in rec.payments),
        fees_from_fills=sum(f.fee_usd for f in rec.fills),
    )
