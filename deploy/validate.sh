#!/usr/bin/env bash
# Validates the deployment files as far as a machine without Docker allows.
#
#   deploy/validate.sh              every static check (CI runs this)
#   deploy/validate.sh --strict     also fail on problems in files owned by
#                                   other work
#   deploy/validate.sh --self-test  break a copy of the tree in many ways and
#                                   check that each one is caught
#   deploy/validate.sh --live BIN   also run BIN (a parley-node) as 3 nodes behind
#                                   deploy/nginx.conf and test it end to end
#
# Needs: python3 with PyYAML (apt-get install python3-yaml), nginx (Debian's
# nginx-light or nginx, for `nginx -t`). Uses promtool when it is on PATH (or
# $PROMTOOL). Exits non-zero on any failure. deploy/README.md lists what is
# and is not validated.
set -uo pipefail

DEPLOY="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
ROOT="$(cd "$DEPLOY/.." && pwd)"
STRICT=""
MODE="static"
LIVE_BIN=""
while [[ $# -gt 0 ]]; do
    case "$1" in
        --strict) STRICT="--strict" ;;
        --self-test) MODE="self-test" ;;
        --live) MODE="live"; LIVE_BIN="${2:?--live needs the path of a parley-node binary}"; shift ;;
        -h|--help) sed -n '2,15p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
        *) echo "unknown argument: $1" >&2; exit 2 ;;
    esac
    shift
done

FAILED=0
fail() { echo "  FAIL  $*"; FAILED=$((FAILED + 1)); }
ok() { echo "  ok    $*"; }

TMP="$(mktemp -d)"
trap 'rm -rf "$TMP"' EXIT

