// HuginnWriter: writes a random Huginn checkpoint folder (config.json with Huginn's own keys and
// an F32 model.safetensors with the "transformer.*" names and shapes of specs/huginn.md §6), for
// tests and benchmarks; no real weights are needed.
//
// Values come from a counter-based generator: element i of tensor k (k = position in the order
// below) is splitmix64(seed·2^40 + k·2^28 + i) mapped to a uniform u in [-1, 1), then
// offset + scale·u rounded to f32. Order and scales: wte (0.5), adapter (2·√(3/(2h)), the state
// half of its columns times state_damp), ln_f (1 ± 0.1), then per physical layer norm_1, Wqkv
// (√(3/h)), qk_bias (0.1), attn.proj (√(3/h)), norm_2, mlp.fc (√(3/h)), mlp.proj (√(3/n_ff)),
// norm_3, norm_4 (norms 1 ± 0.1). tools/reference/make_huginn_goldens.py implements the same
// generator, so its float64 goldens apply to the folder written here.
#pragma once

#include <cstdint>
#include <string>

#include "muninn/core/status.h"

namespace muninn::model {

struct HuginnWriterOptions {
  int32_t n_embd = 64;
  int32_t n_head = 4;
  int32_t n_ff = 128;
  int32_t n_vocab = 300;
  int32_t n_prelude = 2;
  int32_t n_core = 4;
  int32_t n_coda = 2;
  int32_t mean_recurrence = 32;
  int32_t block_size = 256;
  uint64_t seed = 6;
  double state_damp = 0.1;   // < 1 makes the core contractive, as a trained one converges
  bool write_config = true;  // false: only model.safetensors (config.json comes from elsewhere)
  bool qk_bias = true;
};

// Writes `dir`/config.json (unless !write_config) and `dir`/model.safetensors.
Status WriteRandomHuginn(const std::string& dir, const HuginnWriterOptions& options);

}  // namespace muninn::model
