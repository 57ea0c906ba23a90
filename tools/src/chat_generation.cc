#include "chat_generation.h"

#include <algorithm>

namespace muninn::tools {

std::string FormatExcerpts(std::span<const retriever::Excerpt> excerpts) {
  // Chunks that follow each other in a document are one excerpt: a sentence cut by a chunk
  // boundary (e.g. "The pass key is" | "28813.") reads whole.
  std::string out;
  int n = 0;
  for (size_t i = 0; i < excerpts.size(); ++i) {
    const retriever::Excerpt& e = excerpts[i];
    const bool continues = i > 0 && excerpts[i - 1].hit.doc_id == e.hit.doc_id &&
                           excerpts[i - 1].hit.position + excerpts[i - 1].hit.n_tokens == e.hit.position;
    std::string text = e.text;
    if (!continues) {
      size_t b = 0;
      while (b < text.size() && (text[b] == '\n' || text[b] == ' ')) ++b;
      text = text.substr(b);
      if (n > 0) out += "\n\n";
      out += "[" + std::to_string(++n) + "] ";
    }
    out += text;
    const bool next_continues = i + 1 < excerpts.size() && excerpts[i + 1].hit.doc_id == e.hit.doc_id &&
                                e.hit.position + e.hit.n_tokens == excerpts[i + 1].hit.position;
    if (!next_continues) {
      while (!out.empty() && (out.back() == '\n' || out.back() == ' ')) out.pop_back();
    }
  }
  if (!out.empty()) out += "\n\n";
  return out;
}

void DropWeakestExcerpt(std::vector<retriever::Excerpt>* excerpts) {
  if (excerpts->empty()) return;
  excerpts->erase(std::min_element(excerpts->begin(), excerpts->end(), [](const auto& a, const auto& b) {
    return a.hit.score < b.hit.score;
  }));
}

std::vector<model::ChatMessage> WithExcerpts(std::span<const retriever::Excerpt> excerpts,
                                             std::span<const model::ChatMessage> messages) {
  std::vector<model::ChatMessage> out(messages.begin(), messages.end());
  if (excerpts.empty()) return out;
  std::string system = "Answer the question using the text below.\n\n" + FormatExcerpts(excerpts);
  while (!system.empty() && system.back() == '\n') system.pop_back();
  if (!out.empty() && out[0].role == "system") {
    if (!out[0].content.empty()) system += "\n\n" + out[0].content;
    out[0].content = std::move(system);
  } else {
    out.insert(out.begin(), model::ChatMessage{"system", std::move(system)});
  }
  return out;
}

namespace {

StatusOr<ChatTurnResult> Run(retriever::LongContextSession& session,
                             const std::vector<model::TokenId>& ids, std::string_view query_text,
                             const ChatTurnOptions& options,
                             const retriever::TextCallback& on_text) {
  if (ids.empty()) return InvalidArgumentError("the prompt encodes to no tokens");
  ASSIGN_OR_RETURN(auto sampler, model::Sampler::Create(options.sampling));
  RETURN_IF_ERROR(session.Begin(ids, query_text, options.filter));
  ChatTurnResult result;
  result.prompt_tokens = static_cast<int64_t>(ids.size());
  // Retrieval happens in Begin; copy the hits before generation can overflow and re-retrieve.
  result.hits.insert(result.hits.end(), session.retrieved().hits.begin(),
                     session.retrieved().hits.end());
  ASSIGN_OR_RETURN(result.generation, session.Generate(options.generate, sampler, on_text));
  return result;
}

}  // namespace

StatusOr<ChatTurnResult> RunChatTurn(retriever::LongContextSession& session,
                                     const model::ChatTemplate& chat,
                                     std::span<const model::ChatMessage> messages,
                                     std::string_view query_text, const ChatTurnOptions& options,
                                     const retriever::TextCallback& on_text) {
  std::vector<retriever::Excerpt> excerpts;
  if (session.options().has(retriever::kModeReread) && !messages.empty()) {
    ASSIGN_OR_RETURN(excerpts, session.RetrieveExcerpts(query_text, options.filter));
  }
  // The system message carries the excerpts; the weakest excerpt goes first when the prompt does
  // not fit the window (generation overflows into memory, the prompt cannot).
  std::vector<model::TokenId> ids;
  while (true) {
    const std::vector<model::ChatMessage> msgs = WithExcerpts(excerpts, messages);
    ASSIGN_OR_RETURN(const std::string prompt, chat.Render(msgs, true));
    ids = session.tokenizer()->Encode(prompt, false, true);
    // Keep room for a few generated tokens before the window overflows.
    const int64_t room = session.options().local_window - 16;
    if (excerpts.empty() || static_cast<int64_t>(ids.size()) <= room) break;
    DropWeakestExcerpt(&excerpts);
  }
  ASSIGN_OR_RETURN(ChatTurnResult result, Run(session, ids, query_text, options, on_text));
  if (!excerpts.empty()) {
    std::vector<memory::SearchHit> hits;
    for (const auto& e : excerpts) hits.push_back(e.hit);
    hits.insert(hits.end(), result.hits.begin(), result.hits.end());
    result.hits = std::move(hits);
    ASSIGN_OR_RETURN(const std::string plain, chat.Render(messages, true));
    result.excerpt_tokens =
        result.prompt_tokens -
        static_cast<int64_t>(session.tokenizer()->Encode(plain, false, true).size());
  }
  return result;
}

StatusOr<ChatTurnResult> RunCompletion(retriever::LongContextSession& session,
                                       std::string_view prompt, const ChatTurnOptions& options,
                                       const retriever::TextCallback& on_text) {
  // Raw text: special-token strings in it are plain text, not control tokens. In re-read mode the
  // excerpts come first (a completion continues the prompt, so nothing may follow it).
  std::vector<retriever::Excerpt> excerpts;
  if (session.options().has(retriever::kModeReread)) {
    ASSIGN_OR_RETURN(excerpts, session.RetrieveExcerpts(prompt, options.filter));
  }
  std::vector<model::TokenId> ids;
  while (true) {
    const std::string text =
        excerpts.empty() ? std::string(prompt) : FormatExcerpts(excerpts) + std::string(prompt);
    ids = session.tokenizer()->Encode(text, true, false);
    if (excerpts.empty() || static_cast<int64_t>(ids.size()) <= session.options().local_window - 16) {
      break;
    }
    DropWeakestExcerpt(&excerpts);
  }
  ASSIGN_OR_RETURN(ChatTurnResult result, Run(session, ids, prompt, options, on_text));
  if (!excerpts.empty()) {
    std::vector<memory::SearchHit> hits;
    for (const auto& e : excerpts) hits.push_back(e.hit);
    hits.insert(hits.end(), result.hits.begin(), result.hits.end());
    result.hits = std::move(hits);
  }
  return result;
}

}  // namespace muninn::tools
