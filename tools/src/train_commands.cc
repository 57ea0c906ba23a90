// `muninn train`: LoRA fine-tuning of a llama model's upper layers (issue 12; docs/TRAINING.md).
// Flags become model::TrainerOptions; the loop, checkpoints and metrics are model::Trainer's
// (model/include/muninn/model/trainer.h). A progress line per step goes to stderr
// (step, loss, lr, tokens/s, ETA, held-out loss when evaluated); the adapter is written as a PEFT
// folder in OUT/adapter (and OUT/adapter-lora.gguf for llama.cpp); --plot draws the loss curves
// from OUT/metrics.jsonl. `muninn lora merge` writes a GGUF with an adapter merged in.
#include <algorithm>
#include <cmath>
#include <cstdio>
#include <fstream>
#include <map>
#include <memory>
#include <nlohmann/json.hpp>
#include <optional>
#include <sstream>
#include <string>
#include <vector>

#include "command_registry.h"
#include "device_backend.h"
#include "llm_cli.h"
#include "lora_spec.h"
#include "muninn/core/dtype.h"
#include "muninn/model/lora.h"
#include "muninn/model/lora_merge.h"
#include "muninn/model/parallel_training.h"
#include "muninn/model/peft_adapter.h"
#include "muninn/model/recall_tasks.h"
#include "muninn/model/train_data.h"
#include "muninn/model/trainer.h"
#include "muninn/retriever/mixed_memory_source.h"
#include "muninn/retriever/recall_memory_source.h"
#include "muninn/retriever/stream_memory_source.h"
#include "plot.h"
#include "runtime.h"

