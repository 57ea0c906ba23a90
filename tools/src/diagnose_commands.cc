// `muninn eval diagnose loss|attention|heads` (diagnostics.h): JSON on stdout (and --json-out),
// PNG plots through gnuplot with --plot.
#include <cstdio>
#include <fstream>

#include <nlohmann/json.hpp>

#include "command_registry.h"
#include "plot.h"
#include "progress.h"
#include "runtime.h"
#include "muninn/tools/diagnostics.h"

namespace muninn::tools {
namespace {

int Fail(const Status& s) {
  std::fprintf(stderr, "muninn: %s\n", s.ToString().c_str());
  return s.code() == StatusCode::kInvalidArgument || s.code() == StatusCode::kNotFound ? 2 : 1;
}

int Emit(const nlohmann::json& j, const std::string& json_out) {
  const std::string dump = j.dump(2, ' ', false, nlohmann::json::error_handler_t::replace);
  if (!json_out.empty()) std::ofstream(json_out) << dump << "\n";
  std::printf("%s\n", dump.c_str());
  return 0;
}

struct LossFlags {
  RuntimeFlags rt;
  std::string text;
  int64_t seq_len = 4096;
  int64_t scored = 1024;
  int64_t windows = 4;
  int64_t buckets = 32;
  std::string json_out;
  std::string plot;
};

int RunLoss(const LossFlags& f) {
  auto text = ReadFile(f.text.empty() ? RepoRoot() + "/data/kjv.txt" : f.text);
  if (!text.ok()) return Fail(text.status().WithContext("run scripts/setup.sh for data/kjv.txt, or pass --text"));
  auto rt = Runtime::Open(f.rt);
  if (!rt.ok()) return Fail(rt.status());
  retriever::LongContextOptions plain = (*rt)->session().options();
  plain.use_memory = false;
  plain.local_window = std::max(plain.local_window, f.scored);
  auto plain_session = (*rt)->NewSession(plain);
  if (!plain_session.ok()) return Fail(plain_session.status());
  PerplexityOptions o;
  o.seq_len = f.seq_len;
  o.scored_tokens = f.scored;
  o.max_windows = f.windows;
  o.full_attention = false;
  auto runs = RunLossRuns((*rt)->session(), **plain_session, *text, o);
  if (!runs.ok()) return Fail(runs.status());
  auto buckets = LossDeltaByPosition(runs->memory, runs->none, f.buckets);
  if (!buckets.ok()) return Fail(buckets.status());
  nlohmann::json j = {{"eval", "diagnose loss"}, {"seq_len", f.seq_len}, {"scored", f.scored},
                      {"windows", runs->memory.size()}, {"buckets", ToJson(*buckets)}};
  if (!f.plot.empty()) {
    PlotSeries s{"NLL(memory) - NLL(none)", {}};
    for (const LossBucket& b : *buckets) {
      s.points.emplace_back(0.5 * static_cast<double>(b.first + b.end), b.delta());
    }
    if (auto st = WriteLinePlot(f.plot, "loss delta by position in the window", "position",
                                "nats", {s}, false); !st.ok()) {
      return Fail(st);
    }
  }
  return Emit(j, f.json_out);
}

struct AttentionFlags {
  RuntimeFlags rt;
  MemoryMassOptions mass;
  std::string json_out;
  std::string plot;
};

int RunAttention(const AttentionFlags& f) {
  if (!f.rt.bank.empty()) return Fail(InvalidArgumentError("diagnose attention uses a bank in RAM; drop --bank"));
  auto rt = Runtime::Open(f.rt);
  if (!rt.ok()) return Fail(rt.status());
  auto r = RunMemoryMass((*rt)->session(), f.mass);
  if (!r.ok()) return Fail(r.status());
  nlohmann::json j = ToJson(*r);
  j["eval"] = "diagnose attention";
  j["length"] = f.mass.length;
  j["depth"] = f.mass.depth;
  j["local_tokens"] = f.mass.local_tokens;
  j["query_rows"] = f.mass.query_rows;
  if (!f.plot.empty()) {
    std::vector<PlotSeries> series;
    for (const auto* heads : {&r->with_gold, &r->without_gold}) {
      PlotSeries mem{heads == &r->with_gold ? "memory mass, with gold" : "memory mass, without gold", {}};
      PlotSeries gold{"gold-chunk mass", {}};
      // One point per (layer, head): x = layer + head / n_head.
      const double n_head = static_cast<double>((*rt)->model().config().n_head);
      for (const HeadMass& h : *heads) {
        const double x = h.layer + h.head / n_head;
        mem.points.emplace_back(x, h.memory);
        if (heads == &r->with_gold) gold.points.emplace_back(x, h.gold);
      }
      series.push_back(std::move(mem));
      if (heads == &r->with_gold) series.push_back(std::move(gold));
    }
    if (auto st = WriteLinePlot(f.plot, "attention mass on memory per (layer, head)",
                                "layer + head / n_head", "mass", series, false); !st.ok()) {
      return Fail(st);
    }
  }
  return Emit(j, f.json_out);
}

struct HeadsFlags {
  RuntimeFlags rt;
  RetrievalHeadOptions heads;
  int64_t top = 20;
  std::string json_out;
  std::string plot;
};

int RunHeads(const HeadsFlags& f) {
  auto rt = Runtime::Open(f.rt);
  if (!rt.ok()) return Fail(rt.status());
  auto r = RunRetrievalHeads((*rt)->model(), (*rt)->tokenizer(), f.heads);
  if (!r.ok()) return Fail(r.status());
  nlohmann::json j = ToJson(*r, f.top);
  j["eval"] = "diagnose heads";
  j["length"] = f.heads.length;
  if (!f.plot.empty()) {
    PlotSeries s{"copy score", {}}, m{"key mass", {}};
    std::vector<HeadScore> by_head = r->heads;
    std::sort(by_head.begin(), by_head.end(), [](const HeadScore& a, const HeadScore& b) {
      return a.layer != b.layer ? a.layer < b.layer : a.head < b.head;
    });
    const double n_head = static_cast<double>((*rt)->model().config().n_head);
    for (const HeadScore& h : by_head) {
      s.points.emplace_back(h.layer + h.head / n_head, h.copy_score);
      m.points.emplace_back(h.layer + h.head / n_head, h.key_mass);
    }
    if (auto st = WriteLinePlot(f.plot, "retrieval heads (in-window passkey)", "layer + head / n_head",
                                "score", {s, m}, false); !st.ok()) {
      return Fail(st);
    }
  }
  return Emit(j, f.json_out);
}

}  // namespace

void RegisterDiagnoseCommands(CLI::App& app, CommandContext& ctx) {
  CLI::App* eval = app.get_subcommand("eval");  // registered by RegisterEvalCommands
  auto* diag = eval->add_subcommand("diagnose", "Diagnostics of memory mechanisms (specs/memory_modes.md §3)");
  diag->require_subcommand(1);
  {
    auto f = std::make_shared<LossFlags>();
    auto* cmd = diag->add_subcommand("loss", "Loss delta (memory - none) by position inside the scored window");
    cmd->add_option("--text", f->text, "Text file (default data/kjv.txt)");
    cmd->add_option("--seq-len", f->seq_len, "Evaluation window")->check(CLI::Range(2, 1 << 24));
    cmd->add_option("--scored", f->scored, "Scored tail per window")->check(CLI::Range(2, 1 << 20));
    cmd->add_option("--windows", f->windows, "Windows (0 = all)")->check(CLI::Range(0, 1 << 20));
    cmd->add_option("--buckets", f->buckets, "Position buckets")->check(CLI::Range(1, 1 << 16));
    cmd->add_option("--json-out", f->json_out, "Also write the JSON here");
    cmd->add_option("--plot", f->plot, "Write a PNG plot (needs gnuplot)");
    AddRuntimeFlags(cmd, &f->rt);
    AddDeviceFlag(cmd, &f->rt);
    cmd->callback([&ctx, f] { ctx.exit_code = RunLoss(*f); });
  }
  {
    auto f = std::make_shared<AttentionFlags>();
    auto* cmd = diag->add_subcommand("attention",
                                     "Attention mass on memory per layer and head, with and without "
                                     "the gold chunk (passkey prompt)");
    cmd->add_option("--length", f->mass.length, "Prompt tokens")->check(CLI::Range(256, 1 << 24));
    cmd->add_option("--depth", f->mass.depth, "Key depth in [0, 1]")->check(CLI::Range(0.0, 1.0));
    cmd->add_option("--local-tokens", f->mass.local_tokens, "Window tokens")->check(CLI::Range(64, 1 << 20));
    cmd->add_option("--query-rows", f->mass.query_rows, "Last window rows read")->check(CLI::Range(1, 4096));
    cmd->add_option("--seed", f->mass.seed, "Seed for the key");
    cmd->add_option("--json-out", f->json_out, "Also write the JSON here");
    cmd->add_option("--plot", f->plot, "Write a PNG plot (needs gnuplot)");
    AddRuntimeFlags(cmd, &f->rt);
    AddDeviceFlag(cmd, &f->rt);
    cmd->callback([&ctx, f] { ctx.exit_code = RunAttention(*f); });
  }
  {
    auto f = std::make_shared<HeadsFlags>();
    auto* cmd = diag->add_subcommand("heads", "Retrieval heads on an in-window passkey (full attention)");
    cmd->add_option("--length", f->heads.length, "Prompt tokens")->check(CLI::Range(256, 1 << 20));
    cmd->add_option("--depths", f->heads.depths, "Key depths in [0, 1]")->delimiter(',');
    cmd->add_option("--answer-tokens", f->heads.max_answer_tokens, "Greedy answer tokens")->check(CLI::Range(1, 64));
    cmd->add_option("--seed", f->heads.seed, "Seed for the keys");
    cmd->add_option("--top", f->top, "Heads listed")->check(CLI::Range(1, 100000));
    cmd->add_option("--json-out", f->json_out, "Also write the JSON here");
    cmd->add_option("--plot", f->plot, "Write a PNG plot (needs gnuplot)");
    AddRuntimeFlags(cmd, &f->rt);
    AddDeviceFlag(cmd, &f->rt);
    cmd->callback([&ctx, f] { ctx.exit_code = RunHeads(*f); });
  }
}

}  // namespace muninn::tools
