"""Property-based: no generated input crashes a decoder or slips a bad number through.

Each event decoder sees 10,000 generated inputs: mutations of a valid event (fields replaced
by NaN, infinities, negatives, strings, nulls, huge or missing values) and arbitrary JSON.
Every input either decodes to an event whose numbers are all finite and whose prices are
positive, or is refused with DecodeError; through the runtime each refusal is counted once and
dead-lettered once.
"""

from __future__ import annotations

import json
import math
import os
import random

import msgspec
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from hean.bus import InMemoryBus
from hean.clock import SimClock
from hean.runtime.core import Runtime
from hean.runtime.logic import Input, ServiceLogic
from hean_proto import codec
from hean_proto import events as ev
from tests.samples import SAMPLES, TS

INPUTS = int(os.environ.get("HEAN_PROPERTY_INPUTS", "10000"))

PRICE_FIELDS = {
    "price",
    "mark",
    "index",
    "last",
    "mark_price",
    "index_price",
    "entry_price",
    "avg_price",
}

weird_scalars = st.one_of(
    st.sampled_from(
        [
            "NaN",
            "Infinity",
            "-Infinity",
            "1e999",
            "-1e999",
            "-1",
            "0",
            "-0.0",
            "null",
            "true",
            '""',
            '"1"',
            '"NaN"',
            "[]",
            "{}",
            "1e308",
            "-1e308",
            "9" * 40,
            "0.1e-400",
        ]
    ),
    st.floats(allow_nan=False, allow_infinity=False).map(repr),
    st.integers(min_value=-(2**70), max_value=2**70).map(str),
    st.text(max_size=8).map(json.dumps),
)

json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.integers()
    | st.text(max_size=10),
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=6), children, max_size=4)
    ),
    max_leaves=12,
)


def _mutations(sample: ev.Event):
    doc = json.loads(codec.encode(sample))
    keys = sorted(doc)

    @st.composite
    def mutate(draw) -> bytes:
        kind = draw(st.integers(0, 3))
        if kind == 0:  # replace a few fields by raw weird tokens
            d = dict(doc)
            chosen = draw(st.lists(st.sampled_from(keys), min_size=1, max_size=3, unique=True))
            body = {k: json.dumps(v) for k, v in d.items()}
            for k in chosen:
                body[k] = draw(weird_scalars)
            return ("{" + ",".join(f"{json.dumps(k)}:{v}" for k, v in body.items()) + "}").encode()
        if kind == 1:  # drop fields
            d = dict(doc)
            for k in draw(st.lists(st.sampled_from(keys), min_size=1, max_size=3, unique=True)):
                d.pop(k, None)
            return json.dumps(d).encode()
        if kind == 2:  # replace a field by an arbitrary JSON value
            d = dict(doc)
            d[draw(st.sampled_from(keys))] = draw(json_values)
            return json.dumps(d).encode()
        raw = draw(st.binary(max_size=64))  # arbitrary bytes with the right tag prefix
        return b'{"type":"' + doc["type"].encode() + b'",' + raw

    return mutate()


def _numbers(value, path=""):
    if isinstance(value, float | int) and not isinstance(value, bool):
        yield path, value
    elif isinstance(value, dict):
        for k, v in value.items():
            yield from _numbers(v, k)
    elif isinstance(value, list | tuple):
        for v in value:
            yield from _numbers(v, path)


def check_clean(event: ev.Event) -> None:
    doc = msgspec.to_builtins(event)
    for field, number in _numbers(doc):
        assert math.isfinite(number), (field, number)
        if field in PRICE_FIELDS:
            assert number > 0, (field, number)
    if isinstance(event, ev.BookTop):
        for level in event.bids + event.asks:
            assert level.price > 0 and level.size >= 0


class Sink(ServiceLogic):
    name = "sink"

    def __init__(self, kind: type[ev.Event]) -> None:
        self.kind = kind
        self.accepted = 0

    def inputs(self) -> list[Input]:
        return [Input("x.>", (self.kind,))]

    def on_event(self, event: ev.Event, now_ms: int):
        check_clean(event)
        self.accepted += 1
        return ()


