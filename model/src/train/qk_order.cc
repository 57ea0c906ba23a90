#include "train/qk_order.h"

#include <cstring>
#include <vector>

namespace muninn::model::train {

void PermuteHeadRows(float* b, int64_t n_head, int64_t hd, int64_t cols, bool gguf_to_hf) {
  std::vector<float> out(static_cast<size_t>(n_head * hd * cols));
  for (int64_t h = 0; h < n_head; ++h) {
    for (int64_t i = 0; i < hd / 2; ++i) {
      for (int64_t j = 0; j < 2; ++j) {
        const int64_t gguf = h * hd + 2 * i + j, hf = h * hd + j * (hd / 2) + i;
        const int64_t from = gguf_to_hf ? gguf : hf, to = gguf_to_hf ? hf : gguf;
        std::memcpy(out.data() + to * cols, b + from * cols,
                    static_cast<size_t>(cols) * sizeof(float));
      }
    }
  }
  std::memcpy(b, out.data(), out.size() * sizeof(float));
}

}  // namespace muninn::model::train
