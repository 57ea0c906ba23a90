// Add, Mul (same shape and one-row broadcast) and Scale on every CPU kernel family. These are
// single correctly-rounded float operations, so the bound is half an ulp of the float64 result.
#include <gtest/gtest.h>

#include <cmath>
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

constexpr double kHalfUlp = 0x1p-24;  // relative bound of one correctly rounded float op

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
  cases.push_back({{9000}, Layout::kContiguous});
  return cases;
}

TEST(ElementwiseTest, AddMulMatchReferenceSameShapeAndBroadcast) {
  const uint32_t seed = FreshSeed();
  std::mt19937 rng(seed);
  for (CpuIsa isa : SupportedIsas()) {
    auto be = MakeBackend(isa);
    for (const Case& c : Cases()) {
      const int64_t d = c.shape[c.shape.ndim() - 1];
      for (bool broadcast : {false, true}) {
        for (bool mul : {false, true}) {
          SCOPED_TRACE(Describe(isa, c.shape, c.layout, seed) + (mul ? " mul" : " add") +
                       (broadcast ? " broadcast" : ""));
          const auto av = RandomValues(c.shape.numel(), rng, -4.0f, 4.0f);
          const auto bv = RandomValues(broadcast ? d : c.shape.numel(), rng, -4.0f, 4.0f);
          std::vector<double> ref(av.size());
          for (size_t i = 0; i < av.size(); ++i) {
            const double b = bv[broadcast ? i % static_cast<size_t>(d) : i];
            ref[i] = mul ? av[i] * b : av[i] + b;
          }
          Tensor a = MakeView(c.shape, c.layout, av);
          Tensor b = broadcast ? *Tensor::FromVector({d}, bv) : MakeView(c.shape, c.layout, bv);
          Tensor out = MakeView(c.shape, c.layout, std::vector<float>(av.size(), 0.0f));
          auto run = [&](Tensor* y) { return mul ? be->Mul(a, b, y) : be->Add(a, b, y); };
          ASSERT_TRUE(run(&out).ok());
          EXPECT_TRUE(AllClose(Values(out), ref, 1e-30, kHalfUlp));
          ASSERT_TRUE(run(&a).ok());  // in place over a
          EXPECT_TRUE(AllClose(Values(a), ref, 1e-30, kHalfUlp));
        }
      }
    }
  }
}

TEST(ElementwiseTest, BroadcastAcceptsLeadingUnitDims) {
  for (CpuIsa isa : SupportedIsas()) {
    SCOPED_TRACE(CpuIsaName(isa));
    auto be = MakeBackend(isa);
    Tensor a = *Tensor::FromVector({2, 3}, {1, 2, 3, 4, 5, 6});
    Tensor b = *Tensor::FromVector({1, 3}, {10, 20, 30});
    Tensor out = *Tensor::Empty(DType::kF32, {2, 3});
    ASSERT_TRUE(be->Add(a, b, &out).ok());
    EXPECT_EQ(Values(out), (std::vector<float>{11, 22, 33, 14, 25, 36}));
  }
}

TEST(ElementwiseTest, ScaleMatchesReference) {
  const uint32_t seed = FreshSeed();
  std::mt19937 rng(seed);
  for (CpuIsa isa : SupportedIsas()) {
    auto be = MakeBackend(isa);
    for (const Case& c : Cases()) {
      SCOPED_TRACE(Describe(isa, c.shape, c.layout, seed));
      const auto xv = RandomValues(c.shape.numel(), rng, -4.0f, 4.0f);
      const float s = -0.3f;
      std::vector<double> ref(xv.size());
      for (size_t i = 0; i < xv.size(); ++i) ref[i] = static_cast<double>(xv[i]) * s;
      Tensor x = MakeView(c.shape, c.layout, xv);
      Tensor out = MakeView(c.shape, c.layout, std::vector<float>(xv.size(), 0.0f));
      ASSERT_TRUE(be->Scale(x, s, &out).ok());
      EXPECT_TRUE(AllClose(Values(out), ref, 1e-30, kHalfUlp));
      ASSERT_TRUE(be->Scale(x, s, &x).ok());
      EXPECT_TRUE(AllClose(Values(x), ref, 1e-30, kHalfUlp));
    }
  }
}

