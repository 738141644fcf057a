#!/usr/bin/env bash
# Builds FlashAttention-2's sm_80 forward kernels from their public sources for the timing
# model's calibration (issue 20, item 3), OUTSIDE this repository, and writes the manifest that
# `flashmha bench --calibrate OUT` reads (format: src/perf_model/calibrate.rs). Nothing it
# fetches or compiles is ever committed; CI does not run it (it needs network or a checkout).
#
# Usage: tools/fa2_calibration.sh OUT [FA2_CHECKOUT [CUTLASS_INCLUDE]]
#   FA2_CHECKOUT: a flash-attention tree (default: cloned at $FA2_COMMIT into OUT/src);
#   CUTLASS_INCLUDE: CUTLASS's include/ (default: FA2's csrc/cutlass submodule, cloned at the
#   commit FA2 pins).
# The toolchain is ours: nvcc / ptxas from the wheels build.rs provisions (toolchain/pins.env).
set -euo pipefail
OUT=${1:?usage: $0 OUT [FA2_CHECKOUT [CUTLASS_INCLUDE]]}
FA2_COMMIT=0251105a2fb19d2957484b7f023cd8c115286ced
mkdir -p "$OUT"
OUT=$(cd "$OUT" && pwd)
HERE=$(cd "$(dirname "$0")/.." && pwd)
# shellcheck disable=SC1091
source "$HERE/toolchain/pins.env"
WHEELS=$(ls -d "$HOME"/.cache/flashmha/cuda-wheels-* | tail -1)
CUDA="$WHEELS/$(dirname "$CUDA_WHEEL_BIN")"
export PATH="$WHEELS/$CUDA_WHEEL_BIN:$PATH"

FA2=${2:-}
if [ -z "$FA2" ]; then
  FA2="$OUT/src/flash-attention"
  if [ ! -d "$FA2" ]; then
    git clone -q https://github.com/Dao-AILab/flash-attention "$FA2"
    git -C "$FA2" checkout -q "$FA2_COMMIT"
  fi
fi
CUTLASS=${3:-$FA2/csrc/cutlass/include}
if [ ! -f "$CUTLASS/cute/tensor.hpp" ]; then
  git -C "$FA2" submodule update --init csrc/cutlass
fi
SRC="$FA2/csrc/flash_attn/src"

# The shim: extern "C" entries instantiating FA2's forward template (compute_attn) with the
# kernel traits FA2's own dispatch (flash_fwd_launch_template.h, run_mha_fwd_hdim*) picks on
# A100 and H100 for each head dim, no dropout / alibi / local window / softcap, even K.
# Columns: entry head_dim block_m block_n warps even_mn gpus
KERNELS="
hd64 64 128 128 4 true H100,A100
hd128 128 128 64 4 true H100,A100
hd256a 256 128 64 8 false A100
hd256h 256 64 64 4 false H100
"
{
  echo '#define FLASHATTENTION_DISABLE_DROPOUT'
  echo '#include "flash.h"'
  echo '#include "flash_fwd_kernel.h"'
  echo 'using namespace FLASH_NAMESPACE;'
  echo '#define E(name, HD, BM, BN, W, T, CAUSAL, EVEN) extern "C" __global__ void name(const __grid_constant__ Flash_fwd_params params) { compute_attn<Flash_fwd_kernel_traits<HD, BM, BN, W, false, false, T>, false, CAUSAL, false, false, EVEN, true, false, false>(params); }'
  echo "$KERNELS" | while read -r name d bm bn w even gpus; do
    [ -n "$name" ] || continue
    for t in bf16:cutlass::bfloat16_t f16:cutlass::half_t; do
      for c in 0 1; do
        suffix=$([ "$c" = 1 ] && echo _causal || true)
        causal=$([ "$c" = 1 ] && echo true || echo false)
        echo "E(fa2_${name}_${t%%:*}${suffix}, $d, $bm, $bn, $w, ${t#*:}, $causal, $even)"
      done
    done
  done
} > "$OUT/fa2_shim.cu.new"
# Rewritten only when it changed, so an unchanged shim keeps its PTX (nvcc takes minutes).
if cmp -s "$OUT/fa2_shim.cu.new" "$OUT/fa2_shim.cu"; then
  rm "$OUT/fa2_shim.cu.new"
else
  mv "$OUT/fa2_shim.cu.new" "$OUT/fa2_shim.cu"
fi

# Field offsets of Flash_fwd_params, from the host compiler.
cat > "$OUT/layout.cpp" <<'CPP'
#include <cstddef>
#include <cstdio>
#include <cuda_runtime_api.h>
#include "flash.h"
using P = FLASH_NAMESPACE::Flash_fwd_params;
#define F(x) std::printf("field %s %zu\n", #x, offsetof(P, x));
int main() {
  std::printf("size %zu\n", sizeof(P));
  F(q_ptr) F(k_ptr) F(v_ptr) F(o_ptr) F(softmax_lse_ptr)
  F(q_batch_stride) F(k_batch_stride) F(v_batch_stride) F(o_batch_stride)
  F(q_row_stride) F(k_row_stride) F(v_row_stride) F(o_row_stride)
  F(q_head_stride) F(k_head_stride) F(v_head_stride) F(o_head_stride)
  F(h) F(h_k) F(h_h_k_ratio) F(b) F(seqlen_q) F(seqlen_k) F(d)
  F(seqlen_q_rounded) F(seqlen_k_rounded) F(d_rounded)
  F(scale_softmax) F(scale_softmax_log2) F(p_dropout) F(rp_dropout) F(scale_softmax_rp_dropout)
  F(window_size_left) F(window_size_right) F(is_bf16) F(is_causal) F(is_seqlens_k_cumulative)
  F(num_splits)
}
CPP
g++ -std=c++17 -Wno-invalid-offsetof -I"$SRC" -I"$CUDA/include" "$OUT/layout.cpp" -o "$OUT/layout"

if [ ! -f "$OUT/fa2.ptx" ] || [ "$OUT/fa2_shim.cu" -nt "$OUT/fa2.ptx" ]; then
  nvcc -arch=sm_80 -std=c++17 --expt-relaxed-constexpr -O3 -DNDEBUG -ptx -w \
    -I"$SRC" -I"$CUTLASS" "$OUT/fa2_shim.cu" -o "$OUT/fa2.ptx"
fi
ptxas -arch=sm_80 -v "$OUT/fa2.ptx" -o "$OUT/fa2.cubin" 2> "$OUT/ptxas.log"

{
  echo "ptx fa2.ptx"
  "$OUT/layout"
  echo "$KERNELS" | while read -r name d bm bn w even gpus; do
    [ -n "$name" ] || continue
    # FA2's Flash_fwd_kernel_traits: Q tile + double-buffered K and V tiles, 2-byte elements.
    smem=$(( bm * d * 2 + 2 * bn * d * 2 ))
    for t in bf16 f16; do
      for c in 0 1; do
        entry="fa2_${name}_${t}$([ "$c" = 1 ] && echo _causal || true)"
        regs=$(awk -v e="$entry" '$0 ~ "Function properties for "e"$" {f=1; next}
          f && /Used [0-9]+ registers/ {for (i=1;i<=NF;i++) if ($i=="Used") print $(i+1); exit}' "$OUT/ptxas.log")
        echo "kernel $entry head_dim=$d block_m=$bm block_n=$bn threads=$((w * 32)) regs=$regs smem=$smem causal=$c dtype=$t gpus=$gpus"
      done
    done
  done
} > "$OUT/manifest.txt"
echo "wrote $OUT/manifest.txt; run: flashmha bench --calibrate $OUT [--dtype f16]"
