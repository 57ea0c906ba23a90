// `muninn eval passkey|needle|perplexity`: long-context evaluations, memory modes side by side.
#include <cstdio>
#include <fstream>
#include <array>
#include <map>
#include <memory>
#include <set>

#include <nlohmann/json.hpp>

#include "caching_embedder.h"
#include "command_registry.h"
#include "plot.h"
#include "progress.h"
#include "runtime.h"
#include "muninn/tools/evals.h"
#include "muninn/tools/needle_eval.h"

namespace muninn::tools {
namespace {

int Fail(const Status& s) {
  std::fprintf(stderr, "muninn: %s\n", s.ToString().c_str());
  return s.code() == StatusCode::kInvalidArgument || s.code() == StatusCode::kNotFound ? 2 : 1;
}

// One memory configuration under evaluation: its own in-RAM bank (laid out for its modes) and
// session over the runtime's model.
struct ModeRun {
  std::string name;  // "none", "reread", "context+knn", ...
  std::unique_ptr<memory::MemoryBank> bank;
  std::unique_ptr<retriever::LongContextSession> session;
  Status Reset() { return EmptyBank(bank.get()); }
};

// "none,reread,context+knn" → one run per comma-separated item; "" → the config's modes.
StatusOr<std::vector<ModeRun>> MakeModeRuns(Runtime& rt, const std::string& list,
                                            const retriever::LongContextOptions& base,
                                            retriever::Embedder* embedder) {
  std::vector<std::string> items;
  if (list.empty()) {
    items.push_back(base.use_memory ? retriever::MemoryModesName(base.modes) : "none");
  } else {
    size_t b = 0;
    while (b <= list.size()) {
      size_t e = list.find(',', b);
      if (e == std::string::npos) e = list.size();
      if (e > b) items.push_back(list.substr(b, e - b));
      b = e + 1;
    }
  }
  if (items.empty()) return InvalidArgumentError("--modes names no memory mode");
  std::vector<ModeRun> runs;
  for (const std::string& item : items) {
    retriever::LongContextOptions o = base;
    uint32_t modes = 0;
    RETURN_IF_ERROR(retriever::ParseMemoryModes(item, &modes).WithContext("--modes"));
    o.modes = modes;
    o.use_memory = modes != 0;
    ModeRun run;
    run.name = retriever::MemoryModesName(modes);
    if (o.use_memory) {
      ASSIGN_OR_RETURN(run.bank, rt.NewMemoryBank(o));
    }
    ASSIGN_OR_RETURN(run.session, rt.NewSession(o, run.bank.get(), embedder));
    runs.push_back(std::move(run));
  }
  return runs;
}

// Filler names: repeat (the classic sentences), kjv, web (data/kjv.txt, data/web.txt), or a path.
StatusOr<std::vector<FillerText>> LoadFillers(const std::vector<std::string>& names) {
  std::vector<FillerText> out;
  for (const std::string& n : names) {
    if (n == "repeat") {
      out.push_back(RepeatFiller());
      continue;
    }
    std::string path = n;
    if (n == "kjv" || n == "web") path = RepoRoot() + "/data/" + n + ".txt";
    auto text = ReadFile(path);
    if (!text.ok()) {
      return text.status().WithContext("filler '" + n + "' (run scripts/setup.sh for kjv/web, or give a text file)");
    }
    if (text->size() < 4096) return InvalidArgumentError("filler '" + n + "' is too short for a haystack");
    out.push_back({n, std::move(*text)});
  }
  return out;
}

// What the passkey and needle commands share: the runtime, the filler texts, one session per
// memory mode (each with its own in-RAM bank) over an embedding cache, and a memory-off session
// for the in-window ceiling. Members are declared so that the sessions die before the cache.
struct EvalSetup {
  std::unique_ptr<Runtime> rt;
  std::vector<FillerText> fillers;
  std::unique_ptr<CachingEmbedder> cache;
  std::vector<ModeRun> runs;
  std::unique_ptr<retriever::LongContextSession> plain;  // memory off
};

StatusOr<EvalSetup> OpenEval(const std::string& command, const RuntimeFlags& flags,
                             const std::vector<std::string>& filler_names, const std::string& modes) {
  if (!flags.bank.empty()) {
    return InvalidArgumentError("eval " + command + " uses banks in RAM; drop --bank");
  }
  EvalSetup e;
  ASSIGN_OR_RETURN(e.rt, Runtime::Open(flags));
  ASSIGN_OR_RETURN(e.fillers, LoadFillers(filler_names));
  // Trials re-ingest the same haystack chunks: their embeddings are computed once.
  e.cache = std::make_unique<CachingEmbedder>(e.rt->embedder());
  ASSIGN_OR_RETURN(e.runs, MakeModeRuns(*e.rt, modes, e.rt->session().options(), e.cache.get()));
  retriever::LongContextOptions lo = e.rt->session().options();
  lo.use_memory = false;
  ASSIGN_OR_RETURN(e.plain, e.rt->NewSession(lo, nullptr));
  return e;
}

double Pct(int64_t k, int64_t n) { return n ? 100.0 * static_cast<double>(k) / static_cast<double>(n) : 0.0; }

void WriteJson(const nlohmann::json& j, const std::string& path) {
  const std::string dump = j.dump(2, ' ', false, nlohmann::json::error_handler_t::replace);
  if (!path.empty()) std::ofstream(path) << dump << "\n";
  std::printf("%s\n", dump.c_str());
}

// ---- passkey -------------------------------------------------------------------------------
struct PasskeyFlags {
  RuntimeFlags rt;
  std::vector<int64_t> lengths = {4096, 8192, 16384, 32768, 81920};
  std::vector<double> depths = {0.0, 0.25, 0.5, 0.75, 1.0};
  int64_t trials = 1;
  int64_t local_tokens = 1024;
  uint64_t seed = 1;
  std::string modes;
  std::vector<std::string> fillers = {"repeat"};
  bool ceiling = false;
  std::string json_out;
  std::string plot;
};

int RunPasskeyCommand(const PasskeyFlags& f) {
  auto setup = OpenEval("passkey", f.rt, f.fillers, f.modes);
  if (!setup.ok()) return Fail(setup.status());
  PasskeyOptions o;
  o.lengths = f.lengths;
  o.depths = f.depths;
  o.trials = f.trials;
  o.local_tokens = f.local_tokens;
  o.seed = f.seed;
  o.fillers = setup->fillers;
  if (auto s = o.Validate(); !s.ok()) return Fail(s);
  Progress progress("passkey");
  nlohmann::json results = nlohmann::json::object();
  nlohmann::json summary = nlohmann::json::object();
  std::vector<PlotSeries> series;
  auto tally = [&](const std::string& name, const std::vector<PasskeyTrial>& trials,
                   const std::vector<int64_t>& lengths) {
    PlotSeries s{name, {}};
    nlohmann::json pts = nlohmann::json::array();
    for (int64_t len : lengths) {
      int64_t pass = 0, retrieved = 0, in_window = 0, n = 0, out_n = 0, out_pass = 0;
      for (const PasskeyTrial& t : trials) {
        if (t.requested_length != len) continue;
        pass += t.pass ? 1 : 0;
        retrieved += t.key_retrieved ? 1 : 0;
        in_window += t.key_in_window ? 1 : 0;
        ++n;
        if (!t.key_in_window) {
          ++out_n;
          out_pass += t.pass ? 1 : 0;
        }
      }
      s.points.emplace_back(static_cast<double>(len), Pct(pass, n));
      // Separates finding the key (retrieval) from reading it (the model), and the trials whose
      // key sits outside the local window (what memory must bring) from the rest.
      pts.push_back({{"length", len}, {"trials", n}, {"accuracy_percent", Pct(pass, n)},
                     {"key_outside_window_trials", out_n},
                     {"key_outside_window_accuracy_percent", Pct(out_pass, out_n)},
                     {"key_retrieved_percent", Pct(retrieved, n)},
                     {"key_in_window_percent", Pct(in_window, n)}});
    }
    nlohmann::json arr = nlohmann::json::array();
    for (const auto& t : trials) arr.push_back(ToJson(t));
    results[name] = arr;
    summary[name] = pts;
    series.push_back(std::move(s));
  };
  if (f.ceiling) {
    // The key inside a window of local_tokens, full attention, no memory.
    PasskeyOptions c = o;
    c.lengths = {o.local_tokens};
    int64_t done = 0;
    const int64_t total = static_cast<int64_t>(c.fillers.size() * c.depths.size()) * c.trials;
    auto trials = RunPasskey(*setup->plain, c, {}, [&](const PasskeyTrial&) {
      progress.Update("ceiling", ++done, total);
    });
    if (!trials.ok()) return Fail(trials.status());
    tally("ceiling", *trials, c.lengths);
  }
  for (ModeRun& run : setup->runs) {
    int64_t done = 0;
    const int64_t total =
        static_cast<int64_t>(o.fillers.size() * o.lengths.size() * o.depths.size()) * o.trials;
    auto trials = RunPasskey(*run.session, o, [&] { return run.Reset(); },
                             [&](const PasskeyTrial&) { progress.Update(run.name, ++done, total); });
    if (!trials.ok()) return Fail(trials.status().WithContext("memory mode " + run.name));
    tally(run.name, *trials, o.lengths);
  }
  std::vector<std::string> filler_names;
  for (const auto& fl : o.fillers) filler_names.push_back(fl.name);
  WriteJson({{"eval", "passkey"}, {"summary", summary}, {"trials", results},
             {"local_tokens", o.local_tokens}, {"seed", o.seed}, {"fillers", filler_names}},
            f.json_out);
  if (!f.plot.empty()) {
    if (auto s = WriteLinePlot(f.plot, "passkey retrieval", "prompt tokens", "accuracy (%)", series, true);
        !s.ok()) {
      return Fail(s);
    }
    std::fprintf(stderr, "[passkey] plot written to %s\n", f.plot.c_str());
  }
  return 0;
}

// ---- needle --------------------------------------------------------------------------------
struct NeedleFlags {
  RuntimeFlags rt;
  std::vector<int64_t> lengths = {4096, 16384, 32768, 65536};
  std::vector<double> depths = {0.0, 0.25, 0.5, 0.75, 1.0};
  int64_t trials = 10;
  uint64_t seed = 1;
  std::string modes;
  std::vector<std::string> fillers = {"kjv", "web"};
  bool ceiling = false;
  std::string json_out;
  std::string plot;
};

int RunNeedleCommand(const NeedleFlags& f) {
  auto setup = OpenEval("needle", f.rt, f.fillers, f.modes);
  if (!setup.ok()) return Fail(setup.status());
  Runtime& rt = *setup->rt;
  NeedleOptions o;
  o.lengths = f.lengths;
  o.depths = f.depths;
  o.trials = f.trials;
  o.seed = f.seed;
  o.fillers = setup->fillers;
  if (auto s = o.Validate(); !s.ok()) return Fail(s);
  Progress progress("needle");
  nlohmann::json results = nlohmann::json::object();
  nlohmann::json summary = nlohmann::json::object();
  std::map<std::pair<int64_t, double>, std::pair<int64_t, int64_t>> grid;  // first mode's cells
  auto tally = [&](const std::string& name, const std::vector<NeedleTrial>& trials, bool fill_grid) {
    std::map<std::pair<int64_t, double>, std::array<int64_t, 3>> cells;  // pass, retrieved, n
    for (const NeedleTrial& t : trials) {
      auto& c = cells[{t.requested_length, t.depth}];
      c[0] += t.pass ? 1 : 0;
      c[1] += t.fact_retrieved ? 1 : 0;
      c[2] += 1;
    }
    nlohmann::json pts = nlohmann::json::array();
    int64_t pass = 0, n = 0;
    for (const auto& [key, c] : cells) {
      pts.push_back({{"length", key.first}, {"depth", key.second}, {"trials", c[2]},
                     {"accuracy_percent", Pct(c[0], c[2])},
                     {"fact_retrieved_percent", Pct(c[1], c[2])}});
      pass += c[0];
      n += c[2];
      if (fill_grid) grid[key] = {c[0], c[2]};
    }
    nlohmann::json arr = nlohmann::json::array();
    for (const auto& t : trials) arr.push_back(ToJson(t));
    results[name] = arr;
    summary[name] = {{"cells", pts}, {"accuracy_percent", Pct(pass, n)}, {"trials", n}};
  };
  if (f.ceiling) {
    NeedleOptions c = o;
    c.ceiling = true;
    int64_t done = 0;
    const int64_t total = static_cast<int64_t>(c.fillers.size() * c.depths.size()) * c.trials;
    auto trials = RunNeedle(*setup->plain, rt.chat(), c, {}, [&](const NeedleTrial&) {
      progress.Update("ceiling", ++done, total);
    });
    if (!trials.ok()) return Fail(trials.status());
    tally("ceiling", *trials, false);
  }
  bool first = true;
  std::string grid_name;
  for (ModeRun& run : setup->runs) {
    int64_t done = 0;
    const int64_t total =
        static_cast<int64_t>(o.fillers.size() * o.lengths.size() * o.depths.size()) * o.trials;
    auto trials = RunNeedle(*run.session, rt.chat(), o, [&] { return run.Reset(); },
                            [&](const NeedleTrial&) { progress.Update(run.name, ++done, total); });
    if (!trials.ok()) return Fail(trials.status().WithContext("memory mode " + run.name));
    tally(run.name, *trials, first);
    if (first) grid_name = run.name;
    first = false;
  }
  std::vector<std::string> filler_names;
  for (const auto& fl : o.fillers) filler_names.push_back(fl.name);
  WriteJson({{"eval", "needle"}, {"summary", summary}, {"trials", results}, {"seed", o.seed},
             {"fillers", filler_names}},
            f.json_out);
  if (!f.plot.empty() && !grid.empty()) {
    HeatmapCells cells;
    for (const auto& [key, c] : grid) {
      cells.push_back({static_cast<double>(key.first), key.second, Pct(c.first, c.second)});
    }
    if (auto s = WriteHeatmap(f.plot, "needle QA accuracy (%), memory " + grid_name,
                              "document tokens", "fact depth", cells);
        !s.ok()) {
      return Fail(s);
    }
    std::fprintf(stderr, "[needle] heat map written to %s\n", f.plot.c_str());
  }
  return 0;
}

// ---- perplexity ----------------------------------------------------------------------------
struct PerplexityFlags {
  RuntimeFlags rt;
  std::string text;
  std::string modes;
  int64_t seq_len = 4096;
  int64_t scored = 1024;
  int64_t windows = 4;
  bool no_full = false;
  std::string json_out;
};

int RunPerplexityCommand(const PerplexityFlags& f) {
  const std::string path = f.text.empty() ? RepoRoot() + "/data/kjv.txt" : f.text;
  auto text = ReadFile(path);
  if (!text.ok()) return Fail(text.status().WithContext("run scripts/setup.sh for data/kjv.txt, or pass --text"));
  RuntimeFlags rf = f.rt;
  auto rt = Runtime::Open(rf);
  if (!rt.ok()) return Fail(rt.status());
  retriever::LongContextOptions plain = (*rt)->session().options();
  plain.use_memory = false;
  plain.local_window = std::max(plain.local_window, f.no_full ? f.scored : f.seq_len);
  auto plain_session = (*rt)->NewSession(plain, nullptr);
  if (!plain_session.ok()) return Fail(plain_session.status());
  // --no-memory: only the sliding-window and full-attention baselines.
  std::string modes = f.modes;
  if (f.rt.no_memory) modes = "none";
  auto runs = MakeModeRuns(**rt, modes, (*rt)->session().options(), nullptr);
  if (!runs.ok()) return Fail(runs.status());
  PerplexityOptions o;
  o.seq_len = f.seq_len;
  o.scored_tokens = f.scored;
  o.max_windows = f.windows;
  Progress progress("perplexity");
  nlohmann::json per_mode = nlohmann::json::array();
  nlohmann::json baselines;
  bool first = true;
  for (ModeRun& run : *runs) {
    // The baselines do not depend on the mode: computed with the first run only.
    o.full_attention = first && !f.no_full;
    auto r = RunPerplexity(*run.session, **plain_session, *text, o,
                           [&](int64_t d, int64_t t) { progress.Update(run.name, d, t); });
    if (!r.ok()) return Fail(r.status().WithContext("memory mode " + run.name));
    if (first) {
      baselines = {{"ppl_sliding_window", r->ppl_sliding}};
      if (r->ppl_full > 0) baselines["ppl_full_attention"] = r->ppl_full;
    }
    const memory::BankStats st = run.bank ? run.bank->Stats() : memory::BankStats{};
    per_mode.push_back({{"modes", r->modes}, {"ppl_memory", r->ppl_memory},
                        {"bank_bytes_per_token",
                         st.n_tokens ? static_cast<double>(st.stored_bytes) / static_cast<double>(st.n_tokens) : 0.0}});
    first = false;
  }
  WriteJson({{"eval", "perplexity"}, {"text", path}, {"seq_len", o.seq_len},
             {"scored_tokens", o.scored_tokens}, {"windows", o.max_windows},
             {"query_tokens", o.query_tokens}, {"baselines", baselines}, {"memory", per_mode}},
            f.json_out);
  return 0;
}

}  // namespace

void RegisterEvalCommands(CLI::App& app, CommandContext& ctx) {
  CLI::App* eval = nullptr;
  try {
    eval = app.get_subcommand("eval");
  } catch (const CLI::OptionNotFound&) {
    eval = app.add_subcommand("eval", "Long-context evaluations");
    eval->require_subcommand(1);
  }
  {
    auto f = std::make_shared<PasskeyFlags>();
    auto* cmd = eval->add_subcommand("passkey", "Passkey retrieval vs prompt length and depth");
    cmd->add_option("--lengths", f->lengths, "Prompt lengths in tokens")->delimiter(',');
    cmd->add_option("--depths", f->depths, "Key depths in [0, 1]")->delimiter(',');
    cmd->add_option("--trials", f->trials, "Trials per (filler, length, depth)")->check(CLI::Range(1, 1000));
    cmd->add_option("--local-tokens", f->local_tokens, "Local window tokens")->check(CLI::Range(64, 1 << 20));
    cmd->add_option("--seed", f->seed, "Seed for the keys");
    cmd->add_option("--modes", f->modes,
                    "Memory modes side by side, e.g. none,reread,memlong,context+knn (default: "
                    "the config's)");
    cmd->add_option("--fillers", f->fillers, "Filler texts: repeat, kjv, web or text files")->delimiter(',');
    cmd->add_flag("--ceiling", f->ceiling, "Also run the in-window ceiling (key inside the window, no memory)");
    cmd->add_option("--json-out", f->json_out, "Also write the JSON here");
    cmd->add_option("--plot", f->plot, "Write a PNG plot of accuracy vs length (needs gnuplot)");
    AddRuntimeFlags(cmd, &f->rt);
    AddDeviceFlag(cmd, &f->rt);
    cmd->callback([&ctx, f] { ctx.exit_code = RunPasskeyCommand(*f); });
  }
  {
    auto f = std::make_shared<NeedleFlags>();
    auto* cmd = eval->add_subcommand("needle", "Needle-in-a-haystack QA over prose, asked like `muninn ask`");
    cmd->add_option("--lengths", f->lengths, "Document lengths in tokens")->delimiter(',');
    cmd->add_option("--depths", f->depths, "Fact depths in [0, 1]")->delimiter(',');
    cmd->add_option("--trials", f->trials, "Trials per (filler, length, depth)")->check(CLI::Range(1, 1000));
    cmd->add_option("--seed", f->seed, "Seed for the facts and haystacks");
    cmd->add_option("--modes", f->modes, "Memory modes side by side (default: the config's)");
    cmd->add_option("--fillers", f->fillers, "Haystack texts: kjv, web or text files")->delimiter(',');
    cmd->add_flag("--ceiling", f->ceiling, "Also run the in-window ceiling (the fact in the prompt, no memory)");
    cmd->add_option("--json-out", f->json_out, "Also write the JSON here");
    cmd->add_option("--plot", f->plot, "Write a PNG heat map (length x depth) of the first mode");
    AddRuntimeFlags(cmd, &f->rt);
    AddDeviceFlag(cmd, &f->rt);
    cmd->callback([&ctx, f] { ctx.exit_code = RunNeedleCommand(*f); });
  }
  {
    auto f = std::make_shared<PerplexityFlags>();
    auto* cmd = eval->add_subcommand("perplexity", "MemLong-protocol perplexity (default text: data/kjv.txt)");
    cmd->add_option("--text", f->text, "Text file");
    cmd->add_option("--modes", f->modes, "Memory modes side by side (default: the config's)");
    cmd->add_option("--seq-len", f->seq_len, "Evaluation window")->check(CLI::Range(2, 1 << 24));
    cmd->add_option("--scored", f->scored, "Scored tail per window")->check(CLI::Range(2, 1 << 20));
    cmd->add_option("--windows", f->windows, "Windows to evaluate (0 = all)")->check(CLI::Range(0, 1 << 20));
    cmd->add_flag("--no-full", f->no_full, "Skip the full-attention baseline");
    cmd->add_option("--json-out", f->json_out, "Also write the JSON here");
    AddRuntimeFlags(cmd, &f->rt);
    AddDeviceFlag(cmd, &f->rt);
    cmd->callback([&ctx, f] { ctx.exit_code = RunPerplexityCommand(*f); });
  }
}

}  // namespace muninn::tools
