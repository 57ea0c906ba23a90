// Backward kernels for fine-tuning (issue 12) on the CPU: frozen and LoRA matmuls, RMSNorm, RoPE
// and SwiGLU. Attention is in attention_backward.h, the fused cross-entropy in cross_entropy.h,
// the optimizer in optimizer.h; docs/TRAINING.md lists what exists and how it is tested.
//
// Conventions shared by every kernel here (llm.c style, one forward/backward pair per op):
//  - Arrays are packed row-major f32 on the host; each argument carries its shape in a comment.
//    Shapes are programmer invariants (MUNINN_CHECK), not user input.
//  - Matmuls follow backend.h: a weight is stored [n_out, n_in] and the forward is y = x · wᵀ.
//  - Gradients of activations (dx, dgate, ...) are WRITTEN unless the argument says "added";
//    gradients of parameters (LoRA A/B, norm weights) are always ADDED, so micro-batches
//    accumulate into the same buffers. The caller zeroes them once per optimizer step.
//  - Residual adds need no kernel: for h' = h + f(x), dh' flows unchanged into dh and into f's
//    backward, and the two contributions to dh are summed by the caller.
//  - Results do not depend on the pool's thread count: work is cut into fixed blocks and
//    cross-block reductions are summed in block order (what deterministic data parallelism needs).
//  - `pool` may be null (everything runs on the calling thread).
//
// Thread-compatible: the functions are pure apart from their output arguments.
#pragma once

#include <cstdint>

#include "muninn/core/backend.h"
#include "muninn/core/status.h"
#include "muninn/core/tensor.h"
#include "muninn/core/thread_pool.h"

namespace muninn {

// ---- frozen weights ----

// A contiguous f32 copy of a 2-d weight of any dtype DequantizeRow supports (f32, f16, bf16, every
// GGUF block-quantized type): dequantize once, then use it for every backward matmul.
// InvalidArgument for a tensor that is not a 2-d host tensor of such a dtype.
StatusOr<Tensor> DequantizeToF32(const Tensor& w);

// y[m, n_out] = x[m, n_in] · w[n_out, n_in]ᵀ (the frozen part of a trained layer's projection).
// OpenBLAS sgemm.
void LinearForward(const float* x, const float* w, int64_t m, int64_t n_out, int64_t n_in,
                   float* y);

// dx[m, n_in] = dy[m, n_out] · w[n_out, n_in]   (the input gradient of y = x · wᵀ; w frozen).
// With `accumulate` the product is added to dx instead. OpenBLAS sgemm.
void LinearBackwardInput(const float* dy, const float* w, int64_t m, int64_t n_out, int64_t n_in,
                         float* dx, bool accumulate);

// ---- LoRA (Hugging Face PEFT's definition) ----
//
// y = x · Wᵀ + scale · (drop(x) · Aᵀ) · Bᵀ with A: [rank, n_in], B: [n_out, rank],
// scale = alpha / rank, and drop() inverted dropout with keep probability 1 - dropout: an element
// is kept (and multiplied by 1 / (1 - dropout)) or zeroed according to a hash of (seed, its index
// in x), so the mask needs no storage and the backward recomputes it. The frozen x · Wᵀ part is the
// backend's MatMul forward and LinearBackwardInput backward.
struct LoraDims {
  int64_t m = 0;  // rows of x (tokens)
  int64_t n_in = 0;
  int64_t n_out = 0;
  int64_t rank = 0;
  float scale = 1.0f;    // alpha / rank
  float dropout = 0.0f;  // in [0, 1)
  uint64_t seed = 0;     // dropout mask seed; vary it per step, layer and matrix
};

// xd[m, n_in] = drop(x[m, n_in]) (a plain copy when dropout is 0).
void LoraDropout(const LoraDims& dims, const float* x, float* xd);

// u[m, rank] = xd · Aᵀ (written; keep it for the backward), then y[m, n_out] += scale · u · Bᵀ.
// xd is LoraDropout's output.
void LoraForward(const LoraDims& dims, const float* xd, const float* a, const float* b, float* u,
                 float* y);

// From dy[m, n_out] and the forward's xd[m, n_in] and u[m, rank]:
//   db[n_out, rank] += scale · dyᵀ · u
//   da[rank, n_in]  += (scale · dy · B)ᵀ · xd
//   dx[m, n_in]     += drop'((scale · dy · B) · A)   (the LoRA path's share; dx may be null)
// where drop' applies the forward's mask and 1 / (1 - dropout). da or db may be null (not trained).
void LoraBackward(const LoraDims& dims, const float* dy, const float* xd, const float* u,
                  const float* a, const float* b, float* da, float* db, float* dx);

// ---- RMSNorm ----

// The forward is the backend's RmsNorm (its scalar rows: Σ x² in double, rstd rounded to float,
// then y = x · rstd · w in float).

// Backward of y = x / sqrt(mean(x²) + eps) · w per row of d (the forward of Backend::RmsNorm, eps
// inside the square root, normalise then scale). x, dy, dx: [rows, d]; w: [d] or null (= 1).
// dx is written; dw [d] (may be null) is added: dw += Σ_rows dy ∘ x · rstd. Per-row sums in double.
void RmsNormBackward(ThreadPool* pool, const float* x, const float* w, const float* dy,
                     int64_t rows, int64_t d, float eps, float* dx, float* dw);

// ---- RoPE ----

// dx = the input gradient of Backend::Rope(x, positions, params): the rotation is orthogonal
// (times YaRN's mscale on the rotated dims), so the backward is the same rotation by the negated
// angle, which is the CPU Rope kernel run at negated positions. Both layouts (kHalves for Hugging
// Face checkpoints, kInterleaved for GGUF llama), partial rotation and every scaling mode.
// dy, dx: [T, n_head, head_dim] (dx may be dy: in place); positions: [T].
// InvalidArgument for params the forward rejects, or a position of INT32_MIN.
Status RopeBackward(ThreadPool* pool, const float* dy, const int32_t* positions, int64_t T,
                    int64_t n_head, int64_t head_dim, const RopeParams& params, float* dx);

// ---- SwiGLU ----

// The forward is the backend's SwiGlu: out = silu(gate) · up, silu(g) = g / (1 + exp(-g)).

// Backward of y = silu(gate) · up with silu(g) = g · σ(g): gate, up, dy, dgate, dup: [n].
// dgate = dy · up · σ(g) · (1 + g · (1 - σ(g))), dup = dy · silu(g); both written. The forward
// in model.cc overwrites gate with y, so a trainer keeps (or recomputes) gate.
void SwiGluBackward(ThreadPool* pool, const float* gate, const float* up, const float* dy,
                    int64_t n, float* dgate, float* dup);

}  // namespace muninn
