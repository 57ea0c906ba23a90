// Trainer: LoRA fine-tuning of a llama model's upper layers on TrainData (issue 12). The data
// is cut into `streams` contiguous streams (stream s: blocks [s·n/S, (s+1)·n/S), n blocks, S
// streams; one stream by default). Each optimizer step accumulates `grad_accum` consecutive
// blocks (micro-batches) of every stream — global micro-batch g = s·grad_accum + k — each
// stream's gradient accumulated in its own buffer, the streams then summed in stream order by
// the GradientReducer (gradient_reducer.h; across MPI ranks, each owning S / N streams), then clips
// the global gradient norm, takes the learning rate from the schedule and applies one AdamW step
// (core/include/muninn/core/optimizer.h). The loss of a step is the summed cross-entropy of its
// micro-batches over their supervised tokens (each micro-batch's gradient is scaled by 1 / that
// count), as a single large batch would give.
//
// Reproducible: the data order is fixed (blocks in order within each stream, wrapping around
// the stream), the adapter's initialisation comes from `seed`, and the LoRA dropout masks of
// step s, global micro-batch g from a hash of (seed, s, g): the whole random state is (seed,
// step), so a checkpoint that stores the step, every stream's cursor, the adapter and the AdamW
// moments resumes the run bit for bit — and N processes with S streams give the bits of one
// process with S streams. Under MPI only rank 0 writes files in out_dir; every rank reads the
// checkpoint on --resume (out_dir on a shared file system, or copied to every node).
//
// Files in out_dir:
//   checkpoint.bin   written atomically (temporary file + rename) every checkpoint_every steps
//                    and at the end; format below
//   metrics.jsonl    one JSON object per step: step, loss, lr, grad_norm, tokens, tok_per_s,
//                    elapsed_s, checkpoint, and eval_loss on evaluation steps (a resumed run
//                    appends; a {"event": "resume", "step": s} line marks where, and steps after
//                    the last checkpoint appear twice)
//   adapter/         the PEFT folder (peft_adapter.h), rewritten with every checkpoint
//   adapter-lora.gguf  the same adapter for llama.cpp (lora_gguf.h; llama models), likewise
//
// checkpoint.bin, little-endian:
//   u8[8]  magic "MNNTRAIN"
//   u32    version (3 when the adapter has memory gates, else 2; 1: as 2 with reserved 0 for
//          n_streams and one cursor; 3 is 2's layout, its arena ending with the gates and its
//          description naming them: a build without gates refuses it by its version)
//   u32    n_streams S
//   u64    step (optimizer steps done)
//   u64[S] cursor of each stream (offset of its next block within the stream)
//   u64    seed
//   u64    n (floats per array)
//   u64    length L of the run description, then L bytes of JSON (LoRA config, block,
//          grad_accum, streams when > 1, memory gates and gate_lr when present, data size;
//          checked against the resuming run's)
//   f32[n] adapter parameters (LoraParams layout), f32[n] AdamW m, f32[n] AdamW v
//   u64    FNV-1a 64 of every byte before it
//
// A non-finite loss or gradient norm stops the run with FailedPrecondition before the update,
// leaving the last checkpoint as it was. Thread-compatible.
#pragma once

#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "muninn/core/optimizer.h"
#include "muninn/core/status.h"
#include "muninn/core/thread_pool.h"
#include "muninn/model/gradient_reducer.h"
#include "muninn/model/lora.h"
#include "muninn/model/model.h"
#include "muninn/model/train_data.h"
#include "muninn/model/train_memory.h"
#include "muninn/model/train_model.h"

