// GetRows (embedding lookup): decodes table rows of any dtype block_decode.h knows into f32. Ids
// are range-checked by a separate kernel first, so a bad id leaves `out` untouched.
#include "cuda/decode_dispatch.cuh"
#include "cuda/kernel_util.cuh"

namespace muninn::cuda {
namespace {

constexpr int kThreads = 256;

__device__ __forceinline__ int64_t LoadId(const char* ids, int64_t stride, bool i64, int64_t t) {
  const char* p = ids + t * stride;
  return i64 ? *reinterpret_cast<const int64_t*>(p)
             : static_cast<int64_t>(*reinterpret_cast<const int32_t*>(p));
}

__global__ void CheckIdsKernel(const char* ids, int64_t stride, bool i64, int64_t n_ids,
                               int64_t n_rows, int* bad) {
  for (int64_t t = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; t < n_ids;
       t += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    const int64_t id = LoadId(ids, stride, i64, t);
    if (id < 0 || id >= n_rows) *bad = 1;
  }
}

template <class Dec>
__global__ void GetRowsKernel(const char* table, int64_t table_row_stride, const char* ids,
                              int64_t id_stride, bool i64, int64_t n_ids, int64_t D, char* out,
                              int64_t out_row_stride) {
  const int64_t chunks = D / Dec::kChunk;
  const int64_t n = n_ids * chunks;
  for (int64_t i = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; i < n;
       i += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    const int64_t t = i / chunks, c = i % chunks;
    const int64_t id = LoadId(ids, id_stride, i64, t);
    const auto* row = reinterpret_cast<const uint8_t*>(table + id * table_row_stride);
    float y[Dec::kChunk];
    Dec::Decode(row, c, y);
    float* o = reinterpret_cast<float*>(out + t * out_row_stride) + c * Dec::kChunk;
#pragma unroll
    for (int j = 0; j < Dec::kChunk; ++j) o[j] = y[j];
  }
}

}  // namespace

cudaError_t LaunchCheckIds(const char* ids, int64_t id_stride, bool ids_i64, int64_t n_ids,
                           int64_t n_rows, int* bad, cudaStream_t stream) {
  CheckIdsKernel<<<GridFor(n_ids, kThreads), kThreads, 0, stream>>>(ids, id_stride, ids_i64, n_ids,
                                                                   n_rows, bad);
  return cudaGetLastError();
}

cudaError_t LaunchGetRows(DType table_dtype, const char* table, int64_t table_row_stride,
                          const char* ids, int64_t id_stride, bool ids_i64, int64_t n_ids,
                          int64_t D, char* out, int64_t out_row_stride, cudaStream_t stream) {
  return DispatchDecoder(table_dtype, [&](auto dec) {
    using Dec = decltype(dec);
    const int64_t n = n_ids * (D / Dec::kChunk);
    GetRowsKernel<Dec><<<GridFor(n, kThreads), kThreads, 0, stream>>>(
        table, table_row_stride, ids, id_stride, ids_i64, n_ids, D, out, out_row_stride);
  });
}

}  // namespace muninn::cuda
