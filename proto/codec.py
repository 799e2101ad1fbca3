"""Encoding and decoding of wire events (msgspec JSON).

One encoder and one decoder for the tagged union of all events: decoding validates every
constraint of ``hean_proto.types`` and returns the concrete event class, so a consumer never
sees a half-valid event.
"""

from __future__ import annotations

import msgspec

from hean_proto.events import AnyEvent, Event

MAX_EVENT_BYTES = 256 * 1024
"""Events above this size are refused: no legitimate HEAN event comes near it."""

_encoder = msgspec.json.Encoder()
_decoder = msgspec.json.Decoder(AnyEvent)


class DecodeError(ValueError):
    """Bytes that are not a valid HEAN event; the message names what is wrong."""


def encode(event: Event) -> bytes:
    """JSON bytes of one event."""
    return _encoder.encode(event)


def decode(data: bytes, max_bytes: int = MAX_EVENT_BYTES) -> Event:
    """Decode and validate one event, raising ``DecodeError`` with a clear reason."""
    if len(data) > max_bytes:
        raise DecodeError(f"oversized message: {len(data)} bytes > limit {max_bytes}")
    try:
        return _decoder.decode(data)
    except msgspec.ValidationError as exc:
        raise DecodeError(f"invalid event: {exc}") from None
    except msgspec.DecodeError as exc:
        raise DecodeError(f"undecodable message: {exc}") from None
    except UnicodeDecodeError as exc:
        raise DecodeError(f"undecodable message: invalid UTF-8 at byte {exc.start}") from None


def decode_as(data: bytes, kind: type[Event], max_bytes: int = MAX_EVENT_BYTES) -> Event:
    """Decode bytes that must be one specific event class."""
    event = decode(data, max_bytes)
    if not isinstance(event, kind):
        raise DecodeError(f"expected {kind.__name__}, got {type(event).__name__}")
    return event
