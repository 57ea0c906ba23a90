// Attention over [memory ; local] keys for training: a forward that also returns each row's
// log-sum-exp, and the backward that recomputes the softmax from it (flash-attention style, no
// [T, S] matrix is stored). Same semantics as Backend::Attention (backend.h):
//   q: [T, n_head, d]; k: [S, n_head_kv, d]; v: [S, n_head_kv, dv];
//   mem_k: [M, n_head_kv, d], mem_v: [M, n_head_kv, dv] (M may be 0: pointers may then be null);
//   mem_q: [T, n_head, d] or null (= q): the queries that score the memory keys (context memory);
//   out: [T, n_head, dv]; lse: [T, n_head].
// Query head h reads kv head h / (n_head / n_head_kv) (GQA). Every query sees every memory key;
// with `causal`, query t sees local key s iff s <= t + (S - T) (bottom-right aligned); one softmax
// runs over the memory and the visible local keys together, scores multiplied by `scale`.
// mem_bias: [n_head] or null (= 0): query head h scores memory key j as scale·q·k_j + mem_bias[h]
// (AttentionParams::mem_bias, the trainable per-head memory gate); local keys get no bias.
// The memory block is a constant (MemLong detaches it): it gets no gradient, but the queries
// that score it do.
//
// All arrays packed row-major f32 (conventions of backward.h). Work is split over query rows
// (forward, dQ) and over local key rows (dK, dV), each output element written by one task in a
// fixed order, so results do not depend on the thread count. Scratch is O(M + S) per thread.
// Thread-compatible.
#pragma once

#include <cstdint>

#include "muninn/core/cpu_features.h"
#include "muninn/core/thread_pool.h"

namespace muninn {

struct AttentionTrainDims {
  int64_t T = 0;  // queries
  int64_t S = 0;  // local keys (causal needs T <= S)
  int64_t M = 0;  // memory keys (0: no memory block)
  int64_t n_head = 0;
  int64_t n_head_kv = 0;  // divides n_head
  int64_t d = 0;          // q/k head dim
  int64_t dv = 0;         // v head dim
  float scale = 0.0f;     // multiplier on q·k; 0 means 1/sqrt(d)
  bool causal = true;
  // Kernel family (results differ between families only by float rounding). Asking for more than
  // the CPU supports is a programmer error.
  CpuIsa isa = GetCpuFeatures().BestIsa();
};

// out and lse (natural-log sum of exp of the scaled scores per query row and head).
void AttentionForwardTrain(ThreadPool* pool, const AttentionTrainDims& dims, const float* q,
                           const float* k, const float* v, const float* mem_q, const float* mem_k,
                           const float* mem_v, float* out, float* lse,
                           const float* mem_bias = nullptr);

// From dout [T, n_head, dv] and the forward's out and lse: dq [T, n_head, d], dk [S, n_head_kv, d]
// and dv [S, n_head_kv, dv] are written (dk/dv summed over the query heads sharing each kv head);
// dmem_q [T, n_head, d] is written when mem_q is given (it must then be non-null), otherwise the
// memory keys' share of the query gradient goes into dq. mem_bias must be the forward's; with
// dmem_bias non-null, dmem_bias[h] += Σ over query rows and memory keys of head h of dS (a
// parameter gradient: added, like LoRA's), summed per block of query rows, then the blocks in
// order (thread-count independent); with M = 0 it is left unchanged.
void AttentionBackward(ThreadPool* pool, const AttentionTrainDims& dims, const float* q,
                       const float* k, const float* v, const float* mem_q, const float* mem_k,
                       const float* mem_v, const float* out, const float* lse, const float* dout,
                       float* dq, float* dk, float* dv, float* dmem_q,
                       const float* mem_bias = nullptr, float* dmem_bias = nullptr);

}  // namespace muninn
