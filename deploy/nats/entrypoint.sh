#!/bin/sh
# Export each user's password (DIR/<user>/password) as HEAN_NATS_PASSWORD_<USER>, the
# variables auth.conf refers to, then become nats-server. A missing file leaves its variable
# unset and nats-server refuses to start: no user ever runs without a password.
set -eu
dir="${HEAN_NATS_PASSWORD_DIR:-/run/hean-nats}"
for f in "$dir"/*/password; do
  [ -f "$f" ] || continue
  user="$(basename "$(dirname "$f")")"
  var="HEAN_NATS_PASSWORD_$(printf '%s' "$user" | tr 'a-z-' 'A-Z_')"
  export "$var=$(cat "$f")"
done
exec nats-server "$@"
