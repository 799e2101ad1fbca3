"""Alert delivery against a local HTTP receiver and a local SMTP server (STARTTLS + AUTH)."""

from __future__ import annotations

import asyncio
import datetime
import ipaddress
import ssl
import time
from email import message_from_bytes
from pathlib import Path

import msgspec
import pytest
from aiohttp import web
from aiosmtpd.controller import Controller
from aiosmtpd.smtp import AuthResult, LoginPassword

from hean.alerts import (
    AlertDispatcher,
    AlertGate,
    Backoff,
    EmailChannel,
    SlackChannel,
    WebhookChannel,
)
from hean.alerts.config import AlertSettings, build_channels
from hean.alerts.consumer import consume_alerts
from hean.bus.nats import NatsBus
from hean.config import free_port, load_settings
from hean_proto import codec
from hean_proto.events import Alert
from hean_proto.subjects import subject_for

NOW = 1_767_225_600_000
FAST = Backoff(attempts=3, base_s=0.01, factor=2.0)


def alert(key: str, severity: str = "info", ts_ms: int | None = None) -> Alert:
    return Alert(
        ts_ms=int(time.time() * 1000) if ts_ms is None else ts_ms,
        key=key,
        kind="listing",
        severity=severity,
        title=f"t {key}",
        text="body",
    )


# ----------------------------------------------------------------------------- pure policy


def test_gate_dedupes_and_rate_limits_but_lets_critical_through() -> None:
    gate = AlertGate(dedupe_ms=60_000, rate_per_min=2, burst=2)
    assert gate.decide(alert("a"), NOW) == "send"
    assert gate.decide(alert("a"), NOW + 1000) == "duplicate"
    assert gate.decide(alert("b"), NOW + 1000) == "send"
    assert gate.decide(alert("c"), NOW + 1000) == "rate_limited"
    assert gate.decide(alert("k", "critical"), NOW + 1000) == "send"
    assert gate.decide(alert("c"), NOW + 31_000) == "send"  # one token refilled in 30 s
    assert gate.decide(alert("a"), NOW + 61_000) == "send"  # dedupe window over, a token refilled
    assert gate.decide(alert("d"), NOW + 61_500) == "rate_limited"


async def test_old_alerts_replayed_from_the_stream_are_not_sent() -> None:
    d = AlertDispatcher([WebhookChannel("http://127.0.0.1:9/none")], now_ms=lambda: NOW)
    assert d.submit(alert("old", ts_ms=NOW - 7 * 3_600_000)) == {"webhook": "expired"}
    assert d.lanes["webhook"].queue.qsize() == 0


def test_backoff_schedule() -> None:
    assert Backoff(attempts=5, base_s=0.5, factor=2, max_s=3).delays() == [0.5, 1.0, 2.0, 3.0]
    assert Backoff(attempts=1).delays() == []


def test_channels_from_settings(tmp_path: Path) -> None:
    secret = tmp_path / "pw"
    secret.write_text("s3cret\n")
    s = load_settings(
        AlertSettings,
        env={
            "HEAN_ALERT_SLACK_WEBHOOK_URL": "http://127.0.0.1:1/slack",
            "HEAN_ALERT_SMTP_HOST": "127.0.0.1",
            "HEAN_ALERT_SMTP_TO": "ops@example.com,desk@example.com",
            "HEAN_ALERT_SMTP_PASSWORD_FILE": str(secret),
        },
    )
    channels = build_channels(s)
    assert [c.name for c in channels] == ["slack", "email"]
    assert channels[1].password == "s3cret"
    assert channels[1].recipients == ["ops@example.com", "desk@example.com"]
    assert build_channels(load_settings(AlertSettings, env={})) == []


# ----------------------------------------------------------------------------- receivers