# ---------------------------------------------------------------- self-test
if [[ "$MODE" == "self-test" ]]; then
    echo "== self-test: every deliberate breakage must make deploy/validate.sh fail"
    COPY="$TMP/tree"
    mkdir -p "$COPY"
    # The files the checks read: deploy/, the workspace manifests, node/src,
    # the actors' metrics, .ci/run and .dockerignore (no target/, no .git/).
    (cd "$ROOT" && tar cf - --exclude=./target --exclude=./.git --exclude=./data \
        Cargo.toml Cargo.lock .dockerignore .ci deploy node protocol storage actors loadtest) \
        | (cd "$COPY" && tar xf -)
    if bash "$COPY/deploy/validate.sh" >"$TMP/base.log" 2>&1; then
        ok "the unmodified copy passes"
    else
        fail "the unmodified copy fails; see below"; tail -20 "$TMP/base.log"
    fi
    # mutate FILE OLD NEW EXPECTED-OUTPUT DESCRIPTION
    mutate() {
        local file="$COPY/$1" old="$2" new="$3" expect="$4" what="$5"
        cp "$file" "$TMP/orig"
        if ! python3 - "$file" "$old" "$new" <<'EOF'
import sys
path, old, new = sys.argv[1], sys.argv[2], sys.argv[3]
text = open(path).read()
if old not in text:
    sys.exit(1)
open(path, "w").write(text.replace(old, new, 1))
EOF
        then
            fail "$what: '$old' not found in $1 (update the self-test)"
            return
        fi
        if PARLEY_VALIDATE_NO_CARGO=1 bash "$COPY/deploy/validate.sh" >"$TMP/out.log" 2>&1; then
            fail "$what: NOT caught (validate.sh passed)"
        elif grep -F "FAIL" "$TMP/out.log" | grep -qF -- "$expect"; then
            ok "$what: caught ($(grep -F "FAIL" "$TMP/out.log" | grep -F -- "$expect" | head -1 | sed 's/^ *FAIL *//' | cut -c1-110))"
        else
            fail "$what: failed, but without the expected message '$expect'"
            grep -E "FAIL|emerg" "$TMP/out.log" | head -5
        fi
        cp "$TMP/orig" "$file"
    }
    mutate deploy/docker-compose.yml '"--node-name", "parley1"' '"--node-nme", "parley1"' \
        "unknown flag(s) ['--node-nme']" "misspelled flag in compose command"
    mutate deploy/docker-compose.yml 'PARLEY_LOG_FORMAT: json' 'PARLEY_LOG_FROMAT: json' \
        "unknown environment variable(s) ['PARLEY_LOG_FROMAT']" "misspelled PARLEY_* variable in compose"
    mutate deploy/docker-compose.yml 'PARLEY_LOG_FORMAT: json' 'PARLEY_LOG_FORMAT: yaml' \
        "is not one of ['json', 'pretty']" "invalid enum value in compose"
    mutate deploy/docker-compose.yml '"--cluster-listen", "10.213.0.11:9080"' '"--cluster-listen", "0.0.0.0:9080"' \
        "parley1: --cluster-listen 0.0.0.0:9080 is an unspecified address" "compose node clustering on 0.0.0.0"
    mutate deploy/docker-compose.yml '"--cluster-listen", "10.213.0.11:9080"' \
        '"--cluster-listen", "0.0.0.0:9080", "--cluster-advertise", "10.213.0.12"' \
        "parley1: --cluster-advertise 10.213.0.12 is not this container's address 10.213.0.11" \
        "compose node announcing another container's address"
    mutate deploy/docker-compose.yml $'      parley1:\n        condition: service_healthy' \
        $'      parley9:\n        condition: service_healthy' \
        "depends_on parley9, which is not a service" "depends_on a missing service"
    mutate deploy/docker-compose.yml '"127.0.0.1:8081:8080"' '"127.0.0.1:8081:8088"' \
        "not 8088" "published port the node does not listen on"
    mutate deploy/docker-compose.yml 'ipv4_address: 10.213.0.13' 'ipv4_address: 10.213.0.14' \
        "is not this container's address" "node address and --cluster-listen disagree"
    mutate deploy/docker-compose.yml 'image: nginx:1.27-alpine' 'image: nginx' \
        "has no pinned tag" "unpinned third-party image"
    mutate deploy/k8s/statefulset.yaml 'name: PARLEY_CLUSTER_LISTEN' 'name: PARLEY_CLUSTER_LISTN' \
        "unknown environment variable(s) ['PARLEY_CLUSTER_LISTN']" "misspelled PARLEY_* variable in the StatefulSet"
    mutate deploy/k8s/statefulset.yaml 'parley-2.parley-headless.parley.svc' 'parley-3.parley-headless.parley.svc' \
        "the pods' stable names" "seed that is not a pod of the StatefulSet"
    mutate deploy/k8s/statefulset.yaml 'key: cluster-secret' 'key: cluster-cookie' \
        "refers to missing Secret key" "secretKeyRef to a missing key"
    mutate deploy/k8s/statefulset.yaml 'path: /ready' 'path: /readyz' \
        "readinessProbe should GET /ready" "readiness probe on a path the node does not serve"
    mutate deploy/k8s/configmap.yaml 'PARLEY_STORAGE: scylla' 'PARLEY_STORAGE: cassandra' \
        "'cassandra' is not one of" "invalid storage kind in the ConfigMap"
    mutate deploy/k8s/pdb.yaml $'matchLabels:\n      app.kubernetes.io/name: parley' $'matchLabels:\n      app.kubernetes.io/name: parly' \
        "matches no pod" "PodDisruptionBudget selecting no pod"
    mutate deploy/Dockerfile '-p parley-loadtest' '-p parley-load-test' \
        "-p parley-load-test is not a workspace package" "wrong package name in the Dockerfile"
    mutate deploy/Dockerfile 'cp target/release/parley-node' 'cp target/release/parley_node' \
        "copies target/release/parley_node, which is not a binary" "wrong binary path in the Dockerfile"
    mutate deploy/Dockerfile 'USER 10001:10001' 'USER root' \
        "non-root USER" "image running as root"
    mutate deploy/grafana/dashboards/parley.json 'parley_sessions{' 'parley_session{' \
        "['parley_session']" "dashboard metric that the code does not export"
    mutate deploy/grafana/dashboards/parley.json '"uid": "prometheus"' '"uid": "prom"' \
        "are not provisioned" "dashboard datasource that is not provisioned"
    mutate deploy/nginx.conf 'proxy_http_version 1.1;' 'proxy_http_version 1.1' \
        "nginx -t -c deploy/nginx.conf:" "nginx syntax error"
    mutate deploy/nginx.conf 'server 10.213.0.12:8080' 'server 10.213.0.22:8080' \
        "!= the nodes' addresses" "nginx upstream that is not a node"
    mutate deploy/nginx.conf "'\$status \$body_bytes_sent" "'\$request_uri \$status \$body_bytes_sent" \
        "would leak tokens" "access log with the query string (tokens)"
    mutate deploy/prometheus.yml '- parley2:8080' '- parley2:8088' \
        "target parley2:8088 is not a service port" "Prometheus target on the wrong port"
    mutate deploy/otel-collector.yaml 'exporters: [prometheus, debug]' 'exporters: [prometheus, debugg]' \
        "used but not defined: ['debugg']" "collector pipeline using an undefined exporter"
    mutate deploy/otel-collector.yaml 'receivers: [otlp]' 'receivers: [otlp' \
        "deploy/otel-collector.yaml:" "YAML syntax error"
    # shellcheck disable=SC2016  # the literal text of the script
    mutate deploy/local-cluster.sh 'case "${1:-}" in' 'case "${1:-}" inn' \
        "bash -n deploy/local-cluster.sh:" "shell syntax error"
    mutate .dockerignore '.git/' '.gitx/' \
        ".dockerignore should exclude .git/" ".dockerignore not excluding .git/"
    echo
    if [[ $FAILED -eq 0 ]]; then
        echo "self-test: every breakage was caught"
        exit 0
    fi
    echo "self-test: $FAILED problem(s)"
    exit 1
