// Fused head + softmax cross-entropy (contract in cross_entropy.h): supervised rows are gathered
// into blocks; per block, logits = hb · Wᵀ (sgemm), a row-wise softmax in place (rows split over
// the pool), minus the one-hot, times grad_scale, then dhb = G · W (sgemm) scattered back.
#include "muninn/core/cross_entropy.h"

#include <cblas.h>

#include <algorithm>
#include <cmath>
#include <string>
#include <vector>

#include "muninn/core/check.h"

namespace muninn {

StatusOr<CrossEntropyResult> FusedCrossEntropy(ThreadPool* pool, const float* h, const float* w,
                                               const int32_t* labels, int64_t T, int64_t n_embd,
                                               int64_t n_vocab, float* dh,
                                               const CrossEntropyOptions& options) {
  MUNINN_CHECK(T >= 0 && n_embd > 0 && n_vocab > 0);
  if (options.rows_per_block < 1 || !std::isfinite(options.grad_scale)) {
    return InvalidArgumentError(
        "FusedCrossEntropy: rows_per_block must be >= 1 and grad_scale "
        "finite");
  }
  std::vector<int64_t> rows;  // supervised rows, in order
  for (int64_t t = 0; t < T; ++t) {
    if (labels[t] == kIgnoreLabel) continue;
    if (labels[t] < 0 || labels[t] >= n_vocab) {
      return InvalidArgumentError("FusedCrossEntropy: label " + std::to_string(labels[t]) +
                                  " at position " + std::to_string(t) + " is outside [0, " +
                                  std::to_string(n_vocab) + ") and is not the ignore label -100");
    }
    rows.push_back(t);
  }
  CrossEntropyResult result;
  result.n_supervised = static_cast<int64_t>(rows.size());
  if (dh != nullptr) std::fill(dh, dh + T * n_embd, 0.0f);
  if (rows.empty()) return result;
  const float grad_scale = options.grad_scale != 0.0f
                               ? options.grad_scale
                               : static_cast<float>(1.0 / static_cast<double>(rows.size()));

  const int64_t block = std::min<int64_t>(options.rows_per_block, result.n_supervised);
  std::vector<float> hb(static_cast<size_t>(block * n_embd));
  std::vector<float> logits(static_cast<size_t>(block * n_vocab));
  std::vector<float> dhb(dh != nullptr ? static_cast<size_t>(block * n_embd) : 0);
  std::vector<double> row_loss(static_cast<size_t>(block));
  const auto B = [](int64_t x) { return static_cast<blasint>(x); };
  for (int64_t b0 = 0; b0 < result.n_supervised; b0 += block) {
    const int64_t nb = std::min(block, result.n_supervised - b0);
    for (int64_t i = 0; i < nb; ++i) {
      const float* src = h + rows[static_cast<size_t>(b0 + i)] * n_embd;
      std::copy(src, src + n_embd, hb.data() + i * n_embd);
    }
    // logits[nb, V] = hb[nb, E] · w[V, E]ᵀ
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, B(nb), B(n_vocab), B(n_embd), 1.0f,
                hb.data(), B(n_embd), w, B(n_embd), 0.0f, logits.data(), B(n_vocab));
    ParallelFor(pool, nb, 1, [&](int64_t begin, int64_t end) {
      for (int64_t i = begin; i < end; ++i) {
        float* z = logits.data() + i * n_vocab;
        const int32_t y = labels[rows[static_cast<size_t>(b0 + i)]];
        const float mx = *std::max_element(z, z + n_vocab);
        const float zy = z[y];
        // One exp per logit (float, its argument <= 0), summed in double; z becomes exp(z - max).
        double sum = 0.0;
        for (int64_t j = 0; j < n_vocab; ++j) {
          const float e = std::exp(z[j] - mx);
          z[j] = e;
          sum += e;
        }
        row_loss[static_cast<size_t>(i)] = static_cast<double>(mx) + std::log(sum) - zy;
        if (dh == nullptr) continue;
        // G = grad_scale · (softmax - onehot), in place.
        const auto f = static_cast<float>(static_cast<double>(grad_scale) / sum);
        for (int64_t j = 0; j < n_vocab; ++j) z[j] *= f;
        z[y] -= grad_scale;
      }
    });
    for (int64_t i = 0; i < nb; ++i) result.loss_sum += row_loss[static_cast<size_t>(i)];
    if (dh == nullptr) continue;
    // dhb[nb, E] = G[nb, V] · w[V, E]
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, B(nb), B(n_embd), B(n_vocab), 1.0f,
                logits.data(), B(n_vocab), w, B(n_embd), 0.0f, dhb.data(), B(n_embd));
    for (int64_t i = 0; i < nb; ++i) {
      const float* src = dhb.data() + i * n_embd;
      std::copy(src, src + n_embd, dh + rows[static_cast<size_t>(b0 + i)] * n_embd);
    }
  }
  return result;
}

}  // namespace muninn