WEIRD_TOKENS = [
    "NaN",
    "Infinity",
    "-Infinity",
    "1e999",
    "-1e999",
    "-1",
    "0",
    "-0.0",
    "null",
    "true",
    '""',
    '"1"',
    '"NaN"',
    "[]",
    "{}",
    "1e308",
    "-1e308",
    "9" * 40,
    "0.1e-400",
    "-5e-324",
    '"\\u0000"',
    '"BTC.USDT"',
    '"*"',
    '">"',
    "[1e999]",
    "[[1,2]]",
    "[[-1,1]]",
    '[["1","2"]]',
]


def fast_mutation(doc: dict, rng) -> bytes:
    """One mutated input, drawn from hypothesis-controlled randomness."""
    keys = sorted(doc)
    body = {k: json.dumps(v) for k, v in doc.items()}
    kind = rng.randrange(5)
    if kind == 0:
        for k in rng.sample(keys, rng.randint(1, min(3, len(keys)))):
            body[k] = rng.choice(WEIRD_TOKENS)
    elif kind == 1:
        for k in rng.sample(keys, rng.randint(1, min(3, len(keys)))):
            body.pop(k)
    elif kind == 2:
        k = rng.choice(keys)
        body[k] = repr(rng.uniform(-1e6, 1e6) * rng.choice([1, 1e-9, 1e12, -1]))
    elif kind == 3:
        raw = json.dumps(body).encode()
        cut = rng.randrange(len(raw))
        return raw[:cut] + bytes([rng.randrange(256)]) + raw[cut + 1 :]
    else:
        body[rng.choice(keys)] = json.dumps(
            rng.choice([None, True, "x" * rng.randrange(100), {"a": 1}, [1, "b"], -(2**63) - 1])
        )
    return ("{" + ",".join(f"{json.dumps(k)}:{v}" for k, v in body.items()) + "}").encode()


@pytest.mark.parametrize("sample", SAMPLES, ids=lambda e: type(e).__name__)
def test_decoder_never_crashes_nor_lets_bad_numbers_through(sample: ev.Event) -> None:
    doc = json.loads(codec.encode(sample))
    seen: list[int] = []
    batch = 200

    @settings(
        max_examples=max(1, INPUTS // batch),
        deadline=None,
        derandomize=True,
        suppress_health_check=list(HealthCheck),
        database=None,
    )
    @given(st.integers(min_value=0, max_value=2**63))
    def run(seed: int) -> None:
        rng = random.Random(seed)
        for data in (fast_mutation(doc, rng) for _ in range(batch)):
            seen.append(1)
            try:
                event = codec.decode(data)
            except codec.DecodeError as exc:
                assert str(exc)
                continue
            check_clean(event)

    run()
    assert len(seen) >= INPUTS


@settings(max_examples=300, deadline=None, derandomize=True, database=None)
@given(st.sampled_from(SAMPLES).flatmap(_mutations))
def test_structured_mutations_shrink_to_a_clear_counterexample(data: bytes) -> None:
    try:
        event = codec.decode(data)
    except codec.DecodeError:
        return
    check_clean(event)


@pytest.mark.parametrize("sample", SAMPLES[:6], ids=lambda e: type(e).__name__)
async def test_every_refusal_is_counted_and_dead_lettered(sample: ev.Event) -> None:
    inputs: list[bytes] = []

    @settings(
        max_examples=300,
        deadline=None,
        derandomize=True,
        database=None,
        suppress_health_check=list(HealthCheck),
    )
    @given(_mutations(sample))
    def collect(data: bytes) -> None:
        inputs.append(data)

    collect()
    bus = InMemoryBus(clock=SimClock(TS))
    logic = Sink(type(sample))
    runtime = Runtime(logic, bus, SimClock(TS))
    await runtime.start()
    for data in inputs:
        await bus.publish("x.y", data)
    await bus.drain()
    letters = [m for m in bus.published if m.subject == "hean.dlq.sink"]
    assert logic.accepted + runtime.dead_letters == len(inputs)
    assert len(letters) == runtime.dead_letters > 0
    counted = sum(
        s.value
        for metric in runtime.metrics.registry.collect()
        if metric.name == "hean_messages_rejected"
        for s in metric.samples
        if s.name.endswith("_total")
    )
    assert counted == runtime.dead_letters
