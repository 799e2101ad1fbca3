"""NATS users and per-subject permissions for every service, rendered into server config.

The safety chain (only the risk service approves orders and publishes the risk state, only the
router reports fills) is enforced by the broker as well as by the code: a compromised or buggy
strategy engine cannot publish an order intent because its NATS user may not. Every grant is
built from the routes in ``hean_proto.subjects``, so a renamed subject changes the
permissions with it; ``deploy/nats/auth.conf`` (and its copy in the Kubernetes base) is this
module's output and a test fails when they drift.

Passwords never appear in the config: each user's password is read by nats-server from the
environment variable ``HEAN_NATS_PASSWORD_<SERVICE>`` (a Docker or Kubernetes secret), and each
service reads its own from the file named by ``HEAN_NATS_PASSWORD_FILE``.

``python -m hean.natsauth write`` regenerates the files, ``check`` compares them, ``secrets DIR``
creates a random password file per user where none exists yet (``DIR/<user>/password``) and
``k8s-secret DIR`` prints them as the Kubernetes Secret ``hean-nats-auth``.
"""

from __future__ import annotations

import argparse
import base64
import re
import secrets
import string
import sys
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from hean.registry import SERVICES
from hean_proto import subjects as sj

ACCOUNT = "HEAN"
OPERATOR = "hean-operator"
"""The user of the command-line tools (``hean tap``, ``status``, ``risk``, ``data import``)."""

REPO = Path(__file__).resolve().parents[2]
OUTPUTS = (
    Path("deploy/nats/auth.conf"),
    Path("deploy/k8s/base/nats/auth.conf"),
)


@dataclass(frozen=True)
class Grant:
    """What one NATS user may do.

    ``publish``/``subscribe`` are application subjects; ``consume`` names the streams the user
    may create consumers on and read (durable or ordered); ``kv`` the buckets it owns,
    ``kv_read`` those it may only read.
    """

    user: str
    publish: tuple[str, ...]
    subscribe: tuple[str, ...]
    consume: tuple[str, ...] = ()
    kv: tuple[str, ...] = ()
    kv_read: tuple[str, ...] = ()


MARKET_DATA = (
    sj.FUNDING.pattern(),
    sj.OPEN_INTEREST.pattern(),
    sj.PRICE.pattern(),
    sj.BOOK.pattern(),
    sj.LIQUIDATION.pattern(),
)
_TRADING = "HEAN_TRADING"
_SIGNALS = "HEAN_SIGNALS"
_DECISIONS = "HEAN_DECISIONS"
_HISTORY = "HEAN_HISTORY"
_ALERTS = "HEAN_ALERTS"


def _stream(name: str) -> sj.StreamSpec:
    for spec in sj.STREAMS:
        if spec.name == name:
            return spec
    raise KeyError(name)


