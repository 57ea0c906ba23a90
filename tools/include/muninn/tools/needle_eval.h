// Needle-in-a-haystack question answering over natural prose (issue: memory that helps).
//
// A sentence-long fact ("Tavish's boat was named Marigold.") is inserted at a chosen depth into a
// stretch of real text (KJV, WEB, ...) of a chosen length. The whole document is ingested into a
// memory bank, then the question ("What was the name of Tavish's boat?") is asked exactly as
// `muninn ask` asks it (RunChatTurn: chat template, the session's memory modes, greedy). A trial
// passes when the answer contains the fact's answer word (case-insensitive).
//
// The in-window ceiling: the same fact inside a short passage of the same text, put in the prompt
// in the same excerpt format, memory off — what the model can do when the fact is in its window.
#pragma once

#include <cstdint>
#include <functional>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "muninn/core/status.h"
#include "muninn/model/chat_template.h"
#include "muninn/retriever/long_context_session.h"
#include "muninn/tools/evals.h"

namespace muninn::tools {

struct NeedleFact {
  std::string sentence;  // "Tavish's boat was named Marigold."
  std::string question;  // "What was the name of Tavish's boat?"
  std::string answer;    // "Marigold": a pass needs this word in the response
};
// A fact made from fixed lists of invented names, places and words, chosen by `seed`.
NeedleFact MakeNeedleFact(uint64_t seed);

struct NeedleOptions {
  std::vector<int64_t> lengths = {4096, 16384, 32768, 65536};  // document tokens
  std::vector<double> depths = {0.0, 0.25, 0.5, 0.75, 1.0};
  int64_t trials = 10;       // per (filler, length, depth), each a different fact (the haystack
                             // is one per (filler, length, seed))
  uint64_t seed = 1;
  std::vector<FillerText> fillers;  // prose (RepeatFiller is allowed but is not natural text)
  int64_t max_tokens = 24;   // answer budget
  // Ceiling run: no bank; the fact sits in a passage of ceiling_tokens in the prompt.
  bool ceiling = false;
  int64_t ceiling_tokens = 512;
  Status Validate() const;
};

struct NeedleTrial {
  std::string filler;
  int64_t requested_length = 0;
  int64_t length = 0;  // document tokens as built (ceiling: the passage)
  double depth = 0.0;
  std::string question;
  std::string expected;
  std::string response;
  bool pass = false;
  bool fact_retrieved = false;  // a chunk the answer used holds the fact
  bool ceiling = false;
};

// `reset_bank` empties the session's bank before each trial (unused for the ceiling).
StatusOr<std::vector<NeedleTrial>> RunNeedle(
    retriever::LongContextSession& session, const model::ChatTemplate& chat,
    const NeedleOptions& options, const std::function<Status()>& reset_bank,
    const std::function<void(const NeedleTrial&)>& on_trial = {});

nlohmann::json ToJson(const NeedleTrial& t);

}  // namespace muninn::tools
