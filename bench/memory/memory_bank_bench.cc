// Memory bank benchmarks: append throughput, search latency (p50/p99) and recall@8 against exact
// search for Flat and HNSW at 10k/100k (and 1M with MUNINN_BENCH_1M=1) 384-d chunks, and K/V
// fetch throughput.
//
// Embeddings are clustered (2,000 Gaussian centres plus noise, L2-normalised), closer to real
// sentence embeddings than uniform noise, which no ANN index handles well; queries are perturbed
// stored vectors. Recall@8 is measured against the exact (Flat) bank built from the same data.
//
//   build-*/bench/muninn_memory_bench --benchmark_filter=Search --benchmark_min_time=0.05
#include <benchmark/benchmark.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdlib>
#include <filesystem>
#include <map>
#include <memory>
#include <random>
#include <set>
#include <string>
#include <vector>

#include "muninn/memory/memory_bank.h"

namespace muninn::memory {
namespace {

constexpr int64_t kDim = 384;

std::string BenchDir(const std::string& tag) {
  const auto p = std::filesystem::temp_directory_path() / ("muninn_bench_" + tag);
  std::filesystem::remove_all(p);
  std::filesystem::create_directories(p);
  return p.string();
}

void Normalize(float* v, int64_t n) {
  double s = 0;
  for (int64_t i = 0; i < n; ++i) s += static_cast<double>(v[i]) * v[i];
  const auto inv = static_cast<float>(1.0 / std::sqrt(s));
  for (int64_t i = 0; i < n; ++i) v[i] *= inv;
}

// [n, kDim] normalised embeddings with a low intrinsic dimension, as sentence embeddings have:
// a mixture of 2,000 Gaussian clusters in a 32-d latent space, mapped to 384-d by a fixed random
// linear map, plus a little isotropic noise. (Uniform 384-d noise has no near neighbours worth
// the name; no ANN index reaches useful recall on it.)
std::vector<float> ClusteredEmbeddings(int64_t n, uint64_t seed) {
  constexpr int kLatent = 32;
  constexpr int kCentres = 2000;
  std::mt19937_64 proj_rng(12345);  // the same map for every call
  std::normal_distribution<float> nd;
  std::vector<float> proj(static_cast<size_t>(kLatent * kDim));
  for (auto& x : proj) x = nd(proj_rng);
  std::vector<float> centres(static_cast<size_t>(kCentres * kLatent));
  for (auto& x : centres) x = nd(proj_rng);
  std::mt19937_64 rng(seed);
  std::vector<float> out(static_cast<size_t>(n * kDim));
  float z[kLatent];
  for (int64_t i = 0; i < n; ++i) {
    const auto c = static_cast<size_t>(rng() % kCentres);
    for (int j = 0; j < kLatent; ++j) z[j] = centres[c * kLatent + static_cast<size_t>(j)] + 0.5f * nd(rng);
    float* v = out.data() + i * kDim;
    for (int64_t d = 0; d < kDim; ++d) {
      float s = 0;
      for (int j = 0; j < kLatent; ++j) s += z[j] * proj[static_cast<size_t>(j * kDim + d)];
      v[d] = s + 0.5f * nd(rng);
    }
    Normalize(v, kDim);
  }
  return out;
}

// Appends n chunks carrying the given embeddings and a minimal K/V (search benchmarks do not
// read K/V; the fetch benchmark has its own shapes).
Status Fill(MemoryBank& bank, const std::vector<float>& emb, int64_t n) {
  auto k = Tensor::Zeros(DType::kF32, Shape{bank.n_head_kv(), 1, bank.head_dim()}).value();
  const std::vector<int32_t> tokens = {1};
  constexpr int64_t kBatch = 1024;
  std::vector<ChunkInput> in;
  for (int64_t b = 0; b < n; b += kBatch) {
    in.clear();
    for (int64_t i = b; i < std::min(n, b + kBatch); ++i) {
      ChunkInput c;
      c.doc_id = static_cast<DocumentId>(i / 1000);
      c.position = (i % 1000) * 128;
      c.tokens = tokens;
      c.text = "x";
      c.embedding = std::span<const float>(emb.data() + i * kDim, static_cast<size_t>(kDim));
      c.k = k;
      c.v = k;
      in.push_back(c);
    }
    RETURN_IF_ERROR(bank.Append(in).status());
  }
  return Status::Ok();
}

struct SearchFixture {
  std::unique_ptr<MemoryBank> bank;
  std::vector<float> queries;                  // [n_queries, kDim]
  std::vector<std::vector<ChunkId>> exact;     // exact top-8 per query
  double build_seconds = 0;
};

constexpr int kQueries = 200;

// Builds (once per factory and size) a bank and, for the exact reference, a Flat bank.
SearchFixture* GetFixture(const std::string& factory, int64_t n) {
  // Built once per process and deliberately never destroyed: the banks would otherwise close
  // during static destruction, after RocksDB's own statics are gone.
  static auto& cache =
      *new std::map<std::pair<std::string, int64_t>, std::unique_ptr<SearchFixture>>();
  auto key = std::make_pair(factory, n);
  if (auto it = cache.find(key); it != cache.end()) return it->second.get();
  auto fx = std::make_unique<SearchFixture>();
  const std::vector<float> emb = ClusteredEmbeddings(n, 42);
  MemoryBankOptions o;
  o.path = BenchDir("search_" + factory + "_" + std::to_string(n));
  o.dim = kDim;
  o.n_head_kv = 1;
  o.head_dim = 32;
  o.index_factory = factory;
  o.sync = SyncPolicy::kNoSync;
  o.index_persist_interval = 1 << 30;  // measuring search, not index saves
  fx->bank = MemoryBank::Open(o).value();
  const auto t0 = std::chrono::steady_clock::now();
  if (!Fill(*fx->bank, emb, n).ok()) std::abort();
  fx->build_seconds =
      std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  std::mt19937_64 rng(7);
  std::normal_distribution<float> nd;
  fx->queries.resize(static_cast<size_t>(kQueries * kDim));
  for (int q = 0; q < kQueries; ++q) {
    const auto src = static_cast<int64_t>(rng() % static_cast<uint64_t>(n));
    float* v = fx->queries.data() + q * kDim;
    for (int64_t d = 0; d < kDim; ++d) v[d] = emb[static_cast<size_t>(src * kDim + d)] + 0.03f * nd(rng);
    Normalize(v, kDim);
  }
  MemoryBank* exact_bank = fx->bank.get();
  if (factory != "Flat") exact_bank = GetFixture("Flat", n)->bank.get();
  auto res = exact_bank->Search(fx->queries, kQueries, 8, {}, false).value();
  for (const auto& hits : res) {
    fx->exact.emplace_back();
    for (const auto& h : hits) fx->exact.back().push_back(h.id);
  }
  return cache.emplace(key, std::move(fx)).first->second.get();
}

void BM_Search(benchmark::State& state, const std::string& factory, bool filtered) {
  const int64_t n = state.range(0);
  SearchFixture* fx = GetFixture(factory, n);
  SearchFilter filter;
  if (filtered) filter.before_position = 500 * 128;  // half of every document
  std::vector<double> lat_us;
  int64_t hits = 0, wanted = 0;
  int q = 0;
  for (auto _ : state) {
    const auto t0 = std::chrono::steady_clock::now();
    auto res = fx->bank->Search(
        std::span<const float>(fx->queries.data() + q * kDim, static_cast<size_t>(kDim)), 1, 8,
        filter, false);
    lat_us.push_back(
        std::chrono::duration<double, std::micro>(std::chrono::steady_clock::now() - t0).count());
    if (!res.ok()) {
      state.SkipWithError(res.status().ToString().c_str());
      return;
    }
    if (!filtered) {
      const std::set<ChunkId> want(fx->exact[static_cast<size_t>(q)].begin(),
                                   fx->exact[static_cast<size_t>(q)].end());
      for (const auto& h : (*res)[0]) hits += static_cast<int64_t>(want.count(h.id));
      wanted += static_cast<int64_t>(want.size());
    }
    q = (q + 1) % kQueries;
  }
  std::sort(lat_us.begin(), lat_us.end());
  auto pct = [&](double p) {
    return lat_us[std::min(lat_us.size() - 1, static_cast<size_t>(p * static_cast<double>(lat_us.size())))];
  };
  state.counters["p50_us"] = pct(0.50);
  state.counters["p99_us"] = pct(0.99);
  if (wanted > 0) state.counters["recall@8"] = static_cast<double>(hits) / static_cast<double>(wanted);
  state.counters["build_s"] = fx->build_seconds;
}

void SearchSizes(benchmark::internal::Benchmark* b) {
  b->Arg(10'000)->Arg(100'000)->Unit(benchmark::kMicrosecond)->Iterations(1000);
}

bool Bench1M() {
  const char* e = std::getenv("MUNINN_BENCH_1M");
  return e != nullptr && std::string(e) == "1";
}

// 1M chunks (MUNINN_BENCH_1M=1): the HNSW build takes minutes. Exact (Flat) search costs
// ~0.3 s a query there, so it runs 100 queries (p99 is then the second-worst); HNSW runs 1000.
void Sizes1M(benchmark::internal::Benchmark* b, int iterations) {
  if (Bench1M()) b->Arg(1'000'000)->Unit(benchmark::kMicrosecond)->Iterations(iterations);
}

BENCHMARK_CAPTURE(BM_Search, Flat, std::string("Flat"), false)->Apply(SearchSizes);
BENCHMARK_CAPTURE(BM_Search, HNSW32, std::string("HNSW32"), false)->Apply(SearchSizes);
BENCHMARK_CAPTURE(BM_Search, FlatFiltered, std::string("Flat"), true)->Apply(SearchSizes);
BENCHMARK_CAPTURE(BM_Search, HNSW32Filtered, std::string("HNSW32"), true)->Apply(SearchSizes);
BENCHMARK_CAPTURE(BM_Search, Flat, std::string("Flat"), false)
    ->Apply([](benchmark::internal::Benchmark* b) { Sizes1M(b, 100); });
BENCHMARK_CAPTURE(BM_Search, HNSW32, std::string("HNSW32"), false)
    ->Apply([](benchmark::internal::Benchmark* b) { Sizes1M(b, 1000); });
BENCHMARK_CAPTURE(BM_Search, HNSW32Filtered, std::string("HNSW32"), true)
    ->Apply([](benchmark::internal::Benchmark* b) { Sizes1M(b, 1000); });

// Chunks shaped like SmolLM2-135M's memory layer (3 KV heads x 64, 128 tokens) or MemLong's
// OpenLLaMA-3B (32 x 100, bf16 only: 100 is not a multiple of q8_0's block).
struct KvShape {
  int64_t n_head_kv, head_dim, n_tokens;
};
constexpr KvShape kSmol{3, 64, 128};
constexpr KvShape kOpenLlama{32, 100, 128};

std::vector<ChunkInput> KvChunks(const KvShape& s, int n, const std::vector<float>& emb,
                                 std::vector<int32_t>* tokens, Tensor* k) {
  tokens->assign(static_cast<size_t>(s.n_tokens), 7);
  *k = Tensor::Empty(DType::kF32, Shape{s.n_head_kv, s.n_tokens, s.head_dim}).value();
  std::mt19937 rng(3);
  std::normal_distribution<float> nd;
  for (int64_t i = 0; i < k->numel(); ++i) k->data_as<float>()[i] = nd(rng);
  std::vector<ChunkInput> in;
  for (int i = 0; i < n; ++i) {
    ChunkInput c;
    c.doc_id = 1;
    c.position = i * s.n_tokens;
    c.tokens = *tokens;
    c.text = "some chunk text of a few hundred bytes would go here";
    c.embedding = std::span<const float>(emb.data() + i * kDim, static_cast<size_t>(kDim));
    c.k = *k;
    c.v = *k;
    in.push_back(c);
  }
  return in;
}

void BM_Append(benchmark::State& state, KvShape shape, DType dtype, SyncPolicy sync) {
  constexpr int kBatch = 8;
  MemoryBankOptions o;
  o.path = BenchDir("append");
  o.dim = kDim;
  o.n_head_kv = shape.n_head_kv;
  o.head_dim = shape.head_dim;
  o.kv_dtype = dtype;
  o.sync = sync;
  auto bank = MemoryBank::Open(o).value();
  const auto emb = ClusteredEmbeddings(kBatch, 1);
  std::vector<int32_t> tokens;
  Tensor k;
  auto in = KvChunks(shape, kBatch, emb, &tokens, &k);
  int64_t bytes_before = 0;
  for (auto _ : state) {
    auto r = bank->Append(in);
    if (!r.ok()) {
      state.SkipWithError(r.status().ToString().c_str());
      return;
    }
  }
  const BankStats s = bank->Stats();
  state.SetItemsProcessed(state.iterations() * kBatch);
  state.SetBytesProcessed(s.stored_bytes - bytes_before);
  state.counters["chunks/s"] =
      benchmark::Counter(static_cast<double>(state.iterations() * kBatch), benchmark::Counter::kIsRate);
  bank.reset();
  std::filesystem::remove_all(o.path);
}

BENCHMARK_CAPTURE(BM_Append, Smol_bf16_nosync, kSmol, DType::kBF16, SyncPolicy::kNoSync)
    ->Unit(benchmark::kMillisecond)->UseRealTime();
BENCHMARK_CAPTURE(BM_Append, Smol_q8_0_nosync, kSmol, DType::kQ8_0, SyncPolicy::kNoSync)
    ->Unit(benchmark::kMillisecond)->UseRealTime();
BENCHMARK_CAPTURE(BM_Append, Smol_bf16_sync, kSmol, DType::kBF16, SyncPolicy::kSync)
    ->Unit(benchmark::kMillisecond)->UseRealTime();
BENCHMARK_CAPTURE(BM_Append, OpenLlama_bf16_nosync, kOpenLlama, DType::kBF16, SyncPolicy::kNoSync)
    ->Unit(benchmark::kMillisecond)->UseRealTime();

void BM_FetchKV(benchmark::State& state, KvShape shape, DType out_dtype) {
  constexpr int kChunks = 256;
  constexpr int kTopK = 8;
  MemoryBankOptions o;
  o.path = BenchDir("fetch");
  o.dim = kDim;
  o.n_head_kv = shape.n_head_kv;
  o.head_dim = shape.head_dim;
  o.kv_dtype = DType::kBF16;
  o.sync = SyncPolicy::kNoSync;
  auto bank = MemoryBank::Open(o).value();
  const auto emb = ClusteredEmbeddings(kChunks, 2);
  std::vector<int32_t> tokens;
  Tensor k;
  auto in = KvChunks(shape, kChunks, emb, &tokens, &k);
  auto ids = bank->Append(in).value();
  std::mt19937 rng(5);
  std::vector<ChunkId> pick(kTopK);
  for (int w = 0; w < kChunks; w += kTopK) {  // warm the caches: "from cache"
    (void)bank->FetchKV(std::span<const ChunkId>(ids.data() + w, kTopK), out_dtype);
  }
  int64_t bytes = 0;
  for (auto _ : state) {
    for (auto& p : pick) p = ids[rng() % kChunks];
    auto kv = bank->FetchKV(pick, out_dtype);
    if (!kv.ok()) {
      state.SkipWithError(kv.status().ToString().c_str());
      return;
    }
    bytes += static_cast<int64_t>(2 * kv->k.nbytes());
    benchmark::DoNotOptimize(kv->k.data());
  }
  state.SetBytesProcessed(bytes);
  bank.reset();
  std::filesystem::remove_all(o.path);
}

BENCHMARK_CAPTURE(BM_FetchKV, Smol_raw_bf16, kSmol, DType::kBF16)->Unit(benchmark::kMicrosecond)->UseRealTime();
BENCHMARK_CAPTURE(BM_FetchKV, Smol_to_f32, kSmol, DType::kF32)->Unit(benchmark::kMicrosecond)->UseRealTime();
BENCHMARK_CAPTURE(BM_FetchKV, OpenLlama_raw_bf16, kOpenLlama, DType::kBF16)
    ->Unit(benchmark::kMicrosecond)->UseRealTime();
BENCHMARK_CAPTURE(BM_FetchKV, OpenLlama_to_f32, kOpenLlama, DType::kF32)
    ->Unit(benchmark::kMicrosecond)->UseRealTime();

}  // namespace
}  // namespace muninn::memory
