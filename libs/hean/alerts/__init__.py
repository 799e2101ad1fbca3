"""Alert delivery: Slack, e-mail and generic webhooks, deduplicated, rate limited, retried."""

from hean.alerts.channels import Channel, DeliveryError, EmailChannel, SlackChannel, WebhookChannel
from hean.alerts.dispatcher import AlertDispatcher
from hean.alerts.policy import AlertGate, Backoff

__all__ = [
    "AlertDispatcher",
    "AlertGate",
    "Backoff",
    "Channel",
    "DeliveryError",
    "EmailChannel",
    "SlackChannel",
    "WebhookChannel",
]
