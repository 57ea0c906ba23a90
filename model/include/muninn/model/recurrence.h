// RecurrenceOptions: how generation drives a recurrent-depth core (specs/huginn.md §5, §8):
// iterations, the initial state, adaptive exit, continuous chain-of-thought (warm start) and
// self-speculative decoding. Plain models ignore all of it (they have no recurrent state).
//
// Initial state s₀ (kRandom): embd_scale · TruncNormal(0, σ = √(2/(5·n_embd)), ±3σ), drawn per
// forward from a generator seeded with `seed` (so a generation is reproducible); for Huginn
// (embd_scale = √n_embd) the net σ is √(2/5) = 0.632456. kZero gives exact zeros (what the
// reference's init_scale = 0 does; deterministic at every r).
//
// Warm start (continuous CoT, §8.4): token n+1 starts from token n's final state instead of a
// fresh s₀ — kNormed: the latent ln_f(s_r) (what the minimal and speculative reference paths
// use), kRaw: the core's raw output. The prompt always starts from s₀.
//
// Self-speculative decoding (§8.5) when draft_steps > 0: draft `lookahead` tokens greedily with
// draft_steps iterations, roll the cache back, verify them in one forward at `steps`, accept the
// longest prefix whose verifier argmax equals the draft, replace the first mismatch by a sample
// from the verifier, roll back the rest. Greedy output equals plain greedy output. Every token
// then starts from s₀ (no warm start), and adaptive exit does not combine with it.
#pragma once

#include <cstdint>
#include <random>
#include <string_view>

#include "muninn/core/status.h"
#include "muninn/core/tensor.h"
#include "muninn/model/exit_criterion.h"

namespace muninn::model {

enum class StateInit : uint8_t { kRandom, kZero };
enum class WarmStart : uint8_t { kOff, kNormed, kRaw };

struct RecurrenceOptions {
  int32_t steps = 0;  // core iterations r (0: the model's default, Huginn's mean_recurrence)
  StateInit init = StateInit::kRandom;
  uint64_t seed = 0;
  ExitOptions exit;   // kind kNone: fixed r
  WarmStart warm_start = WarmStart::kNormed;
  int32_t draft_steps = 0;  // > 0: self-speculative decoding with this many draft iterations
  int32_t lookahead = 8;    // tokens drafted per round

  static Status ParseInit(std::string_view name, StateInit* init);       // "random", "zero"
  static Status ParseWarmStart(std::string_view name, WarmStart* warm);  // "off", "normed", "raw"
  Status Validate() const;
};

// s₀ for `n_tokens` positions as a host [n_tokens, n_embd] f32 tensor; an undefined tensor for
// kZero (the forward's zeros).
StatusOr<Tensor> MakeInitialState(StateInit init, int64_t n_tokens, int64_t n_embd,
                                  float embd_scale, std::mt19937_64* rng);

}  // namespace muninn::model
