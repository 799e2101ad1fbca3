"""API credentials from the environment or from files; never logged, never in events.

``HEAN_<VENUE>_API_KEY``, ``HEAN_<VENUE>_API_SECRET`` and ``HEAN_<VENUE>_API_PASSPHRASE``
hold the values; each has a ``_FILE`` variant naming a file (a mounted Kubernetes or Docker
secret) that wins over the plain variable.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

SIM_KEY, SIM_SECRET, SIM_PASSPHRASE = "sim-key", "sim-secret", "sim-passphrase"


@dataclass(frozen=True)
class Credentials:
    api_key: str = field(default="", repr=False)
    secret: str = field(default="", repr=False)
    passphrase: str = field(default="", repr=False)

    @property
    def present(self) -> bool:
        return bool(self.api_key and self.secret)

    def __repr__(self) -> str:
        return f"Credentials(api_key={'***' if self.api_key else ''!r})"


def _read(env: dict[str, str], name: str) -> str:
    path = env.get(f"{name}_FILE")
    if path:
        try:
            return Path(path).read_text().strip()
        except OSError as exc:
            raise ValueError(f"{name}_FILE={path}: {exc.strerror}") from None
    return env.get(name, "").strip()


def load_credentials(venue: str, mode: str, env: dict[str, str] | None = None) -> Credentials:
    """Keys for ``venue``; in sim mode the simulator's own keys unless others are given."""
    env = dict(os.environ if env is None else env)
    prefix = f"HEAN_{venue.upper()}_API"
    creds = Credentials(
        api_key=_read(env, f"{prefix}_KEY"),
        secret=_read(env, f"{prefix}_SECRET"),
        passphrase=_read(env, f"{prefix}_PASSPHRASE"),
    )
    if mode == "sim" and not creds.present:
        return Credentials(SIM_KEY, SIM_SECRET, SIM_PASSPHRASE)
    return creds
