#include "muninn/retriever/embedder.h"

#include <cmath>

#include "muninn/core/check.h"

namespace muninn::retriever {

void L2NormalizeRows(std::span<float> x, int64_t dim) {
  MUNINN_CHECK(dim > 0 && x.size() % static_cast<size_t>(dim) == 0);
  for (size_t r = 0; r < x.size(); r += static_cast<size_t>(dim)) {
    double ss = 0.0;
    for (int64_t j = 0; j < dim; ++j) ss += double{x[r + static_cast<size_t>(j)]} * x[r + static_cast<size_t>(j)];
    if (ss == 0.0) continue;
    const float inv = static_cast<float>(1.0 / std::sqrt(ss));
    for (int64_t j = 0; j < dim; ++j) x[r + static_cast<size_t>(j)] *= inv;
  }
}

}  // namespace muninn::retriever