def service_grants() -> dict[str, Grant]:
    """The application-level grants, one per service of the registry."""
    g = {
        "funding-collector": Grant(
            "funding-collector",
            publish=(*MARKET_DATA, sj.SPREAD.pattern(), sj.ALERT.pattern()),
            subscribe=(),
        ),
        "listing-scanner": Grant(
            "listing-scanner",
            publish=(sj.LISTING.pattern(), sj.ALERT.pattern()),
            subscribe=(sj.RISK_STATE.prefix, sj.ALERT.pattern(), sj.LISTING.pattern()),
            consume=(_TRADING, _ALERTS),
            kv=(sj.KV_LISTINGS,),
        ),
        "funding-predictor": Grant(
            "funding-predictor",
            publish=(sj.PRED_FUNDING.pattern(),),
            subscribe=(sj.FUNDING.pattern(),),
            consume=(_HISTORY,),
        ),
        "liquidation-predictor": Grant(
            "liquidation-predictor",
            publish=(sj.PRED_CASCADE.pattern(),),
            subscribe=MARKET_DATA,
            consume=(_HISTORY,),  # rebuilds its bars from stored snapshots at start
        ),
        "strategy-engine": Grant(
            "strategy-engine",
            publish=(sj.SIGNAL.pattern(),),
            subscribe=(
                *MARKET_DATA,
                sj.SPREAD.pattern(),
                sj.LISTING.pattern(),
                sj.PRED_FUNDING.pattern(),
                sj.PRED_CASCADE.pattern(),
                sj.RISK_DECISION.pattern(),
                sj.RISK_STATE.prefix,
                sj.POSITION.pattern(),
                sj.FILL.pattern(),
                sj.FUNDING_PAYMENT.pattern(),
                sj.ORDER_UPDATE.pattern(),
            ),
        ),
        "risk-killswitch": Grant(
            "risk-killswitch",
            publish=(
                sj.RISK_DECISION.pattern(),
                sj.RISK_STATE.prefix,
                sj.ORDER_APPROVED.pattern(),
                sj.CONTROL.subject("order-router"),
                sj.ALERT.pattern(),
            ),
            subscribe=(
                sj.SIGNAL.pattern(),
                sj.PRICE.pattern(),
                sj.BOOK.pattern(),
                sj.FUNDING.pattern(),
                sj.POSITION.pattern(),
                sj.FILL.pattern(),
                sj.ORDER_UPDATE.pattern(),
                sj.FUNDING_PAYMENT.pattern(),
            ),
            consume=(_TRADING, _SIGNALS, _DECISIONS),  # decisions: read back at start
            kv=(sj.KV_RISK,),
        ),
        "order-router": Grant(
            "order-router",
            publish=(
                sj.ORDER_UPDATE.pattern(),
                sj.FILL.pattern(),
                sj.POSITION.pattern(),
                sj.FUNDING_PAYMENT.pattern(),
                sj.ALERT.pattern(),
            ),
            subscribe=(
                sj.ORDER_APPROVED.pattern(),
                sj.RISK_STATE.prefix,
                sj.PRICE.pattern(),
                sj.BOOK.pattern(),
                sj.FUNDING.pattern(),
            ),
            consume=(_TRADING,),
            kv=(sj.KV_ROUTER,),
            # the latched kill-switch record, read at start (never written by the router)
            kv_read=(sj.KV_RISK,),
        ),
    }
    missing = {s.name for s in SERVICES} ^ set(g)
    if missing:
        raise AssertionError(f"grants and registry disagree on {sorted(missing)}")
    return g


def _js_common() -> list[str]:
    """Stream admin every service needs: each one ensures the streams exist at start."""
    out = ["$JS.API.INFO", "$JS.API.STREAM.NAMES", "$JS.API.STREAM.LIST"]
    for spec in sj.STREAMS:
        out += [f"$JS.API.STREAM.{op}.{spec.name}" for op in ("CREATE", "UPDATE", "INFO")]
    return out


def _js_consume(stream: str) -> list[str]:
    return [
        f"$JS.API.CONSUMER.CREATE.{stream}",
        f"$JS.API.CONSUMER.CREATE.{stream}.>",
        f"$JS.API.CONSUMER.DURABLE.CREATE.{stream}.>",
        f"$JS.API.CONSUMER.INFO.{stream}.>",
        f"$JS.API.CONSUMER.MSG.NEXT.{stream}.>",
        f"$JS.API.CONSUMER.DELETE.{stream}.>",
        f"$JS.ACK.{stream}.>",
    ]


def _kv_read(bucket: str) -> list[str]:
    stream = f"KV_{bucket}"
    return [
        f"$JS.API.STREAM.INFO.{stream}",
        f"$JS.API.DIRECT.GET.{stream}",
        f"$JS.API.DIRECT.GET.{stream}.>",
        f"$JS.API.STREAM.MSG.GET.{stream}",
    ]


def _kv_own(bucket: str) -> list[str]:
    return [
        f"$JS.API.STREAM.CREATE.KV_{bucket}",
        f"$JS.API.STREAM.UPDATE.KV_{bucket}",  # its replicas raised to the deployment's
        *_kv_read(bucket),
        f"$KV.{bucket}.>",
    ]


