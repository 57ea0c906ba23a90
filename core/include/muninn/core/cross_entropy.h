// Fused output head + softmax cross-entropy for training: loss and dHidden from the final hidden
// states and the head weight, in blocks of rows, so that the [T, n_vocab] logits (49152 columns for
// SmolLM2) never exist at once: rows in blocks, the vocabulary in tiles with an online
// log-sum-exp. Positions labelled kIgnoreLabel (-100, PyTorch's ignore_index)
// are skipped: they cost nothing and get a zero gradient.
//
// Per supervised row t with logits z = h_t · Wᵀ and label y_t:
//   loss_t = logsumexp(z) - z[y_t],   dh_t = grad_scale · (softmax(z) - onehot(y_t)) · W.
// The head is frozen (tied embeddings or a frozen output matrix): no dW. Thread-compatible;
// results do not depend on the pool's thread count.
#pragma once

#include <cstdint>

#include "muninn/core/status.h"
#include "muninn/core/thread_pool.h"

namespace muninn {

inline constexpr int32_t kIgnoreLabel = -100;

struct CrossEntropyOptions {
  // Multiplier on dh. 0 (default) means 1 / (number of supervised rows): dh is then the gradient
  // of the mean loss. Gradient accumulation over micro-batches passes 1 / (supervised rows of the
  // whole optimizer step) instead.
  float grad_scale = 0.0f;
  // Supervised rows per block and vocabulary rows per tile: the logits live in one
  // [rows_per_block, vocab_block] f32 tile (16 MB at the defaults). W is read twice per row
  // block when dh is wanted (logits recomputed in the gradient pass), so fewer, larger row blocks
  // cost less.
  int64_t rows_per_block = 1024;
  int64_t vocab_block = 4096;
};

struct CrossEntropyResult {
  double loss_sum = 0.0;     // Σ loss_t over supervised rows (natural log)
  int64_t n_supervised = 0;  // rows whose label is not kIgnoreLabel
  double mean() const {
    return n_supervised > 0 ? loss_sum / static_cast<double>(n_supervised) : 0.0;
  }
};

// h: [T, n_embd] (the output norm's result), w: [n_vocab, n_embd] f32 (DequantizeToF32 for a
// quantized head), labels: [T]; dh: [T, n_embd] written, or null for the loss alone.
// InvalidArgument for a label outside [0, n_vocab) other than kIgnoreLabel, or for options out of
// range; nothing is written then.
StatusOr<CrossEntropyResult> FusedCrossEntropy(ThreadPool* pool, const float* h, const float* w,
                                               const int32_t* labels, int64_t T, int64_t n_embd,
                                               int64_t n_vocab, float* dh,
                                               const CrossEntropyOptions& options = {});

}  // namespace muninn
