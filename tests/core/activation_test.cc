// Softmax, SiLU, GELU (erf and tanh) and SwiGLU on every CPU kernel family against float64
// references.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <numbers>
#include <string>
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

double SiluRef(double x) { return x / (1.0 + std::exp(-x)); }
double GeluErfRef(double x) { return 0.5 * x * std::erfc(-x / std::sqrt(2.0)); }
double GeluTanhRef(double x) {
  // x/2 (1 + tanh u) written as x / (1 + exp(-2u)): the same value without the cancellation
  // that would make the reference itself inaccurate in the negative tail.
  const double u = std::sqrt(2.0 / std::numbers::pi) * (x + 0.044715 * x * x * x);
  return x / (1.0 + std::exp(-2.0 * u));
}

std::vector<double> SoftmaxRef(const std::vector<float>& x, int64_t d, double scale) {
  std::vector<double> y(x.size());
  for (size_t r = 0; r < x.size() / static_cast<size_t>(d); ++r) {
    const size_t o = r * static_cast<size_t>(d);
    double m = -INFINITY;
    for (int64_t i = 0; i < d; ++i) m = std::max(m, x[o + static_cast<size_t>(i)] * scale);
    double sum = 0.0;
    for (int64_t i = 0; i < d; ++i) sum += std::exp(x[o + static_cast<size_t>(i)] * scale - m);
    for (int64_t i = 0; i < d; ++i) {
      y[o + static_cast<size_t>(i)] =
          m == -INFINITY ? 0.0 : std::exp(x[o + static_cast<size_t>(i)] * scale - m) / sum;
    }
  }
  return y;
}

struct Case {
  Shape shape;
  Layout layout;
};

std::vector<Case> Cases() {
  std::vector<Case> cases;
  for (int64_t d : {1, 3, 17, 64, 576, 1000}) {
    cases.push_back({{4, d}, Layout::kContiguous});
    cases.push_back({{3, d}, Layout::kPaddedRows});
    cases.push_back({{2, 3, d}, Layout::kTransposed});
  }
  cases.push_back({{5000}, Layout::kContiguous});
  return cases;
}

// Inputs over the interesting range plus the extremes where exp saturates.
std::vector<float> ActivationInputs(int64_t n, std::mt19937& rng) {
  auto v = RandomValues(n, rng, -12.0f, 12.0f);
  const float extremes[] = {0.0f, -0.0f, 100.0f, -100.0f, 88.0f, -88.0f, 1e-20f, -30.0f, 30.0f};
  for (size_t i = 0; i < v.size() && i < 9; ++i) v[i * 3 % v.size()] = extremes[i];
  return v;
}

TEST(ActivationTest, UnaryActivationsMatchFloat64Reference) {
  const uint32_t seed = FreshSeed();
  std::mt19937 rng(seed);
  struct Fn {
    const char* name;
    double (*ref)(double);
    double atol, rtol;
  };
  // GELU-erf's vector kernels use an erfc approximation good to ~1.5e-7 absolute.
  const Fn fns[] = {{"silu", SiluRef, 1e-7, 2e-6},
                    {"gelu_erf", GeluErfRef, 1e-6, 1e-5},
                    {"gelu_tanh", GeluTanhRef, 1e-7, 2e-6}};
  for (CpuIsa isa : SupportedIsas()) {
    auto be = MakeBackend(isa);
    for (const Case& c : Cases()) {
      for (const Fn& fn : fns) {
        SCOPED_TRACE(Describe(isa, c.shape, c.layout, seed) + " " + fn.name);
        const auto xv = ActivationInputs(c.shape.numel(), rng);
        std::vector<double> ref(xv.size());
        for (size_t i = 0; i < xv.size(); ++i) ref[i] = fn.ref(xv[i]);
        Tensor x = MakeView(c.shape, c.layout, xv);
        Tensor out = MakeView(c.shape, c.layout, std::vector<float>(xv.size(), 0.0f));
        const std::string name = fn.name;
        auto run = [&](Tensor* y) {
          if (name == "silu") return be->Silu(x, y);
          return be->Gelu(x, name == "gelu_erf" ? GeluMode::kErf : GeluMode::kTanh, y);
        };
        ASSERT_TRUE(run(&out).ok());
        EXPECT_TRUE(AllClose(Values(out), ref, fn.atol, fn.rtol));
        ASSERT_TRUE(run(&x).ok());  // in place
        EXPECT_TRUE(AllClose(Values(x), ref, fn.atol, fn.rtol));
      }
    }
  }
}

