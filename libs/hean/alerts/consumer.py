"""Feeds Alert events from the bus (durable consumer on ``hean.alert.>``) to a dispatcher.

The consumer is durable so that alerts raised while the delivering service was down are
delivered when it comes back; a message is acknowledged once it is gated and queued on every
channel, so a channel that is down does not hold the stream back.
"""

from __future__ import annotations

import logging

from hean.alerts.dispatcher import AlertDispatcher
from hean.bus.base import Bus, Message, Subscription
from hean_proto import codec
from hean_proto.events import Alert
from hean_proto.subjects import ALERT

log = logging.getLogger("hean.alerts")

DURABLE = "alert-delivery"


async def consume_alerts(
    bus: Bus, dispatcher: AlertDispatcher, *, durable: str = DURABLE
) -> Subscription:
    async def on_message(message: Message) -> None:
        try:
            alert = codec.decode_as(message.data, Alert)
        except codec.DecodeError as exc:
            log.warning("refused alert on %s: %s", message.subject, exc)
            return
        outcome = dispatcher.submit(alert)
        log.info("alert %s: %s", alert.key, outcome)

    return await bus.subscribe(ALERT.pattern(), on_message, durable=durable)
