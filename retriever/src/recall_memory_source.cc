#include "muninn/retriever/recall_memory_source.h"

#include <algorithm>
#include <nlohmann/json.hpp>

#include "memlong_memory.h"
#include "muninn/retriever/retriever.h"

namespace muninn::retriever {

namespace {

constexpr memory::DocumentId kPoolDoc = 1;
constexpr memory::DocumentId kGoldDoc = 2;

uint64_t Mix(uint64_t a, uint64_t b) {
  uint64_t z = a ^ (b + 0x9e3779b97f4a7c15ull + (a << 6) + (a >> 2));
  z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
  z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
  return z ^ (z >> 31);
}

}  // namespace

Status RecallMemoryOptions::Validate() const {
  if (curriculum.gold_only_steps < 0 || curriculum.distractor_steps < 0) {
    return InvalidArgumentError("recall memory: curriculum steps must be >= 0");
  }
  return Status::Ok();
}

StatusOr<std::unique_ptr<RecallMemorySource>> RecallMemorySource::Create(
    LongContextSession* session, Embedder* embedder, const std::vector<model::RecallExample>* train,
    const std::vector<model::RecallExample>* eval, const std::vector<std::vector<model::TokenId>>& pool,
    const RecallMemoryOptions& options) {
  RETURN_IF_ERROR(options.Validate());
  if (session == nullptr || embedder == nullptr || train == nullptr || train->empty()) {
    return InvalidArgumentError("recall memory needs a session, its embedder and examples");
  }
  const LongContextOptions& lo = session->options();
  if (!lo.has(kModeMemLong) || lo.retrieval_layers.empty() || session->bank() == nullptr) {
    return InvalidArgumentError(
        "recall memory trains MemLong memory: the session must run memory mode memlong with "
        "retrieval layers and a bank (a config with \"modes\": \"memlong\")");
  }
  if (session->bank()->Stats().n_chunks != 0) {
    return FailedPreconditionError("recall memory needs an empty bank of its own");
  }
  for (const auto* set : {train, eval}) {
    if (set == nullptr) continue;
    for (const model::RecallExample& ex : *set) {
      if (static_cast<int64_t>(ex.memory.size()) != ex.memory_chunks * lo.chunk_tokens) {
        return InvalidArgumentError("recall memory: an example's memory is not " +
                                    std::to_string(ex.memory_chunks) + " chunks of " +
                                    std::to_string(lo.chunk_tokens) +
                                    " tokens (make the tasks with the session's chunk_tokens)");
      }
    }
  }
  RetrieverOptions ro;
  ro.top_k = lo.top_k;
  ro.count_retrievals = false;
  ASSIGN_OR_RETURN(Retriever retriever, Retriever::Create(session->bank(), embedder, ro));
  auto src = std::unique_ptr<RecallMemorySource>(
      new RecallMemorySource(session, embedder, train, eval, options, std::move(retriever)));
  std::vector<model::TokenId> all;
  for (const auto& c : pool) {
    if (static_cast<int64_t>(c.size()) != lo.chunk_tokens) {
      return InvalidArgumentError("recall memory: distractor chunks must hold chunk_tokens (" +
                                  std::to_string(lo.chunk_tokens) + ") tokens each");
    }
    all.insert(all.end(), c.begin(), c.end());
  }
  if (!all.empty()) {
    ASSIGN_OR_RETURN(IngestStats st, session->IngestTokens(kPoolDoc, all, 0));
    src->pool_ids_ = st.chunk_ids;
  }
  return src;
}

StatusOr<const model::MemoryKV*> RecallMemorySource::Before(model::TrainUse use, int32_t,
                                                            int64_t block, int64_t step) {
  const auto* set = use == model::TrainUse::kTrain ? train_ : eval_;
  if (set == nullptr || block < 0 || block >= static_cast<int64_t>(set->size())) {
    return OutOfRangeError("recall memory: no example for block " + std::to_string(block));
  }
  const model::RecallExample& ex = (*set)[static_cast<size_t>(block)];
  memory::MemoryBank* bank = session_->bank();
  if (gold_doc_ != 0) {
    RETURN_IF_ERROR(bank->DeleteDocument(gold_doc_).status());
    gold_doc_ = 0;
  }
  ASSIGN_OR_RETURN(IngestStats st, session_->IngestTokens(kGoldDoc, ex.memory, 0));
  gold_doc_ = kGoldDoc;
  const std::vector<memory::ChunkId> gold = st.chunk_ids;
  const LongContextOptions& lo = session_->options();
  const int64_t gold_end = options_.curriculum.gold_only_steps;
  const int64_t distract_end = gold_end + options_.curriculum.distractor_steps;
  const bool real = use == model::TrainUse::kEval || step >= distract_end;
  const int64_t pool_chunks = static_cast<int64_t>(pool_ids_.size());
  std::vector<memory::ChunkId> ids;
  if (!real) {
    ids = gold;
    if (step >= gold_end && pool_chunks > 0) {
      uint64_t s = Mix(Mix(Mix(options_.seed, static_cast<uint64_t>(use)),
                           static_cast<uint64_t>(block)),
                       static_cast<uint64_t>(step));
      const int64_t want = std::min<int64_t>(lo.top_k - static_cast<int64_t>(gold.size()), pool_chunks);
      // A distinct random subset of the pool (partial Fisher-Yates over indices).
      std::vector<int64_t> idx(static_cast<size_t>(pool_chunks));
      for (int64_t i = 0; i < pool_chunks; ++i) idx[static_cast<size_t>(i)] = i;
      for (int64_t i = 0; i < want; ++i) {
        s = Mix(s, static_cast<uint64_t>(i));
        const int64_t j = i + static_cast<int64_t>(s % static_cast<uint64_t>(pool_chunks - i));
        std::swap(idx[static_cast<size_t>(i)], idx[static_cast<size_t>(j)]);
        ids.push_back(pool_ids_[static_cast<size_t>(idx[static_cast<size_t>(i)])]);
      }
    }
  } else {
    const std::vector<model::TokenId> qtok =
        session_->tokenizer()->Encode(ex.question, /*add_special=*/false, /*parse_special=*/false);
    memory::SearchFilter filter;
    filter.doc_ids = {kPoolDoc, kGoldDoc};
    ASSIGN_OR_RETURN(Retrieved r, retriever_.Retrieve({ex.question, qtok}, filter));
    for (const auto& h : r.hits) ids.push_back(h.id);
  }
  std::sort(ids.begin(), ids.end());
  last_chunks_ = static_cast<int64_t>(ids.size());
  last_has_gold_ = std::all_of(gold.begin(), gold.end(), [&](memory::ChunkId g) {
    return std::binary_search(ids.begin(), ids.end(), g);
  });
  if (real) {
    ++topk_calls_;
    topk_hits_ += last_has_gold_;
  }
  ASSIGN_OR_RETURN(memory_, MemLongMemoryOf(*session_, ids));
  return &memory_;
}

Status RecallMemorySource::After(model::TrainUse, int32_t, int64_t) {
  if (gold_doc_ != 0) {
    RETURN_IF_ERROR(session_->bank()->DeleteDocument(gold_doc_).status());
    gold_doc_ = 0;
  }
  return Status::Ok();
}

Status RecallMemorySource::Restore(std::span<const model::TrainStreamPosition>, int64_t) {
  return Status::Ok();
}

std::string RecallMemorySource::Describe() const {
  const LongContextOptions& lo = session_->options();
  return nlohmann::json{{"kind", "recall"},
                        {"memory_layer", lo.memory_layer},
                        {"retrieval_layers", lo.retrieval_layers},
                        {"chunk_tokens", lo.chunk_tokens},
                        {"top_k", lo.top_k},
                        {"memory_position", MemoryPositionName(lo.memory_position)},
                        {"gold_only_steps", options_.curriculum.gold_only_steps},
                        {"distractor_steps", options_.curriculum.distractor_steps},
                        {"pool_chunks", static_cast<int64_t>(pool_ids_.size())},
                        {"seed", options_.seed},
                        {"embedder", embedder_->name()}}
      .dump();
}

}  // namespace muninn::retriever