TEST(ActivationTest, SwiGluMatchesFloat64Reference) {
  const uint32_t seed = FreshSeed();
  std::mt19937 rng(seed);
  for (CpuIsa isa : SupportedIsas()) {
    auto be = MakeBackend(isa);
    for (const Case& c : Cases()) {
      SCOPED_TRACE(Describe(isa, c.shape, c.layout, seed));
      const auto gv = ActivationInputs(c.shape.numel(), rng);
      const auto uv = RandomValues(c.shape.numel(), rng, -3.0f, 3.0f);
      std::vector<double> ref(gv.size());
      for (size_t i = 0; i < gv.size(); ++i) ref[i] = SiluRef(gv[i]) * uv[i];
      Tensor g = MakeView(c.shape, c.layout, gv);
      Tensor u = *Tensor::FromVector(c.shape, uv);  // mixed layouts on purpose
      Tensor out = *Tensor::Empty(DType::kF32, c.shape);
      ASSERT_TRUE(be->SwiGlu(g, u, &out).ok());
      EXPECT_TRUE(AllClose(Values(out), ref, 1e-7, 3e-6));
      ASSERT_TRUE(be->SwiGlu(g, u, &u).ok());  // in place over up
      EXPECT_TRUE(AllClose(Values(u), ref, 1e-7, 3e-6));
    }
  }
}

TEST(ActivationTest, SoftmaxMatchesFloat64Reference) {
  const uint32_t seed = FreshSeed();
  std::mt19937 rng(seed);
  for (CpuIsa isa : SupportedIsas()) {
    auto be = MakeBackend(isa);
    for (const Case& c : Cases()) {
      for (float scale : {1.0f, 0.125f, -0.7f, 0.0f}) {
        SCOPED_TRACE(Describe(isa, c.shape, c.layout, seed) + " scale=" + std::to_string(scale));
        const int64_t d = c.shape[c.shape.ndim() - 1];
        auto xv = RandomValues(c.shape.numel(), rng, -8.0f, 8.0f);
        // Masked entries, as attention scores carry them (never a whole row here).
        if (d > 2 && scale > 0) {
          for (size_t i = 1; i < xv.size(); i += 3) xv[i] = -INFINITY;
        }
        Tensor x = MakeView(c.shape, c.layout, xv);
        Tensor out = MakeView(c.shape, c.layout, std::vector<float>(xv.size(), 0.0f));
        ASSERT_TRUE(be->Softmax(x, scale, &out).ok());
        const auto ref = SoftmaxRef(xv, d, scale);
        EXPECT_TRUE(AllClose(Values(out), ref, 1e-9, 4e-6));
        ASSERT_TRUE(be->Softmax(x, scale, &x).ok());  // in place
        EXPECT_TRUE(AllClose(Values(x), ref, 1e-9, 4e-6));
      }
    }
  }
}

