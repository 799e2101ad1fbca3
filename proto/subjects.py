"""The subject map: the one place where NATS subject strings are spelled.

Subjects run from general to specific (``hean.md.funding.bybit.BTCUSDT``) so that wildcards
select by kind, venue or symbol. Every publisher derives its subject from the event through
``subject_for`` and every subscriber builds its pattern with ``pattern``; no other module
writes a subject string by hand.
"""

from __future__ import annotations

import functools
import re
from dataclasses import dataclass

from hean_proto import events as ev
from hean_proto.types import TOKEN_PATTERN

ROOT = "hean"
_TOKEN = re.compile(TOKEN_PATTERN)


class SubjectError(ValueError):
    """A value that cannot be used as a subject token."""


def token(value: str) -> str:
    """Return ``value`` if it is safe as one subject token, else raise ``SubjectError``."""
    if not isinstance(value, str) or not _TOKEN.match(value):
        raise SubjectError(f"not a valid subject token: {value!r}")
    return value


@dataclass(frozen=True)
class Route:
    """A family of subjects: a fixed prefix followed by named variable tokens."""

    prefix: str
    params: tuple[str, ...] = ()

    def subject(self, *values: str) -> str:
        if len(values) != len(self.params):
            raise SubjectError(f"{self.prefix} takes {self.params}, got {values!r}")
        return ".".join((self.prefix, *(token(v) for v in values)))

    def pattern(self, *values: str) -> str:
        """A subscription pattern; missing trailing params become ``>``, ``*`` stays a wildcard."""
        parts = [self.prefix]
        for v in values:
            parts.append(v if v == "*" else token(v))
        if len(values) < len(self.params):
            parts.append(">")
        return ".".join(parts)


FUNDING = Route(f"{ROOT}.md.funding", ("venue", "symbol"))
OPEN_INTEREST = Route(f"{ROOT}.md.oi", ("venue", "symbol"))
PRICE = Route(f"{ROOT}.md.price", ("venue", "symbol"))
BOOK = Route(f"{ROOT}.md.book", ("venue", "symbol"))
LIQUIDATION = Route(f"{ROOT}.md.liq", ("venue", "symbol"))
SPREAD = Route(f"{ROOT}.md.spread", ("symbol",))
LISTING = Route(f"{ROOT}.listing", ("venue", "symbol"))
ALERT = Route(f"{ROOT}.alert", ("kind",))
PRED_FUNDING = Route(f"{ROOT}.pred.funding", ("venue", "symbol"))
PRED_CASCADE = Route(f"{ROOT}.pred.cascade", ("venue", "symbol"))
SIGNAL = Route(f"{ROOT}.signal", ("strategy", "symbol"))
RISK_DECISION = Route(f"{ROOT}.risk.decision", ("strategy", "verdict"))
RISK_STATE = Route(f"{ROOT}.risk.state")
ORDER_APPROVED = Route(f"{ROOT}.order.approved", ("strategy",))
ORDER_UPDATE = Route(f"{ROOT}.order.update", ("venue", "symbol"))
FILL = Route(f"{ROOT}.fill", ("venue", "symbol"))
POSITION = Route(f"{ROOT}.position", ("venue", "symbol"))
FUNDING_PAYMENT = Route(f"{ROOT}.payment.funding", ("venue", "symbol"))
DEAD_LETTER = Route(f"{ROOT}.dlq", ("service",))
HEARTBEAT = Route(f"{ROOT}.heartbeat", ("service",))
CONTROL = Route(f"{ROOT}.control", ("target",))
SERVICE_ENDPOINT = Route(f"{ROOT}.svc", ("service", "endpoint"))

ROUTES: dict[type[ev.Event], Route] = {
    ev.FundingRate: FUNDING,
    ev.OpenInterest: OPEN_INTEREST,
    ev.PriceTick: PRICE,
    ev.BookTop: BOOK,
    ev.Liquidation: LIQUIDATION,
    ev.FundingSpread: SPREAD,
    ev.Listing: LISTING,
    ev.Alert: ALERT,
    ev.FundingForecast: PRED_FUNDING,
    ev.CascadeForecast: PRED_CASCADE,
    ev.Signal: SIGNAL,
    ev.RiskDecision: RISK_DECISION,
    ev.RiskState: RISK_STATE,
    ev.OrderIntent: ORDER_APPROVED,
    ev.OrderUpdate: ORDER_UPDATE,
    ev.Fill: FILL,
    ev.Position: POSITION,
    ev.FundingPayment: FUNDING_PAYMENT,
    ev.DeadLetter: DEAD_LETTER,
    ev.Heartbeat: HEARTBEAT,
}


