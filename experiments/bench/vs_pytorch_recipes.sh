#!/bin/sh
# The Fashion-MNIST recipes' training step (the models configs/fashion_mnist_*.toml train: 32x32
# grayscale, 10 classes, batch 128) against the same models in the authors' PyTorch code, in
# interleaved pairs. Ours: the step alone (`train_step` example, `Path::Auto`, what `linvit train`
# runs, without data loading); PyTorch's: forward, cross entropy, backward, AdamW
# (`pytorch_baseline.py`, which builds each recipe's model from its preset and `[model] args`).
# Writes $OUT.jsonl and $OUT.md (default experiments/bench/vs_pytorch_recipes).
#
#   FLATTEN=path/to/FLatten-Transformer AGENT=path/to/Agent-Attention PYTHON=path/to/python \
#       sh experiments/bench/vs_pytorch_recipes.sh [PAIRS]
set -e
PY=${PYTHON:-python3}
: "${FLATTEN:?set FLATTEN to a checkout of LeapLabTHU/FLatten-Transformer}"
: "${AGENT:?set AGENT to a checkout of LeapLabTHU/Agent-Attention}"
PAIRS=${1:-4}
RECIPES=configs/fashion_mnist_flatten.toml,configs/fashion_mnist_agent.toml,configs/fashion_mnist_softmax.toml
OUT=${OUT:-experiments/bench/vs_pytorch_recipes}
cargo build -q -p linvit -p linvit-train --example train_step
T=${CARGO_TARGET_DIR:-target}/debug
TMP=$(mktemp -d)
trap 'rm -rf "$TMP"' EXIT
: >"$OUT.jsonl"

ours() {
    LINVIT_TRAIN_STEP_PATH=auto MALLOC_MMAP_MAX_=0 MALLOC_TRIM_THRESHOLD_=2147483647 \
        "$T/examples/train_step" "$RECIPES" 0 1 3 >"$TMP/ours.md"
    # Rows: | configs/NAME.toml (batch B) | auto | MS | | | IMG_S |
    sed -n 's/^| configs\/\([a-z_]*\)\.toml (batch [0-9]*) | auto | [0-9.]* | | | \([0-9.]*\) |$/\1 \2/p' \
        "$TMP/ours.md" | while read -r name img_s; do
        echo "{\"pair\": $1, \"side\": \"linvit\", \"preset\": \"$name\", \"train_img_s\": $img_s}"
    done >>"$OUT.jsonl"
}

theirs() {
    LINVIT=$T/linvit "$PY" -W ignore experiments/bench/pytorch_baseline.py --upstream "$FLATTEN" \
        --upstream "$AGENT" --presets "$RECIPES" --seconds 3 --train --json 2>/dev/null \
        >"$TMP/theirs.jsonl"
    "$PY" -c 'import json, sys
for line in sys.stdin:
    r = json.loads(line)
    print(json.dumps({"pair": int(sys.argv[1]), "side": "pytorch", **r}))' "$1" <"$TMP/theirs.jsonl" >>"$OUT.jsonl"
}

i=1
while [ "$i" -le "$PAIRS" ]; do
    if [ $((i % 2)) -eq 1 ]; then ours $i; theirs $i; else theirs $i; ours $i; fi
    echo "pair $i of $PAIRS done" >&2
    i=$((i + 1))
done
{
    echo "# Fashion-MNIST recipes: linvit against the authors' PyTorch code ($(date -u +%Y-%m-%d))"
    echo
    echo "Machine: $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ *//'), $(nproc) cores;"
    echo "AVX-512 on the CPU: $(grep -q avx512f /proc/cpuinfo && echo yes || echo no); LINVIT_ISA=${LINVIT_ISA:-unset}."
    echo "Command: \`sh experiments/bench/vs_pytorch_recipes.sh $PAIRS\`; $PAIRS interleaved pairs; batch 128, 32x32x1."
    "$PY" experiments/bench/pytorch_baseline.py --summary "$OUT.jsonl"
} | tee "$OUT.md"
