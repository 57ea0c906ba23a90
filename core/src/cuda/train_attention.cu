// The training attention of train_kernels.h (attention_backward.h's semantics): forward with
// lse, rowsum(dO ∘ O), dQ (and dMemQ, the memory bias gradient's per-row sums), dK/dV. One block
// per (query row, head) or per (local key row, kv head); each output element is accumulated by one
// thread over the keys (or query rows) in order, dot products by one warp with a fixed shuffle
// tree: no atomics, the same bits on every run.
#include <cuda_runtime.h>

#include <cstdint>

#include "cuda/kernel_util.cuh"
#include "cuda/train_kernels.h"

namespace muninn::cuda {
namespace {

constexpr int kThreads = 256;

// Whether a 1-d grid of `blocks` exceeds CUDA's x limit (the launcher then returns
// cudaErrorInvalidConfiguration).

// Blocks of kAttnThreads threads. Dot products of one row with one key: a warp, lanes over the
// head dim in order, then the warp's fixed shuffle tree (every lane ends with the same value).
// Per-element accumulations (out, dq, dk, dv): thread tid owns dims tid + kAttnThreads · c,
// walking the keys (or query rows) of each shared tile in order.

constexpr int kAttnThreads = 128;
constexpr int kAttnWarps = kAttnThreads / kWarp;
constexpr int kAttnTile = 32;  // keys (forward, dq) or (query row, head) pairs (dk, dv) per tile
constexpr int kDimsPerThread = kTrainAttnMaxHeadDim / kAttnThreads;
static_assert(kTrainAttnMaxHeadDim % kAttnThreads == 0, "head dims split evenly over threads");

// Σ_i a[i] · b[i] over n values by one warp (a: shared, b: global); the same value in every lane.
__device__ __forceinline__ float WarpDot(const float* a, const float* b, int64_t n) {
  const int lane = static_cast<int>(threadIdx.x) % kWarp;
  float s = 0.0f;
  for (int64_t i = lane; i < n; i += kWarp) s += a[i] * b[i];
  return WarpSum(s);
}

// Local keys visible to query t: [0, Visible(t)).
__device__ __forceinline__ int64_t Visible(const TrainAttentionLaunch& a, int64_t t) {
  if (!a.causal) return a.S;
  const int64_t v = t + (a.S - a.T) + 1;
  return v < a.S ? v : a.S;
}

// Key j of the concatenation [memory ; local] for kv head kvh: its k and v rows.
__device__ __forceinline__ const float* KeyRow(const TrainAttentionLaunch& a, int64_t j,
                                               int64_t kvh) {
  return j < a.M ? a.mem_k + (j * a.n_head_kv + kvh) * a.d
                 : a.k + ((j - a.M) * a.n_head_kv + kvh) * a.d;
}
__device__ __forceinline__ const float* ValueRow(const TrainAttentionLaunch& a, int64_t j,
                                                 int64_t kvh) {
  return j < a.M ? a.mem_v + (j * a.n_head_kv + kvh) * a.dv
                 : a.v + ((j - a.M) * a.n_head_kv + kvh) * a.dv;
}

// Copies n floats from global to shared memory (all threads of the block take part).
__device__ __forceinline__ void LoadRow(const float* src, int64_t n, float* dst) {
  for (int64_t i = threadIdx.x; i < n; i += blockDim.x) dst[i] = src[i];
}

// The (query row, head) pair of this block: row = t · n_head + h, and h's KV head.
struct QueryRow {
  int64_t row, t, h, kvh;
};
__device__ __forceinline__ QueryRow ThisQueryRow(const TrainAttentionLaunch& a) {
  const int64_t row = blockIdx.x;
  const int64_t h = row % a.n_head;
  return {row, row / a.n_head, h, h / (a.n_head / a.n_head_kv)};
}

// The row's q (for local keys) and mem_q (for memory keys; q when there is none) into shared
// memory (all threads of the block take part; the caller synchronises).
__device__ __forceinline__ void LoadQueries(const TrainAttentionLaunch& a, int64_t row, float* qs,
                                            float* mqs) {
  LoadRow(a.q + row * a.d, a.d, qs);
  LoadRow((a.mem_q != nullptr ? a.mem_q : a.q) + row * a.d, a.d, mqs);
}

__global__ void __launch_bounds__(kAttnThreads)
    AttnTrainForwardKernel(const TrainAttentionLaunch a, float* out, float* lse) {
  __shared__ float qs[kTrainAttnMaxHeadDim];   // q row (local keys)
  __shared__ float mqs[kTrainAttnMaxHeadDim];  // mem_q row (memory keys)
  __shared__ float ps[kAttnTile];
  __shared__ float wmax[kAttnWarps];
  const int tid = static_cast<int>(threadIdx.x);
  const int lane = tid % kWarp, warp = tid / kWarp;
  const QueryRow qr = ThisQueryRow(a);
  const int64_t row = qr.row, t = qr.t, h = qr.h, kvh = qr.kvh;
  LoadQueries(a, row, qs, mqs);
  __syncthreads();
  const int64_t n = a.M + Visible(a, t);
  const float bias = a.mem_bias != nullptr ? a.mem_bias[h] : 0.0f;
  // Scaled score of key j (memory keys: scored with mem_q, plus the head's bias).
  const auto score = [&](int64_t j) {
    const bool memory = j < a.M;
    const float dot = WarpDot(memory ? mqs : qs, KeyRow(a, j, kvh), a.d);
    return a.scale * dot + (memory ? bias : 0.0f);
  };

  // Pass 1: the row's max score (max is exact: order does not matter).
  float mx = -INFINITY;
  for (int64_t j = warp; j < n; j += kAttnWarps) mx = fmaxf(mx, score(j));
  if (lane == 0) wmax[warp] = mx;
  __syncthreads();
  mx = wmax[0];
  for (int w = 1; w < kAttnWarps; ++w) mx = fmaxf(mx, wmax[w]);

  // Pass 2: p = exp(score - max) per tile of keys, then every thread takes the tile in, in order.
  float acc[kDimsPerThread];
#pragma unroll
  for (int c = 0; c < kDimsPerThread; ++c) acc[c] = 0.0f;
  double l = 0.0;  // Σ p (every thread sums the same values in the same order)
  for (int64_t j0 = 0; j0 < n; j0 += kAttnTile) {
    const int nt = static_cast<int>(n - j0 < kAttnTile ? n - j0 : kAttnTile);
    for (int jj = warp; jj < nt; jj += kAttnWarps) {
      const float p = expf(score(j0 + jj) - mx);
      if (lane == 0) ps[jj] = p;
    }
    __syncthreads();
    for (int jj = 0; jj < nt; ++jj) {
      const float p = ps[jj];
      l += p;
      const float* vr = ValueRow(a, j0 + jj, kvh);
#pragma unroll
      for (int c = 0; c < kDimsPerThread; ++c) {
        const int64_t i = tid + static_cast<int64_t>(c) * kAttnThreads;
        if (i < a.dv) acc[c] += p * vr[i];
      }
    }
    __syncthreads();  // ps is rewritten by the next tile
  }
  const float inv = n > 0 ? static_cast<float>(1.0 / l) : 0.0f;
#pragma unroll
  for (int c = 0; c < kDimsPerThread; ++c) {
    const int64_t i = tid + static_cast<int64_t>(c) * kAttnThreads;
    if (i < a.dv) out[row * a.dv + i] = acc[c] * inv;
  }
  if (tid == 0) lse[row] = n > 0 ? mx + static_cast<float>(log(l)) : -INFINITY;
}

// One warp per row: D[r] = Σ dout · out in double.
__global__ void AttnRowDotKernel(const float* dout, const float* out, int64_t rows, int64_t dv,
                                 float* D) {
  const int lane = static_cast<int>(threadIdx.x) % kWarp;
  const int64_t r = blockIdx.x * static_cast<int64_t>(blockDim.x / kWarp) + threadIdx.x / kWarp;
  if (r >= rows) return;  // warp-uniform
  double s = 0.0;
  for (int64_t i = lane; i < dv; i += kWarp) {
    s += static_cast<double>(dout[r * dv + i]) * out[r * dv + i];
  }
  s = WarpSum(s);
  if (lane == 0) D[r] = static_cast<float>(s);
}

__global__ void __launch_bounds__(kAttnThreads)
    AttnBackwardQueryKernel(const TrainAttentionLaunch a, const float* lse, const float* dout,
                            const float* D, float* dq, float* dmq, double* db_part) {
  __shared__ float qs[kTrainAttnMaxHeadDim];
  __shared__ float mqs[kTrainAttnMaxHeadDim];
  __shared__ float dos[kTrainAttnMaxHeadDim];
  __shared__ float dss[kAttnTile];
  const int tid = static_cast<int>(threadIdx.x);
  const int lane = tid % kWarp, warp = tid / kWarp;
  const QueryRow qr = ThisQueryRow(a);
  const int64_t row = qr.row, t = qr.t, h = qr.h, kvh = qr.kvh;
  LoadQueries(a, row, qs, mqs);
  LoadRow(dout + row * a.dv, a.dv, dos);
  __syncthreads();
  const int64_t n = a.M + Visible(a, t);
  const float row_lse = lse[row], row_D = D[row];
  const float mem_add = (a.mem_bias != nullptr ? a.mem_bias[h] : 0.0f) - row_lse;
  const bool split_mem = a.mem_q != nullptr;  // memory keys' share to dmq

  float accq[kDimsPerThread], accm[kDimsPerThread];
#pragma unroll
  for (int c = 0; c < kDimsPerThread; ++c) accq[c] = accm[c] = 0.0f;
  double db = 0.0;  // Σ dS over the memory keys, in key order
  for (int64_t j0 = 0; j0 < n; j0 += kAttnTile) {
    const int nt = static_cast<int>(n - j0 < kAttnTile ? n - j0 : kAttnTile);
    for (int jj = warp; jj < nt; jj += kAttnWarps) {
      const int64_t j = j0 + jj;
      const bool memory = j < a.M;
      const float s = WarpDot(memory ? mqs : qs, KeyRow(a, j, kvh), a.d);
      const float dp = WarpDot(dos, ValueRow(a, j, kvh), a.dv);
      // P = exp(scale · s + b - lse), dS = P · (dP - D) (attention_backward_kernel.h's order).
      const float p = expf(a.scale * s + (memory ? mem_add : -row_lse));
      if (lane == 0) dss[jj] = p * (dp - row_D);
    }
    __syncthreads();
    for (int jj = 0; jj < nt; ++jj) {
      const int64_t j = j0 + jj;
      const float ds = dss[jj];
      const float* kr = KeyRow(a, j, kvh);
      if (j < a.M) db += ds;
      if (j < a.M && split_mem) {
#pragma unroll
        for (int c = 0; c < kDimsPerThread; ++c) {
          const int64_t i = tid + static_cast<int64_t>(c) * kAttnThreads;
          if (i < a.d) accm[c] += ds * kr[i];
        }
      } else {
#pragma unroll
        for (int c = 0; c < kDimsPerThread; ++c) {
          const int64_t i = tid + static_cast<int64_t>(c) * kAttnThreads;
          if (i < a.d) accq[c] += ds * kr[i];
        }
      }
    }
    __syncthreads();
  }
#pragma unroll
  for (int c = 0; c < kDimsPerThread; ++c) {
    const int64_t i = tid + static_cast<int64_t>(c) * kAttnThreads;
    if (i < a.d) {
      dq[row * a.d + i] = a.scale * accq[c];
      if (split_mem) dmq[row * a.d + i] = a.scale * accm[c];
    }
  }
  if (db_part != nullptr && tid == 0) db_part[row] = db;
}

__global__ void __launch_bounds__(kAttnThreads)
    AttnBackwardKeysKernel(const TrainAttentionLaunch a, const float* lse, const float* dout,
                           const float* D, float* dk, float* dv) {
  __shared__ float ks[kTrainAttnMaxHeadDim];
  __shared__ float vs[kTrainAttnMaxHeadDim];
  __shared__ float ps[kAttnTile];
  __shared__ float dss[kAttnTile];
  const int tid = static_cast<int>(threadIdx.x);
  const int lane = tid % kWarp, warp = tid / kWarp;
  const int64_t key = blockIdx.x;  // s · n_head_kv + kvh
  const int64_t s = key / a.n_head_kv, kvh = key % a.n_head_kv;
  const int64_t G = a.n_head / a.n_head_kv;
  LoadRow(a.k + key * a.d, a.d, ks);
  LoadRow(a.v + key * a.dv, a.dv, vs);
  __syncthreads();
  // Queries that see key s: t >= s - (S - T) under the causal mask.
  int64_t t_first = 0;
  if (a.causal) {
    t_first = s - (a.S - a.T);
    if (t_first < 0) t_first = 0;
  }
  const int64_t n_pairs = t_first < a.T ? (a.T - t_first) * G : 0;  // (query row, head) pairs
  // The pair's row of q / dout: query t_first + p / G, head kvh · G + p % G.
  const auto pair_row = [&](int64_t p) { return (t_first + p / G) * a.n_head + kvh * G + p % G; };

  float acck[kDimsPerThread], accv[kDimsPerThread];
#pragma unroll
  for (int c = 0; c < kDimsPerThread; ++c) acck[c] = accv[c] = 0.0f;
  for (int64_t p0 = 0; p0 < n_pairs; p0 += kAttnTile) {
    const int nt = static_cast<int>(n_pairs - p0 < kAttnTile ? n_pairs - p0 : kAttnTile);
    for (int jj = warp; jj < nt; jj += kAttnWarps) {
      const int64_t row = pair_row(p0 + jj);
      const float sc = WarpDot(ks, a.q + row * a.d, a.d);
      const float dp = WarpDot(vs, dout + row * a.dv, a.dv);
      const float p = expf(a.scale * sc - lse[row]);
      if (lane == 0) {
        ps[jj] = p;
        dss[jj] = a.scale * p * (dp - D[row]);
      }
    }
    __syncthreads();
    for (int jj = 0; jj < nt; ++jj) {
      const int64_t row = pair_row(p0 + jj);
      const float p = ps[jj], ds = dss[jj];
      const float* qr = a.q + row * a.d;
      const float* dr = dout + row * a.dv;
#pragma unroll
      for (int c = 0; c < kDimsPerThread; ++c) {
        const int64_t i = tid + static_cast<int64_t>(c) * kAttnThreads;
        if (i < a.dv) accv[c] += p * dr[i];
        if (i < a.d) acck[c] += ds * qr[i];
      }
    }
    __syncthreads();
  }
#pragma unroll
  for (int c = 0; c < kDimsPerThread; ++c) {
    const int64_t i = tid + static_cast<int64_t>(c) * kAttnThreads;
    if (i < a.d) dk[key * a.d + i] = acck[c];
    if (i < a.dv) dv[key * a.dv + i] = accv[c];
  }
}

__global__ void AttnBiasGradKernel(const double* db_part, int64_t T, int64_t n_head,
                                   float* dmem_bias) {
  const int64_t h = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x;
  if (h >= n_head) return;
  double s = 0.0;
  for (int64_t t = 0; t < T; ++t) s += db_part[t * n_head + h];
  dmem_bias[h] += static_cast<float>(s);
}

}  // namespace

cudaError_t LaunchAttentionTrainForward(const TrainAttentionLaunch& a, float* out, float* lse,
                                        cudaStream_t stream) {
  const int64_t rows = a.T * a.n_head;
  if (rows == 0) return cudaSuccess;
  if (GridTooLarge(rows) || a.d > kTrainAttnMaxHeadDim || a.dv > kTrainAttnMaxHeadDim) {
    return cudaErrorInvalidConfiguration;
  }
  AttnTrainForwardKernel<<<static_cast<unsigned>(rows), kAttnThreads, 0, stream>>>(a, out, lse);
  return cudaGetLastError();
}

cudaError_t LaunchAttentionRowDot(const float* dout, const float* out, int64_t rows, int64_t dv,
                                  float* D, cudaStream_t stream) {
  if (rows == 0) return cudaSuccess;
  constexpr int kRowsPerBlock = kThreads / kWarp;
  const int64_t blocks = (rows + kRowsPerBlock - 1) / kRowsPerBlock;
  if (GridTooLarge(blocks)) return cudaErrorInvalidConfiguration;
  AttnRowDotKernel<<<static_cast<unsigned>(blocks), kThreads, 0, stream>>>(dout, out, rows, dv, D);
  return cudaGetLastError();
}

cudaError_t LaunchAttentionBackwardQuery(const TrainAttentionLaunch& a, const float* lse,
                                         const float* dout, const float* D, float* dq, float* dmq,
                                         double* db_part, cudaStream_t stream) {
  const int64_t rows = a.T * a.n_head;
  if (rows == 0) return cudaSuccess;
  if (GridTooLarge(rows) || a.d > kTrainAttnMaxHeadDim || a.dv > kTrainAttnMaxHeadDim) {
    return cudaErrorInvalidConfiguration;
  }
  AttnBackwardQueryKernel<<<static_cast<unsigned>(rows), kAttnThreads, 0, stream>>>(
      a, lse, dout, D, dq, dmq, db_part);
  return cudaGetLastError();
}

cudaError_t LaunchAttentionBackwardKeys(const TrainAttentionLaunch& a, const float* lse,
                                        const float* dout, const float* D, float* dk, float* dv,
                                        cudaStream_t stream) {
  const int64_t keys = a.S * a.n_head_kv;
  if (keys == 0) return cudaSuccess;
  if (GridTooLarge(keys) || a.d > kTrainAttnMaxHeadDim || a.dv > kTrainAttnMaxHeadDim) {
    return cudaErrorInvalidConfiguration;
  }
  AttnBackwardKeysKernel<<<static_cast<unsigned>(keys), kAttnThreads, 0, stream>>>(a, lse, dout, D,
                                                                                   dk, dv);
  return cudaGetLastError();
}

cudaError_t LaunchAttentionBiasGrad(const double* db_part, int64_t T, int64_t n_head,
                                    float* dmem_bias, cudaStream_t stream) {
  if (n_head == 0) return cudaSuccess;
  const int64_t blocks = (n_head + kThreads - 1) / kThreads;
  if (GridTooLarge(blocks)) return cudaErrorInvalidConfiguration;
  AttnBiasGradKernel<<<static_cast<unsigned>(blocks), kThreads, 0, stream>>>(db_part, T, n_head,
                                                                             dmem_bias);
  return cudaGetLastError();
}

}  // namespace muninn::cuda
