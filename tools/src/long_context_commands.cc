// `muninn ingest`, `muninn ask`.
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <optional>
#include <sstream>

#include <nlohmann/json.hpp>

#include "chat_generation.h"
#include "command_registry.h"
#include "document_catalog.h"
#include "progress.h"
#include "text_input.h"
#include "runtime.h"

namespace muninn::tools {
namespace {

int Fail(const Status& s) {
  std::fprintf(stderr, "muninn: %s\n", s.ToString().c_str());
  return s.code() == StatusCode::kInvalidArgument || s.code() == StatusCode::kNotFound ? 2 : 1;
}

void PrintText(std::string_view piece) {
  std::fwrite(piece.data(), 1, piece.size(), stdout);
  std::fflush(stdout);
}

// ---- ingest --------------------------------------------------------------------------------
struct IngestFlags {
  RuntimeFlags rt;
  std::vector<std::string> files;
  bool json = false;
  int64_t max_input_bytes = kDefaultMaxInputBytes;
  bool binary_ok = false;
};

// The file's text, bounded and checked (not a directory, not empty, not binary).
StatusOr<std::string> ReadIngestInput(const IngestFlags& f, const std::string& file) {
  ASSIGN_OR_RETURN(std::string text, ReadFileBounded(file, f.max_input_bytes));
  RETURN_IF_ERROR(CheckTextInput(text, "'" + file + "'", f.binary_ok, "Pass --binary-ok"));
  return text;
}

int RunIngest(const IngestFlags& f) {
  if (f.rt.bank.empty()) return Fail(InvalidArgumentError("ingest needs --bank DIR"));
  // Every input is checked before the model loads or the bank is touched. Regular files are read
  // again when their turn comes (memory stays one file); pipes and devices (/dev/stdin) can be
  // read once only, so their text is kept.
  std::vector<std::optional<std::string>> kept(f.files.size());
  for (size_t i = 0; i < f.files.size(); ++i) {
    auto text = ReadIngestInput(f, f.files[i]);
    if (!text.ok()) return Fail(text.status());
    std::error_code ec;
    if (!std::filesystem::is_regular_file(f.files[i], ec)) kept[i] = std::move(*text);
  }
  auto rt = Runtime::Open(f.rt);
  if (!rt.ok()) return Fail(rt.status());
  memory::MemoryBank* bank = (*rt)->bank();
  Progress progress("ingest");
  nlohmann::json out = nlohmann::json::array();
  for (size_t i = 0; i < f.files.size(); ++i) {
    const std::string& file = f.files[i];
    auto text = kept[i] ? StatusOr<std::string>(std::move(*kept[i])) : ReadIngestInput(f, file);
    if (!text.ok()) return Fail(text.status());
    // The id comes from the bank, which records the document as partial before its first chunk:
    // if this process dies part-way, the chunks stay listed as "FILE (partial)".
    auto doc = bank->BeginDocument(file);
    if (!doc.ok()) return Fail(doc.status());
    const uint64_t id = *doc;
    auto stats = (*rt)->session().IngestText(id, *text, [&](int64_t done, int64_t total) {
      progress.Update(file, done, total);
    });
    if (!stats.ok()) {
      return Fail(stats.status().WithContext(
          "ingesting '" + file + "' (what was stored is listed as '" + file +
          " (partial)'; remove it with `muninn bank delete --bank " + f.rt.bank + " --doc " +
          std::to_string(id) + "`)"));
    }
    memory::DocumentRecord r{id, file, stats->n_tokens, memory::DocumentState::kComplete};
    if (auto s = bank->PutDocument(r); !s.ok()) return Fail(s);
    out.push_back({{"file", file}, {"doc_id", id}, {"tokens", stats->n_tokens}, {"chunks", stats->n_chunks}});
    if (!f.json) {
      std::printf("%s: document %llu, %lld tokens, %lld chunks\n", file.c_str(),
                  static_cast<unsigned long long>(id), static_cast<long long>(stats->n_tokens),
                  static_cast<long long>(stats->n_chunks));
    }
  }
  if (auto s = (*rt)->bank()->Flush(); !s.ok()) return Fail(s);
  if (f.json) std::printf("%s\n", out.dump(2).c_str());
  return 0;
}

// ---- ask -----------------------------------------------------------------------------------
struct AskFlags {
  RuntimeFlags rt;
  std::string question;
  int64_t max_tokens = 256;
  int64_t top_k = -1;
  bool json = false;
};

int RunAsk(AskFlags f) {
  if (f.rt.bank.empty()) return Fail(InvalidArgumentError("ask needs --bank DIR (made by `muninn ingest`)"));
  if (f.question.empty()) return Fail(InvalidArgumentError("the question is empty"));
  if (f.max_tokens < 1) return Fail(InvalidArgumentError("--max-tokens must be >= 1"));
  f.rt.create_bank = false;
  auto rt = Runtime::Open(f.rt);
  if (!rt.ok()) return Fail(rt.status());
  retriever::LongContextSession* session = &(*rt)->session();
  std::unique_ptr<retriever::LongContextSession> custom;
  if (f.top_k >= 0) {
    retriever::LongContextOptions o = session->options();
    o.top_k = f.top_k;
    o.reread.top_k = f.top_k;
    o.context.top_k = f.top_k;
    auto s = (*rt)->NewSession(o);
    if (!s.ok()) return Fail(s.status());
    custom = std::move(*s);
    session = custom.get();
  }
  const model::ChatMessage msg{"user", f.question};
  ChatTurnOptions turn;
  turn.generate.max_tokens = f.max_tokens;
  auto answer = RunChatTurn(*session, (*rt)->chat(), std::span<const model::ChatMessage>(&msg, 1),
                            f.question, turn, f.json ? retriever::TextCallback{} : PrintText);
  if (!answer.ok()) return Fail(answer.status());
  nlohmann::json chunks = nlohmann::json::array();
  for (const auto& h : answer->hits) {
    chunks.push_back({{"chunk_id", h.id}, {"document", DocumentName(*(*rt)->bank(), h.doc_id)}, {"doc_id", h.doc_id},
                      {"token_offset", h.position}, {"tokens", h.n_tokens}, {"score", h.score}});
  }
  if (f.json) {
    nlohmann::json j = {{"question", f.question}, {"answer", answer->generation.text}, {"chunks", chunks}};
    std::printf("%s\n", j.dump(2, ' ', false, nlohmann::json::error_handler_t::replace).c_str());
  } else {
    std::printf("\n");
    std::fprintf(stderr, "[ask] %zu chunks used:\n", answer->hits.size());
    for (const auto& c : chunks) {
      std::fprintf(stderr, "  %s, tokens %lld-%lld (score %.3f)\n", c["document"].get<std::string>().c_str(),
                   static_cast<long long>(c["token_offset"].get<int64_t>()),
                   static_cast<long long>(c["token_offset"].get<int64_t>() + c["tokens"].get<int64_t>()),
                   c["score"].get<double>());
    }
  }
  return 0;
}

}  // namespace

void RegisterLongContextCommands(CLI::App& app, CommandContext& ctx) {
  {
    auto f = std::make_shared<IngestFlags>();
    auto* cmd = app.add_subcommand("ingest", "Store documents in a memory bank");
    cmd->add_option("files", f->files, "Text files")->required();
    cmd->add_flag("--json", f->json, "Print JSON");
    cmd->add_option("--max-input-bytes", f->max_input_bytes,
                    "Refuse a file larger than this (default 256 MiB)")
        ->check(CLI::Range(int64_t{1}, int64_t{1} << 40));
    cmd->add_flag("--binary-ok", f->binary_ok,
                  "Store files that look binary (NUL bytes, mostly invalid UTF-8) as text anyway");
    AddRuntimeFlags(cmd, &f->rt);
    AddDeviceFlag(cmd, &f->rt);
    cmd->callback([&ctx, f] { ctx.exit_code = RunIngest(*f); });
  }
  {
    auto f = std::make_shared<AskFlags>();
    auto* cmd = app.add_subcommand("ask", "Answer a question from an ingested memory bank");
    cmd->add_option("question", f->question, "The question")->required();
    cmd->add_option("--max-tokens", f->max_tokens, "Answer length budget")->check(CLI::Range(1, 100000));
    cmd->add_option("--top-k", f->top_k, "Chunks to retrieve (default from the config)")->check(CLI::Range(0, 4096));
    cmd->add_flag("--json", f->json, "Print JSON (answer and chunks used)");
    AddRuntimeFlags(cmd, &f->rt);
    AddDeviceFlag(cmd, &f->rt);
    cmd->callback([&ctx, f] { ctx.exit_code = RunAsk(*f); });
  }
}

}  // namespace muninn::tools
