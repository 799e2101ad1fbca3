"""Venue access: one client per venue over ccxt, live or against the simulator."""

from __future__ import annotations

from typing import TYPE_CHECKING

from hean.venues.base import VenueClient, VenueError

if TYPE_CHECKING:
    from hean.config import ServiceSettings
    from hean.runtime.runner import ServiceContext
    from hean.venues.ccxt_client import CcxtVenueClient

__all__ = ["VenueClient", "VenueError", "bind_service", "build_client"]


def build_client(
    venue: str, settings: ServiceSettings, private: bool = False, market: str = "perp"
) -> CcxtVenueClient:
    """The client for ``venue`` as configured: the simulator's URL in sim mode, the venue's own
    otherwise. ``private`` requires API keys (in live mode) and fails at start without them;
    ``market="spot"`` trades the venue's spot pairs (the spot leg of a hedge)."""
    from hean.venues.ccxt_client import CcxtVenueClient
    from hean.venues.credentials import load_credentials

    creds = load_credentials(venue, settings.venue_mode)
    if private and not creds.present:
        raise ValueError(
            f"HEAN_{venue.upper()}_API_KEY / _SECRET: private access to {venue} needs API keys"
        )
    base_url = settings.sim_url if settings.venue_mode == "sim" else None
    return CcxtVenueClient(
        venue,
        creds if (private or settings.venue_mode == "sim") else None,
        base_url=base_url,
        market="spot" if market == "spot" else "perp",
    )


def bind_service(clients: list[object], ctx: ServiceContext) -> None:
    """Have venue clients count into the service's registry (its /metrics shows venue health)
    and dead-letter every item they refuse, so bad venue data is kept, not just dropped."""
    import asyncio
    import json

    from hean.bus.base import Message
    from hean.venues.metrics import VenueMetrics

    shared = VenueMetrics(ctx.metrics.registry)
    tasks: set[asyncio.Task] = set()

    def dead_letter(exc: VenueError, item: object) -> None:
        payload = json.dumps(item, default=str, sort_keys=True).encode()
        message = Message(f"venue.{exc.venue}.{exc.endpoint}", payload)
        task = asyncio.get_running_loop().create_task(
            ctx.runtime.dead_letter(message, str(exc), "venue_data")
        )
        tasks.add(task)
        task.add_done_callback(tasks.discard)

    for client in clients:
        bind = getattr(client, "bind_metrics", None)
        if bind is not None:
            bind(shared)
        if hasattr(client, "on_bad_data"):
            client.on_bad_data = dead_letter  # type: ignore[attr-defined]
