#!/bin/sh
# The commands behind experiments/bench/*.json and *.png (repository root, after
# `cargo build -p linvit`; dev profile, whose flex and gemm crates build at opt-level 3).
set -e
B=${LINVIT:-target/debug/linvit}
nice -n 10 $B bench attention --kinds softmax,softmax_naive,linear,focused,agent \
    --tokens 196,784,3136,12544 --batch 2 --heads 4 --head-dim 32 --device flex --seconds 3 \
    --json --out experiments/bench/attention_flex.json --plot experiments/bench/attention_flex.png >/dev/null
nice -n 10 $B bench model --presets flatten_pvt_t,flatten_swin_t --resolutions 224,384 --batch 8 \
    --device flex --seconds 3 \
    --json --out experiments/bench/models_flex.json --plot experiments/bench/models_flex.png >/dev/null
nice -n 10 $B bench model --presets flatten_pvt_t,flatten_swin_t --resolutions 512 --batch 8 \
    --device flex --no-train --seconds 3 --json --out experiments/bench/models_flex_512.json >/dev/null
