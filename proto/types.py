"""Constrained scalar types shared by every event.

The constraints are enforced whenever bytes are decoded or a dict is converted with
``msgspec.convert``; that is how a NaN price or an unknown symbol shape is refused at the
edge instead of travelling through the system as a silent zero.
"""

from __future__ import annotations

from typing import Annotated, Literal

from msgspec import Meta

TOKEN_PATTERN = r"^[A-Za-z0-9_-]{1,64}$"

Token = Annotated[
    str,
    Meta(
        pattern=TOKEN_PATTERN,
        description="Identifier safe as one NATS subject token (no '.', '*', '>' or spaces).",
    ),
]
"""A venue name or canonical symbol; safe to embed into a subject."""

TimestampMs = Annotated[
    int,
    Meta(ge=0, le=32_503_680_000_000, description="Milliseconds since the Unix epoch, UTC."),
]

PriceUsd = Annotated[
    float,
    Meta(gt=0, le=1e12, description="Price in quote currency (USD or USDT) per base unit; > 0."),
]

NonNegative = Annotated[float, Meta(ge=0, le=1e15)]

SignedAmount = Annotated[float, Meta(ge=-1e15, le=1e15)]

FundingRateFraction = Annotated[
    float,
    Meta(
        ge=-1.0,
        le=1.0,
        description="Funding rate as a fraction per funding interval (0.0001 = 0.01 %).",
    ),
]

IntervalHours = Annotated[
    float,
    Meta(gt=0, le=24, description="Hours between two funding settlements of this symbol."),
]

Probability = Annotated[float, Meta(ge=0.0, le=1.0)]

Fraction = Annotated[float, Meta(ge=0.0, le=1.0)]

Side = Literal["buy", "sell"]

Instrument = Literal["perp", "spot"]
"""What a leg, order, fill or position trades: the perpetual swap or the spot pair of the same
canonical symbol on the same venue. Spot pays no funding and cannot be sold short without
borrowing."""

Action = Literal["ENTER", "HOLD", "EXIT"]

TradingState = Literal["ACTIVE", "REDUCING", "HALTED"]