class Receiver:
    """A local HTTP server recording what each path received."""

    def __init__(self) -> None:
        self.got: dict[str, list[object]] = {}
        self.calls: dict[str, int] = {}
        self.release_slow = asyncio.Event()
        self.url = ""

    async def handle(self, request: web.Request) -> web.Response:
        path = request.match_info["name"]
        self.calls[path] = self.calls.get(path, 0) + 1
        body = await request.json()
        if path == "fail":
            return web.Response(status=503, text="down")
        if path == "bad":
            return web.Response(status=404, text="no such hook")
        if path == "flaky" and self.calls[path] <= 2:
            return web.Response(status=500, text="try again")
        if path == "slow":
            await self.release_slow.wait()
        self.got.setdefault(path, []).append(body)
        return web.Response(text="ok")

    async def __aenter__(self) -> Receiver:
        app = web.Application()
        app.router.add_post("/{name}", self.handle)
        self.runner = web.AppRunner(app)
        await self.runner.setup()
        site = web.TCPSite(self.runner, "127.0.0.1", 0)
        await site.start()
        port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
        self.url = f"http://127.0.0.1:{port}"
        return self

    async def __aexit__(self, *exc: object) -> None:
        self.release_slow.set()
        await self.runner.cleanup()


def _self_signed(tmp: Path) -> tuple[Path, Path]:
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "localhost")])
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(days=1))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(
            x509.SubjectAlternativeName(
                [x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]
            ),
            critical=False,
        )
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    cert_path, key_path = tmp / "cert.pem", tmp / "key.pem"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return cert_path, key_path


class Mailbox:
    def __init__(self) -> None:
        self.messages: list[tuple[str, list[str], bytes]] = []
        self.logins: list[str] = []

    async def handle_DATA(self, server, session, envelope) -> str:
        self.messages.append((envelope.mail_from, list(envelope.rcpt_tos), envelope.content))
        return "250 OK"


@pytest.fixture
def smtp_server(tmp_path: Path):
    cert, key = _self_signed(tmp_path)
    server_ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    server_ctx.load_cert_chain(cert, key)
    box = Mailbox()

    def authenticator(server, session, envelope, mechanism, auth_data) -> AuthResult:
        ok = isinstance(auth_data, LoginPassword) and (
            auth_data.login == b"hean" and auth_data.password == b"pw"
        )
        if ok:
            box.logins.append(auth_data.login.decode())
        return AuthResult(success=ok, handled=False)

    port = free_port()
    controller = Controller(
        box,
        hostname="127.0.0.1",
        port=port,
        tls_context=server_ctx,
        require_starttls=True,
        auth_require_tls=True,
        auth_required=True,
        authenticator=authenticator,
    )
    controller.start()
    client_ctx = ssl.create_default_context(cafile=str(cert))
    try:
        yield box, port, client_ctx
    finally:
        controller.stop()


def email(port: int, ctx: ssl.SSLContext, password: str = "pw", name: str = "email"):
    return EmailChannel(
        host="127.0.0.1",
        port=port,
        sender="hean@example.com",
        recipients=["ops@example.com"],
        username="hean",
        password=password,
        ssl_context=ctx,
        name=name,
    )


