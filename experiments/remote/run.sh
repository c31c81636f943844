#!/usr/bin/env bash
# Training through Burn's remote backend on loopback against the same run on local flex: the
# setting of crates/linvit/tests/remote.rs (quickstart model, 64 procedural images, batch 16,
# 2 epochs = 8 steps), then the quickstart's batch of 64 (20 steps), where a local two-device
# data-parallel run is compared too, as a yardstick for float-rounding drift. Prints the largest
# relative difference of the per-step loss and gradient norm against the local one-device run,
# over the first 2 steps and over all, and each run's images/s.
# Usage (repository root, after `cargo build -p linvit --features remote`): experiments/remote/run.sh [LINVIT]
set -euo pipefail
LINVIT=${1:-target/debug/linvit}
OUT=$(mktemp -d)
"$LINVIT" serve --bind 127.0.0.1:0 --device flex > "$OUT/server.log" 2>&1 &
SERVER=$!
trap 'kill $SERVER 2>/dev/null; rm -rf "$OUT"' EXIT
until grep -q "^serving" "$OUT/server.log"; do sleep 0.1; done
REMOTE=$(sed -n 's/^serving 1 device(s) on //p' "$OUT/server.log")
compare() { # name, batch, images, devices to compare with local flex...
    local name=$1 batch=$2 images=$3; shift 3
    for d in flex "$@"; do
        "$LINVIT" train --devices "$d" --set data.train_size=$images --set data.val_size=16 \
            --set train.batch_size=$batch --set train.warmup_epochs=0 --set train.log_every=1 \
            --set train.epochs=2 --out "$OUT/$name-${d//[:\/,]/_}" 2>/dev/null |
            sed -n "s|^trained .* (\(.*img/s\)).*|$name on $d: \1|p"
    done
    for d in "$@"; do
        paste -d, "$OUT/$name-flex/steps.csv" "$OUT/$name-${d//[:\/,]/_}/steps.csv" |
            awk -F, -v what="$name, $d vs flex" 'NR > 1 {
            l = ($3 - $9) / $3; g = ($5 - $11) / $5; if (l < 0) l = -l; if (g < 0) g = -g
            if (l > L) L = l; if (g > G) G = g; n++; if (n == 2) { L2 = L; G2 = G } }
            END { printf "%s, %d steps: first 2 steps loss %.1e, gradient norm %.1e; all steps loss %.1e, gradient norm %.1e\n", what, n, L2, G2, L, G }'
    done
}
compare test-setting 16 64 "$REMOTE"
compare quickstart-batch 64 640 "$REMOTE" flex,flex
