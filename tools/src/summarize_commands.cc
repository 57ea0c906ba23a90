// `muninn summarize FILE` and `muninn eval summary FILE…` (summarizer.h, summary_eval.h).
#include <chrono>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>

#include "command_registry.h"
#include "muninn/tools/document_text.h"
#include "muninn/tools/summarizer.h"
#include "muninn/tools/summary_eval.h"
#include "progress.h"
#include "runtime.h"

namespace muninn::tools {
namespace {

int Fail(const Status& s) {
  std::fprintf(stderr, "muninn: %s\n", s.ToString().c_str());
  return s.code() == StatusCode::kInvalidArgument || s.code() == StatusCode::kNotFound ? 2 : 1;
}

double SecondsSince(std::chrono::steady_clock::time_point t0) {
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
}

struct SummaryFlags {
  RuntimeFlags rt;
  std::string style = "sections";
  int64_t max_tokens = 0;
  int64_t max_bytes = kDefaultMaxDocumentBytes;
  int64_t section_tokens = 0;
  int64_t sentences = 0;
  bool no_condense = false;
};

void AddSummaryFlags(CLI::App* cmd, SummaryFlags* f) {
  cmd->add_option("--style", f->style,
                  "brief (one paragraph), sections (one line per section) or outline (nested)")
      ->check(CLI::IsMember({"brief", "sections", "outline"}));
  cmd->add_option("--max-tokens", f->max_tokens, "Token budget of the brief summary")
      ->check(CLI::Range(1, 100000));
  cmd->add_option("--max-bytes", f->max_bytes, "Refuse documents larger than this (default 16 MiB)")
      ->check(CLI::Range(int64_t{1}, int64_t{1} << 40));
  cmd->add_option("--section-tokens", f->section_tokens,
                  "Document tokens per section (default from the config)")
      ->check(CLI::Range(16, 1 << 24));
  cmd->add_option("--sentences", f->sentences,
                  "Lines extracted per section (default from the config)")
      ->check(CLI::Range(1, 64));
  cmd->add_flag("--no-condense", f->no_condense,
                "Extracted sentences only: the model does not shorten them");
  AddRuntimeFlags(cmd, &f->rt);
  AddDeviceFlag(cmd, &f->rt);
}

// Loads the runtime and a memory-less session (a summary reads the text directly; condensing a
// sentence needs no retrieval).
struct Loaded {
  std::unique_ptr<Runtime> rt;
  std::unique_ptr<retriever::LongContextSession> session;
  SummarizerOptions options;
};

StatusOr<Loaded> Load(const SummaryFlags& f) {
  if (!f.rt.bank.empty()) {
    return InvalidArgumentError(
        "summarize reads the file directly and stores nothing; drop --bank "
        "(`muninn ingest --bank DIR FILE` stores a document)");
  }
  Loaded l;
  ASSIGN_OR_RETURN(l.rt, Runtime::Open(f.rt));
  retriever::LongContextOptions lo = l.rt->session().options();
  lo.use_memory = false;
  ASSIGN_OR_RETURN(l.session, l.rt->NewSession(lo));
  l.options = l.rt->config().summarize;
  if (f.max_tokens > 0) l.options.max_tokens = f.max_tokens;
  if (f.section_tokens > 0) l.options.section_tokens = f.section_tokens;
  if (f.sentences > 0) l.options.sentences_per_section = f.sentences;
  l.options.max_input_bytes = f.max_bytes;
  l.options.condense = l.options.condense && !f.no_condense;
  l.options.ingest = false;
  // Sentence embeddings need a text encoder; the model's hidden-state embedder reads tokens.
  retriever::Embedder* e = l.rt->embedder();
  l.options.embedder = e != nullptr && e->name() == "minilm" ? e : nullptr;
  RETURN_IF_ERROR(l.options.Validate());
  return l;
}

nlohmann::json LineJson(const SummaryLine& l) {
  return {{"text", l.text}, {"begin", l.begin}, {"end", l.end}, {"condensed", l.condensed}};
}

nlohmann::json NodeJson(const SummaryResult& r, size_t level, size_t index) {
  const SummaryNode& n = r.levels[level][index];
  nlohmann::json lines = nlohmann::json::array();
  for (const SummaryLine& l : n.lines) lines.push_back(LineJson(l));
  nlohmann::json j = {{"label", n.label}, {"begin", n.begin}, {"end", n.end}, {"lines", lines}};
  if (level > 0) {
    nlohmann::json children = nlohmann::json::array();
    for (int64_t c : n.children) children.push_back(NodeJson(r, level - 1, static_cast<size_t>(c)));
    j["children"] = children;
  }
  return j;
}

nlohmann::json ResultJson(const std::string& file, const std::string& style, const SummaryResult& r,
                          double seconds) {
  nlohmann::json sections = nlohmann::json::array();
  for (size_t i = 0; i < r.sections().size(); ++i) sections.push_back(NodeJson(r, 0, i));
  SummaryStyle s = SummaryStyle::kSections;
  ParseSummaryStyle(style, &s);
  return {{"file", file},
          {"style", style},
          {"bytes", r.n_bytes},
          {"tokens", r.n_tokens},
          {"sentences", r.n_sentences},
          {"sections", r.n_sections},
          {"seconds", seconds},
          {"generated_tokens", r.generated_tokens},
          {"condensed_kept", r.condensed_kept},
          {"condensed_rejected", r.condensed_rejected},
          {"summary", RenderSummary(r, s)},
          {"brief", r.summary},
          {"section_summaries", sections},
          {"tree", NodeJson(r, r.levels.size() - 1, 0)}};
}

std::string Dump(const nlohmann::json& j) {
  return j.dump(2, ' ', false, nlohmann::json::error_handler_t::replace);
}

// Reads a document and checks it before anything slow (the model) is loaded.
StatusOr<std::string> ReadDocument(const std::string& file, int64_t max_bytes) {
  ASSIGN_OR_RETURN(std::string text, ReadFile(file));
  RETURN_IF_ERROR(CheckDocumentText(text, max_bytes).WithContext("'" + file + "'"));
  return text;
}

SummarizeProgress ProgressTo(Progress* p) {
  return
      [p](std::string_view stage, int64_t done, int64_t total) { p->Update(stage, done, total); };
}

// ---- summarize -----------------------------------------------------------------------------
struct SummarizeFlags {
  SummaryFlags s;
  std::string file;
  bool json = false;
};

int RunSummarize(const SummarizeFlags& f) {
  auto text = ReadDocument(f.file, f.s.max_bytes);
  if (!text.ok()) return Fail(text.status());
  Progress progress("summarize");
  progress.Message("loading the model");
  auto loaded = Load(f.s);
  if (!loaded.ok()) return Fail(loaded.status());
  const auto t0 = std::chrono::steady_clock::now();
  auto result = Summarize(*loaded->session, loaded->rt->chat(), *text, loaded->options,
                          ProgressTo(&progress));
  if (!result.ok()) return Fail(result.status().WithContext("summarizing '" + f.file + "'"));
  const double seconds = SecondsSince(t0);
  if (f.json) {
    std::printf("%s\n", Dump(ResultJson(f.file, f.s.style, *result, seconds)).c_str());
  } else {
    SummaryStyle style = SummaryStyle::kSections;
    ParseSummaryStyle(f.s.style, &style);
    const std::string out = RenderSummary(*result, style);
    std::fwrite(out.data(), 1, out.size(), stdout);
  }
  progress.Message(std::to_string(result->n_sections) + " sections, " +
                   std::to_string(result->condensed_kept) + " lines condensed by the model (" +
                   std::to_string(result->condensed_rejected) + " rejected, extract kept), " +
                   std::to_string(static_cast<int64_t>(seconds)) + " s");
  return 0;
}

// ---- eval summary --------------------------------------------------------------------------
struct EvalSummaryFlags {
  SummaryFlags s;
  std::vector<std::string> files;
  std::string summary_file;
  std::string out_dir;
  std::string json_out;
  bool json = false;
};

std::string Pct(double x) {
  char buf[16];
  std::snprintf(buf, sizeof buf, "%.1f%%", 100.0 * x);
  return buf;
}

std::string ReportRow(const std::string& file, const std::string& style, const SummaryEval& e,
                      double seconds, int64_t generated) {
  char buf[512];
  std::string missed;
  for (const std::string& m : MissedTargets(e)) missed += (missed.empty() ? "" : ",") + m;
  std::snprintf(buf, sizeof buf, "%-24s %-8s %7s %7s  %lld/%lld/%lld %6.2f %6.2f %7.1f %6lld  %s\n",
                file.c_str(), style.c_str(), Pct(e.name_precision).c_str(),
                Pct(e.top_name_coverage).c_str(), static_cast<long long>(e.located_per_third[0]),
                static_cast<long long>(e.located_per_third[1]),
                static_cast<long long>(e.located_per_third[2]), e.sentence_order, e.name_order,
                seconds, static_cast<long long>(generated),
                missed.empty() ? "all targets met" : ("missed: " + missed).c_str());
  return buf;
}

int RunEvalSummary(const EvalSummaryFlags& f) {
  if (!f.summary_file.empty() && f.files.size() != 1) {
    return Fail(
        InvalidArgumentError("--summary-file scores one summary: give exactly one source FILE"));
  }
  std::vector<std::string> texts;
  for (const std::string& file : f.files) {
    auto t = ReadDocument(file, f.s.max_bytes);
    if (!t.ok()) return Fail(t.status());
    texts.push_back(std::move(*t));
  }
  nlohmann::json all = nlohmann::json::array();
  std::string report =
      "file                     style    names   top-20  thirds  s-ord  n-ord  seconds gen-tok\n";
  if (!f.summary_file.empty()) {
    auto summary = ReadFile(f.summary_file);
    if (!summary.ok()) return Fail(summary.status());
    const SummaryEval e = EvaluateSummary(texts[0], *summary);
    all.push_back({{"file", f.files[0]},
                   {"summary_file", f.summary_file},
                   {"eval", ToJson(e)},
                   {"missed_targets", MissedTargets(e)}});
    report += ReportRow(f.files[0], "given", e, 0.0, 0);
  } else {
    Progress progress("eval summary");
    progress.Message("loading the model");
    auto loaded = Load(f.s);
    if (!loaded.ok()) return Fail(loaded.status());
    if (!f.out_dir.empty()) std::filesystem::create_directories(f.out_dir);
    for (size_t i = 0; i < f.files.size(); ++i) {
      progress.Message(f.files[i]);
      const auto t0 = std::chrono::steady_clock::now();
      auto r = Summarize(*loaded->session, loaded->rt->chat(), texts[i], loaded->options,
                         ProgressTo(&progress));
      if (!r.ok()) return Fail(r.status().WithContext("summarizing '" + f.files[i] + "'"));
      const double seconds = SecondsSince(t0);
      nlohmann::json entry = ResultJson(f.files[i], f.s.style, *r, seconds);
      nlohmann::json evals = nlohmann::json::object();
      for (const char* name : {"brief", "sections", "outline"}) {
        SummaryStyle style = SummaryStyle::kSections;
        ParseSummaryStyle(name, &style);
        const SummaryEval e = EvaluateSummary(texts[i], SummaryProse(*r, style));
        evals[name] = ToJson(e);
        evals[name]["missed_targets"] = MissedTargets(e);
        if (std::string(name) != "outline") {
          report += ReportRow(std::filesystem::path(f.files[i]).filename().string(), name, e,
                              seconds, r->generated_tokens);
        }
        if (!f.out_dir.empty()) {
          const std::string stem = std::filesystem::path(f.files[i]).stem().string();
          std::ofstream(std::filesystem::path(f.out_dir) / (stem + "." + name + ".txt"))
              << RenderSummary(*r, style);
        }
      }
      entry["eval"] = evals;
      if (!f.out_dir.empty()) {
        const std::string stem = std::filesystem::path(f.files[i]).stem().string();
        std::ofstream(std::filesystem::path(f.out_dir) / (stem + ".json")) << Dump(entry) << "\n";
      }
      all.push_back(std::move(entry));
    }
  }
  if (!f.json_out.empty()) std::ofstream(f.json_out) << Dump(all) << "\n";
  if (f.json) {
    std::printf("%s\n", Dump(all).c_str());
  } else {
    std::printf("%s", report.c_str());
    std::printf(
        "names = name precision (target >= 95%%); top-20 = coverage of the source's 20 most "
        "frequent "
        "names (>= 50%%); thirds = summary sentences located in the source's first/middle/last "
        "third "
        "(each >= 1); s-ord / n-ord = concordant share of sentence / name order (>= 0.9 / 0.75)\n");
  }
  return 0;
}

CLI::App* FindSubcommand(CLI::App& app, const std::string& name) {
  for (CLI::App* sub : app.get_subcommands([](CLI::App*) { return true; })) {
    if (sub->get_name() == name) return sub;
  }
  return nullptr;
}

}  // namespace

void RegisterSummarizeCommands(CLI::App& app, CommandContext& ctx) {
  {
    auto f = std::make_shared<SummarizeFlags>();
    auto* cmd = app.add_subcommand(
        "summarize",
        "Summarize a document of any length; every line is a sentence of the document "
        "(or the model's verified shortening of one)");
    cmd->add_option("file", f->file, "Text file to summarize (UTF-8)")->required();
    cmd->add_flag("--json", f->json, "Print JSON: every line with its byte span in the source");
    AddSummaryFlags(cmd, &f->s);
    cmd->callback([&ctx, f] { ctx.exit_code = RunSummarize(*f); });
  }
  CLI::App* eval = FindSubcommand(app, "eval");
  if (eval == nullptr) {
    eval = app.add_subcommand("eval", "Evaluations");
    eval->require_subcommand(1);
  }
  {
    auto f = std::make_shared<EvalSummaryFlags>();
    auto* cmd = eval->add_subcommand(
        "summary",
        "Summarize each FILE and score the summary against it without a reference: name "
        "precision, top-20 name coverage, thirds, order, time");
    cmd->add_option("files", f->files, "Source text files")->required();
    cmd->add_option("--summary-file", f->summary_file,
                    "Score this summary of the one FILE instead of making one");
    cmd->add_option("--out-dir", f->out_dir, "Write each summary (every style) and its JSON here");
    cmd->add_option("--json-out", f->json_out, "Also write the JSON here");
    cmd->add_flag("--json", f->json, "Print JSON instead of the report");
    AddSummaryFlags(cmd, &f->s);
    cmd->callback([&ctx, f] { ctx.exit_code = RunEvalSummary(*f); });
  }
}

}  // namespace muninn::tools
