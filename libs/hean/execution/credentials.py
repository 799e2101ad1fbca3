"""API keys for live trading: from the environment or from files, never logged.

For venue ``bybit`` the key is ``HEAN_BYBIT_API_KEY`` or the contents of the file named by
``HEAN_BYBIT_API_KEY_FILE``; likewise ``_API_SECRET`` and, where the venue needs one (OKX),
``_API_PASSWORD``. Files suit Docker and Kubernetes secrets.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from hean.config import ConfigError

NEEDS_PASSWORD = frozenset({"okx"})


@dataclass(frozen=True)
class Credentials:
    venue: str
    api_key: str = field(repr=False)
    secret: str = field(repr=False)
    password: str | None = field(default=None, repr=False)

    def __repr__(self) -> str:  # keys never reach a log line or a traceback
        return f"Credentials(venue={self.venue!r}, api_key=***, secret=***)"


def _read(venue: str, name: str, env: Mapping[str, str]) -> str | None:
    var = f"HEAN_{venue.upper()}_{name}"
    if env.get(var):
        return env[var].strip()
    path = env.get(f"{var}_FILE")
    if path:
        p = Path(path)
        if not p.is_file():
            raise ConfigError(f"{var}_FILE={path}: file not found")
        value = p.read_text().strip()
        if not value:
            raise ConfigError(f"{var}_FILE={path}: file is empty")
        return value
    return None


def load_credentials(venue: str, env: Mapping[str, str] | None = None) -> Credentials:
    """The keys of one venue, or ConfigError naming the missing setting (never its value)."""
    env = os.environ if env is None else env
    key = _read(venue, "API_KEY", env)
    secret = _read(venue, "API_SECRET", env)
    password = _read(venue, "API_PASSWORD", env)
    missing = [n for n, v in (("API_KEY", key), ("API_SECRET", secret)) if not v]
    if venue in NEEDS_PASSWORD and not password:
        missing.append("API_PASSWORD")
    if missing:
        names = ", ".join(f"HEAN_{venue.upper()}_{m}" for m in missing)
        raise ConfigError(f"live trading on {venue} needs {names} (or the same with _FILE)")
    return Credentials(venue, key or "", secret or "", password)
