// `muninn summarize`, `muninn ingest`, `muninn ask`, `muninn eval passkey|perplexity`.
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <optional>
#include <sstream>

#include <nlohmann/json.hpp>

#include "chat_generation.h"
#include "command_registry.h"
#include "document_catalog.h"
#include "plot.h"
#include "progress.h"
#include "text_input.h"
#include "runtime.h"
#include "muninn/tools/evals.h"
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
    auto id = (*rt)->bank()->BeginDocument(f.file);
    if (!id.ok()) return Fail(id.status());
    o.doc_id = *id;
  }
  auto result = Summarize((*rt)->session(), (*rt)->chat(), *text, o,
                          [&](std::string_view stage, int64_t done, int64_t total) {
                            progress.Update(stage, done, total);
                          },
                          f.json ? retriever::TextCallback{} : PrintText);
  if (!result.ok()) return Fail(result.status());
  if (!f.rt.bank.empty()) {
    memory::DocumentRecord r{o.doc_id, f.file, result->n_tokens, memory::DocumentState::kComplete};
    if (auto s = (*rt)->bank()->PutDocument(r); !s.ok()) return Fail(s);
  }
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

// ---- eval ----------------------------------------------------------------------------------
struct PasskeyFlags {
  RuntimeFlags rt;
  std::vector<int64_t> lengths = {4096, 8192, 16384, 32768, 81920};
  std::vector<double> depths = {0.0, 0.25, 0.5, 0.75, 1.0};
  int64_t trials = 1;
  int64_t local_tokens = 1024;
  uint64_t seed = 1;
  std::string memory = "both";
  std::string json_out;
  std::string plot;
};

int RunPasskeyCommand(const PasskeyFlags& f) {
  if (!f.rt.bank.empty()) return Fail(InvalidArgumentError("eval passkey uses a bank in RAM; drop --bank"));
  if (f.memory != "on" && f.memory != "off" && f.memory != "both") {
    return Fail(InvalidArgumentError("--memory must be on, off or both"));
  }
  auto rt = Runtime::Open(f.rt);
  if (!rt.ok()) return Fail(rt.status());
  PasskeyOptions o;
  o.lengths = f.lengths;
  o.depths = f.depths;
  o.trials = f.trials;
  o.local_tokens = f.local_tokens;
  o.seed = f.seed;
  Progress progress("passkey");
  nlohmann::json results = nlohmann::json::object();
  nlohmann::json summary = nlohmann::json::object();
  std::vector<PlotSeries> series;
  for (const char* mode : {"on", "off"}) {
    if (f.memory != "both" && f.memory != mode) continue;
    retriever::LongContextOptions lo = (*rt)->session().options();
    lo.use_memory = std::string(mode) == "on";
    auto session = (*rt)->NewSession(lo);
    if (!session.ok()) return Fail(session.status());
    int64_t done = 0;
    const int64_t total = static_cast<int64_t>(o.lengths.size() * o.depths.size()) * o.trials;
    auto trials = RunPasskey(**session, o, [&] { return (*rt)->ResetBank(); },
                             [&](const PasskeyTrial& t) {
                               progress.Update(std::string("memory ") + mode, ++done, total);
                               (void)t;
                             });
    if (!trials.ok()) return Fail(trials.status());
    nlohmann::json arr = nlohmann::json::array();
    PlotSeries s{std::string("memory ") + mode, {}};
    nlohmann::json pts = nlohmann::json::array();
    for (int64_t len : o.lengths) {
      int64_t pass = 0, retrieved = 0, in_window = 0, n = 0;
      for (const PasskeyTrial& t : *trials) {
        if (t.requested_length != len) continue;
        pass += t.pass ? 1 : 0;
        retrieved += t.key_retrieved ? 1 : 0;
        in_window += t.key_in_window ? 1 : 0;
        ++n;
      }
      const auto pct = [n](int64_t k) { return n ? 100.0 * static_cast<double>(k) / static_cast<double>(n) : 0.0; };
      s.points.emplace_back(static_cast<double>(len), pct(pass));
      // Separates finding the key (retrieval) from reading it (the model): a trial can retrieve
      // the key's chunk and still answer wrong, or pass because the key sits in the window.
      pts.push_back({{"length", len}, {"trials", n}, {"accuracy_percent", pct(pass)},
                     {"key_retrieved_percent", pct(retrieved)},
                     {"key_in_window_percent", pct(in_window)}});
    }
    for (const auto& t : *trials) arr.push_back(ToJson(t));
    results[std::string("memory_") + mode] = arr;
    summary[std::string("memory ") + mode] = pts;
    series.push_back(std::move(s));
  }
  nlohmann::json j = {{"eval", "passkey"}, {"summary", summary}, {"trials", results},
                      {"local_tokens", o.local_tokens}, {"seed", o.seed}};
  const std::string dump = j.dump(2, ' ', false, nlohmann::json::error_handler_t::replace);
  if (!f.json_out.empty()) {
    std::ofstream(f.json_out) << dump << "\n";
  }
  std::printf("%s\n", dump.c_str());
  if (!f.plot.empty()) {
    if (auto s = WriteLinePlot(f.plot, "passkey retrieval", "prompt tokens", "accuracy (%)", series, true);
        !s.ok()) {
      return Fail(s);
    }
    std::fprintf(stderr, "[passkey] plot written to %s\n", f.plot.c_str());
  }
  return 0;
}

