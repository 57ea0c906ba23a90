#include "muninn/tools/summarizer.h"

#include <algorithm>

namespace muninn::tools {

Status SummarizerOptions::Validate() const {
  if (section_tokens < 16) return InvalidArgumentError("section_tokens must be at least 16");
  if (section_summary_tokens < 1) return InvalidArgumentError("section_summary_tokens must be >= 1");
  if (max_tokens < 1) return InvalidArgumentError("max_tokens must be >= 1");
  return sampling.Validate();
}

namespace {

bool IsBlank(std::string_view s) {
  return std::all_of(s.begin(), s.end(), [](char c) {
    return c == ' ' || c == '\n' || c == '\t' || c == '\r' || c == '\f' || c == '\v';
  });
}

std::string Trim(std::string s) {
  const auto blank = [](char c) { return c == ' ' || c == '\n' || c == '\t' || c == '\r'; };
  while (!s.empty() && blank(s.back())) s.pop_back();
  size_t i = 0;
  while (i < s.size() && blank(s[i])) ++i;
  return s.substr(i);
}

// Renders one user turn and generates the assistant's answer.
StatusOr<std::string> Ask(retriever::LongContextSession& session, const model::ChatTemplate& chat,
                          const std::string& instruction, std::string_view query,
                          const memory::SearchFilter& filter, int64_t max_tokens,
                          const model::SamplerOptions& sampling,
                          const retriever::TextCallback& on_text) {
  const model::ChatMessage msg{"user", instruction};
  ASSIGN_OR_RETURN(std::string prompt, chat.Render(std::span<const model::ChatMessage>(&msg, 1),
                                                   /*add_generation_prompt=*/true));
  const std::vector<model::TokenId> ids =
      session.tokenizer()->Encode(prompt, /*add_special=*/false, /*parse_special=*/true);
  RETURN_IF_ERROR(session.Begin(ids, query, filter));
  ASSIGN_OR_RETURN(model::Sampler sampler, model::Sampler::Create(sampling));
  retriever::GenerateOptions go;
  go.max_tokens = max_tokens;
  ASSIGN_OR_RETURN(retriever::GenerateResult r, session.Generate(go, sampler, on_text));
  // Streamed text is returned as streamed; only text nobody saw yet is tidied.
  return on_text ? std::move(r.text) : Trim(std::move(r.text));
}

}  // namespace

StatusOr<SummaryResult> Summarize(retriever::LongContextSession& session,
                                  const model::ChatTemplate& chat, std::string_view text,
                                  const SummarizerOptions& options,
                                  const SummarizeProgress& progress,
                                  const retriever::TextCallback& on_text) {
  RETURN_IF_ERROR(options.Validate());
  if (IsBlank(text)) {
    return InvalidArgumentError("the document is empty (or only whitespace): nothing to summarize");
  }
  const model::Tokenizer& tok = *session.tokenizer();
  const std::vector<model::TokenId> tokens = tok.Encode(text, false, false);
  SummaryResult result;
  result.n_tokens = static_cast<int64_t>(tokens.size());
  const int64_t window = session.options().local_window;
  // Room for the instruction and the answer around a section.
  const int64_t overhead = 64 + options.section_summary_tokens;
  const int64_t section = std::min(options.section_tokens, window - overhead);
  if (section < 16) {
    return InvalidArgumentError("the local window (" + std::to_string(window) +
                                " tokens) is too small for sections and their summaries");
  }

  if (options.ingest && session.options().use_memory) {
    RETURN_IF_ERROR(session
                        .IngestTokens(options.doc_id, tokens, 0,
                                      [&](int64_t done, int64_t total) {
                                        if (progress) progress("ingest", done, total);
                                      })
                        .status());
  }

  const int64_t n = result.n_tokens;
  result.n_sections = (n + section - 1) / section;
  for (int64_t s = 0; s < result.n_sections; ++s) {
    const int64_t b = s * section;
    const int64_t e = std::min(n, b + section);
    const std::string body = tok.Decode(std::span<const model::TokenId>(tokens).subspan(
                                            static_cast<size_t>(b), static_cast<size_t>(e - b)),
                                        true);
    memory::SearchFilter filter;
    filter.doc_ids = {options.doc_id};
    filter.before_position = b;  // earlier parts only: never the section itself or the future
    // The instruction follows the passage: small models keep to it better when it comes last.
    const std::string instruction =
        "Passage (part " + std::to_string(s + 1) + " of " + std::to_string(result.n_sections) +
        " of a longer text):\n\n" + body +
        "\n\nSummarize the passage above in two or three sentences.";
    ASSIGN_OR_RETURN(std::string summary,
                     Ask(session, chat, instruction, body, filter, options.section_summary_tokens,
                         options.sampling, {}));
    result.section_summaries.push_back(std::move(summary));
    if (progress) progress("sections", s + 1, result.n_sections);
  }

  if (result.n_sections == 1) {
    result.summary = result.section_summaries[0];
    if (on_text) on_text(result.summary);
    return result;
  }

  // Merge rounds: group consecutive summaries into prompts that fit the window until one remains.
  std::vector<std::string> level = result.section_summaries;
  int64_t round = 0;
  while (true) {
    ++round;
    std::vector<std::string> next;
    memory::SearchFilter doc_filter;
    doc_filter.doc_ids = {options.doc_id};
    std::string group;
    int64_t group_tokens = 0;
    std::vector<std::pair<std::string, int64_t>> groups;  // text, count
    int64_t count = 0;
    for (size_t i = 0; i < level.size(); ++i) {
      const std::string item = std::to_string(i + 1) + ". " + level[i] + "\n";
      const int64_t t = static_cast<int64_t>(tok.Encode(item, false, false).size());
      if (count > 0 && group_tokens + t > section) {
        groups.emplace_back(group, count);
        group.clear();
        group_tokens = 0;
        count = 0;
      }
      group += item;
      group_tokens += t;
      ++count;
    }
    if (count > 0) groups.emplace_back(group, count);
    const bool final_round = groups.size() == 1;
    for (size_t g = 0; g < groups.size(); ++g) {
      const std::string instruction =
          "Here are summaries of consecutive parts of a document, in order:\n\n" + groups[g].first +
          "\nWrite one summary of " + (final_round ? "the whole document" : "these parts") +
          " that covers its beginning, middle and end.";
      ASSIGN_OR_RETURN(std::string merged,
                       Ask(session, chat, instruction, groups[g].first, doc_filter,
                           final_round ? options.max_tokens : options.section_summary_tokens * 2,
                           options.sampling, final_round ? on_text : retriever::TextCallback{}));
      next.push_back(std::move(merged));
      if (progress) progress("merge", static_cast<int64_t>(g + 1), static_cast<int64_t>(groups.size()));
    }
    level = std::move(next);
    if (final_round) break;
    if (round > 16) return InternalError("summary merging did not converge");
  }
  result.summary = level[0];
  return result;
}

}  // namespace muninn::tools
