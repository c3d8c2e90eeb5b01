#!/usr/bin/env bash
# The history page benchmark (examples/bench_history.rs): p50/p99 of
# GET /api/channels/{id}/messages at concurrency 16 over a channel of 1,000,000 messages,
# first page and a deep `before=` page, on SQLite and PostgreSQL, against a build from
# before reactions and threads (commit fc1e1d5). Arguments go to the benchmark, e.g.
# `--messages 100000 --backends sqlite` for a quick run, or
# `--postgres postgres://user@host:5432/postgres` for another PostgreSQL server.
#
# The baseline: `--baseline-bin PATH` takes a prebuilt one; without it this builds
# BASELINE_REV (default fc1e1d5) in a detached worktree at BASELINE_DIR (default
# ../bench-history-base) with its own target directory (BASELINE_TARGET, default
# ../bench-history-base-target; a cold release build takes several minutes), then removes
# the worktree and keeps the target directory for next time.
set -euo pipefail
cd "$(dirname "$0")/.."

has_baseline=no
for arg in "$@"; do
    case "$arg" in --baseline-bin|--baseline-bin=*) has_baseline=yes ;; esac
done

extra=()
if [ "$has_baseline" = no ]; then
    rev="${BASELINE_REV:-fc1e1d5}"
    dir="${BASELINE_DIR:-../bench-history-base}"
    target="${BASELINE_TARGET:-../bench-history-base-target}"
    mkdir -p "$target"
    target="$(cd "$target" && pwd)"
    git worktree add --detach "$dir" "$rev"
    trap 'git worktree remove --force "$dir"' EXIT
    (cd "$dir" && CARGO_TARGET_DIR="$target" cargo build --release --bin chatserver)
    extra=(--baseline-bin "$target/release/chatserver")
fi

# `cargo run --example` does not build the binary the benchmark starts: build both.
cargo build --release --bin chatserver --example bench_history
cargo run --release --quiet --example bench_history -- "${extra[@]}" "$@"