TEST(ElementwiseTest, ThreadedMatchesReference) {
  const uint32_t seed = FreshSeed();
  std::mt19937 rng(seed);
  ThreadPool pool(2);
  for (CpuIsa isa : SupportedIsas()) {
    for (Layout lay : {Layout::kContiguous, Layout::kPaddedRows}) {
      const Shape shape{97, 1001};
      SCOPED_TRACE(Describe(isa, shape, lay, seed));
      auto be = MakeBackend(isa, &pool);
      const auto av = RandomValues(shape.numel(), rng, -4.0f, 4.0f);
      const auto bv = RandomValues(shape.numel(), rng, -4.0f, 4.0f);
      std::vector<double> ref(av.size());
      for (size_t i = 0; i < av.size(); ++i) ref[i] = static_cast<double>(av[i]) + bv[i];
      Tensor a = MakeView(shape, lay, av);
      Tensor b = MakeView(shape, lay, bv);
      Tensor out = MakeView(shape, lay, std::vector<float>(av.size(), 0.0f));
      ASSERT_TRUE(be->Add(a, b, &out).ok());
      EXPECT_TRUE(AllClose(Values(out), ref, 1e-30, kHalfUlp));
    }
  }
}

TEST(ElementwiseTest, EmptyTensorsAreNoOps) {
  for (CpuIsa isa : SupportedIsas()) {
    auto be = MakeBackend(isa);
    Tensor a = *Tensor::Empty(DType::kF32, {0, 8});
    Tensor out = *Tensor::Empty(DType::kF32, {0, 8});
    EXPECT_TRUE(be->Add(a, a, &out).ok());
    EXPECT_TRUE(be->Scale(a, 2.0f, &out).ok());
    EXPECT_TRUE(be->Softmax(a, 1.0f, &out).ok());
    EXPECT_TRUE(be->RmsNorm(a, Tensor(), 1e-6f, &out).ok());
  }
}

TEST(ElementwiseTest, RejectsInvalidArguments) {
  for (CpuIsa isa : SupportedIsas()) {
    SCOPED_TRACE(CpuIsaName(isa));
    auto be = MakeBackend(isa);
    constexpr StatusCode kBad = StatusCode::kInvalidArgument;
    Tensor a = *Tensor::Zeros(DType::kF32, {4, 8});
    Tensor out = *Tensor::Zeros(DType::kF32, {4, 8});
    Tensor b_row7 = *Tensor::Zeros(DType::kF32, {7});
    Tensor b_two_rows = *Tensor::Zeros(DType::kF32, {2, 8});
    Tensor b_i32 = *Tensor::Zeros(DType::kI32, {4, 8});
    EXPECT_EQ(be->Add(a, b_row7, &out).code(), kBad);
    EXPECT_EQ(be->Mul(a, b_two_rows, &out).code(), kBad);
    EXPECT_EQ(be->Add(a, b_i32, &out).code(), kBad);
    EXPECT_EQ(be->Add(a, a, nullptr).code(), kBad);
    Tensor out_wrong = *Tensor::Zeros(DType::kF32, {4, 9});
    EXPECT_EQ(be->Scale(a, 2.0f, &out_wrong).code(), kBad);
    Tensor t = *Tensor::Zeros(DType::kF32, {8, 4});
    Tensor strided = *t.Transpose(0, 1);
    EXPECT_EQ(be->Add(a, strided, &out).code(), kBad);
    EXPECT_EQ(be->Scale(a, 2.0f, &strided).code(), kBad);
    // out overlapping b without being b (a broadcast row inside out).
    Tensor row = *out.Select(0);
    EXPECT_EQ(be->Add(a, row, &out).code(), kBad);
    // Misaligned view: a float tensor starting 2 bytes into its buffer.
    auto buf = *AllocateHostBuffer(64 * 4 + 4);
    Tensor odd = *Tensor::FromBuffer(buf, 2, DType::kF32, {4, 8});
    EXPECT_EQ(be->Scale(odd, 2.0f, &out).code(), kBad);
    Tensor scalar = *Tensor::Zeros(DType::kF32, {});
    EXPECT_EQ(be->Scale(scalar, 2.0f, &scalar).code(), kBad);
  }
}

}  // namespace
}  // namespace muninn
