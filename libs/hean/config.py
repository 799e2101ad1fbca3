"""Settings from environment variables (``HEAN_`` prefix) and an optional file.

Precedence: defaults, then the file named by ``HEAN_CONFIG`` (YAML, JSON or TOML; top-level
keys for every service, a section named after the service for one), then the environment.
A wrong value stops the service at start with one line naming the setting.
"""

from __future__ import annotations

import json
import os
import re
import socket
import typing
from pathlib import Path
from typing import Annotated, Any, Literal, TypeVar

import msgspec
from msgspec import Meta

Port = Annotated[int, Meta(ge=0, le=65535)]


class ConfigError(ValueError):
    """A setting that cannot be used; the message names it."""


class ServiceSettings(msgspec.Struct, kw_only=True):
    """Settings every service understands."""

    nats_url: str = "nats://127.0.0.1:4222"
    nats_creds: str | None = None
    nats_user: str | None = None
    nats_password_file: str | None = None
    nats_tls_ca_file: str | None = None
    nats_connect_timeout_s: Annotated[float, Meta(gt=0)] = 10.0
    nats_replicas: Annotated[int, Meta(ge=1, le=5)] = 1
    health_host: str = "127.0.0.1"
    health_port: Port = 0
    heartbeat_s: Annotated[float, Meta(gt=0)] = 2.0
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = "INFO"
    log_json: bool = True
    instance: str = ""
    data_dir: str | None = None
    state_dir: str = ".hean"
    venues: list[str] = msgspec.field(default_factory=lambda: ["bybit", "binance", "okx"])
    venue_mode: Literal["sim", "live"] = "sim"
    sim_url: str = "http://127.0.0.1:8110"
    max_event_bytes: Annotated[int, Meta(gt=0, le=8 * 1024 * 1024)] = 256 * 1024
    pending_msgs_limit: Annotated[int, Meta(gt=0)] = 50_000
    """Messages a subscription may hold unhandled; beyond it NATS drops the excess (a slow
    consumer) rather than let memory grow."""
    slow_consumer_window_s: Annotated[float, Meta(gt=0)] = 30.0
    """How long a service reports not ready (``keeping_up``) after messages were dropped."""


S = TypeVar("S", bound=ServiceSettings)


def _read_file(path: str) -> dict[str, Any]:
    p = Path(path)
    if not p.exists():
        raise ConfigError(f"HEAN_CONFIG={path}: file not found")
    raw = p.read_bytes()
    try:
        if p.suffix in (".yaml", ".yml"):
            data = msgspec.yaml.decode(raw)
        elif p.suffix == ".toml":
            data = msgspec.toml.decode(raw)
        else:
            data = msgspec.json.decode(raw)
    except msgspec.DecodeError as exc:
        raise ConfigError(f"HEAN_CONFIG={path}: {exc}") from None
    if not isinstance(data, dict):
        raise ConfigError(f"HEAN_CONFIG={path}: expected a mapping at the top level")
    return data


def _env_value(raw: str, annotation: Any) -> Any:
    origin = typing.get_origin(annotation)
    args = typing.get_args(annotation)
    if origin is Annotated:
        return _env_value(raw, args[0])
    if origin is list or annotation is list:
        if raw.strip().startswith("["):
            return json.loads(raw)
        return [part.strip() for part in raw.split(",") if part.strip()]
    if origin in (typing.Union, getattr(__import__("types"), "UnionType", None)):
        if raw == "" and type(None) in args:
            return None
        non_none = [a for a in args if a is not type(None)]
        if len(non_none) == 1:
            return _env_value(raw, non_none[0])
    if annotation is bool:
        low = raw.strip().lower()
        if low in ("1", "true", "yes", "on"):
            return True
        if low in ("0", "false", "no", "off"):
            return False
    return raw


def load_settings(
    cls: type[S], service: str = "", env: dict[str, str] | None = None, **overrides: Any
) -> S:
    """Build settings for ``service``; raise ConfigError naming the bad setting."""
    env = dict(os.environ if env is None else env)
    values: dict[str, Any] = {}
    path = env.get("HEAN_CONFIG")
    if path:
        data = _read_file(path)
        section = data.get(service.replace("-", "_"), data.get(service, {}))
        values.update({k: v for k, v in data.items() if not isinstance(v, dict)})
        if isinstance(section, dict):
            values.update(section)
    hints = typing.get_type_hints(cls, include_extras=True)
    for field in msgspec.structs.fields(cls):
        key = "HEAN_" + field.name.upper()
        if key in env:
            values[field.name] = _env_value(env[key], hints[field.name])
    values.update(overrides)
    try:
        settings = msgspec.convert(values, cls, strict=False)
    except msgspec.ValidationError as exc:
        text = str(exc)
        match = re.search(r"at `\$\.(\w+)", text)
        name = f"HEAN_{match.group(1).upper()}" if match else "configuration"
        raise ConfigError(f"{name}: {text.split(' - at ')[0]}") from None
    _check_url(settings.nats_url)
    return settings


def _check_url(url: str) -> None:
    for part in url.split(","):
        if not re.match(r"^(nats|tls|ws|wss)://[^/\s]+$", part.strip()):
            raise ConfigError(f"HEAN_NATS_URL: not a NATS URL: {part!r}")


def check_port_free(host: str, port: int, setting: str = "HEAN_HEALTH_PORT") -> None:
    """Fail at start, naming the setting, when a port cannot be bound."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind((host, port))
        except OSError as exc:
            raise ConfigError(
                f"{setting}={port}: cannot listen on {host}:{port} ({exc.strerror})"
            ) from None


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port that is free right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        return s.getsockname()[1]
