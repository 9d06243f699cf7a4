#!/usr/bin/env bash
# Fails if Cargo.lock holds a version of a crate that RustSec has an advisory
# against (the patched minimums below, from shared/reliability.md "Minimum
# dependency versions"), or a bincode other than the pinned 2.0.1. Needs no
# advisory database, so it runs where `cargo deny check advisories` cannot.
# A crate absent from the lock passes. Usage: .ci/min-versions.sh [Cargo.lock]
set -euo pipefail
lock=${1:-"$(dirname "$0")/../Cargo.lock"}
[ -r "$lock" ] || { echo "min-versions: cannot read $lock" >&2; exit 2; }

# crate  rule  version   (rule ">=": at least; "==": exactly)
rules='
quinn-proto   >= 0.11.15
bytes         >= 1.11.1
rustls        >= 0.23.45
rustls-webpki >= 0.103.13
memmap2       >= 0.9.11
ring          >= 0.17.12
tokio         >= 1.44.2
bincode       == 2.0.1
'

awk -v rules="$rules" '
  # -1, 0 or 1 as semver a is below, equal to or above b (build metadata
  # ignored; a pre-release sorts below its release).
  function cmp(a, b,    pa, pb, na, nb, i, x, y) {
    sub(/\+.*/, "", a); sub(/\+.*/, "", b)
    pa = index(a, "-") ? substr(a, index(a, "-") + 1) : ""; sub(/-.*/, "", a)
    pb = index(b, "-") ? substr(b, index(b, "-") + 1) : ""; sub(/-.*/, "", b)
    na = split(a, x, "."); nb = split(b, y, ".")
    for (i = 1; i <= 3; i++) {
      if (x[i] + 0 < y[i] + 0) return -1
      if (x[i] + 0 > y[i] + 0) return 1
    }
    if (pa == pb) return 0
    if (pa == "") return 1
    if (pb == "") return -1
    return pa < pb ? -1 : 1
  }
  BEGIN {
    n = split(rules, line, "\n")
    for (i = 1; i <= n; i++) {
      if (split(line[i], f, " ") != 3) continue
      order[++nrules] = f[1]; op[f[1]] = f[2]; want[f[1]] = f[3]
    }
  }
  /^\[\[package\]\]/ { name = "" }
  /^name = "/    { name = $3; gsub(/"/, "", name) }
  /^version = "/ && (name in op) { v = $3; gsub(/"/, "", v); seen[name] = seen[name] " " v }
  END {
    bad = 0
    for (i = 1; i <= nrules; i++) {
      c = order[i]; rule = op[c] " " want[c]
      if (!(c in seen)) { printf "  ok    %-14s absent (%s)\n", c, rule; continue }
      m = split(seen[c], vs, " ")
      for (j = 1; j <= m; j++) {
        r = cmp(vs[j], want[c])
        okay = (op[c] == ">=") ? r >= 0 : r == 0
        printf "  %-5s %-14s %s (%s)\n", okay ? "ok" : "FAIL", c, vs[j], rule
        if (!okay) bad++
      }
    }
    if (bad) { printf "min-versions: %d crate version(s) in %s break the rules above\n", bad, FILENAME; exit 1 }
    printf "min-versions: every rule holds for %s\n", FILENAME
  }
' "$lock"
