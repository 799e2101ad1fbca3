"""Container health check: exit 0 when the service in this container answers ``/healthz``.

Docker's HEALTHCHECK runs this inside the container. The port is ``HEAN_HEALTH_PORT`` when
set, else the registry port of the service named on PID 1's command line (``hean service
NAME``), so one image serves every service without a per-service health check command.
The exchange simulator (``hean sim``) is checked on ``/sim/state`` at its port.
"""

from __future__ import annotations

import os
import sys
import urllib.error
import urllib.request
from pathlib import Path

from hean.registry import BY_NAME, DEFAULT_PORT_BASE, SIM_PORT_OFFSET


def target(argv: list[str], env: dict[str, str]) -> str:
    """The URL to probe for a process started with ``argv``."""
    if "sim" in argv[:3] or (len(argv) > 1 and argv[1] == "sim"):
        port = DEFAULT_PORT_BASE + SIM_PORT_OFFSET
        if "--port" in argv:
            port = int(argv[argv.index("--port") + 1])
        return f"http://127.0.0.1:{port}/sim/state"
    if env.get("HEAN_HEALTH_PORT"):
        return f"http://127.0.0.1:{int(env['HEAN_HEALTH_PORT'])}/healthz"
    names = [a for a in argv if a in BY_NAME]
    if not names:
        raise ValueError(f"no service on the command line {argv!r}; set HEAN_HEALTH_PORT")
    return f"http://127.0.0.1:{BY_NAME[names[0]].port()}/healthz"


def _pid1_argv() -> list[str]:
    raw = Path("/proc/1/cmdline").read_bytes()
    return [a.decode() for a in raw.split(b"\0") if a]


def main(argv: list[str] | None = None) -> int:
    cmdline = argv if argv is not None else _pid1_argv()
    try:
        url = target(cmdline, dict(os.environ))
        with urllib.request.urlopen(url, timeout=3) as resp:
            ok = resp.status == 200
    except (OSError, ValueError, urllib.error.URLError) as exc:
        print(f"unhealthy: {exc}", file=sys.stderr)
        return 1
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:] or None))
