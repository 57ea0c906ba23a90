// StreamMemorySource: MemLong's training protocol for language modelling on long text (issue 12,
// specs/memlong.md §11): every document of the data is a stream with its own memory. Before a
// block runs, the query_tokens tokens just before it (its document's, never the block itself)
// retrieve the top_k chunks of that document written before the block's position; after the
// block, its tokens are written into the bank (chunks of chunk_tokens, each alone from position
// 0, as LongContextSession::IngestTokens writes them). Memory is detached: a constant of the step.
// The held-out data keeps streams of its own.
//
// The block runs as a local window from position 0 and its memory is what LongContextSession
// builds for a window (memlong_memory.h), so what the retrieval layers learn to read is what
// `muninn eval perplexity --modes memlong` gives them.
//
// Resume: Restore writes, for every stream, the blocks of its next block's document from the
// stream's start or the document's, whichever is later, up to the next block, so the bank holds
// what an uninterrupted run's reads would see (reads are filtered by document and position; other
// documents are written when their blocks come). A block is written once: when a stream wraps
// around, its chunks are already there.
//
// Thread-compatible.
#pragma once

#include <cstdint>
#include <map>
#include <memory>
#include <string>
#include <utility>

#include "muninn/core/status.h"
#include "muninn/model/train_data.h"
#include "muninn/model/train_memory.h"
#include "muninn/retriever/embedder.h"
#include "muninn/retriever/long_context_session.h"
#include "muninn/retriever/retriever.h"

namespace muninn::retriever {

struct StreamMemoryOptions {
  int64_t query_tokens = 128;  // tokens before a block that form its retrieval query
  Status Validate() const;
};

class StreamMemorySource : public model::TrainMemorySource {
 public:
  // `session` must run MemLong mode with retrieval layers and an empty bank only this source
  // writes; `embedder` is the session's. `train` / `eval` (may be null) are the Trainer's data.
  // Nothing is owned.
  static StatusOr<std::unique_ptr<StreamMemorySource>> Create(LongContextSession* session,
                                                              Embedder* embedder,
                                                              const model::TrainData* train,
                                                              const model::TrainData* eval,
                                                              const StreamMemoryOptions& options);

  StatusOr<const model::MemoryKV*> Before(model::TrainUse use, int32_t stream, int64_t block,
                                          int64_t step) override;
  Status After(model::TrainUse use, int32_t stream, int64_t block) override;
  Status Restore(std::span<const model::TrainStreamPosition> streams, int64_t step) override;
  std::string Describe() const override;

  // Chunks the last Before put in memory.
  int64_t last_chunks() const { return last_chunks_; }

 private:
  StreamMemorySource(LongContextSession* session, Embedder* embedder, const model::TrainData* train,
                     const model::TrainData* eval, StreamMemoryOptions options,
                     Retriever retriever)
      : session_(session),
        embedder_(embedder),
        train_(train),
        eval_(eval),
        options_(options),
        retriever_(std::move(retriever)) {}
  const model::TrainData* Data(model::TrainUse use) const;
  // The bank document of (stream, document): training ones from 1, held-out ones above them.
  memory::DocumentId DocId(model::TrainUse use, int32_t stream, int64_t document) const;
  Status Write(model::TrainUse use, int32_t stream, int64_t block);

  LongContextSession* session_;
  Embedder* embedder_;
  const model::TrainData* train_;
  const model::TrainData* eval_;
  StreamMemoryOptions options_;
  Retriever retriever_;  // the session's top_k over its bank, not counted for eviction
  // Per bank document: the position up to which it is written (from where its stream started).
  std::map<memory::DocumentId, int64_t> written_;
  model::MemoryKV memory_;
  int64_t last_chunks_ = 0;
};

}  // namespace muninn::retriever
