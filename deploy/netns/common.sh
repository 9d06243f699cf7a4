# Settings shared by up.sh and down.sh (sourced, not run).
# shellcheck shell=bash disable=SC2034 # the settings are used by up.sh and down.sh

repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
target_dir=${CARGO_TARGET_DIR:-$repo/target}
# Namespace names start with this; set another to run two clusters at once.
prefix=${SY_NETNS_PREFIX:-sy-}
# The first three octets of the hosts' /24.
subnet=${SY_NETNS_SUBNET:-10.231.7}
state=${SY_NETNS_STATE:-$target_dir/netns-cluster}
bin_dir=${SY_BIN_DIR:-$target_dir/release}

switch_ns=${prefix}switch
# Host roles, their namespaces and addresses.
# Three replicas of the inventory backend, each a host of its own.
inventory_hosts=(inventory-1 inventory-2 inventory-3)
hosts=("${inventory_hosts[@]}" pricing gateway client)
servers=("${inventory_hosts[@]}" pricing gateway)
declare -A host_number=([inventory-1]=11 [pricing]=12 [gateway]=13 [inventory-2]=14
  [inventory-3]=15 [client]=20)
ns_of() { printf '%s%s' "$prefix" "$1"; }
ip_of() { printf '%s.%s' "$subnet" "${host_number[$1]}"; }

need_root() {
  if [ "$(id -u)" -ne 0 ]; then
    echo "$1: network namespaces need root (run it with sudo)" >&2
    exit 1
  fi
  if ! command -v ip >/dev/null; then
    echo "$1: iproute2's ip is missing (apt-get install iproute2)" >&2
    exit 1
  fi
}

ns_exists() { ip netns list | awk '{print $1}' | grep -qxF "$1"; }
