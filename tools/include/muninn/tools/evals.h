// Long-context evaluations (specs/memlong.md §12), run through a LongContextSession.
//
// Passkey retrieval: filler text (the classic repeated sentences, or real prose) with a 5-digit key
// at a chosen depth and the question at the end. The last `local_tokens` of the prompt form the
// local window; everything before it is ingested into memory (memory on) or dropped (memory off:
// a plain sliding window). Retrieval is queried with the last 32 tokens of the window (the
// question). In re-read mode the retrieved chunks' text is put before the window. A trial passes
// when the greedy answer contains the key.
//
// Perplexity (MemLong protocol): the text is cut into consecutive evaluation windows of seq_len
// tokens; in each, the prefix (all but the last `scored_tokens`) is ingested into memory, which
// persists across windows (never reset, like the paper), and the last `scored_tokens` are scored
// as one local window that retrieves from memory. Retrieval is queried with the `query_tokens`
// tokens just before the scored window (what a reader has seen; never the scored text itself).
// In re-read mode the retrieved chunks' tokens (document order) are run before the scored window.
// Baselines: the same scored tokens with memory off (sliding window), and full attention over the
// whole window where it fits the model.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "muninn/core/status.h"
#include "muninn/retriever/long_context_session.h"

namespace muninn::tools {

// Text that fills a haystack: `text` empty means the classic repeated sentences ("The grass is
// green. The sky is blue. ..."); otherwise real prose, from which each trial takes a stretch
// starting at a seed-chosen line.
struct FillerText {
  std::string name;  // "repeat", "kjv", "web", ...
  std::string text;
};
FillerText RepeatFiller();

// `n_tokens` tokens of filler (decoded back to text), starting at a line chosen by `seed`.
StatusOr<std::string> HaystackText(const model::Tokenizer& tok, const FillerText& filler,
                                   int64_t n_tokens, uint64_t seed);
// `hay` with `sentence` inserted at the line (prose) or sentence (repeat filler) boundary nearest
// to `depth` (0: the start, 1: the end).
std::string InsertAtDepth(const std::string& hay, const std::string& sentence, double depth);

struct PasskeyOptions {
  std::vector<int64_t> lengths = {4096, 8192, 16384, 32768, 81920};  // prompt tokens
  std::vector<double> depths = {0.0, 0.25, 0.5, 0.75, 1.0};          // key position, fraction
  int64_t trials = 1;          // per (length, depth), different keys
  int64_t local_tokens = 1024; // tail of the prompt kept as the local window
  uint64_t seed = 1;
  std::vector<FillerText> fillers = {RepeatFiller()};  // every (length, depth) runs on each
  Status Validate() const;
};

struct PasskeyTrial {
  std::string filler;            // FillerText::name
  int64_t requested_length = 0;  // the length asked for (PasskeyOptions::lengths)
  int64_t length = 0;            // prompt tokens, as built
  double depth = 0.0;
  std::string key;
  std::string answer;
  bool pass = false;
  bool key_in_window = false;  // the key sits inside the local window (no memory needed)
  int64_t retrieved_chunks = 0;
  bool key_retrieved = false;  // one of the retrieved chunks contains the key
};

// The fixed filler/question text for a trial (exposed for tests).
struct PasskeyPrompt {
  std::string prefix_text;  // everything before the local window
  std::string window_text;  // the local window (ends with the question)
  std::string key;
};
StatusOr<PasskeyPrompt> BuildPasskeyPrompt(const model::Tokenizer& tok, int64_t length,
                                           double depth, int64_t local_tokens, uint64_t seed,
                                           const FillerText& filler = RepeatFiller());

// Runs every (length, depth, trial); `session` must have memory on for the memory variant. The
// bank is reset between trials through `reset_bank` (called before each trial).
StatusOr<std::vector<PasskeyTrial>> RunPasskey(retriever::LongContextSession& session,
                                               const PasskeyOptions& options,
                                               const std::function<Status()>& reset_bank,
                                               const std::function<void(const PasskeyTrial&)>& on_trial = {});

struct PerplexityOptions {
  int64_t seq_len = 4096;        // evaluation window
  int64_t scored_tokens = 1024;  // scored tail of each window (MemLong L_c)
  int64_t max_windows = 8;       // 0 = the whole text
  bool full_attention = true;    // also score with the whole window as local context when it fits
  int64_t query_tokens = 128;    // retrieval query: the tokens just before the scored window
  Status Validate() const;
};

struct PerplexityResult {
  std::string modes;  // the memory session's modes (MemoryModesName)
  int64_t windows = 0;
  int64_t scored_tokens = 0;
  double ppl_memory = 0.0;
  double ppl_sliding = 0.0;
  double ppl_full = 0.0;  // 0 when not run
};

// `memory_session` and `plain_session` share the model; `plain_session` has use_memory off and a
// local window of at least seq_len when full attention is wanted.
StatusOr<PerplexityResult> RunPerplexity(retriever::LongContextSession& memory_session,
                                         retriever::LongContextSession& plain_session,
                                         std::string_view text, const PerplexityOptions& options,
                                         const std::function<void(int64_t, int64_t)>& progress = {});

nlohmann::json ToJson(const PasskeyTrial& t);
nlohmann::json ToJson(const PerplexityResult& r);

}  // namespace muninn::tools
