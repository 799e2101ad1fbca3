"""NATS users and permissions: generated config is current, and a real nats-server enforces it.

The server runs with the committed ``deploy/nats/auth.conf`` and passwords from files, as in
docker compose; every check goes through a real connection.
"""

from __future__ import annotations

import asyncio
import contextlib
import importlib
import shutil
from pathlib import Path

import nats
import nats.errors
import pytest
from service_helpers import running

from hean import natsauth
from hean.bus.nats import NatsBus, NatsConnectError
from hean.config import free_port, load_settings
from hean.natsserver import NatsServer
from hean.registry import SERVICES, spec
from hean_proto import codec
from hean_proto import events as ev
from hean_proto import subjects as sj

REPO = Path(__file__).resolve().parents[1]
GRANTS = natsauth.service_grants()


def allowed(patterns: list[str], subject: str) -> bool:
    return any(sj.matches(p, subject) for p in patterns)


def concrete(pattern: str) -> str:
    """A subject matched by ``pattern`` (wildcards filled with plausible tokens)."""
    return pattern.replace(">", "bybit.BTCUSDT").replace("*", "x")


def publish_rights(user: str) -> list[str]:
    if user == natsauth.OPERATOR:
        return natsauth.operator_permissions()[0]
    return natsauth.permissions(GRANTS[user])[0]


# ---------------------------------------------------------------- generated, derived, least


def test_generated_auth_files_are_current() -> None:
    assert natsauth.stale(REPO) == [], "run: python -m hean.natsauth write"
    text = (REPO / "deploy/nats/auth.conf").read_text()
    for user in natsauth.users():
        assert f'user: "{user}"' in text
        assert f"password: ${natsauth.password_env(user)}" in text
    assert 'password: "' not in text  # no literal password in the repository


def test_every_registry_service_has_a_grant() -> None:
    assert set(GRANTS) == {s.name for s in SERVICES}


@pytest.mark.parametrize("name", [s.name for s in SERVICES])
def test_grants_cover_what_the_service_logic_subscribes(name: str, tmp_path: Path) -> None:
    module = importlib.import_module(spec(name).module)
    settings = load_settings(module.Settings, name, env={"HEAN_STATE_DIR": str(tmp_path)})
    app = module.build(settings)
    grant = GRANTS[name]
    sub = natsauth.permissions(grant)[1]
    for inp in app.logic.inputs():
        assert allowed(sub, concrete(inp.pattern)), f"{name} may not subscribe {inp.pattern}"
        if inp.durable:
            stream = sj.stream_for(concrete(inp.pattern))
            assert stream is not None and stream.name in grant.consume, (name, inp.pattern)


def test_safety_chain_publishers() -> None:
    """Only risk approves orders and sets the risk state; only the router reports fills."""
    owners = {
        sj.ORDER_APPROVED.subject("funding_harvester"): {"risk-killswitch"},
        sj.RISK_STATE.prefix: {"risk-killswitch"},
        sj.RISK_DECISION.subject("funding_harvester", "approved"): {"risk-killswitch"},
        sj.RISK_DECISION.subject("funding_harvester", "rejected"): {"risk-killswitch"},
        sj.CONTROL.subject("order-router"): {"risk-killswitch"},
        sj.FILL.subject("bybit", "BTCUSDT"): {"order-router"},
        sj.ORDER_UPDATE.subject("bybit", "BTCUSDT"): {"order-router"},
        sj.POSITION.subject("bybit", "BTCUSDT"): {"order-router"},
        sj.SIGNAL.subject("funding_harvester", "BTCUSDT"): {"strategy-engine"},
        sj.CONTROL.subject("risk-killswitch"): {natsauth.OPERATOR},
        f"$KV.{sj.KV_RISK}.state": {"risk-killswitch"},
        f"$KV.{sj.KV_ROUTER}.book": {"order-router"},
    }
    for subject, who in owners.items():
        may = {u for u in natsauth.users() if allowed(publish_rights(u), subject)}
        assert may == who, subject
    for user in natsauth.users():
        rights = publish_rights(user)
        for op in ("DELETE", "PURGE"):
            assert not allowed(rights, f"$JS.API.STREAM.{op}.HEAN_TRADING"), user
        assert not allowed(rights, "$JS.API.STREAM.MSG.DELETE.HEAN_TRADING"), user


# ---------------------------------------------------------------- a real server