def permissions(grant: Grant) -> tuple[list[str], list[str]]:
    """Full publish and subscribe allow-lists of a service user (application + plumbing)."""
    name = grant.user
    pub = [
        *grant.publish,
        sj.HEARTBEAT.subject(name),
        sj.DEAD_LETTER.subject(name),
        *_js_common(),
    ]
    for stream in grant.consume:
        pub += _js_consume(stream)
    for bucket in grant.kv:
        pub += _kv_own(bucket)
    for bucket in grant.kv_read:
        # creating the empty bucket is allowed so that start order does not matter
        pub += [f"$JS.API.STREAM.CREATE.KV_{bucket}", *_kv_read(bucket)]
    sub = [
        *grant.subscribe,
        sj.CONTROL.subject(name),
        sj.CONTROL.subject("all"),
        sj.SERVICE_ENDPOINT.pattern(name),
        # the micro services API (``nats micro ls``): $SRV.PING, $SRV.PING.<name>[.<id>]
        "$SRV.*",
        f"$SRV.*.{name}",
        f"$SRV.*.{name}.*",
        "_INBOX.>",
    ]
    return _dedupe(pub), _dedupe(sub)


def operator_permissions() -> tuple[list[str], list[str]]:
    """The CLI: reads everything, halts through the risk service, imports funding history.

    It may not publish intents, fills or the risk state: an operator stops trading by asking
    the risk service, which latches HALTED and tells the router.
    """
    pub = [
        sj.CONTROL.subject("risk-killswitch"),
        sj.SERVICE_ENDPOINT.pattern(),
        "$SRV.>",
        sj.FUNDING.pattern(),
        *_js_common(),
        "$JS.API.STREAM.INFO.>",
        "$JS.API.STREAM.MSG.GET.>",
        "$JS.API.DIRECT.GET.>",
        "$JS.API.CONSUMER.CREATE.>",
        "$JS.API.CONSUMER.INFO.>",
        "$JS.API.CONSUMER.NAMES.>",
        "$JS.API.CONSUMER.LIST.>",
        "$JS.API.CONSUMER.MSG.NEXT.>",
        "$JS.API.CONSUMER.DELETE.>",
    ]
    sub = [f"{sj.ROOT}.>", "_INBOX.>"]
    return _dedupe(pub), _dedupe(sub)


def _dedupe(items: list[str]) -> list[str]:
    return list(dict.fromkeys(items))


def password_env(user: str) -> str:
    """The environment variable nats-server reads the user's password from."""
    return "HEAN_NATS_PASSWORD_" + user.upper().replace("-", "_")


def users() -> list[str]:
    return [s.name for s in SERVICES] + [OPERATOR]


def _quote(items: list[str]) -> str:
    inner = ",\n".join(f'            "{s}"' for s in items)
    return "[\n" + inner + "\n          ]"


def _user_block(user: str, pub: list[str], sub: list[str], password: str | None) -> str:
    value = f"${password_env(user)}" if password is None else f'"{password}"'
    return (
        "      {\n"
        f'        user: "{user}"\n'
        f"        password: {value}\n"
        "        permissions: {\n"
        f"          publish: {{ allow: {_quote(pub)} }}\n"
        f"          subscribe: {{ allow: {_quote(sub)} }}\n"
        "          # replies to requests received (micro status, $SRV pings, flow control)\n"
        "          allow_responses: true\n"
        "        }\n"
        "      }"
    )


