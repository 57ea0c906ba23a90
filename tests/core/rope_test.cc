// Rope on every CPU kernel family: both pair layouts, partial rotation, every scaling mode and
// large positions, against a float64 reference built from the published formulas.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <numbers>
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

// Angle of pair i at position `pos`, and the magnitude multiplier, per RopeParams' documentation.
struct RefRope {
  std::vector<double> theta;  // radians per position, per pair
  double mscale = 1.0;
};

RefRope ReferenceFrequencies(const RopeParams& p, int64_t d) {
  RefRope ref;
  double base = p.freq_base;
  if (p.scaling == RopeScaling::kNtk) base *= std::pow(p.factor, d / (d - 2.0));
  for (int64_t i = 0; i < d / 2; ++i) {
    double theta = 1.0 / std::pow(base, (2.0 * i) / d);
    if (p.scaling == RopeScaling::kLinear) theta /= p.factor;
    ref.theta.push_back(theta);
  }
  if (p.scaling == RopeScaling::kYarn) {
    // Dimension index whose wavelength 2 pi / theta fits `r` times in the original context.
    auto dim_for_rotations = [&](double r) {
      return d * std::log(p.original_ctx / (r * 2.0 * std::numbers::pi)) / (2.0 * std::log(base));
    };
    double lo = std::floor(dim_for_rotations(p.beta_fast));
    double hi = std::ceil(dim_for_rotations(p.beta_slow));
    lo = std::max(lo, 0.0);
    hi = std::min(hi, d - 1.0);
    if (hi == lo) hi += 0.001;
    for (int64_t i = 0; i < d / 2; ++i) {
      const double t = std::min(1.0, std::max(0.0, (i - lo) / (hi - lo)));
      const double extrapolated = ref.theta[static_cast<size_t>(i)];
      const double interpolated = extrapolated / p.factor;
      ref.theta[static_cast<size_t>(i)] = interpolated * t + extrapolated * (1.0 - t);
    }
    ref.mscale = (1.0 + 0.1 * std::log(p.factor)) * p.attn_factor;
  }
  return ref;
}

// x: [T, H, hd] row-major values.
std::vector<double> RopeRef(const std::vector<float>& x, const std::vector<int32_t>& pos,
                            int64_t n_head, int64_t hd, const RopeParams& p) {
  const int64_t d = p.n_rot == 0 ? hd : p.n_rot;
  const RefRope f = ReferenceFrequencies(p, d);
  std::vector<double> y(x.begin(), x.end());
  for (size_t t = 0; t < pos.size(); ++t) {
    for (int64_t h = 0; h < n_head; ++h) {
      const size_t o =
          (t * static_cast<size_t>(n_head) + static_cast<size_t>(h)) * static_cast<size_t>(hd);
      for (int64_t i = 0; i < d / 2; ++i) {
        const double a = pos[t] * f.theta[static_cast<size_t>(i)];
        const double c = std::cos(a) * f.mscale, s = std::sin(a) * f.mscale;
        const size_t i0 = o + static_cast<size_t>(p.layout == RopeLayout::kHalves ? i : 2 * i);
        const size_t i1 =
            o + static_cast<size_t>(p.layout == RopeLayout::kHalves ? i + d / 2 : 2 * i + 1);
        y[i0] = x[i0] * c - x[i1] * s;
        y[i1] = x[i1] * c + x[i0] * s;
      }
    }
  }
  return y;
}

std::vector<RopeParams> AllScalings(RopeLayout layout, int n_rot) {
  std::vector<RopeParams> out;
  RopeParams p;
  p.layout = layout;
  p.n_rot = n_rot;
  p.freq_base = 10000.0f;
  out.push_back(p);
  p.scaling = RopeScaling::kLinear;
  p.factor = 4.0f;
  out.push_back(p);
  p.scaling = RopeScaling::kNtk;
  p.factor = 8.0f;
  p.freq_base = 50000.0f;
  out.push_back(p);
  p.scaling = RopeScaling::kYarn;
  p.factor = 16.0f;
  p.freq_base = 500000.0f;
  p.original_ctx = 2048;
  p.attn_factor = 1.25f;
  out.push_back(p);
  return out;
}

