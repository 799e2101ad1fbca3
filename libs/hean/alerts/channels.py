"""Delivery channels: Slack incoming webhook, SMTP with STARTTLS and auth, generic webhook.

Each channel sends one alert or raises ``DeliveryError``; retries, isolation and rate limits
live in the dispatcher so that every channel behaves the same.
"""

from __future__ import annotations

import asyncio
import smtplib
import ssl
from dataclasses import dataclass, field
from email.message import EmailMessage
from typing import Protocol

import aiohttp
import msgspec

from hean_proto.events import Alert

SEVERITY_EMOJI = {
    "info": ":information_source:",
    "warning": ":warning:",
    "critical": ":rotating_light:",
}


class DeliveryError(RuntimeError):
    """A channel could not deliver; ``permanent`` errors are not retried (bad URL, 4xx)."""

    def __init__(self, message: str, *, permanent: bool = False) -> None:
        super().__init__(message)
        self.permanent = permanent


class Channel(Protocol):
    name: str

    async def send(self, alert: Alert) -> None: ...

    async def close(self) -> None: ...


def render_text(alert: Alert) -> str:
    return f"[{alert.severity.upper()}] {alert.title}\n{alert.text}"


@dataclass
class _HttpChannel:
    url: str
    timeout_s: float = 10.0
    name: str = "webhook"
    _session: aiohttp.ClientSession | None = field(default=None, repr=False)

    def _payload(self, alert: Alert) -> object:
        return msgspec.to_builtins(alert)

    async def send(self, alert: Alert) -> None:
        if self._session is None or self._session.closed:
            self._session = aiohttp.ClientSession(
                timeout=aiohttp.ClientTimeout(total=self.timeout_s)
            )
        try:
            async with self._session.post(self.url, json=self._payload(alert)) as resp:
                body = await resp.text()
                if resp.status >= 500 or resp.status == 429:
                    raise DeliveryError(f"{self.name}: HTTP {resp.status}: {body[:200]}")
                if resp.status >= 400:
                    raise DeliveryError(
                        f"{self.name}: HTTP {resp.status}: {body[:200]}", permanent=True
                    )
        except (aiohttp.ClientError, TimeoutError) as exc:
            raise DeliveryError(f"{self.name}: {type(exc).__name__}: {exc}") from None

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()


@dataclass
class WebhookChannel(_HttpChannel):
    """POSTs the alert event as JSON, exactly as it travels on the bus."""

    name: str = "webhook"


@dataclass
class SlackChannel(_HttpChannel):
    """Slack incoming webhook: a ``text`` payload with the severity up front."""

    name: str = "slack"

    def _payload(self, alert: Alert) -> object:
        emoji = SEVERITY_EMOJI.get(alert.severity, "")
        text = f"{emoji} *{alert.title}*\n{alert.text}\n_{alert.kind} · {alert.key}_"
        return {"text": text.strip()}


@dataclass
class EmailChannel:
    """SMTP submission with STARTTLS and AUTH; smtplib runs in a thread to keep the loop free."""

    host: str
    port: int
    sender: str
    recipients: list[str]
    username: str | None = None
    password: str | None = None
    starttls: bool = True
    ssl_context: ssl.SSLContext | None = None
    timeout_s: float = 15.0
    name: str = "email"

    def _message(self, alert: Alert) -> EmailMessage:
        msg = EmailMessage()
        msg["Subject"] = f"[HEAN {alert.severity}] {alert.title}"
        msg["From"] = self.sender
        msg["To"] = ", ".join(self.recipients)
        msg["X-Hean-Alert-Key"] = alert.key
        msg.set_content(render_text(alert))
        return msg

    def _send_sync(self, alert: Alert) -> None:
        try:
            with smtplib.SMTP(self.host, self.port, timeout=self.timeout_s) as smtp:
                smtp.ehlo()
                if self.starttls:
                    smtp.starttls(context=self.ssl_context or ssl.create_default_context())
                    smtp.ehlo()
                if self.username:
                    smtp.login(self.username, self.password or "")
                smtp.send_message(self._message(alert))
        except smtplib.SMTPAuthenticationError as exc:
            raise DeliveryError(f"email: authentication refused: {exc}", permanent=True) from None
        except (smtplib.SMTPException, OSError, ssl.SSLError) as exc:
            raise DeliveryError(f"email: {type(exc).__name__}: {exc}") from None

    async def send(self, alert: Alert) -> None:
        await asyncio.to_thread(self._send_sync, alert)

    async def close(self) -> None:
        return None
