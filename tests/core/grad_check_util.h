// Helpers for the backward-kernel tests: random data, float64 central finite differences of a
// scalar float64 function, and a comparison of an f32 gradient with its float64 reference.
#pragma once

#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <functional>
#include <random>
#include <sstream>
#include <vector>

namespace muninn::testing_grad {

inline std::vector<float> Random(size_t n, std::mt19937& rng, float lo = -1.0f, float hi = 1.0f) {
  std::uniform_real_distribution<float> u(lo, hi);
  std::vector<float> v(n);
  for (float& x : v) x = u(rng);
  return v;
}

inline std::vector<double> ToDouble(const std::vector<float>& v) {
  return std::vector<double>(v.begin(), v.end());
}

// d f / d x_i for every i, by central differences with step h, in float64. f is evaluated at
// x with one coordinate moved; x is restored afterwards.
inline std::vector<double> NumericGrad(const std::function<double(const std::vector<double>&)>& f,
                                       std::vector<double> x, double h = 1e-6) {
  std::vector<double> g(x.size());
  for (size_t i = 0; i < x.size(); ++i) {
    const double x0 = x[i];
    x[i] = x0 + h;
    const double fp = f(x);
    x[i] = x0 - h;
    const double fm = f(x);
    x[i] = x0;
    g[i] = (fp - fm) / (2.0 * h);
  }
  return g;
}

// Σ c_i · y_i: turns a vector-valued forward into the scalar whose gradient the backward computes
// when it is given dy = c.
inline double Contract(const std::vector<double>& y, const std::vector<float>& c) {
  double s = 0.0;
  for (size_t i = 0; i < y.size(); ++i) s += y[i] * c[i];
  return s;
}

// max_i |got_i - want_i| <= tol · max(max_i |want_i|, floor).
inline ::testing::AssertionResult GradClose(const std::vector<float>& got,
                                            const std::vector<double>& want, double tol = 1e-4,
                                            double floor = 1e-3) {
  if (got.size() != want.size()) {
    return ::testing::AssertionFailure() << "size " << got.size() << " vs " << want.size();
  }
  double scale = floor, worst = 0.0;
  size_t worst_i = 0;
  for (size_t i = 0; i < want.size(); ++i) scale = std::max(scale, std::fabs(want[i]));
  for (size_t i = 0; i < want.size(); ++i) {
    const double e = std::fabs(static_cast<double>(got[i]) - want[i]);
    if (!(e <= worst)) {  // NaN counts as worst
      worst = std::isnan(e) ? INFINITY : e;
      worst_i = i;
    }
  }
  if (worst <= tol * scale) return ::testing::AssertionSuccess();
  return ::testing::AssertionFailure()
         << "element " << worst_i << ": got " << got[worst_i] << ", want " << want[worst_i]
         << " (error " << worst << " > " << tol << " x scale " << scale << ")";
}

}  // namespace muninn::testing_grad
