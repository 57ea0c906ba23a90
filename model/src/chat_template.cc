#include "muninn/model/chat_template.h"

#include <string>

namespace muninn::model {

namespace {

std::string_view Trim(std::string_view s) {
  constexpr std::string_view kSpace = " \t\n\r\f\v";
  const size_t b = s.find_first_not_of(kSpace);
  if (b == std::string_view::npos) return {};
  const size_t e = s.find_last_not_of(kSpace);
  return s.substr(b, e - b + 1);
}

// SmolLM2-style templates carry their default system turn as a literal:
// '<|im_start|>system\n...<|im_end|>\n' inside a `messages[0]['role'] != 'system'` branch.
std::string ExtractChatMlDefaultSystem(std::string_view jinja) {
  if (jinja.find("!= 'system'") == std::string_view::npos &&
      jinja.find("!= \"system\"") == std::string_view::npos) {
    return {};
  }
  constexpr std::string_view kOpen = "<|im_start|>system\n";
  // In the Jinja source the newline may be written as the two characters "\n".
  for (std::string_view open : {kOpen, std::string_view("<|im_start|>system\\n")}) {
    const size_t b = jinja.find(open);
    if (b == std::string_view::npos) continue;
    const size_t start = b + open.size();
    const size_t e = jinja.find("<|im_end|>", start);
    if (e == std::string_view::npos) return {};
    const std::string_view body = jinja.substr(start, e - start);
    // A Jinja expression here means the system text is not a literal default.
    if (body.find("{{") != std::string_view::npos || body.find('\'') != std::string_view::npos ||
        body.find('+') != std::string_view::npos) {
      return {};
    }
    return std::string(body);
  }
  return {};
}

Status CheckRole(const ChatMessage& m) {
  if (m.role.empty()) return InvalidArgumentError("chat message with an empty role");
  if (m.role.find_first_of("\n<>") != std::string::npos) {
    return InvalidArgumentError("chat role '" + m.role.substr(0, 40) +
                                "' contains characters a role cannot have");
  }
  return Status::Ok();
}

}  // namespace

const char* ChatTemplateKindName(ChatTemplateKind kind) {
  switch (kind) {
    case ChatTemplateKind::kChatMl:
      return "chatml";
    case ChatTemplateKind::kLlama3:
      return "llama3";
    case ChatTemplateKind::kHuginn:
      return "huginn";
    case ChatTemplateKind::kPlain:
      return "plain";
  }
  return "unknown";
}

StatusOr<ChatTemplate> ChatTemplate::FromJinja(std::string_view jinja) {
  if (jinja.find("<|im_start|>") != std::string_view::npos) {
    return Of(ChatTemplateKind::kChatMl, ExtractChatMlDefaultSystem(jinja));
  }
  if (jinja.find("<|start_header_id|>") != std::string_view::npos) {
    return Of(ChatTemplateKind::kLlama3);
  }
  if (jinja.find("<|begin_header|>") != std::string_view::npos) {
    return Of(ChatTemplateKind::kHuginn);
  }
  if (jinja.empty()) {
    return UnimplementedError(
        "the checkpoint has no chat template; use plain text prompts or "
        "ask for the plain fallback template");
  }
  return UnimplementedError(
      "unrecognised chat template (muninn knows ChatML/SmolLM2, Llama-3 "
      "and Huginn); it starts with: " +
      std::string(jinja.substr(0, 120)));
}

ChatTemplate ChatTemplate::Of(ChatTemplateKind kind, std::string default_system) {
  return ChatTemplate(kind, std::move(default_system));
}

StatusOr<std::string> ChatTemplate::Render(std::span<const ChatMessage> messages,
                                           bool add_generation_prompt) const {
  for (const ChatMessage& m : messages) RETURN_IF_ERROR(CheckRole(m));
  std::string out;
  const bool has_system = !messages.empty() && messages[0].role == "system";
  switch (kind_) {
    case ChatTemplateKind::kChatMl:
      if (!has_system && !default_system_.empty() && !messages.empty()) {
        out += "<|im_start|>system\n" + default_system_ + "<|im_end|>\n";
      }
      for (const ChatMessage& m : messages) {
        out += "<|im_start|>" + m.role + "\n" + m.content + "<|im_end|>\n";
      }
      if (add_generation_prompt) out += "<|im_start|>assistant\n";
      break;
    case ChatTemplateKind::kLlama3:
      out += "<|begin_of_text|>";
      for (const ChatMessage& m : messages) {
        out += "<|start_header_id|>" + m.role + "<|end_header_id|>\n\n";
        out += Trim(m.content);
        out += "<|eot_id|>";
      }
      if (add_generation_prompt) out += "<|start_header_id|>assistant<|end_header_id|>\n\n";
      break;
    case ChatTemplateKind::kHuginn:
      out += "<|begin_text|>";
      for (const ChatMessage& m : messages) {
        const std::string& role = m.role == "assistant" ? std::string("Huginn") : m.role;
        out += "<|begin_header|>" + role + "<|end_header|>\n\n";
        out += Trim(m.content);
        out += "<|end_turn|>";
      }
      out += add_generation_prompt ? "<|begin_header|>Huginn<|end_header|>\n\n" : "<|end_text|>";
      break;
    case ChatTemplateKind::kPlain:
      for (const ChatMessage& m : messages) out += m.role + ": " + m.content + "\n\n";
      if (add_generation_prompt) out += "assistant: ";
      break;
  }
  return out;
}

}  // namespace muninn::model