const char* ScalingName(RopeScaling s) {
  switch (s) {
    case RopeScaling::kNone:
      return "none";
    case RopeScaling::kLinear:
      return "linear";
    case RopeScaling::kNtk:
      return "ntk";
    case RopeScaling::kYarn:
      return "yarn";
  }
  return "?";
}

std::vector<int32_t> TestPositions(int64_t n, std::mt19937& rng) {
  std::uniform_int_distribution<int32_t> dist(0, 8192);
  std::vector<int32_t> pos(static_cast<size_t>(n));
  for (auto& v : pos) v = dist(rng);
  // Large ones: where float angles would have gone wrong.
  const int32_t big[] = {0, 100000, 131071, 1};
  for (size_t i = 0; i < pos.size() && i < 4; ++i) pos[i] = big[i];
  return pos;
}

Tensor PositionsTensor(const std::vector<int32_t>& pos) {
  Tensor t = *Tensor::Empty(DType::kI32, {static_cast<int64_t>(pos.size())});
  std::memcpy(t.data(), pos.data(), pos.size() * sizeof(int32_t));
  return t;
}

TEST(RopeTest, MatchesFloat64ReferenceAllModes) {
  const uint32_t seed = FreshSeed();
  std::mt19937 rng(seed);
  struct HeadCase {
    int64_t n_head, hd;
    int n_rot;
  };
  const HeadCase heads[] = {{3, 64, 0},  {2, 96, 0},  {4, 6, 0},   {1, 2, 0},  {5, 34, 0},
                            {3, 64, 32}, {2, 80, 24}, {2, 40, 10}, {2, 17, 8}, {2, 64, 62}};
  for (CpuIsa isa : SupportedIsas()) {
    auto be = MakeBackend(isa);
    for (const HeadCase& hc : heads) {
      for (RopeLayout layout : {RopeLayout::kHalves, RopeLayout::kInterleaved}) {
        for (const RopeParams& p : AllScalings(layout, hc.n_rot)) {
          const int64_t rot = p.n_rot == 0 ? hc.hd : p.n_rot;
          if (p.scaling == RopeScaling::kNtk && rot <= 2) continue;  // rejected, tested below
          for (Layout lay : {Layout::kContiguous, Layout::kPaddedRows, Layout::kTransposed}) {
            const int64_t n_tok = 7;
            const Shape shape{n_tok, hc.n_head, hc.hd};
            SCOPED_TRACE(Describe(isa, shape, lay, seed) + " n_rot=" + std::to_string(p.n_rot) +
                         (layout == RopeLayout::kHalves ? " halves " : " interleaved ") +
                         ScalingName(p.scaling));
            const auto xv = RandomValues(shape.numel(), rng, -2.0f, 2.0f);
            const auto pos = TestPositions(n_tok, rng);
            Tensor x = MakeView(shape, lay, xv);
            Tensor out = MakeView(shape, lay, std::vector<float>(xv.size(), 0.0f));
            ASSERT_TRUE(be->Rope(x, PositionsTensor(pos), p, &out).ok());
            const auto ref = RopeRef(xv, pos, hc.n_head, hc.hd, p);
            EXPECT_TRUE(AllClose(Values(out), ref, 2e-6, 2e-6));
            ASSERT_TRUE(be->Rope(x, PositionsTensor(pos), p, &x).ok());  // in place
            EXPECT_TRUE(AllClose(Values(x), ref, 2e-6, 2e-6));
          }
        }
      }
    }
  }
}

