#!/usr/bin/env bash
# RUSTC_WRAPPER for loom runs: keeps `--cfg loom` (from RUSTFLAGS) only for
# the switchyard crate (and cargo's `--print cfg` probe, so that
# [target.'cfg(loom)'.dev-dependencies] resolve). Dependencies such as tokio
# drop net/process/signal under cfg(loom), which switchyard's runtime needs.
rustc="$1"; shift
args=("$@")
for ((i = 0; i < ${#args[@]}; i++)); do
  if [[ ${args[i]} == --crate-name ]]; then name=${args[i+1]}; fi
done
if [[ $name == switchyard || $name == ___ ]]; then exec "$rustc" "${args[@]}"; fi
out=()
for ((i = 0; i < ${#args[@]}; i++)); do
  if [[ ${args[i]} == --cfg && ${args[i+1]} == loom ]]; then ((i++)); continue; fi
  out+=("${args[i]}")
done
exec "$rustc" "${out[@]}"
