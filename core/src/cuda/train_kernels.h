// Private to the CUDA backend: the launchers of the training kernels behind CudaTrainOps
// (cuda_train_ops.cc, contract in muninn/core/train_ops.h): train_kernels.cu (row-wise and
// element-wise ops, AdamW), train_attention.cu, train_cross_entropy.cu.
//
// Same conventions as kernels.h: device pointers the caller has validated, work enqueued on
// `stream`, the launch error returned (never aborting), no synchronisation. Unlike kernels.h the
// arrays here are packed row-major f32 (train_ops.h requires packed tensors), so the launchers
// take typed pointers and element counts. Every reduction runs in an order fixed by the kernel
// (one thread per output element looping in order, or a fixed shuffle tree over a fixed block
// size), never by atomics, so a call repeated on the same inputs gives the same bits.
#pragma once

#include <cuda_runtime_api.h>

#include <cstdint>

namespace muninn::cuda {

// ---- LoRA dropout (backward.h) ----
// The mask is backward.h's hash: element i is kept iff the top 24 bits of
// splitmix64(seed + 0x9E3779B97F4A7C15 · (i + 1)), as a float in [0, 1), are >= p.

// xd[i] = kept(i) ? x[i] · keep_scale : 0 for i < n; xd may be x (in place).
cudaError_t LaunchLoraDropout(const float* x, int64_t n, float p, float keep_scale, uint64_t seed,
                              float* xd, cudaStream_t stream);
// dx[i] += dxd[i] · keep_scale where kept(i); dx unchanged elsewhere.
cudaError_t LaunchLoraDropoutAccumulate(const float* dxd, int64_t n, float p, float keep_scale,
                                        uint64_t seed, float* dx, cudaStream_t stream);

// ---- RMSNorm (one block per row) ----

// y[r, :] = x[r, :] · rstd_r · w with rstd_r = (float)(1 / sqrt(Σ x² / d + eps)), Σ in double.
// x, y: [rows, d]; w: [d].
cudaError_t LaunchRmsNormTrainForward(const float* x, const float* w, int64_t rows, int64_t d,
                                      float eps, float* y, cudaStream_t stream);
// backward.h's RmsNormBackward, input gradient: dx [rows, d] written; rstd [rows] (double, the
// per-row 1 / sqrt(mean(x²) + eps)) written for LaunchRmsNormWeightGrad. w may be null (= 1).
cudaError_t LaunchRmsNormBackwardRows(const float* x, const float* w, const float* dy, int64_t rows,
                                      int64_t d, float eps, float* dx, double* rstd,
                                      cudaStream_t stream);
// Rows per chunk of the weight gradient's partial sums.
inline constexpr int64_t kRmsNormRowsPerChunk = 64;
inline int64_t RmsNormWeightChunks(int64_t rows) {
  return (rows + kRmsNormRowsPerChunk - 1) / kRmsNormRowsPerChunk;
}
// dw[i] += (float)Σ_r (double)dy[r, i] · x[r, i] · rstd[r]: partial [RmsNormWeightChunks(rows), d]
// (double scratch) gets one sum per chunk of rows (rows in order), then the chunks are summed in
// order, one thread per column.
cudaError_t LaunchRmsNormWeightGrad(const float* x, const float* dy, const double* rstd,
                                    int64_t rows, int64_t d, double* partial, float* dw,
                                    cudaStream_t stream);

// ---- element-wise ----

// backward.h's SwiGluBackward: dgate and dup written.
cudaError_t LaunchSwiGluBackward(const float* gate, const float* up, const float* dy, int64_t n,
                                 float* dgate, float* dup, cudaStream_t stream);

// optimizer.h's AdamWStep with its scalars computed on the host as optimizer.cc does; the kernel
// evaluates optimizer.cc's expressions in the same order with round-to-nearest intrinsics (no
// fused multiply-adds), so each element matches the CPU's float arithmetic.
struct AdamWLaunch {
  float beta1 = 0.0f;
  float beta2 = 0.0f;
  float eps = 0.0f;
  float step_size = 0.0f;  // lr / (1 - β1^t)
  float bc2_sqrt = 1.0f;   // sqrt(1 - β2^t)
  float decay = 1.0f;      // 1 - lr · weight_decay
};
cudaError_t LaunchAdamW(const AdamWLaunch& a, const float* grad, int64_t n, float* param, float* m,
                        float* v, cudaStream_t stream);

// ---- training attention (attention_backward.h) ----

inline constexpr int kTrainAttnMaxHeadDim = 256;  // d and dv

// Shapes and inputs of one call: q [T, n_head, d], k [S, n_head_kv, d], v [S, n_head_kv, dv],
// mem_k [M, n_head_kv, d], mem_v [M, n_head_kv, dv], mem_q [T, n_head, d] or null (= q),
// mem_bias [n_head] or null (= 0). scale is the resolved multiplier (never 0 here).
struct TrainAttentionLaunch {
  const float* q = nullptr;
  const float* k = nullptr;
  const float* v = nullptr;
  const float* mem_q = nullptr;
  const float* mem_k = nullptr;
  const float* mem_v = nullptr;
  const float* mem_bias = nullptr;
  int64_t T = 0, S = 0, M = 0, n_head = 0, n_head_kv = 0, d = 0, dv = 0;
  float scale = 1.0f;
  bool causal = true;
};

// One block per (query row, head): max over all visible scores, then a second pass over the keys
// in tiles with p = exp(score - max); out [T, n_head, dv] and lse [T, n_head] written.
cudaError_t LaunchAttentionTrainForward(const TrainAttentionLaunch& a, float* out, float* lse,
                                        cudaStream_t stream);
// D[r] = (float)Σ_i (double)dout[r, i] · out[r, i] for rows = T · n_head rows of dv values.
cudaError_t LaunchAttentionRowDot(const float* dout, const float* out, int64_t rows, int64_t dv,
                                  float* D, cudaStream_t stream);
// One block per (query row, head): dq [T, n_head, d] written; with mem_q, the memory keys' share
// goes to dmq [T, n_head, d] (written) instead; db_part [T, n_head] (may be null) gets each row's
// Σ dS over the memory keys, in key order.
cudaError_t LaunchAttentionBackwardQuery(const TrainAttentionLaunch& a, const float* lse,
                                         const float* dout, const float* D, float* dq, float* dmq,
                                         double* db_part, cudaStream_t stream);
// One block per (local key row, kv head): dk [S, n_head_kv, d] and dv [S, n_head_kv, dv] written,
// summed over the query rows that see the key, in row order, and the heads of its group in order.
cudaError_t LaunchAttentionBackwardKeys(const TrainAttentionLaunch& a, const float* lse,
                                        const float* dout, const float* D, float* dk, float* dv,
                                        cudaStream_t stream);
// dmem_bias[h] += (float)Σ_t db_part[t, h] (t in order, double), one thread per head.
cudaError_t LaunchAttentionBiasGrad(const double* db_part, int64_t T, int64_t n_head,
                                    float* dmem_bias, cudaStream_t stream);

// ---- fused cross-entropy (cross_entropy.h) ----

// dst[i, :] = src[rows[i], :] for i < n (cols values per row).
cudaError_t LaunchGatherRows(const float* src, const int32_t* rows, int64_t n, int64_t cols,
                             float* dst, cudaStream_t stream);
// dst[rows[i], :] = src[i, :] for i < n (rows distinct).
cudaError_t LaunchScatterRows(const float* src, const int32_t* rows, int64_t n, int64_t cols,
                              float* dst, cudaStream_t stream);
// row_max[i] = -inf, row_sum[i] = 0, label_logit[i] = 0 for i < n.
cudaError_t LaunchCrossEntropyInit(int64_t n, float* row_max, double* row_sum, float* label_logit,
                                   cudaStream_t stream);
// One block per row: takes logits tile [nb, nv] (vocabulary entries v0 .. v0 + nv) into each row's
// online log-sum-exp (running max, running Σ exp in double) and records the label's logit when the
// label (labels [nb]) falls in the tile.
cudaError_t LaunchCrossEntropyTileLse(const float* tile, int64_t nb, int64_t nv, int64_t v0,
                                      const int32_t* labels, float* row_max, double* row_sum,
                                      float* label_logit, cudaStream_t stream);
// lse[i] = (float)(row_max[i] + log(row_sum[i])), loss[i] = (double)(that lse, in double) -
// label_logit[i], for i < nb.
cudaError_t LaunchCrossEntropyFinish(const float* row_max, const double* row_sum,
                                     const float* label_logit, int64_t nb, float* lse, double* loss,
                                     cudaStream_t stream);
// tile[i, j] = grad_scale · exp(tile[i, j] - lse[i]), minus grad_scale at the label's column.
cudaError_t LaunchCrossEntropyTileGrad(float* tile, int64_t nb, int64_t nv, int64_t v0,
                                       const int32_t* labels, const float* lse, float grad_scale,
                                       cudaStream_t stream);

}  // namespace muninn::cuda