@pytest.fixture
def auth_server(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    """nats-server with the committed auth.conf; passwords from files, as compose runs it."""
    secrets = tmp_path / "secrets"
    natsauth.make_secrets(secrets)
    for user in natsauth.users():
        monkeypatch.setenv(
            natsauth.password_env(user), natsauth.password_path(secrets, user).read_text().strip()
        )
    store = tmp_path / "nats"
    store.mkdir()
    shutil.copy(REPO / "deploy/nats/auth.conf", store / "auth.conf")
    server = NatsServer(
        store, extra_config='include "auth.conf"\n', log_file=tmp_path / "nats.log"
    ).start()
    # the services must not find the passwords in their environment
    for user in natsauth.users():
        monkeypatch.delenv(natsauth.password_env(user))
    try:
        yield server, secrets, tmp_path / "nats.log"
    finally:
        server.stop()


class Client:
    """A connection as one user that records the errors the server sends back."""

    def __init__(self) -> None:
        self.errors: list[str] = []
        self.changed = asyncio.Event()

    async def connect(self, url: str, user: str, secrets: Path) -> Client:
        async def on_error(exc: Exception) -> None:
            self.errors.append(str(exc))
            self.changed.set()

        self.nc = await nats.connect(
            url,
            user=user,
            password=natsauth.password_path(secrets, user).read_text().strip(),
            error_cb=on_error,
            allow_reconnect=False,
        )
        return self

    async def until_errors(self, n: int) -> list[str]:
        async def wait() -> list[str]:
            while len(self.errors) < n:
                self.changed.clear()
                await self.changed.wait()
            return self.errors

        return await asyncio.wait_for(wait(), 10)


async def test_unauthenticated_and_wrong_password_are_refused(auth_server) -> None:
    server, _, _ = auth_server
    with pytest.raises(nats.errors.Error):
        await nats.connect(server.url, allow_reconnect=False, connect_timeout=2)
    with pytest.raises(nats.errors.Error):
        await nats.connect(
            server.url,
            user="order-router",
            password="guess",
            allow_reconnect=False,
            connect_timeout=2,
        )


FOREIGN = {
    "funding-collector": [sj.SIGNAL.subject("x", "BTCUSDT"), sj.PRED_FUNDING.subject("a", "B")],
    "listing-scanner": [sj.ORDER_APPROVED.subject("x"), sj.FUNDING.subject("bybit", "BTCUSDT")],
    "funding-predictor": [sj.SIGNAL.subject("x", "BTCUSDT"), sj.PRED_CASCADE.subject("a", "B")],
    "liquidation-predictor": [sj.ORDER_APPROVED.subject("x"), sj.PRED_FUNDING.subject("a", "B")],
    "strategy-engine": [
        sj.ORDER_APPROVED.subject("funding_harvester"),
        sj.RISK_STATE.prefix,
        sj.FILL.subject("bybit", "BTCUSDT"),
    ],
    "risk-killswitch": [sj.FILL.subject("bybit", "BTCUSDT"), sj.SIGNAL.subject("x", "B")],
    "order-router": [sj.ORDER_APPROVED.subject("x"), sj.RISK_STATE.prefix],
    natsauth.OPERATOR: [sj.ORDER_APPROVED.subject("x"), sj.FILL.subject("okx", "ETHUSDT")],
}


@pytest.mark.parametrize("user", natsauth.users())
async def test_user_publishes_own_subjects_and_is_refused_foreign(auth_server, user) -> None:
    server, secrets, _ = auth_server
    tap = await Client().connect(server.url, natsauth.OPERATOR, secrets)
    seen: list[str] = []
    arrived = asyncio.Event()

    async def on_msg(msg) -> None:
        seen.append(msg.subject)
        arrived.set()

    await tap.nc.subscribe("hean.>", cb=on_msg)
    await tap.nc.flush()
    me = await Client().connect(server.url, user, secrets)
    try:
        foreign = FOREIGN[user]
        for subject in foreign:
            await me.nc.publish(subject, b"{}")
        if user == natsauth.OPERATOR:
            own = [sj.CONTROL.subject("risk-killswitch"), sj.FUNDING.subject("bybit", "X")]
        else:
            app = [concrete(p) for p in GRANTS[user].publish]
            own = [*app, sj.DEAD_LETTER.subject(user), sj.HEARTBEAT.subject(user)]
        for subject in own:
            await me.nc.publish(subject, b"{}")
        await me.nc.flush()

        async def all_arrived() -> None:
            while not set(own) <= set(seen):
                arrived.clear()
                await arrived.wait()

        # one connection's messages arrive in order: once the last own one is in, any
        # foreign one published before it would have been too
        await asyncio.wait_for(all_arrived(), 10)
        assert not set(foreign) & set(seen)
        errors = await me.until_errors(len(foreign))
        for subject in foreign:
            assert any("permissions violation" in e and subject.lower() in e for e in errors), (
                errors
            )
        assert not tap.errors
    finally:
        await me.nc.close()
        await tap.nc.close()


async def test_foreign_subscribe_kv_and_stream_delete_are_refused(auth_server) -> None:
    server, secrets, _ = auth_server
    collector = await Client().connect(server.url, "funding-collector", secrets)
    engine = await Client().connect(server.url, "strategy-engine", secrets)
    risk = await NatsBus.connect(
        server.url,
        "risk",
        user="risk-killswitch",
        password_file=str(natsauth.password_path(secrets, "risk-killswitch")),
    )
    try:
        await risk.ensure_streams()
        await risk.kv_put(sj.KV_RISK, "state", b"ACTIVE")
        assert await risk.kv_get(sj.KV_RISK, "state") == b"ACTIVE"
        # the router reads the latched kill-switch record (writing it is refused, see above)
        router = await NatsBus.connect(
            server.url,
            "router",
            user="order-router",
            password_file=str(natsauth.password_path(secrets, "order-router")),
        )
        assert await router.kv_get(sj.KV_RISK, "state") == b"ACTIVE"
        await router.close()

        await collector.nc.subscribe(sj.ORDER_APPROVED.pattern())
        await collector.nc.flush()
        await engine.nc.publish(f"$KV.{sj.KV_RISK}.state", b"RESUMED")
        await engine.nc.flush()
        assert "subscription" in (await collector.until_errors(1))[0]
        assert "$kv.hean_risk.state" in (await engine.until_errors(1))[0].lower()

        js = engine.nc.jetstream(timeout=1)
        with pytest.raises((nats.errors.TimeoutError, nats.errors.NoRespondersError)):
            await js.delete_stream("HEAN_TRADING")
        with pytest.raises((nats.errors.TimeoutError, nats.errors.NoRespondersError)):
            await js.purge_stream("HEAN_TRADING")
        assert (await risk.js.stream_info("HEAN_TRADING")).config.name == "HEAN_TRADING"
        assert await risk.kv_get(sj.KV_RISK, "state") == b"ACTIVE"
    finally:
        await risk.close()
        await collector.nc.close()
        await engine.nc.close()


async def test_bus_needs_a_readable_password_file(auth_server, tmp_path: Path) -> None:
    server, _, _ = auth_server
    with pytest.raises(NatsConnectError, match="HEAN_NATS_PASSWORD_FILE"):
        await NatsBus.connect(server.url, "x", user="order-router")
    missing = tmp_path / "nope"
    with pytest.raises(NatsConnectError, match=str(missing)):
        await NatsBus.connect(server.url, "x", user="order-router", password_file=str(missing))


async def test_risk_service_runs_under_its_user(auth_server, tmp_path: Path) -> None:
    """The real risk service: streams, KV latch, durable signal consumer, micro, decisions."""
    server, secrets, log = auth_server
    from hean_services.risk_killswitch.main import Settings, build

    settings = Settings(
        nats_url=server.url,
        nats_user="risk-killswitch",
        nats_password_file=str(natsauth.password_path(secrets, "risk-killswitch")),
        health_port=free_port(),
        state_dir=str(tmp_path / "state"),
        state_publish_s=0.2,
    )
    tap = await Client().connect(server.url, natsauth.OPERATOR, secrets)
    events: list[object] = []
    changed = asyncio.Event()

    async def on_msg(msg) -> None:
        with contextlib.suppress(codec.DecodeError):
            events.append(codec.decode(msg.data))
            changed.set()

    await tap.nc.subscribe("hean.>", cb=on_msg)

    async def until(pred):
        async def wait():
            while not (found := [e for e in events if pred(e)]):
                changed.clear()
                await changed.wait()
            return found

        return await asyncio.wait_for(wait(), 20)

    engine = await Client().connect(server.url, "strategy-engine", secrets)
    try:
        async with running(build(settings), settings):
            await until(lambda e: isinstance(e, ev.RiskState))
            signal = ev.Signal(
                ts_ms=1,
                id="sig-auth-1",
                strategy="funding_harvester",
                symbol="BTCUSDT",
                legs=[ev.SignalLeg(venue="bybit", symbol="BTCUSDT", side="buy")],
                size_frac=0.01,
                confidence=0.9,
                stop_loss_frac=0.02,
            )
            await engine.nc.publish(
                sj.subject_for(signal),
                codec.encode(signal),
                headers={"Nats-Msg-Id": "Signal:sig-auth-1"},
            )
            decision = await until(
                lambda e: isinstance(e, ev.RiskDecision) and e.signal_id == "sig-auth-1"
            )
            # a stale signal without market data: refused, but decided
            assert decision[0].approved is False
            reply = await tap.nc.request("$SRV.PING.risk-killswitch", b"", timeout=5)
            assert b"risk-killswitch" in reply.data
    finally:
        await engine.nc.close()
        await tap.nc.close()
    violations = [
        line
        for line in log.read_text().splitlines()
        if "Violation" in line and "user:risk-killswitch" in line
    ]
    assert violations == []
    assert not engine.errors


def test_password_env_names_are_valid_identifiers() -> None:
    for user in natsauth.users():
        name = natsauth.password_env(user)
        assert name.isidentifier() and name.isupper(), name