TEST(ActivationTest, SoftmaxFullyMaskedRowIsZero) {
  for (CpuIsa isa : SupportedIsas()) {
    SCOPED_TRACE(CpuIsaName(isa));
    auto be = MakeBackend(isa);
    std::vector<float> xv(2 * 19, -INFINITY);
    xv[19 + 5] = 2.0f;  // second row has one live entry
    Tensor x = *Tensor::FromVector({2, 19}, xv);
    Tensor out = *Tensor::Empty(DType::kF32, {2, 19});
    ASSERT_TRUE(be->Softmax(x, 1.0f, &out).ok());
    const auto y = Values(out);
    for (int i = 0; i < 19; ++i) EXPECT_EQ(y[static_cast<size_t>(i)], 0.0f) << i;
    for (int i = 0; i < 19; ++i) EXPECT_EQ(y[static_cast<size_t>(19 + i)], i == 5 ? 1.0f : 0.0f);
  }
}

TEST(ActivationTest, ThreadedMatchesReference) {
  const uint32_t seed = FreshSeed();
  std::mt19937 rng(seed);
  ThreadPool pool(2);
  const Shape shape{160, 1000};
  for (CpuIsa isa : SupportedIsas()) {
    for (Layout lay : {Layout::kContiguous, Layout::kPaddedRows}) {
      SCOPED_TRACE(Describe(isa, shape, lay, seed));
      auto be = MakeBackend(isa, &pool);
      const auto xv = ActivationInputs(shape.numel(), rng);
      Tensor x = MakeView(shape, lay, xv);
      Tensor out = *Tensor::Empty(DType::kF32, shape);
      ASSERT_TRUE(be->Silu(x, &out).ok());
      std::vector<double> ref(xv.size());
      for (size_t i = 0; i < xv.size(); ++i) ref[i] = SiluRef(xv[i]);
      EXPECT_TRUE(AllClose(Values(out), ref, 1e-7, 2e-6));
      ASSERT_TRUE(be->Softmax(x, 0.5f, &out).ok());
      EXPECT_TRUE(AllClose(Values(out), SoftmaxRef(xv, 1000, 0.5), 1e-9, 4e-6));
    }
  }
}

TEST(ActivationTest, RejectsInvalidArguments) {
  for (CpuIsa isa : SupportedIsas()) {
    SCOPED_TRACE(CpuIsaName(isa));
    auto be = MakeBackend(isa);
    constexpr StatusCode kBad = StatusCode::kInvalidArgument;
    Tensor x = *Tensor::Zeros(DType::kF32, {4, 8});
    Tensor out = *Tensor::Zeros(DType::kF32, {4, 8});
    Tensor xh = *Tensor::Zeros(DType::kBF16, {4, 8});
    Tensor wrong = *Tensor::Zeros(DType::kF32, {4, 9});
    EXPECT_EQ(be->Silu(xh, &out).code(), kBad);
    EXPECT_EQ(be->Silu(x, &wrong).code(), kBad);
    EXPECT_EQ(be->Silu(x, nullptr).code(), kBad);
    EXPECT_EQ(be->Gelu(x, static_cast<GeluMode>(7), &out).code(), kBad);
    EXPECT_EQ(be->Softmax(x, NAN, &out).code(), kBad);
    EXPECT_EQ(be->Softmax(xh, 1.0f, &out).code(), kBad);
    EXPECT_EQ(be->SwiGlu(x, wrong, &out).code(), kBad);
    EXPECT_EQ(be->SwiGlu(x, xh, &out).code(), kBad);
    Tensor t = *Tensor::Zeros(DType::kF32, {8, 4});
    Tensor strided = *t.Transpose(0, 1);  // innermost stride 16 bytes
    EXPECT_EQ(be->Softmax(strided, 1.0f, &out).code(), kBad);
    EXPECT_EQ(be->Silu(strided, &out).code(), kBad);
    Tensor big = *Tensor::Zeros(DType::kF32, {5, 8});
    Tensor a = *big.Slice(0, 0, 4);
    Tensor shifted = *big.Slice(0, 1, 5);
    EXPECT_EQ(be->Softmax(a, 1.0f, &shifted).code(), kBad);
    EXPECT_EQ(be->SwiGlu(x, a, &shifted).code(), kBad);
  }
}

}  // namespace
}  // namespace muninn
