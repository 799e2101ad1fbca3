"""Process entry for risk-killswitch: limits from settings, the KV latch, operator endpoints.

At start the kill-switch record is read from JetStream KV: a HALTED latch stays HALTED, and
an unreadable record starts HALTED. The record is written back whenever it changes and every
few seconds. Resuming takes the operator token, either over HTTP (``POST /risk/resume`` with
``Authorization: Bearer <token>``) or over NATS (``hean.svc.risk-killswitch.resume``), which
``hean risk resume`` uses. The token comes from ``HEAN_RISK_TOKEN`` or the file named by
``HEAN_RISK_TOKEN_FILE`` (default ``<state_dir>/risk_token``, created with a random token on
first start, mode 0600); it is never logged.
"""

from __future__ import annotations

import asyncio
import contextlib
import hmac
import json
import logging
import os
import secrets
from pathlib import Path
from typing import Annotated

from fastapi import APIRouter, Header
from fastapi.responses import JSONResponse
from msgspec import Meta
from pydantic import BaseModel

from hean.config import ConfigError, ServiceSettings
from hean.risk.engine import SERVICE, RiskEngine
from hean.risk.latch import LatchError, load_record, save_record
from hean.risk.limits import RiskLimits
from hean.risk.recall import decided_since
from hean.runtime.runner import ServiceApp, ServiceContext
from hean_proto.subjects import SERVICE_ENDPOINT
from hean_services.risk_killswitch.logic import RiskKillswitchLogic

log = logging.getLogger("hean.risk")

Frac = Annotated[float, Meta(gt=0, le=1)]
PosInt = Annotated[int, Meta(ge=1)]
Positive = Annotated[float, Meta(gt=0)]


class Settings(ServiceSettings, kw_only=True):
    capital_usd: Positive = 10_000.0
    max_trade_frac: Frac = 0.02
    max_symbol_exposure_frac: Frac = 0.10
    max_gross_exposure_frac: Frac = 0.50
    min_confidence: Annotated[float, Meta(ge=0, le=1)] = 0.6
    require_stop_loss: bool = True
    max_data_age_s: Positive = 30.0
    max_signal_age_s: Positive = 30.0
    max_drawdown_frac: Frac = 0.20
    max_daily_loss_frac: Frac = 0.10
    max_loss_streak: PosInt = 5
    max_rejections: PosInt = 5
    rejection_window_s: Positive = 300.0
    flatten_on_halt: bool = False
    state_publish_s: Positive = 1.0
    persist_s: Positive = 5.0
    risk_token: str = ""
    risk_token_file: str = ""


def limits_from(s: Settings) -> RiskLimits:
    return RiskLimits(
        capital_usd=s.capital_usd,
        max_trade_frac=s.max_trade_frac,
        max_symbol_exposure_frac=s.max_symbol_exposure_frac,
        max_gross_exposure_frac=s.max_gross_exposure_frac,
        min_confidence=s.min_confidence,
        require_stop_loss=s.require_stop_loss,
        max_data_age_ms=int(s.max_data_age_s * 1000),
        max_signal_age_ms=int(s.max_signal_age_s * 1000),
        max_drawdown_frac=s.max_drawdown_frac,
        max_daily_loss_frac=s.max_daily_loss_frac,
        max_loss_streak=s.max_loss_streak,
        max_rejections=s.max_rejections,
        rejection_window_ms=int(s.rejection_window_s * 1000),
        flatten_on_halt=s.flatten_on_halt,
        state_publish_ms=int(s.state_publish_s * 1000),
    )


def token_path(settings: ServiceSettings) -> Path:
    explicit = getattr(settings, "risk_token_file", "")
    return Path(explicit) if explicit else Path(settings.state_dir) / "risk_token"


def resolve_token(settings: Settings) -> str:
    """The operator token: from the environment, else a file (created when missing)."""
    if settings.risk_token:
        return settings.risk_token
    path = token_path(settings)
    if path.exists():
        token = path.read_text().strip()
        if not token:
            raise ConfigError(f"HEAN_RISK_TOKEN_FILE={path}: file is empty")
        return token
    path.parent.mkdir(parents=True, exist_ok=True)
    token = secrets.token_urlsafe(32)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(token + "\n")
    log.warning("created the risk operator token in %s (keep it secret)", path)
    return token


class OperatorAction(BaseModel):
    reason: str = ""
    operator: str = "operator"


class Operator:
    """Resume and halt, shared by the HTTP and the NATS endpoints."""

    def __init__(self, logic: RiskKillswitchLogic, token: str) -> None:
        self.logic = logic
        self.token = token
        self.ctx: ServiceContext | None = None

    def authorised(self, presented: str | None) -> bool:
        return bool(presented) and hmac.compare_digest(presented.encode(), self.token.encode())

    async def persist(self) -> None:
        assert self.ctx is not None
        await save_record(self.ctx.bus, self.logic.engine.record)
        self.logic.engine.dirty = False

    async def resume(self, operator: str, reason: str) -> dict[str, object]:
        assert self.ctx is not None
        engine = self.logic.engine
        before = engine.state
        outs = engine.resume(self.ctx.runtime.clock.now_ms(), operator, reason)
        await self.persist()  # the latch is released in the store before anyone hears of it
        await self.ctx.runtime.emit(outs)
        log.warning("trading resumed by %s (was %s): %s", operator, before, reason)
        return {"state": engine.state, "previous": before, "reason": engine.record.reason}

    async def halt(self, operator: str, reason: str) -> dict[str, object]:
        assert self.ctx is not None
        engine = self.logic.engine
        outs = engine.halt(
            f"operator halt by {operator}" + (f": {reason}" if reason else ""),
            self.ctx.runtime.clock.now_ms(),
            issued_by=operator,
        )
        await self.ctx.runtime.emit(outs)
        await self.persist()
        return {"state": engine.state, "reason": engine.record.reason}


