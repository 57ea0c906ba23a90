// Copy/convert kernels: decoding any dtype of block_decode.h into f32 / f16 / bf16 rows, and
// same-dtype byte copies of packed rows with arbitrary outer strides.
#include <cuda_bf16.h>
#include <cuda_fp16.h>

#include "cuda/decode_dispatch.cuh"
#include "cuda/kernel_util.cuh"

namespace muninn::cuda {
namespace {

constexpr int kThreads = 256;

template <DType DST>
__device__ __forceinline__ void Store(char* row, int64_t e, float v) {
  if constexpr (DST == DType::kF32) {
    reinterpret_cast<float*>(row)[e] = v;
  } else if constexpr (DST == DType::kF16) {
    reinterpret_cast<__half*>(row)[e] = __float2half_rn(v);
  } else {
    reinterpret_cast<__nv_bfloat16*>(row)[e] = __float2bfloat16_rn(v);
  }
}

template <class Dec, DType DST>
__global__ void ConvertKernel(const char* src, RowLayout ls, char* dst, RowLayout ld, int64_t rows,
                              int64_t cols) {
  const int64_t chunks = cols / Dec::kChunk;
  const int64_t n = rows * chunks;
  for (int64_t i = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; i < n;
       i += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    const int64_t r = i / chunks, c = i % chunks;
    float y[Dec::kChunk];
    Dec::Decode(reinterpret_cast<const uint8_t*>(src + RowOffset(ls, r)), c, y);
    char* drow = dst + RowOffset(ld, r);
#pragma unroll
    for (int j = 0; j < Dec::kChunk; ++j) Store<DST>(drow, c * Dec::kChunk + j, y[j]);
  }
}

template <class Word>
__global__ void CopyWordsKernel(const char* src, RowLayout ls, char* dst, RowLayout ld,
                                int64_t rows, int64_t row_words) {
  const int64_t n = rows * row_words;
  for (int64_t i = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; i < n;
       i += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    const int64_t r = i / row_words, w = i % row_words;
    reinterpret_cast<Word*>(dst + RowOffset(ld, r))[w] =
        reinterpret_cast<const Word*>(src + RowOffset(ls, r))[w];
  }
}

// Whether every row start and the row length are multiples of `w` bytes.
bool AlignedTo(const char* p, const RowLayout& l, int64_t row_bytes, int64_t w) {
  if (reinterpret_cast<uintptr_t>(p) % static_cast<uintptr_t>(w) != 0 || row_bytes % w != 0) {
    return false;
  }
  for (int k = 0; k < l.n_outer; ++k) {
    if (l.strides[k] % w != 0) return false;
  }
  return true;
}

// One thread per 32-element block: f32 rows -> q8_0 rows (block_decode.h's encoder).
__global__ void QuantizeQ8_0Kernel(const char* src, RowLayout ls, char* dst, RowLayout ld,
                                   int64_t rows, int64_t blocks) {
  const int64_t n = rows * blocks;
  for (int64_t i = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; i < n;
       i += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    const int64_t r = i / blocks, b = i % blocks;
    const float* x = reinterpret_cast<const float*>(src + RowOffset(ls, r)) + b * 32;
    EncodeQ8_0Block(x, reinterpret_cast<uint8_t*>(dst + RowOffset(ld, r)) + b * 34);
  }
}

}  // namespace

cudaError_t LaunchQuantizeQ8_0(const char* src, const RowLayout& ls, char* dst, const RowLayout& ld,
                               int64_t rows, int64_t cols, cudaStream_t stream) {
  const int64_t blocks = cols / 32;
  QuantizeQ8_0Kernel<<<GridFor(rows * blocks, kThreads), kThreads, 0, stream>>>(src, ls, dst, ld,
                                                                               rows, blocks);
  return cudaGetLastError();
}

cudaError_t LaunchConvert(DType src_dtype, const char* src, const RowLayout& ls, DType dst_dtype,
                          char* dst, const RowLayout& ld, int64_t rows, int64_t cols,
                          cudaStream_t stream) {
  return DispatchDecoder(src_dtype, [&](auto dec) {
    using Dec = decltype(dec);
    const unsigned grid = GridFor(rows * (cols / Dec::kChunk), kThreads);
    switch (dst_dtype) {
      case DType::kF32:
        ConvertKernel<Dec, DType::kF32><<<grid, kThreads, 0, stream>>>(src, ls, dst, ld, rows, cols);
        break;
      case DType::kF16:
        ConvertKernel<Dec, DType::kF16><<<grid, kThreads, 0, stream>>>(src, ls, dst, ld, rows, cols);
        break;
      case DType::kBF16:
        ConvertKernel<Dec, DType::kBF16><<<grid, kThreads, 0, stream>>>(src, ls, dst, ld, rows,
                                                                        cols);
        break;
      default:
        break;  // validated by the backend; the dispatcher reports no launch error
    }
  });
}

cudaError_t LaunchCopyBytes(const char* src, const RowLayout& ls, char* dst, const RowLayout& ld,
                            int64_t rows, int64_t row_bytes, cudaStream_t stream) {
  for (const int64_t w : {int64_t{16}, int64_t{4}}) {
    if (AlignedTo(src, ls, row_bytes, w) && AlignedTo(dst, ld, row_bytes, w)) {
      const int64_t words = row_bytes / w;
      const unsigned grid = GridFor(rows * words, kThreads);
      if (w == 16) {
        CopyWordsKernel<int4><<<grid, kThreads, 0, stream>>>(src, ls, dst, ld, rows, words);
      } else {
        CopyWordsKernel<int32_t><<<grid, kThreads, 0, stream>>>(src, ls, dst, ld, rows, words);
      }
      return cudaGetLastError();
    }
  }
  CopyWordsKernel<char><<<GridFor(rows * row_bytes, kThreads), kThreads, 0, stream>>>(
      src, ls, dst, ld, rows, row_bytes);
  return cudaGetLastError();
}

cudaError_t LaunchDecodeToHalf(DType dtype, const char* src, int64_t src_row_stride, int64_t N,
                               int64_t K, bool to_bf16, void* dst, cudaStream_t stream) {
  RowLayout ls, ld;
  ls.n_outer = ld.n_outer = 1;
  ls.dims[0] = ld.dims[0] = N;
  ls.strides[0] = src_row_stride;
  ld.strides[0] = K * 2;
  return LaunchConvert(dtype, src, ls, to_bf16 ? DType::kBF16 : DType::kF16,
                       static_cast<char*>(dst), ld, N, K, stream);
}

}  // namespace muninn::cuda
