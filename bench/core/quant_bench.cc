// The machine's limits and how close MatMul gets to them:
//  - BM_MemCopy / BM_MemRead: DRAM bandwidth (buffers far larger than L3) on 1 and 2 threads.
//  - BM_SgemmF32: f32 GEMM GFLOP/s through MatMul (OpenBLAS), 512 x 2048 x 2048.
//  - BM_MatVec: decode-step mat x vec, GB/s of weight bytes, per weight dtype, thread count and
//    kernel family, at 2048 x 8192 (w [8192, 2048]) and SmolLM2's FFN-down shape (w [576, 1536]).
//    Enough copies of w are cycled that their total exceeds L3, so the weights come from DRAM as
//    in a real decode step (a model's layers do not fit in cache either).
#include <benchmark/benchmark.h>

#include <algorithm>
#include <cstring>
#include <memory>
#include <random>
#include <vector>

#include "muninn/core/cpu_backend.h"
#include "muninn/core/fp16.h"
#include "muninn/core/quant.h"
#include "muninn/core/thread_pool.h"

namespace muninn {
namespace {

constexpr size_t kDramBytes = size_t{256} << 20;  // well past the 32 MiB L3 of the test machines

std::unique_ptr<Backend> MakeBackend(ThreadPool* pool, CpuIsa isa) {
  CpuBackendOptions o;
  o.pool = pool;
  o.isa = isa;
  return CreateCpuBackend(o).value();
}

void BM_MemCopy(benchmark::State& state) {
  const int threads = static_cast<int>(state.range(0));
  ThreadPool pool(threads);
  std::vector<char> src(kDramBytes, 1), dst(kDramBytes, 0);
  for (auto _ : state) {
    ParallelFor(&pool, threads, 1, [&](int64_t b, int64_t e) {
      for (int64_t t = b; t < e; ++t) {
        const size_t lo = kDramBytes * static_cast<size_t>(t) / static_cast<size_t>(threads);
        const size_t hi = kDramBytes * static_cast<size_t>(t + 1) / static_cast<size_t>(threads);
        std::memcpy(dst.data() + lo, src.data() + lo, hi - lo);
      }
    });
    benchmark::DoNotOptimize(dst.data());
  }
  // Bytes copied (each is read once and written once).
  state.SetBytesProcessed(static_cast<int64_t>(state.iterations()) *
                          static_cast<int64_t>(kDramBytes));
}
BENCHMARK(BM_MemCopy)
    ->Arg(1)
    ->Arg(2)
    ->ArgName("threads")
    ->UseRealTime()
    ->Unit(benchmark::kMillisecond);

void BM_MemRead(benchmark::State& state) {
  const int threads = static_cast<int>(state.range(0));
  ThreadPool pool(threads);
  std::vector<uint64_t> src(kDramBytes / 8, 3);
  std::vector<uint64_t> sums(static_cast<size_t>(threads));
  for (auto _ : state) {
    ParallelFor(&pool, threads, 1, [&](int64_t b, int64_t e) {
      for (int64_t t = b; t < e; ++t) {
        const size_t n = src.size();
        const size_t lo = n * static_cast<size_t>(t) / static_cast<size_t>(threads);
        const size_t hi = n * static_cast<size_t>(t + 1) / static_cast<size_t>(threads);
        uint64_t s0 = 0, s1 = 0, s2 = 0, s3 = 0;
        size_t i = lo;
        for (; i + 4 <= hi; i += 4) {
          s0 += src[i];
          s1 += src[i + 1];
          s2 += src[i + 2];
          s3 += src[i + 3];
        }
        for (; i < hi; ++i) s0 += src[i];
        sums[static_cast<size_t>(t)] = s0 + s1 + s2 + s3;
      }
    });
    benchmark::DoNotOptimize(sums.data());
  }
  state.SetBytesProcessed(static_cast<int64_t>(state.iterations()) *
                          static_cast<int64_t>(kDramBytes));
}
BENCHMARK(BM_MemRead)
    ->Arg(1)
    ->Arg(2)
    ->ArgName("threads")
    ->UseRealTime()
    ->Unit(benchmark::kMillisecond);

void FillF32(Tensor& t, uint32_t seed) {
  std::mt19937 rng(seed);
  std::normal_distribution<float> normal;
  float* p = t.data_as<float>();
  for (int64_t i = 0; i < t.numel(); ++i) p[i] = normal(rng);
}

void BM_SgemmF32(benchmark::State& state) {
  const int64_t m = state.range(0), n = state.range(1), k = state.range(2);
  ThreadPool pool(static_cast<int>(state.range(3)));
  auto backend = MakeBackend(&pool, GetCpuFeatures().BestIsa());
  Tensor x = Tensor::Empty(DType::kF32, Shape{m, k}).value();
  Tensor w = Tensor::Empty(DType::kF32, Shape{n, k}).value();
  Tensor out = Tensor::Empty(DType::kF32, Shape{m, n}).value();
  FillF32(x, 1);
  FillF32(w, 2);
  for (auto _ : state) {
    if (!backend->MatMul(x, w, &out).ok()) state.SkipWithError("MatMul failed");
  }
  state.counters["GFLOP/s"] = benchmark::Counter(
      2.0 * static_cast<double>(m * n * k) * static_cast<double>(state.iterations()) / 1e9,
      benchmark::Counter::kIsRate);
}
// OpenBLAS uses its own threads for sgemm; the pool argument only affects MatMul's other paths.
BENCHMARK(BM_SgemmF32)
    ->Args({512, 2048, 2048, 2})
    ->ArgNames({"M", "N", "K", "threads"})
    ->UseRealTime()
    ->Unit(benchmark::kMillisecond);

// Weight copies of `dtype` [n, k] whose total passes kDramBytes (at least 2).
std::vector<Tensor> MakeWeights(DType dtype, int64_t n, int64_t k) {
  const size_t bytes = *RowBytes(dtype, k) * static_cast<size_t>(n);
  const size_t copies = std::max<size_t>(2, kDramBytes / bytes + 1);
  std::vector<Tensor> ws;
  std::mt19937 rng(7);
  std::normal_distribution<float> normal;
  std::vector<float> row(static_cast<size_t>(k));
  for (size_t c = 0; c < copies; ++c) {
    Tensor w = Tensor::Empty(dtype, Shape{n, k}).value();
    auto* base = static_cast<char*>(w.data());
    const size_t rb = *RowBytes(dtype, k);
    for (int64_t r = 0; r < n; ++r) {
      if (CanQuantize(dtype)) {
        if (c == 0 || r < 4) {
          for (auto& v : row) v = normal(rng);
          (void)QuantizeRow(dtype, row.data(), base + r * static_cast<int64_t>(rb), k);
        } else {  // reuse copy 0's rows: content does not affect speed
          std::memcpy(base + r * static_cast<int64_t>(rb),
                      static_cast<const char*>(ws[0].data()) + r * static_cast<int64_t>(rb), rb);
        }
      } else {
        // K-quants: random bytes with small finite scales (the f16 fields of each block).
        auto* p = reinterpret_cast<uint8_t*>(base + r * static_cast<int64_t>(rb));
        for (size_t i = 0; i < rb; ++i) p[i] = static_cast<uint8_t>(rng() & 0xFF);
        const size_t bb = GetDTypeInfo(dtype).block_bytes;
        for (size_t b = 0; b < rb; b += bb) {
          const uint16_t h = Fp32ToFp16(0.01f);
          if (dtype == DType::kQ6_K) {
            std::memcpy(p + b + 208, &h, 2);
          } else {
            std::memcpy(p + b, &h, 2);
            std::memcpy(p + b + 2, &h, 2);
          }
        }
      }
    }
    ws.push_back(std::move(w));
  }
  return ws;
}

const DType kBenchDTypes[] = {DType::kF32,  DType::kF16,  DType::kBF16, DType::kQ8_0,
                              DType::kQ4_0, DType::kQ4_1, DType::kQ5_0, DType::kQ5_1,
                              DType::kQ4_K, DType::kQ5_K, DType::kQ6_K};

// Args: dtype index into kBenchDTypes, N, K, threads, isa.
void BM_MatVec(benchmark::State& state) {
  const DType dtype = kBenchDTypes[state.range(0)];
  const int64_t n = state.range(1), k = state.range(2);
  const auto isa = static_cast<CpuIsa>(state.range(4));
  if (static_cast<int>(isa) > static_cast<int>(GetCpuFeatures().BestIsa())) {
    state.SkipWithError("ISA not supported on this CPU");
    return;
  }
  ThreadPool pool(static_cast<int>(state.range(3)));
  auto backend = MakeBackend(&pool, isa);
  const std::vector<Tensor> ws = MakeWeights(dtype, n, k);
  Tensor x = Tensor::Empty(DType::kF32, Shape{1, k}).value();
  Tensor out = Tensor::Empty(DType::kF32, Shape{1, n}).value();
  FillF32(x, 3);
  size_t i = 0;
  for (auto _ : state) {
    if (!backend->MatMul(x, ws[i], &out).ok()) state.SkipWithError("MatMul failed");
    i = (i + 1) % ws.size();
  }
  state.SetLabel(std::string(DTypeName(dtype)) + " " + CpuIsaName(isa));
  state.SetBytesProcessed(static_cast<int64_t>(state.iterations()) *
                          static_cast<int64_t>(*RowBytes(dtype, k)) * n);
}

void MatVecArgs(benchmark::internal::Benchmark* b) {
  const int64_t best = static_cast<int64_t>(GetCpuFeatures().BestIsa());
  for (int64_t d = 0; d < static_cast<int64_t>(std::size(kBenchDTypes)); ++d) {
    for (const auto& [n, k] : {std::pair<int64_t, int64_t>{8192, 2048}, {576, 1536}}) {
      for (int64_t threads : {1, 2}) b->Args({d, n, k, threads, best});
    }
    if (best > 0) b->Args({d, 8192, 2048, 1, 0});  // scalar reference, for scale
    if (best > 1) b->Args({d, 8192, 2048, 1, 1});  // AVX2 on an AVX-512 machine
  }
}
BENCHMARK(BM_MatVec)
    ->Apply(MatVecArgs)
    ->ArgNames({"dtype", "N", "K", "threads", "isa"})
    ->UseRealTime()
    ->Unit(benchmark::kMicrosecond);

// Prefill-style batches: M activation rows at once, GFLOP/s (2·M·N·K per call).
// Args: dtype index, M, N, K, threads, int8_gemm (1: the VNNI GEMM where the CPU has it, 0: the
// per-row dot kernels).
void BM_MatMulBatch(benchmark::State& state) {
  const DType dtype = kBenchDTypes[state.range(0)];
  const int64_t m = state.range(1), n = state.range(2), k = state.range(3);
  ThreadPool pool(static_cast<int>(state.range(4)));
  CpuBackendOptions o;
  o.pool = &pool;
  o.int8_gemm = state.range(5) != 0;
  auto backend = CreateCpuBackend(o).value();
  Tensor w = Tensor::Empty(dtype, Shape{n, k}).value();
  {
    Tensor wf = Tensor::Empty(DType::kF32, Shape{n, k}).value();
    FillF32(wf, 5);
    if (!backend->Copy(wf, &w).ok()) {  // K-quants have no quantizer: use random bytes
      auto* p = static_cast<uint8_t*>(w.data());
      std::mt19937 rng(5);
      for (size_t i = 0; i < *RowBytes(dtype, k) * static_cast<size_t>(n); ++i) {
        p[i] = static_cast<uint8_t>(rng() & 0xFF);
      }
    }
  }
  Tensor x = Tensor::Empty(DType::kF32, Shape{m, k}).value();
  Tensor out = Tensor::Empty(DType::kF32, Shape{m, n}).value();
  FillF32(x, 6);
  for (auto _ : state) {
    if (!backend->MatMul(x, w, &out).ok()) state.SkipWithError("MatMul failed");
  }
  state.SetLabel(std::string(DTypeName(dtype)));
  state.counters["GFLOP/s"] = benchmark::Counter(
      2.0 * static_cast<double>(m * n * k) * static_cast<double>(state.iterations()) / 1e9,
      benchmark::Counter::kIsRate);
}
BENCHMARK(BM_MatMulBatch)
    ->ArgsProduct({{0, 1, 2, 3, 4, 5, 8, 10}, {64}, {2048}, {2048}, {2}, {1}})
    // q8_0 / q4_0 / q4_1 / q5_0 / q5_1 with and without the VNNI GEMM
    ->ArgsProduct({{3, 4, 5, 6, 7}, {64}, {2048}, {2048}, {2}, {0}})
    // SmolLM2-135M prefill shapes (FFN up/gate and down) at 512 tokens
    ->ArgsProduct({{5}, {512}, {1536}, {576}, {1, 2}, {0, 1}})
    ->ArgsProduct({{5}, {512}, {576}, {1536}, {1, 2}, {0, 1}})
    ->ArgNames({"dtype", "M", "N", "K", "threads", "int8_gemm"})
    ->UseRealTime()
    ->Unit(benchmark::kMillisecond);

}  // namespace
}  // namespace muninn
