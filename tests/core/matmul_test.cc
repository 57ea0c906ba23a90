// MatMul on the CPU backend: every weight dtype x every kernel family this CPU runs x several
// shapes (odd M/N, strided x/out/w views), against a float64 reference computed from the
// dequantized weights, plus cross-family agreement and argument checks.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <map>
#include <random>
#include <string>
#include <vector>

#include "core/src/cpu/quant_gemm.h"
#include "muninn/core/cpu_backend.h"
#include "muninn/core/quant.h"
#include "tests/core/quant_test_util.h"

namespace muninn {
namespace {

using testing::RandomMatrix;
using testing::RowAsFloat;

std::vector<CpuIsa> AvailableIsas() {
  std::vector<CpuIsa> isas = {CpuIsa::kScalar};
  const CpuIsa best = GetCpuFeatures().BestIsa();
  if (best >= CpuIsa::kAvx2) isas.push_back(CpuIsa::kAvx2);
  if (best >= CpuIsa::kAvx512) isas.push_back(CpuIsa::kAvx512);
  return isas;
}

std::unique_ptr<Backend> MakeBackend(CpuIsa isa, ThreadPool* pool, bool exact = false) {
  CpuBackendOptions o;
  o.isa = isa;
  o.pool = pool;
  o.exact_matmul = exact;
  return CreateCpuBackend(o).value();
}

const std::vector<DType> kWeightDTypes = {DType::kF32,  DType::kF16,  DType::kBF16, DType::kQ4_0,
                                          DType::kQ4_1, DType::kQ5_0, DType::kQ5_1, DType::kQ8_0,
                                          DType::kQ4_K, DType::kQ5_K, DType::kQ6_K};

// Bounds on the normalised MSE (see Nmse). f32/f16/bf16 weights see only float accumulation
// error; the block formats also quantize the activations to 8 bits, an error variance of about
// (amax/127)^2/12 per element, i.e. ~3e-5 of x's variance for q8_0/q8_1 (amax over 32 elements)
// and ~6e-5 for q8_K (over 256). With only a few outputs per case the estimate is noisy
// (chi-square with few degrees of freedom), so the bounds leave ~6x headroom; a wrong kernel gives
// errors of order 1.
double Bound(DType w) {
  switch (w) {
    case DType::kF32:
    case DType::kF16:
    case DType::kBF16:
      return 1e-10;
    case DType::kQ4_K:
    case DType::kQ5_K:
    case DType::kQ6_K:
      return 4e-4;
    default:
      return 2.5e-4;
  }
}

struct Case {
  int64_t m, n, k;
  int64_t x_pad, out_pad, w_pad;  // extra elements per row: strided views when > 0
  bool x_1d;
};

// Squared error of out (f32 [M, N] or [N]) against float64 x · dequant(w)ᵀ, normalised by
// sum_{m,n,i} (x[m,i] w[n,i])^2, the expected squared result for independent inputs: unlike the
// squared results themselves it does not collapse when a few outputs happen to cancel.
double Nmse(const Tensor& x, const Tensor& w, const Tensor& out, int64_t m) {
  double err = 0, norm = 0;
  std::vector<std::vector<float>> wrows;
  for (int64_t j = 0; j < w.dim(0); ++j) wrows.push_back(RowAsFloat(w, j));
  for (int64_t i = 0; i < m; ++i) {
    const std::vector<float> xr = RowAsFloat(x, i);
    const std::vector<float> orow = RowAsFloat(out, i);
    for (int64_t j = 0; j < w.dim(0); ++j) {
      const std::vector<float>& wr = wrows[static_cast<size_t>(j)];
      double r = 0;
      for (size_t c = 0; c < wr.size(); ++c) {
        r += double(xr[c]) * wr[c];
        norm += (double(xr[c]) * wr[c]) * (double(xr[c]) * wr[c]);
      }
      err += (orow[static_cast<size_t>(j)] - r) * (orow[static_cast<size_t>(j)] - r);
    }
  }
  return err / norm;
}

TEST(MatMulTest, EveryDTypeEveryIsaMatchesFloat64Reference) {
  const std::vector<Case> cases = {
      {1, 7, 256, 0, 0, 0, true},     {1, 33, 512, 0, 0, 256, false},
      {3, 17, 256, 8, 3, 0, false},   {5, 64, 768, 0, 0, 0, false},
      {2, 1, 256, 1, 0, 0, false},    {7, 9, 1024, 64, 5, 256, false},
      {17, 520, 256, 8, 3, 0, false},  // f32/f16/bf16 take the sgemm paths (tiles of 512 rows)
      {6, 13, 96, 0, 2, 0, false},     // odd block count; the VNNI GEMM's row/column edges
      {9, 70, 288, 4, 0, 64, false},
  };
  ThreadPool pool(2);
  uint32_t seed = 42;
  for (CpuIsa isa : AvailableIsas()) {
    auto backend = MakeBackend(isa, &pool);
    for (DType wt : kWeightDTypes) {
      for (const Case& c : cases) {
        if (c.n > 256 && IsQuantized(wt)) continue;  // the big case is for the sgemm paths only
        if (c.k % GetDTypeInfo(wt).block_size != 0) continue;  // K-quants need K % 256 == 0
        SCOPED_TRACE(std::string(CpuIsaName(isa)) + " w=" + std::string(DTypeName(wt)) +
                     " M=" + std::to_string(c.m) + " N=" + std::to_string(c.n) +
                     " K=" + std::to_string(c.k) + " seed=" + std::to_string(seed));
        std::mt19937 rng(seed++);
        const Tensor w = RandomMatrix(wt, c.n, c.k, c.w_pad, rng);
        Tensor x = RandomMatrix(DType::kF32, c.m, c.k, c.x_pad, rng);
        Tensor out = Tensor::Zeros(DType::kF32, Shape{c.m, c.n + c.out_pad}).value();
        out = out.Slice(1, 0, c.n).value();
        if (c.x_1d) {
          x = x.Select(0).value();
          out = out.Select(0).value();
        }
        ASSERT_TRUE(backend->MatMul(x, w, &out).ok());
        const double nmse = Nmse(x, w, out, c.m);
        EXPECT_LE(nmse, Bound(wt));
        if (c.out_pad > 0) {  // the padding columns stay untouched
          const float* row0 = out.data_as<float>();
          for (int64_t j = c.n; j < c.n + c.out_pad; ++j) EXPECT_EQ(row0[j], 0.0f);
        }
      }
    }
  }
}

// The SIMD families compute the same integer block sums as the scalar reference; only the float
// accumulation order differs, so they agree far more tightly than either agrees with float64.
TEST(MatMulTest, SimdFamiliesAgreeWithScalar) {
  if (AvailableIsas().size() < 2) GTEST_SKIP() << "no SIMD kernels on this CPU";
  auto scalar = MakeBackend(CpuIsa::kScalar, nullptr);
  for (DType wt : kWeightDTypes) {
    std::mt19937 rng(7 + static_cast<uint32_t>(wt));
    const Tensor w = RandomMatrix(wt, 13, 2048, 0, rng);
    const Tensor x = RandomMatrix(DType::kF32, 1, 2048, 0, rng);
    Tensor want = Tensor::Zeros(DType::kF32, Shape{1, 13}).value();
    ASSERT_TRUE(scalar->MatMul(x, w, &want).ok());
    // Float summation error scales with sum |w_i x_i| (over both weights and the 8-bit
    // activations, which are the same in every family).
    std::vector<double> abs_sum(13, 0.0);
    const std::vector<float> xr = RowAsFloat(x, 0);
    for (int j = 0; j < 13; ++j) {
      const std::vector<float> wr = RowAsFloat(w, j);
      for (size_t c = 0; c < wr.size(); ++c) abs_sum[j] += std::fabs(double(wr[c]) * xr[c]);
    }
    for (CpuIsa isa : AvailableIsas()) {
      auto b = MakeBackend(isa, nullptr);
      Tensor got = Tensor::Zeros(DType::kF32, Shape{1, 13}).value();
      ASSERT_TRUE(b->MatMul(x, w, &got).ok());
      for (int j = 0; j < 13; ++j) {
        const float a = got.data_as<float>()[j], e = want.data_as<float>()[j];
        EXPECT_NEAR(a, e, 2e-6 * abs_sum[static_cast<size_t>(j)])
            << DTypeName(wt) << " " << CpuIsaName(isa) << " row " << j;
      }
    }
  }
}

// The VNNI GEMM (batched q4_0/q4_1/q5_0/q5_1/q8_0) and the grouped q4 decode kernel compute the same integer block sums on the
// same q8_0 activations (and the same f16 s = d_x * sum(q_x) as q8_1) as the dot kernels; results
// differ only by float accumulation order.
TEST(MatMulTest, Int8GemmAgreesWithDotKernels) {
  if (GetCpuFeatures().BestIsa() < CpuIsa::kAvx512 || !GetCpuFeatures().avx512vnni) {
    GTEST_SKIP() << "no AVX-512 VNNI on this CPU";
  }
  ThreadPool pool(2);
  CpuBackendOptions o;
  o.isa = CpuIsa::kAvx512;
  o.pool = &pool;
  o.int8_gemm = false;
  auto dots = CreateCpuBackend(o).value();
  o.int8_gemm = true;
  auto gemm = CreateCpuBackend(o).value();
  const std::vector<Case> cases = {
      {4, 4, 32, 0, 0, 0, false},   {5, 17, 96, 3, 1, 0, false},   {8, 64, 576, 0, 0, 32, false},
      {13, 5, 1536, 8, 2, 0, false}, {33, 301, 256, 0, 0, 0, false},
      // M < 4: q4_0/q4_1 take the grouped decode kernel (partial groups of 1..3 blocks)
      {1, 33, 576, 0, 0, 0, false},  {2, 7, 96, 5, 3, 0, false},    {3, 5, 32, 0, 0, 64, false},
      {1, 9, 128, 0, 0, 0, false},
  };
  for (DType wt : {DType::kQ4_0, DType::kQ4_1, DType::kQ5_0, DType::kQ5_1, DType::kQ8_0}) {
    const double tol = 2e-6;
    for (const Case& c : cases) {
      SCOPED_TRACE(std::string(DTypeName(wt)) + " M=" + std::to_string(c.m) +
                   " N=" + std::to_string(c.n) + " K=" + std::to_string(c.k));
      std::mt19937 rng(11 + static_cast<uint32_t>(c.k + c.n));
      const Tensor w = RandomMatrix(wt, c.n, c.k, c.w_pad, rng);
      const Tensor x = RandomMatrix(DType::kF32, c.m, c.k, c.x_pad, rng);
      Tensor want = Tensor::Zeros(DType::kF32, Shape{c.m, c.n + c.out_pad}).value();
      Tensor got = Tensor::Zeros(DType::kF32, Shape{c.m, c.n + c.out_pad}).value();
      want = want.Slice(1, 0, c.n).value();
      got = got.Slice(1, 0, c.n).value();
      ASSERT_TRUE(dots->MatMul(x, w, &want).ok());
      ASSERT_TRUE(gemm->MatMul(x, w, &got).ok());
      std::vector<std::vector<float>> wrows;
      for (int64_t j = 0; j < c.n; ++j) wrows.push_back(RowAsFloat(w, j));
      for (int64_t i = 0; i < c.m; ++i) {
        const std::vector<float> xr = RowAsFloat(x, i);
        const std::vector<float> g = RowAsFloat(got, i), e = RowAsFloat(want, i);
        for (int64_t j = 0; j < c.n; ++j) {
          double abs_sum = 0;
          for (int64_t q = 0; q < c.k; ++q) {
            abs_sum += std::fabs(double(wrows[static_cast<size_t>(j)][static_cast<size_t>(q)]) *
                                 xr[static_cast<size_t>(q)]);
          }
          ASSERT_NEAR(g[static_cast<size_t>(j)], e[static_cast<size_t>(j)], tol * abs_sum)
              << "row " << i << " col " << j;
        }
      }
      if (c.out_pad > 0) {  // the padding columns stay untouched
        const float* row0 = got.data_as<float>();
        for (int64_t j = c.n; j < c.n + c.out_pad; ++j) EXPECT_EQ(row0[j], 0.0f);
      }
    }
  }
}

// The vectorized activation quantizer the AVX-512 dot path uses is bit-identical to QuantizeRow,
// ties (x / d exactly k + 0.5) and all-zero blocks included.
TEST(MatMulTest, Avx512ActivationQuantizerIsBitExact) {
  if (GetCpuFeatures().BestIsa() < CpuIsa::kAvx512) GTEST_SKIP() << "no AVX-512 on this CPU";
  std::mt19937 rng(3);
  std::normal_distribution<float> normal;
  const int64_t k = 32 * 9;
  std::vector<float> x(static_cast<size_t>(k));
  for (auto& v : x) v = normal(rng);
  for (int j = 0; j < 32; ++j) x[static_cast<size_t>(32 + j)] = 0.0f;  // a zero block
  // A block with amax 127 (d = 1) and halves: 2.5 -> 3, -2.5 -> -3, 0.5 -> 1.
  x[64] = 127.0f;
  x[65] = 2.5f;
  x[66] = -2.5f;
  x[67] = 0.5f;
  x[68] = -0.5f;
  for (DType act : {DType::kQ8_0, DType::kQ8_1}) {
    const size_t bytes = *RowBytes(act, k);
    std::vector<char> want(bytes), got(bytes);
    ASSERT_TRUE(QuantizeRow(act, x.data(), want.data(), k).ok());
    cpu::Avx512QuantizeQ8Row(act, x.data(), got.data(), k);
    EXPECT_EQ(std::memcmp(want.data(), got.data(), bytes), 0) << DTypeName(act);
  }
}

TEST(MatMulTest, EmptyAndZeroK) {
  auto b = MakeBackend(GetCpuFeatures().BestIsa(), nullptr);
  Tensor x = Tensor::Zeros(DType::kF32, Shape{2, 0}).value();
  Tensor w = Tensor::Zeros(DType::kF32, Shape{3, 0}).value();
  Tensor out = Tensor::FromVector(Shape{2, 3}, {1, 2, 3, 4, 5, 6}).value();
  ASSERT_TRUE(b->MatMul(x, w, &out).ok());
  for (int i = 0; i < 6; ++i) EXPECT_EQ(out.data_as<float>()[i], 0.0f);
  Tensor x0 = Tensor::Zeros(DType::kF32, Shape{0, 32}).value();
  Tensor w0 = Tensor::Zeros(DType::kQ4_0, Shape{3, 32}).value();
  Tensor o0 = Tensor::Zeros(DType::kF32, Shape{0, 3}).value();
  EXPECT_TRUE(b->MatMul(x0, w0, &o0).ok());
}

TEST(MatMulTest, RejectsBadArguments) {
  auto b = MakeBackend(GetCpuFeatures().BestIsa(), nullptr);
  std::mt19937 rng(3);
  const Tensor x = RandomMatrix(DType::kF32, 2, 64, 0, rng);
  const Tensor w = RandomMatrix(DType::kQ4_0, 4, 64, 0, rng);
  Tensor out = Tensor::Zeros(DType::kF32, Shape{2, 4}).value();
  const std::vector<float> before(out.data_as<float>(), out.data_as<float>() + 8);
  auto expect_invalid = [&](const Tensor& xx, const Tensor& ww, Tensor* oo, const char* what) {
    const Status s = b->MatMul(xx, ww, oo);
    EXPECT_EQ(s.code(), StatusCode::kInvalidArgument) << what << ": " << s;
  };
  // K mismatch.
  expect_invalid(RandomMatrix(DType::kF32, 2, 32, 0, rng), w, &out, "K mismatch");
  // Wrong out shape.
  Tensor out_bad = Tensor::Zeros(DType::kF32, Shape{2, 5}).value();
  expect_invalid(x, w, &out_bad, "out shape");
  // x not f32.
  expect_invalid(RandomMatrix(DType::kF16, 2, 64, 0, rng), w, &out, "x dtype");
  // An activation-only format as the weight.
  expect_invalid(x, RandomMatrix(DType::kQ8_K, 4, 256, 0, rng), &out, "q8_K weight");
  // out overlapping x.
  Tensor xo = Tensor::Zeros(DType::kF32, Shape{2, 64}).value();
  Tensor alias = xo.Slice(1, 0, 4).value();
  expect_invalid(xo, w, &alias, "aliasing");
  // Innermost dim of x not packed (a transposed view).
  Tensor xt = RandomMatrix(DType::kF32, 64, 2, 0, rng).Transpose(0, 1).value();
  expect_invalid(xt, w, &out, "strided innermost x");
  // Misaligned x rows.
  auto buf = AllocateHostBuffer(2 * 64 * 4 + 4).value();
  Tensor xm = Tensor::FromBuffer(buf, 2, DType::kF32, Shape{2, 64}).value();
  expect_invalid(xm, w, &out, "misaligned x");
  EXPECT_EQ(b->MatMul(x, w, nullptr).code(), StatusCode::kInvalidArgument);
  for (int i = 0; i < 8; ++i) EXPECT_EQ(out.data_as<float>()[i], before[static_cast<size_t>(i)]);
}

// Exact mode never quantizes activations: against float64 x · dequant(w)ᵀ only float32 rounding
// remains. Every output must be within 2e-6 · sum_i |x_i w_i| (a few float32 ulps of accumulated
// rounding for K <= 1024; quantized activations miss by ~1e-2 of that sum), and the normalised
// MSE must be at the f32-weight bound, six orders below the quantized-activation ones. Both the
// dot path (M < 16, any strides) and the tile + sgemm path (M >= 16) are covered, on 1 and 2
// threads; the dot path must give bit-identical results on both, and there each row of a batch
// must equal the same row multiplied alone.
TEST(MatMulTest, ExactModeMatchesFloat64WithinFloat32Rounding) {
  const std::vector<Case> cases = {
      {1, 7, 256, 0, 0, 0, true},   {1, 33, 512, 0, 0, 256, false}, {3, 17, 256, 8, 3, 0, false},
      {5, 70, 768, 0, 0, 0, false}, {2, 1, 256, 1, 0, 0, false},    {7, 9, 1024, 64, 5, 256, false},
      {17, 45, 256, 8, 3, 0, false},  // the dequantized-tile sgemm path
  };
  ThreadPool pool(2);
  uint32_t seed = 1234;
  for (CpuIsa isa : AvailableIsas()) {
    auto serial = MakeBackend(isa, nullptr, /*exact=*/true);
    auto threaded = MakeBackend(isa, &pool, /*exact=*/true);
    auto quantized = MakeBackend(isa, nullptr);
    for (DType wt : kWeightDTypes) {
      for (const Case& c : cases) {
        SCOPED_TRACE(std::string(CpuIsaName(isa)) + " w=" + std::string(DTypeName(wt)) +
                     " M=" + std::to_string(c.m) + " N=" + std::to_string(c.n) +
                     " K=" + std::to_string(c.k) + " seed=" + std::to_string(seed));
        std::mt19937 rng(seed++);
        const Tensor w = RandomMatrix(wt, c.n, c.k, c.w_pad, rng);
        Tensor x = RandomMatrix(DType::kF32, c.m, c.k, c.x_pad, rng);
        if (c.x_1d) x = x.Select(0).value();
        const auto make_out = [&] {
          Tensor o = Tensor::Zeros(DType::kF32, Shape{c.m, c.n + c.out_pad}).value();
          o = o.Slice(1, 0, c.n).value();
          return c.x_1d ? o.Select(0).value() : o;
        };
        Tensor out1 = make_out(), out2 = make_out(), outq = make_out();
        ASSERT_TRUE(serial->MatMul(x, w, &out1).ok());
        ASSERT_TRUE(threaded->MatMul(x, w, &out2).ok());
        ASSERT_TRUE(quantized->MatMul(x, w, &outq).ok());
        EXPECT_LE(Nmse(x, w, out1, c.m), 1e-10);
        EXPECT_LE(Nmse(x, w, out2, c.m), 1e-10);
        // f32 weights with M > 1 go to sgemm (not the per-row dot kernels) in either mode.
        const bool dot_path = c.m < 16 && (wt != DType::kF32 || c.m == 1);
        double worst_exact = 0, worst_quant = 0;  // in units of sum |x w|
        for (int64_t i = 0; i < c.m; ++i) {
          const std::vector<float> xr = RowAsFloat(x, i);
          const std::vector<float> o1 = RowAsFloat(out1, i), o2 = RowAsFloat(out2, i);
          const std::vector<float> oq = RowAsFloat(outq, i);
          for (int64_t j = 0; j < c.n; ++j) {
            const std::vector<float> wr = RowAsFloat(w, j);
            double ref = 0, abs_sum = 0;
            for (size_t e = 0; e < wr.size(); ++e) {
              ref += double(xr[e]) * wr[e];
              abs_sum += std::fabs(double(xr[e]) * wr[e]);
            }
            const size_t jj = static_cast<size_t>(j);
            EXPECT_NEAR(o1[jj], ref, 2e-6 * abs_sum) << "row " << i << " col " << j;
            EXPECT_NEAR(o2[jj], ref, 2e-6 * abs_sum) << "row " << i << " col " << j;
            if (dot_path) {
              EXPECT_EQ(o1[jj], o2[jj]) << "row " << i << " col " << j;
            }
            worst_exact = std::max(worst_exact, std::fabs(o1[jj] - ref) / abs_sum);
            worst_quant = std::max(worst_quant, std::fabs(oq[jj] - ref) / abs_sum);
          }
        }
        // The default path quantizes activations of block-quantized weights; exact mode must be
        // far closer there (and is the same path for f32/f16/bf16).
        if (IsQuantized(wt)) {
          EXPECT_LT(worst_exact * 50, worst_quant);
        }
        if (dot_path && c.m > 1) {
          for (int64_t i = 0; i < c.m; ++i) {
            const Tensor xi = x.Select(i).value();
            Tensor oi = Tensor::Zeros(DType::kF32, Shape{c.n}).value();
            ASSERT_TRUE(threaded->MatMul(xi, w, &oi).ok());
            const std::vector<float> o1 = RowAsFloat(out1, i);
            for (int64_t j = 0; j < c.n; ++j) {
              ASSERT_EQ(oi.data_as<float>()[j], o1[static_cast<size_t>(j)]) << i << "," << j;
            }
          }
        }
      }
    }
  }
}

// MatMulShared (Q/K/V, gate/up) gives what separate MatMul calls give, bit for bit, on every
// kernel family: the fused decode dispatch (same dtype, few rows: one activation conversion, the
// weights' rows split across threads together, with chunk borders inside and across weights), and
// the per-weight loop it falls back to (mixed dtypes, batches, exact mode). Outputs are strided
// views whose padding must stay untouched.
TEST(MatMulTest, SharedInputMatchesSeparateCallsBitForBit) {
  ThreadPool pool(2);
  uint32_t seed = 900;
  struct Run {
    std::vector<DType> dtypes;
    std::vector<int64_t> ns;
  };
  std::vector<Run> runs;
  for (DType wt : kWeightDTypes) runs.push_back({{wt, wt, wt}, {37, 13, 13}});
  runs.push_back({{DType::kQ4_1, DType::kQ4_1}, {96, 0}});       // an empty weight in a fused run
  runs.push_back({{DType::kQ4_0, DType::kQ8_0, DType::kF16}, {9, 21, 5}});  // mixed: the loop
  runs.push_back({{DType::kQ6_K, DType::kQ4_K}, {11, 30}});
  for (bool exact : {false, true}) {
    for (ThreadPool* tp : {static_cast<ThreadPool*>(nullptr), &pool}) {
      for (CpuIsa isa : AvailableIsas()) {
        auto backend = MakeBackend(isa, tp, exact);
        for (const Run& run : runs) {
          for (int64_t m : {1, 3, 20}) {
            const int64_t k = 256;
            SCOPED_TRACE(std::string(CpuIsaName(isa)) + " " + std::string(DTypeName(run.dtypes[0])) +
                         " M=" + std::to_string(m) + (exact ? " exact" : "") +
                         (tp ? " 2 threads" : " inline") + " seed=" + std::to_string(seed));
            std::mt19937 rng(seed++);
            const Tensor x = RandomMatrix(DType::kF32, m, k, 4, rng);
            std::vector<Tensor> ws, shared, separate;
            for (size_t i = 0; i < run.dtypes.size(); ++i) {
              ws.push_back(RandomMatrix(run.dtypes[i], run.ns[i], k, 0, rng));
              for (std::vector<Tensor>* v : {&shared, &separate}) {
                Tensor o = Tensor::Zeros(DType::kF32, Shape{m, run.ns[i] + 3}).value();
                v->push_back(o.Slice(1, 0, run.ns[i]).value());
              }
            }
            std::vector<const Tensor*> wp;
            std::vector<Tensor*> op;
            for (size_t i = 0; i < ws.size(); ++i) {
              wp.push_back(&ws[i]);
              op.push_back(&shared[i]);
              ASSERT_TRUE(backend->MatMul(x, ws[i], &separate[i]).ok());
            }
            ASSERT_TRUE(backend->MatMulShared(x, wp, op).ok());
            for (size_t i = 0; i < ws.size(); ++i) {
              for (int64_t r = 0; r < m; ++r) {
                const float* a = reinterpret_cast<const float*>(
                    static_cast<const char*>(shared[i].data()) + r * shared[i].stride(0));
                const float* b = reinterpret_cast<const float*>(
                    static_cast<const char*>(separate[i].data()) + r * separate[i].stride(0));
                for (int64_t j = 0; j < run.ns[i]; ++j) {
                  ASSERT_EQ(a[j], b[j]) << "weight " << i << " row " << r << " col " << j;
                }
                for (int64_t j = run.ns[i]; j < run.ns[i] + 3; ++j) ASSERT_EQ(a[j], 0.0f);
              }
            }
          }
        }
      }
    }
  }
}

TEST(MatMulTest, SharedInputRejectsBadArgumentsBeforeWritingAnything) {
  auto b = MakeBackend(GetCpuFeatures().BestIsa(), nullptr);
  std::mt19937 rng(5);
  const Tensor x = RandomMatrix(DType::kF32, 1, 64, 0, rng);
  const Tensor w0 = RandomMatrix(DType::kQ4_1, 8, 64, 0, rng);
  const Tensor w1 = RandomMatrix(DType::kQ4_1, 4, 64, 0, rng);
  Tensor o0 = Tensor::FromVector(Shape{1, 8}, std::vector<float>(8, 7.0f)).value();
  Tensor o1 = Tensor::FromVector(Shape{1, 4}, std::vector<float>(4, 7.0f)).value();
  auto untouched = [&] {
    for (const Tensor* o : {&o0, &o1}) {
      for (int64_t j = 0; j < o->numel(); ++j) {
        if (o->data_as<float>()[j] != 7.0f) return false;
      }
    }
    return true;
  };
  auto expect_invalid = [&](std::vector<const Tensor*> ws, std::vector<Tensor*> outs,
                            const char* what, const Tensor& xx) {
    const Status s = b->MatMulShared(xx, ws, outs);
    EXPECT_EQ(s.code(), StatusCode::kInvalidArgument) << what << ": " << s;
    EXPECT_TRUE(untouched()) << what;
  };
  expect_invalid({}, {}, "no weights", x);
  expect_invalid({&w0, &w1}, {&o0}, "count mismatch", x);
  expect_invalid({&w0, nullptr}, {&o0, &o1}, "null weight", x);
  Tensor o1_wide = Tensor::Zeros(DType::kF32, Shape{1, 5}).value();
  expect_invalid({&w0, &w1}, {&o0, &o1_wide}, "second out shape", x);
  const Tensor w_k32 = RandomMatrix(DType::kQ4_1, 4, 32, 0, rng);
  expect_invalid({&w0, &w_k32}, {&o0, &o1}, "second weight's K", x);
  const Tensor alias = o0.Slice(1, 0, 4).value();
  Tensor alias_out = alias;
  expect_invalid({&w0, &w1}, {&o0, &alias_out}, "outputs overlap", x);
  Tensor xo = Tensor::FromVector(Shape{1, 64}, std::vector<float>(64, 1.0f)).value();
  Tensor x_alias = xo.Slice(1, 0, 4).value();
  expect_invalid({&w0, &w1}, {&o0, &x_alias}, "out overlaps x", xo);
  // An earlier pair's output over a later pair's weight (f32 weights, so they can share a buffer).
  Tensor shared = Tensor::Zeros(DType::kF32, Shape{2, 64}).value();
  Tensor w_f32 = shared.Slice(0, 0, 1).value();       // [1, 64]: the second pair's weight
  Tensor out_over_w = shared.Select(0).value().Slice(0, 0, 8).value().Reshape(Shape{1, 8}).value();
  const Tensor w8_f32 = RandomMatrix(DType::kF32, 8, 64, 0, rng);
  Tensor o_one = Tensor::Zeros(DType::kF32, Shape{1, 1}).value();
  const Status s_over = b->MatMulShared(x, std::vector<const Tensor*>{&w8_f32, &w_f32},
                                        std::vector<Tensor*>{&out_over_w, &o_one});
  EXPECT_EQ(s_over.code(), StatusCode::kInvalidArgument) << s_over;
  EXPECT_NE(s_over.ToString().find("overlaps this weight"), std::string::npos) << s_over;
  Tensor misaligned_x =
      Tensor::FromBuffer(AllocateHostBuffer(64 * 4 + 4).value(), 2, DType::kF32, Shape{1, 64})
          .value();
  expect_invalid({&w0, &w1}, {&o0, &o1}, "misaligned x (a CPU-specific check)", misaligned_x);
}

}  // namespace
}  // namespace muninn
