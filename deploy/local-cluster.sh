#!/usr/bin/env bash
# Runs a local Parley cluster: N node processes on loopback sharing one
# embedded store (one data dir, so one JWT secret: a token from any node
# works on every node).
#
#   deploy/local-cluster.sh start [N]   start N nodes (default 3)
#   deploy/local-cluster.sh stop        SIGTERM every node (drain), then wait
#   deploy/local-cluster.sh status      show each node and the cluster view
#
# Node i (1-based) serves HTTP/WebSocket on 127.0.0.1:$((BASE_HTTP+i-1)) and
# talks to the others on 127.0.0.1:$((BASE_CLUSTER+i-1)).
# Environment: PARLEY_DATA_DIR (./data), BASE_HTTP (8080), BASE_CLUSTER (9080),
# PARLEY_BIN (target/release/parley-node, built if missing), CLUSTER_TLS (1:
# mutual TLS between the nodes, with certificates that
# deploy/cluster-tls-certs.sh makes once in $PARLEY_DATA_DIR/cluster-tls),
# and any other PARLEY_* setting, which every node inherits.
set -euo pipefail

cd "$(dirname "$0")/.."
DATA_DIR="${PARLEY_DATA_DIR:-./data}"
BASE_HTTP="${BASE_HTTP:-8080}"
BASE_CLUSTER="${BASE_CLUSTER:-9080}"
BIN="${PARLEY_BIN:-target/release/parley-node}"
RUN_DIR="$DATA_DIR/local-cluster"

usage() { sed -n '2,17p' "$0" | sed 's/^# \{0,1\}//'; exit 2; }

start() {
    local n="${1:-3}"
    [[ "$n" =~ ^[1-9][0-9]?$ ]] || { echo "N must be 1-99" >&2; exit 2; }
    if [[ ! -x "$BIN" ]]; then
        echo "building $BIN ..."
        cargo build --release -p parley-node
    fi
    mkdir -p "$RUN_DIR"
    local secret_file="$DATA_DIR/cluster-secret"
    if [[ ! -s "$secret_file" ]]; then
        head -c 32 /dev/urandom | base64 | tr -d '/+=\n' > "$secret_file"
        chmod 600 "$secret_file"
    fi
    local tls_dir="$DATA_DIR/cluster-tls"
    if [[ "${CLUSTER_TLS:-0}" == 1 ]]; then
        for i in $(seq 1 "$n"); do
            [[ -s "$tls_dir/n$i.pem" ]] || bash deploy/cluster-tls-certs.sh "$tls_dir" "n$i" >/dev/null
        done
    fi
    local seeds=""
    for i in $(seq 1 "$n"); do
        seeds+="${seeds:+,}127.0.0.1:$((BASE_CLUSTER + i - 1))"
    done
    for i in $(seq 1 "$n"); do
        local pidfile="$RUN_DIR/n$i.pid"
        if [[ -f "$pidfile" ]] && kill -0 "$(cat "$pidfile")" 2>/dev/null; then
            echo "n$i already running (pid $(cat "$pidfile"))"
            continue
        fi
        local tls=()
        if [[ "${CLUSTER_TLS:-0}" == 1 ]]; then
            tls=(--cluster-tls-cert "$tls_dir/n$i.pem" --cluster-tls-key "$tls_dir/n$i.key"
                 --cluster-tls-ca "$tls_dir/ca.pem")
        fi
        PARLEY_CLUSTER_SECRET="$(cat "$secret_file")" "$BIN" \
            --listen "127.0.0.1:$((BASE_HTTP + i - 1))" \
            --data-dir "$DATA_DIR" \
            --node-name "n$i" \
            --cluster-listen "127.0.0.1:$((BASE_CLUSTER + i - 1))" \
            --seeds "$seeds" \
            "${tls[@]}" \
            >"$RUN_DIR/n$i.log" 2>&1 &
        echo $! > "$pidfile"
        echo "n$i: pid $!, http://127.0.0.1:$((BASE_HTTP + i - 1)), log $RUN_DIR/n$i.log"
    done
    # Wait until every node is ready (joined and storage answering).
    for i in $(seq 1 "$n"); do
        local url="http://127.0.0.1:$((BASE_HTTP + i - 1))/ready"
        for _ in $(seq 1 100); do
            if curl -fs "$url" >/dev/null 2>&1; then break; fi
            sleep 0.1
        done
        curl -fs "$url" >/dev/null 2>&1 || { echo "n$i did not become ready; see $RUN_DIR/n$i.log" >&2; exit 1; }
    done
    echo "cluster of $n ready"
}

stop() {
    shopt -s nullglob
    local pids=()
    for f in "$RUN_DIR"/*.pid; do
        local pid; pid="$(cat "$f")"
        if kill -0 "$pid" 2>/dev/null; then
            kill -TERM "$pid" && pids+=("$pid")
            echo "draining $(basename "$f" .pid) (pid $pid)"
        fi
        rm -f "$f"
    done
    for pid in "${pids[@]}"; do
        for _ in $(seq 1 200); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
    done
    echo "stopped"
}

status() {
    shopt -s nullglob
    for f in "$RUN_DIR"/*.pid; do
        local name pid state; name="$(basename "$f" .pid)"; pid="$(cat "$f")"
        if kill -0 "$pid" 2>/dev/null; then state="running"; else state="dead"; fi
        echo "$name: pid $pid $state"
    done
    for port in $(seq "$BASE_HTTP" $((BASE_HTTP + 9))); do
        if curl -fs "http://127.0.0.1:$port/api/v1/cluster" 2>/dev/null; then echo; break; fi
    done
}

case "${1:-}" in
    start) start "${2:-3}" ;;
    stop) stop ;;
    status) status ;;
    *) usage ;;
esac
