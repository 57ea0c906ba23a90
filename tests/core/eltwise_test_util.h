// Helpers shared by the element-wise / norm / RoPE / activation op tests: the CPU kernel
// families to iterate over, fresh random seeds, strided views of random data, and comparison
// against float64 references with per-element error bounds.
#pragma once

#include <gtest/gtest.h>

#include <cmath>
#include <cstring>
#include <memory>
#include <random>
#include <sstream>
#include <string>
#include <vector>

#include "muninn/core/cpu_backend.h"
#include "muninn/core/tensor.h"
#include "muninn/core/thread_pool.h"

namespace muninn::testing_eltwise {

// Every kernel family this CPU can run.
inline std::vector<CpuIsa> SupportedIsas() {
  std::vector<CpuIsa> isas = {CpuIsa::kScalar};
  const CpuIsa best = GetCpuFeatures().BestIsa();
  if (static_cast<int>(best) >= static_cast<int>(CpuIsa::kAvx2)) isas.push_back(CpuIsa::kAvx2);
  if (best == CpuIsa::kAvx512) isas.push_back(CpuIsa::kAvx512);
  return isas;
}

inline std::unique_ptr<Backend> MakeBackend(CpuIsa isa, ThreadPool* pool = nullptr) {
  CpuBackendOptions o;
  o.isa = isa;
  o.pool = pool;
  auto b = CreateCpuBackend(o);
  EXPECT_TRUE(b.ok()) << b.status();
  return std::move(b).value();
}

// A fresh seed per test run; tests print it with SCOPED_TRACE so a failure can be replayed.
inline uint32_t FreshSeed() { return std::random_device{}(); }

// How a test tensor is laid out in memory. All kinds hold the same logical values.
enum class Layout {
  kContiguous,
  kPaddedRows,  // every row followed by 5 unused floats (row stride != D * 4)
  kTransposed,  // dims 0 and 1 swapped in memory (needs ndim >= 3): outer strides permuted
};

inline const char* LayoutName(Layout l) {
  switch (l) {
    case Layout::kContiguous:
      return "contiguous";
    case Layout::kPaddedRows:
      return "padded";
    case Layout::kTransposed:
      return "transposed";
  }
  return "?";
}

// An f32 view of `shape` in layout `layout` holding `values` (row-major logical order).
// Unused padding is filled with NaN so a kernel that reads it shows up in the results.
inline Tensor MakeView(const Shape& shape, Layout layout, const std::vector<float>& values) {
  const int nd = shape.ndim();
  EXPECT_EQ(static_cast<int64_t>(values.size()), shape.numel());
  Tensor t;
  if (layout == Layout::kContiguous) {
    t = *Tensor::FromVector(shape, values);
    return t;
  }
  if (layout == Layout::kPaddedRows) {
    Shape padded = shape;
    padded[nd - 1] = shape[nd - 1] + 5;
    Tensor base = *Tensor::FromVector(padded, std::vector<float>(padded.numel(), NAN));
    t = *base.Slice(nd - 1, 0, shape[nd - 1]);
  } else {
    EXPECT_GE(nd, 3);
    Shape swapped = shape;
    std::swap(swapped[0], swapped[1]);
    Tensor base = *Tensor::FromVector(swapped, std::vector<float>(swapped.numel(), NAN));
    t = *base.Transpose(0, 1);
  }
  // Scatter the values in logical order.
  const int64_t cols = shape[nd - 1];
  std::vector<int64_t> idx(static_cast<size_t>(std::max(nd - 1, 0)), 0);
  for (int64_t r = 0; r < t.num_rows(); ++r) {
    std::memcpy(t.row_ptr(idx), values.data() + r * cols, static_cast<size_t>(cols) * 4);
    for (int k = nd - 2; k >= 0; --k) {
      if (++idx[static_cast<size_t>(k)] < shape[k]) break;
      idx[static_cast<size_t>(k)] = 0;
    }
  }
  return t;
}

// The logical values of an f32 tensor in row-major order.
inline std::vector<float> Values(const Tensor& t) {
  Tensor c = *t.Contiguous();
  const float* p = c.data_as<const float>();
  return std::vector<float>(p, p + c.numel());
}

inline std::vector<float> RandomValues(int64_t n, std::mt19937& rng, float lo, float hi) {
  std::uniform_real_distribution<float> dist(lo, hi);
  std::vector<float> v(static_cast<size_t>(n));
  for (float& x : v) x = dist(rng);
  return v;
}

// Checks |got - ref| <= atol + rtol * |ref| for every element and reports the worst one.
inline ::testing::AssertionResult AllClose(const std::vector<float>& got,
                                           const std::vector<double>& ref, double atol,
                                           double rtol) {
  if (got.size() != ref.size()) {
    return ::testing::AssertionFailure() << "size " << got.size() << " vs " << ref.size();
  }
  double worst = 0.0;
  size_t worst_i = 0;
  for (size_t i = 0; i < got.size(); ++i) {
    const double err = std::fabs(static_cast<double>(got[i]) - ref[i]);
    const double ratio = err / (atol + rtol * std::fabs(ref[i]));
    if (!(ratio <= worst) || std::isnan(ratio)) {
      worst = std::isnan(ratio) ? INFINITY : ratio;
      worst_i = i;
    }
  }
  if (worst <= 1.0) return ::testing::AssertionSuccess();
  return ::testing::AssertionFailure()
         << "element " << worst_i << ": got " << got[worst_i] << ", want " << ref[worst_i]
         << " (error " << worst << "x the bound atol=" << atol << " rtol=" << rtol << ")";
}

inline std::string Describe(CpuIsa isa, const Shape& shape, Layout layout, uint32_t seed) {
  std::ostringstream os;
  os << "isa=" << CpuIsaName(isa) << " shape=" << shape.ToString()
     << " layout=" << LayoutName(layout) << " seed=" << seed;
  return os.str();
}

}  // namespace muninn::testing_eltwise
