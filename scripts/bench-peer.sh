#!/usr/bin/env bash
# The peer benchmark (examples/bench_peer.rs): WebSocket fan-out of the chat server against a
# minimal Node.js relay on npm `ws` (bench/node-relay/relay.js), 100 rooms x 20 members at
# 5,000, 20,000 and 50,000 deliveries/s. Both servers are pinned to core 0, the benchmark
# client to core 1 (`taskset`). Builds what the benchmark starts, installs the relay's
# dependencies when missing, raises the open-files limit, then runs the benchmark; arguments
# go to it, e.g. `scripts/bench-peer.sh --rooms 10 --deliveries 2000,5000` for a quick run,
# or `--rounds 3` for medians of three rounds.
set -euo pipefail
cd "$(dirname "$0")/.."

# `cargo run --example` does not build the binary the benchmark starts: build both.
cargo build --release --bin chatserver --example bench_peer

if [ ! -d bench/node-relay/node_modules ]; then
    (cd bench/node-relay && npm ci --no-audit --no-fund)
fi

# Two sockets per member in this client (one per server), one per member in each server.
ulimit -n 65536 2>/dev/null || ulimit -n "$(ulimit -Hn)"
echo "open-files limit: $(ulimit -n)"

exec target/release/examples/bench_peer "$@"
