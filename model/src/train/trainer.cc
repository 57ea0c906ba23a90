#include "muninn/model/trainer.h"

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <sstream>

#include "muninn/core/mapped_file.h"
#include "muninn/model/lora_gguf.h"
#include "muninn/model/peft_adapter.h"
#include "train/atomic_file.h"
#include "train/fnv1a.h"

namespace muninn::model {

namespace {

constexpr char kMagic[8] = {'M', 'N', 'N', 'T', 'R', 'A', 'I', 'N'};
constexpr uint32_t kVersion = 2;
constexpr uint32_t kVersionGates = 3;  // version 2's layout, the arena ending with memory gates

using train::Fnv1a;

uint64_t Mix(uint64_t a, uint64_t b) {
  uint64_t z = a ^ (b + 0x9E3779B97F4A7C15ull + (a << 6) + (a >> 2));
  z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
  z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
  return z ^ (z >> 31);
}

// Little-endian writer/reader of the checkpoint (the host is little-endian: x86-64 / aarch64).
void PutU32(std::vector<uint8_t>* out, uint32_t v) {
  for (int i = 0; i < 4; ++i) out->push_back(static_cast<uint8_t>(v >> (8 * i)));
}
void PutU64(std::vector<uint8_t>* out, uint64_t v) {
  for (int i = 0; i < 8; ++i) out->push_back(static_cast<uint8_t>(v >> (8 * i)));
}
void PutFloats(std::vector<uint8_t>* out, const std::vector<float>& v) {
  const auto* p = reinterpret_cast<const uint8_t*>(v.data());
  out->insert(out->end(), p, p + v.size() * sizeof(float));
}

class Reader {
 public:
  explicit Reader(std::span<const uint8_t> b) : b_(b) {}
  bool U32(uint32_t* v) { return Get(v, 4); }
  bool U64(uint64_t* v) { return Get(v, 8); }
  bool Bytes(void* dst, uint64_t n) {
    if (n > b_.size() - pos_) return false;
    std::memcpy(dst, b_.data() + pos_, n);
    pos_ += n;
    return true;
  }
  size_t pos() const { return pos_; }

