"""The embedded nats-server's fsync setting: every write by default, an interval when asked."""

from __future__ import annotations

import asyncio
from pathlib import Path

import nats

from hean.natsserver import NatsServer


def test_default_fsyncs_every_write(tmp_path: Path):
    assert "sync_interval: always" in NatsServer(store_dir=tmp_path).config_text()


def test_an_interval_is_written_and_the_server_stores_with_it(tmp_path: Path):
    server = NatsServer(store_dir=tmp_path, sync_interval="2m")
    assert "sync_interval: 2m" in server.config_text()

    async def roundtrip(url: str) -> int:
        nc = await nats.connect(url)
        try:
            js = nc.jetstream()
            await js.add_stream(name="S", subjects=["s.>"])
            ack = await js.publish("s.x", b"1")
            return (await js.stream_info("S")).state.messages + ack.seq - 1
        finally:
            await nc.close()

    with server:
        assert asyncio.run(roundtrip(server.url)) == 1
