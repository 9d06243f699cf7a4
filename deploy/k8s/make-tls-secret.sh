#!/usr/bin/env bash
# deploy/k8s/make-tls-secret.sh [-o FILE]
#
# Makes a CA and a certificate for each of inventory, pricing, gateway (as
# storefront) and the client Job with `switchyard certs`, their SANs being
# the names the discovery ConfigMap uses (NAME, NAME.NAMESPACE,
# NAME.NAMESPACE.svc, NAME.NAMESPACE.svc.CLUSTER_DOMAIN), and prints the
# Secret `switchyard-tls` holding them (YAML, to stdout or FILE):
#
#   deploy/k8s/make-tls-secret.sh -o /tmp/switchyard-tls.yaml
#   kubectl apply -f deploy/k8s/namespace.yaml -f /tmp/switchyard-tls.yaml
#   kubectl apply -k deploy/k8s
#
# The Secret holds no CA key: ca-key.pem stays in CERTS_DIR with the rest.
# The YAML comes from `kubectl create secret generic --dry-run=client` when
# kubectl is on PATH, else this script writes it itself.
#
# Environment:
#   NAMESPACE       switchyard
#   CLUSTER_DOMAIN  cluster.local
#   CERTS_DIR       where the PEM files go (default target/k8s-tls; a new CA
#                   each run, so apply the new Secret and restart the pods)
#   SWITCHYARD      the switchyard binary (default: on PATH, else
#                   target/release/switchyard, built if missing)
#   KUBECTL         kubectl to use (default kubectl; "none" writes the YAML
#                   without it)
set -euo pipefail

repo=$(cd "$(dirname "$0")/../.." && pwd)
target_dir=${CARGO_TARGET_DIR:-$repo/target}
namespace=${NAMESPACE:-switchyard}
domain=${CLUSTER_DOMAIN:-cluster.local}
certs_dir=${CERTS_DIR:-$target_dir/k8s-tls}
kubectl=${KUBECTL:-kubectl}
out=

while [ $# -gt 0 ]; do
  case $1 in
    -o | --output)
      [ $# -ge 2 ] || { echo "make-tls-secret.sh: $1 needs a file" >&2; exit 2; }
      out=$2
      shift 2
      ;;
    -h | --help)
      sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//'
      exit 0
      ;;
    *)
      echo "make-tls-secret.sh: unknown argument $1 (see --help)" >&2
      exit 2
      ;;
  esac
done

if [ -n "${SWITCHYARD:-}" ]; then
  switchyard=$SWITCHYARD
elif command -v switchyard >/dev/null; then
  switchyard=$(command -v switchyard)
else
  switchyard=$target_dir/release/switchyard
  if [ ! -x "$switchyard" ]; then
    echo "make-tls-secret.sh: building $switchyard" >&2
    (cd "$repo" && cargo build --release --locked -p switchyard --bin switchyard) >&2
  fi
fi

# The names clients use for a Service (discovery.yaml), in a certificate's
# SAN list after NAME.
sans() {
  printf ',%s' "$1" "$1.$namespace" "$1.$namespace.svc" "$1.$namespace.svc.$domain"
}

mkdir -p "$certs_dir"
"$switchyard" certs --out "$certs_dir" \
  "inventory$(sans inventory)" \
  "pricing$(sans pricing)" \
  "gateway$(sans storefront)" \
  client >&2

files=(ca.pem)
for name in inventory pricing gateway client; do
  files+=("$name.pem" "$name-key.pem")
done

secret_yaml() {
  if [ "$kubectl" != none ] && command -v "$kubectl" >/dev/null; then
    local args=()
    for f in "${files[@]}"; do
      args+=("--from-file=$f=$certs_dir/$f")
    done
    "$kubectl" create secret generic switchyard-tls --namespace "$namespace" \
      --dry-run=client -o yaml "${args[@]}"
  else
    printf 'apiVersion: v1\nkind: Secret\nmetadata:\n'
    printf '  name: switchyard-tls\n  namespace: %s\n' "$namespace"
    printf 'type: Opaque\ndata:\n'
    for f in "${files[@]}"; do
      printf '  %s: %s\n' "$f" "$(base64 -w0 <"$certs_dir/$f")"
    done
  fi
}

if [ -n "$out" ]; then
  secret_yaml >"$out"
  echo "make-tls-secret.sh: wrote the Secret switchyard-tls to $out (certificates in $certs_dir)" >&2
else
  secret_yaml
fi