 private:
  template <typename T>
  bool Get(T* v, int n) {
    if (static_cast<size_t>(n) > b_.size() - pos_) return false;
    T x = 0;
    for (int i = 0; i < n; ++i) x |= static_cast<T>(b_[pos_ + static_cast<size_t>(i)]) << (8 * i);
    *v = x;
    pos_ += static_cast<size_t>(n);
    return true;
  }
  std::span<const uint8_t> b_;
  size_t pos_ = 0;
};

std::string DecayName(LrDecay d) {
  switch (d) {
    case LrDecay::kConstant:
      return "constant";
    case LrDecay::kLinear:
      return "linear";
    case LrDecay::kCosine:
      return "cosine";
  }
  return "?";
}

}  // namespace

Status TrainerOptions::Validate() const {
  if (steps < 1) return InvalidArgumentError("--steps must be >= 1, got " + std::to_string(steps));
  if (grad_accum < 1) {
    return InvalidArgumentError("--grad-accum must be >= 1, got " + std::to_string(grad_accum));
  }
  if (streams < 1)
    return InvalidArgumentError("--streams must be >= 1, got " + std::to_string(streams));
  if (reducer != nullptr && streams % reducer->world_size() != 0) {
    return InvalidArgumentError("--streams " + std::to_string(streams) +
                                " must be a multiple of the number of MPI processes (" +
                                std::to_string(reducer->world_size()) + ")");
  }
  if (!(lr > 0.0f) || !std::isfinite(lr)) {
    return InvalidArgumentError("--lr must be finite and > 0, got " + std::to_string(lr));
  }
  if (warmup_steps < 0 || warmup_steps > steps) {
    return InvalidArgumentError("--warmup must be in [0, steps], got " +
                                std::to_string(warmup_steps));
  }
  if (!std::isfinite(clip)) return InvalidArgumentError("--clip must be finite");
  if (!(gate_lr >= 0.0f) || !std::isfinite(gate_lr)) {
    return InvalidArgumentError("--gate-lr must be finite and >= 0 (0: --lr), got " +
                                std::to_string(gate_lr));
  }
  if (checkpoint_every < 0) return InvalidArgumentError("--checkpoint-every must be >= 0");
  if (out_dir.empty()) return InvalidArgumentError("an output folder (--out) is required");
  if (eval_every < 0 || eval_max_blocks < 0) {
    return InvalidArgumentError("--eval-every and --eval-blocks must be >= 0");
  }
  RETURN_IF_ERROR(adamw.Validate());
  return Status::Ok();
}

Trainer::Trainer(Model* model, const TrainData* data, const TrainerOptions& options)
    : model_(model), data_(data), options_(options) {}

Trainer::~Trainer() = default;

StatusOr<std::unique_ptr<Trainer>> Trainer::Create(Model* model, const TrainData* data,
                                                   const TrainerOptions& options,
                                                   const TrainData* eval_data) {
  MUNINN_CHECK(model != nullptr && data != nullptr);
  RETURN_IF_ERROR(options.Validate());
  std::unique_ptr<Trainer> t(new Trainer(model, data, options));
  t->eval_data_ = eval_data;
  if (options.reducer != nullptr) t->reducer_ = options.reducer;
  const int64_t n_blocks = data->n_blocks(), n_streams = options.streams;
  if (n_blocks < n_streams) {
    return InvalidArgumentError("the data has " + std::to_string(n_blocks) +
                                " blocks, fewer than the " + std::to_string(n_streams) +
                                " streams (--streams / MPI processes); add data or use fewer");
  }
  for (int64_t s = 0; s <= n_streams; ++s) t->stream_begin_.push_back(s * n_blocks / n_streams);
  t->cursors_.assign(static_cast<size_t>(n_streams), 0);
  t->schedule_.peak_lr = options.lr;
  t->schedule_.warmup_steps = options.warmup_steps;
  t->schedule_.total_steps = options.steps;
  t->schedule_.decay = options.decay;
  t->schedule_.min_lr_ratio = options.min_lr_ratio;
  RETURN_IF_ERROR(t->schedule_.Validate());
  ASSIGN_OR_RETURN(t->train_model_, TrainModel::Create(model, options.lora, options.model));
  ASSIGN_OR_RETURN(LoraParams p,
                   LoraParams::Create(model->config(),
                                     t->train_model_->host_norm_weights(), options.lora));
  p.InitPeft(options.seed);
  t->params_ = std::make_unique<LoraParams>(std::move(p));
  const size_t n = static_cast<size_t>(t->params_->size());
  t->grads_.assign(n, 0.0f);
  t->stream_grads_.assign(n * static_cast<size_t>(n_streams / t->reducer_->world_size()), 0.0f);
  t->m_.assign(n, 0.0f);
  t->v_.assign(n, 0.0f);
  std::error_code ec;
  std::filesystem::create_directories(options.out_dir, ec);
  if (ec) return IoError("cannot create output folder " + options.out_dir + ": " + ec.message());
  if (options.resume) {
    RETURN_IF_ERROR(t->LoadCheckpoint());
  } else if (std::filesystem::exists(options.out_dir + "/checkpoint.bin")) {
    return AlreadyExistsError(options.out_dir +
                              " already holds a checkpoint; pass --resume to "
                              "continue that run or choose another --out folder");
  }
  // Every rank must run the same settings on the same data from the same point.
  std::string state = t->RunDescription() + "/" + std::to_string(t->step_);
  for (int64_t c : t->cursors_) state += "/" + std::to_string(c);
  RETURN_IF_ERROR(t->reducer_->CheckSame(
      Fnv1a(std::span(reinterpret_cast<const uint8_t*>(state.data()), state.size())),
      "the run settings, data and checkpoint step (every rank needs the same flags, data files "
      "and checkpoint)"));
  return t;
}

std::string Trainer::RunDescription() const {
  const LoraConfig& c = options_.lora;
  nlohmann::json targets = nlohmann::json::array();
  for (LoraTarget t : params_->config().targets) targets.push_back(std::string(LoraTargetName(t)));
  std::sort(targets.begin(), targets.end());
  const nlohmann::json j = {{"rank", c.rank},
                            {"alpha", c.alpha},
                            {"dropout", c.dropout},
                            {"targets", targets},
                            {"first_layer", c.first_layer},
                            {"train_norms", c.train_norms},
                            {"grad_accum", options_.grad_accum},
                            {"data_blocks", data_->n_blocks()},
                            {"data_tokens", data_->n_tokens()},
                            {"n_layer", model_->config().n_layer},
                            {"n_embd", model_->config().n_embd},
                            {"n_vocab", model_->config().n_vocab},
                            {"steps", options_.steps},
                            {"lr", options_.lr},
                            {"warmup", options_.warmup_steps},
                            {"decay", DecayName(options_.decay)},
                            {"min_lr_ratio", options_.min_lr_ratio},
                            {"weight_decay", options_.adamw.weight_decay},
                            {"clip", options_.clip}};
  nlohmann::json d = j;
  if (options_.streams > 1) d["streams"] = options_.streams;  // v1 descriptions stay valid
  if (options_.memory != nullptr) d["memory"] = options_.memory->Describe();
  if (!c.memory_gate_layers.empty()) {  // absent without gates: older descriptions stay valid
    d["memory_gates"] = c.memory_gate_layers;
    if (options_.gate_lr > 0.0f) d["gate_lr"] = options_.gate_lr;
  }
  return d.dump();
}

Status Trainer::SaveCheckpoint() {
  if (!writes_files()) {
    last_checkpoint_ = step_;
    return Status::Ok();
  }
  std::vector<uint8_t> out;
  out.insert(out.end(), kMagic, kMagic + 8);
  PutU32(&out, options_.lora.memory_gate_layers.empty() ? kVersion : kVersionGates);
  PutU32(&out, static_cast<uint32_t>(cursors_.size()));
  PutU64(&out, static_cast<uint64_t>(step_));
  for (int64_t c : cursors_) PutU64(&out, static_cast<uint64_t>(c));
  PutU64(&out, options_.seed);
  PutU64(&out, static_cast<uint64_t>(params_->size()));
  const std::string desc = RunDescription();
  PutU64(&out, desc.size());
  out.insert(out.end(), desc.begin(), desc.end());
  const std::span<const float> pv = params_->values();
  PutFloats(&out, std::vector<float>(pv.begin(), pv.end()));
  PutFloats(&out, m_);
  PutFloats(&out, v_);
  PutU64(&out, Fnv1a(out));
  // The adapter first: a crash between the two leaves a newer adapter beside an older
  // checkpoint, which a resume rewrites; the reverse could leave a checkpoint whose adapter
  // folder is stale.
  RETURN_IF_ERROR(WritePeftAdapter(*params_, train_model_->host_norm_weights(),
                                   options_.out_dir + "/adapter",
                                   options_.base_model_name));
  if (model_->config().architecture == "llama") {
    RETURN_IF_ERROR(WriteLlamaCppLoraGguf(*params_, options_.out_dir + "/adapter-lora.gguf"));
  }
  RETURN_IF_ERROR(model::train::WriteFileAtomic(options_.out_dir + "/checkpoint.bin", out));
  last_checkpoint_ = step_;
  return Status::Ok();
}

Status Trainer::LoadCheckpoint() {
  const std::string path = options_.out_dir + "/checkpoint.bin";
  if (!std::filesystem::exists(path)) {
    return NotFoundError("--resume: no checkpoint.bin in " + options_.out_dir);
  }
  ASSIGN_OR_RETURN(auto file, MappedFile::Open(path));
  ASSIGN_OR_RETURN(std::span<const uint8_t> bytes, file->Range(0, file->size()));
  auto corrupt = [&](const std::string& what) {
    return DataLossError(path + " is not a valid muninn training checkpoint: " + what);
  };
  if (bytes.size() < 8 + 8 || std::memcmp(bytes.data(), kMagic, 8) != 0)
    return corrupt("bad magic");
  const uint64_t body = bytes.size() - 8;
  uint64_t want_sum = 0;
  Reader tail(bytes.subspan(body));
  tail.U64(&want_sum);
  if (Fnv1a(bytes.subspan(0, body)) != want_sum) return corrupt("checksum mismatch");
  Reader r(bytes.subspan(0, body));
  char magic[8];
  uint32_t version = 0, n_streams = 0;
  uint64_t step = 0, seed = 0, n = 0, desc_len = 0;
  if (!r.Bytes(magic, 8) || !r.U32(&version) || !r.U32(&n_streams) || !r.U64(&step)) {
    return corrupt("truncated header");
  }
  if (version != kVersion && version != kVersionGates && version != 1) {
    return corrupt("version " + std::to_string(version) + " (this build reads 1 to 3)");
  }
  if ((version == kVersionGates) != !options_.lora.memory_gate_layers.empty()) {
    return FailedPreconditionError(
        "--resume: the checkpoint in " + options_.out_dir +
        (version == kVersionGates ? " trains memory gates and this run does not"
                                  : " has no memory gates and this run trains them") +
        " (--memory-gates must match the run being resumed)");
  }
  if (version == 1) n_streams = 1;  // v1: reserved 0, one cursor
  if (n_streams != cursors_.size()) {
    return FailedPreconditionError("--resume: the checkpoint in " + options_.out_dir + " has " +
                                   std::to_string(n_streams) + " data streams, this run " +
                                   std::to_string(cursors_.size()) +
                                   " (--streams / MPI processes must match)");
  }
  std::vector<uint64_t> cursors(n_streams);
  for (uint64_t& c : cursors) {
    if (!r.U64(&c)) return corrupt("truncated header");
  }
  if (!r.U64(&seed) || !r.U64(&n) || !r.U64(&desc_len)) return corrupt("truncated header");
  if (desc_len > body) return corrupt("description length");
  std::string desc(desc_len, '\0');
  if (!r.Bytes(desc.data(), desc_len)) return corrupt("truncated description");
  if (desc != RunDescription()) {
    return FailedPreconditionError(
        "--resume: the checkpoint in " + options_.out_dir +
        " belongs to a different run (LoRA settings, accumulation, data, memory or model differ).\n"
        "  checkpoint: " +
        desc + "\n  this run:   " + RunDescription());
  }
  if (seed != options_.seed) {
    return FailedPreconditionError("--resume: the checkpoint was made with --seed " +
                                   std::to_string(seed) + ", this run has " +
                                   std::to_string(options_.seed));
  }
  if (n != static_cast<uint64_t>(params_->size())) return corrupt("parameter count");
  for (size_t s = 0; s < cursors.size(); ++s) {
    if (cursors[s] >= static_cast<uint64_t>(stream_begin_[s + 1] - stream_begin_[s])) {
      return corrupt("data cursor");
    }
  }
  if (!r.Bytes(params_->values().data(), n * sizeof(float)) ||
      !r.Bytes(m_.data(), n * sizeof(float)) || !r.Bytes(v_.data(), n * sizeof(float))) {
    return corrupt("truncated arrays");
  }
  if (r.pos() != body) return corrupt("trailing bytes");
  step_ = static_cast<int64_t>(step);
  for (size_t s = 0; s < cursors.size(); ++s) cursors_[s] = static_cast<int64_t>(cursors[s]);
  last_checkpoint_ = step_;
  return Status::Ok();
}

StatusOr<double> Trainer::Evaluate() {
  if (eval_data_ == nullptr) return FailedPreconditionError("no evaluation data was given");
  int64_t n = eval_data_->n_blocks();
  if (options_.eval_max_blocks > 0) n = std::min(n, options_.eval_max_blocks);
  double sum = 0.0;
  int64_t count = 0;
  for (int64_t b = 0; b < n; ++b) {
    TrainBatch batch;
    batch.ids = eval_data_->ids(b);
    batch.labels = eval_data_->labels(b);
    if (options_.memory != nullptr) {
      ASSIGN_OR_RETURN(batch.memory, options_.memory->Before(TrainUse::kEval, 0, b, step_));
    }
    ASSIGN_OR_RETURN(CrossEntropyResult r, train_model_->Loss(*params_, batch));
    if (options_.memory != nullptr) RETURN_IF_ERROR(options_.memory->After(TrainUse::kEval, 0, b));
    sum += r.loss_sum;
    count += r.n_supervised;
  }
  return count > 0 ? sum / static_cast<double>(count) : 0.0;
}

int64_t Trainer::StreamBlock(int32_t s, int64_t k) const {
  const int64_t begin = stream_begin_[static_cast<size_t>(s)];
  const int64_t len = stream_begin_[static_cast<size_t>(s) + 1] - begin;
  return begin + (cursors_[static_cast<size_t>(s)] + k) % len;
}

Status Trainer::AppendMetrics(const std::string& line) {
  if (!writes_files()) return Status::Ok();
  std::ofstream out(options_.out_dir + "/metrics.jsonl", std::ios::app);
  out << line << "\n";
  out.flush();
  if (!out) return IoError("cannot append to " + options_.out_dir + "/metrics.jsonl");
  return Status::Ok();
}

Status Trainer::Run(const std::function<void(const StepReport&)>& on_step) {
  using Clock = std::chrono::steady_clock;
  const auto t0 = Clock::now();
  if (options_.resume && step_ > 0) {
    RETURN_IF_ERROR(AppendMetrics(nlohmann::json{{"event", "resume"}, {"step", step_}}.dump()));
  }
  if (options_.memory != nullptr) {
    // The streams this process runs, where they start and which block each reads next.
    const int32_t streams_here = options_.streams / reducer_->world_size();
    const int32_t first_stream = reducer_->rank() * streams_here;
    std::vector<TrainStreamPosition> here;
    for (int32_t s = first_stream; s < first_stream + streams_here; ++s) {
      here.push_back({s, stream_begin_[static_cast<size_t>(s)], StreamBlock(s, 0)});
    }
    RETURN_IF_ERROR(options_.memory->Restore(here, step_));
  }
  int64_t tokens_here = 0;
  const int64_t first_step_here = step_;
  while (step_ < options_.steps) {
    if (stop_after_ >= 0 && step_ >= stop_after_) return Status::Ok();
    const auto ts = Clock::now();
    // Blocks of this step: grad_accum consecutive ones of every stream (wrapping within the
    // stream); this rank computes those of its own streams, in stream order (global micro-batch
    // g = s·grad_accum + k), each stream's gradient into its own slice of stream_grads_.
    const int32_t streams_here = options_.streams / reducer_->world_size();
    const int32_t first_stream = reducer_->rank() * streams_here;
    std::vector<int64_t> blocks;
    int64_t n_supervised = 0;  // over every stream: the step's loss is their mean
    for (int32_t s = 0; s < options_.streams; ++s) {
      const bool mine = s >= first_stream && s < first_stream + streams_here;
      for (int32_t k = 0; k < options_.grad_accum; ++k) {
        const int64_t b = StreamBlock(s, k);
        if (mine) blocks.push_back(b);
        for (TokenId l : data_->labels(b)) n_supervised += l != kIgnoreLabel;
      }
    }
    std::fill(stream_grads_.begin(), stream_grads_.end(), 0.0f);
    std::vector<double> stream_losses(static_cast<size_t>(streams_here), 0.0);
    const float scale = n_supervised > 0 ? 1.0f / static_cast<float>(n_supervised) : 0.0f;
    for (size_t j = 0; j < blocks.size(); ++j) {
      const size_t local_stream = j / static_cast<size_t>(options_.grad_accum);
      const uint64_t g =
          static_cast<uint64_t>(first_stream) * static_cast<uint64_t>(options_.grad_accum) + j;
      TrainBatch batch;
      batch.ids = data_->ids(blocks[j]);
      batch.labels = data_->labels(blocks[j]);
      batch.dropout_seed = Mix(Mix(options_.seed, static_cast<uint64_t>(step_)), g);
      const int32_t stream = first_stream + static_cast<int32_t>(local_stream);
      if (options_.memory != nullptr) {
        ASSIGN_OR_RETURN(batch.memory,
                         options_.memory->Before(TrainUse::kTrain, stream, blocks[j], step_));
      }
      const std::span<float> stream_grad =
          std::span<float>(stream_grads_).subspan(local_stream * grads_.size(), grads_.size());
      ASSIGN_OR_RETURN(CrossEntropyResult r,
                       train_model_->ForwardBackward(*params_, batch, scale, stream_grad));
      if (options_.memory != nullptr) {
        RETURN_IF_ERROR(options_.memory->After(TrainUse::kTrain, stream, blocks[j]));
      }
      stream_losses[local_stream] += r.loss_sum;
    }
    double loss_sum = 0.0;
    RETURN_IF_ERROR(reducer_->SumStreams(stream_grads_, stream_losses, grads_, &loss_sum));
    const double loss = n_supervised > 0 ? loss_sum / static_cast<double>(n_supervised) : 0.0;
    std::span<const float> all(grads_);
    const double norm = GlobalGradNorm(std::span<const std::span<const float>>(&all, 1));
    if (!std::isfinite(loss) || !std::isfinite(norm)) {
      const std::string kept = last_checkpoint_ >= 0 ? "the last good checkpoint (step " +
                                                           std::to_string(last_checkpoint_) +
                                                           ") is kept in " + options_.out_dir
                                                     : "no checkpoint had been written yet";
      return FailedPreconditionError(
          "training diverged at step " + std::to_string(step_ + 1) + ": loss " +
          std::to_string(loss) + ", gradient norm " + std::to_string(norm) +
          "; stopped before the update; " + kept +
          ". Lower --lr, raise --warmup or enable --clip, then --resume");
    }
    const float factor = ClipFactor(norm, options_.clip);
    if (factor != 1.0f) {
      for (float& g : grads_) g *= factor;
    }
    const float lr = schedule_.LrAt(step_);
    // LoRA and norms with weight decay; the memory gates (the arena's tail) without, at their
    // own peak rate on the same schedule.
    const int64_t n_lora = params_->gates_offset(), n_all = params_->size();
    AdamWStep(options_.adamw, step_ + 1, lr, params_->values().data(), grads_.data(), m_.data(),
              v_.data(), n_lora);
    if (n_all > n_lora) {
      AdamWOptions gate_adamw = options_.adamw;
      gate_adamw.weight_decay = 0.0f;
      const float gate_lr =
          options_.gate_lr > 0.0f ? lr * (options_.gate_lr / options_.lr) : lr;
      AdamWStep(gate_adamw, step_ + 1, gate_lr, params_->values().data() + n_lora,
                grads_.data() + n_lora, m_.data() + n_lora, v_.data() + n_lora, n_all - n_lora);
    }
    ++step_;
    for (int32_t s = 0; s < options_.streams; ++s) {
      const size_t i = static_cast<size_t>(s);
      cursors_[i] = (cursors_[i] + options_.grad_accum) % (stream_begin_[i + 1] - stream_begin_[i]);
    }
    tokens_here += n_supervised;

    StepReport rep;
    rep.step = step_;
    rep.total_steps = options_.steps;
    rep.loss = loss;
    rep.lr = lr;
    rep.grad_norm = norm;
    rep.tokens = n_supervised;
    const auto now = Clock::now();
    rep.step_seconds = std::chrono::duration<double>(now - ts).count();
    rep.elapsed_seconds = std::chrono::duration<double>(now - t0).count();
    rep.tokens_per_second =
        rep.elapsed_seconds > 0 ? static_cast<double>(tokens_here) / rep.elapsed_seconds : 0.0;
    const int64_t done_here = step_ - first_step_here;
    rep.eta_seconds = rep.elapsed_seconds / static_cast<double>(done_here) *
                      static_cast<double>(options_.steps - step_);
    if ((options_.checkpoint_every > 0 && step_ % options_.checkpoint_every == 0) ||
        step_ == options_.steps) {
      RETURN_IF_ERROR(SaveCheckpoint());
      rep.checkpointed = true;
    }
    nlohmann::json metrics = {{"step", rep.step},
                              {"loss", rep.loss},
                              {"lr", rep.lr},
                              {"grad_norm", rep.grad_norm},
                              {"tokens", rep.tokens},
                              {"tok_per_s", rep.tokens_per_second},
                              {"elapsed_s", rep.elapsed_seconds},
                              {"checkpoint", rep.checkpointed}};
    if (eval_data_ != nullptr && writes_files() &&
        ((options_.eval_every > 0 && step_ % options_.eval_every == 0) ||
         step_ == options_.steps)) {
      ASSIGN_OR_RETURN(rep.eval_loss, Evaluate());
      rep.evaluated = true;
      metrics["eval_loss"] = rep.eval_loss;
    }
    RETURN_IF_ERROR(AppendMetrics(metrics.dump()));
    if (on_step) on_step(rep);
  }
  return Status::Ok();
}

}  // namespace muninn::model