fi

# ---------------------------------------------------------------- tools
echo "== tools"
if ! command -v python3 >/dev/null 2>&1 || ! python3 -c 'import yaml' 2>/dev/null; then
    fail "python3 with PyYAML is required: apt-get install -y python3-yaml (or pip install pyyaml)"
    exit 1
fi
ok "python3 $(python3 -c 'import sys, yaml; print(sys.version.split()[0], "PyYAML", yaml.__version__)')"
NGINX="$(command -v nginx || true)"
[[ -z "$NGINX" && -x /usr/sbin/nginx ]] && NGINX=/usr/sbin/nginx
if [[ -z "$NGINX" ]]; then
    fail "nginx is required for nginx -t: apt-get install -y nginx-light"
else
    ok "$("$NGINX" -v 2>&1)"
fi
PROMTOOL="${PROMTOOL:-$(command -v promtool || true)}"

# ---------------------------------------------------------------- shell syntax
echo "== shell syntax (bash -n)"
for f in "$DEPLOY"/*.sh "$ROOT/.ci/run"; do
    [[ -f "$f" ]] || continue
    if err="$(bash -n "$f" 2>&1)"; then
        ok "bash -n ${f#"$ROOT"/}"
    else
        fail "bash -n ${f#"$ROOT"/}: $err"
    fi
done

# ---------------------------------------------------------------- nginx -t
echo "== nginx -t (the file itself, unmodified)"
if [[ -n "$NGINX" ]]; then
    # Own prefix, error log and pid file so that the test touches nothing
    # of the machine's nginx; the config is tested exactly as committed
    # (its upstreams are IP literals, so no DNS is needed).
    mkdir -p "$TMP/nginx/logs"
    if out="$("$NGINX" -t -q -p "$TMP/nginx" -e "$TMP/nginx/logs/error.log" \
            -g "pid $TMP/nginx/nginx.pid;" -c "$DEPLOY/nginx.conf" 2>&1)"; then
        ok "nginx -t -c deploy/nginx.conf: syntax ok, test successful"
    else
        fail "nginx -t -c deploy/nginx.conf: $out"
    fi
fi

# ---------------------------------------------------------------- promtool
echo "== promtool check config (when available)"
if [[ -n "$PROMTOOL" && -x "$PROMTOOL" ]]; then
    if out="$("$PROMTOOL" check config --syntax-only "$DEPLOY/prometheus.yml" 2>&1)"; then
        ok "promtool check config --syntax-only deploy/prometheus.yml ($("$PROMTOOL" --version 2>&1 | head -1 | cut -d' ' -f1-3))"
    else
        fail "promtool: $out"
    fi
else
    echo "  skip  promtool not installed (apt package prometheus); deploy/prometheus.yml gets the structural checks only"
fi

# ---------------------------------------------------------------- cargo
echo "== cargo metadata --locked (the Dockerfile's build inputs)"
META_ARGS=()
if [[ -n "${PARLEY_VALIDATE_NO_CARGO:-}" ]]; then
    echo "  skip  PARLEY_VALIDATE_NO_CARGO is set"
elif command -v cargo >/dev/null 2>&1; then
    # --locked fails when Cargo.lock does not satisfy the manifests, as the
    # image's `cargo build --locked` would.
    if cargo metadata --locked --format-version 1 --manifest-path "$ROOT/Cargo.toml" \
            >"$TMP/metadata.json" 2>"$TMP/metadata.err"; then
        ok "Cargo.lock satisfies --locked"
        META_ARGS=(--cargo-metadata "$TMP/metadata.json")
    else
        fail "cargo metadata --locked: $(tail -3 "$TMP/metadata.err")"
    fi
else
    echo "  skip  cargo not installed; packages and binaries are read from the Cargo.toml files only"
fi

# ---------------------------------------------------------------- static checks
python3 "$DEPLOY/validate.py" --root "$ROOT" $STRICT "${META_ARGS[@]}" || FAILED=$((FAILED + 1))

# ---------------------------------------------------------------- live
if [[ "$MODE" == "live" ]]; then
    python3 "$DEPLOY/live-check.py" --root "$ROOT" --bin "$LIVE_BIN" --nginx "${NGINX:-nginx}" \
        || FAILED=$((FAILED + 1))
fi

echo
if [[ $FAILED -eq 0 ]]; then
    echo "deploy/validate.sh: all checks passed"
    echo "not validated here (no Docker engine, no cluster): building the image, pulling images,"
    echo "running compose or the Kubernetes manifests, the collector and Grafana configs in their"
    echo "own programs; see deploy/README.md"
    exit 0
fi
echo "deploy/validate.sh: $FAILED failing step(s)"
exit 1
