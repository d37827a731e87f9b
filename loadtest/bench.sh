#!/bin/sh
# Builds release binaries of parley-node and parley-loadtest, then runs the
# standard benchmark set (each benchmark on a fresh node on a free 127.0.0.1
# port) and writes docs/benchmarks.md with plots and JSON reports under
# docs/bench/. Extra arguments go to `parley-loadtest bench` (see --help),
# e.g. `loadtest/bench.sh --duration 10 --only fanout-big-room`.
set -eu
cd "$(dirname "$0")/.."
cargo build --release -p parley-node -p parley-loadtest
exec target/release/parley-loadtest bench "$@"
