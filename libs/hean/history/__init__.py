"""Funding history in the JetStream stream HEAN_HISTORY: read back, export, import."""

from hean.history.store import (
    HISTORY_COLUMNS,
    ImportResult,
    canonical_symbol,
    events_from_frame,
    events_to_frame,
    export_parquet,
    import_events,
    import_file,
    read_frame,
    read_funding,
    read_market_history,
)

__all__ = [
    "HISTORY_COLUMNS",
    "ImportResult",
    "canonical_symbol",
    "events_from_frame",
    "events_to_frame",
    "export_parquet",
    "import_events",
    "import_file",
    "read_frame",
    "read_funding",
    "read_market_history",
]
