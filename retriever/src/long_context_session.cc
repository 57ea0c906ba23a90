#include "muninn/retriever/long_context_session.h"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <set>
#include <tuple>

#include "muninn/retriever/context_memory.h"
#include "muninn/retriever/excerpt_focus.h"

namespace muninn::retriever {

namespace {

struct ModeName {
  MemoryMode mode;
  const char* name;
};
constexpr ModeName kModeNames[] = {
    {kModeMemLong, "memlong"}, {kModeContext, "context"}, {kModeReread, "reread"}, {kModeKnnLm, "knn"}};

}  // namespace

std::string MemoryModesName(uint32_t modes) {
  std::string out;
  for (const ModeName& m : kModeNames) {
    if ((modes & m.mode) == 0) continue;
    if (!out.empty()) out += "+";
    out += m.name;
  }
  return out.empty() ? "none" : out;
}

Status ParseMemoryModes(std::string_view text, uint32_t* out) {
  uint32_t modes = 0;
  size_t b = 0;
  bool any = false;
  while (b <= text.size()) {
    size_t e = text.find_first_of(",+", b);
    if (e == std::string_view::npos) e = text.size();
    const std::string_view word = text.substr(b, e - b);
    b = e + 1;
    if (word.empty()) continue;
    any = true;
    if (word == "none") continue;
    bool found = false;
    for (const ModeName& m : kModeNames) {
      if (word == m.name || (word == "knn-lm" && m.mode == kModeKnnLm) ||
          (word == "rag" && m.mode == kModeReread)) {
        modes |= m.mode;
        found = true;
      }
    }
    if (!found) {
      return InvalidArgumentError("unknown memory mode '" + std::string(word) +
                                  "' (modes: memlong, context, reread, knn, none)");
    }
  }
  if (!any) return InvalidArgumentError("no memory mode given (modes: memlong, context, reread, knn, none)");
  *out = modes;
  return Status::Ok();
}

const char* ContextPositionName(ContextPosition p) {
  switch (p) {
    case ContextPosition::kConstant: return "constant";
    case ContextPosition::kContiguous: return "contiguous";
    case ContextPosition::kZero: return "zero";
  }
  return "?";
}

bool ParseContextPosition(std::string_view name, ContextPosition* out) {
  for (ContextPosition p : {ContextPosition::kConstant, ContextPosition::kContiguous, ContextPosition::kZero}) {
    if (name == ContextPositionName(p)) {
      *out = p;
      return true;
    }
  }
  return false;
}

const char* ChunkSelectionName(ChunkSelection s) {
  return s == ChunkSelection::kEmbedder ? "embedder" : "representative_keys";
}

bool ParseChunkSelection(std::string_view name, ChunkSelection* out) {
  if (name == "embedder") *out = ChunkSelection::kEmbedder;
  else if (name == "representative_keys" || name == "repr_keys") *out = ChunkSelection::kRepresentativeKeys;
  else return false;
  return true;
}

std::vector<int32_t> ContextMemoryOptions::ResolvedLayers(int32_t n_layer) const {
  if (!layers.empty()) {
    std::vector<int32_t> out = layers;
    std::sort(out.begin(), out.end());
    out.erase(std::unique(out.begin(), out.end()), out.end());
    return out;
  }
  std::vector<int32_t> out(static_cast<size_t>(std::max(0, n_layer)));
  for (int32_t i = 0; i < n_layer; ++i) out[static_cast<size_t>(i)] = i;
  return out;
}

std::vector<int32_t> LongContextOptions::KvLayers(const model::ModelConfig& config) const {
  std::set<int32_t> layers;
  if (has(kModeMemLong)) layers.insert(memory_layer);
  if (has(kModeContext)) {
    for (int32_t l : context.ResolvedLayers(config.n_layer)) layers.insert(l);
  }
  return {layers.begin(), layers.end()};
}

int64_t LongContextOptions::StateDim(const model::ModelConfig& config) const {
  return has(kModeKnnLm) ? config.n_embd : 0;
}

const char* MemoryPositionName(MemoryPosition p) {
  return p == MemoryPosition::kZero ? "zero" : "before_window";
}

bool ParseMemoryPosition(std::string_view name, MemoryPosition* out) {
  if (name == "zero") *out = MemoryPosition::kZero;
  else if (name == "before_window" || name == "before-window") *out = MemoryPosition::kBeforeWindow;
  else return false;
  return true;
}

const char* ExcerptPlacementName(ExcerptPlacement p) {
  return p == ExcerptPlacement::kStart ? "start" : "before_last_line";
}

bool ParseExcerptPlacement(std::string_view name, ExcerptPlacement* out) {
  if (name == "start") *out = ExcerptPlacement::kStart;
  else if (name == "before_last_line" || name == "before-last-line") *out = ExcerptPlacement::kBeforeLastLine;
  else return false;
  return true;
}

Status LongContextOptions::Validate(const model::ModelConfig& config) const {
  if (memory_layer < 0 || memory_layer >= config.n_layer) {
    return InvalidArgumentError("memory_layer " + std::to_string(memory_layer) +
                                " is outside the model's layers [0, " +
                                std::to_string(config.n_layer) + ")");
  }
  for (int32_t l : retrieval_layers) {
    if (l < memory_layer || l >= config.n_layer) {
      return InvalidArgumentError("retrieval layer " + std::to_string(l) + " must be in [memory_layer " +
                                  std::to_string(memory_layer) + ", " + std::to_string(config.n_layer) +
                                  "): memory holds layer-" + std::to_string(memory_layer) +
                                  " K/V, which layers below it cannot use");
    }
  }
  if (chunk_tokens < 1 || chunk_tokens > 65536) {
    return InvalidArgumentError("chunk_tokens must be in [1, 65536], got " + std::to_string(chunk_tokens));
  }
  if (top_k < 0 || top_k > 4096) return InvalidArgumentError("top_k must be in [0, 4096]");
  if (local_window < 2) return InvalidArgumentError("local_window must be at least 2 tokens");
  if (config.n_ctx_train > 0 && local_window > config.n_ctx_train) {
    return InvalidArgumentError("local_window " + std::to_string(local_window) +
                                " exceeds the context the model was trained with (" +
                                std::to_string(config.n_ctx_train) + ")");
  }
  if (!model::IsKvCacheDType(kv_cache_dtype)) {
    return InvalidArgumentError("the KV cache dtype must be f16, f32 or q8_0");
  }
  if ((modes & ~kAllMemoryModes) != 0) return InvalidArgumentError("unknown memory mode bits");
  for (int32_t l : context.layers) {
    if (l < 0 || l >= config.n_layer) {
      return InvalidArgumentError("context memory layer " + std::to_string(l) +
                                  " is outside the model's layers [0, " +
                                  std::to_string(config.n_layer) + ")");
    }
  }
  if (context.sink_tokens < 0 || context.sink_tokens > 65536) {
    return InvalidArgumentError("context memory sink_tokens must be in [0, 65536]");
  }
  if (context.representative_keys < 1 || context.representative_keys > 4096) {
    return InvalidArgumentError("context memory representative_keys must be in [1, 4096]");
  }
  if (context.top_k < 0 || context.top_k > 4096) {
    return InvalidArgumentError("context memory top_k must be in [0, 4096]");
  }
  if (reread.top_k < 0 || reread.top_k > 4096) {
    return InvalidArgumentError("reread top_k must be in [0, 4096]");
  }
  if (reread.focus < -1 || reread.focus > 64) {
    return InvalidArgumentError("reread focus must be in [-1, 64] (sentences kept on each side of "
                                "a matching one; -1 keeps whole chunks)");
  }
  if (!(reread.focus_margin >= 0.0f && reread.focus_margin <= 2.0f)) {
    return InvalidArgumentError("reread focus_margin must be in [0, 2] (a cosine difference; 2 "
                                "keeps every sentence)");
  }
  if (reread.budget_tokens < 0) {
    return InvalidArgumentError("reread budget_tokens must be >= 0 (it is also capped by the "
                                "local window)");
  }
  if (knn.k < 1 || knn.k > 4096 || knn.chunks < 1 || knn.chunks > 4096) {
    return InvalidArgumentError("knn k and chunks must be in [1, 4096]");
  }
  if (knn.context_tokens < 0 || knn.context_tokens > 65536) {
    return InvalidArgumentError("knn context_tokens must be in [0, 65536]");
  }
  if (!(knn.lambda >= 0.0f && knn.lambda <= 1.0f)) {
    return InvalidArgumentError("knn lambda must be in [0, 1]");
  }
  if (!(knn.temperature > 0.0f) || !std::isfinite(knn.temperature)) {
    return InvalidArgumentError("knn temperature must be > 0");
  }
  return Status::Ok();
}

LongContextSession::LongContextSession(model::Model* model, const model::Tokenizer* tokenizer,
                                       memory::MemoryBank* bank, Embedder* embedder,
                                       const LongContextOptions& o)
    : model_(model), tokenizer_(tokenizer), bank_(bank), embedder_(embedder), options_(o),
      placement_(*model) {}

LongContextSession::~LongContextSession() = default;

std::vector<int32_t> LongContextSession::BankKvLayers() const {
  // A bank that does not record its layers holds exactly one: MemLong's memory layer.
  if (bank_ == nullptr || bank_->kv_layers().empty()) return {options_.memory_layer};
  return bank_->kv_layers();
}

StatusOr<std::unique_ptr<LongContextSession>> LongContextSession::Create(
    model::Model* model, const model::Tokenizer* tokenizer, memory::MemoryBank* bank,
    Embedder* embedder, const LongContextOptions& options) {
  if (model == nullptr || tokenizer == nullptr) {
    return InvalidArgumentError("a long-context session needs a model and a tokenizer");
  }
  const model::ModelConfig& cfg = model->config();
  RETURN_IF_ERROR(options.Validate(cfg));
  if (options.use_memory && options.modes != 0 && (bank == nullptr || embedder == nullptr)) {
    return InvalidArgumentError("memory needs a memory bank and an embedder");
  }
  if (bank != nullptr) {
    const std::vector<int32_t> need = options.KvLayers(cfg);
    if (!need.empty()) {
      if (!bank->has_kv()) {
        return InvalidArgumentError("the memory bank stores no K/V (a text-only bank) but memory "
                                    "mode " + MemoryModesName(options.modes) +
                                    " reads K/V; ingest into a bank made for this mode");
      }
      if (bank->n_head_kv() != cfg.n_head_kv || bank->head_dim() != cfg.head_dim) {
        return InvalidArgumentError(
            "the memory bank stores K/V of " + std::to_string(bank->n_head_kv()) + " heads × " +
            std::to_string(bank->head_dim()) + " but the model's layers have " +
            std::to_string(cfg.n_head_kv) + " × " + std::to_string(cfg.head_dim) +
            "; use a bank built with this model");
      }
      // A bank that does not record its layers holds exactly one: MemLong's memory layer.
      const std::vector<int32_t> have =
          bank->kv_layers().empty() ? std::vector<int32_t>{options.memory_layer} : bank->kv_layers();
      for (int32_t l : need) {
        if (!std::binary_search(have.begin(), have.end(), l)) {
          return InvalidArgumentError("the memory bank holds no K/V of layer " + std::to_string(l) +
                                      ", which memory mode " + MemoryModesName(options.modes) +
                                      " reads; ingest into a bank made for this mode and config");
        }
      }
    }
    if (options.StateDim(cfg) > 0 && bank->state_dim() != options.StateDim(cfg)) {
      return InvalidArgumentError("the kNN-LM mode needs a bank with token states of width " +
                                  std::to_string(options.StateDim(cfg)) + "; this bank has " +
                                  std::to_string(bank->state_dim()));
    }
  }
  auto session = std::unique_ptr<LongContextSession>(
      new LongContextSession(model, tokenizer, bank, embedder, options));
  model::KvCacheOptions kv;
  kv.n_ctx = options.local_window;
  kv.dtype = options.kv_cache_dtype;
  ASSIGN_OR_RETURN(session->cache_, model->NewKvCache(kv));
  if (options.has(kModeContext) && bank != nullptr) {
    ASSIGN_OR_RETURN(session->context_,
                     ContextMemory::Create(model, bank, embedder, options.context,
                                           session->BankKvLayers(), options.local_window));
  }
  if (bank != nullptr && embedder != nullptr) {
    RetrieverOptions ro;
    ro.top_k = options.top_k;
    ASSIGN_OR_RETURN(Retriever r, Retriever::Create(bank, embedder, ro));
    session->retriever_ = std::make_unique<Retriever>(std::move(r));
  }
  return session;
}

StatusOr<IngestStats> LongContextSession::IngestText(memory::DocumentId doc_id,
                                                     std::string_view text,
                                                     const IngestProgress& progress) {
  const std::vector<model::TokenId> ids = tokenizer_->Encode(text, /*add_special=*/false,
                                                             /*parse_special=*/false);
  return IngestTokens(doc_id, ids, 0, progress);
}

StatusOr<IngestStats> LongContextSession::IngestTokens(memory::DocumentId doc_id,
                                                       std::span<const model::TokenId> tokens,
                                                       int64_t first_position,
                                                       const IngestProgress& progress) {
  if (bank_ == nullptr || embedder_ == nullptr) {
    return FailedPreconditionError("ingest needs a memory bank and an embedder");
  }
  if (first_position < 0) return InvalidArgumentError("first_position must be >= 0");
  IngestStats stats;
  const int64_t n = static_cast<int64_t>(tokens.size());
  const int64_t tau = options_.chunk_tokens;
  // Windows are embedded and appended in groups: one embedder call and one atomic bank append
  // per group keeps both efficient; the group is small so memory stays O(τ).
  constexpr int64_t kGroup = 8;
  // What the bank stores decides what ingest computes: nothing but the embedding for a text-only
  // bank; the K/V of the bank's layers otherwise (a bank that records no layer list holds the
  // MemLong memory layer).
  const bool need_kv = bank_->has_kv();
  // A bank with token states (kNN-LM) needs the whole stack once per chunk, no logits; the same
  // forward captures the K/V when the bank holds them too.
  const bool need_states = bank_->state_dim() > 0;
  if (need_states && bank_->state_dim() != model_->config().n_embd) {
    return InvalidArgumentError("the bank stores token states of width " +
                                std::to_string(bank_->state_dim()) + " but the model's are " +
                                std::to_string(model_->config().n_embd) +
                                "; use a bank made for this model");
  }
  // One pass per window captures every layer the bank holds, up to the highest of them.
  model::ForwardOptions fo;
  fo.compute_logits = false;
  if (need_kv) {
    fo.capture_layers = BankKvLayers();
    fo.last_layer = fo.capture_layers.back();
  }
  // Next token of every ingested token ([n]): the following token of this call, -1 after the last
  // (a later call's first token is not known here).
  std::vector<int32_t> next_tokens;
  if (need_states) {
    next_tokens.assign(tokens.size(), -1);
    for (size_t i = 0; i + 1 < tokens.size(); ++i) next_tokens[i] = tokens[i + 1];
  }
  for (int64_t group_begin = 0; group_begin < n; group_begin += kGroup * tau) {
    const int64_t group_end = std::min(n, group_begin + kGroup * tau);
    std::vector<std::string> texts;
    std::vector<model::ForwardResult> kvs;
    std::vector<ContextMemory::Window> context_kvs;
    std::vector<std::span<const model::TokenId>> spans;
    if (context_mode() && options_.context.contextual_ingest) {
      // The whole group in one pass: each chunk's K/V in the context of the group's earlier text.
      ASSIGN_OR_RETURN(context_kvs, context_->IngestSegment(
                                        tokens.subspan(static_cast<size_t>(group_begin),
                                                       static_cast<size_t>(group_end - group_begin)),
                                        tau));
    }
    for (int64_t b = group_begin; b < group_end; b += tau) {
      const int64_t e = std::min(group_end, b + tau);
      auto window = tokens.subspan(static_cast<size_t>(b), static_cast<size_t>(e - b));
      // kNN-LM states with context: the chunk runs after up to knn.context_tokens earlier tokens.
      const int64_t warm = need_states ? std::min(options_.knn.context_tokens, b) : 0;
      model::ForwardResult r;
      bool have_states = false;
      if (context_mode() && !options_.context.contextual_ingest) {
        // Every layer the bank holds, plus the context layers' representative keys.
        ASSIGN_OR_RETURN(ContextMemory::Window w, context_->Ingest(window));
        context_kvs.push_back(std::move(w));
      } else if (!context_mode() && need_kv) {
        model::ForwardOptions one = fo;
        if (need_states && warm == 0) {  // the same pass gives the states
          one.final_states = true;
          one.last_layer = -1;
          have_states = true;
        }
        ASSIGN_OR_RETURN(r, model_->Forward(window, nullptr, one));
      }
      if (need_states && !have_states) {
        model::ForwardOptions so;
        so.compute_logits = false;
        so.final_states = true;
        ASSIGN_OR_RETURN(model::ForwardResult s,
                         model_->Forward(tokens.subspan(static_cast<size_t>(b - warm),
                                                        static_cast<size_t>(e - b + warm)),
                                         nullptr, so));
        ASSIGN_OR_RETURN(Tensor rows, s.final_states.Slice(0, warm, warm + e - b));
        ASSIGN_OR_RETURN(r.final_states, rows.Contiguous());
      }
      kvs.push_back(std::move(r));
      spans.push_back(window);
      texts.push_back(tokenizer_->Decode(window, /*skip_special=*/true));
    }
    std::vector<EmbedRequest> requests;
    for (size_t i = 0; i < texts.size(); ++i) requests.push_back({texts[i], spans[i]});
    ASSIGN_OR_RETURN(std::vector<float> emb, embedder_->Embed(requests));
    std::vector<memory::ChunkInput> chunks(texts.size());
    for (size_t i = 0; i < texts.size(); ++i) {
      memory::ChunkInput& c = chunks[i];
      c.doc_id = doc_id;
      c.position = first_position + group_begin + static_cast<int64_t>(i) * tau;
      c.tokens = spans[i];
      c.text = texts[i];
      c.embedding = std::span<const float>(emb).subspan(i * static_cast<size_t>(embedder_->dim()),
                                                        static_cast<size_t>(embedder_->dim()));
      if (context_mode()) {
        c.k = context_kvs[i].k;
        c.v = context_kvs[i].v;
      } else if (need_kv) {
        // [n_kv_layers · n_head_kv, T, head_dim], layer-major in the bank's layer order.
        ASSIGN_OR_RETURN(std::tie(c.k, c.v), StackLayerKV(kvs[i].captured));
      }
      if (need_states) {
        const Tensor& st = kvs[i].final_states;  // [T, n_embd] f32 host
        c.states = std::span<const float>(st.data_as<float>(), static_cast<size_t>(st.numel()));
        c.next_tokens = std::span<const int32_t>(next_tokens).subspan(
            static_cast<size_t>(group_begin) + i * static_cast<size_t>(tau), spans[i].size());
      }
    }
    ASSIGN_OR_RETURN(std::vector<memory::ChunkId> ids, bank_->Append(chunks));
    if (context_mode()) {
      for (size_t i = 0; i < ids.size(); ++i) {
        context_->Remember(ids[i], doc_id, chunks[i].position,
                           static_cast<int64_t>(spans[i].size()), std::move(context_kvs[i]));
      }
    }
    stats.chunk_ids.insert(stats.chunk_ids.end(), ids.begin(), ids.end());
    stats.n_chunks += static_cast<int64_t>(ids.size());
    stats.n_tokens = group_end;
    if (progress) progress(group_end, n);
  }
  return stats;
}

Status LongContextSession::Retrieve(std::string_view query_text,
                                    const memory::SearchFilter& filter) {
  retrieved_ = Retrieved{};
  memory_ = model::MemoryKV{};
  RETURN_IF_ERROR(RetrieveKnn(query_text, filter));
  if (!options_.has(kModeMemLong) || retriever_ == nullptr || options_.retrieval_layers.empty()) {
    return Status::Ok();
  }
  const std::vector<model::TokenId> qtok =
      tokenizer_->Encode(query_text, /*add_special=*/false, /*parse_special=*/false);
  ASSIGN_OR_RETURN(retrieved_, retriever_->Retrieve({query_text, qtok}, filter));
  if (retrieved_.empty()) return Status::Ok();
  if (bank_->n_kv_layers() > 1) {
    // [M, n_kv_layers · n_head_kv, d]: MemLong reads the memory layer's rows only (a view).
    const std::vector<int32_t> layers = BankKvLayers();
    const int64_t li =
        std::lower_bound(layers.begin(), layers.end(), options_.memory_layer) - layers.begin();
    const int64_t h = bank_->n_head_kv();
    ASSIGN_OR_RETURN(retrieved_.k, retrieved_.k.Slice(1, li * h, (li + 1) * h));
    ASSIGN_OR_RETURN(retrieved_.v, retrieved_.v.Slice(1, li * h, (li + 1) * h));
  }
  Tensor rotated;  // the keys rotated on a device backend (retrieved_ keeps the host ones)
  if (options_.memory_position == MemoryPosition::kBeforeWindow) {
    // Memory keys are stored before RoPE; place memory token i of M at position i - M.
    // Rotated where the retrieval layers run (the host for a split model's host layers), so that
    // placing them per layer copies at most once.
    ASSIGN_OR_RETURN(Tensor k, model::RotateMemoryKeys(
                                   model_->BackendReading(options_.retrieval_layers),
                                   model_->config().rope, retrieved_.k, -retrieved_.n_tokens()));
    if (k.device().is_cpu()) {
      retrieved_.k = std::move(k);
    } else {
      rotated = std::move(k);
    }
  }
  memory_ = retrieved_.ForLayers(options_.retrieval_layers);
  if (rotated.defined()) {
    for (model::LayerMemoryKV& l : memory_.layers) {
      if (l.defined()) l.k = rotated;
    }
  }
  return Status::Ok();
}

Status LongContextSession::PrepareMemory(std::span<const model::TokenId> window) {
  RETURN_IF_ERROR(Retrieve(query_text_, filter_));
  RETURN_IF_ERROR(RetrieveContext(window));
  // Host K/V from the bank onto a device backend, once per retrieval (a no-op on the CPU).
  ASSIGN_OR_RETURN(memory_, placement_.Place(memory_));
  return Status::Ok();
}

Status LongContextSession::RetrieveContext(std::span<const model::TokenId> window) {
  if (!context_mode() || !options_.use_memory) return Status::Ok();
  // Chunks are chosen for the query (its tokens drive the embedder and the representative-key
  // scout pass); a window without a query text stands for itself.
  std::vector<model::TokenId> qtok =
      tokenizer_->Encode(query_text_, /*add_special=*/false, /*parse_special=*/false);
  if (qtok.empty()) qtok.assign(window.begin(), window.end());
  std::vector<memory::SearchHit> hits;
  ASSIGN_OR_RETURN(model::MemoryKV context, context_->Build(query_text_, qtok, filter_, &hits));
  // Context layers read their own K/V; on a layer that MemLong also reads, context memory wins.
  if (memory_.layers.size() < context.layers.size()) memory_.layers.resize(context.layers.size());
  for (size_t l = 0; l < context.layers.size(); ++l) {
    if (context.layers[l].defined()) memory_.layers[l] = std::move(context.layers[l]);
  }
  if (!options_.has(kModeMemLong)) {
    // retrieved(): the union of the chosen chunks, and (for token counts) the memory of the
    // first context layer that has any.
    retrieved_ = Retrieved{};
    retrieved_.hits = std::move(hits);
    for (const model::LayerMemoryKV& m : memory_.layers) {
      if (!m.defined()) continue;
      retrieved_.k = m.k;
      retrieved_.v = m.v;
      break;
    }
  }
  return Status::Ok();
}

StatusOr<std::vector<Excerpt>> LongContextSession::RetrieveExcerpts(
    std::string_view query_text, const memory::SearchFilter& filter) {
  std::vector<Excerpt> out;
  if (!options_.use_memory || retriever_ == nullptr || options_.reread.top_k == 0) return out;
  const std::vector<model::TokenId> qtok =
      tokenizer_->Encode(query_text, /*add_special=*/false, /*parse_special=*/false);
  ASSIGN_OR_RETURN(std::vector<memory::SearchHit> hits,
                   retriever_->Search({query_text, qtok}, filter, options_.reread.top_k,
                                      options_.reread.retrieval));
  // Best first until the budget is spent; a chunk that does not fit is skipped, a smaller one
  // after it may still fit.
  const int64_t budget = std::min(options_.reread.budget_tokens, options_.local_window);
  int64_t used = 0;
  for (const memory::SearchHit& h : hits) {
    if (used + h.n_tokens > budget) continue;
    ASSIGN_OR_RETURN(memory::ChunkRecord rec, bank_->GetChunk(h.id));
    used += h.n_tokens;
    out.push_back({h, std::move(rec.text), std::move(rec.tokens)});
  }
  SortInDocumentOrder(&out);
  return out;
}

StatusOr<std::vector<Excerpt>> LongContextSession::FocusExcerpts(std::string_view question,
                                                                 std::vector<Excerpt> excerpts) {
  if (excerpts.empty() || retriever_ == nullptr || options_.reread.focus < 0) return excerpts;
  // A sentence cut by a chunk boundary ("The gift that Maelis received was a" | "lantern.") reads
  // whole: each excerpt's neighbouring chunks in its document join it, and the focus keeps only
  // the sentences that match. Neighbours are the chunks stored just before and after (ids are
  // given in ingest order), taken only when they adjoin in the same document.
  if (bank_ != nullptr) {
    std::set<memory::ChunkId> have;
    for (const Excerpt& e : excerpts) have.insert(e.hit.id);
    std::vector<Excerpt> neighbours;
    for (const Excerpt& e : excerpts) {
      for (const bool after : {false, true}) {
        if (!after && e.hit.id == 0) continue;
        const memory::ChunkId id = after ? e.hit.id + 1 : e.hit.id - 1;
        if (have.count(id) != 0) continue;
        StatusOr<memory::ChunkInfo> info = bank_->Info(id);
        if (!info.ok()) continue;
        memory::SearchHit h;
        h.id = id;
        h.doc_id = info->doc_id;
        h.position = info->position;
        h.n_tokens = info->n_tokens;
        h.score = e.hit.score;
        if (!(after ? Adjoins(e.hit, h) : Adjoins(h, e.hit))) continue;
        ASSIGN_OR_RETURN(memory::ChunkRecord rec, bank_->GetChunk(id));
        have.insert(id);
        neighbours.push_back({h, std::move(rec.text), std::move(rec.tokens)});
      }
    }
    for (Excerpt& n : neighbours) excerpts.push_back(std::move(n));
    SortInDocumentOrder(&excerpts);
  }
  return retriever::FocusExcerpts(*retriever_->embedder(), *tokenizer_, question,
                                  std::move(excerpts), options_.reread.focus,
                                  options_.reread.focus_margin);
}

Status LongContextSession::Run(std::span<const model::TokenId> ids) {
  model::ForwardOptions fo;
  fo.memory = memory_.layers.empty() ? nullptr : &memory_;
  fo.final_states = knn_on();
  ASSIGN_OR_RETURN(model::ForwardResult r, model_->Forward(ids, cache_.get(), fo));
  const int64_t n_vocab = r.logits.dim(-1);
  const float* last = r.logits.data_as<float>() + (r.logits.dim(0) - 1) * n_vocab;
  logits_.assign(last, last + n_vocab);
  if (fo.final_states) {
    const int64_t d = r.final_states.dim(-1);
    RETURN_IF_ERROR(MixKnnIntoLogits(std::span<const float>(
        r.final_states.data_as<float>() + (r.final_states.dim(0) - 1) * d, static_cast<size_t>(d))));
  }
  return Status::Ok();
}

Status LongContextSession::Begin(std::span<const model::TokenId> prompt,
                                 std::string_view query_text, const memory::SearchFilter& filter) {
  if (prompt.empty()) return InvalidArgumentError("the prompt is empty");
  if (static_cast<int64_t>(prompt.size()) > options_.local_window) {
    return ResourceExhaustedError("the prompt has " + std::to_string(prompt.size()) +
                                  " tokens but the local window holds " +
                                  std::to_string(options_.local_window) +
                                  "; ingest the rest into memory or raise local_window");
  }
  cache_->Clear();
  logits_.clear();
  filter_ = filter;
  query_text_ = std::string(query_text);
  RETURN_IF_ERROR(PrepareMemory(prompt));
  return Run(prompt);
}

StatusOr<std::vector<float>> LongContextSession::TokenLogProbs(
    std::span<const model::TokenId> window, std::string_view query_text,
    const memory::SearchFilter& filter, std::span<const model::TokenId> prefix) {
  if (window.size() < 2) return InvalidArgumentError("scoring needs at least two tokens");
  if (static_cast<int64_t>(window.size() + prefix.size()) > options_.local_window) {
    return ResourceExhaustedError("a scored window of " + std::to_string(window.size()) +
                                  " tokens" +
                                  (prefix.empty() ? std::string()
                                                  : " after " + std::to_string(prefix.size()) +
                                                        " context tokens") +
                                  " does not fit the local window of " +
                                  std::to_string(options_.local_window));
  }
  cache_->Clear();
  logits_.clear();
  filter_ = filter;
  query_text_ = std::string(query_text);
  RETURN_IF_ERROR(PrepareMemory(window));
  if (!prefix.empty()) {
    model::ForwardOptions pfo;
    pfo.memory = memory_.layers.empty() ? nullptr : &memory_;
    RETURN_IF_ERROR(model_->Forward(prefix, cache_.get(), pfo).status());
  }
  std::vector<float> out;
  out.reserve(window.size() - 1);
  constexpr size_t kPiece = 256;  // [256, n_vocab] logits at a time
  model::ForwardOptions fo;
  fo.memory = memory_.layers.empty() ? nullptr : &memory_;
  fo.all_logits = true;
  fo.final_states = knn_on();
  for (size_t b = 0; b < window.size(); b += kPiece) {
    const size_t e = std::min(window.size(), b + kPiece);
    ASSIGN_OR_RETURN(model::ForwardResult r, model_->Forward(window.subspan(b, e - b), cache_.get(), fo));
    const size_t scored_before = out.size();
    const int64_t n_vocab = r.logits.dim(-1);
    for (size_t i = b; i < e; ++i) {
      const float* row = r.logits.data_as<float>() + static_cast<int64_t>(i - b) * n_vocab;
      if (i + 1 < window.size()) {
        const model::TokenId next = window[i + 1];
        if (next < 0 || next >= n_vocab) return InvalidArgumentError("token id outside the vocabulary");
        float mx = row[0];
        for (int64_t j = 1; j < n_vocab; ++j) mx = std::max(mx, row[j]);
        double sum = 0.0;
        for (int64_t j = 0; j < n_vocab; ++j) sum += std::exp(static_cast<double>(row[j] - mx));
        out.push_back(static_cast<float>(row[next] - mx - std::log(sum)));
      } else {
        logits_.assign(row, row + n_vocab);
      }
    }
    if (fo.final_states) {
      // Rows b..e-1 scored positions scored_before..out.size()-1 (the window's last row scores
      // nothing and gives logits_ instead).
      const int64_t d = r.final_states.dim(-1);
      const size_t n_scored = out.size() - scored_before;
      const std::span<const float> states(r.final_states.data_as<float>(),
                                          static_cast<size_t>(r.final_states.numel()));
      RETURN_IF_ERROR(MixKnnIntoLogProbs(states.subspan(0, n_scored * static_cast<size_t>(d)),
                                         window.subspan(b + 1, n_scored),
                                         std::span<float>(out).subspan(scored_before, n_scored)));
      if (e == window.size()) {
        RETURN_IF_ERROR(MixKnnIntoLogits(states.subspan((e - b - 1) * static_cast<size_t>(d),
                                                        static_cast<size_t>(d))));
      }
    }
  }
  return out;
}

// ---- kNN-LM mode ------------------------------------------------------------------------------

Status LongContextSession::RetrieveKnn(std::string_view query_text,
                                       const memory::SearchFilter& filter) {
  knn_store_ = KnnDatastore{};
  if (!options_.has(kModeKnnLm) || retriever_ == nullptr || bank_->state_dim() == 0) {
    return Status::Ok();
  }
  const std::vector<model::TokenId> qtok =
      tokenizer_->Encode(query_text, /*add_special=*/false, /*parse_special=*/false);
  ASSIGN_OR_RETURN(std::vector<memory::SearchHit> hits,
                   retriever_->Search({query_text, qtok}, filter, options_.knn.chunks));
  if (hits.empty()) return Status::Ok();
  std::vector<memory::ChunkId> ids;
  ids.reserve(hits.size());
  for (const memory::SearchHit& h : hits) ids.push_back(h.id);
  ASSIGN_OR_RETURN(memory::FetchedStates fs, bank_->FetchStates(ids));
  ASSIGN_OR_RETURN(knn_store_, KnnDatastore::Create(fs.states, fs.next_tokens, bank_->state_dim()));
  return Status::Ok();
}

Status LongContextSession::MixKnnIntoLogits(std::span<const float> state) {
  if (!knn_on() || logits_.empty()) return Status::Ok();
  ASSIGN_OR_RETURN(KnnNeighbours nb, knn_store_.Search(state, 1, options_.knn.k));
  MixLogits(logits_, nb.dist, nb.token, options_.knn.lambda, options_.knn.temperature);
  return Status::Ok();
}

Status LongContextSession::MixKnnIntoLogProbs(std::span<const float> states,
                                              std::span<const model::TokenId> next,
                                              std::span<float> logprobs) {
  if (!knn_on() || logprobs.empty()) return Status::Ok();
  const int64_t n = static_cast<int64_t>(logprobs.size());
  ASSIGN_OR_RETURN(KnnNeighbours nb, knn_store_.Search(states, n, options_.knn.k));
  const size_t k = static_cast<size_t>(nb.k);
  for (int64_t i = 0; i < n; ++i) {
    const size_t at = static_cast<size_t>(i) * k;
    logprobs[static_cast<size_t>(i)] =
        MixLogProb(logprobs[static_cast<size_t>(i)], std::span<const float>(nb.dist).subspan(at, k),
                   std::span<const model::TokenId>(nb.token).subspan(at, k),
                   next[static_cast<size_t>(i)], options_.knn.lambda, options_.knn.temperature);
  }
  return Status::Ok();
}

Status LongContextSession::Overflow() {
  const std::vector<model::TokenId> all(cache_->tokens().begin(), cache_->tokens().end());
  const size_t half = all.size() / 2;
  std::span<const model::TokenId> dropped(all.data(), half);
  std::span<const model::TokenId> kept(all.data() + half, all.size() - half);
  if (options_.use_memory && bank_ != nullptr && embedder_ != nullptr) {
    RETURN_IF_ERROR(IngestTokens(options_.overflow_doc_id, dropped, overflow_position_).status());
    overflow_position_ += static_cast<int64_t>(half);
    // Keep seeing the overflow even when the caller filtered by document.
    if (!filter_.doc_ids.empty() &&
        std::find(filter_.doc_ids.begin(), filter_.doc_ids.end(), options_.overflow_doc_id) ==
            filter_.doc_ids.end()) {
      filter_.doc_ids.push_back(options_.overflow_doc_id);
    }
    query_text_ = tokenizer_->Decode(kept, /*skip_special=*/true);
    RETURN_IF_ERROR(PrepareMemory(kept));
  }
  cache_->Clear();
  return Run(kept);
}

Status LongContextSession::Step(model::TokenId id) {
  if (logits_.empty()) return FailedPreconditionError("Step before Begin");
  if (cache_->n_free() < 1) RETURN_IF_ERROR(Overflow());
  return Run(std::span<const model::TokenId>(&id, 1));
}

namespace {

// Length of the longest suffix of `text` that is a proper prefix of some stop string: that much
// text must be held back because the next token may complete a stop string.
size_t HoldBack(std::string_view text, const std::vector<std::string>& stops) {
  size_t hold = 0;
  for (const std::string& s : stops) {
    for (size_t len = std::min(s.size() - 1, text.size()); len > hold; --len) {
      if (text.substr(text.size() - len) == std::string_view(s).substr(0, len)) {
        hold = len;
        break;
      }
    }
  }
  return hold;
}

}  // namespace

StatusOr<GenerateResult> LongContextSession::Generate(const GenerateOptions& options,
                                                      model::Sampler& sampler,
                                                      const TextCallback& on_text) {
  if (logits_.empty()) return FailedPreconditionError("Generate before Begin");
  if (options.max_tokens < 0) return InvalidArgumentError("max_tokens must be >= 0");
  for (const std::string& s : options.stop_strings) {
    if (s.empty()) return InvalidArgumentError("stop strings must not be empty");
  }
  GenerateResult result;
  result.stop_reason = "max_tokens";
  model::IncrementalDetokenizer detok(*tokenizer_, /*skip_special=*/true);
  std::vector<model::TokenId> history(cache_->tokens().begin(), cache_->tokens().end());
  size_t emitted = 0;
  auto emit_until = [&](size_t end) {
    if (end > emitted && on_text) on_text(std::string_view(result.text).substr(emitted, end - emitted));
    emitted = std::max(emitted, end);
  };
  for (int64_t i = 0; i < options.max_tokens; ++i) {
    if (options.should_stop && options.should_stop()) {
      result.stop_reason = "cancelled";
      break;
    }
    const model::TokenId id = sampler.Sample(logits_, history);
    if (options.stop_at_eos && (tokenizer_->IsEog(id) || id == tokenizer_->eos_id())) {
      result.stop_reason = "eos";
      break;
    }
    result.tokens.push_back(id);
    history.push_back(id);
    result.text += detok.Push(id);
    size_t stop_at = std::string::npos;
    for (const std::string& s : options.stop_strings) {
      stop_at = std::min(stop_at, result.text.find(s));
    }
    if (stop_at != std::string::npos) {
      result.text.resize(stop_at);
      result.stop_reason = "stop_string";
      break;
    }
    emit_until(result.text.size() - HoldBack(result.text, options.stop_strings));
    if (i + 1 < options.max_tokens) RETURN_IF_ERROR(Step(id));
  }
  if (result.stop_reason != "stop_string") result.text += detok.Flush();
  emit_until(result.text.size());
  return result;
}

}  // namespace muninn::retriever