def subject_for(event: ev.Event, target: str | None = None) -> str:
    """The subject an event is published on, derived from its own fields."""
    if isinstance(event, ev.ControlCommand):
        return CONTROL.subject(target or "all")
    route = ROUTES.get(type(event))
    if route is None:
        raise SubjectError(f"no route for {type(event).__name__}")
    return route.subject(*(getattr(event, name) for name in route.params))


def matches(pattern: str, subject: str) -> bool:
    """NATS wildcard matching: ``*`` is one token, a trailing ``>`` is one or more."""
    p = pattern.split(".")
    s = subject.split(".")
    for i, tok in enumerate(p):
        if tok == ">":
            return len(s) > i
        if i >= len(s):
            return False
        if tok != "*" and tok != s[i]:
            return False
    return len(p) == len(s)


# ----------------------------------------------------------------------------- JetStream


@dataclass(frozen=True)
class StreamSpec:
    """A JetStream stream: what must not be lost, how long it is kept, how it is written."""

    name: str
    subjects: tuple[str, ...]
    max_age_s: float
    duplicate_window_s: float = 120.0
    description: str = ""
    durable_each_write: bool = True
    """Acknowledged only once on disk (fsynced as the server is configured). False for public
    market data that can be fetched again: a single-replica stream is then written in the
    background (JetStream ``persist_mode: async``), and a crash may lose its last writes."""


STREAMS: tuple[StreamSpec, ...] = (
    StreamSpec(
        "HEAN_HISTORY",
        (FUNDING.pattern(), OPEN_INTEREST.pattern(), LISTING.pattern()),
        max_age_s=400 * 86400,
        description="funding settlements and snapshots, read back by predictors and backtests",
        durable_each_write=False,
    ),
    StreamSpec(
        "HEAN_TRADING",
        (
            ORDER_APPROVED.pattern(),
            ORDER_UPDATE.pattern(),
            FILL.pattern(),
            POSITION.pattern(),
            FUNDING_PAYMENT.pattern(),
            RISK_STATE.prefix,
            CONTROL.pattern(),
        ),
        max_age_s=365 * 86400,
        description="the ledger: intents, orders, fills, positions, funding, risk state",
    ),
    StreamSpec(
        "HEAN_DECISIONS",
        (RISK_DECISION.pattern("*", "rejected"),),
        max_age_s=365 * 86400,
        description="risk's rejections; an approval is recorded by its intent in the "
        "ledger, so that an approved signal costs one stored write, not two",
    ),
    StreamSpec(
        "HEAN_SIGNALS",
        (SIGNAL.pattern(),),
        max_age_s=365 * 86400,
        description="strategy signals awaiting risk; apart from the ledger so the two are "
        "stored side by side (each stream fsyncs its writes in turn)",
    ),
    StreamSpec(
        "HEAN_ALERTS",
        (ALERT.pattern(),),
        max_age_s=30 * 86400,
        description="alerts for delivery to Slack, e-mail and webhooks",
    ),
    StreamSpec(
        "HEAN_DLQ",
        (DEAD_LETTER.pattern(),),
        max_age_s=30 * 86400,
        description="messages a service refused, kept whole for inspection and replay",
    ),
)

KV_RISK = "hean_risk"
KV_LISTINGS = "hean_listings"
KV_ROUTER = "hean_router"


@functools.lru_cache(maxsize=65_536)
def stream_for(subject: str) -> StreamSpec | None:
    """The stream that captures ``subject``, if any (asked for every publish: cached)."""
    for spec in STREAMS:
        if any(matches(p, subject) for p in spec.subjects):
            return spec
    return None


def msg_id_for(event: ev.Event) -> str | None:
    """The dedupe id of events that must be stored once even when published twice."""
    if isinstance(event, ev.Signal | ev.OrderIntent):
        return f"{type(event).__name__}:{event.id}"
    if isinstance(event, ev.RiskDecision):
        return f"RiskDecision:{event.signal_id}"
    if isinstance(event, ev.OrderUpdate):
        return f"OrderUpdate:{event.client_order_id}:{event.status}:{event.filled_qty}"
    if isinstance(event, ev.Fill):
        return f"Fill:{event.fill_id}"
    if isinstance(event, ev.FundingRate) and event.settled and event.funding_time_ms:
        return f"FundingRate:{event.venue}:{event.symbol}:{event.funding_time_ms}"
    if isinstance(event, ev.FundingPayment):
        return f"FundingPayment:{event.venue}:{event.symbol}:{event.funding_time_ms}"
    if isinstance(event, ev.Alert):
        return f"Alert:{event.key}"
    return None
