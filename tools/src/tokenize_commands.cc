// `muninn tokenize`: shows how a model's tokenizer splits a text (ids and pieces), optionally
// after rendering it as a one-message chat with the checkpoint's own template.
#include <cstdio>
#include <filesystem>
#include <memory>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "app_config.h"
#include "command_registry.h"
#include "muninn/model/chat_template.h"
#include "muninn/model/gguf_file.h"
#include "muninn/model/tokenizer.h"
#include "muninn/model/tokenizer_factory.h"

namespace muninn::tools {

namespace {

namespace fs = std::filesystem;

constexpr const char* kDefaultModel = "models/SmolLM2-135M-Instruct.Q4_1.gguf";

// The default model above the executable or the working directory; the relative path itself when
// none is found (the error then names it).
std::string DefaultModelPath() { return FindAboveExeOrCwd(kDefaultModel).value_or(kDefaultModel); }

// Printable form of a piece: control characters and bytes that are not valid UTF-8 as escapes.
std::string Escape(std::string_view piece) {
  std::string out;
  for (size_t i = 0; i < piece.size(); ++i) {
    const auto c = static_cast<unsigned char>(piece[i]);
    if (c == '\n') {
      out += "\\n";
    } else if (c == '\t') {
      out += "\\t";
    } else if (c == '\r') {
      out += "\\r";
    } else if (c < 0x20 || c == 0x7F) {
      char buf[8];
      std::snprintf(buf, sizeof(buf), "\\x%02X", c);
      out += buf;
    } else {
      out.push_back(static_cast<char>(c));
    }
  }
  return out;
}

struct TokenizeFlags {
  std::string model;
  std::string prompt;
  bool json = false;
  bool no_special = false;        // do not add BOS/EOS ([CLS]/[SEP])
  bool no_parse_special = false;  // treat <|im_start|> etc. as plain text
  bool chat = false;              // render as a user message with the chat template first
  bool ids_only = false;
};

std::string ChatTemplateFor(const std::string& path) {
  std::error_code ec;
  if (fs::is_directory(path, ec)) return model::HfChatTemplate(path);
  if (fs::path(path).extension() == ".gguf") {
    auto gguf = model::GgufFile::Open(path);
    if (gguf.ok()) return model::GgufChatTemplate(**gguf);
  }
  return {};
}

int RunTokenize(const TokenizeFlags& f) {
  const std::string path = f.model.empty() ? DefaultModelPath() : f.model;
  auto tok = model::LoadTokenizer(path);
  if (!tok.ok()) {
    std::fprintf(stderr, "muninn tokenize: %s\n", tok.status().ToString().c_str());
    return 1;
  }
  const model::Tokenizer& t = **tok;
  std::string text = f.prompt;
  if (f.chat) {
    auto tmpl = model::ChatTemplate::FromJinja(ChatTemplateFor(path));
    if (!tmpl.ok()) {
      std::fprintf(stderr, "muninn tokenize: %s\n", tmpl.status().ToString().c_str());
      return 1;
    }
    const std::vector<model::ChatMessage> messages = {{"user", f.prompt}};
    auto rendered = tmpl->Render(messages, /*add_generation_prompt=*/true);
    if (!rendered.ok()) {
      std::fprintf(stderr, "muninn tokenize: %s\n", rendered.status().ToString().c_str());
      return 1;
    }
    text = *rendered;
  }
  // A rendered chat already holds its special tokens as text.
  const bool add_special = !f.no_special && !f.chat;
  const std::vector<model::TokenId> ids = t.Encode(text, add_special, !f.no_parse_special);
  if (f.json) {
    nlohmann::json j;
    j["model"] = path;
    j["tokenizer"] = model::TokenizerKindName(t.kind());
    j["vocab_size"] = t.vocab_size();
    j["n_tokens"] = ids.size();
    j["ids"] = ids;
    if (!f.ids_only) {
      nlohmann::json pieces = nlohmann::json::array();
      for (model::TokenId id : ids) {
        pieces.push_back({{"id", id}, {"text", std::string(t.TokenText(id))},
                          {"piece", t.TokenToPiece(id)}});
      }
      j["tokens"] = std::move(pieces);
    }
    // Pieces of split UTF-8 characters are not valid UTF-8 on their own: replace, don't throw.
    std::printf("%s\n", j.dump(2, ' ', false, nlohmann::json::error_handler_t::replace).c_str());
    return 0;
  }
  if (f.ids_only) {
    std::string line = "[";
    for (size_t i = 0; i < ids.size(); ++i) line += (i ? ", " : "") + std::to_string(ids[i]);
    std::printf("%s]\n", line.c_str());
    return 0;
  }
  for (model::TokenId id : ids) {
    std::printf("%6d -> '%s'\n", id, Escape(t.TokenToPiece(id)).c_str());
  }
  std::fprintf(stderr, "%zu tokens (%s, vocabulary %d)\n", ids.size(),
               model::TokenizerKindName(t.kind()), t.vocab_size());
  return 0;
}

}  // namespace

void RegisterTokenizeCommands(CLI::App& app, CommandContext& ctx) {
  auto* cmd = app.add_subcommand("tokenize", "Show the token ids and pieces of a text");
  auto flags = std::make_shared<TokenizeFlags>();
  cmd->add_option("-m,--model", flags->model,
                  std::string("GGUF file, HF folder, tokenizer.json or tokenizer.model (default: ") +
                      kDefaultModel + ")");
  cmd->add_option("-p,--prompt", flags->prompt, "Text to tokenize")->required();
  cmd->add_flag("--json", flags->json, "Print JSON");
  cmd->add_flag("--ids-only", flags->ids_only, "Print only the ids");
  cmd->add_flag("--no-special", flags->no_special, "Do not add BOS/EOS ([CLS]/[SEP])");
  cmd->add_flag("--no-parse-special", flags->no_parse_special,
                "Tokenize special-token text such as <|im_start|> as plain text");
  cmd->add_flag("--chat", flags->chat,
                "Render the prompt as a user message with the model's chat template first");
  cmd->callback([&ctx, flags] { ctx.exit_code = RunTokenize(*flags); });
}

}  // namespace muninn::tools
