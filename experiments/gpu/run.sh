#!/bin/sh
# GPU numbers (issue 8): `linvit verify` on every reference case, then `linvit bench` of the
# attention kinds, the causal forms and the presets, on each GPU backend this build has. JSON and
# PNG land in $OUT (default experiments/gpu), one file per backend and benchmark.
#
# From the repository root on the GPU machine:
#   sh experiments/gpu/run.sh                         # builds target/release/linvit (wgpu)
#   CUDA=1 sh experiments/gpu/run.sh                  # also builds and runs the CUDA backend
#   LINVIT=path/to/linvit sh experiments/gpu/run.sh   # a binary built elsewhere (no network)
# LINVIT_REFERENCE_DIR is the folder holding reference/ and reference-lm/ (default ../shared).
set -eu
OUT=${OUT:-experiments/gpu}
REF=${LINVIT_REFERENCE_DIR:-../shared}
DEVICES=wgpu
if [ "${CUDA:-0}" = 1 ]; then
    DEVICES="wgpu cuda"
fi
if [ -z "${LINVIT:-}" ]; then
    if [ "${CUDA:-0}" = 1 ]; then
        cargo build --release -p linvit --features cuda
    else
        cargo build --release -p linvit
    fi
    LINVIT=target/release/linvit
fi
mkdir -p "$OUT"
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv > "$OUT/gpu.txt" 2>&1 || true

status=0
for dev in $DEVICES; do
    echo "== $dev: verify"
    if ! "$LINVIT" verify "$REF/reference" "$REF/reference-lm" --device "$dev" --json \
        > "$OUT/verify_$dev.json"; then
        echo "verify on $dev did not pass (see $OUT/verify_$dev.json)"
        status=1
    fi
    echo "== $dev: attention kinds"
    "$LINVIT" bench attention --kinds softmax,softmax_naive,linear,focused,agent \
        --tokens 196,784,3136,12544,50176 --batch 2 --heads 4 --head-dim 32 --device "$dev" \
        --seconds 2 --json --out "$OUT/attention_$dev.json" --plot "$OUT/attention_$dev.png" \
        > /dev/null || status=1
    echo "== $dev: causal forms"
    "$LINVIT" bench causal --tokens 1024,4096,16384,65536 --batch 1 --heads 8 --head-dim 64 \
        --device "$dev" --json --plot "$OUT/causal_$dev.png" > "$OUT/causal_$dev.json" || status=1
    echo "== $dev: presets"
    "$LINVIT" bench model --presets flatten_pvt_t,flatten_swin_t,agent_pvt_t,agent_deit_t,pvt_t,swin_t,deit_t \
        --resolutions 224,384 --batch 32 --device "$dev" --seconds 3 \
        --json --out "$OUT/models_$dev.json" --plot "$OUT/models_$dev.png" > /dev/null || status=1
    echo "== $dev: presets in bf16 (f32 master weights for the training step)"
    "$LINVIT" bench model --presets flatten_pvt_t,flatten_swin_t,pvt_t,swin_t \
        --resolutions 224 --batch 32 --device "$dev" --seconds 3 --precision bf16 \
        --json --out "$OUT/models_bf16_$dev.json" > /dev/null || status=1
done
exit $status
