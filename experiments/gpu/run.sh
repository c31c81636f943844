#!/bin/sh
# GPU numbers for the training-speed issue: on each GPU backend, `linvit verify` over the
# reference cases that travel, and `linvit bench model` (forward and training step) of the five
# T presets; then the authors' PyTorch models, eager, on the same GPU. Results land in $OUT
# (default experiments/gpu/out): at most 8 files, as the device tool returns them.
#
# On the GPU machine, after experiments/gpu/prepare.sh here, in one device-tool call:
#   run(command="sh experiments/gpu/run.sh", carry=[".gpu", ".gl"], timeout_s=600)
# A dry run on this machine's CPU (the same script, smaller):
#   DEVICES=flex TORCH_DEVICE=cpu BATCH=2 SECONDS_PER_PHASE=1 sh experiments/gpu/run.sh
#
# Nothing is compiled there (no registry is reachable); CUDA is left out: its build downloads a
# prebuilt LLVM from GitHub, which this machine cannot reach. wgpu runs on Vulkan there.
# Each step has its own time limit (150 + 270 + 120 s), so that the whole run ends inside the
# device tool's 600 s for one command with what it has measured.
set -u
OUT=${OUT:-experiments/gpu/out}
DEVICES=${DEVICES:-wgpu}
TORCH_DEVICE=${TORCH_DEVICE:-cuda}
BATCH=${BATCH:-32}
SECONDS_PER_PHASE=${SECONDS_PER_PHASE:-2}
PRESETS=${PRESETS:-flatten_pvt_t,flatten_swin_t,agent_pvt_t,agent_swin_t,agent_deit_t}
G=.gpu
mkdir -p "$OUT"
LOG="$OUT/log.txt"
: >"$LOG"
say() { echo "== $*" | tee -a "$LOG"; }

# The Vulkan loader (device README): unpacked only where none is installed.
if [ -d .gl ] && ! ldconfig -p 2>/dev/null | grep -q libvulkan; then
    for f in .gl/*.deb; do dpkg -x "$f" /; done
    ldconfig
fi
if [ -f /usr/local/nvidia/share/vulkan/icd.d/nvidia_icd.json ]; then
    export VK_DRIVER_FILES=/usr/local/nvidia/share/vulkan/icd.d/nvidia_icd.json
fi

# The binary: prepared here (.gpu/linvit.xz), or LINVIT=path.
if [ -z "${LINVIT:-}" ]; then
    if [ ! -x "$G/linvit" ]; then
        python3 -c 'import lzma, shutil, sys; shutil.copyfileobj(lzma.open(sys.argv[1]), open(sys.argv[2], "wb"))' \
            "$G/linvit.xz" "$G/linvit"
        chmod +x "$G/linvit"
    fi
    LINVIT=$G/linvit
fi
REF=${LINVIT_REFERENCE_DIR:-$G}
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv >"$OUT/gpu.txt" 2>&1 || true

status=0
for dev in $DEVICES; do
    say "$dev: verify ($REF)"
    if ! timeout 150 "$LINVIT" verify "$REF/reference" "$REF/reference-lm" --device "$dev" --json \
        >"$OUT/verify_$dev.jsonl" 2>>"$LOG"; then
        say "verify on $dev did not pass (see verify_$dev.jsonl)"
        status=1
    fi
    say "$dev: presets, batch $BATCH, forward and training step"
    timeout 270 "$LINVIT" bench model --presets "$PRESETS" --resolutions 224 --batch "$BATCH" --device "$dev" \
        --seconds "$SECONDS_PER_PHASE" --json --out "$OUT/models_$dev.json" >/dev/null 2>>"$LOG" \
        || status=1
done

say "PyTorch eager on $TORCH_DEVICE, batch $BATCH"
if [ -d "$G/wheels" ]; then
    python3 -m pip install -q --no-index --no-deps --target /tmp/linvit-site "$G"/wheels/*.whl >>"$LOG" 2>&1
    export PYTHONPATH=/tmp/linvit-site${PYTHONPATH:+:$PYTHONPATH}
fi
LINVIT=$LINVIT timeout 120 python3 -W ignore experiments/bench/pytorch_baseline.py \
    --upstream "${FLATTEN:-$G/FLatten-Transformer}" --upstream "${AGENT:-$G/Agent-Attention}" \
    --presets "$PRESETS" --resolution 224 --batch "$BATCH" --seconds "$SECONDS_PER_PHASE" --train \
    --device "$TORCH_DEVICE" --json >"$OUT/pytorch_$TORCH_DEVICE.jsonl" 2>>"$LOG" || status=1
say "done, status $status"
exit $status
