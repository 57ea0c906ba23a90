// Summarizer: summaries of documents of any length that cover the whole document, not only what
// one retrieval returns.
//
//   1. the document is ingested into the memory bank (the session's write path);
//   2. it is cut into sections that fit the local window; each section is summarized with the
//      section as the local window and, through retrieval attention, the earlier parts of the
//      document as memory (filter: this document, positions before the section);
//   3. the section summaries are merged — in rounds when they do not fit one window — into one
//      final summary, which is streamed.
// Thread-compatible (it drives one session).
#pragma once

#include <cstdint>
#include <functional>
#include <string>
#include <string_view>
#include <vector>

#include "muninn/core/status.h"
#include "muninn/model/chat_template.h"
#include "muninn/model/sampler.h"
#include "muninn/retriever/long_context_session.h"

namespace muninn::tools {

struct SummarizerOptions {
  int64_t section_tokens = 1536;       // tokens of document text per section
  int64_t section_summary_tokens = 96; // generation budget per section summary
  int64_t max_tokens = 256;            // budget of the final summary
  // Greedy with a repetition penalty: small models loop on greedy alone.
  model::SamplerOptions sampling = [] {
    model::SamplerOptions o = model::SamplerOptions::Greedy();
    o.repeat_penalty = 1.3f;
    o.repeat_last_n = 128;
    return o;
  }();
  bool ingest = true;                  // false: the document is already in the bank
  memory::DocumentId doc_id = 1;
  Status Validate() const;
};

// Stage names passed to progress: "ingest", "sections", "merge".
using SummarizeProgress = std::function<void(std::string_view stage, int64_t done, int64_t total)>;

struct SummaryResult {
  std::string summary;
  std::vector<std::string> section_summaries;
  int64_t n_tokens = 0;  // document tokens
  int64_t n_sections = 0;
};

// `on_text` receives the final summary as it is generated. InvalidArgument for an empty (or
// whitespace-only) document.
StatusOr<SummaryResult> Summarize(retriever::LongContextSession& session,
                                  const model::ChatTemplate& chat, std::string_view text,
                                  const SummarizerOptions& options,
                                  const SummarizeProgress& progress = {},
                                  const retriever::TextCallback& on_text = {});

}  // namespace muninn::tools
