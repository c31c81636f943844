#!/bin/sh
# Two builds of linvit against each other on the training step (forward, soft cross entropy,
# backward, AdamW; `Path::Auto`, batch 8 at 224x224) of the five T presets, in interleaved
# pairs (the VM's speed drifts over minutes; the side that goes first alternates). Prints each
# pair's step times, then per preset the ratio NEW / OLD of each pair and their median.
#
#   sh experiments/bench/ab_train_step.sh OLD_BIN NEW_BIN [PAIRS] [ROUNDS]
#
# Each BIN is a build of the `train_step` example at the revision to compare, e.g.
#   git checkout REV && cargo build -p linvit-train --example train_step \
#     && cp "${CARGO_TARGET_DIR:-target}/debug/examples/train_step" /tmp/train_step_REV
# ROUNDS (default 2) is the example's timed rounds per preset; PRESETS overrides the list.
set -e
OLD=${1:?old train_step binary}
NEW=${2:?new train_step binary}
PAIRS=${3:-4}
ROUNDS=${4:-2}
PRESETS=${PRESETS:-agent_deit_t,agent_swin_t,agent_pvt_t,flatten_pvt_t,flatten_swin_t}
# The allocator settings `linvit` itself makes at start-up (crates/linvit/src/main.rs).
export LINVIT_TRAIN_STEP_PATH=auto MALLOC_MMAP_MAX_=0 MALLOC_TRIM_THRESHOLD_=2147483647 MALLOC_ARENA_MAX=1
TMP=$(mktemp)
trap 'rm -f "$TMP"' EXIT
step_ms() { # BIN SIDE PAIR: "pair side preset ms" lines
    "$1" "$PRESETS" 8 "$ROUNDS" 2>/dev/null |
        awk -v side="$2" -v pair="$3" -F'|' '$3 ~ /auto/ { gsub(/ /, "", $2); gsub(/ /, "", $4); print pair, side, $2, $4 }'
}
i=1
while [ "$i" -le "$PAIRS" ]; do
    if [ $((i % 2)) = 1 ]; then
        step_ms "$OLD" old "$i" >>"$TMP"
        step_ms "$NEW" new "$i" >>"$TMP"
    else
        step_ms "$NEW" new "$i" >>"$TMP"
        step_ms "$OLD" old "$i" >>"$TMP"
    fi
    i=$((i + 1))
done
echo "pair side preset step_ms"
sort -k1,1n -k2,2r "$TMP"
echo
echo "| preset | new / old per pair (sorted) | median |"
echo "| --- | --- | --- |"
for p in $(echo "$PRESETS" | tr ',' ' '); do
    ratios=$(awk -v p="$p" '$3 == p { t[$1 " " $2] = $4 } END {
        for (k in t) { split(k, a, " "); if (a[2] == "new" && (a[1] " old") in t) printf "%.3f\n", t[k] / t[a[1] " old"] } }' "$TMP" | sort -n)
    n=$(echo "$ratios" | wc -l)
    median=$(echo "$ratios" | awk -v n="$n" '{ r[NR] = $1 } END { if (n % 2) print r[(n + 1) / 2]; else printf "%.3f\n", (r[n / 2] + r[n / 2 + 1]) / 2 }')
    echo "| $p | $(echo "$ratios" | tr '\n' ' ' | sed 's/ $//') | $median |"
done
