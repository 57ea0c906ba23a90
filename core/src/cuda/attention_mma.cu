// Prefill attention on tensor cores (WMMA, f16 inputs, f32 accumulation): the query-tiled kernel
// of attention.cu with its two inner products — scores S = Q·Kᵀ and the tile's P·V — done by
// mma_sync instead of per-thread loops. Everything else is the tiled kernel's: a block takes
// kRows = 32 query rows of one head and walks [memory ; local] keys in tiles of kKeys = 32 staged
// in shared memory, memory keys first with the memory queries, thread (r, c) = (tid / 4, tid % 4)
// keeps row r's online-softmax state and owns output columns c, c + 4, ...; key ranges
// (blockIdx.z) are merged by the shared merge kernel.
//
// Precision: K and V are f16 already (the KV cache, the bank's memory), so they enter the MMAs
// exactly. The f32 queries (times the scale) and the probabilities are each split into two f16
// terms, x = hi + lo with hi = f16(x), lo = f16(x - hi), and both terms are multiplied: their sum
// carries ~22 bits of x, so the products keep close to f32 precision (the accumulators are f32).
// Queries beyond ±65504 (f16's range) would overflow; the model's scaled queries are far smaller.
#include <cuda_fp16.h>
#include <mma.h>

#include "cuda/attention_tile.cuh"
#include "cuda/kernel_util.cuh"
#include "cuda/kernels.h"