struct PerplexityFlags {
  RuntimeFlags rt;
  std::string text;
  int64_t seq_len = 4096;
  int64_t scored = 1024;
  int64_t windows = 4;
  bool no_full = false;
};

int RunPerplexityCommand(const PerplexityFlags& f) {
  auto text = ReadFile(f.text.empty() ? RepoRoot() + "/data/kjv.txt" : f.text);
  if (!text.ok()) return Fail(text.status().WithContext("run scripts/setup.sh for data/kjv.txt, or pass --text"));
  auto rt = Runtime::Open(f.rt);
  if (!rt.ok()) return Fail(rt.status());
  retriever::LongContextOptions plain = (*rt)->session().options();
  plain.use_memory = false;
  plain.local_window = std::max(plain.local_window, f.no_full ? f.scored : f.seq_len);
  auto plain_session = (*rt)->NewSession(plain);
  if (!plain_session.ok()) return Fail(plain_session.status());
  PerplexityOptions o;
  o.seq_len = f.seq_len;
  o.scored_tokens = f.scored;
  o.max_windows = f.windows;
  o.full_attention = !f.no_full;
  Progress progress("perplexity");
  auto r = RunPerplexity((*rt)->session(), **plain_session, *text, o,
                         [&](int64_t d, int64_t t) { progress.Update("windows", d, t); });
  if (!r.ok()) return Fail(r.status());
  nlohmann::json j = ToJson(*r);
  j["eval"] = "perplexity";
  j["seq_len"] = o.seq_len;
  std::printf("%s\n", j.dump(2).c_str());
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
    cmd->add_option("--max-input-bytes", f->max_input_bytes,
                    "Refuse a file larger than this (default 256 MiB)")
        ->check(CLI::Range(int64_t{1}, int64_t{1} << 40));
    cmd->add_flag("--binary-ok", f->binary_ok,
                  "Store files that look binary (NUL bytes, mostly invalid UTF-8) as text anyway");
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
  auto* eval = app.add_subcommand("eval", "Long-context evaluations");
  eval->require_subcommand(1);
  {
    auto f = std::make_shared<PasskeyFlags>();
    auto* cmd = eval->add_subcommand("passkey", "Passkey retrieval vs prompt length and depth");
    cmd->add_option("--lengths", f->lengths, "Prompt lengths in tokens")->delimiter(',');
    cmd->add_option("--depths", f->depths, "Key depths in [0, 1]")->delimiter(',');
    cmd->add_option("--trials", f->trials, "Trials per (length, depth)")->check(CLI::Range(1, 1000));
    cmd->add_option("--local-tokens", f->local_tokens, "Local window tokens")->check(CLI::Range(64, 1 << 20));
    cmd->add_option("--seed", f->seed, "Seed for the keys");
    cmd->add_option("--memory", f->memory, "on, off (sliding window) or both");
    cmd->add_option("--json-out", f->json_out, "Also write the JSON here");
    cmd->add_option("--plot", f->plot, "Write a PNG plot of accuracy vs length (needs gnuplot)");
    AddRuntimeFlags(cmd, &f->rt);
    cmd->callback([&ctx, f] { ctx.exit_code = RunPasskeyCommand(*f); });
  }
  {
    auto f = std::make_shared<PerplexityFlags>();
    auto* cmd = eval->add_subcommand("perplexity", "MemLong-protocol perplexity (default text: data/kjv.txt)");
    cmd->add_option("--text", f->text, "Text file");
    cmd->add_option("--seq-len", f->seq_len, "Evaluation window")->check(CLI::Range(2, 1 << 24));
    cmd->add_option("--scored", f->scored, "Scored tail per window")->check(CLI::Range(2, 1 << 20));
    cmd->add_option("--windows", f->windows, "Windows to evaluate (0 = all)")->check(CLI::Range(0, 1 << 20));
    cmd->add_flag("--no-full", f->no_full, "Skip the full-attention baseline");
    AddRuntimeFlags(cmd, &f->rt);
    cmd->callback([&ctx, f] { ctx.exit_code = RunPerplexityCommand(*f); });
  }
}

}  // namespace muninn::tools
