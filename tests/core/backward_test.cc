// Backward kernels of backward.h (frozen matmul, LoRA, RMSNorm, RoPE, SwiGLU) against float64
// central finite differences of float64 forwards, on small odd shapes; and the f32 forwards they
// pair with against the CPU backend's kernels.
#include "muninn/core/backward.h"

#include <gtest/gtest.h>

#include <cmath>
#include <memory>
#include <random>
#include <vector>

#include "muninn/core/cpu_backend.h"
#include "muninn/core/quant.h"
#include "tests/core/grad_check_util.h"

namespace muninn {
namespace {

using testing_grad::Contract;
using testing_grad::GradClose;
using testing_grad::NumericGrad;
using testing_grad::Random;
using testing_grad::ToDouble;

std::unique_ptr<Backend> MakeCpu(ThreadPool* pool) {
  CpuBackendOptions o;
  o.pool = pool;
  return CreateCpuBackend(o).value();
}

Tensor F32(const Shape& shape, const std::vector<float>& v) {
  return Tensor::FromVector(shape, v).value();
}

std::vector<float> Values(const Tensor& t) {
  return std::vector<float>(t.data_as<const float>(), t.data_as<const float>() + t.numel());
}

// y[m, n] = x[m, k] · w[n, k]ᵀ in float64.
std::vector<double> MatMulT(const std::vector<double>& x, const std::vector<double>& w, int64_t m,
                            int64_t n, int64_t k) {
  std::vector<double> y(static_cast<size_t>(m * n), 0.0);
  for (int64_t i = 0; i < m; ++i) {
    for (int64_t j = 0; j < n; ++j) {
      double s = 0.0;
      for (int64_t l = 0; l < k; ++l)
        s += x[static_cast<size_t>(i * k + l)] * w[static_cast<size_t>(j * k + l)];
      y[static_cast<size_t>(i * n + j)] = s;
    }
  }
  return y;
}

TEST(LinearBackwardTest, InputGradientMatchesFiniteDifferences) {
  std::mt19937 rng(1);
  const int64_t m = 5, n_out = 7, n_in = 9;
  const auto x = Random(m * n_in, rng), w = Random(n_out * n_in, rng), dy = Random(m * n_out, rng);
  std::vector<float> dx(static_cast<size_t>(m * n_in), 0.0f);
  LinearBackwardInput(dy.data(), w.data(), m, n_out, n_in, dx.data(), false);
  const auto wd = ToDouble(w);
  const auto f = [&](const std::vector<double>& xd) {
    return Contract(MatMulT(xd, wd, m, n_out, n_in), dy);
  };
  EXPECT_TRUE(GradClose(dx, NumericGrad(f, ToDouble(x))));
  // accumulate adds to what is there.
  std::vector<float> acc(dx.size(), 1.0f);
  LinearBackwardInput(dy.data(), w.data(), m, n_out, n_in, acc.data(), true);
  for (size_t i = 0; i < dx.size(); ++i) EXPECT_NEAR(acc[i], dx[i] + 1.0f, 1e-5f);
}

TEST(LinearBackwardTest, DequantizeToF32MatchesRowDequantization) {
  std::mt19937 rng(2);
  const int64_t rows = 3, cols = 64;
  const auto v = Random(rows * cols, rng);
  Tensor q = Tensor::Empty(DType::kQ8_0, Shape{rows, cols}).value();
  for (int64_t r = 0; r < rows; ++r) {
    ASSERT_TRUE(QuantizeRow(DType::kQ8_0, v.data() + r * cols,
                            static_cast<char*>(q.data()) + r * q.stride(0), cols)
                    .ok());
  }
  Tensor f = DequantizeToF32(q).value();
  ASSERT_EQ(f.dtype(), DType::kF32);
  ASSERT_EQ(f.shape(), (Shape{rows, cols}));
  std::vector<float> want(static_cast<size_t>(cols));
  for (int64_t r = 0; r < rows; ++r) {
    DequantizeRow(DType::kQ8_0, static_cast<const char*>(q.data()) + r * q.stride(0), want.data(),
                  cols);
    for (int64_t c = 0; c < cols; ++c) {
      EXPECT_EQ(f.data_as<float>()[r * cols + c], want[static_cast<size_t>(c)]);
    }
  }
  EXPECT_FALSE(DequantizeToF32(Tensor()).ok());
}

// LoRA: y = x·Wᵀ + scale·(drop(x)·Aᵀ)·Bᵀ, with and without dropout.
class LoraBackwardTest : public ::testing::TestWithParam<float> {};

TEST_P(LoraBackwardTest, GradientsMatchFiniteDifferences) {
  const float dropout = GetParam();
  std::mt19937 rng(3);
  LoraDims d;
  d.m = 5;
  d.n_in = 11;
  d.n_out = 7;
  d.rank = 3;
  d.scale = 8.0f / 3.0f;
  d.dropout = dropout;
  d.seed = 1234;
  const auto x = Random(d.m * d.n_in, rng), w = Random(d.n_out * d.n_in, rng);
  const auto a = Random(d.rank * d.n_in, rng), b = Random(d.n_out * d.rank, rng);
  const auto dy = Random(d.m * d.n_out, rng);

  // The mask times 1/(1-p), read back through LoraDropout of a tensor of ones.
  std::vector<float> ones(x.size(), 1.0f), mask(x.size());
  LoraDropout(d, ones.data(), mask.data());
  if (dropout > 0.0f) {
    int zeros = 0;
    for (const float v : mask) zeros += v == 0.0f;
    EXPECT_GT(zeros, 0);
    EXPECT_LT(zeros, static_cast<int>(mask.size()));
  }
  const auto forward = [&](const std::vector<double>& xv, const std::vector<double>& av,
                           const std::vector<double>& bv) {
    std::vector<double> xdv(xv.size());
    for (size_t i = 0; i < xv.size(); ++i) xdv[i] = xv[i] * mask[i];
    const auto y = MatMulT(xv, ToDouble(w), d.m, d.n_out, d.n_in);
    const auto u = MatMulT(xdv, av, d.m, d.rank, d.n_in);
    auto z = MatMulT(u, bv, d.m, d.n_out, d.rank);
    for (size_t i = 0; i < z.size(); ++i) z[i] = y[i] + d.scale * z[i];
    return z;
  };

  // f32 forward: the backend's MatMul plus LoraForward, against float64.
  ThreadPool pool(2);
  auto be = MakeCpu(&pool);
  Tensor yt = Tensor::Empty(DType::kF32, Shape{d.m, d.n_out}).value();
  ASSERT_TRUE(be->MatMul(F32({d.m, d.n_in}, x), F32({d.n_out, d.n_in}, w), &yt).ok());
  std::vector<float> xd(x.size()), u(static_cast<size_t>(d.m * d.rank));
  LoraDropout(d, x.data(), xd.data());
  LoraForward(d, xd.data(), a.data(), b.data(), u.data(), yt.data_as<float>());
  EXPECT_TRUE(GradClose(Values(yt), forward(ToDouble(x), ToDouble(a), ToDouble(b)), 1e-5));

  std::vector<float> da(a.size(), 0.5f), db(b.size(), -0.25f), dx(x.size(), 0.0f);
  LinearBackwardInput(dy.data(), w.data(), d.m, d.n_out, d.n_in, dx.data(), false);
  LoraBackward(d, dy.data(), xd.data(), u.data(), a.data(), b.data(), da.data(), db.data(),
               dx.data());
  for (float& v : da) v -= 0.5f;  // parameter gradients are added
  for (float& v : db) v += 0.25f;
  const auto xv = ToDouble(x), av = ToDouble(a), bv = ToDouble(b);
  EXPECT_TRUE(GradClose(
      dx, NumericGrad([&](const auto& p) { return Contract(forward(p, av, bv), dy); }, xv)));
  EXPECT_TRUE(GradClose(
      da, NumericGrad([&](const auto& p) { return Contract(forward(xv, p, bv), dy); }, av)));
  EXPECT_TRUE(GradClose(
      db, NumericGrad([&](const auto& p) { return Contract(forward(xv, av, p), dy); }, bv)));
}

INSTANTIATE_TEST_SUITE_P(Dropout, LoraBackwardTest, ::testing::Values(0.0f, 0.3f));

TEST(RmsNormBackwardTest, GradientsMatchFiniteDifferences) {
  std::mt19937 rng(4);
  ThreadPool pool(2);
  for (const int64_t rows : {int64_t{5}, int64_t{37}}) {  // 37: several row blocks
    const int64_t d = 13;
    const float eps = 1e-5f;
    const auto x = Random(rows * d, rng), w = Random(d, rng, 0.5f, 1.5f),
               dy = Random(rows * d, rng);
    const auto forward = [&](const std::vector<double>& xv, const std::vector<double>& wv) {
      std::vector<double> y(xv.size());
      for (int64_t r = 0; r < rows; ++r) {
        double ss = 0.0;
        for (int64_t i = 0; i < d; ++i)
          ss += xv[static_cast<size_t>(r * d + i)] * xv[static_cast<size_t>(r * d + i)];
        const double rstd = 1.0 / std::sqrt(ss / static_cast<double>(d) + eps);
        for (int64_t i = 0; i < d; ++i) {
          y[static_cast<size_t>(r * d + i)] =
              xv[static_cast<size_t>(r * d + i)] * rstd * wv[static_cast<size_t>(i)];
        }
      }
      return y;
    };
    // The backend's forward is what the backward differentiates.
    auto be = MakeCpu(&pool);
    Tensor y = Tensor::Empty(DType::kF32, Shape{rows, d}).value();
    ASSERT_TRUE(be->RmsNorm(F32({rows, d}, x), F32({d}, w), eps, &y).ok());
    EXPECT_TRUE(GradClose(Values(y), forward(ToDouble(x), ToDouble(w)), 1e-5));

    std::vector<float> dx(x.size()), dw(w.size(), 0.0f);
    RmsNormBackward(&pool, x.data(), w.data(), dy.data(), rows, d, eps, dx.data(), dw.data());
    const auto xv = ToDouble(x), wv = ToDouble(w);
    EXPECT_TRUE(GradClose(
        dx, NumericGrad([&](const auto& p) { return Contract(forward(p, wv), dy); }, xv)));
    EXPECT_TRUE(GradClose(
        dw, NumericGrad([&](const auto& p) { return Contract(forward(xv, p), dy); }, wv)));
    // No weight: as a weight of ones; same dx, thread count irrelevant.
    std::vector<float> dx1(x.size()), dx2(x.size());
    const std::vector<float> ones(static_cast<size_t>(d), 1.0f);
    RmsNormBackward(nullptr, x.data(), nullptr, dy.data(), rows, d, eps, dx1.data(), nullptr);
    RmsNormBackward(&pool, x.data(), ones.data(), dy.data(), rows, d, eps, dx2.data(), nullptr);
    EXPECT_EQ(dx1, dx2);
    // dw sums row blocks in block order: one thread gives the same bits.
    std::vector<float> dw1(w.size(), 0.0f);
    RmsNormBackward(nullptr, x.data(), w.data(), dy.data(), rows, d, eps, dx1.data(), dw1.data());
    EXPECT_EQ(dw1, dw);
  }
}

// Float64 RoPE without scaling or with linear scaling, both layouts, partial rotation.
std::vector<double> RefRope(const std::vector<double>& x, const std::vector<int32_t>& pos,
                            int64_t n_head, int64_t hd, const RopeParams& p) {
  const int64_t n_rot = p.n_rot == 0 ? hd : p.n_rot, half = n_rot / 2;
  std::vector<double> y = x;
  for (size_t t = 0; t < pos.size(); ++t) {
    for (int64_t h = 0; h < n_head; ++h) {
      const size_t base =
          (t * static_cast<size_t>(n_head) + static_cast<size_t>(h)) * static_cast<size_t>(hd);
      for (int64_t i = 0; i < half; ++i) {
        double theta = std::pow(static_cast<double>(p.freq_base),
                                -2.0 * static_cast<double>(i) / static_cast<double>(n_rot));
        if (p.scaling == RopeScaling::kLinear) theta /= p.factor;
        const double c = std::cos(pos[t] * theta), s = std::sin(pos[t] * theta);
        const size_t i0 = base + static_cast<size_t>(p.layout == RopeLayout::kHalves ? i : 2 * i);
        const size_t i1 =
            base + static_cast<size_t>(p.layout == RopeLayout::kHalves ? i + half : 2 * i + 1);
        y[i0] = x[i0] * c - x[i1] * s;
        y[i1] = x[i1] * c + x[i0] * s;
      }
    }
  }
  return y;
}

TEST(RopeBackwardTest, GradientMatchesFiniteDifferencesBothLayouts) {
  std::mt19937 rng(5);
  const int64_t T = 5, n_head = 3, hd = 10;
  const std::vector<int32_t> pos = {0, 3, 7, 100, 4099};
  for (const RopeLayout layout : {RopeLayout::kHalves, RopeLayout::kInterleaved}) {
    for (const int n_rot : {0, 6}) {
      for (const RopeScaling scaling : {RopeScaling::kNone, RopeScaling::kLinear}) {
        RopeParams p;
        p.layout = layout;
        p.n_rot = n_rot;
        p.scaling = scaling;
        p.factor = scaling == RopeScaling::kLinear ? 4.0f : 1.0f;
        SCOPED_TRACE(testing::Message() << "layout " << static_cast<int>(layout) << " n_rot "
                                        << n_rot << " scaling " << static_cast<int>(scaling));
        const auto x = Random(T * n_head * hd, rng), dy = Random(T * n_head * hd, rng);
        // The backend's forward agrees with the reference, so the backward below is its adjoint.
        auto be = MakeCpu(nullptr);
        Tensor y = Tensor::Empty(DType::kF32, Shape{T, n_head, hd}).value();
        Tensor pt = Tensor::Empty(DType::kI32, Shape{T}).value();
        std::copy(pos.begin(), pos.end(), pt.data_as<int32_t>());
        ASSERT_TRUE(be->Rope(F32({T, n_head, hd}, x), pt, p, &y).ok());
        EXPECT_TRUE(GradClose(Values(y), RefRope(ToDouble(x), pos, n_head, hd, p), 1e-5));

        std::vector<float> dx(x.size());
        ASSERT_TRUE(RopeBackward(nullptr, dy.data(), pos.data(), T, n_head, hd, p, dx.data()).ok());
        const auto g = NumericGrad(
            [&](const auto& xv) { return Contract(RefRope(xv, pos, n_head, hd, p), dy); },
            ToDouble(x));
        EXPECT_TRUE(GradClose(dx, g, 1e-5));
      }
    }
  }
}

// For the scalings without a float64 reference here (NTK, YaRN with its mscale), the backward must
// be the forward's adjoint: <Rope(x), y> = <x, RopeBackward(y)>.
TEST(RopeBackwardTest, IsTheAdjointOfTheForwardForEveryScaling) {
  std::mt19937 rng(6);
  const int64_t T = 4, n_head = 2, hd = 16;
  const std::vector<int32_t> pos = {1, 50, 9000, 65000};
  ThreadPool pool(2);
  auto be = MakeCpu(&pool);
  for (const RopeScaling scaling : {RopeScaling::kNtk, RopeScaling::kYarn}) {
    for (const RopeLayout layout : {RopeLayout::kHalves, RopeLayout::kInterleaved}) {
      RopeParams p;
      p.layout = layout;
      p.scaling = scaling;
      p.factor = 8.0f;
      p.attn_factor = 1.3f;
      const auto x = Random(T * n_head * hd, rng), yv = Random(T * n_head * hd, rng);
      Tensor rx = Tensor::Empty(DType::kF32, Shape{T, n_head, hd}).value();
      Tensor pt = Tensor::Empty(DType::kI32, Shape{T}).value();
      std::copy(pos.begin(), pos.end(), pt.data_as<int32_t>());
      ASSERT_TRUE(be->Rope(F32({T, n_head, hd}, x), pt, p, &rx).ok());
      std::vector<float> bty(yv.size());
      ASSERT_TRUE(RopeBackward(&pool, yv.data(), pos.data(), T, n_head, hd, p, bty.data()).ok());
      double lhs = 0.0, rhs = 0.0, norm = 0.0;
      for (size_t i = 0; i < x.size(); ++i) {
        lhs += static_cast<double>(rx.data_as<float>()[i]) * yv[i];
        rhs += static_cast<double>(x[i]) * bty[i];
        norm += std::fabs(static_cast<double>(x[i]) * yv[i]);
      }
      EXPECT_NEAR(lhs, rhs, 1e-5 * norm) << "scaling " << static_cast<int>(scaling);
    }
  }
  // In place works, and INT32_MIN is refused.
  std::vector<float> v = Random(T * n_head * hd, rng), copy(v.size());
  ASSERT_TRUE(
      RopeBackward(nullptr, v.data(), pos.data(), T, n_head, hd, RopeParams{}, copy.data()).ok());
  ASSERT_TRUE(
      RopeBackward(nullptr, v.data(), pos.data(), T, n_head, hd, RopeParams{}, v.data()).ok());
  EXPECT_EQ(v, copy);
  const std::vector<int32_t> bad = {0, INT32_MIN, 0, 0};
  EXPECT_FALSE(
      RopeBackward(nullptr, v.data(), bad.data(), T, n_head, hd, RopeParams{}, copy.data()).ok());
}

TEST(SwiGluBackwardTest, GradientsMatchFiniteDifferences) {
  std::mt19937 rng(7);
  const int64_t n = 41;
  const auto gate = Random(n, rng, -6.0f, 6.0f), up = Random(n, rng), dy = Random(n, rng);
  const auto forward = [&](const std::vector<double>& g, const std::vector<double>& u) {
    std::vector<double> y(g.size());
    for (size_t i = 0; i < g.size(); ++i) y[i] = g[i] / (1.0 + std::exp(-g[i])) * u[i];
    return y;
  };
  auto be = MakeCpu(nullptr);
  Tensor y = Tensor::Empty(DType::kF32, Shape{n}).value();
  ASSERT_TRUE(be->SwiGlu(F32({n}, gate), F32({n}, up), &y).ok());
  EXPECT_TRUE(GradClose(Values(y), forward(ToDouble(gate), ToDouble(up)), 1e-5));
  ThreadPool pool(2);
  std::vector<float> dg(n), du(n);
  SwiGluBackward(&pool, gate.data(), up.data(), dy.data(), n, dg.data(), du.data());
  const auto gv = ToDouble(gate), uv = ToDouble(up);
  EXPECT_TRUE(
      GradClose(dg, NumericGrad([&](const auto& p) { return Contract(forward(p, uv), dy); }, gv)));
  EXPECT_TRUE(
      GradClose(du, NumericGrad([&](const auto& p) { return Contract(forward(gv, p), dy); }, uv)));
}

}  // namespace
}  // namespace muninn
