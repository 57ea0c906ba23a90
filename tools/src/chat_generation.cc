#include "chat_generation.h"

namespace muninn::tools {
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
  result.hits = session.retrieved().hits;
  ASSIGN_OR_RETURN(result.generation, session.Generate(options.generate, sampler, on_text));
  return result;
}

}  // namespace

StatusOr<ChatTurnResult> RunChatTurn(retriever::LongContextSession& session,
                                     const model::ChatTemplate& chat,
                                     std::span<const model::ChatMessage> messages,
                                     std::string_view query_text, const ChatTurnOptions& options,
                                     const retriever::TextCallback& on_text) {
  ASSIGN_OR_RETURN(const std::string prompt, chat.Render(messages, true));
  const auto ids = session.tokenizer()->Encode(prompt, false, true);
  return Run(session, ids, query_text, options, on_text);
}

StatusOr<ChatTurnResult> RunCompletion(retriever::LongContextSession& session,
                                       std::string_view prompt, const ChatTurnOptions& options,
                                       const retriever::TextCallback& on_text) {
  // Raw text: special-token strings in it are plain text, not control tokens.
  const auto ids = session.tokenizer()->Encode(prompt, true, false);
  return Run(session, ids, prompt, options, on_text);
}

}  // namespace muninn::tools
