// `muninn summarize`, `muninn ingest`, `muninn ask`.
#include <cstdio>
#include <fstream>
#include <sstream>

#include <nlohmann/json.hpp>

#include "chat_generation.h"
#include "command_registry.h"
#include "document_catalog.h"
#include "progress.h"
#include "runtime.h"
#include "muninn/tools/summarizer.h"

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

// ---- summarize -----------------------------------------------------------------------------
struct SummarizeFlags {
  RuntimeFlags rt;
  std::string file;
  int64_t max_tokens = 0;
  bool json = false;
};

int RunSummarize(const SummarizeFlags& f) {
  auto text = ReadFile(f.file);
  if (!text.ok()) return Fail(text.status());
  Progress progress("summarize");
  progress.Message("loading the model");
  auto rt = Runtime::Open(f.rt);
  if (!rt.ok()) return Fail(rt.status());
  SummarizerOptions o = (*rt)->config().summarize;
  if (f.max_tokens > 0) o.max_tokens = f.max_tokens;
  if (!f.rt.bank.empty()) {
    auto catalog = DocumentCatalog::Load(f.rt.bank);
    if (!catalog.ok()) return Fail(catalog.status());
    o.doc_id = catalog->NextId();
    catalog->Put(o.doc_id, {f.file, 0});
    if (auto s = catalog->Save(); !s.ok()) return Fail(s);
  }
  auto result = Summarize((*rt)->session(), (*rt)->chat(), *text, o,
                          [&](std::string_view stage, int64_t done, int64_t total) {
                            progress.Update(stage, done, total);
                          },
                          f.json ? retriever::TextCallback{} : PrintText);
  if (!result.ok()) return Fail(result.status());
  if (f.json) {
    nlohmann::json j = {{"file", f.file}, {"tokens", result->n_tokens},
                        {"sections", result->n_sections}, {"summary", result->summary},
                        {"section_summaries", result->section_summaries}};
    std::printf("%s\n", j.dump(2, ' ', false, nlohmann::json::error_handler_t::replace).c_str());
  } else {
    std::printf("\n");
  }
  return 0;
}

// ---- ingest --------------------------------------------------------------------------------
struct IngestFlags {
  RuntimeFlags rt;
  std::vector<std::string> files;
  bool json = false;
};

int RunIngest(const IngestFlags& f) {
  if (f.rt.bank.empty()) return Fail(InvalidArgumentError("ingest needs --bank DIR"));
  auto rt = Runtime::Open(f.rt);
  if (!rt.ok()) return Fail(rt.status());
  auto catalog = DocumentCatalog::Load(f.rt.bank);
  if (!catalog.ok()) return Fail(catalog.status());
  Progress progress("ingest");
  nlohmann::json out = nlohmann::json::array();
  for (const std::string& file : f.files) {
    auto text = ReadFile(file);
    if (!text.ok()) return Fail(text.status());
    const uint64_t id = catalog->NextId();
    auto stats = (*rt)->session().IngestText(id, *text, [&](int64_t done, int64_t total) {
      progress.Update(file, done, total);
    });
    if (!stats.ok()) return Fail(stats.status().WithContext("ingesting '" + file + "'"));
    catalog->Put(id, {file, stats->n_tokens});
    if (auto s = catalog->Save(); !s.ok()) return Fail(s);
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
  auto catalog = DocumentCatalog::Load(f.rt.bank);
  if (!catalog.ok()) return Fail(catalog.status());
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
    chunks.push_back({{"chunk_id", h.id}, {"document", catalog->NameOf(h.doc_id)}, {"doc_id", h.doc_id},
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
    auto f = std::make_shared<SummarizeFlags>();
    auto* cmd = app.add_subcommand("summarize", "Summarize a document of any length (summary on stdout)");
    cmd->add_option("file", f->file, "Text file to summarize")->required();
    cmd->add_option("--max-tokens", f->max_tokens, "Length budget of the final summary")->check(CLI::Range(1, 100000));
    cmd->add_flag("--json", f->json, "Print JSON (summary and section summaries) instead of streaming");
    AddRuntimeFlags(cmd, &f->rt);
    cmd->callback([&ctx, f] { ctx.exit_code = RunSummarize(*f); });
  }
  {
    auto f = std::make_shared<IngestFlags>();
    auto* cmd = app.add_subcommand("ingest", "Store documents in a memory bank");
    cmd->add_option("files", f->files, "Text files")->required();
    cmd->add_flag("--json", f->json, "Print JSON");
    AddRuntimeFlags(cmd, &f->rt);
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
    cmd->callback([&ctx, f] { ctx.exit_code = RunAsk(*f); });
  }
}

}  // namespace muninn::tools
