// ChatTemplate: renders {role, content} messages into the prompt text a chat checkpoint was
// trained on. muninn does not run Jinja: it recognises the checkpoint's own template string
// (tokenizer.chat_template in GGUF, chat_template in tokenizer_config.json) as one of the
// families below and renders that family's format in C++.
//
//   kChatMl   <|im_start|>{role}\n{content}<|im_end|>\n ... [<|im_start|>assistant\n]
//             (SmolLM2's template is ChatML plus a default system message, taken verbatim from
//             the template, when the first message is not a system message)
//   kLlama3   <|begin_of_text|><|start_header_id|>{role}<|end_header_id|>\n\n{content|trim}
//             <|eot_id|> ... [<|start_header_id|>assistant<|end_header_id|>\n\n]
//             (Llama-3.1+ templates are recognised too; their date/tools preamble is not rendered)
//   kHuginn   <|begin_text|><|begin_header|>{role}<|end_header|>\n\n{content|trim}<|end_turn|>
//             ... then <|begin_header|>Huginn<|end_header|>\n\n, or <|end_text|> without a
//             generation prompt; "assistant" is written as "Huginn" (specs/huginn.md §9)
//   kPlain    the documented fallback for unknown templates, only when asked for explicitly:
//             "{role}: {content}\n\n" per message and "assistant: " as the generation prompt.
//
// The rendered text contains special tokens as text: encode it with add_special = false and
// parse_special = true. Immutable; thread-safe.
#pragma once

#include <span>
#include <string>
#include <string_view>

#include "muninn/core/status.h"

namespace muninn::model {

struct ChatMessage {
  std::string role;  // "system", "user", "assistant"
  std::string content;
};

enum class ChatTemplateKind { kChatMl, kLlama3, kHuginn, kPlain };

const char* ChatTemplateKindName(ChatTemplateKind kind);

class ChatTemplate {
 public:
  // Recognises a Jinja template. Unimplemented (naming the families muninn knows) when the
  // template is empty or not one of them; callers may then choose ChatTemplate::Plain().
  static StatusOr<ChatTemplate> FromJinja(std::string_view jinja);
  static ChatTemplate Of(ChatTemplateKind kind, std::string default_system = {});
  static ChatTemplate Plain() { return Of(ChatTemplateKind::kPlain); }

  ChatTemplateKind kind() const { return kind_; }
  // The system message inserted when the conversation has none ("" for none).
  const std::string& default_system() const { return default_system_; }

  // InvalidArgument for an empty role or a role the format cannot express.
  StatusOr<std::string> Render(std::span<const ChatMessage> messages,
                               bool add_generation_prompt) const;

 private:
  ChatTemplate(ChatTemplateKind kind, std::string default_system)
      : kind_(kind), default_system_(std::move(default_system)) {}
  ChatTemplateKind kind_;
  std::string default_system_;
};

}  // namespace muninn::model
