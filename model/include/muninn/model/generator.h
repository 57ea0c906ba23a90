// Generate: prompt ids in, sampled continuation out, through a Model and its KV cache.
//
// One batched prefill of the prompt (continuing whatever the cache already holds), then one
// decode step per token until: an end-of-generation token (the tokenizer's eog ids, not emitted
// as text), a stop string (the text up to it is kept, the stop string itself is not emitted),
// max_tokens, the callback asking to stop, or the context being full.
//
// Streaming: on_text receives text as soon as it is certain, i.e. complete UTF-8 characters (the
// tokenizer's IncrementalDetokenizer) that cannot be the start of a stop string; the
// concatenation of all on_text calls equals GenerateResult::text.
//
// Context: a prompt that does not fit in the cache is ResourceExhausted before any work (the
// cache is unchanged); running out of room while generating ends with StopReason::kContextFull.
// Longer inputs belong to the long-context session (retriever/), not here.
//
// Recurrent-depth models (Huginn) take GenerateOptions::recurrence (recurrence.h): iterations,
// initial state, adaptive per-token exit, warm start, and self-speculative decoding, which
// replaces the one-token decode loop by draft/verify rounds (same stop rules, same result).
#pragma once

#include <cstdint>
#include <functional>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "muninn/core/status.h"
#include "muninn/model/kv_cache.h"
#include "muninn/model/model.h"
#include "muninn/model/recurrence.h"
#include "muninn/model/sampler.h"
#include "muninn/model/tokenizer.h"

namespace muninn::model {

enum class StopReason : uint8_t {
  kEog,          // an end-of-generation token
  kStopString,   // one of GenerateOptions::stop
  kMaxTokens,
  kContextFull,  // the KV cache has no room for another token
  kCallback,     // on_token returned false
};
const char* StopReasonName(StopReason reason);

struct GenerateOptions {
  int32_t max_tokens = 128;        // >= 0
  SamplerOptions sampler;
  std::vector<std::string> stop;   // stop strings (non-empty)
  bool stop_at_eog = true;         // end at the tokenizer's eog ids
  // Per sampled token (eog included), before its text is streamed; return false to stop.
  std::function<bool(TokenId)> on_token;
  // Streamed text (see the file comment).
  std::function<void(std::string_view)> on_text;
  RecurrenceOptions recurrence;  // recurrent models only
  Status Validate() const;
};

struct GenerateResult {
  std::vector<TokenId> tokens;  // the sampled ids, eog included when it ended the generation
  std::string text;             // the streamed text (without a stop string)
  StopReason stop_reason = StopReason::kMaxTokens;
  int64_t n_prompt = 0;
  double prefill_seconds = 0.0;
  double decode_seconds = 0.0;  // all decode steps, sampling included
  // Recurrent models: core iterations summed over the decode forwards (prefill excluded) and
  // their count, so mean_steps() is the mean exit step under adaptive exit.
  int64_t decode_core_steps = 0;
  int64_t decode_forwards = 0;
  int32_t prefill_steps = 0;
  // Self-speculative decoding: tokens drafted and accepted by the verifier, rounds run.
  int64_t n_drafted = 0;
  int64_t n_accepted = 0;
  int64_t n_rounds = 0;
  double mean_steps() const {
    return decode_forwards > 0 ? static_cast<double>(decode_core_steps) / decode_forwards : 0.0;
  }
};

// `tokenizer` may be null: then no text is produced and stop strings cannot match (an error if
// any are given). `cache` must have been made by `model`.
StatusOr<GenerateResult> Generate(Model& model, KvCache& cache, const Tokenizer* tokenizer,
                                  std::span<const TokenId> prompt, const GenerateOptions& options);

}  // namespace muninn::model