namespace muninn::tools {
namespace {

struct TrainFlags {
  std::string model;
  std::string device = "cpu";
  int gpu_layers = -1;
  std::vector<std::string> data;
  std::string out;
  int64_t block = 1024;
  int64_t steps = 100;
  int32_t grad_accum = 1;
  int32_t streams = 0;  // 0: one per process
  std::string reducer = "mpi";
  float lr = 5e-5f;
  int64_t warmup = 0;
  std::string decay = "linear";
  float min_lr_ratio = 0.0f;
  float weight_decay = 0.0f;
  float clip = 1.0f;
  int32_t rank = 16;
  float alpha = 32.0f;
  float dropout = 0.0f;
  std::string targets = "q,k,v,o";
  int32_t first_layer = -1;
  bool no_norms = false;
  bool memory_gates = false;  // train per-head memory logit biases of the layers reading memory
  float gate_lr = 0.0f;       // their peak learning rate (0: --lr)
  bool add_bos = false;
  uint64_t seed = 0;
  int64_t checkpoint_every = 50;
  bool resume = false;
  bool recompute = false;
  std::string bottom_cache;  // --bottom-cache DIR
  int threads = 0;
  int64_t stop_after = -1;
  std::vector<std::string> eval_data;
  int64_t eval_every = 0;
  int64_t eval_blocks = 0;
  std::string plot;
  // --task recall: synthetic recall examples read from MemLong memory (recall_tasks.h,
  // recall_memory_source.h); the --data files are their filler text.
  std::string task = "lm";
  std::string config;
  int64_t examples = 2000;
  int64_t eval_examples = 0;
  int64_t pool = 256;
  int64_t gold_only_steps = 0;
  int64_t distractor_steps = 0;
  int64_t min_local = 32;
  int64_t max_local = 256;
  double passkey_share = 0.5;
  std::vector<std::string> lm_data;  // --task recall: language-modelling blocks mixed in
  int64_t lm_every = 3;
  // --task lm --memory: MemLong's protocol on the --data streams (stream_memory_source.h).
  bool memory = false;
  int64_t query_tokens = 128;
};

// The loss curves of OUT/metrics.jsonl (the last record of each step: a resumed run repeats the
// steps after its checkpoint) as a PNG.
Status PlotMetrics(const std::string& metrics_path, const std::string& png) {
  std::ifstream in(metrics_path);
  if (!in) return NotFoundError("cannot read " + metrics_path);
  std::map<int64_t, double> train, eval;
  std::string line;
  while (std::getline(in, line)) {
    nlohmann::json j = nlohmann::json::parse(line, nullptr, /*allow_exceptions=*/false);
    if (j.is_discarded() || !j.contains("step") || !j.contains("loss")) continue;
    const int64_t step = j["step"].get<int64_t>();
    train[step] = j["loss"].get<double>();
    if (j.contains("eval_loss")) eval[step] = j["eval_loss"].get<double>();
  }
  std::vector<PlotSeries> series;
  auto add = [&](const std::string& name, const std::map<int64_t, double>& m) {
    PlotSeries ps;
    ps.name = name;
    for (const auto& [step, loss] : m) ps.points.emplace_back(static_cast<double>(step), loss);
    if (!ps.points.empty()) series.push_back(std::move(ps));
  };
  add("train loss", train);
  add("held-out loss", eval);
  return WriteLinePlot(png, "muninn train", "step", "cross-entropy (nats/token)", series,
                       /*log_x=*/false);
}

std::string Duration(double s) {
  if (!std::isfinite(s) || s < 0) return "?";
  char buf[32];
  const auto t = static_cast<long long>(s + 0.5);
  if (t >= 3600) {
    std::snprintf(buf, sizeof buf, "%lldh%02lldm", t / 3600, t % 3600 / 60);
  } else {
    std::snprintf(buf, sizeof buf, "%lldm%02llds", t / 60, t % 60);
  }
  return buf;
}

// Prints the error (naming the rank under MPI) and returns `code`; under mpirun a rank that fails
// alone ends the whole job, since the others would wait in the next collective.
int Fail(model::GradientReducer* reducer, const std::string& msg, int code) {
  std::fprintf(stderr, "muninn train%s: %s\n",
               reducer ? (" (rank " + std::to_string(reducer->rank()) + ")").c_str() : "",
               msg.c_str());
  if (reducer && reducer->world_size() > 1) reducer->Abort(code);
  return code;
}

void FillTrainerOptions(const TrainFlags& f, const model::Model& m,
                        const std::vector<model::LoraTarget>& targets, model::TrainerOptions* out);
int TrainAndReport(const TrainFlags& f, model::Model& m, const model::TrainData& data,
                   const model::TrainData* eval_data, const model::TrainerOptions& o,
                   const retriever::RecallMemorySource* recall);

// The bank holds the memory layer's K/V as the frozen model writes them (ingest, at training and
// at inference), so the adapter must not change them: the LoRA starts above the memory layer, or
// at it with neither k nor v adapted and its norms frozen (then the memory layer itself learns to
// read its own memory through q and o).
Status CheckMemoryLayerStaysFrozen(const model::LoraConfig& lora, int32_t memory_layer) {
  if (lora.first_layer > memory_layer) return Status::Ok();
  const bool kv = std::any_of(lora.targets.begin(), lora.targets.end(), [](model::LoraTarget t) {
    return t == model::LoraTarget::kK || t == model::LoraTarget::kV;
  });
  if (lora.first_layer == memory_layer && !kv && !lora.train_norms) return Status::Ok();
  return InvalidArgumentError(
      "--first-layer must be above the memory layer (" + std::to_string(memory_layer) +
      "), or equal to it with --targets without k and v and --no-norms: the memory layer's K/V "
      "are written by the frozen model");
}

// What a run with memory in the loop needs: the config's model (no adapter: training starts from
// the base model, whatever "lora" the config names), tokenizer and embedder, its MemLong options
// (*lc) and the trainer options filled from the flags (*o; the LoRA starts above the memory layer
// unless --first-layer says otherwise, CheckMemoryLayerStaysFrozen). InvalidArgument for what the
// flags or config get wrong.
StatusOr<std::unique_ptr<Runtime>> OpenMemoryTraining(const TrainFlags& f,
                                                      const std::vector<model::LoraTarget>& targets,
                                                      model::TrainerOptions* o,
                                                      retriever::LongContextOptions* lc) {
  RuntimeFlags rf;
  rf.config = f.config;
  rf.model = f.model;
  rf.threads = f.threads;
  rf.device = f.device;
  rf.gpu_layers = f.gpu_layers;
  rf.lora = "none";
  ASSIGN_OR_RETURN(std::unique_ptr<Runtime> rt, Runtime::Open(rf));
  *lc = rt->config().long_context;
  lc->use_memory = true;
  lc->modes = retriever::kModeMemLong;
  if (lc->retrieval_layers.empty()) {
    return InvalidArgumentError("the config's MemLong section has no retrieval layers to train");
  }
  FillTrainerOptions(f, rt->model(), targets, o);
  if (f.first_layer < 0) o->lora.first_layer = lc->memory_layer + 1;
  RETURN_IF_ERROR(CheckMemoryLayerStaysFrozen(o->lora, lc->memory_layer));
  if (f.memory_gates) {
    // Every trained layer that reads memory gets its gates.
    for (int32_t l : lc->retrieval_layers) {
      if (l >= o->lora.first_layer) o->lora.memory_gate_layers.push_back(l);
    }
    std::sort(o->lora.memory_gate_layers.begin(), o->lora.memory_gate_layers.end());
    o->lora.memory_gate_layers.erase(
        std::unique(o->lora.memory_gate_layers.begin(), o->lora.memory_gate_layers.end()),
        o->lora.memory_gate_layers.end());
    if (o->lora.memory_gate_layers.empty()) {
      return InvalidArgumentError("--memory-gates: no trained layer (from --first-layer " +
                                  std::to_string(o->lora.first_layer) +
                                  ") reads memory (the config's retrieval layers)");
    }
  }
  o->base_model_name = rt->config().model_path;
  return rt;
}

StatusOr<std::string> ReadFillerFiles(const std::vector<std::string>& paths) {
  std::string all;
  for (const std::string& p : paths) {
    std::ifstream in(p, std::ios::binary);
    if (!in) return NotFoundError("cannot open filler text " + p);
    std::stringstream ss;
    ss << in.rdbuf();
    all += ss.str();
    if (!all.empty() && all.back() != '\n') all += '\n';
  }
  return all;
}

// --task recall: the model, tokenizer, embedder and a MemLong session come from the config (as
// `muninn ask` builds them); the bank is a fresh in-RAM one only the memory source writes.
int RunRecallTrain(const TrainFlags& f, model::TrainerOptions o,
                   const std::vector<model::LoraTarget>& targets) {
  auto fail = [&o](const std::string& msg, int code) { return Fail(o.reducer, msg, code); };
  if (!f.eval_data.empty()) {
    return fail("--task recall evaluates on held-out synthetic examples (--eval-examples), not "
                "--eval-data", 2);
  }
  retriever::LongContextOptions lc;
  auto rt = OpenMemoryTraining(f, targets, &o, &lc);
  if (!rt.ok()) {
    return fail(rt.status().ToString(), rt.status().code() == StatusCode::kInvalidArgument ? 2 : 1);
  }
  model::Model& m = (*rt)->model();
  const model::Tokenizer& tok = (*rt)->tokenizer();
  auto filler = ReadFillerFiles(f.data);
  if (!filler.ok()) return fail(filler.status().ToString(), 2);
  model::RecallTaskOptions to;
  to.examples = f.examples;
  to.seed = f.seed + 1;
  to.chunk_tokens = lc.chunk_tokens;
  to.min_local_filler = f.min_local;
  to.max_local_filler = f.max_local;
  to.passkey_share = f.passkey_share;
  auto train = model::MakeRecallTasks(tok, *filler, to);
  if (!train.ok()) return fail(train.status().ToString(), 2);
  std::vector<model::RecallExample> eval;
  if (f.eval_examples > 0) {
    to.examples = f.eval_examples;
    to.seed = f.seed + 0x5eedull;  // other keys, facts and filler than the training examples
    auto e = model::MakeRecallTasks(tok, *filler, to);
    if (!e.ok()) return fail(e.status().ToString(), 2);
    eval = std::move(e).value();
  }
  auto pool = model::MakeFillerChunks(tok, *filler, lc.chunk_tokens, f.pool, f.seed + 2);
  if (!pool.ok()) return fail(pool.status().ToString(), 2);
  auto to_data = [&](const std::vector<model::RecallExample>& ex) {
    std::vector<std::vector<model::TokenId>> ids, labels;
    for (const auto& e : ex) {
      ids.push_back(e.ids);
      labels.push_back(e.labels);
    }
    return model::TrainData::FromLabeledBlocks(ids, labels, m.config().n_vocab);
  };
  auto data = to_data(*train);
  if (!data.ok()) return fail(data.status().ToString(), 2);
  std::unique_ptr<model::TrainData> eval_data;
  if (!eval.empty()) {
    auto ed = to_data(eval);
    if (!ed.ok()) return fail(ed.status().ToString(), 2);
    eval_data = std::make_unique<model::TrainData>(std::move(ed).value());
  }
  auto bank = (*rt)->NewMemoryBank(lc);
  if (!bank.ok()) return fail(bank.status().ToString(), 1);
  auto session = (*rt)->NewSession(lc, bank->get());
  if (!session.ok()) return fail(session.status().ToString(), 1);
  retriever::RecallMemoryOptions ro;
  ro.curriculum.gold_only_steps = f.gold_only_steps;
  ro.curriculum.distractor_steps = f.distractor_steps;
  ro.seed = f.seed + 3;
  std::fprintf(stderr,
               "muninn train: writing %lld distractor chunks (memory layer %d, chunk %lld tokens) "
               "into the training bank...\n",
               static_cast<long long>(pool->size()), lc.memory_layer,
               static_cast<long long>(lc.chunk_tokens));
  auto source = retriever::RecallMemorySource::Create(session->get(), (*rt)->embedder(), &*train,
                                                      eval.empty() ? nullptr : &eval, *pool, ro);
  if (!source.ok()) return fail(source.status().ToString(), 2);
  ThreadPool train_pool(f.threads);
  o.model.pool = &train_pool;
  o.memory = source->get();
  if (f.lm_data.empty()) return TrainAndReport(f, m, *data, eval_data.get(), o, source->get());

  // --lm-data: language-modelling blocks read through MemLong's stream protocol (their own bank),
  // one after every --lm-every recall examples, so the adapter keeps the model's language.
  auto lm = model::TrainData::Load(f.lm_data, &tok, m.config().n_vocab, f.block, f.add_bos);
  if (!lm.ok()) return fail("--lm-data: " + lm.status().ToString(), 2);
  auto plan = retriever::InterleavePlan(data->n_blocks(), lm->n_blocks(), f.lm_every);
  if (!plan.ok()) return fail("--lm-every: " + plan.status().ToString(), 2);
  std::vector<std::vector<model::TokenId>> ids, labels;
  for (int64_t i = 0; i < plan->size(); ++i) {
    const model::TrainData& from = plan->source[static_cast<size_t>(i)] == 0 ? *data : *lm;
    const int64_t b = plan->index[static_cast<size_t>(i)];
    ids.emplace_back(from.ids(b).begin(), from.ids(b).end());
    labels.emplace_back(from.labels(b).begin(), from.labels(b).end());
  }
  auto mixed = model::TrainData::FromLabeledBlocks(ids, labels, m.config().n_vocab);
  if (!mixed.ok()) return fail(mixed.status().ToString(), 2);
  auto lm_bank = (*rt)->NewMemoryBank(lc);
  if (!lm_bank.ok()) return fail(lm_bank.status().ToString(), 1);
  auto lm_session = (*rt)->NewSession(lc, lm_bank->get());
  if (!lm_session.ok()) return fail(lm_session.status().ToString(), 1);
  retriever::StreamMemoryOptions so;
  so.query_tokens = f.query_tokens;
  auto lm_source = retriever::StreamMemorySource::Create(lm_session->get(), (*rt)->embedder(),
                                                         &*lm, nullptr, so);
  if (!lm_source.ok()) return fail(lm_source.status().ToString(), 2);
  auto mix = retriever::MixedMemorySource::Create(source->get(), lm_source->get(),
                                                  std::move(plan).value());
  if (!mix.ok()) return fail(mix.status().ToString(), 2);
  o.memory = mix->get();
  return TrainAndReport(f, m, *mixed, eval_data.get(), o, source->get());
}

// --task lm --memory: every document of --data (and --eval-data) is a stream with its own memory
// in a fresh in-RAM bank of the config's MemLong layout.
int RunStreamMemoryTrain(const TrainFlags& f, model::TrainerOptions o,
                         const std::vector<model::LoraTarget>& targets) {
  auto fail = [&o](const std::string& msg, int code) { return Fail(o.reducer, msg, code); };
  retriever::LongContextOptions lc;
  auto rt = OpenMemoryTraining(f, targets, &o, &lc);
  if (!rt.ok()) {
    return fail(rt.status().ToString(), rt.status().code() == StatusCode::kInvalidArgument ? 2 : 1);
  }
  model::Model& m = (*rt)->model();
  auto data = model::TrainData::Load(f.data, &(*rt)->tokenizer(), m.config().n_vocab, f.block,
                                     f.add_bos);
  if (!data.ok()) return fail(data.status().ToString(), 2);
  std::unique_ptr<model::TrainData> eval_data;
  if (!f.eval_data.empty()) {
    auto ed = model::TrainData::Load(f.eval_data, &(*rt)->tokenizer(), m.config().n_vocab, f.block,
                                     f.add_bos);
    if (!ed.ok()) return fail("--eval-data: " + ed.status().ToString(), 2);
    eval_data = std::make_unique<model::TrainData>(std::move(ed).value());
  }
  auto bank = (*rt)->NewMemoryBank(lc);
  if (!bank.ok()) return fail(bank.status().ToString(), 1);
  auto session = (*rt)->NewSession(lc, bank->get());
  if (!session.ok()) return fail(session.status().ToString(), 1);
  retriever::StreamMemoryOptions so;
  so.query_tokens = f.query_tokens;
  auto source = retriever::StreamMemorySource::Create(session->get(), (*rt)->embedder(), &*data,
                                                      eval_data.get(), so);
  if (!source.ok()) return fail(source.status().ToString(), 2);
  ThreadPool train_pool(f.threads);
  o.model.pool = &train_pool;
  o.memory = source->get();
  return TrainAndReport(f, m, *data, eval_data.get(), o, nullptr);
}

int RunTrain(const TrainFlags& flags) {
  TrainFlags f = flags;
  // Under mpirun every rank runs this function; a rank that fails alone ends the whole job
  // (the others would wait in the next collective).
  std::unique_ptr<model::GradientReducer> reducer;
  auto fail = [&reducer](const std::string& msg, int code) {
    return Fail(reducer.get(), msg, code);
  };
  if (f.reducer != "mpi" && f.reducer != "nccl") {
    return fail("--reducer must be mpi or nccl, got '" + f.reducer + "'", 2);
  }
  if (f.reducer == "nccl" || model::LaunchedAsSeveralMpiProcesses()) {
    auto r = f.reducer == "nccl" ? model::CreateNcclGradientReducer()
                                 : model::CreateMpiGradientReducer();
    if (!r.ok()) {
      return fail("started as one of several MPI processes / with --reducer nccl, but: " +
                      r.status().ToString(),
                  2);
    }
    reducer = std::move(r).value();
  }
  const int world = reducer == nullptr ? 1 : reducer->world_size();
  // The node-local rank picks the GPU, as the NCCL reducer's does.
  f.device = DeviceForRank(flags.device,
                           model::NodeLocalRank(reducer == nullptr ? 0 : reducer->rank()), world);
  model::TrainerOptions o;
  o.reducer = reducer.get();
  o.streams = f.streams > 0 ? f.streams : world;
  auto targets = model::ParseLoraTargets(f.targets);
  if (!targets.ok()) return fail(std::string(targets.status().message()), 2);
  if (f.decay == "linear") {
    o.decay = LrDecay::kLinear;
  } else if (f.decay == "cosine") {
    o.decay = LrDecay::kCosine;
  } else if (f.decay == "constant") {
    o.decay = LrDecay::kConstant;
  } else {
    return fail("--decay must be linear, cosine or constant, got '" + f.decay + "'", 2);
  }
  if (f.block < 1) return fail("--block must be >= 1", 2);
  if (f.gate_lr != 0.0f && !f.memory_gates) return fail("--gate-lr needs --memory-gates", 2);
  if (f.task == "recall" && !f.bottom_cache.empty()) {
    return fail("--bottom-cache does not apply to --task recall: its examples are generated "
                "afresh every step, so no block would ever be read back",
                2);
  }
  if (f.task == "recall") return RunRecallTrain(f, std::move(o), *targets);
  if (f.task != "lm") return fail("--task must be lm or recall, got '" + f.task + "'", 2);
  if (f.memory) return RunStreamMemoryTrain(f, std::move(o), *targets);
  if (f.memory_gates) {
    return fail("--memory-gates needs memory in the loop: --task recall or --memory (with "
                "--config)", 2);
  }
  auto cm = OpenCliModel(f.model, f.threads, /*load_tokenizer=*/true, /*exact_matmul=*/false,
                         f.device, {}, f.gpu_layers);
  if (!cm.ok() && cm.status().code() != StatusCode::kUnavailable &&
      cm.status().code() != StatusCode::kFailedPrecondition) {
    // A model without a tokenizer can still train on {"ids": [...]} JSONL; TrainData::Load says
    // so clearly if a file holds text after all.
    const bool all_jsonl = std::all_of(f.data.begin(), f.data.end(), [](const std::string& p) {
      return p.size() > 6 && p.compare(p.size() - 6, 6, ".jsonl") == 0;
    });
    if (all_jsonl) {
      cm = OpenCliModel(f.model, f.threads, /*load_tokenizer=*/false, /*exact_matmul=*/false,
                        f.device, {}, f.gpu_layers);
    }
  }
  if (!cm.ok()) return fail(cm.status().ToString(), 1);
  model::Model& m = *(*cm)->loaded.model;
  FillTrainerOptions(f, m, *targets, &o);
  o.base_model_name = (*cm)->path;
  o.model.pool = (*cm)->pool.get();
  auto data = model::TrainData::Load(f.data, (*cm)->loaded.tokenizer.get(), m.config().n_vocab,
                                     f.block, f.add_bos);
  if (!data.ok()) return fail(data.status().ToString(), 2);
  std::unique_ptr<model::TrainData> eval_data;
  if (!f.eval_data.empty()) {
    auto ed = model::TrainData::Load(f.eval_data, (*cm)->loaded.tokenizer.get(), m.config().n_vocab,
                                     f.block, f.add_bos);
    if (!ed.ok()) return fail("--eval-data: " + ed.status().ToString(), 2);
    eval_data = std::make_unique<model::TrainData>(std::move(ed).value());
  }
  return TrainAndReport(f, m, *data, eval_data.get(), o, nullptr);
}

void FillTrainerOptions(const TrainFlags& f, const model::Model& m,
                        const std::vector<model::LoraTarget>& targets, model::TrainerOptions* out) {
  model::TrainerOptions& o = *out;
  o.lora.rank = f.rank;
  o.lora.alpha = f.alpha;
  o.lora.dropout = f.dropout;
  o.lora.targets = targets;
  o.lora.first_layer = f.first_layer >= 0 ? f.first_layer : m.config().n_layer / 2;
  o.lora.train_norms = !f.no_norms;
  o.steps = f.steps;
  o.grad_accum = f.grad_accum;
  o.lr = f.lr;
  o.warmup_steps = f.warmup;
  o.min_lr_ratio = f.min_lr_ratio;
  o.adamw.weight_decay = f.weight_decay;
  o.gate_lr = f.gate_lr;
  o.clip = f.clip;
  o.seed = f.seed;
  o.out_dir = f.out;
  o.checkpoint_every = f.checkpoint_every;
  o.resume = f.resume;
  o.model.recompute = f.recompute;
  o.model.bottom_cache_dir = f.bottom_cache;
  o.eval_every = f.eval_every;
  o.eval_max_blocks = f.eval_blocks;
}

// Runs the trainer with progress lines, the plot and the closing message. `recall` (may be null)
// adds the retriever's gold-chunk recall to the progress line.
int TrainAndReport(const TrainFlags& f, model::Model& m, const model::TrainData& data,
                   const model::TrainData* eval_data, const model::TrainerOptions& o,
                   const retriever::RecallMemorySource* recall) {
  auto fail = [&o](const std::string& msg, int code) { return Fail(o.reducer, msg, code); };
  auto trainer = model::Trainer::Create(&m, &data, o, eval_data);
  if (!trainer.ok()) {
    return fail(trainer.status().ToString(),
                trainer.status().code() == StatusCode::kInvalidArgument ? 2 : 1);
  }
  if (f.stop_after >= 0) (*trainer)->StopAfter(f.stop_after);
  const bool root = o.reducer == nullptr || o.reducer->rank() == 0;
  const int world = o.reducer == nullptr ? 1 : o.reducer->world_size();
  if (root) {
    std::fprintf(stderr,
                 "muninn train: %lld blocks (%lld tokens, %lld documents), LoRA r %d alpha %g on "
                 "%s of layers %d..%d%s, %lld trainable parameters; %s from step %lld\n",
                 static_cast<long long>(data.n_blocks()), static_cast<long long>(data.n_tokens()),
                 static_cast<long long>(data.n_documents()), o.lora.rank,
                 static_cast<double>(o.lora.alpha), f.targets.c_str(), o.lora.first_layer,
                 m.config().n_layer - 1, o.lora.train_norms ? " + norms" : "",
                 static_cast<long long>((*trainer)->params().size()),
                 f.resume ? "resuming" : "starting", static_cast<long long>((*trainer)->step()));
    if (!o.lora.memory_gate_layers.empty()) {
      std::string layers;
      for (int32_t l : o.lora.memory_gate_layers) {
        layers += (layers.empty() ? "" : ",") + std::to_string(l);
      }
      char lr[48];
      std::snprintf(lr, sizeof lr, "%g%s",
                    static_cast<double>(o.gate_lr > 0.0f ? o.gate_lr : o.lr),
                    o.gate_lr > 0.0f ? " (--gate-lr)" : " (--lr)");
      std::fprintf(stderr,
                   "muninn train: memory gates (per-head memory logit biases, %d per layer, from "
                   "0, no weight decay, peak lr %s) on layers %s; saved in "
                   "adapter/memory_gates.safetensors, left out of adapter-lora.gguf (llama.cpp "
                   "has no memory)\n",
                   m.config().n_head, lr, layers.c_str());
    }
    if (o.streams > 1 || world > 1) {
      std::fprintf(stderr,
                   "muninn train: %d data streams x %d blocks a step over %d process%s (%s)\n",
                   o.streams, o.grad_accum, world, world > 1 ? "es" : "",
                   o.reducer == nullptr ? "local" : f.reducer.c_str());
    }
  }
  bool plot_warned = false;
  int64_t plotted_step = -1;  // the step the plot last showed
  const Status st = (*trainer)->Run([&f, &plot_warned, &plotted_step, root,
                                     recall](const model::StepReport& r) {
    if (!root) return;
    // The plot is redrawn at every held-out evaluation too, so that a run stopped between sittings
    // (SIGKILL, a session's end) leaves a current picture beside its checkpoint.
    if (r.evaluated && !f.plot.empty()) {
      const Status ps = PlotMetrics(f.out + "/metrics.jsonl", f.plot);
      if (ps.ok()) plotted_step = r.step;
      if (!ps.ok() && !plot_warned) {
        std::fprintf(stderr, "muninn train: --plot: %s\n", ps.ToString().c_str());
        plot_warned = true;
      }
    }
    char eval[48] = "";
    if (r.evaluated) std::snprintf(eval, sizeof eval, "  held-out %.4f", r.eval_loss);
    char gold[48] = "";
    if (recall != nullptr) {
      std::snprintf(gold, sizeof gold, "  top-k gold %.0f%%", 100.0 * recall->gold_recall());
    }
    std::fprintf(stderr, "step %lld/%lld  loss %.4f  lr %.3g  |g| %.3g  %.1f tok/s  ETA %s%s%s%s\n",
                 static_cast<long long>(r.step), static_cast<long long>(r.total_steps), r.loss,
                 static_cast<double>(r.lr), r.grad_norm, r.tokens_per_second,
                 Duration(r.eta_seconds).c_str(), eval, gold, r.checkpointed ? "  [checkpoint]" : "");
  });
  if (!f.plot.empty() && root && !(st.ok() && plotted_step == (*trainer)->step())) {
    // Also after a failed run: the curve up to the failure is what one wants to see then. (Not
    // again when the last step's evaluation has just drawn it.)
    const Status ps = PlotMetrics(f.out + "/metrics.jsonl", f.plot);
    if (!ps.ok()) std::fprintf(stderr, "muninn train: --plot: %s\n", ps.ToString().c_str());
  }
  if (!f.bottom_cache.empty()) {
    const model::BottomCacheCounts c = (*trainer)->bottom_cache_stats();
    std::fprintf(stderr,
                 "muninn train: bottom cache %s: %lld blocks read, %lld computed and stored, %lld "
                 "rewritten (did not check out), %lld not cacheable (their frozen layers read "
                 "memory)\n",
                 f.bottom_cache.c_str(), static_cast<long long>(c.hits),
                 static_cast<long long>(c.misses), static_cast<long long>(c.rejected),
                 static_cast<long long>(c.skipped));
    if (c.write_errors > 0) {
      std::fprintf(stderr, "muninn train: bottom cache: %lld blocks could not be stored (%s)\n",
                   static_cast<long long>(c.write_errors), c.first_write_error.c_str());
    }
  }
  if (!st.ok()) return fail(st.ToString(), 1);
  if (root) {
    const model::LoraParams& p = (*trainer)->params();
    for (int32_t l : o.lora.memory_gate_layers) {
      std::string values;
      const float* b = p.values().data() + p.OffsetMemGate(l);
      for (int32_t h = 0; h < m.config().n_head; ++h) {
        char buf[24];
        std::snprintf(buf, sizeof buf, " %+.3f", static_cast<double>(b[h]));
        values += buf;
      }
      std::fprintf(stderr, "muninn train: layer %d memory gates:%s\n", l, values.c_str());
    }
    std::fprintf(stderr,
                 "muninn train: step %lld; adapter in %s/adapter, metrics in %s/metrics.jsonl\n",
                 static_cast<long long>((*trainer)->step()), f.out.c_str(), f.out.c_str());
  }
  return 0;
}

struct MergeFlags {
  std::string model;
  std::string lora;
  std::string out;
  std::string type = "auto";  // or "same", or a merge type (IsMergeMatrixType)
};

int RunLoraMerge(const MergeFlags& f) {
  auto fail = [](const std::string& msg, int code) {
    std::fprintf(stderr, "muninn lora merge: %s\n", msg.c_str());
    return code;
  };
  model::MergeMatrixType type;
  if (f.type == "same") {
    type.kind = model::MergeMatrixType::kSame;
  } else if (f.type != "auto") {
    const std::optional<DType> d = DTypeFromName(f.type);
    if (!d || !model::IsMergeMatrixType(*d)) {
      return fail("--type must be auto, same, f32, f16, bf16, q4_0, q4_1, q5_0, q5_1 or q8_0, "
                  "got '" + f.type + "'",
                  2);
    }
    type = model::MergeMatrixType::Fixed(*d);
  }
  auto cm = OpenCliModel(f.model, 1, /*load_tokenizer=*/false);
  if (!cm.ok()) return fail(cm.status().ToString(), 1);
  const LoraSpec ls = ParseLoraSpec(f.lora);
  const model::Model& m = *(*cm)->loaded.model;
  auto params = model::ReadPeftAdapter(ls.path, m.config(), m.weights());
  if (!params.ok()) return fail(params.status().ToString(), 2);
  const Status st = model::MergeLoraIntoGguf((*cm)->path, *params, ls.scale, f.out, type);
  if (!st.ok()) return fail(st.ToString(), st.code() == StatusCode::kInvalidArgument ? 2 : 1);
  std::fprintf(stderr, "muninn lora merge: wrote %s (%s merged at scale %g, matrices %s)\n",
               f.out.c_str(), ls.path.c_str(), static_cast<double>(ls.scale), f.type.c_str());
  return 0;
}

}  // namespace

void RegisterTrainCommands(CLI::App& app, CommandContext& ctx) {
  {
    auto mf = std::make_shared<MergeFlags>();
    auto* lora = app.add_subcommand("lora", "LoRA adapter tools");
    lora->require_subcommand(1);
    auto* merge = lora->add_subcommand(
        "merge", "Write a GGUF with a PEFT LoRA folder merged in");
    merge->add_option("-m,--model", mf->model, "Base model (llama GGUF file)");
    merge->add_option("--lora", mf->lora, "PEFT LoRA folder, optionally :SCALE")->required();
    merge->add_option("-o,--out", mf->out, "Merged GGUF to write")->required();
    merge->add_option("--type", mf->type,
                      "Type of the adapted matrices: auto (float ones keep their type, "
                      "quantized ones become q8_0), same (each re-quantized to its type in the "
                      "base file), f32 (exact), f16, bf16, q4_0, q4_1, q5_0, q5_1 or q8_0")
        ->capture_default_str();
    merge->callback([mf, &ctx] { ctx.exit_code = RunLoraMerge(*mf); });
  }
  auto f = std::make_shared<TrainFlags>();
  auto* cmd = app.add_subcommand(
      "train", "LoRA fine-tuning of the upper layers (PEFT adapter, resumable checkpoints)");
  cmd->add_option("-m,--model", f->model, "Model (GGUF file or Hugging Face folder)");
  cmd->add_option("-d,--data", f->data,
                  "Training data: .jsonl ({\"text\": ...} or {\"ids\": [...]} per line) or plain "
                  "text (one document per file); repeatable")
      ->required();
  cmd->add_option("-o,--out", f->out, "Output folder (checkpoint.bin, metrics.jsonl, adapter/)")
      ->required();
  cmd->add_option("--block", f->block, "Tokens per block")->capture_default_str();
  cmd->add_option("--steps", f->steps, "Optimizer steps")->capture_default_str();
  cmd->add_option("--grad-accum", f->grad_accum, "Blocks per optimizer step and data stream")
      ->capture_default_str();
  cmd->add_option("--streams", f->streams,
                  "Contiguous data streams, each giving --grad-accum blocks a step, summed in "
                  "stream order (0: one per MPI process; `mpirun -np N` equals one process with "
                  "--streams N bit for bit)")
      ->capture_default_str();
  cmd->add_option("--reducer", f->reducer,
                  "Under mpirun: how the streams' gradients are gathered: mpi, or nccl (CUDA "
                  "builds with NCCL; one GPU per process)")
      ->capture_default_str();
  cmd->add_option("--lr", f->lr, "Peak learning rate")->capture_default_str();
  cmd->add_option("--warmup", f->warmup, "Linear warm-up steps")->capture_default_str();
  cmd->add_option("--decay", f->decay, "After warm-up: linear, cosine or constant")
      ->capture_default_str();
  cmd->add_option("--min-lr-ratio", f->min_lr_ratio, "Floor of the decay (fraction of --lr)")
      ->capture_default_str();
  cmd->add_option("--weight-decay", f->weight_decay, "AdamW decoupled weight decay")
      ->capture_default_str();
  cmd->add_option("--clip", f->clip, "Global gradient-norm clipping (<= 0: off)")
      ->capture_default_str();
  cmd->add_option("-r,--rank", f->rank, "LoRA rank")->capture_default_str();
  cmd->add_option("--alpha", f->alpha, "LoRA alpha (scale alpha / rank)")->capture_default_str();
  cmd->add_option("--dropout", f->dropout, "LoRA dropout")->capture_default_str();
  cmd->add_option("--targets", f->targets, "LoRA target matrices: q,k,v,o,gate,up,down")
      ->capture_default_str();
  cmd->add_option("--first-layer", f->first_layer,
                  "First trained layer; layers below run forward only (-1: n_layer / 2)")
      ->capture_default_str();
  cmd->add_flag("--no-norms", f->no_norms, "Do not train the trained layers' RMSNorm weights");
  cmd->add_flag("--memory-gates", f->memory_gates,
                "With memory (--task recall, --memory): also train a per-head bias on the memory "
                "logits of every trained layer that reads memory (starts at 0, no weight decay; "
                "saved as adapter/memory_gates.safetensors)");
  cmd->add_option("--gate-lr", f->gate_lr,
                  "--memory-gates: their peak learning rate, same schedule (0: --lr)")
      ->capture_default_str();
  cmd->add_flag("--add-bos", f->add_bos, "Prepend BOS to each tokenized document");
  cmd->add_option("--seed", f->seed, "Seed of the adapter init and dropout")->capture_default_str();
  cmd->add_option("--checkpoint-every", f->checkpoint_every,
                  "Steps between checkpoints (0: only at the end)")
      ->capture_default_str();
  cmd->add_flag("--resume", f->resume, "Continue the run in --out from its checkpoint");
  cmd->add_option("--bottom-cache", f->bottom_cache,
                  "Folder that keeps the frozen layers' output of every block (n_embd floats a "
                  "token), read back when a block comes again (epochs, repeated runs on the same "
                  "corpus); bit for bit what recomputing gives");
  cmd->add_flag("--recompute", f->recompute,
                "Recompute each layer's activations in the backward (less memory)");
  cmd->add_option("-t,--threads", f->threads, "Threads (0 = all cores)")->capture_default_str();
  cmd->add_option("--device", f->device,
                  std::string(kDeviceHelp) +
                      "; the trained layers' weights, activations and gradients live there too "
                      "(under mpirun, `cuda` gives the process of node-local rank r the GPU "
                      "r mod the GPU count, as the NCCL reducer does)")
      ->capture_default_str();
  cmd->add_option("--gpu-layers,--ngl", f->gpu_layers, kGpuLayersHelp)->capture_default_str();
  cmd->add_option("--eval-data", f->eval_data,
                  "Held-out data (same formats as --data), evaluated every --eval-every steps "
                  "and at the end; repeatable");
  cmd->add_option("--eval-every", f->eval_every, "Steps between evaluations (0: only at the end)")
      ->capture_default_str();
  cmd->add_option("--eval-blocks", f->eval_blocks, "Evaluate the first N blocks (0: all)")
      ->capture_default_str();
  cmd->add_option("--plot", f->plot,
                  "Write the loss curves from metrics.jsonl to this PNG (at every evaluation and "
                  "when the run ends)");
  cmd->add_option("--task", f->task,
                  "lm: language modelling on --data; recall: synthetic facts read from MemLong "
                  "memory (--data is their filler text; model and memory settings from --config)")
      ->capture_default_str();
  cmd->add_option("--config", f->config,
                  "Config whose MemLong settings --task recall and --memory train for");
  cmd->add_flag("--memory", f->memory,
                "--task lm: MemLong's protocol, each document a stream with its own bank "
                "(retrieve before a block, write it after)");
  cmd->add_option("--query-tokens", f->query_tokens,
                  "--memory: tokens before a block that form its retrieval query")
      ->capture_default_str();
  cmd->add_option("--examples", f->examples, "--task recall: training examples")
      ->capture_default_str();
  cmd->add_option("--eval-examples", f->eval_examples,
                  "--task recall: held-out examples (real top-k memory), evaluated every "
                  "--eval-every steps")
      ->capture_default_str();
  cmd->add_option("--pool", f->pool, "--task recall: distractor chunks in the training bank")
      ->capture_default_str();
  cmd->add_option("--gold-only-steps", f->gold_only_steps,
                  "--task recall curriculum: steps with only the fact's chunk in memory")
      ->capture_default_str();
  cmd->add_option("--distractor-steps", f->distractor_steps,
                  "--task recall curriculum: then steps with random distractors beside it "
                  "(afterwards the retriever's real top-k)")
      ->capture_default_str();
  cmd->add_option("--passkey-share", f->passkey_share,
                  "--task recall: share of examples asking the standard passkey question (the "
                  "rest: names' numbers, objects' codes, ledger values)")
      ->capture_default_str();
  cmd->add_option("--lm-data", f->lm_data,
                  "--task recall: text whose --block-token blocks are mixed in as language "
                  "modelling with MemLong's stream memory (keeps the model's language); repeatable");
  cmd->add_option("--lm-every", f->lm_every,
                  "--task recall with --lm-data: one language-modelling block after every N "
                  "recall examples")
      ->capture_default_str();
  cmd->add_option("--local-filler", f->min_local, "--task recall: least filler tokens before the question")
      ->capture_default_str();
  cmd->add_option("--local-filler-max", f->max_local, "--task recall: most filler tokens before the question")
      ->capture_default_str();
  cmd->add_option("--stop-after", f->stop_after,
                  "Stop after this many steps (the schedule still spans --steps; for tests)");
  cmd->callback([f, &ctx] { ctx.exit_code = RunTrain(*f); });
}

}  // namespace muninn::tools
