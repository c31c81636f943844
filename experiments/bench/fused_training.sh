#!/bin/sh
# The training step (forward, soft cross entropy, backward, AdamW) of the five T presets on
# flex, batch 8 at 224x224: Burn's ops (`Path::Ops`) against linvit's fused autodiff nodes
# (`Path::Auto`, what `linvit train` runs), interleaved in rounds so both paths share the
# VM's drift. Writes a Markdown table to stdout; experiments/bench/fused_training.md holds the
# committed runs. Repository root:
#
#   sh experiments/bench/fused_training.sh [ROUNDS] [SECONDS]
#
# LINVIT_ISA=avx2 narrows linvit's own kernels to AVX2+FMA; Burn's matmul (gemm) and flex's
# element-wise ops still pick AVX-512 where the CPU has it.
set -e
cargo build -q -p linvit-train --example train_step
E=${CARGO_TARGET_DIR:-target}/debug/examples/train_step
# The allocator settings `linvit` itself makes at start-up (crates/linvit/src/main.rs).
MALLOC_MMAP_MAX_=0 MALLOC_TRIM_THRESHOLD_=2147483647 MALLOC_ARENA_MAX=1 \
    "$E" flatten_pvt_t,flatten_swin_t,agent_pvt_t,agent_swin_t,agent_deit_t 8 "${1:-4}" "${2:-3}"
