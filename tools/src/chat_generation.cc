#include "chat_generation.h"

#include <algorithm>
#include <utility>

#include "muninn/retriever/excerpt_focus.h"

namespace muninn::tools {

std::string FormatExcerpts(std::span<const retriever::Excerpt> excerpts) {
  // Chunks that follow each other in a document are one excerpt: a sentence cut by a chunk
  // boundary (e.g. "The pass key is" | "28813.") reads whole.
  std::string out;
  int n = 0;
  for (size_t i = 0; i < excerpts.size(); ++i) {
    const retriever::Excerpt& e = excerpts[i];
    const bool continues = i > 0 && retriever::Adjoins(excerpts[i - 1].hit, e.hit);
    std::string text = e.text;
    if (!continues) {
      size_t b = 0;
      while (b < text.size() && (text[b] == '\n' || text[b] == ' ')) ++b;
      text = text.substr(b);
      if (n > 0) out += "\n\n";
      out += "[" + std::to_string(++n) + "] ";
    }
    out += text;
    const bool next_continues = i + 1 < excerpts.size() && retriever::Adjoins(e.hit, excerpts[i + 1].hit);
    if (!next_continues) {
      while (!out.empty() && (out.back() == '\n' || out.back() == ' ')) out.pop_back();
    }
  }
  if (!out.empty()) out += "\n\n";
  return out;
}

namespace {

bool Blank(char c) { return c == ' ' || c == '\t' || c == '\r' || c == '\n'; }

// [begin, end) of the last non-empty line of `text`; begin == end == 0 when it is blank.
std::pair<size_t, size_t> LastLineSpan(std::string_view text) {
  size_t end = text.size();
  while (end > 0 && Blank(text[end - 1])) --end;
  if (end == 0) return {0, 0};
  const size_t nl = text.rfind('\n', end - 1);
  size_t begin = nl == std::string_view::npos ? 0 : nl + 1;
  while (begin < end && Blank(text[begin])) ++begin;
  return {begin, end};
}

}  // namespace

// The line before excerpts placed inside a completion: they are quoted from the same text.
constexpr const char* kEarlierHeader = "From earlier in the text:\n";

std::string_view LastLine(std::string_view text) {
  const auto [b, e] = LastLineSpan(text);
  return text.substr(b, e - b);
}

std::string CompletionWithExcerpts(std::string_view text,
                                   std::span<const retriever::Excerpt> excerpts,
                                   retriever::ExcerptPlacement placement) {
  if (excerpts.empty()) return std::string(text);
  const std::string block = FormatExcerpts(excerpts);
  const auto [b, e] = LastLineSpan(text);
  // The head must hold something besides whitespace, else the prompt is one line.
  size_t head_end = b;
  while (head_end > 0 && Blank(text[head_end - 1])) --head_end;
  if (placement == retriever::ExcerptPlacement::kStart || e == 0 || head_end == 0) {
    return block + std::string(text);
  }
  // A header line says where the excerpts come from, and the question follows the last one on
  // the next line. Measured on passkeys at 8k (20 trials per filler; docs/QUALITY.md, "Excerpt
  // focus"): with neither (a blank line before the question) the 135M model answered 12/20 on
  // repeat filler, and 2/20 KJV passkeys at 32k; without the header, 20/20 repeat and KJV but 0/20
  // on the World English Bible; with both, 20/20, 20/20 and 19/20.
  std::string quoted = block;
  while (!quoted.empty() && quoted.back() == '\n') quoted.pop_back();
  return std::string(text.substr(0, head_end)) + "\n\n" + kEarlierHeader + quoted + "\n" +
         std::string(text.substr(b));
}

std::vector<memory::SearchHit> HitsWithin(std::span<const retriever::Excerpt> retrieved,
                                          std::span<const retriever::Excerpt> kept) {
  std::vector<memory::SearchHit> out;
  for (const retriever::Excerpt& k : kept) {
    for (const retriever::Excerpt& r : retrieved) {
      if (r.hit.doc_id == k.hit.doc_id && r.hit.position >= k.hit.position &&
          r.hit.position < k.hit.position + std::max<int64_t>(k.hit.n_tokens, 1)) {
        out.push_back(r.hit);
      }
    }
  }
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
  std::vector<retriever::Excerpt> retrieved, excerpts;
  if (session.options().has(retriever::kModeReread) && !messages.empty()) {
    ASSIGN_OR_RETURN(retrieved, session.RetrieveExcerpts(query_text, options.filter));
    ASSIGN_OR_RETURN(excerpts, session.FocusExcerpts(query_text, retrieved));
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
    std::vector<memory::SearchHit> hits = HitsWithin(retrieved, excerpts);
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
  // excerpts go before the prompt's last line (reread.placement; the prompt's end stays its end,
  // as a completion continues it), cut to the sentences most like that line (reread.focus).
  std::vector<retriever::Excerpt> retrieved, excerpts;
  if (session.options().has(retriever::kModeReread)) {
    ASSIGN_OR_RETURN(retrieved, session.RetrieveExcerpts(prompt, options.filter));
    ASSIGN_OR_RETURN(excerpts, session.FocusExcerpts(LastLine(prompt), retrieved));
  }
  std::vector<model::TokenId> ids;
  while (true) {
    const std::string text =
        CompletionWithExcerpts(prompt, excerpts, session.options().reread.placement);
    ids = session.tokenizer()->Encode(text, true, false);
    if (excerpts.empty() || static_cast<int64_t>(ids.size()) <= session.options().local_window - 16) {
      break;
    }
    DropWeakestExcerpt(&excerpts);
  }
  ASSIGN_OR_RETURN(ChatTurnResult result, Run(session, ids, prompt, options, on_text));
  if (!excerpts.empty()) {
    std::vector<memory::SearchHit> hits = HitsWithin(retrieved, excerpts);
    hits.insert(hits.end(), result.hits.begin(), result.hits.end());
    result.hits = std::move(hits);
  }
  return result;
}

}  // namespace muninn::tools