namespace muninn::cuda {
namespace {

using namespace nvcuda;  // wmma

constexpr int kThreads = 128;  // 4 warps
constexpr int kWarps = kThreads / kWarp;
constexpr int kRows = static_cast<int>(kTiledRows);  // query rows per block (32)
constexpr int kKeys = static_cast<int>(kTiledKeys);  // keys per staged tile (32)
static_assert(kRows == 32 && kKeys == 32, "the fragment assignment below assumes 32 x 32 tiles");
constexpr int kHalfPad = 8;   // halves of padding per shared row: 16-byte steps, fewer conflicts
constexpr int kFloatPad = 4;  // floats of padding per shared f32 row

// Byte offsets of the shared arrays, each 128-byte aligned (WMMA needs 32-byte fragment starts;
// with the row pitches below every 16-row, 16-column fragment start is a multiple of 32 bytes).
struct SmemLayout {
  size_t q_hi, q_lo, k, v, s, p_hi, p_lo, o, total;
};

__host__ __device__ inline size_t Align128(size_t x) { return (x + 127) / 128 * 128; }

__host__ __device__ inline SmemLayout Layout(int64_t d, int64_t dv) {
  SmemLayout L{};
  const size_t q_row = static_cast<size_t>(d + kHalfPad) * 2;
  const size_t v_row = static_cast<size_t>(dv + kHalfPad) * 2;
  size_t off = 0;
  L.q_hi = off;
  off = Align128(off + kRows * q_row);
  L.q_lo = off;
  off = Align128(off + kRows * q_row);
  L.k = off;
  off = Align128(off + kKeys * q_row);
  L.v = off;
  off = Align128(off + kKeys * v_row);
  L.s = off;
  off = Align128(off + static_cast<size_t>(kRows) * (kKeys + kFloatPad) * 4);
  L.p_hi = off;
  off = Align128(off + static_cast<size_t>(kRows) * (kKeys + kHalfPad) * 2);
  L.p_lo = off;
  off = Align128(off + static_cast<size_t>(kRows) * (kKeys + kHalfPad) * 2);
  L.o = off;
  off = Align128(off + static_cast<size_t>(kRows) * (dv + kFloatPad) * 4);
  L.total = off;
  return L;
}

__device__ __forceinline__ void Split(float x, __half* hi, __half* lo) {
  const __half h = __float2half_rn(x);
  *hi = h;
  *lo = __float2half_rn(x - __half2float(h));
}

// Rows kb .. kb + kKeys - 1 of KV head g of the f16 operand o (`width` elements each) into
// s[key * ld + e], zeros past n_keys; the block's threads share the work.
__device__ __forceinline__ void StageKeys(const AttentionOperand& o, int64_t g, int64_t kb,
                                          int64_t n_keys, int width, __half* s, int ld) {
  const __half zero = __float2half_rn(0.0f);
  for (int i = static_cast<int>(threadIdx.x); i < kKeys * width; i += kThreads) {
    const int key = i / width, e = i % width;
    const int64_t j = kb + key;
    s[key * ld + e] =
        j < n_keys ? reinterpret_cast<const __half*>(o.data + j * o.s0 + g * o.s1)[e] : zero;
  }
}

template <int kCols>  // output columns per thread: dv <= 4 * kCols
__global__ void __launch_bounds__(kThreads) MmaAttentionKernel(const AttentionLaunch a) {
  extern __shared__ __align__(128) unsigned char smem[];
  const int d = static_cast<int>(a.d), dv = static_cast<int>(a.dv);
  const SmemLayout L = Layout(d, dv);
  __half* s_qh = reinterpret_cast<__half*>(smem + L.q_hi);  // [kRows][ldq] scaled queries, hi
  __half* s_ql = reinterpret_cast<__half*>(smem + L.q_lo);  // and lo
  __half* s_k = reinterpret_cast<__half*>(smem + L.k);      // [kKeys][ldq]
  __half* s_v = reinterpret_cast<__half*>(smem + L.v);      // [kKeys][ldv]
  float* s_s = reinterpret_cast<float*>(smem + L.s);        // [kRows][lds] scores
  __half* s_ph = reinterpret_cast<__half*>(smem + L.p_hi);  // [kRows][ldp] probabilities, hi
  __half* s_pl = reinterpret_cast<__half*>(smem + L.p_lo);  // and lo
  float* s_o = reinterpret_cast<float*>(smem + L.o);        // [kRows][ldo] the tile's P·V
  const int ldq = d + kHalfPad, ldv = dv + kHalfPad, lds = kKeys + kFloatPad;
  const int ldp = kKeys + kHalfPad, ldo = dv + kFloatPad;

  const int tid = static_cast<int>(threadIdx.x);
  const int warp = tid / kWarp;
  const TileThread x = ThisTileThread(a, kRows);
  const int r = x.r, c = x.c;
  const int64_t t0 = x.t0, t = x.t, h = x.h, g = x.g;

  float acc[kCols];
#pragma unroll
  for (int k = 0; k < kCols; ++k) acc[k] = 0.0f;
  float m = -INFINITY, l = 0.0f;

  const int64_t local_end = TileLocalEnd(a, t0, kRows);
  for (int phase = 0; phase < 2; ++phase) {
    const TilePhase ph = PhaseKeys(a, phase, local_end);
    const bool mem = ph.mem;
    const int64_t k_begin = ph.begin, n_keys = ph.end;
    if (n_keys <= k_begin) continue;
    const AttentionOperand &qo = *ph.q, &ko = *ph.k, &vo = *ph.v;
    __syncthreads();  // the previous phase may still read the staged queries
    for (int i = tid; i < kRows * d; i += kThreads) {
      const int row = i / d, e = i % d;
      const int64_t tq = t0 + row;
      const float x =
          tq < a.T ? reinterpret_cast<const float*>(qo.data + tq * qo.s0 + h * qo.s1)[e] * a.scale
                   : 0.0f;
      Split(x, &s_qh[row * ldq + e], &s_ql[row * ldq + e]);
    }
    for (int64_t kb = k_begin; kb < n_keys; kb += kKeys) {
      __syncthreads();  // the previous tile's K, V, P and O are no longer read
      StageKeys(ko, g, kb, n_keys, d, s_k, ldq);
      StageKeys(vo, g, kb, n_keys, dv, s_v, ldv);
      __syncthreads();

      // Scores: warp w computes the 16 x 16 fragment (rows 16 (w / 2), keys 16 (w % 2)).
      {
        const int mi = warp >> 1, ni = warp & 1;
        wmma::fragment<wmma::accumulator, 16, 16, 16, float> f_s;
        wmma::fill_fragment(f_s, 0.0f);
        for (int kk = 0; kk < d; kk += 16) {
          wmma::fragment<wmma::matrix_a, 16, 16, 16, __half, wmma::row_major> f_qh, f_ql;
          wmma::fragment<wmma::matrix_b, 16, 16, 16, __half, wmma::col_major> f_k;
          wmma::load_matrix_sync(f_qh, s_qh + mi * 16 * ldq + kk, ldq);
          wmma::load_matrix_sync(f_ql, s_ql + mi * 16 * ldq + kk, ldq);
          wmma::load_matrix_sync(f_k, s_k + ni * 16 * ldq + kk, ldq);
          wmma::mma_sync(f_s, f_qh, f_k, f_s);
          wmma::mma_sync(f_s, f_ql, f_k, f_s);
        }
        wmma::store_matrix_sync(s_s + mi * 16 * lds + ni * 16, f_s, lds, wmma::mem_row_major);
      }
      __syncthreads();

      // Row r's online softmax over the tile (thread c takes keys c, c + 4, ...).
      float s[kKeys / 4];
#pragma unroll
      for (int i = 0; i < kKeys / 4; ++i) s[i] = s_s[r * lds + c + 4 * i];
      const float corr = TileSoftmax(a, x, mem, kb, n_keys, s, &m, &l, [&](int i, float p) {
        Split(p, &s_ph[r * ldp + c + 4 * i], &s_pl[r * ldp + c + 4 * i]);
      });
      __syncthreads();

      // The tile's P·V: fragments (rows 16 (f % 2), columns 16 (f / 2)), warp w takes f = w,
      // w + 4, ...
      for (int f = warp; f < 2 * (dv / 16); f += kWarps) {
        const int mi = f & 1, ni = f >> 1;
        wmma::fragment<wmma::accumulator, 16, 16, 16, float> f_o;
        wmma::fill_fragment(f_o, 0.0f);
#pragma unroll
        for (int kk = 0; kk < kKeys; kk += 16) {
          wmma::fragment<wmma::matrix_a, 16, 16, 16, __half, wmma::row_major> f_ph, f_pl;
          wmma::fragment<wmma::matrix_b, 16, 16, 16, __half, wmma::row_major> f_v;
          wmma::load_matrix_sync(f_ph, s_ph + mi * 16 * ldp + kk, ldp);
          wmma::load_matrix_sync(f_pl, s_pl + mi * 16 * ldp + kk, ldp);
          wmma::load_matrix_sync(f_v, s_v + kk * ldv + ni * 16, ldv);
          wmma::mma_sync(f_o, f_ph, f_v, f_o);
          wmma::mma_sync(f_o, f_pl, f_v, f_o);
        }
        wmma::store_matrix_sync(s_o + mi * 16 * ldo + ni * 16, f_o, ldo, wmma::mem_row_major);
      }
      __syncthreads();
#pragma unroll
      for (int k = 0; k < kCols; ++k) {
        const int col = c + 4 * k;
        if (col < dv) acc[k] = acc[k] * corr + s_o[r * ldo + col];
      }
    }
  }
  if (x.row_ok) WriteTileRow<kCols>(a, t, h, c, m, l, acc);
}

template <int kCols>
cudaError_t LaunchMma(const AttentionLaunch& a, cudaStream_t stream) {
  const size_t bytes = Layout(a.d, a.dv).total;
  if (bytes > 48 * 1024) {
    const cudaError_t e =
        cudaFuncSetAttribute(MmaAttentionKernel<kCols>,
                             cudaFuncAttributeMaxDynamicSharedMemorySize, static_cast<int>(bytes));
    if (e != cudaSuccess) return e;
  }
  const dim3 grid(static_cast<unsigned>((a.T + kRows - 1) / kRows),
                  static_cast<unsigned>(a.n_head), static_cast<unsigned>(a.n_split));
  MmaAttentionKernel<kCols><<<grid, kThreads, bytes, stream>>>(a);
  cudaError_t e = cudaGetLastError();
  if (e != cudaSuccess || a.n_split == 1) return e;
  return LaunchAttentionMerge(a, stream);
}

}  // namespace

bool AttentionUsesMma(const AttentionLaunch& a) {
  return a.tensor_cores && AttentionUsesTiles(a.T, a.d, a.dv) && a.d % 16 == 0 &&
         a.dv % 16 == 0 && a.k.f16 && a.v.f16 && (a.M == 0 || (a.mem_k.f16 && a.mem_v.f16)) &&
         !a.q.f16 && !a.mem_q.f16;
}

cudaError_t LaunchMmaAttention(const AttentionLaunch& a, cudaStream_t stream) {
  if (!AttentionUsesMma(a) || a.n_head > 65535 || a.n_split > 65535) {
    return cudaErrorInvalidConfiguration;
  }
  return a.dv <= 64 ? LaunchMma<16>(a, stream) : LaunchMma<32>(a, stream);
}

}  // namespace muninn::cuda
