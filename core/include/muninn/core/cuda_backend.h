// The CUDA backend (library muninn_core_cuda, built with -DMUNINN_CUDA=ON): the Backend interface
// on one NVIDIA GPU. See docs/CUDA.md for what exists and how it was verified.
//
// Tensors passed to its ops live on its device (Allocate / Transfer), except the small index
// tensors (GetRows ids, Rope positions), which may also be host tensors. Work is queued on one
// stream per backend; Transfer to the host and Synchronize wait for it. Every CUDA and cuBLAS
// error becomes a Status; nothing aborts. Limits beyond Backend's contract (InvalidArgument when
// hit): Attention head dims <= 256, Rope n_rot <= 256, tensors of 1 to 4 dims, Copy with packed
// innermost dims, Transfer to the host into a contiguous tensor.
//
// Thread-compatible, like every Backend: one thread at a time. Buffers it allocates may outlive
// it and be released from any thread.
#pragma once

#include <cstddef>
#include <memory>

#include "muninn/core/backend.h"

namespace muninn {

struct CudaBackendOptions {
  int device = 0;                   // CUDA device ordinal
  size_t staging_bytes = 8u << 20;  // pinned host memory for transfers (two halves, pipelined)
  // Prefill attention over f16 K/V (the KV cache's default dtype) on tensor cores, with the
  // queries and probabilities split into two f16 terms each (near-f32 products); false keeps the
  // SIMT kernel for every shape (for A/B measurements).
  bool tensor_core_attention = true;
  // Device memory for quantized weights decoded to f16 once and kept for prefill's GEMMs (2 bytes
  // a weight: 270 MB for SmolLM2-135M); weights beyond it are decoded tile by tile on every call.
  // 0 turns the cache off.
  size_t decoded_weight_cache_bytes = size_t{1} << 30;
  // The decode step's fused ops (Backend::FusesDecodeOps: norm + projections, RoPE + KV store,
  // projection + residual, SwiGLU + down + residual in one launch each); false makes the model run
  // the plain ops (for A/B measurements; muninn's tools read MUNINN_CUDA_FUSED_DECODE=0).
  bool fused_decode_ops = true;
  // Decode mat×vec on q4_0/q4_1/q8_0 with eight lanes sharing each block, so that a warp reads the
  // activations coalesced (since 2026-12-05); false keeps the earlier kernel, each lane on whole
  // blocks, for unfused launches (the kernel benchmark's A/B; fused launches stay coalesced).
  bool coalesced_matvec = true;
  Status Validate() const;
};

// Number of CUDA devices this process can use; 0 when there is no driver or no device (never an
// error). Both functions live in muninn_core_cuda, which exists only with -DMUNINN_CUDA=ON and
// defines MUNINN_HAVE_CUDA=1 for the targets that link it.
int CudaDeviceCount();

// Unavailable ("no CUDA device ...") when no device is present; InvalidArgument for a bad ordinal.
StatusOr<std::unique_ptr<Backend>> CreateCudaBackend(const CudaBackendOptions& options);

}  // namespace muninn
