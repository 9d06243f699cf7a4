#!/usr/bin/env bash
# switchyard-healthcheck [--listening] [HOST:]PORT [PATH]
#
# Exits 0 when an HTTP GET of PATH (default /debug/switchyard.json) on
# HOST:PORT (HOST defaults to 127.0.0.1) answers 200 within 5 s, else 1,
# saying why on stderr. With --listening the answer must also be the debug
# endpoint's JSON with at least one listener: the process serves, rather than
# only having started its endpoint (a gateway's starts when it first connects
# to a backend, before it listens).
#
# Needs nothing but bash (its /dev/tcp), for images without curl:
# deploy/Dockerfile installs it as /usr/local/bin/switchyard-healthcheck and
# deploy/compose.yaml's health checks call it on the debug endpoint
# (SWITCHYARD_DEBUG_ADDR, docs/debug-endpoint.md).
set -euo pipefail

usage() {
  echo "usage: switchyard-healthcheck [--listening] [HOST:]PORT [PATH]" >&2
  exit 2
}
listening=
if [ "${1:-}" = --listening ]; then
  listening=1
  shift
fi
if [ $# -lt 1 ] || [ $# -gt 2 ]; then
  usage
fi
target=$1
path=${2:-/debug/switchyard.json}
case $target in
  *:*) host=${target%:*} port=${target##*:} ;;
  *) host=127.0.0.1 port=$target ;;
esac
case $port in
  '' | *[!0-9]*)
    echo "switchyard-healthcheck: $port is not a port number" >&2
    exit 2
    ;;
esac

# Connecting to an address that drops packets would hang: bound the whole
# check (coreutils' timeout; Docker's and compose's checks have their own).
if [ -z "${SWITCHYARD_HEALTHCHECK_BOUNDED:-}" ] && command -v timeout >/dev/null; then
  SWITCHYARD_HEALTHCHECK_BOUNDED=1 exec timeout 10 "$0" "$@"
fi
if ! { exec 3<>"/dev/tcp/$host/$port"; } 2>/dev/null; then
  echo "switchyard-healthcheck: cannot connect to $host:$port" >&2
  exit 1
fi
# The endpoint answers loopback callers only with Host: localhost or an IP.
printf 'GET %s HTTP/1.0\r\nHost: localhost\r\nConnection: close\r\n\r\n' "$path" >&3
if ! IFS= read -r -t 5 status <&3; then
  echo "switchyard-healthcheck: no answer from $host:$port within 5 s" >&2
  exit 1
fi
status=${status%$'\r'}
case $status in
  'HTTP/1.'[01]' 200 '*) ;;
  *)
    echo "switchyard-healthcheck: GET $path on $host:$port answered: $status" >&2
    exit 1
    ;;
esac
if [ -n "$listening" ]; then
  # The rest of the answer (headers, then the body; Connection: close ends it).
  body=
  while IFS= read -r -t 5 line || [ -n "$line" ]; do
    body+=$line
  done <&3
  compact=${body//[[:space:]]/}
  if [[ $compact != *'"listeners":[{'* ]]; then
    echo "switchyard-healthcheck: $host:$port answers but lists no listener yet" >&2
    exit 1
  fi
fi
exec 3<&-
