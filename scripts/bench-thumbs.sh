#!/usr/bin/env bash
# The preview benchmark (examples/bench_thumbs.rs): thumbnails of 50 camera-size JPEGs and 50
# PNGs by the preview worker's code against one `vipsthumbnail` invocation per set (Debian
# `libvips-tools`), per CPU-second and peak RSS; then what metadata stripping adds to
# server-path upload time. Arguments go to the benchmark, e.g. `--jpegs 10 --pngs 10`.
set -euo pipefail
cd "$(dirname "$0")/.."

if ! command -v vipsthumbnail >/dev/null; then
    echo "vipsthumbnail is missing: apt-get install libvips-tools" >&2
    exit 1
fi
# `cargo run --example` does not build the binary the benchmark starts: build both.
cargo build --release --bin chatserver --example bench_thumbs
exec cargo run --release --quiet --example bench_thumbs -- "$@"
