#!/bin/sh
# Prepares the GPU run (experiments/gpu/run.sh) on this machine, for the `device` tool's GPU
# machine, where nothing can be compiled or fetched and only the repository and the paths a call
# carries travel (64 MiB in all; `../shared` does not). Fills two ignored folders:
#
#   .gpu/linvit.xz      the `linvit` the README builds (dev profile, wgpu), stripped, xz-compressed
#   .gpu/reference/, .gpu/reference-lm/
#                       a subset of the reference cases (all vision attention cases, five model
#                       cases, three LM cases), under 25 MiB
#   .gpu/FLatten-Transformer/models/, .gpu/Agent-Attention/agent_transformer/models/
#                       the authors' model files, for PyTorch eager on the same GPU
#   .gpu/wheels/        timm 0.4.12 (the authors' pinned version; the GPU image has a newer timm)
#   .gl/                the Vulkan and EGL loader packages (the device README's list)
#
# Repository root; needs `cargo`, `strip`, `xz`, `pip` and `apt-get download`, and the authors'
# checkouts (FLATTEN=..., AGENT=...). Then, through the device tool, in one call:
#   run(command="sh experiments/gpu/run.sh", carry=[".gpu", ".gl"], timeout_s=600)
set -eu
: "${FLATTEN:?set FLATTEN to a checkout of LeapLabTHU/FLatten-Transformer}"
: "${AGENT:?set AGENT to a checkout of LeapLabTHU/Agent-Attention}"
REF=${LINVIT_REFERENCE_DIR:-../shared}
TARGET=${CARGO_TARGET_DIR:-target}
G=.gpu
rm -rf "$G"
mkdir -p "$G/reference" "$G/reference-lm" "$G/wheels" .gl

cargo build -q -p linvit
strip -o "$G/linvit" "$TARGET/debug/linvit"
xz -T0 -6 -f "$G/linvit"

for case in "$REF"/reference/*_attn* "$REF"/reference/flatten_pvt_reduced_model \
    "$REF"/reference/agent_pvt_reduced_model "$REF"/reference/agent_deit_reduced_model \
    "$REF"/reference/flatten_swin_reduced_model "$REF"/reference/timm_vit_reduced_model; do
    cp -r "$case" "$G/reference/"
done
for case in lightning_attn_causal_decay_n512 tnl_reduced_model tnl_reduced_model_decode; do
    cp -r "$REF/reference-lm/$case" "$G/reference-lm/"
done

mkdir -p "$G/FLatten-Transformer" "$G/Agent-Attention/agent_transformer"
cp -r "$FLATTEN/models" "$G/FLatten-Transformer/"
cp -r "$AGENT/agent_transformer/models" "$G/Agent-Attention/agent_transformer/"
python3 -m pip download -q --no-deps --only-binary=:all: -d "$G/wheels" timm==0.4.12

# The device README's recipe: amd64 packages whatever this machine is.
mkdir -p /tmp/amd64/partial
o='-oAPT::Architecture=amd64 -oAPT::Architectures=amd64 -oDir::State::Lists=/tmp/amd64'
# shellcheck disable=SC2086
apt-get $o update -qq
# shellcheck disable=SC2086
(cd .gl && apt-get $o download -qq libvulkan1 libegl1 libglvnd0 libopengl0 libgl1 libglx0 libgles2)

du -sh "$G" .gl
echo "travels: $(du -scm "$G" .gl | tail -1 | cut -f1) MiB beside the repository's tracked files"
