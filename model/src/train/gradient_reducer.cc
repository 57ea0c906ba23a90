#include "muninn/model/gradient_reducer.h"

#include <algorithm>

#include "muninn/core/check.h"

namespace muninn::model {

void OrderedStreamSum(std::span<const float> partials, std::span<const double> losses,
                      std::span<float> out, double* loss_total) {
  const size_t n = out.size();
  MUNINN_CHECK(n > 0 && partials.size() % n == 0 && partials.size() / n == losses.size() &&
               !losses.empty());
  std::copy(partials.begin(), partials.begin() + static_cast<ptrdiff_t>(n), out.begin());
  double loss = losses[0];
  for (size_t s = 1; s < losses.size(); ++s) {
    const float* p = partials.data() + s * n;
    for (size_t i = 0; i < n; ++i) out[i] += p[i];
    loss += losses[s];
  }
  *loss_total = loss;
}

Status LocalGradientReducer::SumStreams(std::span<const float> partials,
                                        std::span<const double> losses, std::span<float> out,
                                        double* loss_total) {
  if (out.empty() || losses.empty() || partials.size() != losses.size() * out.size()) {
    return InvalidArgumentError("GradientReducer: partials must be [streams, n] with n = out size");
  }
  OrderedStreamSum(partials, losses, out, loss_total);
  return Status::Ok();
}

}  // namespace muninn::model
