// Attention (with a MemLong memory block) on the CPU backend, every ISA the machine has, 1 and 2
// threads, against a float64 joint-softmax reference written here.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstdlib>
#include <limits>
#include <random>
#include <string>
#include <vector>

#include "core/src/cpu/attention_kernel.h"
#include "muninn/core/backend.h"
#include "muninn/core/cpu_backend.h"
#include "muninn/core/cpu_features.h"
#include "muninn/core/fp16.h"
#include "muninn/core/quant.h"
#include "muninn/core/tensor.h"
#include "muninn/core/thread_pool.h"

namespace muninn {
namespace {

// A fresh seed per test, printed on failure; MUNINN_TEST_SEED=<n> replays one.
uint64_t TestSeed() {
  if (const char* env = std::getenv("MUNINN_TEST_SEED")) return std::strtoull(env, nullptr, 10);
  return std::random_device{}();
}

std::vector<CpuIsa> SupportedIsas() {
  std::vector<CpuIsa> isas = {CpuIsa::kScalar};
  const CpuIsa best = GetCpuFeatures().BestIsa();
  if (static_cast<int>(best) >= static_cast<int>(CpuIsa::kAvx2)) isas.push_back(CpuIsa::kAvx2);
  if (best == CpuIsa::kAvx512) isas.push_back(CpuIsa::kAvx512);
  return isas;
}

// A [rows, heads, dim] operand: the tensor handed to Attention (possibly a strided view) and the
// values it holds, as the kernel sees them (after f16 rounding), for the reference.
struct Operand {
  Tensor t;
  std::vector<double> values;  // [rows, heads, dim]
  int64_t heads = 0, dim = 0;
  double at(int64_t r, int64_t h, int64_t i) const {
    return values[static_cast<size_t>((r * heads + h) * dim + i)];
  }
};

// Fills a [rows, heads, dim] operand with uniform values in [-amp, amp]. With `view`, the tensor is
// a window of a larger buffer laid out [heads, cap, dim] (a per-head cache), transposed to
// [rows, heads, dim]: strided outer dims, packed rows.
Operand RandomOperand(std::mt19937_64& rng, int64_t rows, int64_t heads, int64_t dim, DType dtype,
                      bool view, double amp) {
  std::uniform_real_distribution<double> dist(-amp, amp);
  Operand op;
  op.heads = heads;
  op.dim = dim;
  op.values.resize(static_cast<size_t>(rows * heads * dim));
  const int64_t cap = view ? rows + 5 : rows;
  const int64_t offset = view ? 3 : 0;
  Tensor base;
  if (view) {
    auto full = Tensor::Empty(dtype, Shape{heads, cap, dim});
    EXPECT_TRUE(full.ok());
    auto window = full->Slice(1, offset, offset + rows);
    EXPECT_TRUE(window.ok());
    auto transposed = window->Transpose(0, 1);
    EXPECT_TRUE(transposed.ok());
    op.t = *transposed;
  } else {
    auto t = Tensor::Empty(dtype, Shape{rows, heads, dim});
    EXPECT_TRUE(t.ok());
    op.t = *t;
  }
  for (int64_t r = 0; r < rows; ++r) {
    for (int64_t h = 0; h < heads; ++h) {
      char* row = static_cast<char*>(op.t.data()) + r * op.t.stride(0) + h * op.t.stride(1);
      if (dtype == DType::kQ8_0) {  // a head's row is whole q8_0 blocks: quantize it at once
        std::vector<float> x(static_cast<size_t>(dim)), back(static_cast<size_t>(dim));
        for (float& e : x) e = static_cast<float>(dist(rng));
        EXPECT_TRUE(QuantizeRow(dtype, x.data(), row, dim).ok());
        DequantizeRow(dtype, row, back.data(), dim);
        std::copy(back.begin(), back.end(),
                  op.values.begin() + static_cast<std::ptrdiff_t>((r * heads + h) * dim));
        continue;
      }
      for (int64_t i = 0; i < dim; ++i) {
        const float x = static_cast<float>(dist(rng));
        double stored;
        if (dtype == DType::kF16) {
          const uint16_t hv = Fp32ToFp16(x);
          reinterpret_cast<uint16_t*>(row)[i] = hv;
          stored = Fp16ToFp32(hv);
        } else {
          reinterpret_cast<float*>(row)[i] = x;
          stored = x;
        }
        op.values[static_cast<size_t>((r * heads + h) * dim + i)] = stored;
      }
    }
  }
  return op;
}

// out[t, h, :] = Σ_j softmax_j(scale q·k_j) v_j over [memory ; visible local keys], in float64;
// memory keys are scored with `mq` instead of q when given (AttentionParams::mem_q).
std::vector<double> Reference(const Operand& q, const Operand& k, const Operand& v,
                              const Operand* mk, const Operand* mv, int64_t T, int64_t S,
                              int64_t M, bool causal, double scale,
                              const std::vector<int64_t>& heads, const Operand* mq = nullptr) {
  const int64_t n_head = q.heads, n_head_kv = k.heads, d = q.dim, dv = v.dim;
  const int64_t G = n_head / n_head_kv;
  std::vector<double> out(static_cast<size_t>(T * n_head * dv), 0.0);
  std::vector<double> s(static_cast<size_t>(M + S));
  for (int64_t t = 0; t < T; ++t) {
    for (int64_t h : heads) {
      const int64_t g = h / G;
      const int64_t visible = causal ? t + (S - T) + 1 : S;
      double mx = -std::numeric_limits<double>::infinity();
      int64_t n = 0;
      auto dot = [&](const Operand& queries, const Operand& keys, int64_t j) {
        double acc = 0.0;
        for (int64_t i = 0; i < d; ++i) acc += queries.at(t, h, i) * keys.at(j, g, i);
        return acc * scale;
      };
      const Operand& mem_queries = mq != nullptr ? *mq : q;
      for (int64_t j = 0; j < M; ++j) s[static_cast<size_t>(n++)] = dot(mem_queries, *mk, j);
      for (int64_t j = 0; j < visible; ++j) s[static_cast<size_t>(n++)] = dot(q, k, j);
      for (int64_t j = 0; j < n; ++j) mx = std::max(mx, s[static_cast<size_t>(j)]);
      double l = 0.0;
      for (int64_t j = 0; j < n; ++j) {
        s[static_cast<size_t>(j)] = std::exp(s[static_cast<size_t>(j)] - mx);
        l += s[static_cast<size_t>(j)];
      }
      double* o = &out[static_cast<size_t>((t * n_head + h) * dv)];
      for (int64_t j = 0; j < n; ++j) {
        const double p = s[static_cast<size_t>(j)] / l;
        const Operand& vals = j < M ? *mv : v;
        const int64_t row = j < M ? j : j - M;
        for (int64_t c = 0; c < dv; ++c) o[c] += p * vals.at(row, g, c);
      }
    }
  }
  return out;
}

struct Case {
  int64_t T, S, M, n_head, n_head_kv, d, dv;
  bool causal;
  DType kv_dtype;
  DType mem_dtype;
  bool view;        // k, v, mem as strided cache views; q as a slice of a fused projection
  double q_amp;     // larger values give peaked softmaxes (the running max matters)
  bool mem_q = false;  // a separate query tensor for the memory block (AttentionParams::mem_q)
  std::string Name() const {
    return "T=" + std::to_string(T) + " S=" + std::to_string(S) + " M=" + std::to_string(M) +
           " heads=" + std::to_string(n_head) + "/" + std::to_string(n_head_kv) +
           " d=" + std::to_string(d) + " dv=" + std::to_string(dv) +
           (causal ? " causal" : " full") + " kv=" + std::string(DTypeName(kv_dtype)) +
           " mem=" + std::string(DTypeName(mem_dtype)) + (view ? " views" : "") +
           " q_amp=" + std::to_string(q_amp) + (mem_q ? " mem_q" : "");
  }
};

// Max abs error relative to the output's magnitude, over the given heads.
double RelativeError(const Tensor& out, const std::vector<double>& ref, int64_t T, int64_t n_head,
                     int64_t dv, const std::vector<int64_t>& heads) {
  double max_err = 0.0, max_ref = 0.0;
  for (int64_t t = 0; t < T; ++t) {
    for (int64_t h : heads) {
      const float* row = reinterpret_cast<const float*>(static_cast<const char*>(out.data()) +
                                                        t * out.stride(0) + h * out.stride(1));
      for (int64_t c = 0; c < dv; ++c) {
        const double r = ref[static_cast<size_t>((t * n_head + h) * dv + c)];
        const double diff = std::fabs(static_cast<double>(row[c]) - r);
        max_err = std::isnan(row[c]) ? std::numeric_limits<double>::infinity()
                                     : std::max(max_err, diff);
        max_ref = std::max(max_ref, std::fabs(r));
      }
    }
  }
  return max_err / std::max(max_ref, 1e-30);
}

void RunCase(const Case& c, uint64_t seed, double tol) {
  SCOPED_TRACE(c.Name() + " seed=" + std::to_string(seed) +
               " (rerun with MUNINN_TEST_SEED=" + std::to_string(seed) + ")");
  std::mt19937_64 rng(seed);
  // q: with views, a slice of a fused [T, n_head + 2, d] projection output.
  Operand q;
  if (c.view) {
    Operand fused = RandomOperand(rng, c.T, c.n_head + 2, c.d, DType::kF32, false, c.q_amp);
    auto sliced = fused.t.Slice(1, 1, 1 + c.n_head);
    ASSERT_TRUE(sliced.ok());
    q.t = *sliced;
    q.heads = c.n_head;
    q.dim = c.d;
    for (int64_t t = 0; t < c.T; ++t) {
      for (int64_t h = 0; h < c.n_head; ++h) {
        for (int64_t i = 0; i < c.d; ++i) q.values.push_back(fused.at(t, h + 1, i));
      }
    }
  } else {
    q = RandomOperand(rng, c.T, c.n_head, c.d, DType::kF32, false, c.q_amp);
  }
  Operand k = RandomOperand(rng, c.S, c.n_head_kv, c.d, c.kv_dtype, c.view, 1.0);
  Operand v = RandomOperand(rng, c.S, c.n_head_kv, c.dv, c.kv_dtype, c.view, 1.0);
  Operand mk, mv, mq;
  if (c.M > 0) {
    mk = RandomOperand(rng, c.M, c.n_head_kv, c.d, c.mem_dtype, c.view, 1.0);
    mv = RandomOperand(rng, c.M, c.n_head_kv, c.dv, c.mem_dtype, c.view, 1.0);
  }
  // Memory queries unrelated to q, so a kernel that mixes the two up cannot pass.
  if (c.mem_q) mq = RandomOperand(rng, c.T, c.n_head, c.d, DType::kF32, false, c.q_amp);
  std::vector<int64_t> heads(static_cast<size_t>(c.n_head));
  for (int64_t h = 0; h < c.n_head; ++h) heads[static_cast<size_t>(h)] = h;
  const double scale = 1.0 / std::sqrt(static_cast<double>(c.d));
  const std::vector<double> ref =
      Reference(q, k, v, c.M > 0 ? &mk : nullptr, c.M > 0 ? &mv : nullptr, c.T, c.S, c.M,
                c.causal, scale, heads, c.mem_q ? &mq : nullptr);

  ThreadPool pool(2);
  for (CpuIsa isa : SupportedIsas()) {
    for (ThreadPool* p : {static_cast<ThreadPool*>(nullptr), &pool}) {
      SCOPED_TRACE(std::string("isa=") + CpuIsaName(isa) + " threads=" + (p ? "2" : "1"));
      CpuBackendOptions opts;
      opts.isa = isa;
      opts.pool = p;
      auto backend = CreateCpuBackend(opts);
      ASSERT_TRUE(backend.ok());
      auto out = Tensor::Empty(DType::kF32, Shape{c.T, c.n_head, c.dv});
      ASSERT_TRUE(out.ok());
      AttentionParams params;
      params.causal = c.causal;
      if (c.mem_q) params.mem_q = &mq.t;
      const Status st = (*backend)->Attention(q.t, k.t, v.t, c.M > 0 ? mk.t : Tensor(),
                                              c.M > 0 ? mv.t : Tensor(), params, &*out);
      ASSERT_TRUE(st.ok()) << st;
      EXPECT_LE(RelativeError(*out, ref, c.T, c.n_head, c.dv, heads), tol);
    }
  }
}

constexpr DType kF32 = DType::kF32;
constexpr DType kF16 = DType::kF16;
constexpr DType kQ8 = DType::kQ8_0;

// q8_0 K/V (the CPU's compact KV cache): head dims 64 (the unrolled few-rows path), 96 (the
// generic one) and 128 (8 vectors); decode with a key split, prefill, and mixed with f16/f32.
TEST(AttentionTest, Q8KeysAndValuesAgainstReference) {
  const uint64_t seed = TestSeed();
  RunCase({1, 3000, 300, 9, 3, 64, 64, true, kQ8, kQ8, true, 3.0}, seed, 2e-5);  // split
  RunCase({1, 70, 0, 4, 1, 96, 96, true, kQ8, kQ8, false, 1.0}, seed + 1, 2e-5);
  RunCase({1, 130, 65, 2, 2, 128, 128, true, kQ8, kF16, true, 2.0}, seed + 2, 2e-5);
  RunCase({2, 5, 3, 6, 3, 64, 32, true, kF32, kQ8, false, 1.0}, seed + 3, 2e-5);
  RunCase({67, 67, 300, 8, 1, 64, 64, true, kQ8, kQ8, true, 4.0}, seed + 4, 2e-5);  // prefill
  RunCase({40, 1000, 0, 9, 3, 64, 64, true, kQ8, kQ8, false, 2.0}, seed + 5, 2e-5);
}

TEST(AttentionTest, DecodeAgainstReference) {
  const uint64_t seed = TestSeed();
  // T = 1 with enough keys that two threads split the key range and merge.
  RunCase({1, 3000, 300, 8, 1, 64, 64, true, kF16, kF16, true, 1.0}, seed, 2e-5);   // GQA 8
  RunCase({1, 2500, 0, 9, 3, 64, 64, true, kF32, kF32, false, 3.0}, seed + 1, 2e-5);  // GQA 3
  RunCase({1, 1, 0, 4, 4, 64, 64, true, kF32, kF32, false, 1.0}, seed + 2, 2e-5);   // S = 1
  RunCase({1, 3, 1, 3, 1, 17, 17, true, kF16, kF32, true, 1.0}, seed + 3, 2e-5);
}

TEST(AttentionTest, PrefillAgainstReference) {
  const uint64_t seed = TestSeed();
  RunCase({130, 130, 0, 6, 2, 96, 96, true, kF32, kF32, false, 1.0}, seed, 2e-5);
  RunCase({67, 67, 300, 8, 1, 64, 64, true, kF16, kF16, true, 4.0}, seed + 1, 2e-5);
  RunCase({3, 3, 300, 9, 3, 64, 64, false, kF32, kF16, false, 1.0}, seed + 2, 2e-5);
  RunCase({20, 20, 1, 3, 3, 17, 17, true, kF32, kF32, true, 8.0}, seed + 3, 2e-5);
}

TEST(AttentionTest, KvCacheAgainstReference) {
  const uint64_t seed = TestSeed();
  // T < S: queries are the last T positions of the local window.
  RunCase({37, 300, 1, 3, 3, 17, 17, true, kF16, kF16, true, 1.0}, seed, 2e-5);
  RunCase({40, 1000, 300, 16, 2, 64, 96, true, kF32, kF32, true, 4.0}, seed + 1, 2e-5);
  RunCase({3, 2500, 0, 9, 3, 64, 64, true, kF16, kF16, false, 2.0}, seed + 2, 2e-5);  // split
  RunCase({5, 1000, 300, 6, 2, 96, 32, false, kF16, kF32, true, 1.0}, seed + 3, 2e-5);
}

TEST(AttentionTest, UnmaskedAndMemoryOnly) {
  const uint64_t seed = TestSeed();
  RunCase({5, 3, 0, 4, 2, 64, 64, false, kF32, kF32, false, 1.0}, seed, 2e-5);  // T > S
  RunCase({4, 0, 300, 6, 3, 64, 64, false, kF32, kF16, true, 2.0}, seed + 1, 2e-5);  // S = 0
  RunCase({70, 1000, 0, 3, 1, 96, 96, false, kF32, kF32, false, 1.0}, seed + 2, 2e-5);
}

// A separate query tensor for the memory block (context memory's constant-distance queries):
// odd sizes, GQA, the decode split path and causal/unmasked local keys.
TEST(AttentionTest, SeparateMemoryQueriesAgainstReference) {
  const uint64_t seed = TestSeed();
  // Decode, T = 1, enough keys that two threads split [memory ; local] (a split boundary falls
  // inside the memory block and another in the local keys).
  RunCase({1, 2100, 1500, 9, 3, 64, 64, true, kF16, kF16, true, 2.0, true}, seed, 2e-5);
  RunCase({1, 5, 3000, 8, 1, 64, 64, true, kF32, kF16, false, 1.0, true}, seed + 1, 2e-5);
  // Prefill and KV-cache shapes with odd sizes.
  RunCase({67, 67, 300, 9, 3, 17, 17, true, kF32, kF32, true, 4.0, true}, seed + 2, 2e-5);
  RunCase({37, 300, 129, 6, 2, 96, 32, true, kF16, kF32, false, 1.0, true}, seed + 3, 2e-5);
  RunCase({5, 3, 65, 4, 4, 33, 33, false, kF32, kF32, false, 8.0, true}, seed + 4, 2e-5);
  RunCase({4, 0, 70, 6, 3, 64, 64, false, kF32, kF16, true, 2.0, true}, seed + 5, 2e-5);  // S = 0
}

TEST(AttentionTest, MemoryQueriesWithoutMemoryAreIgnored) {
  // mem_q given but no memory block: plain attention, and the plan allocates no second block.
  const uint64_t seed = TestSeed();
  SCOPED_TRACE("seed=" + std::to_string(seed));
  std::mt19937_64 rng(seed);
  Operand q = RandomOperand(rng, 6, 4, 32, kF32, false, 1.0);
  Operand mq = RandomOperand(rng, 6, 4, 32, kF32, false, 1.0);
  Operand k = RandomOperand(rng, 20, 2, 32, kF32, false, 1.0);
  Operand v = RandomOperand(rng, 20, 2, 32, kF32, false, 1.0);
  const std::vector<int64_t> heads = {0, 1, 2, 3};
  const std::vector<double> ref = Reference(q, k, v, nullptr, nullptr, 6, 20, 0, true,
                                            1.0 / std::sqrt(32.0), heads);
  auto backend = CreateCpuBackend(CpuBackendOptions{});
  ASSERT_TRUE(backend.ok());
  auto out = Tensor::Empty(kF32, Shape{6, 4, 32});
  ASSERT_TRUE(out.ok());
  AttentionParams params;
  params.mem_q = &mq.t;
  ASSERT_TRUE((*backend)->Attention(q.t, k.t, v.t, Tensor(), Tensor(), params, &*out).ok());
  EXPECT_LE(RelativeError(*out, ref, 6, 4, 32, heads), 2e-5);
  const auto plain = cpu::attn::PlanAttention(6, 20, 0, 4, 2, 32, 32, 1, false);
  EXPECT_EQ(cpu::attn::PlanAttention(6, 20, 0, 4, 2, 32, 32, 1, true).workspace_floats,
            plain.workspace_floats);
  EXPECT_GT(cpu::attn::PlanAttention(6, 20, 8, 4, 2, 32, 32, 1, true).workspace_floats,
            cpu::attn::PlanAttention(6, 20, 8, 4, 2, 32, 32, 1, false).workspace_floats);
}

TEST(AttentionTest, ExplicitScale) {
  const uint64_t seed = TestSeed();
  SCOPED_TRACE("seed=" + std::to_string(seed));
  std::mt19937_64 rng(seed);
  Operand q = RandomOperand(rng, 4, 2, 32, kF32, false, 1.0);
  Operand k = RandomOperand(rng, 50, 1, 32, kF32, false, 1.0);
  Operand v = RandomOperand(rng, 50, 1, 32, kF32, false, 1.0);
  const std::vector<int64_t> heads = {0, 1};
  const std::vector<double> ref =
      Reference(q, k, v, nullptr, nullptr, 4, 50, 0, true, 0.7, heads);
  auto backend = CreateCpuBackend(CpuBackendOptions{});
  ASSERT_TRUE(backend.ok());
  auto out = Tensor::Empty(kF32, Shape{4, 2, 32});
  ASSERT_TRUE(out.ok());
  AttentionParams params;
  params.scale = 0.7f;
  ASSERT_TRUE((*backend)->Attention(q.t, k.t, v.t, Tensor(), Tensor(), params, &*out).ok());
  EXPECT_LE(RelativeError(*out, ref, 4, 2, 32, heads), 2e-5);
}

// 100k keys: the workspace does not grow with the key count (no [T, S] scores), and the result
// still matches the reference (checked on a few heads to keep the float64 reference quick).
TEST(AttentionTest, HundredThousandKeysBoundedWorkspace) {
  constexpr int64_t T = 4, S = 100000, n_head = 9, n_head_kv = 3, d = 64;
  const auto big = cpu::attn::PlanAttention(T, S, 0, n_head, n_head_kv, d, d, 2);
  const auto small = cpu::attn::PlanAttention(T, 4096, 0, n_head, n_head_kv, d, d, 2);
  EXPECT_EQ(big.workspace_floats, small.workspace_floats);
  EXPECT_EQ(big.workspace_ints, small.workspace_ints);
  const int64_t scores = T * S * n_head;  // what a materialised score matrix would need
  EXPECT_LT(2 * big.workspace_floats + big.partial_floats, scores / 20);
  EXPECT_GT(big.n_split, 1);  // few blocks: both threads stream part of the keys

  const uint64_t seed = TestSeed();
  SCOPED_TRACE("seed=" + std::to_string(seed));
  std::mt19937_64 rng(seed);
  Operand q = RandomOperand(rng, T, n_head, d, kF32, false, 2.0);
  Operand k = RandomOperand(rng, S, n_head_kv, d, kF16, false, 1.0);
  Operand v = RandomOperand(rng, S, n_head_kv, d, kF16, false, 1.0);
  const std::vector<int64_t> heads = {0, 4, 8};  // one per kv head
  const std::vector<double> ref = Reference(q, k, v, nullptr, nullptr, T, S, 0, true,
                                            1.0 / std::sqrt(double{d}), heads);
  ThreadPool pool(2);
  CpuBackendOptions opts;
  opts.pool = &pool;
  auto backend = CreateCpuBackend(opts);
  ASSERT_TRUE(backend.ok());
  auto out = Tensor::Empty(kF32, Shape{T, n_head, d});
  ASSERT_TRUE(out.ok());
  ASSERT_TRUE((*backend)->Attention(q.t, k.t, v.t, Tensor(), Tensor(), AttentionParams{}, &*out)
                  .ok());
  EXPECT_LE(RelativeError(*out, ref, T, n_head, d, heads), 5e-5);
}

TEST(AttentionTest, PlanSplitsDecodeAcrossThreads) {
  const auto one = cpu::attn::PlanAttention(1, 100000, 1024, 9, 3, 64, 64, 1);
  EXPECT_EQ(one.n_split, 1);
  EXPECT_EQ(one.partial_floats, 0);
  const auto two = cpu::attn::PlanAttention(1, 100000, 1024, 9, 3, 64, 64, 2);
  EXPECT_GE(two.n_items * two.n_split, 2 * 2);
  EXPECT_EQ(two.split_keys % cpu::attn::kKeyTile, 0);
  EXPECT_GE(two.split_keys * two.n_split, 100000 + 1024);
  // Prefill has enough blocks already.
  EXPECT_EQ(cpu::attn::PlanAttention(512, 4096, 0, 9, 3, 64, 64, 2).n_split, 1);
}

// ---- invalid arguments: InvalidArgument, and out is left untouched ----

class AttentionErrorTest : public ::testing::Test {
 protected:
  void SetUp() override {
    auto b = CreateCpuBackend(CpuBackendOptions{});
    ASSERT_TRUE(b.ok());
    backend_ = std::move(*b);
  }
  static Tensor Filled(DType dtype, const Shape& shape) {
    auto t = Tensor::Zeros(dtype, shape);
    EXPECT_TRUE(t.ok());
    return *t;
  }
  // Expects InvalidArgument and that out still holds its sentinel.
  void ExpectRejected(const Tensor& q, const Tensor& k, const Tensor& v, const Tensor& mk,
                      const Tensor& mv, const AttentionParams& p, Tensor* out) {
    if (out != nullptr && out->dtype() == DType::kF32 && out->is_contiguous()) {
      std::fill(out->data_as<float>(), out->data_as<float>() + out->numel(), 42.0f);
    }
    const Status st = backend_->Attention(q, k, v, mk, mv, p, out);
    EXPECT_EQ(st.code(), StatusCode::kInvalidArgument) << st;
    EXPECT_FALSE(st.message().empty());
    if (out != nullptr && out->dtype() == DType::kF32 && out->is_contiguous()) {
      for (int64_t i = 0; i < out->numel(); ++i) ASSERT_EQ(out->data_as<float>()[i], 42.0f);
    }
  }
  std::unique_ptr<Backend> backend_;
};

TEST_F(AttentionErrorTest, RejectsBadShapesAndDtypes) {
  const Tensor q = Filled(kF32, {4, 6, 8});
  const Tensor k = Filled(kF32, {10, 2, 8});
  const Tensor v = Filled(kF32, {10, 2, 8});
  Tensor out = Filled(kF32, {4, 6, 8});
  const AttentionParams causal;
  const Tensor none;
  // The valid call works.
  EXPECT_TRUE(backend_->Attention(q, k, v, none, none, causal, &out).ok());

  ExpectRejected(q, Filled(kF32, {10, 4, 8}), Filled(kF32, {10, 4, 8}), none, none, causal,
                 &out);  // 6 % 4 != 0
  ExpectRejected(q, Filled(kF32, {10, 2, 7}), v, none, none, causal, &out);   // d mismatch
  ExpectRejected(q, k, Filled(kF32, {9, 2, 8}), none, none, causal, &out);    // S mismatch
  ExpectRejected(q, k, Filled(kF32, {10, 3, 8}), none, none, causal, &out);   // heads mismatch
  ExpectRejected(q, Filled(kF32, {3, 2, 8}), Filled(kF32, {3, 2, 8}), none, none, causal,
                 &out);  // causal with T > S
  ExpectRejected(Filled(kF16, {4, 6, 8}), k, v, none, none, causal, &out);    // q must be f32
  ExpectRejected(q, Filled(DType::kBF16, {10, 2, 8}), v, none, none, causal, &out);
  ExpectRejected(q, k, v, Filled(kF32, {5, 2, 8}), none, causal, &out);       // mem_v missing
  ExpectRejected(q, k, v, Filled(kF32, {5, 2, 8}), Filled(kF32, {5, 2, 9}), causal, &out);
  ExpectRejected(q, k, v, Filled(kF32, {5, 1, 8}), Filled(kF32, {5, 1, 8}), causal, &out);
  ExpectRejected(q, k, v, none, none, causal, nullptr);
  Tensor wrong_out = Filled(kF32, {4, 6, 7});
  ExpectRejected(q, k, v, none, none, causal, &wrong_out);
  ExpectRejected(Filled(kF32, {4, 6}), k, v, none, none, causal, &out);       // not 3-d
  AttentionParams bad_scale;
  bad_scale.scale = -1.0f;
  ExpectRejected(q, k, v, none, none, bad_scale, &out);
  // mem_q must be an f32 [T, n_head, d] like q, packed, and must not overlap out.
  const Tensor mk = Filled(kF32, {5, 2, 8});
  const Tensor mv = Filled(kF32, {5, 2, 8});
  for (const Tensor& bad : {Filled(kF32, {4, 6, 7}), Filled(kF32, {3, 6, 8}),
                            Filled(kF16, {4, 6, 8}), Filled(kF32, {4, 6})}) {
    AttentionParams p;
    p.mem_q = &bad;
    ExpectRejected(q, k, v, mk, mv, p, &out);
  }
  AttentionParams aliased;
  aliased.mem_q = &out;
  ExpectRejected(q, k, v, mk, mv, aliased, &out);
  // A non-finite per-head memory logit bias.
  for (const float bad : {NAN, INFINITY, -INFINITY}) {
    const float bias[6] = {0.0f, 1.0f, 0.0f, 0.0f, bad, 0.0f};
    AttentionParams p;
    p.mem_bias = bias;
    ExpectRejected(q, k, v, mk, mv, p, &out);
  }
  // No keys at all.
  AttentionParams full;
  full.causal = false;
  ExpectRejected(q, Filled(kF32, {0, 2, 8}), Filled(kF32, {0, 2, 8}), none, none, full, &out);
}

TEST_F(AttentionErrorTest, Q8KeysAndValuesOnly) {
  const Tensor none;
  const AttentionParams causal;
  const Tensor q = Filled(kF32, {4, 6, 32});
  Tensor out = Filled(kF32, {4, 6, 32});
  const Tensor k8 = Filled(kQ8, {10, 2, 32});
  EXPECT_TRUE(backend_->Attention(q, k8, k8, k8, k8, causal, &out).ok());
  ExpectRejected(Filled(kQ8, {4, 6, 32}), k8, k8, none, none, causal, &out);  // q stays f32
  const Tensor k4 = Filled(DType::kQ4_0, {10, 2, 32});
  ExpectRejected(q, k4, k4, none, none, causal, &out);  // no other quantized K/V
  ExpectRejected(q, k8, k8, k4, k4, causal, &out);
  EXPECT_TRUE(backend_->SupportsOp({OpKind::kAttention, kQ8}));
  EXPECT_FALSE(backend_->SupportsOp({OpKind::kAttention, DType::kQ4_0}));

  // K/V rows just before `out` in one buffer are not taken for an overlap: a quantized innermost
  // dimension counts elements but strides per block, so its bytes end at the last block.
  auto raw = Tensor::Zeros(DType::kU8, {8192});
  ASSERT_TRUE(raw.ok());
  // k at 0 and v at 704 take 680 bytes each ([10, 2, 32] q8_0); out starts 24 bytes after v.
  auto k_in = Tensor::FromBuffer(raw->buffer(), 0, kQ8, Shape{10, 2, 32});
  auto v_in = Tensor::FromBuffer(raw->buffer(), 704, kQ8, Shape{10, 2, 32});
  auto out_in = Tensor::FromBuffer(raw->buffer(), 1408, kF32, Shape{4, 6, 32});
  ASSERT_TRUE(k_in.ok()) << k_in.status();
  ASSERT_TRUE(v_in.ok()) << v_in.status();
  ASSERT_TRUE(out_in.ok()) << out_in.status();
  const Status st = backend_->Attention(q, *k_in, *v_in, none, none, causal, &*out_in);
  EXPECT_TRUE(st.ok()) << st;
}

TEST_F(AttentionErrorTest, RejectsUnpackedRowsAndAliasing) {
  const Tensor q = Filled(kF32, {4, 6, 8});
  const Tensor v = Filled(kF32, {8, 2, 8});
  Tensor out = Filled(kF32, {4, 6, 8});
  // k whose head_dim is strided: [8, 2, 8] obtained by transposing dims 0 and 2.
  auto k_t = Filled(kF32, {8, 2, 8}).Transpose(0, 2);
  ASSERT_TRUE(k_t.ok());
  ExpectRejected(q, *k_t, v, Tensor(), Tensor(), AttentionParams{}, &out);
  // out overlapping q (same bytes).
  Tensor shared = Filled(kF32, {4, 6, 8});
  const Status st =
      backend_->Attention(shared, Filled(kF32, {8, 6, 8}), Filled(kF32, {8, 6, 8}), Tensor(),
                          Tensor(), AttentionParams{}, &shared);
  EXPECT_EQ(st.code(), StatusCode::kInvalidArgument) << st;
}

TEST_F(AttentionErrorTest, EmptyQueryIsANoOp) {
  Tensor out = Filled(kF32, {0, 2, 8});
  EXPECT_TRUE(backend_->Attention(Filled(kF32, {0, 2, 8}), Filled(kF32, {5, 1, 8}),
                                  Filled(kF32, {5, 1, 8}), Tensor(), Tensor(), AttentionParams{},
                                  &out)
                  .ok());
}

}  // namespace
}  // namespace muninn
