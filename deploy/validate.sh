#!/usr/bin/env bash
# deploy/validate.sh [DIR]: checks the deployment files in DIR (default:
# this deploy/ directory) without a container engine or a cluster, and exits
# non-zero if any check fails (all checks run; each failure is printed).
#
#   YAML        every *.yaml/*.yml: yamllint (DIR/.yamllint settings)
#   compose     compose.yaml: check-jsonschema with its bundled compose-spec
#               schema (vendor.compose-spec)
#   Kubernetes  k8s/*.yaml: kubernetes-validate --strict against the bundled
#               schemas of Kubernetes 1.29 and 1.37; kustomization.yaml must
#               list every manifest (and, where kubectl is installed, its
#               `kubectl kustomize` output is validated too)
#   Secret      the Secret k8s/make-tls-secret.sh prints, both with kubectl
#               and without it (needs the switchyard binary: SWITCHYARD or
#               target/release/switchyard; skipped, saying so, without it)
#   discovery   compose/discovery.toml and the ConfigMap's discovery.toml
#               parse and name quic:// and tcp:// addresses
#   Dockerfile  hadolint
#   scripts     bash -n, and shellcheck where installed
#
# The checkers are PyPI packages pinned in deploy/validate-requirements.txt,
# installed into a venv under target/ (DEPLOY_VALIDATE_VENV to put it
# elsewhere) on first use and again when the pins change.
set -euo pipefail

here=$(cd "$(dirname "$0")" && pwd)
repo=$(cd "$here/.." && pwd)
dir=$(cd "${1:-$here}" && pwd)
target_dir=${CARGO_TARGET_DIR:-$repo/target}
venv=${DEPLOY_VALIDATE_VENV:-$target_dir/deploy-validate-venv}
requirements=$here/validate-requirements.txt
k8s_versions=(1.29.0 1.37.0)

# The checkers.
if ! cmp -s "$requirements" "$venv/requirements.txt" 2>/dev/null; then
  echo "installing the checkers into $venv"
  rm -rf "$venv"
  python3 -m venv "$venv"
  "$venv/bin/pip" install --quiet --disable-pip-version-check --require-virtualenv \
    --no-deps -r "$requirements"
  cp "$requirements" "$venv/requirements.txt"
fi
bin=$venv/bin
echo "checkers: $("$bin/yamllint" --version), check-jsonschema $("$bin/pip" show check-jsonschema | sed -n 's/^Version: //p'), kubernetes-validate $("$bin/kubernetes-validate" --version 2>&1 | awk '{print $NF}'), $("$bin/hadolint" --version)"

failures=()
check() {
  local what=$1
  shift
  if "$@"; then
    echo "ok    $what"
  else
    echo "FAIL  $what" >&2
    failures+=("$what")
  fi
}

mapfile -t yaml_files < <(find "$dir" -type f \( -name '*.yaml' -o -name '*.yml' \) | sort)
mapfile -t manifests < <(find "$dir/k8s" -maxdepth 1 -type f -name '*.yaml' ! -name kustomization.yaml | sort)
mapfile -t scripts < <(find "$dir" -type f -name '*.sh' | sort)

check "yamllint: ${#yaml_files[@]} YAML files" \
  "$bin/yamllint" --strict -c "$dir/.yamllint" "${yaml_files[@]}"

check "compose.yaml against the compose-spec schema" \
  "$bin/check-jsonschema" --quiet --builtin-schema vendor.compose-spec "$dir/compose.yaml"

for version in "${k8s_versions[@]}"; do
  check "k8s: ${#manifests[@]} manifests against Kubernetes $version (strict)" \
    "$bin/kubernetes-validate" --strict --quiet -k "$version" "${manifests[@]}"
done

# kustomization.yaml: every resource exists, and every manifest is listed.
kustomization() {
  "$bin/python" - "$dir/k8s" <<'PY'
import pathlib, sys, yaml
k8s = pathlib.Path(sys.argv[1])
doc = yaml.safe_load((k8s / "kustomization.yaml").read_text())
listed = set(doc.get("resources") or [])
present = {p.name for p in k8s.glob("*.yaml") if p.name != "kustomization.yaml"}
ok = True
for name in sorted(listed - present):
    print(f"kustomization.yaml lists {name}, which does not exist"); ok = False
for name in sorted(present - listed):
    print(f"kustomization.yaml does not list {name}"); ok = False
if doc.get("kind") != "Kustomization":
    print("kustomization.yaml: kind is not Kustomization"); ok = False
sys.exit(0 if ok else 1)
PY
}
check "k8s/kustomization.yaml lists every manifest" kustomization

