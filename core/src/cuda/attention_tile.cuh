// Private to the CUDA backend: the pieces the two query-tiled prefill kernels share (attention.cu's
// SIMT kernel and attention_mma.cu's tensor-core one): which keys a block walks in each phase, and
// how a query row's final state is written. A block takes kTiledRows query rows of one head and a
// range of the [memory ; local] keys (blockIdx.z); thread c of a row's quad owns output columns
// c, c + 4, ...
#pragma once

#include <cstdint>

#include "cuda/kernels.h"

namespace muninn::cuda {

// Where a thread of a query-tiled block stands: quad row r (query t0 + r) and lane c of the quad,
// query head h and its KV head g.
struct TileThread {
  int r, c;
  int64_t t0, t, h, g;
  bool row_ok;     // t < T
  float mem_bias;  // added to this head's memory-key scores
};
__device__ __forceinline__ TileThread ThisTileThread(const AttentionLaunch& a, int rows) {
  TileThread x;
  const int tid = static_cast<int>(threadIdx.x);
  x.r = tid >> 2;
  x.c = tid & 3;
  x.t0 = static_cast<int64_t>(blockIdx.x) * rows;
  x.t = x.t0 + x.r;
  x.h = blockIdx.y;
  x.g = x.h / (a.n_head / a.n_head_kv);
  x.row_ok = x.t < a.T;
  x.mem_bias = a.has_mem_bias ? a.mem_bias[x.h] : 0.0f;
  return x;
}

// One tile of row r's online softmax. s[i] is this thread's scaled score of key kb + c + 4 i of
// the phase; it is masked (memory keys: the head's bias; local keys: the causal mask; keys past
// n_keys and rows past T: none), the row's running max m and sum l are updated in step with the
// three other lanes of the quad, and each probability goes to store(i, p). Returns the factor
// the row's accumulators must be rescaled by. A row that has seen nothing yet keeps an empty state
// (p = 0, factor 1).
template <int kPerThread, class Store>
__device__ __forceinline__ float TileSoftmax(const AttentionLaunch& a, const TileThread& x,
                                             bool mem, int64_t kb, int64_t n_keys,
                                             float (&s)[kPerThread], float* m, float* l,
                                             Store store) {
  float tile_max = -INFINITY;
#pragma unroll
  for (int i = 0; i < kPerThread; ++i) {
    const int64_t j = kb + x.c + 4 * i;
    const bool visible =
        x.row_ok && j < n_keys && (mem || !a.causal || j <= x.t + (a.S - a.T));
    s[i] = visible ? s[i] + (mem ? x.mem_bias : 0.0f) : -INFINITY;
    tile_max = fmaxf(tile_max, s[i]);
  }
  tile_max = fmaxf(tile_max, __shfl_xor_sync(0xffffffffu, tile_max, 1));
  tile_max = fmaxf(tile_max, __shfl_xor_sync(0xffffffffu, tile_max, 2));
  const float m_new = fmaxf(*m, tile_max);
  const float corr = m_new == -INFINITY ? 1.0f : expf(*m - m_new);
  float psum = 0.0f;
#pragma unroll
  for (int i = 0; i < kPerThread; ++i) {
    const float p = s[i] == -INFINITY ? 0.0f : expf(s[i] - m_new);
    psum += p;
    store(i, p);
  }
  psum += __shfl_xor_sync(0xffffffffu, psum, 1);
  psum += __shfl_xor_sync(0xffffffffu, psum, 2);
  *l = *l * corr + psum;
  *m = m_new;
  return corr;
}

// Local keys visible to the tile's last row (rows t0 .. t0 + rows - 1; causal: up to t + S - T).
__device__ __forceinline__ int64_t TileLocalEnd(const AttentionLaunch& a, int64_t t0, int rows) {
  const int64_t t_last = (t0 + rows < a.T ? t0 + rows : a.T) - 1;
  if (!a.causal) return a.S;
  return t_last + (a.S - a.T) + 1 < a.S ? t_last + (a.S - a.T) + 1 : a.S;
}

// The keys of phase `phase` (0: the memory block, 1: the local keys) in this block's key range,
// numbered within the phase: [begin, end); none when end <= begin.
struct TilePhase {
  bool mem;
  int64_t begin, end;
  const AttentionOperand* q;  // the phase's queries (mem_q for memory keys), keys and values
  const AttentionOperand* k;
  const AttentionOperand* v;
};
__device__ __forceinline__ TilePhase PhaseKeys(const AttentionLaunch& a, int phase,
                                               int64_t local_end) {
  const int64_t range_begin = static_cast<int64_t>(blockIdx.z) * a.split_keys;
  const int64_t range_end = range_begin + a.split_keys;
  const bool mem = phase == 0;
  const int64_t offset = mem ? 0 : a.M;  // the phase's keys start here in the concatenation
  const int64_t phase_end = mem ? a.M : local_end;
  const int64_t begin = range_begin - offset > 0 ? range_begin - offset : 0;
  const int64_t end = range_end - offset < phase_end ? range_end - offset : phase_end;
  return {mem, begin, end, mem ? &a.mem_q : &a.q, mem ? &a.mem_k : &a.k, mem ? &a.mem_v : &a.v};
}

// Row t of head h done: with key ranges, its running max m, sum l and unnormalised columns go to
// the merge kernel's partial buffer; otherwise the normalised output is written.
template <int kCols>
__device__ __forceinline__ void WriteTileRow(const AttentionLaunch& a, int64_t t, int64_t h, int c,
                                             float m, float l, const float (&acc)[kCols]) {
  const int dv = static_cast<int>(a.dv);
  if (a.n_split > 1) {
    float* part = a.partial + ((t * a.n_head + h) * a.n_split + blockIdx.z) * (2 + a.dv);
    if (c == 0) {
      part[0] = m;
      part[1] = l;
    }
#pragma unroll
    for (int k = 0; k < kCols; ++k) {
      const int col = c + 4 * k;
      if (col < dv) part[2 + col] = acc[k];
    }
    return;
  }
  float* o = reinterpret_cast<float*>(a.out + t * a.out_s0 + h * a.out_s1);
  const float inv = l > 0.0f ? 1.0f / l : 0.0f;
#pragma unroll
  for (int k = 0; k < kCols; ++k) {
    const int col = c + 4 * k;
    if (col < dv) o[col] = acc[k] * inv;
  }
}

}  // namespace muninn::cuda
