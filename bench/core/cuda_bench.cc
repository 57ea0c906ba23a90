// CUDA backend kernels in isolation (issue 15's performance goals), each on data larger than the
// GPU's L2 where the op is bandwidth-bound. Every benchmark skips, saying why, on a machine without
// a CUDA device or in a build without MUNINN_CUDA. An iteration queues kLaunches ops and then
// synchronizes, so launch latency overlaps with execution as it does in a model's forward.
//  - BM_CudaMatVec/dtype/N/K/coalesced: decode MatMul (one row of x) against an [N, K] weight
//    stored as q4_0 / q4_1 / q8_0 / f16; bytes_per_second = weight bytes read (compare with the
//    card's memory bandwidth); coalesced 1 is the default kernel for q4_0/q4_1/q8_0 (eight lanes a
//    block), 0 the earlier one (a lane a block; f16 runs the same kernel either way).
//  - BM_CudaMatMulPrefill/M/N/K: prefill MatMul (M rows) on a q4_1 weight (decode to f16 + cuBLAS);
//    FLOP/s = 2 M N K.
//  - BM_CudaAttention/T/S/tc: attention at SmolLM2-135M's head shape (9 query heads, 3 KV heads,
//    head_dim 64), f16 K/V, T causal queries at the end of S keys; bytes_per_second = K/V bytes,
//    FLOP/s = 2 (d + dv) per visible query-key pair; tc 1 lets prefill use tensor cores
//    (attention_mma.cu), tc 0 keeps the SIMT kernel.
#include <benchmark/benchmark.h>

#include <cstdint>
#include <cstring>
#include <functional>
#include <memory>
#include <random>
#include <string>
#include <vector>

#include "muninn/core/backend.h"
#include "muninn/core/fp16.h"
#include "muninn/core/quant.h"
#include "muninn/core/tensor.h"
#if defined(MUNINN_HAVE_CUDA)
#include "muninn/core/cuda_backend.h"
#endif

