#!/usr/bin/env bash
# Makes a cluster CA and node certificates for Parley's cluster TLS
# (--cluster-tls-cert, --cluster-tls-key, --cluster-tls-ca), with openssl.
#
#   deploy/cluster-tls-certs.sh DIR NODE...
#
# Writes DIR/ca.pem and DIR/ca.key (once; kept if already there, so more
# nodes can be added later) and DIR/NODE.pem, DIR/NODE.key for each NODE.
# Every node certificate carries the DNS name CLUSTER_TLS_NAME (default
# parley-cluster, the node's --cluster-tls-name) and may act as server and
# client. Keys are EC P-256 and unencrypted: keep DIR private (chmod 700)
# and ca.key off the nodes.
#
# Environment: CLUSTER_TLS_NAME (parley-cluster), DAYS (825).
set -euo pipefail

if [ $# -lt 2 ]; then
    echo "usage: $0 DIR NODE..." >&2
    exit 2
fi
dir=$1
shift
name=${CLUSTER_TLS_NAME:-parley-cluster}
days=${DAYS:-825}
umask 077
mkdir -p "$dir"

if [ ! -f "$dir/ca.pem" ]; then
    openssl req -x509 -new -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes \
        -keyout "$dir/ca.key" -out "$dir/ca.pem" -days "$days" \
        -subj "/CN=Parley cluster CA" \
        -addext "basicConstraints=critical,CA:TRUE" \
        -addext "keyUsage=critical,keyCertSign,cRLSign" 2>/dev/null
fi

ext=$(mktemp)
trap 'rm -f "$ext"' EXIT
cat > "$ext" <<EXT
basicConstraints=critical,CA:FALSE
keyUsage=critical,digitalSignature
extendedKeyUsage=serverAuth,clientAuth
subjectAltName=DNS:$name
EXT

for node in "$@"; do
    openssl req -new -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes \
        -keyout "$dir/$node.key" -out "$dir/$node.csr" -subj "/CN=$node" 2>/dev/null
    openssl x509 -req -in "$dir/$node.csr" -CA "$dir/ca.pem" -CAkey "$dir/ca.key" \
        -CAcreateserial -CAserial "$dir/ca.srl" -days "$days" \
        -extfile "$ext" -out "$dir/$node.pem" 2>/dev/null
    rm -f "$dir/$node.csr"
    echo "$dir/$node.pem $dir/$node.key"
done
