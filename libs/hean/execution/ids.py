"""Deterministic client order ids: the same intent leg always gets the same id.

At most 32 letters and digits fits Bybit ``orderLinkId``, Binance ``newClientOrderId`` and
OKX ``clOrdId`` alike. Determinism is what makes a retried or replayed intent land on the
order that already exists instead of creating a second one.
"""

from __future__ import annotations

import hashlib
import re

MAX_LEN = 32
_VALID = re.compile(r"^[A-Za-z0-9]{1,32}$")


def _digest(*parts: str, length: int) -> str:
    raw = "\x1f".join(parts).encode()
    return hashlib.sha256(raw).hexdigest()[:length]


def is_valid(client_order_id: str) -> bool:
    """True when the id is usable on every venue: 1..32 letters and digits."""
    return bool(_VALID.match(client_order_id))


def intent_id(signal_id: str) -> str:
    """The intent id of a signal's approval; one signal never yields two intents."""
    return "I" + _digest("intent", signal_id, length=27)


def stop_exit_signal_id(signal_id: str) -> str:
    """The signal id risk gives the exit it makes itself on a stop-loss or take-profit: there
    is no strategy signal behind it, only the entry's."""
    return f"{signal_id}:exit"


def is_stop_exit(signal_id: str) -> bool:
    """True for the id of an exit risk made itself (see ``stop_exit_signal_id``)."""
    return signal_id.endswith(":exit")


def leg_order_id(signal_id: str, leg_index: int) -> str:
    """Client order id of leg ``leg_index`` of the intent derived from ``signal_id``."""
    if not 0 <= leg_index < 100:
        raise ValueError(f"leg index out of range: {leg_index}")
    return f"H{_digest('leg', signal_id, length=27)}L{leg_index:02d}"


def derived_order_id(kind: str, *parts: str) -> str:
    """Client order id of an order the system makes itself (unwind, flatten, stop exit).

    ``kind`` is one letter so that the id says why the order exists.
    """
    if len(kind) != 1 or not kind.isalpha():
        raise ValueError(f"order id kind must be one letter: {kind!r}")
    return kind.upper() + _digest(kind, *parts, length=31)
