// Matrix × vector for decode (M <= kMatVecMaxRows activation rows): one warp per output feature
// walks its weight row on the blocks as stored (block_decode.h), each lane taking every 32nd
// chunk, and multiplies with f32 activations; a warp reduction finishes each dot product. The
// weight is read once for all M rows. Every kernel takes a MatVecFuse: the activations can be
// formed on load (RmsNorm of x, or SwiGLU of two inputs) and the product added to the output, so a
// decode step's norm, activation and residual add cost no launch of their own.
#include <cstdint>
#include <type_traits>

#include "cuda/decode_dispatch.cuh"
#include "cuda/kernel_util.cuh"

namespace muninn::cuda {
namespace {

constexpr int kWarpsPerBlock = 4;
constexpr int kBlockThreads = kWarpsPerBlock * kWarp;
constexpr int kRows = static_cast<int>(kMatVecMaxRows);

// Everything the fused forms need inside a kernel (MatVecInput, plus each activation row's RMS
// factor, computed by the block's prologue for kRmsNorm).
struct FuseArgs {
  const char* x2;
  const float* norm_w;
  float eps;
};

// For kRmsNorm: inv[m] = 1 / sqrt(mean(x_m²) + eps) for each activation row, one warp a row (as
// RmsNormKernel computes it, with a warp's summation order). Every thread of the block must call
// it: it ends with a barrier.
template <MatVecFuse F>
__device__ __forceinline__ void RowScales(const char* x, int64_t x_row_stride, int M, int64_t K,
                                          float eps, float* inv) {
  if constexpr (F == MatVecFuse::kRmsNorm) {
    const int lane = static_cast<int>(threadIdx.x) % kWarp;
    for (int m = static_cast<int>(threadIdx.x) / kWarp; m < M; m += kWarpsPerBlock) {
      const float* xm = reinterpret_cast<const float*>(x + m * x_row_stride);
      float ss = 0.0f;
      for (int64_t i = lane; i < K; i += kWarp) ss += xm[i] * xm[i];
      ss = WarpSum(ss);
      if (lane == 0) inv[m] = rsqrtf(ss / static_cast<float>(K) + eps);
    }
    __syncthreads();
  }
}

// Activation element i of row m as the fused form defines it (RmsNormKernel's and the SwiGLU
// kernel's expressions, so that a fused step rounds as the separate ops do).
template <MatVecFuse F>
__device__ __forceinline__ float ActAt(const char* x, int64_t x_row_stride, int m, int64_t i,
                                       const FuseArgs& fa, const float* inv) {
  const float v = reinterpret_cast<const float*>(x + m * x_row_stride)[i];
  if constexpr (F == MatVecFuse::kRmsNorm) {
    const float n = v * inv[m];
    return fa.norm_w != nullptr ? n * fa.norm_w[i] : n;
  } else if constexpr (F == MatVecFuse::kSwiGluAdd) {
    return SiluF(v) * reinterpret_cast<const float*>(fa.x2 + m * x_row_stride)[i];
  } else {
    return v;
  }
}

// Four activations from element 4·i4 of row m (16-byte-aligned rows).
template <MatVecFuse F>
__device__ __forceinline__ float4 ActAt4(const char* x, int64_t x_row_stride, int m, int64_t i4,
                                         const FuseArgs& fa, const float* inv) {
  float4 v = reinterpret_cast<const float4*>(x + m * x_row_stride)[i4];
  if constexpr (F == MatVecFuse::kRmsNorm) {
    const float r = inv[m];
    v = make_float4(v.x * r, v.y * r, v.z * r, v.w * r);
    if (fa.norm_w != nullptr) {
      const float4 w = reinterpret_cast<const float4*>(fa.norm_w)[i4];
      v = make_float4(v.x * w.x, v.y * w.y, v.z * w.z, v.w * w.w);
    }
  } else if constexpr (F == MatVecFuse::kSwiGluAdd) {
    const float4 u = reinterpret_cast<const float4*>(fa.x2 + m * x_row_stride)[i4];
    v = make_float4(SiluF(v.x) * u.x, SiluF(v.y) * u.y, SiluF(v.z) * u.z, SiluF(v.w) * u.w);
  }
  return v;
}

template <MatVecFuse F>
__device__ __forceinline__ void Store(float* out, float v) {
  if constexpr (F == MatVecFuse::kAdd || F == MatVecFuse::kSwiGluAdd) {
    *out = *out + v;
  } else {
    *out = v;
  }
}

// The segment that holds launch row n (n < segs.first[segs.count]) and the row inside it.
__device__ __forceinline__ int SegmentOf(const MatVecSegments& segs, int64_t n, int64_t* local) {
  int s = 0;
  while (s + 1 < segs.count && n >= segs.first[s + 1]) ++s;
  *local = n - segs.first[s];
  return s;
}

template <class Dec, MatVecFuse F>
__global__ void MatVecKernel(const MatVecSegments segs, const char* x, int64_t x_row_stride, int M,
                             int64_t K, const FuseArgs fa) {
  __shared__ float inv[kRows];
  RowScales<F>(x, x_row_stride, M, K, fa.eps, inv);
  const int lane = static_cast<int>(threadIdx.x) % kWarp;
  const int64_t n = static_cast<int64_t>(blockIdx.x) * kWarpsPerBlock + threadIdx.x / kWarp;
  // Whole warps leave together (after the prologue's barrier): the reductions stay full-warp.
  if (n >= segs.first[segs.count]) return;
  int64_t local = 0;
  const int s = SegmentOf(segs, n, &local);
  const auto* row = reinterpret_cast<const uint8_t*>(segs.w[s] + local * segs.w_row_stride[s]);
  const int64_t chunks = K / Dec::kChunk;
  float acc[kRows];
#pragma unroll
  for (int m = 0; m < kRows; ++m) acc[m] = 0.0f;
  for (int64_t c = lane; c < chunks; c += kWarp) {
    float y[Dec::kChunk];
    Dec::Decode(row, c, y);
#pragma unroll
    for (int m = 0; m < kRows; ++m) {
      if (m < M) {
        float s = 0.0f;
#pragma unroll
        for (int j = 0; j < Dec::kChunk; ++j) {
          s += y[j] * ActAt<F>(x, x_row_stride, m, c * Dec::kChunk + j, fa, inv);
        }
        acc[m] += s;
      }
    }
  }
#pragma unroll
  for (int m = 0; m < kRows; ++m) {
    if (m < M) {
      const float v = WarpSum(acc[m]);
      if (lane == 0) {
        Store<F>(reinterpret_cast<float*>(segs.out[s] + m * segs.out_row_stride[s]) + local, v);
      }
    }
  }
}

// ---- q4_0 / q4_1 / q8_0: a block of 32 weights per lane ----------------------------------------
// The generic kernel above decodes 8 elements per lane with byte loads, and for SmolLM2's K = 576
// (18 blocks a row) leaves 14 of a warp's 32 lanes idle. Here each lane loads whole quant blocks
// with 16-bit or 32-bit words, L lanes (L = 4 ... 32, the power of two that best fits the row's
// blocks) share a row, so a warp works on 32 / L rows at once; x is read as float4. Per block:
// d * sum(q * x) (+ m * sum(x) for q4_1), the nibbles and bytes as quant.h lays them out.
// Since 2026-12-05 the coalesced kernel below replaces it; it runs only for unfused launches with
// CudaBackendOptions::coalesced_matvec off (the kernel benchmark's A/B).
template <DType DT>
struct QuantBlock;

template <>
struct QuantBlock<DType::kQ4_0> {  // 18 bytes: f16 d, 16 bytes of nibbles; x = (q - 8) d
  static constexpr int kBytes = 18;
  static constexpr bool kHasMin = false;
  __device__ static void Load(const uint8_t* b, float* d, float* m, float* q) {
    const auto* h = reinterpret_cast<const uint16_t*>(b);
    *d = HalfBitsToFloat(h[0]);
    *m = 0.0f;
#pragma unroll
    for (int w = 0; w < 8; ++w) {
      const uint32_t v = h[1 + w];  // bytes 2w (low 8 bits) and 2w + 1
      q[2 * w] = static_cast<float>(static_cast<int>(v & 0xF) - 8);
      q[2 * w + 1] = static_cast<float>(static_cast<int>((v >> 8) & 0xF) - 8);
      q[16 + 2 * w] = static_cast<float>(static_cast<int>((v >> 4) & 0xF) - 8);
      q[17 + 2 * w] = static_cast<float>(static_cast<int>((v >> 12) & 0xF) - 8);
    }
  }
};

template <>
struct QuantBlock<DType::kQ4_1> {  // 20 bytes: f16 d, f16 m, 16 bytes of nibbles; x = q d + m
  static constexpr int kBytes = 20;
  static constexpr bool kHasMin = true;
  __device__ static void Load(const uint8_t* b, float* d, float* m, float* q) {
    const auto* u = reinterpret_cast<const uint32_t*>(b);
    const uint32_t dm = u[0];
    *d = HalfBitsToFloat(static_cast<uint16_t>(dm & 0xFFFF));
    *m = HalfBitsToFloat(static_cast<uint16_t>(dm >> 16));
#pragma unroll
    for (int w = 0; w < 4; ++w) {
      const uint32_t v = u[1 + w];  // bytes 4w .. 4w + 3
#pragma unroll
      for (int j = 0; j < 4; ++j) {
        q[4 * w + j] = static_cast<float>((v >> (8 * j)) & 0xF);
        q[16 + 4 * w + j] = static_cast<float>((v >> (8 * j + 4)) & 0xF);
      }
    }
  }
};

template <>
struct QuantBlock<DType::kQ8_0> {  // 34 bytes: f16 d, 32 int8; x = q d
  static constexpr int kBytes = 34;
  static constexpr bool kHasMin = false;
  __device__ static void Load(const uint8_t* b, float* d, float* m, float* q) {
    const auto* h = reinterpret_cast<const uint16_t*>(b);
    *d = HalfBitsToFloat(h[0]);
    *m = 0.0f;
#pragma unroll
    for (int w = 0; w < 16; ++w) {
      const uint32_t v = h[1 + w];
      q[2 * w] = static_cast<float>(static_cast<int8_t>(v & 0xFF));
      q[2 * w + 1] = static_cast<float>(static_cast<int8_t>(v >> 8));
    }
  }
};

template <DType DT, int L>
__global__ void __launch_bounds__(kBlockThreads)
    QuantMatVecKernel(const MatVecSegments segs, const char* x, int64_t x_row_stride, int M,
                      int64_t K) {
  using QB = QuantBlock<DT>;
  constexpr int kRowsPerWarp = kWarp / L;
  const int lane = static_cast<int>(threadIdx.x) % kWarp;
  const int li = lane % L;
  const int64_t warp = static_cast<int64_t>(blockIdx.x) * kWarpsPerBlock + threadIdx.x / kWarp;
  const int64_t n = warp * kRowsPerWarp + lane / L;
  const int64_t N = segs.first[segs.count];
  const int64_t blocks = K / 32;
  float acc[kRows];
#pragma unroll
  for (int r = 0; r < kRows; ++r) acc[r] = 0.0f;
  int64_t local = 0;
  const int s = n < N ? SegmentOf(segs, n, &local) : 0;
  if (n < N) {
    const auto* row = reinterpret_cast<const uint8_t*>(segs.w[s] + local * segs.w_row_stride[s]);
    for (int64_t b = li; b < blocks; b += L) {
      float d, mn, q[32];
      QB::Load(row + b * QB::kBytes, &d, &mn, q);
#pragma unroll
      for (int r = 0; r < kRows; ++r) {
        if (r < M) {
          float sq = 0.0f, sx = 0.0f;
#pragma unroll
          for (int i = 0; i < 8; ++i) {
            const float4 v = reinterpret_cast<const float4*>(x + r * x_row_stride)[b * 8 + i];
            sq += q[4 * i] * v.x + q[4 * i + 1] * v.y + q[4 * i + 2] * v.z + q[4 * i + 3] * v.w;
            if (QB::kHasMin) sx += (v.x + v.y) + (v.z + v.w);
          }
          acc[r] += QB::kHasMin ? d * sq + mn * sx : d * sq;
        }
      }
    }
  }
  // Sum over the L lanes of each row (all lanes take part, rows past N included).
#pragma unroll
  for (int r = 0; r < kRows; ++r) {
    if (r < M) {
      float v = acc[r];
#pragma unroll
      for (int o = L / 2; o > 0; o /= 2) v += __shfl_xor_sync(0xffffffffu, v, o);
      if (n < N && li == 0) {
        reinterpret_cast<float*>(segs.out[s] + r * segs.out_row_stride[s])[local] = v;
      }
    }
  }
}

// ---- q4_0 / q4_1 / q8_0, coalesced: eight lanes a block
// ------------------------------------------- The kernel above gives each lane whole blocks, so at
// one instruction the 32 lanes of a warp read 16 bytes of x from 32 different 128-byte lines: for a
// large matrix the L1 serves x (6.4 times the weight bytes for q4_1) sixteen bytes at a time, and
// that bounds the kernel (~12 % of the H200's bandwidth on 16384 x 8192, measured 2026-12-04). Here
// eight lanes share a block, lane t on its elements 4t .. 4t + 3 (block_decode.h's LaneSlice), G
// lanes (8, 16 or 32) a row take G / 8 consecutive blocks at a step, and an instruction reads x as
// one contiguous run of float4s: four to eight times fewer L1 wavefronts for the same bytes.
template <DType DT, int G, MatVecFuse F>
__global__ void __launch_bounds__(kBlockThreads)
    CoalescedMatVecKernel(const MatVecSegments segs, const char* x, int64_t x_row_stride, int M,
                          int64_t K, const FuseArgs fa) {
  constexpr int kRowsPerWarp = kWarp / G;
  constexpr int kBlocksPerStep = G / 8;
  __shared__ float inv[kRows];
  RowScales<F>(x, x_row_stride, M, K, fa.eps, inv);
  const int lane = static_cast<int>(threadIdx.x) % kWarp;
  const int li = lane % G;
  const int t = li % 8;  // the lane's slice of its block
  const int64_t warp = static_cast<int64_t>(blockIdx.x) * kWarpsPerBlock + threadIdx.x / kWarp;
  const int64_t n = warp * kRowsPerWarp + lane / G;
  const int64_t N = segs.first[segs.count];
  const int64_t blocks = K / 32;
  float acc[kRows];
#pragma unroll
  for (int r = 0; r < kRows; ++r) acc[r] = 0.0f;
  int64_t local = 0;
  const int s = n < N ? SegmentOf(segs, n, &local) : 0;
  if (n < N) {
    const auto* row = reinterpret_cast<const uint8_t*>(segs.w[s] + local * segs.w_row_stride[s]);
    for (int64_t b = li / 8; b < blocks; b += kBlocksPerStep) {
      const uint8_t* block = row + b * LaneSlice<DT>::kBytes;
#pragma unroll
      for (int r = 0; r < kRows; ++r) {
        if (r < M) {
          const float4 v = ActAt4<F>(x, x_row_stride, r, b * 8 + t, fa, inv);
          const float xv[4] = {v.x, v.y, v.z, v.w};
          acc[r] += LaneDot<DT>(block, t, xv);
        }
      }
    }
  }
  // Sum over the G lanes of each row (all lanes take part, rows past N included).
#pragma unroll
  for (int r = 0; r < kRows; ++r) {
    if (r < M) {
      float v = acc[r];
#pragma unroll
      for (int o = G / 2; o > 0; o /= 2) v += __shfl_xor_sync(0xffffffffu, v, o);
      if (n < N && li == 0) {
        Store<F>(reinterpret_cast<float*>(segs.out[s] + r * segs.out_row_stride[s]) + local, v);
      }
    }
  }
}

template <DType DT, MatVecFuse F>
cudaError_t LaunchCoalescedMatVec(const MatVecSegments& segs, const char* x, int64_t x_row_stride,
                                  int M, int64_t K, const FuseArgs& fa, cudaStream_t stream) {
  const int64_t blocks = K / 32;
  const int64_t N = segs.first[segs.count];
  auto launch = [&](auto lanes) {
    constexpr int G = decltype(lanes)::value;
    const int64_t rows_per_block = kWarpsPerBlock * (kWarp / G);
    const int64_t grid = (N + rows_per_block - 1) / rows_per_block;
    if (grid > 0x7fffffffLL) return cudaErrorInvalidConfiguration;
    CoalescedMatVecKernel<DT, G, F><<<static_cast<unsigned>(grid), kBlockThreads, 0, stream>>>(
        segs, x, x_row_stride, M, K, fa);
    return cudaGetLastError();
  };
  // Four blocks a step once a row has at least 16 (SmolLM2's K = 576: 18), fewer for short rows.
  if (blocks >= 16) return launch(std::integral_constant<int, 32>{});
  if (blocks >= 4) return launch(std::integral_constant<int, 16>{});
  return launch(std::integral_constant<int, 8>{});
}

template <DType DT>
cudaError_t LaunchQuantMatVec(const MatVecSegments& segs, const char* x, int64_t x_row_stride,
                              int M, int64_t K, cudaStream_t stream) {
  const int64_t blocks = K / 32;
  const int64_t N = segs.first[segs.count];
  auto launch = [&](auto lanes) {
    constexpr int L = decltype(lanes)::value;
    const int64_t rows_per_block = kWarpsPerBlock * (kWarp / L);
    const int64_t grid = (N + rows_per_block - 1) / rows_per_block;
    if (grid > 0x7fffffffLL) return cudaErrorInvalidConfiguration;
    QuantMatVecKernel<DT, L><<<static_cast<unsigned>(grid), kBlockThreads, 0, stream>>>(
        segs, x, x_row_stride, M, K);
    return cudaGetLastError();
  };
  if (blocks >= 24) return launch(std::integral_constant<int, 32>{});
  if (blocks >= 12) return launch(std::integral_constant<int, 16>{});
  if (blocks >= 6) return launch(std::integral_constant<int, 8>{});
  return launch(std::integral_constant<int, 4>{});
}

}  // namespace

namespace {

template <MatVecFuse F>
cudaError_t LaunchFused(DType w_dtype, const MatVecSegments& segs, const char* x,
                        int64_t x_row_stride, int64_t M, int64_t K, const FuseArgs& fa,
                        bool coalesced, cudaStream_t stream) {
  const int64_t N = segs.first[segs.count];
  const int64_t blocks = (N + kWarpsPerBlock - 1) / kWarpsPerBlock;
  if (blocks > 0x7fffffffLL) return cudaErrorInvalidConfiguration;
  // The word-loading kernel needs x rows (and the fused forms' second operands) 16-byte aligned
  // and weight rows aligned to the block's word size (4 bytes for q4_1, 2 for q4_0 and q8_0), in
  // every segment.
  const auto aligned16 = [&](const void* p) {
    return p == nullptr || reinterpret_cast<uintptr_t>(p) % 16 == 0;
  };
  const bool x_aligned = aligned16(x) && aligned16(fa.x2) && aligned16(fa.norm_w) &&
                         (M == 1 || x_row_stride % 16 == 0);
  const auto w_aligned = [&](int64_t a) {
    for (int s = 0; s < segs.count; ++s) {
      if (reinterpret_cast<uintptr_t>(segs.w[s]) % a != 0 || segs.w_row_stride[s] % a != 0) {
        return false;
      }
    }
    return true;
  };
  if (x_aligned && K % 32 == 0) {
    const int m = static_cast<int>(M);
    // The earlier kernel is kept for unfused launches only (an A/B of the kernel alone).
    if (coalesced || F != MatVecFuse::kNone) {
      if (w_dtype == DType::kQ4_1 && w_aligned(4)) {
        return LaunchCoalescedMatVec<DType::kQ4_1, F>(segs, x, x_row_stride, m, K, fa, stream);
      }
      if (w_dtype == DType::kQ4_0 && w_aligned(2)) {
        return LaunchCoalescedMatVec<DType::kQ4_0, F>(segs, x, x_row_stride, m, K, fa, stream);
      }
      if (w_dtype == DType::kQ8_0 && w_aligned(2)) {
        return LaunchCoalescedMatVec<DType::kQ8_0, F>(segs, x, x_row_stride, m, K, fa, stream);
      }
    }
    if constexpr (F == MatVecFuse::kNone) {
      if (w_dtype == DType::kQ4_1 && w_aligned(4)) {
        return LaunchQuantMatVec<DType::kQ4_1>(segs, x, x_row_stride, m, K, stream);
      }
      if (w_dtype == DType::kQ4_0 && w_aligned(2)) {
        return LaunchQuantMatVec<DType::kQ4_0>(segs, x, x_row_stride, m, K, stream);
      }
      if (w_dtype == DType::kQ8_0 && w_aligned(2)) {
        return LaunchQuantMatVec<DType::kQ8_0>(segs, x, x_row_stride, m, K, stream);
      }
    }
  }
  return DispatchDecoder(w_dtype, [&](auto dec) {
    using Dec = decltype(dec);
    MatVecKernel<Dec, F><<<static_cast<unsigned>(blocks), kBlockThreads, 0, stream>>>(
        segs, x, x_row_stride, static_cast<int>(M), K, fa);
  });
}

}  // namespace

cudaError_t LaunchMatVecSegments(DType w_dtype, const MatVecSegments& segs, const char* x,
                                 int64_t x_row_stride, int64_t M, int64_t K, cudaStream_t stream,
                                 const MatVecInput& in) {
  if (M > kMatVecMaxRows || segs.count < 1 || segs.count > kMatVecMaxSegments) {
    return cudaErrorInvalidValue;
  }
  if (in.fuse == MatVecFuse::kSwiGluAdd && in.x2 == nullptr) return cudaErrorInvalidValue;
  if (segs.first[segs.count] == 0) return cudaSuccess;
  const FuseArgs fa{in.x2, in.norm_w, in.eps};
  switch (in.fuse) {
    case MatVecFuse::kNone:
      return LaunchFused<MatVecFuse::kNone>(w_dtype, segs, x, x_row_stride, M, K, fa, in.coalesced,
                                            stream);
    case MatVecFuse::kAdd:
      return LaunchFused<MatVecFuse::kAdd>(w_dtype, segs, x, x_row_stride, M, K, fa, in.coalesced,
                                           stream);
    case MatVecFuse::kRmsNorm:
      return LaunchFused<MatVecFuse::kRmsNorm>(w_dtype, segs, x, x_row_stride, M, K, fa,
                                               in.coalesced, stream);
    case MatVecFuse::kSwiGluAdd:
      return LaunchFused<MatVecFuse::kSwiGluAdd>(w_dtype, segs, x, x_row_stride, M, K, fa,
                                                 in.coalesced, stream);
  }
  return cudaErrorInvalidValue;
}

cudaError_t LaunchMatVec(DType w_dtype, const char* w, int64_t w_row_stride, const char* x,
                         int64_t x_row_stride, int64_t M, int64_t N, int64_t K, char* out,
                         int64_t out_row_stride, cudaStream_t stream, const MatVecInput& in) {
  MatVecSegments segs;
  segs.count = 1;
  segs.w[0] = w;
  segs.w_row_stride[0] = w_row_stride;
  segs.out[0] = out;
  segs.out_row_stride[0] = out_row_stride;
  segs.first[1] = N;
  return LaunchMatVecSegments(w_dtype, segs, x, x_row_stride, M, K, stream, in);
}

}  // namespace muninn::cuda
