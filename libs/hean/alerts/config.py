"""Alert channel settings (``HEAN_ALERT_*``) and building channels from them.

Every channel is optional: a channel with no URL or host configured is simply absent.
Secrets may be given directly or as a file path (``..._FILE``), as mounted by Kubernetes.
"""

from __future__ import annotations

import ssl
from pathlib import Path

import msgspec

from hean.alerts.channels import Channel, EmailChannel, SlackChannel, WebhookChannel
from hean.alerts.policy import AlertGate, Backoff
from hean.config import ConfigError, ServiceSettings


class AlertSettings(ServiceSettings, kw_only=True):
    """Service settings plus the alert channels; services that deliver alerts extend it."""

    alert_slack_webhook_url: str | None = None
    alert_webhook_url: str | None = None
    alert_smtp_host: str | None = None
    alert_smtp_port: int = 587
    alert_smtp_user: str | None = None
    alert_smtp_password: str | None = None
    alert_smtp_password_file: str | None = None
    alert_smtp_from: str = "hean@localhost"
    alert_smtp_to: list[str] = msgspec.field(default_factory=list)
    alert_smtp_starttls: bool = True
    alert_smtp_cafile: str | None = None
    """CA bundle to verify the SMTP server with (a private CA); system CAs otherwise."""
    alert_dedupe_s: float = 3600.0
    alert_rate_per_min: float = 30.0
    alert_burst: int = 10
    alert_retries: int = 4
    alert_backoff_s: float = 0.5


def _secret(value: str | None, path: str | None, setting: str) -> str | None:
    if value:
        return value
    if path:
        try:
            return Path(path).read_text().strip()
        except OSError as exc:
            raise ConfigError(f"{setting}={path}: cannot read ({exc.strerror})") from None
    return None


def _tls_context(cafile: str | None) -> ssl.SSLContext | None:
    if not cafile:
        return None
    try:
        return ssl.create_default_context(cafile=cafile)
    except (OSError, ssl.SSLError) as exc:
        raise ConfigError(f"HEAN_ALERT_SMTP_CAFILE={cafile}: {exc}") from None


def build_channels(s: AlertSettings) -> list[Channel]:
    channels: list[Channel] = []
    if s.alert_slack_webhook_url:
        channels.append(SlackChannel(s.alert_slack_webhook_url))
    if s.alert_webhook_url:
        channels.append(WebhookChannel(s.alert_webhook_url))
    if s.alert_smtp_host:
        if not s.alert_smtp_to:
            raise ConfigError("HEAN_ALERT_SMTP_TO: at least one recipient is needed with SMTP")
        channels.append(
            EmailChannel(
                host=s.alert_smtp_host,
                port=s.alert_smtp_port,
                sender=s.alert_smtp_from,
                recipients=list(s.alert_smtp_to),
                username=s.alert_smtp_user,
                password=_secret(
                    s.alert_smtp_password,
                    s.alert_smtp_password_file,
                    "HEAN_ALERT_SMTP_PASSWORD_FILE",
                ),
                starttls=s.alert_smtp_starttls,
                ssl_context=_tls_context(s.alert_smtp_cafile),
            )
        )
    return channels


def gate_factory(s: AlertSettings):
    def make() -> AlertGate:
        return AlertGate(
            dedupe_ms=int(s.alert_dedupe_s * 1000),
            rate_per_min=s.alert_rate_per_min,
            burst=s.alert_burst,
        )

    return make


def backoff_from(s: AlertSettings) -> Backoff:
    return Backoff(attempts=max(1, s.alert_retries), base_s=s.alert_backoff_s)
