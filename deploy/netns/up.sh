#!/usr/bin/env bash
# deploy/netns/up.sh: the cluster example on six "hosts" made on this
# machine (root): network namespaces inventory-1, inventory-2, inventory-3
# (three replicas of the inventory backend), pricing, gateway and client,
# each with one interface on a bridge that lives in a seventh namespace (the
# switch), so nothing touches the machine's own network. The gateway
# spreads its inventory calls over the three replicas (round robin).
#
# It builds the binaries (cargo, when on PATH), makes a CA and certificates
# (SANs: each host's name, namespace and address), writes a discovery file
# with the hosts' addresses, starts the five servers in their namespaces in
# the background (QUIC 7443 with mutual TLS, debug endpoint 9090), and
# waits until each says `listening`. Then it prints how to run the client;
# deploy/netns/down.sh stops it all. Running it again while the cluster is
# up changes nothing; after a failure it starts afresh.
#
# Environment:
#   SY_NETNS_PREFIX  namespace name prefix (default sy-)
#   SY_NETNS_SUBNET  first three octets of the hosts' /24 (default 10.231.7)
#   SY_NETNS_STATE   logs, pid files, certificates, discovery file
#                    (default target/netns-cluster)
#   SY_NETNS_WAIT    seconds to wait for each server (default 60)
#   SY_BIN_DIR       where cluster and switchyard are (default target/release;
#                    when set, nothing is built)
set -euo pipefail
# shellcheck source-path=SCRIPTDIR source=common.sh
. "$(dirname "$0")/common.sh"
need_root up.sh
wait_secs=${SY_NETNS_WAIT:-60}

alive() {
  local pid
  pid=$(cat "$state/$1.pid" 2>/dev/null) && [ -n "$pid" ] && kill -0 "$pid" 2>/dev/null
}

print_client() {
  echo
  echo "the cluster is up; run the client on the client host:"
  echo "  $state/client.sh            # or, by hand:"
  echo "  $(cat "$state/client.cmd")"
  echo "debug endpoints (from any of the hosts), e.g.:"
  echo "  ip netns exec $(ns_of client) curl -s http://$(ip_of gateway):9090/debug/switchyard.json"
  local settings=
  [ -z "${SY_NETNS_PREFIX:-}" ] || settings+="SY_NETNS_PREFIX=$SY_NETNS_PREFIX "
  [ -z "${SY_NETNS_STATE:-}" ] || settings+="SY_NETNS_STATE=$SY_NETNS_STATE "
  echo "stop it all:"
  echo "  $settings$repo/deploy/netns/down.sh"
}

if [ -f "$state/up" ]; then
  all=1
  for host in "${servers[@]}"; do alive "$host" || all=; done
  if [ -n "$all" ]; then
    echo "already up (pids $(for host in "${servers[@]}"; do cat "$state/$host.pid"; done | paste -sd ' '))"
    print_client
    exit 0
  fi
fi
# Whatever a previous run left behind goes first.
"$repo/deploy/netns/down.sh" >/dev/null

# The binaries.
if [ -z "${SY_BIN_DIR:-}" ] && command -v cargo >/dev/null; then
  echo "building cluster and switchyard (release)"
  (cd "$repo" && cargo build --release --locked -q \
    -p switchyard-examples --bin cluster -p switchyard --bin switchyard)
fi
for exe in cluster switchyard; do
  if [ ! -x "$bin_dir/$exe" ]; then
    echo "up.sh: $bin_dir/$exe is missing; build it first:" >&2
    echo "  cargo build --release -p switchyard-examples --bin cluster -p switchyard --bin switchyard" >&2
    exit 1
  fi
done