def http_routes(op: Operator) -> APIRouter:
    router = APIRouter(prefix="/risk", tags=["risk"])
    denied = {"description": "missing or wrong token"}

    def bearer(value: str | None) -> str | None:
        if value and value.lower().startswith("bearer "):
            return value[7:].strip()
        return None

    @router.get("/state")
    def state() -> dict[str, object]:
        return op.logic.engine.snapshot()

    @router.post("/resume", responses={401: denied, 503: {"description": "not started"}})
    async def resume(
        body: OperatorAction | None = None, authorization: str | None = Header(default=None)
    ) -> JSONResponse:
        if not op.authorised(bearer(authorization)):
            return JSONResponse({"error": "unauthorised"}, status_code=401)
        if op.ctx is None:
            return JSONResponse({"error": "not started"}, status_code=503)
        body = body or OperatorAction()
        return JSONResponse(await op.resume(body.operator, body.reason))

    @router.post("/halt", responses={401: denied, 503: {"description": "not started"}})
    async def halt(
        body: OperatorAction | None = None, authorization: str | None = Header(default=None)
    ) -> JSONResponse:
        if not op.authorised(bearer(authorization)):
            return JSONResponse({"error": "unauthorised"}, status_code=401)
        if op.ctx is None:
            return JSONResponse({"error": "not started"}, status_code=503)
        body = body or OperatorAction()
        return JSONResponse(await op.halt(body.operator, body.reason))

    return router


async def _nats_endpoints(ctx: ServiceContext, op: Operator) -> list:
    async def handle(msg, action: str) -> None:
        try:
            doc = json.loads(msg.data or b"{}")
            if not isinstance(doc, dict):
                raise ValueError("expected a JSON object")
        except ValueError as exc:
            await msg.respond(json.dumps({"error": f"bad request: {exc}"}).encode())
            return
        if not op.authorised(str(doc.get("token") or "")):
            log.warning("refused %s over NATS: wrong or missing token", action)
            await msg.respond(json.dumps({"error": "unauthorised"}).encode())
            return
        operator = str(doc.get("operator") or "operator")
        reason = str(doc.get("reason") or "")
        result = await (op.resume if action == "resume" else op.halt)(operator, reason)
        await msg.respond(json.dumps(result).encode())

    def bound(action: str):
        async def cb(msg) -> None:
            await handle(msg, action)

        return cb

    return [
        await ctx.bus.nc.subscribe(SERVICE_ENDPOINT.subject(SERVICE, a), cb=bound(a))
        for a in ("resume", "halt")
    ]


RECALL_MARGIN_S = 60.0
"""Beyond the signal age limit: covers a redelivery after the durable consumer's ack wait."""


def build(settings: Settings) -> ServiceApp:
    limits = limits_from(settings)
    logic = RiskKillswitchLogic(RiskEngine(limits))
    op = Operator(logic, resolve_token(settings))
    changed = asyncio.Event()
    logic.on_change = changed.set
    subs: list = []

    async def restore(ctx: ServiceContext) -> None:
        now = ctx.runtime.clock.now_ms()
        try:
            record = await load_record(ctx.bus)
        except LatchError as exc:
            log.error("%s; starting HALTED", exc)
            logic.engine = RiskEngine(limits)
            logic.engine.halt(str(exc), now)
        else:
            logic.engine = RiskEngine(limits, record)
            if record is None:
                logic.engine.record.since_ms = now
                logic.engine.dirty = True
            elif record.state == "HALTED":
                log.warning(
                    "kill switch is latched HALTED since %s: %s", record.since_ms, record.reason
                )
        await recall_decided(ctx, now)
        op.ctx = ctx
        await op.persist()
        logic.restored = True
        subs.extend(await _nats_endpoints(ctx, op))

    async def recall_decided(ctx: ServiceContext, now: int) -> None:
        since = now - int((settings.max_signal_age_s + RECALL_MARGIN_S) * 1000)
        try:
            ids = await decided_since(ctx.bus.js, since)
        except Exception as exc:  # a redelivery would then be decided again: logged, not fatal
            log.error("could not read back recent decisions: %s", exc)
            return
        logic.engine.remember_decided(ids)
        if ids:
            log.info("%d signals decided before this start are known as decided", len(ids))

    async def persist(ctx: ServiceContext) -> None:
        while not ctx.stopping.is_set():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(changed.wait(), settings.persist_s)
            changed.clear()
            if ctx.stopping.is_set():
                break  # the last write happens on stop, before the connection drains
            try:
                await op.persist()
            except Exception as exc:  # keep trying; the in-memory state stays authoritative
                log.error("could not persist the risk record: %s", exc)
                await asyncio.sleep(0.5)
                changed.set()

    async def final_persist(ctx: ServiceContext) -> None:
        for sub in subs:
            with contextlib.suppress(Exception):
                await sub.unsubscribe()
        await op.persist()

    return ServiceApp(
        logic=logic,
        on_start=[restore],
        tasks=[persist],
        on_stop=[final_persist],
        routers=[http_routes(op)],
    )
