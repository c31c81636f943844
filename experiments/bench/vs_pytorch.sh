#!/bin/sh
# linvit against the authors' PyTorch code on this machine: the five T presets of the training
# issue, forward (eval, no gradients) and training step (forward, cross entropy, backward,
# AdamW), batch 8 at 224, with each side's peak memory. With PRESETS naming recipes
# (configs/*.toml), the training step of the models they train, at their own image size,
# channels and batch: ours through the `train_step` example (`Path::Auto`, the step alone, no
# data loading), PyTorch's built from each recipe's preset and `[model] args`:
#   PRESETS=configs/fashion_mnist_flatten.toml,configs/fashion_mnist_agent.toml,configs/fashion_mnist_softmax.toml \
#       OUT=experiments/bench/vs_pytorch_recipes sh experiments/bench/vs_pytorch.sh 4 Interleaved pairs (the VM's speed drifts
# over minutes, so each pair's two sides see the same phase; the side that goes first
# alternates). Writes $OUT.jsonl and $OUT.md (default experiments/bench/vs_pytorch_train).
#
#   FLATTEN=path/to/FLatten-Transformer AGENT=path/to/Agent-Attention PYTHON=path/to/python \
#       sh experiments/bench/vs_pytorch.sh [PAIRS]
#
# Repository root, after `cargo build -p linvit` (or LINVIT=path/to/linvit); PYTHON needs torch,
# einops and timm 0.4.12 (see pytorch_baseline.py). To hold both sides to AVX2 on an AVX-512
# machine: LINVIT_ISA=avx2 ATEN_CPU_CAPABILITY=avx2 ONEDNN_MAX_CPU_ISA=AVX2
# MKL_ENABLE_INSTRUCTIONS=AVX2, and LINVIT a linvit built without gemm-f32's `x86-v4` feature
# (root Cargo.toml), whose matrix products are then AVX2's too; flex's element-wise ops still
# choose for themselves.
set -e
B=${LINVIT:-${CARGO_TARGET_DIR:-target}/debug/linvit}
PY=${PYTHON:-python3}
: "${FLATTEN:?set FLATTEN to a checkout of LeapLabTHU/FLatten-Transformer}"
: "${AGENT:?set AGENT to a checkout of LeapLabTHU/Agent-Attention}"
PAIRS=${1:-4}
PRESETS=${PRESETS:-flatten_pvt_t,flatten_swin_t,agent_pvt_t,agent_swin_t,agent_deit_t}
OUT=${OUT:-experiments/bench/vs_pytorch_train}
TMP=$(mktemp -d)
trap 'rm -rf "$TMP"' EXIT
: >"$OUT.jsonl"

case "$PRESETS" in
*.toml*) RECIPES=1 ;;
*) RECIPES=0 ;;
esac
if [ "$RECIPES" = 1 ]; then cargo build -q -p linvit-train --example train_step; fi

ours() {
    if [ "$RECIPES" = 1 ]; then ours_recipes "$1"; else ours_presets "$1"; fi
}

ours_recipes() {
    LINVIT_TRAIN_STEP_PATH=auto MALLOC_MMAP_MAX_=0 MALLOC_TRIM_THRESHOLD_=2147483647 MALLOC_ARENA_MAX=1 \
        "${CARGO_TARGET_DIR:-target}/debug/examples/train_step" "$PRESETS" 0 1 3 >"$TMP/ours.md"
    # Rows: | configs/NAME.toml (batch B) | auto | MS | | | IMG_S |
    sed -n 's/^| configs\/\([a-z_]*\)\.toml (batch [0-9]*) | auto | [0-9.]* | | | \([0-9.]*\) |$/\1 \2/p' \
        "$TMP/ours.md" | while read -r name img_s; do
        echo "{\"pair\": $1, \"side\": \"linvit\", \"preset\": \"$name\", \"train_img_s\": $img_s}"
    done >>"$OUT.jsonl"
}

ours_presets() {
    "$B" bench model --presets "$PRESETS" --resolutions 224 --batch 8 --device flex --seconds 3 \
        --json --out "$TMP/ours.json" >/dev/null
    "$PY" -c 'import json, sys
report = json.load(open(sys.argv[1]))
for r in report["rows"]:
    print(json.dumps({"pair": int(sys.argv[2]), "side": "linvit", "preset": r["preset"],
                      "forward_img_s": r["forward_img_s"], "train_img_s": r["train_img_s"],
                      "forward_peak_bytes": r["forward_peak_bytes"],
                      "train_peak_bytes": r["peak_bytes"], "isa": report["isa"]}))' \
        "$TMP/ours.json" "$1" >>"$OUT.jsonl"
}

theirs() {
    LINVIT=$B "$PY" -W ignore experiments/bench/pytorch_baseline.py --upstream "$FLATTEN" \
        --upstream "$AGENT" --presets "$PRESETS" --resolution 224 --batch 8 --seconds 3 --train \
        --json 2>/dev/null >"$TMP/theirs.jsonl"
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
    echo "# linvit against the authors' PyTorch code ($(date -u +%Y-%m-%d))"
    echo
    echo "Machine: $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ *//'), $(nproc) cores;"
    echo "AVX-512 on the CPU: $(grep -q avx512f /proc/cpuinfo && echo yes || echo no)."
    echo "linvit's kernels ran on \`$(sed -n 's/.*"side": "linvit".*"isa": "\([a-z0-9]*\)".*/\1/p' "$OUT.jsonl" | head -1)\`,"
    echo "PyTorch on \`$(sed -n 's/.*"side": "pytorch".*"isa": "\([A-Za-z0-9_]*\)".*/\1/p' "$OUT.jsonl" | head -1)\`"
    echo "(torch $(sed -n 's/.*"torch": "\([^"]*\)".*/\1/p' "$OUT.jsonl" | head -1), 2 threads)."
    echo "Environment: LINVIT_ISA=${LINVIT_ISA:-unset} ATEN_CPU_CAPABILITY=${ATEN_CPU_CAPABILITY:-unset}"
    echo "ONEDNN_MAX_CPU_ISA=${ONEDNN_MAX_CPU_ISA:-unset}"
    echo "MKL_ENABLE_INSTRUCTIONS=${MKL_ENABLE_INSTRUCTIONS:-unset}; linvit binary: $B."
    echo "Command: \`sh experiments/bench/vs_pytorch.sh $PAIRS\` (see its header); $PAIRS interleaved pairs."
    "$PY" experiments/bench/pytorch_baseline.py --summary "$OUT.jsonl"
} | tee "$OUT.md"
