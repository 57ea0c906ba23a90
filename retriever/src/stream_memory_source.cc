#include "muninn/retriever/stream_memory_source.h"

#include <algorithm>
#include <nlohmann/json.hpp>

#include "memlong_memory.h"
#include "muninn/retriever/retriever.h"

namespace muninn::retriever {

Status StreamMemoryOptions::Validate() const {
  if (query_tokens < 1 || query_tokens > 8192) {
    return InvalidArgumentError("stream memory: query_tokens must be in [1, 8192]");
  }
  return Status::Ok();
}

StatusOr<std::unique_ptr<StreamMemorySource>> StreamMemorySource::Create(
    LongContextSession* session, Embedder* embedder, const model::TrainData* train,
    const model::TrainData* eval, const StreamMemoryOptions& options) {
  RETURN_IF_ERROR(options.Validate());
  if (session == nullptr || embedder == nullptr || train == nullptr) {
    return InvalidArgumentError("stream memory needs a session, its embedder and training data");
  }
  const LongContextOptions& lo = session->options();
  if (!lo.has(kModeMemLong) || lo.retrieval_layers.empty() || session->bank() == nullptr) {
    return InvalidArgumentError(
        "stream memory trains MemLong memory: the session must run memory mode memlong with "
        "retrieval layers and a bank");
  }
  if (session->bank()->Stats().n_chunks != 0) {
    return FailedPreconditionError("stream memory needs an empty bank of its own");
  }
  RetrieverOptions ro;
  ro.top_k = lo.top_k;
  ro.count_retrievals = false;
  ASSIGN_OR_RETURN(Retriever retriever, Retriever::Create(session->bank(), embedder, ro));
  return std::unique_ptr<StreamMemorySource>(
      new StreamMemorySource(session, embedder, train, eval, options, std::move(retriever)));
}

const model::TrainData* StreamMemorySource::Data(model::TrainUse use) const {
  return use == model::TrainUse::kTrain ? train_ : eval_;
}

memory::DocumentId StreamMemorySource::DocId(model::TrainUse use, int32_t stream,
                                             int64_t document) const {
  if (use == model::TrainUse::kEval) {
    return static_cast<memory::DocumentId>(1 + (int64_t{1} << 40) + document);
  }
  return static_cast<memory::DocumentId>(1 + int64_t{stream} * train_->n_documents() + document);
}

StatusOr<const model::MemoryKV*> StreamMemorySource::Before(model::TrainUse use, int32_t stream,
                                                            int64_t block, int64_t) {
  const model::TrainData* data = Data(use);
  if (data == nullptr || block < 0 || block >= data->n_blocks()) {
    return OutOfRangeError("stream memory: no block " + std::to_string(block));
  }
  memory_ = model::MemoryKV{};
  last_chunks_ = 0;
  const std::span<const model::TokenId> before = data->preceding(block, options_.query_tokens);
  if (before.empty()) return &memory_;  // a document's first block has nothing before it
  const std::string query = session_->tokenizer()->Decode(before, /*skip_special=*/true);
  memory::SearchFilter filter;
  filter.doc_ids = {DocId(use, stream, data->document(block))};
  filter.before_position = data->position(block);
  ASSIGN_OR_RETURN(Retrieved r, retriever_.Retrieve({query, before}, filter));
  std::vector<memory::ChunkId> ids;
  for (const auto& h : r.hits) ids.push_back(h.id);
  std::sort(ids.begin(), ids.end());
  last_chunks_ = static_cast<int64_t>(ids.size());
  ASSIGN_OR_RETURN(memory_, MemLongMemoryOf(*session_, ids));
  return &memory_;
}

Status StreamMemorySource::Write(model::TrainUse use, int32_t stream, int64_t block) {
  const model::TrainData* data = Data(use);
  const memory::DocumentId doc = DocId(use, stream, data->document(block));
  const int64_t pos = data->position(block);
  auto it = written_.find(doc);
  // A stream may start inside a document: its first block there starts that memory.
  if (it == written_.end()) it = written_.emplace(doc, pos).first;
  if (pos < it->second) return Status::Ok();  // already written (the stream wrapped around)
  if (pos > it->second) {
    return InternalError("stream memory: block at token " + std::to_string(pos) + " of document " +
                         std::to_string(doc) + " comes before the tokens up to it were written (" +
                         std::to_string(it->second) + ")");
  }
  const std::span<const model::TokenId> ids = data->ids(block);
  RETURN_IF_ERROR(session_->IngestTokens(doc, ids, pos).status());
  it->second = pos + static_cast<int64_t>(ids.size());
  return Status::Ok();
}

Status StreamMemorySource::After(model::TrainUse use, int32_t stream, int64_t block) {
  const model::TrainData* data = Data(use);
  if (data == nullptr || block < 0 || block >= data->n_blocks()) {
    return OutOfRangeError("stream memory: no block " + std::to_string(block));
  }
  return Write(use, stream, block);
}

Status StreamMemorySource::Restore(std::span<const model::TrainStreamPosition> streams, int64_t) {
  for (const model::TrainStreamPosition& p : streams) {
    if (p.first_block < 0 || p.next_block < p.first_block || p.next_block >= train_->n_blocks()) {
      return OutOfRangeError("stream memory: stream " + std::to_string(p.stream) +
                             " positions outside the data");
    }
    const int64_t doc = train_->document(p.next_block);
    int64_t first = p.next_block;
    while (first > p.first_block && train_->document(first - 1) == doc) --first;
    for (int64_t b = first; b < p.next_block; ++b) {
      RETURN_IF_ERROR(Write(model::TrainUse::kTrain, p.stream, b));
    }
  }
  return Status::Ok();
}

std::string StreamMemorySource::Describe() const {
  const LongContextOptions& lo = session_->options();
  return nlohmann::json{{"kind", "stream"},
                        {"memory_layer", lo.memory_layer},
                        {"retrieval_layers", lo.retrieval_layers},
                        {"chunk_tokens", lo.chunk_tokens},
                        {"top_k", lo.top_k},
                        {"memory_position", MemoryPositionName(lo.memory_position)},
                        {"query_tokens", options_.query_tokens},
                        {"embedder", embedder_->name()}}
      .dump();
}

}  // namespace muninn::retriever