namespace muninn {
namespace {

constexpr int kLaunches = 20;

// The CUDA backend (tensor_cores: CudaBackendOptions::tensor_core_attention; coalesced:
// CudaBackendOptions::coalesced_matvec), made once for each setting.
Backend* Gpu(benchmark::State& state, bool tensor_cores = true, bool coalesced = true) {
#if defined(MUNINN_HAVE_CUDA)
  static std::unique_ptr<Backend> backends[4];
  static std::string why;
  std::unique_ptr<Backend>& backend = backends[(tensor_cores ? 1 : 0) + (coalesced ? 2 : 0)];
  if (backend == nullptr && why.empty()) {
    CudaBackendOptions o;
    o.tensor_core_attention = tensor_cores;
    o.coalesced_matvec = coalesced;
    auto be = CreateCudaBackend(o);
    if (be.ok()) {
      backend = std::move(*be);
    } else {
      why = "no CUDA device: " + be.status().ToString();
    }
  }
  if (backend == nullptr) state.SkipWithError(why.c_str());
  return backend.get();
#else
  (void)tensor_cores;
  (void)coalesced;
  state.SkipWithError("built without MUNINN_CUDA");
  return nullptr;
#endif
}

// A host tensor of random values in [-1, 1], quantized to `dtype` row by row.
Tensor RandomHost(std::mt19937& rng, DType dtype, const Shape& shape) {
  std::uniform_real_distribution<float> dist(-1.0f, 1.0f);
  Tensor t = *Tensor::Empty(dtype, shape);
  const int64_t cols = shape[shape.ndim() - 1];
  const int64_t rows = t.numel() / cols;
  std::vector<float> row(static_cast<size_t>(cols));
  for (int64_t r = 0; r < rows; ++r) {
    for (float& x : row) x = dist(rng);
    char* dst = static_cast<char*>(t.data()) + r * (t.nbytes() / rows);
    if (dtype == DType::kF32) {
      std::memcpy(dst, row.data(), row.size() * 4);
    } else if (dtype == DType::kF16) {
      for (int64_t c = 0; c < cols; ++c) reinterpret_cast<uint16_t*>(dst)[c] = Fp32ToFp16(row[c]);
    } else {
      MUNINN_CHECK(QuantizeRow(dtype, row.data(), dst, cols).ok());
    }
  }
  return t;
}

Tensor OnGpu(Backend* be, const Tensor& host) {
  Tensor dev = *be->Allocate(host.dtype(), host.shape());
  MUNINN_CHECK(be->Transfer(host, &dev).ok());
  return dev;
}

bool Run(benchmark::State& state, Backend* be, const std::function<Status()>& op) {
  for (auto _ : state) {
    for (int i = 0; i < kLaunches; ++i) {
      const Status st = op();
      if (!st.ok()) {
        state.SkipWithError(st.ToString().c_str());
        return false;
      }
    }
    const Status st = be->Synchronize();
    if (!st.ok()) {
      state.SkipWithError(st.ToString().c_str());
      return false;
    }
  }
  return true;
}

const DType kMatVecTypes[] = {DType::kQ4_0, DType::kQ4_1, DType::kQ8_0, DType::kF16};

void BM_CudaMatVec(benchmark::State& state) {
  Backend* be = Gpu(state, true, state.range(3) != 0);
  if (be == nullptr) return;
  const DType dtype = kMatVecTypes[state.range(0)];
  const int64_t n = state.range(1), k = state.range(2);
  std::mt19937 rng(7);
  const Tensor w = OnGpu(be, RandomHost(rng, dtype, {n, k}));
  const Tensor x = OnGpu(be, RandomHost(rng, DType::kF32, {1, k}));
  Tensor out = *be->Allocate(DType::kF32, {1, n});
  if (!Run(state, be, [&] { return be->MatMul(x, w, &out); })) return;
  state.SetLabel(std::string(DTypeName(dtype)) +
                 (state.range(3) != 0 ? " coalesced" : " block per lane"));
  state.SetBytesProcessed(state.iterations() * kLaunches * static_cast<int64_t>(w.nbytes()));
}

void BM_CudaMatMulPrefill(benchmark::State& state) {
  Backend* be = Gpu(state);
  if (be == nullptr) return;
  const int64_t m = state.range(0), n = state.range(1), k = state.range(2);
  std::mt19937 rng(8);
  const Tensor w = OnGpu(be, RandomHost(rng, DType::kQ4_1, {n, k}));
  const Tensor x = OnGpu(be, RandomHost(rng, DType::kF32, {m, k}));
  Tensor out = *be->Allocate(DType::kF32, {m, n});
  if (!Run(state, be, [&] { return be->MatMul(x, w, &out); })) return;
  state.counters["FLOP/s"] =
      benchmark::Counter(static_cast<double>(state.iterations()) * kLaunches * 2.0 * m * n * k,
                         benchmark::Counter::kIsRate);
}

void BM_CudaAttention(benchmark::State& state) {
  Backend* be = Gpu(state, state.range(2) != 0);
  if (be == nullptr) return;
  const int64_t T = state.range(0), S = state.range(1);
  constexpr int64_t kHeads = 9, kHeadsKv = 3, kD = 64;
  std::mt19937 rng(9);
  const Tensor q = OnGpu(be, RandomHost(rng, DType::kF32, {T, kHeads, kD}));
  const Tensor k = OnGpu(be, RandomHost(rng, DType::kF16, {S, kHeadsKv, kD}));
  const Tensor v = OnGpu(be, RandomHost(rng, DType::kF16, {S, kHeadsKv, kD}));
  Tensor out = *be->Allocate(DType::kF32, {T, kHeads, kD});
  const AttentionParams params;  // causal, 1/sqrt(d)
  if (!Run(state, be, [&] { return be->Attention(q, k, v, Tensor(), Tensor(), params, &out); })) {
    return;
  }
  double pairs = 0.0;
  for (int64_t t = 0; t < T; ++t) pairs += static_cast<double>(S - T + t + 1);
  const double reps = static_cast<double>(state.iterations()) * kLaunches;
  state.SetBytesProcessed(
      static_cast<int64_t>(reps * static_cast<double>(k.nbytes() + v.nbytes())));
  state.counters["FLOP/s"] =
      benchmark::Counter(reps * pairs * kHeads * 2.0 * (2 * kD), benchmark::Counter::kIsRate);
}

// q4_0, q4_1, q8_0, f16 weights of 16384 x 8192 (64-256 MiB, past the L2), and SmolLM2-135M's
// largest decode matrices (the 49152 x 576 head and the 1536 x 576 FFN).
BENCHMARK(BM_CudaMatVec)
    ->ArgsProduct({{0, 1, 2, 3}, {16384}, {8192}, {0, 1}})
    ->Args({1, 49152, 576, 0})
    ->Args({1, 49152, 576, 1})
    ->Args({1, 1536, 576, 0})
    ->Args({1, 1536, 576, 1})
    ->UseRealTime()
    ->Unit(benchmark::kMicrosecond);
BENCHMARK(BM_CudaMatMulPrefill)
    ->Args({512, 1536, 576})
    ->Args({512, 49152, 576})
    ->Args({4096, 8192, 8192})
    ->UseRealTime()
    ->Unit(benchmark::kMicrosecond);
BENCHMARK(BM_CudaAttention)
    ->ArgsProduct({{1}, {4096, 16384, 81920}, {1}})
    ->ArgsProduct({{512}, {512, 4096}, {0, 1}})
    ->ArgsProduct({{2048}, {2048}, {0, 1}})
    ->UseRealTime()
    ->Unit(benchmark::kMicrosecond);

}  // namespace
}  // namespace muninn
