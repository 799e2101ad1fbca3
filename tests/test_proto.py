"""The wire contract: round trips, validation, subject map and exported schema."""

from __future__ import annotations

import json

import msgspec
import pytest

from hean_proto import codec, schema_export, subjects
from hean_proto import events as ev
from tests.samples import SAMPLES, TS


def test_every_event_has_a_sample() -> None:
    assert {type(s) for s in SAMPLES} == set(ev.ALL_EVENTS)


@pytest.mark.parametrize("event", SAMPLES, ids=lambda e: type(e).__name__)
def test_round_trip_is_exact_and_readable(event: ev.Event) -> None:
    data = codec.encode(event)
    doc = json.loads(data)
    assert doc["type"] == type(event).__name__
    assert doc["schema_version"] == ev.SCHEMA_VERSION
    assert codec.decode(data) == event


@pytest.mark.parametrize("event", SAMPLES, ids=lambda e: type(e).__name__)
def test_every_event_has_a_subject_inside_the_map(event: ev.Event) -> None:
    subject = subjects.subject_for(event)
    assert subject.startswith("hean.")
    assert all(subjects.token(t) for t in subject.split("."))


def test_schema_files_match_code() -> None:
    assert schema_export.drift() == [], "run `make schema` and commit proto/schema"


def test_schema_drift_is_detected(tmp_path) -> None:
    schema_export.export(tmp_path)
    victim = tmp_path / "FundingRate.json"
    doc = json.loads(victim.read_text())
    doc["$defs"]["FundingRate"]["properties"].pop("interval_hours")
    victim.write_text(json.dumps(doc))
    (tmp_path / "Removed.json").write_text("{}")
    assert sorted(schema_export.drift(tmp_path)) == [
        "orphan Removed.json",
        "stale FundingRate.json",
    ]


def _funding(**over) -> bytes:
    doc = {
        "type": "FundingRate",
        "ts_ms": TS,
        "venue": "bybit",
        "symbol": "BTCUSDT",
        "rate": 0.0001,
        "interval_hours": 8,
    }
    doc.update(over)
    return json.dumps(doc).encode()


@pytest.mark.parametrize(
    ("data", "fragment"),
    [
        (b"\x00\x01garbage", "undecodable"),
        (b"[1, 2, 3]", "Expected `object`"),
        (b'{"type": "NoSuchEvent", "ts_ms": 1}', "Invalid value 'NoSuchEvent'"),
        (_funding(rate="0.0001"), "Expected `float`, got `str` - at `$.rate`"),
        (_funding(rate=2.0), "at `$.rate`"),
        (_funding(symbol="BTC.USDT"), "at `$.symbol`"),
        (_funding(symbol="*"), "at `$.symbol`"),
        (_funding(interval_hours=0), "at `$.interval_hours`"),
        (_funding(mark_price=-5), "at `$.mark_price`"),
        (_funding(ts_ms=-1), "at `$.ts_ms`"),
        (_funding(mark_price=1e400), "undecodable"),
        (_funding().replace(b'"interval_hours": 8', b'"interval_hours": 1e400'), "interval_hours"),
        (_funding().replace(b'"rate": 0.0001', b'"rate": NaN'), "undecodable"),
        (_funding(extra="x" * (codec.MAX_EVENT_BYTES + 1)), "oversized"),
    ],
)
def test_bad_input_is_refused_with_a_clear_reason(data: bytes, fragment: str) -> None:
    with pytest.raises(codec.DecodeError) as info:
        codec.decode(data)
    assert fragment in str(info.value)


def test_nan_built_in_python_cannot_pass_validation() -> None:
    raw = {"ts_ms": TS, "venue": "bybit", "symbol": "BTCUSDT", "mark": float("nan")}
    with pytest.raises(msgspec.ValidationError):
        msgspec.convert(raw, ev.PriceTick)


def test_decode_as_checks_the_class() -> None:
    data = codec.encode(SAMPLES[0])
    assert isinstance(codec.decode_as(data, ev.FundingRate), ev.FundingRate)
    with pytest.raises(codec.DecodeError, match="expected Signal, got FundingRate"):
        codec.decode_as(data, ev.Signal)


def test_subject_map() -> None:
    assert subjects.FUNDING.subject("bybit", "BTCUSDT") == "hean.md.funding.bybit.BTCUSDT"
    assert subjects.FUNDING.pattern() == "hean.md.funding.>"
    assert subjects.FUNDING.pattern("*", "BTCUSDT") == "hean.md.funding.*.BTCUSDT"
    assert subjects.RISK_STATE.pattern() == "hean.risk.state"
    with pytest.raises(subjects.SubjectError):
        subjects.FUNDING.subject("by.bit", "BTCUSDT")
    with pytest.raises(subjects.SubjectError):
        subjects.FUNDING.subject("bybit")


@pytest.mark.parametrize(
    ("pattern", "subject", "expected"),
    [
        ("hean.>", "hean.md.funding.bybit.BTC", True),
        ("hean.md.*.bybit.BTC", "hean.md.funding.bybit.BTC", True),
        ("hean.md.*", "hean.md.funding.bybit", False),
        ("hean.md.funding.>", "hean.md.funding", False),
        ("hean.risk.state", "hean.risk.state", True),
        ("hean.risk.state", "hean.risk.state.x", False),
    ],
)
def test_wildcards_follow_nats_rules(pattern: str, subject: str, expected: bool) -> None:
    assert subjects.matches(pattern, subject) is expected


def test_stream_names_are_valid_and_streams_do_not_overlap() -> None:
    names = [s.name for s in subjects.STREAMS]
    assert len(set(names)) == len(names)
    for name in names:
        assert not set(".*> ") & set(name)
    for event in SAMPLES:
        subject = subjects.subject_for(event)
        owners = [
            s.name
            for s in subjects.STREAMS
            if any(subjects.matches(p, subject) for p in s.subjects)
        ]
        assert len(owners) <= 1, (subject, owners)
    assert subjects.stream_for("hean.order.approved.arb").name == "HEAN_TRADING"
    assert subjects.stream_for(subjects.SIGNAL.subject("arb", "BTCUSDT")).name == "HEAN_SIGNALS"
    assert subjects.stream_for("hean.md.price.bybit.BTC") is None