namespace muninn::model {

struct TrainerOptions {
  LoraConfig lora;
  int64_t steps = 100;     // optimizer steps of the whole run
  int32_t grad_accum = 1;  // micro-batches (blocks) per step and stream
  // Contiguous data streams (see above); a multiple of the reducer's world size, at most the
  // number of blocks. `mpirun -np N` with streams S equals one process with streams S.
  int32_t streams = 1;
  // Combines the streams' gradients; borrowed, must outlive the trainer. Null: one process
  // (LocalGradientReducer).
  GradientReducer* reducer = nullptr;
  // Schedule; its total_steps is set to `steps`.
  float lr = 5e-5f;
  int64_t warmup_steps = 0;
  LrDecay decay = LrDecay::kLinear;
  float min_lr_ratio = 0.0f;
  AdamWOptions adamw;  // its weight decay applies to LoRA and norms, never to the memory gates
  // Peak learning rate of the memory gates (LoraConfig::memory_gate_layers), following the same
  // schedule; 0: the same as `lr`.
  float gate_lr = 0.0f;
  float clip = 1.0f;  // global-norm clipping threshold; <= 0 disables
  uint64_t seed = 0;
  std::string out_dir;           // required
  int64_t checkpoint_every = 0;  // steps between checkpoints; 0: only at the end
  bool resume = false;           // continue from out_dir/checkpoint.bin
  // Held-out evaluation (Create's eval_data): the mean cross-entropy over its first
  // eval_max_blocks blocks (0: all), every eval_every steps and after the last step (0: only
  // after the last step). Dropout off, no gradient.
  int64_t eval_every = 0;
  int64_t eval_max_blocks = 0;
  std::string base_model_name;  // adapter_config.json's base_model_name_or_path
  TrainModelOptions model;      // recompute, pool
  // Retrieved memory per block (train_memory.h; not owned, must outlive the trainer), or null:
  // no block reads memory. Its Describe() joins the run description a resume checks.
  TrainMemorySource* memory = nullptr;
  // InvalidArgument for out-of-range values (naming the option).
  Status Validate() const;
};

// What the caller sees after every step.
struct StepReport {
  int64_t step = 0;  // 1-based, steps done
  int64_t total_steps = 0;
  double loss = 0.0;  // over every stream (all ranks)
  float lr = 0.0f;
  double grad_norm = 0.0;  // before clipping
  int64_t tokens = 0;      // supervised tokens of this step, every stream
  double step_seconds = 0.0;
  double elapsed_seconds = 0.0;    // since this process started training
  double tokens_per_second = 0.0;  // over this process's steps
  double eta_seconds = 0.0;
  bool checkpointed = false;
  bool evaluated = false;
  double eval_loss = 0.0;  // when evaluated
};

class Trainer {
 public:
  // `model`, `data` and `eval_data` (may be null: no evaluation) are borrowed and must outlive
  // the trainer.
  static StatusOr<std::unique_ptr<Trainer>> Create(Model* model, const TrainData* data,
                                                   const TrainerOptions& options,
                                                   const TrainData* eval_data = nullptr);

  // Mean cross-entropy of the current adapter over the evaluation blocks (see TrainerOptions).
  // FailedPrecondition without eval_data.
  StatusOr<double> Evaluate();

  // Trains until options.steps (from the checkpoint's step when resuming). `on_step` may be
  // empty. Returns FailedPrecondition for a NaN/inf loss or gradient (with the step and the last
  // good checkpoint's step in the message), IO errors from writing outputs.
  Status Run(const std::function<void(const StepReport&)>& on_step = {});

  // Stop after `step` steps even though options.steps is larger (tests: interrupt a run).
  void StopAfter(int64_t step) { stop_after_ = step; }

  const LoraParams& params() const { return *params_; }
  int64_t step() const { return step_; }
  int64_t cursor() const { return cursors_[0]; }  // stream 0's
  const std::vector<int64_t>& cursors() const { return cursors_; }
  // TrainerOptions::model.bottom_cache_dir's counts (zero without a cache).
  BottomCacheCounts bottom_cache_stats() const { return train_model_->bottom_cache_stats(); }

  ~Trainer();

 private:
  Trainer(Model* model, const TrainData* data, const TrainerOptions& options);
  std::string RunDescription() const;
  Status SaveCheckpoint();
  Status LoadCheckpoint();
  Status AppendMetrics(const std::string& line);
  // Block of stream s at offset `cursor + k` (wrapping within the stream).
  int64_t StreamBlock(int32_t s, int64_t k) const;
  bool writes_files() const { return reducer_->rank() == 0; }

  Model* model_;
  const TrainData* data_;
  const TrainData* eval_data_ = nullptr;
  TrainerOptions options_;
  LrSchedule schedule_;
  std::unique_ptr<TrainModel> train_model_;
  std::unique_ptr<LoraParams> params_;
  std::vector<float> grads_, m_, v_;
  LocalGradientReducer local_reducer_;
  GradientReducer* reducer_ = &local_reducer_;
  std::vector<int64_t> stream_begin_;  // [S + 1]: stream s holds blocks [begin[s], begin[s+1])
  std::vector<float> stream_grads_;    // [streams this rank owns, params size]
  int64_t step_ = 0;
  std::vector<int64_t> cursors_;  // [S]
  int64_t last_checkpoint_ = -1;
  int64_t stop_after_ = -1;
};

}  // namespace muninn::model