def render(passwords: Mapping[str, str] | None = None) -> str:
    """The ``accounts`` block for nats-server: one account, one user per service.

    Without ``passwords`` each password is an environment reference (the committed files);
    with them the values are written in, for ``hean up``'s private copy in its state dir.
    """
    pw = dict(passwords or {})
    if passwords is not None:
        for user, value in pw.items():
            if not re.fullmatch(r"[A-Za-z][A-Za-z0-9]*", value):
                raise ValueError(f"NATS password of {user}: letters and digits only")
    blocks = []
    for name, grant in service_grants().items():
        blocks.append(_user_block(name, *permissions(grant), pw.get(name) if pw else None))
    blocks.append(_user_block(OPERATOR, *operator_permissions(), pw.get(OPERATOR) if pw else None))
    return (
        "# Generated by `python -m hean.natsauth write` from proto/subjects.py and\n"
        "# libs/hean/natsauth.py. Do not edit: tests/test_deploy.py fails when it drifts.\n"
        "# Passwords come from the environment of nats-server (HEAN_NATS_PASSWORD_<USER>).\n"
        "accounts {\n"
        f"  {ACCOUNT} {{\n"
        "    jetstream: enabled\n"
        "    users: [\n" + ",\n".join(blocks) + "\n    ]\n"
        "  }\n"
        "}\n"
    )


def write(root: Path = REPO) -> list[Path]:
    text = render()
    written = []
    for rel in OUTPUTS:
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
        written.append(path)
    return written


def stale(root: Path = REPO) -> list[Path]:
    """Generated files whose content differs from what ``render`` gives now."""
    text = render()
    return [
        root / rel
        for rel in OUTPUTS
        if not (root / rel).is_file() or (root / rel).read_text() != text
    ]


def new_password(length: int = 40) -> str:
    """Letters and digits, starting with a letter.

    nats-server parses an environment variable it substitutes as a config value: a password
    starting with a digit or ``-`` would be read as a number and the server refuses to start.
    """
    alphabet = string.ascii_letters + string.digits
    return secrets.choice(string.ascii_letters) + "".join(
        secrets.choice(alphabet) for _ in range(length - 1)
    )


def password_path(directory: Path, user: str) -> Path:
    """``DIR/<user>/password``: one directory per user so each container mounts only its own."""
    return directory / user / "password"


def read_passwords(directory: Path) -> dict[str, str]:
    return {u: password_path(directory, u).read_text().strip() for u in users()}


def make_secrets(directory: Path) -> list[Path]:
    """A random password file per user (mode 0600) unless one exists: safe to run again."""
    made = []
    for user in users():
        path = password_path(directory, user)
        if path.exists() and path.read_text().strip():
            continue
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(new_password() + "\n")
        path.chmod(0o600)
        made.append(path)
    return made


def k8s_secret(directory: Path, name: str = "hean-nats-auth", namespace: str = "hean") -> str:
    """A Secret manifest (one key per user) from the password files, for ``kubectl apply``."""
    data = {
        user: base64.b64encode(password_path(directory, user).read_text().strip().encode()).decode()
        for user in users()
    }
    lines = [
        "apiVersion: v1",
        "kind: Secret",
        "type: Opaque",
        "metadata:",
        f"  name: {name}",
        f"  namespace: {namespace}",
        "data:",
        *(f"  {user}: {value}" for user, value in data.items()),
    ]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m hean.natsauth", description=__doc__)
    sub = p.add_subparsers(dest="cmd", required=True)
    sub.add_parser("write", help="regenerate the NATS auth files in the repository")
    sub.add_parser("check", help="exit 1 when a generated file is out of date")
    sub.add_parser("print", help="print the auth block")
    s = sub.add_parser("secrets", help="create missing password files in DIR")
    s.add_argument("dir", type=Path)
    k = sub.add_parser("k8s-secret", help="print the Kubernetes Secret of the passwords in DIR")
    k.add_argument("dir", type=Path)
    k.add_argument("--namespace", default="hean")
    args = p.parse_args(argv)
    if args.cmd == "write":
        for path in write():
            print(f"wrote {path}")
    elif args.cmd == "check":
        bad = stale()
        for path in bad:
            print(f"out of date: {path} (run python -m hean.natsauth write)")
        return 1 if bad else 0
    elif args.cmd == "print":
        sys.stdout.write(render())
    elif args.cmd == "k8s-secret":
        sys.stdout.write(k8s_secret(args.dir, namespace=args.namespace))
    else:
        for path in make_secrets(args.dir):
            print(f"created {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
