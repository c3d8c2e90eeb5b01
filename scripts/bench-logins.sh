#!/usr/bin/env bash
# The login memory benchmark (examples/bench_logins.rs): the server's RSS when idle, after
# registrations and after 10,000 logins. Builds the server and the example, then runs it;
# arguments go to the benchmark, e.g. `--logins 1000` for a quick run, or
# `--baseline-bin PATH` to measure another build side by side.
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build --release --bin chatserver --example bench_logins
exec cargo run --release --quiet --example bench_logins -- "$@"
