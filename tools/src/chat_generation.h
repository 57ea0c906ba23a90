// Private to tools/: one chat turn through a LongContextSession — render the messages with the
// model's chat template, start a local window on them (retrieving memory for `query_text` when
// the session uses memory), and generate. `muninn ask` and the server's /v1/ask and
// /v1/chat/completions share it.
#pragma once

#include <cstdint>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "muninn/core/status.h"
#include "muninn/memory/memory_bank.h"
#include "muninn/model/chat_template.h"
#include "muninn/model/sampler.h"
#include "muninn/model/tokenizer.h"
#include "muninn/retriever/long_context_session.h"

namespace muninn::tools {

struct ChatTurnOptions {
  retriever::GenerateOptions generate;
  model::SamplerOptions sampling = model::SamplerOptions::Greedy();
  memory::SearchFilter filter;  // which chunks retrieval may return
};

struct ChatTurnResult {
  retriever::GenerateResult generation;
  int64_t prompt_tokens = 0;
  std::vector<memory::SearchHit> hits;  // chunks the answer used: re-read excerpts (document
                                        // order), then chunks attended to (chronological)
  int64_t excerpt_tokens = 0;           // prompt tokens spent on re-read excerpts
};

// Re-read mode: the excerpts as the prompt shows them, in document order, numbered "[1] <text>",
// "[2] <text>", ...; chunks that follow each other in their document form one excerpt. Ends with
// a blank line (empty for no excerpts).
std::string FormatExcerpts(std::span<const retriever::Excerpt> excerpts);

// A text completion's prompt with the excerpts: with kBeforeLastLine, just before the last
// non-empty line of `text` (after a blank line and the line "From earlier in the text:", and
// followed by one line break), so "…document…\n\nFrom earlier in the text:\n[1] excerpt\n
// Question?" reads the excerpt next to the question; with kStart,
// or when `text` is one line, before all of it (FormatExcerpts' block as it is).
// `text` unchanged when there are no excerpts.
std::string CompletionWithExcerpts(std::string_view text,
                                   std::span<const retriever::Excerpt> excerpts,
                                   retriever::ExcerptPlacement placement);

// The last non-empty line of `text` without surrounding whitespace ("" for blank text): the
// question that ends a completion prompt, which excerpt focus matches sentences against.
std::string_view LastLine(std::string_view text);

// The hits of `retrieved` (chunks as RetrieveExcerpts gave them) that lie inside the spans of
// `kept` (the excerpts the prompt shows, possibly joined and focused), in `kept`'s order: the
// chunks an answer read.
std::vector<memory::SearchHit> HitsWithin(std::span<const retriever::Excerpt> retrieved,
                                          std::span<const retriever::Excerpt> kept);

// Removes the excerpt with the lowest retrieval score (the first to go when a prompt is too long).
void DropWeakestExcerpt(std::vector<retriever::Excerpt>* excerpts);

// The conversation with the excerpts in its system message (added first when there is none;
// an existing one keeps its text after the excerpts): "Answer the question using the text
// below.\n\n[1] ...". Of the formats measured on SmolLM2-135M (docs/QUALITY.md) this one made
// the model answer from the text most often instead of echoing the question. Unchanged when there
// are no excerpts.
std::vector<model::ChatMessage> WithExcerpts(std::span<const retriever::Excerpt> excerpts,
                                             std::span<const model::ChatMessage> messages);

// With the session's re-read mode on, the chunks retrieved for `query_text` are put before the
// last user message (dropping the weakest ones until the prompt fits the window).
// ResourceExhausted when the rendered prompt does not fit the session's local window.
StatusOr<ChatTurnResult> RunChatTurn(retriever::LongContextSession& session,
                                     const model::ChatTemplate& chat,
                                     std::span<const model::ChatMessage> messages,
                                     std::string_view query_text, const ChatTurnOptions& options,
                                     const retriever::TextCallback& on_text = {});

// The same for a raw prompt (no template): encoded with the vocabulary's BOS as it asks; the
// excerpts are placed by CompletionWithExcerpts.
// With reread.focus >= 0 both cut each excerpt to the sentences most like the question (the query
// text for a chat turn, the prompt's last line for a completion).
StatusOr<ChatTurnResult> RunCompletion(retriever::LongContextSession& session,
                                       std::string_view prompt, const ChatTurnOptions& options,
                                       const retriever::TextCallback& on_text = {});

}  // namespace muninn::tools