// Reads the rotation back from unit vectors: pair i of x = (1, 0) comes out as
// mscale * (cos a_i, sin a_i). Checks the scaling formulas at points computed by hand.
TEST(RopeTest, AnglesAndMagnitudeFromUnitVectors) {
  const int64_t hd = 64;
  for (CpuIsa isa : SupportedIsas()) {
    SCOPED_TRACE(CpuIsaName(isa));
    auto be = MakeBackend(isa);
    for (RopeLayout layout : {RopeLayout::kHalves, RopeLayout::kInterleaved}) {
      std::vector<float> xv(hd, 0.0f);
      for (int64_t i = 0; i < hd / 2; ++i) {
        xv[static_cast<size_t>(layout == RopeLayout::kHalves ? i : 2 * i)] = 1.0f;
      }
      auto angle_of = [&](const std::vector<float>& y, int64_t i, double* mag) {
        const float a = y[static_cast<size_t>(layout == RopeLayout::kHalves ? i : 2 * i)];
        const float b =
            y[static_cast<size_t>(layout == RopeLayout::kHalves ? i + hd / 2 : 2 * i + 1)];
        *mag = std::hypot(a, b);
        return std::atan2(b, a);
      };
      Tensor x = *Tensor::FromVector({1, 1, hd}, xv);
      Tensor out = *Tensor::Empty(DType::kF32, {1, 1, hd});
      const int32_t pos_value = 3;
      Tensor pos = PositionsTensor({pos_value});
      RopeParams p;
      p.layout = layout;
      p.freq_base = 10000.0f;
      p.scaling = RopeScaling::kYarn;
      p.factor = 8.0f;
      p.original_ctx = 4096;
      ASSERT_TRUE(be->Rope(x, pos, p, &out).ok());
      const auto y = Values(out);
      double mag = 0.0;
      // Pair 0 (highest frequency, 1 rad/position) is extrapolated: unchanged.
      EXPECT_NEAR(angle_of(y, 0, &mag), 3.0, 1e-5);
      EXPECT_NEAR(mag, 1.0 + 0.1 * std::log(8.0), 1e-5);
      // The last pair (wavelength far beyond 4096) is interpolated: frequency / 8.
      const double last = 3.0 * std::pow(10000.0, -62.0 / 64.0) / 8.0;
      EXPECT_NEAR(angle_of(y, hd / 2 - 1, &mag), last, 1e-7);
      // Linear: every angle divided by the factor.
      p.scaling = RopeScaling::kLinear;
      p.factor = 4.0f;
      ASSERT_TRUE(be->Rope(x, pos, p, &out).ok());
      EXPECT_NEAR(angle_of(Values(out), 0, &mag), 0.75, 1e-6);
      EXPECT_NEAR(mag, 1.0, 1e-6);
    }
  }
}

// Huginn's definition (specs/huginn.md §3): interleaved pairs, base 50000, head_dim 96.
TEST(RopeTest, HuginnInterleavedExample) {
  for (CpuIsa isa : SupportedIsas()) {
    SCOPED_TRACE(CpuIsaName(isa));
    auto be = MakeBackend(isa);
    std::vector<float> xv(96);
    for (size_t k = 0; k < xv.size(); ++k) xv[k] = 0.01f * static_cast<float>(k) - 0.3f;
    Tensor x = *Tensor::FromVector({1, 1, 96}, xv);
    Tensor out = *Tensor::Empty(DType::kF32, {1, 1, 96});
    RopeParams p;
    p.layout = RopeLayout::kInterleaved;
    p.freq_base = 50000.0f;
    ASSERT_TRUE(be->Rope(x, PositionsTensor({1000}), p, &out).ok());
    const auto y = Values(out);
    for (int i = 0; i < 48; ++i) {
      const double a = 1000.0 * std::pow(50000.0, -2.0 * i / 96.0);
      const double x0 = xv[static_cast<size_t>(2 * i)], x1 = xv[static_cast<size_t>(2 * i + 1)];
      EXPECT_NEAR(y[static_cast<size_t>(2 * i)], x0 * std::cos(a) - x1 * std::sin(a), 1e-6) << i;
      EXPECT_NEAR(y[static_cast<size_t>(2 * i + 1)], x1 * std::cos(a) + x0 * std::sin(a), 1e-6)
          << i;
    }
  }
}

