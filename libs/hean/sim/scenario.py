"""The scenario file that drives the simulator: markets, speed, seed, replay and scripted events.

A scenario is YAML or JSON. Times of scripted events are seconds of simulated time after the
start, so that a scenario means the same thing at any speed factor.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

import msgspec

VENUES = ("binance", "bybit", "okx")


class SymbolSpec(msgspec.Struct, frozen=True, kw_only=True):
    """One perpetual quoted on one or more venues."""

    base: str
    price: float = 100.0
    """Starting mark price in USDT (replay uses the recorded price where there is one)."""
    daily_vol: float = 0.03
    """Standard deviation of the daily log return."""
    venues: dict[str, float] = msgspec.field(
        default_factory=lambda: {"binance": 8.0, "bybit": 8.0, "okx": 8.0}
    )
    """Venue -> funding interval in hours."""
    mean_rate: float = 0.0001
    """Long-run funding rate per 8 h (fraction); each venue adds its own persistent offset."""
    listed_at_s: float | None = None
    """Seconds after the start at which the listing appears; None means listed long ago."""
    oi_usd: float = 50_000_000.0
    """Open interest over all its venues in USD at ``price``; held in position units from then
    on, so its USD value moves with the price as a venue's does."""
    book_depth_usd: float = 2_000_000.0
    """Notional on each side within the first ten levels."""


class ScriptedEvent(msgspec.Struct, frozen=True, kw_only=True):
    """Something that happens at a given simulated time."""

    at_s: float
    kind: Literal["listing", "funding_spike", "cascade", "outage", "divergence", "build_up"]
    venue: str = ""
    """Empty means every venue."""
    symbol: str = ""
    """Base asset (``BTC``) or canonical symbol (``BTCUSDT``)."""
    duration_s: float = 3600.0
    rate: float = 0.0
    """funding_spike / divergence: the funding rate (fraction per interval) to force.
    build_up: the rate the funding ramps to by the end of the event (0 leaves funding alone)."""
    drop_frac: float = 0.1
    """cascade: price move as a fraction (positive: down)."""
    oi_drop_frac: float = 0.2
    oi_rise_frac: float = 0.0
    """build_up: open-interest growth over the event as a fraction (0.5 is +50 %); like
    ``oi_drop_frac`` it applies to position units, which is how the simulator keeps open
    interest (its USD value also moves with the price)."""
    rise_frac: float = 0.0
    """build_up: price drift over the event as a fraction (positive: up)."""
    liquidations: int = 40
    mode: Literal["http_429", "http_5xx", "timeout", "malformed", "ws_drop"] = "http_5xx"
    """outage: how the venue misbehaves."""
    interval_hours: float = 8.0
    """listing: funding interval of the new perpetual."""
    price: float = 1.0
    """listing: its first price."""


class Account(msgspec.Struct, frozen=True, kw_only=True):
    """API credentials the simulator accepts, with the starting balance."""

    api_key: str = "sim-key"
    secret: str = "sim-secret"
    passphrase: str = "sim-passphrase"
    balance_usdt: float = 100_000.0


class Scenario(msgspec.Struct, frozen=True, kw_only=True):
    seed: int = 7
    start_ms: int | None = None
    """Simulated time at the start; None means the wall clock at the start (replay: its start)."""
    speed: float = 1.0
    """Simulated seconds per wall-clock second."""
    step_s: float = 60.0
    """Resolution of the price and funding processes."""
    symbols: list[SymbolSpec] = msgspec.field(default_factory=list)
    events: list[ScriptedEvent] = msgspec.field(default_factory=list)
    accounts: list[Account] = msgspec.field(default_factory=lambda: [Account()])
    replay_dir: str | None = None
    """A data directory (HEAN_DATA_DIR layout): funding settlements replayed at their times."""
    replay_start: str | None = None
    """ISO date where the replay starts; default 30 days before the data ends."""
    taker_fee: float = 0.0005
    maker_fee: float = 0.0002
    max_rate: float = 0.02
    """Venue cap on the funding rate per interval."""


DEFAULT_SYMBOLS = [
    SymbolSpec(base="BTC", price=65_000.0, daily_vol=0.025, mean_rate=0.0001, oi_usd=8e9),
    SymbolSpec(base="ETH", price=3_200.0, daily_vol=0.035, mean_rate=0.00012, oi_usd=4e9),
    SymbolSpec(
        base="SOL",
        price=150.0,
        daily_vol=0.05,
        mean_rate=0.00015,
        venues={"binance": 4.0, "bybit": 8.0, "okx": 8.0},
        oi_usd=1.5e9,
    ),
    SymbolSpec(
        base="DOGE",
        price=0.15,
        daily_vol=0.06,
        mean_rate=0.0002,
        venues={"binance": 8.0, "bybit": 4.0, "okx": 8.0},
        oi_usd=6e8,
    ),
    SymbolSpec(
        base="HYPE",
        price=35.0,
        daily_vol=0.07,
        mean_rate=0.0003,
        venues={"binance": 4.0, "bybit": 1.0},
        oi_usd=3e8,
    ),
]


def default_scenario(seed: int = 7, speed: float = 1.0) -> Scenario:
    """Five perpetuals with mixed intervals on three venues: what a fresh machine runs."""
    return Scenario(seed=seed, speed=speed, symbols=list(DEFAULT_SYMBOLS))


class ScenarioError(ValueError):
    """A scenario file that cannot be used; the message names the file and the field."""


def load_scenario(path: str | Path) -> Scenario:
    p = Path(path)
    try:
        raw = p.read_bytes()
    except OSError as exc:
        raise ScenarioError(f"{p}: {exc.strerror}") from None
    try:
        if p.suffix in (".yaml", ".yml"):
            sc = msgspec.yaml.decode(raw, type=Scenario)
        else:
            sc = msgspec.json.decode(raw, type=Scenario)
    except (msgspec.ValidationError, msgspec.DecodeError) as exc:
        raise ScenarioError(f"{p}: {exc}") from None
    validate(sc, str(p))
    if not sc.symbols and not sc.replay_dir:
        sc = msgspec.structs.replace(sc, symbols=list(DEFAULT_SYMBOLS))
    return sc


def validate(sc: Scenario, where: str = "scenario") -> None:
    if sc.speed <= 0:
        raise ScenarioError(f"{where}: speed must be > 0, got {sc.speed}")
    for s in sc.symbols:
        bad = [v for v in s.venues if v not in VENUES]
        if bad:
            raise ScenarioError(f"{where}: symbol {s.base}: unknown venue(s) {bad}")
        if s.price <= 0:
            raise ScenarioError(f"{where}: symbol {s.base}: price must be > 0")
    for e in sc.events:
        if e.venue and e.venue not in VENUES:
            raise ScenarioError(f"{where}: event at {e.at_s}s: unknown venue {e.venue!r}")
        if e.kind == "build_up":
            if e.duration_s <= 0:
                raise ScenarioError(f"{where}: build_up at {e.at_s}s: duration_s must be > 0")
            if e.oi_rise_frac <= -1 or e.rise_frac <= -1:
                raise ScenarioError(
                    f"{where}: build_up at {e.at_s}s: oi_rise_frac and rise_frac must be > -1"
                )
