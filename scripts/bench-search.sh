#!/usr/bin/env bash
# The search benchmark (examples/bench_search.rs): `GET /api/search` p50/p99 at concurrency 8
# for a common word, a rare word, a prefix and a CJK run against `LIKE '%word%'` over the same
# 1,000,000 messages in 100 channels, and `GET /api/channels` for a user in 200 channels, on
# SQLite and PostgreSQL. Arguments go to the benchmark, e.g. `--messages 100000 --backends
# sqlite` for a quick run, or `--postgres postgres://user@host:5432/postgres`.
set -euo pipefail
cd "$(dirname "$0")/.."

# `cargo run --example` does not build the binary the benchmark starts: build both.
cargo build --release --bin chatserver --example bench_search
exec cargo run --release --quiet --example bench_search -- "$@"
