#!/usr/bin/env bash
# The WebSocket benchmark (examples/bench_ws.rs): idle connections' memory (10k and 20k),
# fan-out throughput and latency (100 channels x 100 members, 1 channel x 5,000 members), and
# the effect of clients that never read. Builds the server binary the benchmark spawns, raises
# the open-files limit (the server inherits it), then runs the benchmark; arguments go to the
# benchmark, e.g. `scripts/bench-ws.sh --scenario idle --idle 1000` for a quick run, or
# `--database-url postgres://postgres@127.0.0.1:5432/postgres` to run on PostgreSQL.
# A/B: `--baseline-bin PATH` runs every measurement against that binary too (built from the
# baseline commit in a clone of its own), interleaved with this tree's, and the summary gives
# both with the candidate/baseline ratio, e.g.
#   git clone -q . ../ab-base && git -C ../ab-base checkout -q REV &&
#   (cd ../ab-base && cargo build --release --bin chatserver) &&
#   scripts/bench-ws.sh --baseline-bin ../ab-base/target/release/chatserver
set -euo pipefail
cd "$(dirname "$0")/.."

# As high as allowed: 20k connections need 20k descriptors in the server, more in the client.
# Without CAP_SYS_RESOURCE the hard limit caps this; the benchmark says what it could do.
ulimit -n 1048576 2>/dev/null || ulimit -n "$(ulimit -Hn)"
echo "open-files limit: $(ulimit -n)"

# `cargo run --example` does not build the binary the benchmark starts: build both.
cargo build --release --bin chatserver --example bench_ws --example fanout_floor
exec cargo run --release --quiet --example bench_ws -- "$@"
