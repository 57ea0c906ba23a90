// RecallMemorySource: the memory of synthetic recall examples (model/recall_tasks.h) for training
// a model to read MemLong memory (issue 12; specs/memory_modes.md §4). It serves Trainer's
// TrainMemorySource with the session's own write and read paths, so training sees memory exactly
// as inference builds it: chunk K/V of the memory layer from LongContextSession::IngestTokens
// (each chunk alone from position 0), fetched as the Retriever fetches them, placed at the
// session's memory position and handed to its retrieval layers.
//
// A curriculum by optimizer step (Focused Transformer's lesson: distractors from the start teach
// a model to ignore memory):
//   steps [0, gold_only_steps)                  memory = the example's gold chunk(s) alone
//   then distractor_steps steps                 gold + random chunks of the distractor pool, up
//                                               to top_k chunks
//   afterwards (and every held-out example)     the retriever's real top_k for the question over
//                                               the pool and the gold chunks (it may miss)
// The pool (filler chunks, document 1 of the bank) is written once at Create; an example's gold
// chunks are written as their own document before its block and deleted after it, so the bank
// holds the pool and at most one example. Distractor choice hashes (seed, use, block, step).
// No state crosses blocks: streams need nothing of their own and Restore has nothing to rebuild.
//
// Thread-compatible: one call at a time (the session and its embedder are stateful).
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "muninn/core/status.h"
#include "muninn/model/recall_tasks.h"
#include "muninn/model/train_memory.h"
#include "muninn/retriever/embedder.h"
#include "muninn/retriever/long_context_session.h"
#include "muninn/retriever/retriever.h"

namespace muninn::retriever {

struct RecallCurriculum {
  int64_t gold_only_steps = 0;
  int64_t distractor_steps = 0;
};

struct RecallMemoryOptions {
  RecallCurriculum curriculum;
  uint64_t seed = 1;  // distractor choice
  Status Validate() const;
};

class RecallMemorySource : public model::TrainMemorySource {
 public:
  // `session` must run MemLong mode with retrieval layers and an empty bank that only this source
  // writes; `embedder` is the session's. `train` and `eval` (may be null) are the examples behind
  // the Trainer's training and held-out blocks (block i = example i). `pool`: distractor chunks
  // of exactly the session's chunk_tokens each. Nothing is owned; all must outlive the source.
  static StatusOr<std::unique_ptr<RecallMemorySource>> Create(
      LongContextSession* session, Embedder* embedder,
      const std::vector<model::RecallExample>* train, const std::vector<model::RecallExample>* eval,
      const std::vector<std::vector<model::TokenId>>& pool, const RecallMemoryOptions& options);

  StatusOr<const model::MemoryKV*> Before(model::TrainUse use, int32_t stream, int64_t block,
                                          int64_t step) override;
  Status After(model::TrainUse use, int32_t stream, int64_t block) override;
  Status Restore(std::span<const model::TrainStreamPosition> streams, int64_t step) override;
  std::string Describe() const override;

  // What the last Before gave: the chunks in memory and whether the gold chunk(s) were among
  // them (the retriever's real top-k may miss them).
  int64_t last_chunks() const { return last_chunks_; }
  bool last_has_gold() const { return last_has_gold_; }
  // Share of Before calls at the real-top-k stage that found every gold chunk.
  double gold_recall() const {
    return topk_calls_ > 0 ? static_cast<double>(topk_hits_) / static_cast<double>(topk_calls_) : 1.0;
  }

 private:
  RecallMemorySource(LongContextSession* session, Embedder* embedder,
                     const std::vector<model::RecallExample>* train,
                     const std::vector<model::RecallExample>* eval, RecallMemoryOptions options,
                     Retriever retriever)
      : session_(session),
        embedder_(embedder),
        train_(train),
        eval_(eval),
        options_(options),
        retriever_(std::move(retriever)) {}

  LongContextSession* session_;
  Embedder* embedder_;
  const std::vector<model::RecallExample>* train_;
  const std::vector<model::RecallExample>* eval_;
  RecallMemoryOptions options_;
  Retriever retriever_;  // the session's top_k over its bank, not counted for eviction
  std::vector<memory::ChunkId> pool_ids_;
  memory::DocumentId gold_doc_ = 0;  // the example now in the bank (0: none)
  model::MemoryKV memory_;
  int64_t last_chunks_ = 0;
  bool last_has_gold_ = false;
  int64_t topk_calls_ = 0;
  int64_t topk_hits_ = 0;
};

}  // namespace muninn::retriever
