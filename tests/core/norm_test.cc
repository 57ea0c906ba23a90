// RmsNorm and LayerNorm on every CPU kernel family against float64 references.
#include <gtest/gtest.h>

#include <cmath>
#include <vector>

#include "tests/core/eltwise_test_util.h"

namespace muninn {
namespace {

using testing_eltwise::AllClose;
using testing_eltwise::Describe;
using testing_eltwise::FreshSeed;
using testing_eltwise::Layout;
using testing_eltwise::MakeBackend;
using testing_eltwise::MakeView;
using testing_eltwise::RandomValues;
using testing_eltwise::SupportedIsas;
using testing_eltwise::Values;

std::vector<double> RmsNormRef(const std::vector<float>& x, const std::vector<float>* w, int64_t d,
                               double eps) {
  std::vector<double> y(x.size());
  for (size_t r = 0; r < x.size() / static_cast<size_t>(d); ++r) {
    const float* row = x.data() + r * static_cast<size_t>(d);
    double ss = 0.0;
    for (int64_t i = 0; i < d; ++i) ss += static_cast<double>(row[i]) * row[i];
    const double inv = 1.0 / std::sqrt(ss / static_cast<double>(d) + eps);
    for (int64_t i = 0; i < d; ++i) {
      y[r * static_cast<size_t>(d) + static_cast<size_t>(i)] =
          row[i] * inv * (w ? (*w)[static_cast<size_t>(i)] : 1.0);
    }
  }
  return y;
}

std::vector<double> LayerNormRef(const std::vector<float>& x, const std::vector<float>* w,
                                 const std::vector<float>* b, int64_t d, double eps) {
  std::vector<double> y(x.size());
  for (size_t r = 0; r < x.size() / static_cast<size_t>(d); ++r) {
    const float* row = x.data() + r * static_cast<size_t>(d);
    double mean = 0.0;
    for (int64_t i = 0; i < d; ++i) mean += row[i];
    mean /= static_cast<double>(d);
    double var = 0.0;
    for (int64_t i = 0; i < d; ++i) var += (row[i] - mean) * (row[i] - mean);
    var /= static_cast<double>(d);
    const double inv = 1.0 / std::sqrt(var + eps);
    for (int64_t i = 0; i < d; ++i) {
      const size_t k = static_cast<size_t>(i);
      y[r * static_cast<size_t>(d) + k] =
          (row[i] - mean) * inv * (w ? (*w)[k] : 1.0) + (b ? (*b)[k] : 0.0);
    }
  }
  return y;
}

struct Case {
  Shape shape;
  Layout layout;
};

std::vector<Case> NormCases() {
  std::vector<Case> cases;
  for (int64_t d : {1, 3, 17, 64, 576, 1000}) {
    cases.push_back({{5, d}, Layout::kContiguous});
    cases.push_back({{3, d}, Layout::kPaddedRows});
    cases.push_back({{2, 3, d}, Layout::kTransposed});
  }
  cases.push_back({{7}, Layout::kContiguous});  // a single 1-d row
  return cases;
}

TEST(NormTest, RmsNormMatchesFloat64Reference) {
  const uint32_t seed = FreshSeed();
  std::mt19937 rng(seed);
  for (CpuIsa isa : SupportedIsas()) {
    auto be = MakeBackend(isa);
    for (const Case& c : NormCases()) {
      SCOPED_TRACE(Describe(isa, c.shape, c.layout, seed));
      const int64_t d = c.shape[c.shape.ndim() - 1];
      const auto xv = RandomValues(c.shape.numel(), rng, -3.0f, 3.0f);
      const auto wv = RandomValues(d, rng, -2.0f, 2.0f);
      Tensor x = MakeView(c.shape, c.layout, xv);
      Tensor w = *Tensor::FromVector({d}, wv);
      Tensor out = MakeView(c.shape, c.layout, std::vector<float>(xv.size(), 0.0f));
      ASSERT_TRUE(be->RmsNorm(x, w, 1e-6f, &out).ok());
      EXPECT_TRUE(AllClose(Values(out), RmsNormRef(xv, &wv, d, 1e-6), 1e-6, 2e-6));
      // No weight, in place.
      ASSERT_TRUE(be->RmsNorm(x, Tensor(), 1e-5f, &x).ok());
      EXPECT_TRUE(AllClose(Values(x), RmsNormRef(xv, nullptr, d, 1e-5), 1e-6, 2e-6));
    }
  }
}

TEST(NormTest, LayerNormMatchesFloat64Reference) {
  const uint32_t seed = FreshSeed();
  std::mt19937 rng(seed);
  for (CpuIsa isa : SupportedIsas()) {
    auto be = MakeBackend(isa);
    for (const Case& c : NormCases()) {
      SCOPED_TRACE(Describe(isa, c.shape, c.layout, seed));
      const int64_t d = c.shape[c.shape.ndim() - 1];
      const auto xv = RandomValues(c.shape.numel(), rng, -3.0f, 5.0f);
      const auto wv = RandomValues(d, rng, -2.0f, 2.0f);
      const auto bv = RandomValues(d, rng, -1.0f, 1.0f);
      Tensor x = MakeView(c.shape, c.layout, xv);
      Tensor w = *Tensor::FromVector({d}, wv);
      Tensor b = *Tensor::FromVector({d}, bv);
      Tensor out = MakeView(c.shape, c.layout, std::vector<float>(xv.size(), 0.0f));
      ASSERT_TRUE(be->LayerNorm(x, w, b, 1e-5f, &out).ok());
      EXPECT_TRUE(AllClose(Values(out), LayerNormRef(xv, &wv, &bv, d, 1e-5), 2e-6, 4e-6));
      ASSERT_TRUE(be->LayerNorm(x, w, Tensor(), 1e-5f, &out).ok());
      EXPECT_TRUE(AllClose(Values(out), LayerNormRef(xv, &wv, nullptr, d, 1e-5), 2e-6, 4e-6));
      ASSERT_TRUE(be->LayerNorm(x, Tensor(), Tensor(), 1e-5f, &x).ok());  // in place
      EXPECT_TRUE(AllClose(Values(x), LayerNormRef(xv, nullptr, nullptr, d, 1e-5), 2e-6, 4e-6));
    }
  }
}

// A large common offset: a one-pass E[x²] - E[x]² variance would lose every digit here, and a
// plain float mean would cost ~5e-5 absolute.
TEST(NormTest, LayerNormIsStableUnderLargeMean) {
  const uint32_t seed = FreshSeed();
  std::mt19937 rng(seed);
  for (CpuIsa isa : SupportedIsas()) {
    SCOPED_TRACE(Describe(isa, {4, 1000}, Layout::kContiguous, seed));
    auto be = MakeBackend(isa);
    const auto xv = RandomValues(4000, rng, 999.0f, 1001.0f);
    Tensor x = *Tensor::FromVector({4, 1000}, xv);
    Tensor out = *Tensor::Empty(DType::kF32, {4, 1000});
    ASSERT_TRUE(be->LayerNorm(x, Tensor(), Tensor(), 1e-6f, &out).ok());
    // Same bound as for centred data: rounding the mean to float (an error of up to 3e-5 at
    // 1000, i.e. 5e-5 of the unit-scale output) must be compensated, not passed on.
    EXPECT_TRUE(AllClose(Values(out), LayerNormRef(xv, nullptr, nullptr, 1000, 1e-6), 4e-6, 4e-6));
  }
}

// Rows split across a pool: results must not depend on the split.
TEST(NormTest, ThreadedMatchesReference) {
  const uint32_t seed = FreshSeed();
  std::mt19937 rng(seed);
  ThreadPool pool(2);
  for (CpuIsa isa : SupportedIsas()) {
    SCOPED_TRACE(Describe(isa, {200, 576}, Layout::kPaddedRows, seed));
    auto be = MakeBackend(isa, &pool);
    const auto xv = RandomValues(200 * 576, rng, -3.0f, 3.0f);
    const auto wv = RandomValues(576, rng, -2.0f, 2.0f);
    Tensor x = MakeView({200, 576}, Layout::kPaddedRows, xv);
    Tensor w = *Tensor::FromVector({576}, wv);
    Tensor out = *Tensor::Empty(DType::kF32, {200, 576});
    ASSERT_TRUE(be->RmsNorm(x, w, 1e-6f, &out).ok());
    EXPECT_TRUE(AllClose(Values(out), RmsNormRef(xv, &wv, 576, 1e-6), 1e-6, 2e-6));
    ASSERT_TRUE(be->LayerNorm(x, w, Tensor(), 1e-6f, &out).ok());
    EXPECT_TRUE(AllClose(Values(out), LayerNormRef(xv, &wv, nullptr, 576, 1e-6), 2e-6, 4e-6));
  }
}

TEST(NormTest, RejectsInvalidArguments) {
  for (CpuIsa isa : SupportedIsas()) {
    SCOPED_TRACE(CpuIsaName(isa));
    auto be = MakeBackend(isa);
    Tensor x = *Tensor::Zeros(DType::kF32, {4, 8});
    Tensor out = *Tensor::Zeros(DType::kF32, {4, 8});
    Tensor w = *Tensor::Zeros(DType::kF32, {8});
    const auto code = [](const Status& s) { return s.code(); };
    constexpr StatusCode kBad = StatusCode::kInvalidArgument;
    // Wrong dtypes.
    Tensor xh = *Tensor::Zeros(DType::kF16, {4, 8});
    EXPECT_EQ(code(be->RmsNorm(xh, w, 1e-6f, &out)), kBad);
    Tensor wh = *Tensor::Zeros(DType::kF16, {8});
    EXPECT_EQ(code(be->RmsNorm(x, wh, 1e-6f, &out)), kBad);
    // Shapes.
    Tensor w7 = *Tensor::Zeros(DType::kF32, {7});
    EXPECT_EQ(code(be->RmsNorm(x, w7, 1e-6f, &out)), kBad);
    EXPECT_EQ(code(be->LayerNorm(x, w, w7, 1e-6f, &out)), kBad);
    Tensor out2 = *Tensor::Zeros(DType::kF32, {8, 4});
    EXPECT_EQ(code(be->RmsNorm(x, w, 1e-6f, &out2)), kBad);
    EXPECT_EQ(code(be->LayerNorm(x, w, w, 1e-6f, nullptr)), kBad);
    // Innermost dimension not packed.
    Tensor xt = *Tensor::Zeros(DType::kF32, {8, 4});
    Tensor xt_view = *xt.Transpose(0, 1);
    EXPECT_EQ(code(be->RmsNorm(xt_view, w, 1e-6f, &out)), kBad);
    // eps.
    EXPECT_EQ(code(be->RmsNorm(x, w, -1.0f, &out)), kBad);
    EXPECT_EQ(code(be->LayerNorm(x, w, w, NAN, &out)), kBad);
    // Output overlapping the input without being the same view.
    Tensor big = *Tensor::Zeros(DType::kF32, {5, 8});
    Tensor a = *big.Slice(0, 0, 4);
    Tensor shifted = *big.Slice(0, 1, 5);
    EXPECT_EQ(code(be->RmsNorm(a, w, 1e-6f, &shifted)), kBad);
    // Output overlapping the weight.
    Tensor wrow = *big.Select(0);
    Tensor rest = *big.Slice(0, 0, 4);
    EXPECT_EQ(code(be->RmsNorm(x, wrow, 1e-6f, &rest)), kBad);
  }
}

}  // namespace
}  // namespace muninn