TEST(RopeTest, ThreadedMatchesReference) {
  const uint32_t seed = FreshSeed();
  std::mt19937 rng(seed);
  ThreadPool pool(2);
  const Shape shape{300, 9, 64};
  for (CpuIsa isa : SupportedIsas()) {
    SCOPED_TRACE(Describe(isa, shape, Layout::kContiguous, seed));
    auto be = MakeBackend(isa, &pool);
    const auto xv = RandomValues(shape.numel(), rng, -2.0f, 2.0f);
    const auto pos = TestPositions(300, rng);
    Tensor x = *Tensor::FromVector(shape, xv);
    RopeParams p;
    ASSERT_TRUE(be->Rope(x, PositionsTensor(pos), p, &x).ok());
    EXPECT_TRUE(AllClose(Values(x), RopeRef(xv, pos, 9, 64, p), 2e-6, 2e-6));
  }
}

TEST(RopeTest, RejectsInvalidArguments) {
  for (CpuIsa isa : SupportedIsas()) {
    SCOPED_TRACE(CpuIsaName(isa));
    auto be = MakeBackend(isa);
    Tensor x = *Tensor::Zeros(DType::kF32, {4, 2, 8});
    Tensor out = *Tensor::Zeros(DType::kF32, {4, 2, 8});
    Tensor pos = PositionsTensor({0, 1, 2, 3});
    const RopeParams ok;
    constexpr StatusCode kBad = StatusCode::kInvalidArgument;
    EXPECT_TRUE(be->Rope(x, pos, ok, &out).ok());
    Tensor x2 = *Tensor::Zeros(DType::kF32, {4, 16});
    EXPECT_EQ(be->Rope(x2, pos, ok, &x2).code(), kBad);  // not [T, H, hd]
    Tensor xh = *Tensor::Zeros(DType::kF16, {4, 2, 8});
    EXPECT_EQ(be->Rope(xh, pos, ok, &out).code(), kBad);
    EXPECT_EQ(be->Rope(x, PositionsTensor({0, 1, 2}), ok, &out).code(), kBad);  // wrong T
    Tensor posf = *Tensor::Zeros(DType::kF32, {4});
    EXPECT_EQ(be->Rope(x, posf, ok, &out).code(), kBad);
    EXPECT_EQ(be->Rope(x, Tensor(), ok, &out).code(), kBad);
    Tensor out_bad = *Tensor::Zeros(DType::kF32, {4, 2, 10});
    EXPECT_EQ(be->Rope(x, pos, ok, &out_bad).code(), kBad);
    RopeParams p = ok;
    p.n_rot = 3;  // odd
    EXPECT_EQ(be->Rope(x, pos, p, &out).code(), kBad);
    p.n_rot = 10;  // > head_dim
    EXPECT_EQ(be->Rope(x, pos, p, &out).code(), kBad);
    Tensor x_odd = *Tensor::Zeros(DType::kF32, {4, 2, 7});
    EXPECT_EQ(be->Rope(x_odd, pos, ok, &x_odd).code(), kBad);  // whole head odd
    p = ok;
    p.scaling = RopeScaling::kNtk;
    p.factor = 2.0f;
    p.n_rot = 2;  // exponent d / (d - 2) undefined
    EXPECT_EQ(be->Rope(x, pos, p, &out).code(), kBad);
    p = ok;
    p.factor = 0.0f;
    EXPECT_EQ(be->Rope(x, pos, p, &out).code(), kBad);
    p = ok;
    p.scaling = RopeScaling::kYarn;
    p.beta_fast = 0.5f;  // must exceed beta_slow
    EXPECT_EQ(be->Rope(x, pos, p, &out).code(), kBad);
    // The innermost dim must be packed.
    Tensor base = *Tensor::Zeros(DType::kF32, {4, 8, 2});
    Tensor xt = *base.Transpose(1, 2);
    EXPECT_EQ(be->Rope(xt, pos, ok, &out).code(), kBad);
  }
}

}  // namespace
}  // namespace muninn
