#!/usr/bin/env bash
# Builds bench-peers in release (niced: the machine is shared with other
# builds) from its committed Cargo.lock and runs it with the given arguments,
# e.g. `./run.sh --quick --json`. Cargo's output goes to stderr, so stdout is
# only what bench-peers prints.
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$here/target}"
nice -n 10 cargo build --release --locked --quiet --manifest-path "$here/Cargo.toml" 1>&2
exec "$CARGO_TARGET_DIR/release/bench-peers" "$@"
