// Helpers shared by the memory bank tests: deterministic chunk generation and temp directories.
#pragma once

#include <unistd.h>

#include <cmath>
#include <cstdint>
#include <filesystem>
#include <random>
#include <string>
#include <vector>

#include "muninn/core/tensor.h"
#include "muninn/memory/chunk_record.h"

namespace muninn::memory::testing {

// A removed-on-destruction directory under the system temp dir.
class TempDir {
 public:
  explicit TempDir(const std::string& tag) {
    path_ = (std::filesystem::temp_directory_path() /
             ("muninn_" + tag + "_" + std::to_string(::getpid()) + "_" +
              std::to_string(counter_++)))
                .string();
    std::filesystem::remove_all(path_);
    std::filesystem::create_directories(path_);
  }
  ~TempDir() {
    std::error_code ec;
    std::filesystem::remove_all(path_, ec);
  }
  const std::string& path() const { return path_; }

 private:
  static inline int counter_ = 0;
  std::string path_;
};

// Owns the storage a ChunkInput borrows. Everything is a pure function of (doc, position, seed),
// so a test (or another process) can regenerate and compare it.
struct OwnedChunk {
  std::vector<int32_t> tokens;
  std::string text;
  std::vector<float> embedding;
  Tensor k, v;
  DocumentId doc = 0;
  int64_t position = 0;

  // A view of this chunk for Append (valid while *this lives and is not moved).
  ChunkInput Input() const {
    ChunkInput in;
    in.doc_id = doc;
    in.position = position;
    in.tokens = tokens;
    in.text = text;
    in.embedding = embedding;
    in.k = k;
    in.v = v;
    return in;
  }

  OwnedChunk(DocumentId doc_id, int64_t pos, int64_t n_tokens, int64_t dim, int64_t n_head_kv,
             int64_t head_dim, uint64_t seed = 0) {
    doc = doc_id;
    position = pos;
    std::mt19937_64 rng(seed * 1000003u + doc * 7919u + static_cast<uint64_t>(position));
    std::normal_distribution<float> nd(0.0f, 1.0f);
    for (int64_t i = 0; i < n_tokens; ++i) tokens.push_back(static_cast<int32_t>(rng() % 32000));
    text = "doc " + std::to_string(doc) + " pos " + std::to_string(position);
    embedding.resize(static_cast<size_t>(dim));
    double norm = 0;
    for (auto& x : embedding) {
      x = nd(rng);
      norm += static_cast<double>(x) * x;
    }
    for (auto& x : embedding) x = static_cast<float>(x / std::sqrt(norm));
    k = Tensor::Empty(DType::kF32, Shape{n_head_kv, n_tokens, head_dim}).value();
    v = Tensor::Empty(DType::kF32, Shape{n_head_kv, n_tokens, head_dim}).value();
    for (int64_t i = 0; i < k.numel(); ++i) {
      k.data_as<float>()[i] = nd(rng);
      v.data_as<float>()[i] = nd(rng);
    }
  }
};

}  // namespace muninn::memory::testing
