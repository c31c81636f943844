#!/usr/bin/env bash
# The README's first command on a cold build: `cargo run -p linvit -- train` with a new target dir
# (crates already downloaded), timed to the first training step (the first row of steps.csv).
# Usage: experiments/build/cold_build.sh [TARGET_DIR]   (default: a fresh folder under /var/tmp)
set -euo pipefail
cd "$(dirname "$0")/../.."
target="${1:-/var/tmp/linvit-cold-$$}"
run="$(mktemp -d)/quickstart"
rm -rf "$target"
cargo fetch --quiet
start=$(date +%s)
CARGO_TARGET_DIR="$target" cargo run -p linvit --timings -- train --out "$run" \
    --set train.log_every=1 >"$run.log" 2>&1 &
pid=$!
until [ -s "$run/steps.csv" ] && [ "$(wc -l <"$run/steps.csv")" -ge 2 ]; do
    if ! kill -0 "$pid" 2>/dev/null; then
        echo "cold_build: the run ended before its first step:" >&2
        tail -5 "$run.log" >&2
        exit 1
    fi
    sleep 1
done
first_step=$(( $(date +%s) - start ))
kill "$pid" 2>/dev/null || true
wait "$pid" 2>/dev/null || true
built=$(grep -o 'Finished .* in [0-9hms. ]*' "$run.log" | head -1)
echo "cpu: $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs), $(nproc) cores," \
     "isa: $(grep -o -m1 'avx512f' /proc/cpuinfo || echo 'no avx512')"
echo "cargo: $built"
echo "first training step after ${first_step} s ($(( first_step / 60 )) min $(( first_step % 60 )) s)"
echo "timings: $target/cargo-timings/cargo-timing.html"