mkdir -p "$state"
rm -rf "$state"/*.log "$state"/*.pid "$state/run"
mkdir "$state/run"

# From here on a failure leaves hosts behind: say how to remove them.
on_exit() {
  local status=$?
  if [ "$status" -ne 0 ]; then
    echo "up.sh failed; deploy/netns/down.sh removes what it made (same SY_NETNS_* settings)" >&2
  fi
}
trap on_exit EXIT

# The network: a bridge in the switch namespace, a veth pair per host.
ip netns add "$switch_ns"
ip -n "$switch_ns" link add br0 type bridge
ip -n "$switch_ns" link set br0 up
for host in "${hosts[@]}"; do
  ns=$(ns_of "$host")
  ip netns add "$ns"
  # Interface names have at most 15 bytes; these live in the switch only.
  ip link add name "p-$host" netns "$switch_ns" type veth peer name eth0 netns "$ns"
  ip -n "$switch_ns" link set "p-$host" master br0 up
  ip -n "$ns" addr add "$(ip_of "$host")/24" dev eth0
  ip -n "$ns" link set eth0 up
  ip -n "$ns" link set lo up
  echo "host $host: namespace $ns, $(ip_of "$host")"
done

# Certificates: the gateway's names storefront too (that is what the client
# asks for); the client's is what it shows the gateway under mutual TLS.
certs=$state/certs
rm -rf "$certs"
inventory_certs=()
for host in "${inventory_hosts[@]}"; do
  inventory_certs+=("$host,inventory,$(ns_of "$host"),$(ip_of "$host")")
done
"$bin_dir/switchyard" certs --out "$certs" \
  "${inventory_certs[@]}" \
  "pricing,$(ns_of pricing),$(ip_of pricing)" \
  "gateway,storefront,$(ns_of gateway),$(ip_of gateway)" \
  "client,$(ns_of client),$(ip_of client)" >"$state/certs.log"

# Discovery: every name at its host's address, over QUIC (mutual TLS is on, so
# the servers listen on no TCP port: TCP carries no TLS); inventory has one
# [[services.inventory.replicas]] table per replica.
discovery=$state/discovery.toml
{
  echo "# written by deploy/netns/up.sh"
  for host in "${inventory_hosts[@]}"; do
    printf '[[services.inventory.replicas]]\naddresses = ["quic://%s:7443"]\n\n' "$(ip_of "$host")"
  done
  for pair in pricing:pricing storefront:gateway; do
    name=${pair%%:*} host=${pair##*:}
    printf '[services.%s]\naddresses = ["quic://%s:7443"]\n\n' "$name" "$(ip_of "$host")"
  done
} >"$discovery"

# The environment of a process on `host`: its own runtime directory (the
# hosts share this machine's file system, and a shared registry would let
# them find each other's Unix sockets), the discovery file, TLS.
# Sets env_args.
env_of() {
  local host=$1
  env_args=(
    "SWITCHYARD_RUNTIME_DIR=$state/run/$host"
    "SWITCHYARD_DISCOVERY=$discovery"
    "SWITCHYARD_TLS_CERT=$certs/$host.pem"
    "SWITCHYARD_TLS_KEY=$certs/$host-key.pem"
    "SWITCHYARD_TLS_CA=$certs/ca.pem"
  )
  mkdir -m 0700 "$state/run/$host"
}

start() {
  local host=$1
  shift
  local ns log
  ns=$(ns_of "$host")
  log=$state/$host.log
  env_of "$host"
  : >"$log" # exists before the server opens it, for the wait below
  ip netns exec "$ns" env "${env_args[@]}" \
    SWITCHYARD_TLS_CLIENT_CA="$certs/ca.pem" \
    SWITCHYARD_DEBUG_ADDR=0.0.0.0:9090 \
    RUST_LOG=info NO_COLOR=1 \
    "$bin_dir/cluster" "$@" --no-unix </dev/null >"$log" 2>&1 &
  echo $! >"$state/$host.pid"
  local deadline=$((SECONDS + wait_secs))
  until grep -q '^listening ' "$log"; do
    if ! kill -0 "$(cat "$state/$host.pid")" 2>/dev/null; then
      echo "up.sh: $host exited; its log ($log):" >&2
      sed 's/^/  /' "$log" >&2
      exit 1
    fi
    if [ "$SECONDS" -ge "$deadline" ]; then
      echo "up.sh: $host did not say 'listening' within $wait_secs s; its log ($log):" >&2
      sed 's/^/  /' "$log" >&2
      exit 1
    fi
    sleep 0.2
  done
  if ! ip netns exec "$ns" "$repo/deploy/healthcheck.sh" --listening 9090; then
    echo "up.sh: $host listens but its debug endpoint does not answer" >&2
    exit 1
  fi
  echo "$host (pid $(cat "$state/$host.pid")): $(grep -m1 '^listening ' "$log")"
}

for host in "${inventory_hosts[@]}"; do
  start "$host" backend inventory
done
start pricing backend pricing
start gateway gateway --wait "$wait_secs"

env_of client
client_cmd=$(printf '%q ' ip netns exec "$(ns_of client)" env "${env_args[@]}" "$bin_dir/cluster" client)
client_cmd=${client_cmd% }
printf '%s\n' "$client_cmd" >"$state/client.cmd"
cat >"$state/client.sh" <<SCRIPT
#!/usr/bin/env bash
# Written by deploy/netns/up.sh: the cluster client on the client host.
exec $client_cmd "\$@"
SCRIPT
chmod +x "$state/client.sh"
touch "$state/up"
print_client
