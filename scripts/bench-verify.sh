#!/usr/bin/env bash
# The verify benchmark (examples/bench_verify.rs): `chatserver verify` over 50,000 and 200,000
# objects of the local store recorded in SQLite: objects per second and the process's peak RSS,
# which should stay flat as the store grows. Builds the server binary the benchmark runs, then
# the benchmark; arguments go to the benchmark, e.g. `scripts/bench-verify.sh --counts 20000`
# for a quick run. Needs about 1 GiB free in the temporary directory ($TMPDIR or --tmp-dir)
# for 200,000 objects (a 4 KiB block each, plus the database).
set -euo pipefail
cd "$(dirname "$0")/.."

# `cargo run --example` does not build the binary the benchmark starts: build both.
cargo build --release --bin chatserver --example bench_verify
exec cargo run --release --quiet --example bench_verify -- "$@"
