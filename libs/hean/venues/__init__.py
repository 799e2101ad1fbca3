"""Venue access: one client per venue over ccxt, live or against the simulator."""

from __future__ import annotations

from typing import TYPE_CHECKING

from hean.venues.base import VenueClient, VenueError

if TYPE_CHECKING:
    from hean.config import ServiceSettings
    from hean.venues.ccxt_client import CcxtVenueClient

__all__ = ["VenueClient", "VenueError", "bind_metrics", "build_client"]


def build_client(venue: str, settings: ServiceSettings, private: bool = False) -> CcxtVenueClient:
    """The client for ``venue`` as configured: the simulator's URL in sim mode, the venue's own
    otherwise. ``private`` requires API keys (in live mode) and fails at start without them."""
    from hean.venues.ccxt_client import CcxtVenueClient
    from hean.venues.credentials import load_credentials

    creds = load_credentials(venue, settings.venue_mode)
    if private and not creds.present:
        raise ValueError(
            f"HEAN_{venue.upper()}_API_KEY / _SECRET: private access to {venue} needs API keys"
        )
    base_url = settings.sim_url if settings.venue_mode == "sim" else None
    return CcxtVenueClient(
        venue, creds if (private or settings.venue_mode == "sim") else None, base_url=base_url
    )


def bind_metrics(clients: list[object], registry: object) -> None:
    """Have venue clients count into a service's registry, so /metrics shows venue health."""
    from hean.venues.metrics import VenueMetrics

    shared: VenueMetrics | None = None
    for client in clients:
        bind = getattr(client, "bind_metrics", None)
        if bind is not None:
            shared = shared or VenueMetrics(registry)  # type: ignore[arg-type]
            bind(shared)