scratch=$(mktemp -d)
trap 'rm -rf "$scratch"' EXIT

if command -v kubectl >/dev/null; then
  kustomized() {
    kubectl kustomize "$dir/k8s" >"$scratch/kustomized.yaml" \
      && "$bin/kubernetes-validate" --strict --quiet "$scratch/kustomized.yaml"
  }
  check "kubectl kustomize k8s/, its output (strict)" kustomized
else
  echo "skip  kubectl kustomize: kubectl is not installed"
fi

switchyard=${SWITCHYARD:-$target_dir/release/switchyard}
if [ -x "$switchyard" ]; then
  secret() {
    local how=$1
    KUBECTL=$how SWITCHYARD=$switchyard CERTS_DIR=$scratch/tls-$how \
      "$dir/k8s/make-tls-secret.sh" -o "$scratch/secret-$how.yaml" 2>"$scratch/secret-$how.log" \
      || { cat "$scratch/secret-$how.log"; return 1; }
    "$bin/kubernetes-validate" --strict --quiet "$scratch/secret-$how.yaml" || return 1
    # The Secret holds what the pods mount, and never the CA's key.
    "$bin/python" - "$scratch/secret-$how.yaml" "$dir/k8s" <<'PY'
import pathlib, sys, yaml
secret = yaml.safe_load(open(sys.argv[1]))
keys = set(secret.get("data") or {})
wanted = set()
for path in pathlib.Path(sys.argv[2]).glob("*.yaml"):
    for doc in yaml.safe_load_all(path.read_text()):
        spec = ((doc or {}).get("spec") or {}).get("template", {}).get("spec", {})
        for volume in spec.get("volumes", []):
            if (volume.get("secret") or {}).get("secretName") == secret["metadata"]["name"]:
                wanted |= {item["key"] for item in volume["secret"].get("items", [])}
ok = True
if "ca-key.pem" in keys:
    print("the Secret holds ca-key.pem"); ok = False
for key in sorted(wanted - keys):
    print(f"a pod mounts {key}, which the Secret lacks"); ok = False
sys.exit(0 if ok else 1)
PY
  }
  if command -v kubectl >/dev/null; then
    check "make-tls-secret.sh's Secret (kubectl create secret --dry-run=client)" secret kubectl
  fi
  check "make-tls-secret.sh's Secret (written without kubectl)" secret none
else
  echo "skip  make-tls-secret.sh: no switchyard binary at $switchyard (build it, or set SWITCHYARD)"
fi

discovery() {
  "$bin/python" - "$dir/compose/discovery.toml" "$dir/k8s/discovery.yaml" <<'PY'
import re, sys, tomllib, yaml
texts = {sys.argv[1]: open(sys.argv[1]).read()}
for doc in yaml.safe_load_all(open(sys.argv[2])):
    texts[sys.argv[2] + " (discovery.toml)"] = doc["data"]["discovery.toml"]
ok = True
for where, text in texts.items():
    try:
        services = tomllib.loads(text)["services"]
    except Exception as err:  # a parse error or no [services.*]
        print(f"{where}: {err!r}"); ok = False; continue
    for name in ("inventory", "pricing", "storefront"):
        addresses = (services.get(name) or {}).get("addresses") or []
        if not any(re.fullmatch(r"quic://[^/:]+:\d+", a) for a in addresses):
            print(f"{where}: {name} has no quic://host:port address"); ok = False
        if not all(re.fullmatch(r"(quic|tcp)://[^/:]+:\d+", a) for a in addresses):
            print(f"{where}: {name}: unexpected address in {addresses}"); ok = False
sys.exit(0 if ok else 1)
PY
}
check "discovery files" discovery

check "Dockerfile: hadolint" "$bin/hadolint" "$dir/Dockerfile"

syntax() {
  local f
  for f in "${scripts[@]}"; do bash -n "$f" || return 1; done
}
check "scripts: bash -n (${#scripts[@]})" syntax
if command -v shellcheck >/dev/null; then
  check "scripts: $(shellcheck --version | sed -n 's/^version: /shellcheck /p')" \
    shellcheck -x "${scripts[@]}"
else
  echo "skip  shellcheck: not installed (apt-get install shellcheck)"
fi

if [ ${#failures[@]} -gt 0 ]; then
  echo "deploy/validate.sh: ${#failures[@]} check(s) failed in $dir: ${failures[*]}" >&2
  exit 1
fi
echo "deploy/validate.sh: every check passed in $dir"
