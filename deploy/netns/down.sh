#!/usr/bin/env bash
# deploy/netns/down.sh: stops what deploy/netns/up.sh started and removes its
# network namespaces. Safe to run again, or after a failed up.sh; the logs
# stay in the state directory. Same settings as up.sh (SY_NETNS_PREFIX,
# SY_NETNS_STATE).
set -euo pipefail
# shellcheck source-path=SCRIPTDIR source=common.sh
. "$(dirname "$0")/common.sh"
need_root down.sh

# The servers first, gracefully: SIGTERM lets them finish their calls. A
# pid counts only while it is still that server (a cluster process).
pids=()
for host in "${servers[@]}"; do
  pid_file=$state/$host.pid
  [ -f "$pid_file" ] || continue
  pid=$(cat "$pid_file")
  if [ -n "$pid" ] && [ -r "/proc/$pid/cmdline" ] \
      && tr '\0' ' ' <"/proc/$pid/cmdline" | grep -q "cluster"; then
    kill -TERM "$pid" 2>/dev/null && pids+=("$pid") && echo "stopping $host (pid $pid)"
  fi
  rm -f "$pid_file"
done
for _ in $(seq 50); do
  alive=()
  for pid in "${pids[@]}"; do
    if kill -0 "$pid" 2>/dev/null; then alive+=("$pid"); fi
  done
  [ ${#alive[@]} -eq 0 ] && break
  sleep 0.1
done

# Then whatever still runs in our namespaces (a namespace with processes in
# it outlives `ip netns del`), and the namespaces.
namespaces=("$switch_ns")
# `inventory`: the single inventory host of earlier versions of up.sh.
for host in "${hosts[@]}" inventory; do namespaces+=("$(ns_of "$host")"); done
for ns in "${namespaces[@]}"; do
  ns_exists "$ns" || continue
  for pid in $(ip netns pids "$ns" 2>/dev/null); do
    echo "killing pid $pid left in $ns"
    kill -KILL "$pid" 2>/dev/null || true
  done
  ip netns del "$ns"
  echo "deleted namespace $ns"
done
rm -f "$state/client.sh" "$state/client.cmd" "$state/up"
echo "down (logs kept in $state)"