async def test_every_channel_delivers_once_and_a_failing_channel_is_isolated(
    smtp_server,
) -> None:
    box, port, ctx = smtp_server
    async with Receiver() as rx:
        channels = [
            SlackChannel(f"{rx.url}/slack"),
            WebhookChannel(f"{rx.url}/hook"),
            WebhookChannel(f"{rx.url}/fail", name="broken"),
            WebhookChannel(f"{rx.url}/slow", name="slow"),
            email(port, ctx),
        ]
        d = AlertDispatcher(channels, backoff=FAST, now_ms=lambda: NOW)
        await d.start()
        try:
            assert d.submit(alert("listing:bybit:NEWUSDT"))["slack"] == "send"
            assert d.submit(alert("listing:bybit:NEWUSDT"))["slack"] == "duplicate"
            d.submit(alert("funding_spike:bybit:NEWUSDT", "warning"))
            # everything but the slow channel is done while the slow one still hangs
            for name in ("slack", "webhook", "broken", "email"):
                await asyncio.wait_for(d.lanes[name].queue.join(), 30)
            assert d.lanes["slow"].sent == []
            rx.release_slow.set()
            await asyncio.wait_for(d.join(), 30)
        finally:
            await d.close()

    assert [p["text"].split("\n")[0] for p in rx.got["slack"]] == [
        ":information_source: *t listing:bybit:NEWUSDT*",
        ":warning: *t funding_spike:bybit:NEWUSDT*",
    ]
    hooks = [msgspec.convert(p, Alert) for p in rx.got["hook"]]
    assert [h.key for h in hooks] == ["listing:bybit:NEWUSDT", "funding_spike:bybit:NEWUSDT"]
    assert len(rx.got["slow"]) == 2
    assert rx.calls["fail"] == 2 * FAST.attempts  # retried, then given up
    assert d.status()["broken"] == {"sent": 0, "failed": 2, "queued": 0}
    assert d.status()["email"]["sent"] == 2
    assert box.logins == ["hean", "hean"]
    subjects = [message_from_bytes(m[2])["Subject"] for m in box.messages]
    assert subjects == [
        "[HEAN info] t listing:bybit:NEWUSDT",
        "[HEAN warning] t funding_spike:bybit:NEWUSDT",
    ]
    assert d.metrics.suppressed.labels("slack", "duplicate")._value.get() == 1


async def test_retry_with_backoff_then_success_and_permanent_errors_not_retried(
    smtp_server,
) -> None:
    box, port, ctx = smtp_server
    async with Receiver() as rx:
        d = AlertDispatcher(
            [
                WebhookChannel(f"{rx.url}/flaky", name="flaky"),
                WebhookChannel(f"{rx.url}/bad", name="bad"),
                email(port, ctx, password="wrong", name="badmail"),
            ],
            backoff=FAST,
        )
        await d.start()
        try:
            d.submit(alert("risk:halted", "critical"))
            await asyncio.wait_for(d.join(), 30)
        finally:
            await d.close()
    assert rx.calls["flaky"] == 3 and len(rx.got["flaky"]) == 1
    assert rx.calls["bad"] == 1  # 404 is permanent
    assert d.status()["badmail"]["failed"] == 1
    assert d.metrics.attempts.labels("badmail", "error")._value.get() == 1
    assert box.messages == []


async def test_smtp_refuses_plaintext_auth(smtp_server) -> None:
    box, port, ctx = smtp_server
    ch = email(port, ctx)
    ch.starttls = False
    d = AlertDispatcher([ch], backoff=Backoff(attempts=1))
    await d.start()
    try:
        d.submit(alert("x"))
        await asyncio.wait_for(d.join(), 30)
    finally:
        await d.close()
    assert d.status()["email"]["failed"] == 1 and box.messages == []


async def test_alerts_from_the_bus_are_delivered_through_a_durable_consumer(
    nats_url: str,
) -> None:
    bus = await NatsBus.connect(nats_url, "test-alerts")
    try:
        await bus.ensure_streams()
        async with Receiver() as rx:
            # raised while nobody is delivering: still delivered once the consumer starts
            for a in (alert("listing:okx:AUSDT"), alert("listing:okx:AUSDT"), alert("b")):
                await bus.publish(subject_for(a), codec.encode(a), msg_id=f"Alert:{a.key}")
            await bus.publish("hean.alert.listing", b"{not json")
            d = AlertDispatcher([WebhookChannel(f"{rx.url}/hook")], backoff=FAST)
            await d.start()
            sub = await consume_alerts(bus, d)
            try:

                async def delivered() -> None:
                    while len(rx.got.get("hook", [])) < 2:
                        await asyncio.sleep(0.05)

                await asyncio.wait_for(delivered(), 30)
                await d.join()
            finally:
                await sub.stop()
                await d.close()
        assert sorted(p["key"] for p in rx.got["hook"]) == ["b", "listing:okx:AUSDT"]
    finally:
        await bus.close()
