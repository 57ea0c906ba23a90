// Fused head + softmax cross-entropy (contract in cross_entropy.h).
//
// Supervised rows are gathered into row blocks; each block walks the vocabulary in tiles of
// vocab_block rows of W, twice:
//   pass A: logits tile = hb · W_tileᵀ (sgemm); per row an online log-sum-exp (running max and
//           sum, tiles in order) and the label's logit;
//   pass B (gradient wanted): the same tile again, G = grad_scale · (exp(z - lse) - onehot),
//           dhb += G · W_tile (sgemm, accumulating over tiles in order).
// Tiling the vocabulary rather than only the rows matters: sgemm packs its operands on every call,
// and re-packing all of W (49152 x 576 f32 = 113 MB) for every block of 32 rows cost ten times
// the arithmetic. Here each call packs one W tile and the (small) row block. The price is the
// logits computed twice when dh is wanted. Row work inside a tile is split over the pool.
#include "muninn/core/cross_entropy.h"

#include <cblas.h>

#include <algorithm>
#include <cmath>
#include <limits>
#include <string>
#include <vector>

#include "muninn/core/check.h"

namespace muninn {

StatusOr<CrossEntropyResult> FusedCrossEntropy(ThreadPool* pool, const float* h, const float* w,
                                               const int32_t* labels, int64_t T, int64_t n_embd,
                                               int64_t n_vocab, float* dh,
                                               const CrossEntropyOptions& options) {
  MUNINN_CHECK(T >= 0 && n_embd > 0 && n_vocab > 0);
  if (options.rows_per_block < 1 || options.vocab_block < 1 || !std::isfinite(options.grad_scale)) {
    return InvalidArgumentError(
        "FusedCrossEntropy: rows_per_block and vocab_block must be >= 1 and grad_scale finite");
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
  const int64_t vtile = std::min<int64_t>(options.vocab_block, n_vocab);
  std::vector<float> hb(static_cast<size_t>(block * n_embd));
  std::vector<float> tile(static_cast<size_t>(block * vtile));
  std::vector<float> dhb(dh != nullptr ? static_cast<size_t>(block * n_embd) : 0);
  std::vector<float> row_max(static_cast<size_t>(block));
  std::vector<double> row_sum(static_cast<size_t>(block));
  std::vector<float> row_label_logit(static_cast<size_t>(block));
  std::vector<float> row_lse(static_cast<size_t>(block));
  const auto B = [](int64_t x) { return static_cast<blasint>(x); };

  for (int64_t b0 = 0; b0 < result.n_supervised; b0 += block) {
    const int64_t nb = std::min(block, result.n_supervised - b0);
    const auto label = [&](int64_t i) { return labels[rows[static_cast<size_t>(b0 + i)]]; };
    for (int64_t i = 0; i < nb; ++i) {
      const float* src = h + rows[static_cast<size_t>(b0 + i)] * n_embd;
      std::copy(src, src + n_embd, hb.data() + i * n_embd);
    }
    // tile[nb, nv] = hb[nb, E] · w[v0 : v0 + nv, E]ᵀ
    const auto logits = [&](int64_t v0, int64_t nv) {
      cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, B(nb), B(nv), B(n_embd), 1.0f, hb.data(),
                  B(n_embd), w + v0 * n_embd, B(n_embd), 0.0f, tile.data(), B(nv));
    };

    // Pass A: online log-sum-exp over the vocabulary tiles.
    std::fill(row_max.begin(), row_max.end(), -std::numeric_limits<float>::infinity());
    std::fill(row_sum.begin(), row_sum.end(), 0.0);
    for (int64_t v0 = 0; v0 < n_vocab; v0 += vtile) {
      const int64_t nv = std::min(vtile, n_vocab - v0);
      logits(v0, nv);
      ParallelFor(pool, nb, 1, [&](int64_t begin, int64_t end) {
        for (int64_t i = begin; i < end; ++i) {
          const float* z = tile.data() + i * nv;
          const auto ui = static_cast<size_t>(i);
          const float m = std::max(row_max[ui], *std::max_element(z, z + nv));
          double s = 0.0;
          for (int64_t j = 0; j < nv; ++j) s += std::exp(z[j] - m);
          row_sum[ui] = row_sum[ui] * std::exp(static_cast<double>(row_max[ui]) - m) + s;
          row_max[ui] = m;
          const int32_t y = label(i);
          if (y >= v0 && y < v0 + nv) row_label_logit[ui] = z[y - v0];
        }
      });
    }
    for (int64_t i = 0; i < nb; ++i) {
      const auto ui = static_cast<size_t>(i);
      const double lse = static_cast<double>(row_max[ui]) + std::log(row_sum[ui]);
      row_lse[ui] = static_cast<float>(lse);
      result.loss_sum += lse - row_label_logit[ui];
    }
    if (dh == nullptr) continue;

    // Pass B: G = grad_scale · (softmax - onehot) tile by tile, dhb += G · W_tile.
    std::fill(dhb.begin(), dhb.end(), 0.0f);
    for (int64_t v0 = 0; v0 < n_vocab; v0 += vtile) {
      const int64_t nv = std::min(vtile, n_vocab - v0);
      logits(v0, nv);
      ParallelFor(pool, nb, 1, [&](int64_t begin, int64_t end) {
        for (int64_t i = begin; i < end; ++i) {
          float* z = tile.data() + i * nv;
          const float l = row_lse[static_cast<size_t>(i)];
          for (int64_t j = 0; j < nv; ++j) z[j] = grad_scale * std::exp(z[j] - l);
          const int32_t y = label(i);
          if (y >= v0 && y < v0 + nv) z[y - v0] -= grad_scale;
        }
      });
      // dhb[nb, E] += tile[nb, nv] · w[v0 : v0 + nv, E]
      cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, B(nb), B(n_embd), B(nv), 1.0f,
                  tile.data(), B(nv), w + v0 * n_embd, B(n_embd), 1.0f, dhb.data(), B(n_embd));
    }
    for (int64_t i = 0; i < nb; ++i) {
      const float* src = dhb.data() + i * n_embd;
      std::copy(src, src + n_embd, dh + rows[static_cast<size_t>(b0 + i)] * n_embd);
    }
  }
  return result;
}

}  // namespace muninn
