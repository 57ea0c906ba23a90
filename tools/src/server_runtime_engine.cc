#include "server_runtime_engine.h"

#include <algorithm>
#include <chrono>
#include <filesystem>

#include "chat_generation.h"
#include "muninn/tools/summarizer.h"

namespace muninn::tools::server {
namespace {

std::string FinishReason(const std::string& stop_reason) {
  return stop_reason == "max_tokens" ? "length" : "stop";
}

ChatTurnOptions TurnOptions(const GenerationParams& p) {
  ChatTurnOptions o;
  o.generate.max_tokens = p.max_tokens;
  o.generate.stop_strings = p.stop;
  if (p.temperature <= 0.0f) {
    o.sampling = model::SamplerOptions::Greedy();
  } else {
    o.sampling.temperature = p.temperature;
    o.sampling.top_k = p.top_k;
    o.sampling.top_p = p.top_p;
    o.sampling.min_p = p.min_p;
  }
  o.sampling.repeat_penalty = p.repeat_penalty;
  o.sampling.seed = p.seed;
  o.filter.doc_ids.assign(p.document_ids.begin(), p.document_ids.end());
  return o;
}

using Clock = std::chrono::steady_clock;

GenerationOutput ToOutput(const ChatTurnResult& r, Clock::time_point start) {
  GenerationOutput out;
  out.model_seconds = std::chrono::duration<double>(Clock::now() - start).count();
  out.text = r.generation.text;
  out.prompt_tokens = r.prompt_tokens;
  out.completion_tokens = static_cast<int64_t>(r.generation.tokens.size());
  out.finish_reason = FinishReason(r.generation.stop_reason);
  return out;
}

}  // namespace

RuntimeEngine::RuntimeEngine(std::unique_ptr<Runtime> runtime, const RuntimeEngineOptions& options,
                             DocumentCatalog catalog)
    : runtime_(std::move(runtime)),
      options_(options),
      queue_(options.max_waiting),
      catalog_(std::move(catalog)) {}

StatusOr<std::unique_ptr<RuntimeEngine>> RuntimeEngine::Create(
    std::unique_ptr<Runtime> runtime, const RuntimeEngineOptions& options) {
  if (options.bank_dir.empty()) {
    return InvalidArgumentError("the server needs a bank directory (--bank DIR)");
  }
  if (options.max_waiting < 0) return InvalidArgumentError("max_waiting must be >= 0");
  if (runtime->bank() == nullptr) {
    return FailedPreconditionError("the runtime has no memory bank");
  }
  ASSIGN_OR_RETURN(DocumentCatalog catalog, DocumentCatalog::Load(options.bank_dir));
  auto engine = std::unique_ptr<RuntimeEngine>(
      new RuntimeEngine(std::move(runtime), options, std::move(catalog)));
  const AppConfig& config = engine->runtime_->config();
  engine->model_id_ = std::filesystem::path(config.model_path).stem().string();
  engine->embedding_model_id_ =
      config.embedder == "hidden"
          ? engine->model_id_ + "-hidden-states"
          : std::filesystem::path(config.embedder).filename().string();
  // Ids continue after every document the catalog or the bank knows (the bank may hold
  // documents whose catalog write was lost to a crash).
  const memory::DocumentId overflow = engine->runtime_->session().options().overflow_doc_id;
  engine->next_id_ = engine->catalog_.NextId();
  for (const auto& info : engine->runtime_->bank()->ListChunks()) {
    if (info.doc_id != overflow) engine->next_id_ = std::max(engine->next_id_, info.doc_id + 1);
  }
  return engine;
}

RuntimeEngine::~RuntimeEngine() { Close().IgnoreError(); }

Status RuntimeEngine::Close() {
  std::lock_guard<std::mutex> lock(catalog_mu_);
  if (closed_) return Status::Ok();
  closed_ = true;
  sessions_.clear();
  return runtime_->bank()->Close();
}

StatusOr<retriever::LongContextSession*> RuntimeEngine::SessionFor(bool use_memory,
                                                                  int64_t top_k) {
  retriever::LongContextOptions o = runtime_->session().options();
  o.use_memory = use_memory;
  if (top_k >= 0) {
    o.top_k = top_k;
    o.reread.top_k = top_k;
    o.context.top_k = top_k;
  }
  const auto key = std::make_pair(use_memory, o.top_k);
  auto it = sessions_.find(key);
  if (it != sessions_.end()) return it->second.get();
  // Each session holds a local KV cache; keep a handful, dropping the oldest settings first.
  if (sessions_.size() >= options_.max_sessions) sessions_.erase(sessions_.begin());
  ASSIGN_OR_RETURN(auto session, runtime_->NewSession(o));
  auto* raw = session.get();
  sessions_[key] = std::move(session);
  return raw;
}

uint64_t RuntimeEngine::ReserveId() {
  std::lock_guard<std::mutex> lock(catalog_mu_);
  const uint64_t id = std::max(next_id_, catalog_.NextId());
  next_id_ = id + 1;
  ingesting_.insert(id);
  return id;
}

Status RuntimeEngine::FinishDocument(uint64_t id, bool stored, const std::string& name,
                                     int64_t tokens) {
  std::lock_guard<std::mutex> lock(catalog_mu_);
  ingesting_.erase(id);
  if (!stored) return Status::Ok();
  catalog_.Put(id, {name, tokens});
  return catalog_.Save();
}

StatusOr<GenerationOutput> RuntimeEngine::Chat(std::span<const model::ChatMessage> messages,
                                               const GenerationParams& params,
                                               const TextSink& on_text) {
  ASSIGN_OR_RETURN(auto lease, queue_.Acquire());
  const auto start = Clock::now();
  ASSIGN_OR_RETURN(auto* session, SessionFor(params.use_memory, params.top_k_chunks));
  // Retrieval (when on) looks for the last user message.
  std::string query;
  for (auto it = messages.rbegin(); it != messages.rend(); ++it) {
    if (it->role == "user") {
      query = it->content;
      break;
    }
  }
  ASSIGN_OR_RETURN(auto r, RunChatTurn(*session, runtime_->chat(), messages, query,
                                       TurnOptions(params), on_text));
  return ToOutput(r, start);
}

StatusOr<GenerationOutput> RuntimeEngine::Complete(std::string_view prompt,
                                                   const GenerationParams& params,
                                                   const TextSink& on_text) {
  ASSIGN_OR_RETURN(auto lease, queue_.Acquire());
  const auto start = Clock::now();
  ASSIGN_OR_RETURN(auto* session, SessionFor(params.use_memory, params.top_k_chunks));
  ASSIGN_OR_RETURN(auto r, RunCompletion(*session, prompt, TurnOptions(params), on_text));
  return ToOutput(r, start);
}

StatusOr<AskOutput> RuntimeEngine::Ask(std::string_view question, const GenerationParams& params,
                                       bool include_chunk_text, const TextSink& on_text) {
  ChatTurnResult r;
  Clock::time_point start;
  {
    ASSIGN_OR_RETURN(auto lease, queue_.Acquire());
    start = Clock::now();
    ASSIGN_OR_RETURN(auto* session, SessionFor(true, params.top_k_chunks));
    const model::ChatMessage msg{"user", std::string(question)};
    ASSIGN_OR_RETURN(r, RunChatTurn(*session, runtime_->chat(),
                                    std::span<const model::ChatMessage>(&msg, 1), question,
                                    TurnOptions(params), on_text));
  }
  AskOutput out;
  out.generation = ToOutput(r, start);
  std::lock_guard<std::mutex> lock(catalog_mu_);
  for (const memory::SearchHit& h : r.hits) {
    ChunkRef c;
    c.chunk_id = h.id;
    c.document_id = h.doc_id;
    c.document = catalog_.NameOf(h.doc_id);
    c.token_offset = h.position;
    c.tokens = h.n_tokens;
    c.score = h.score;
    if (include_chunk_text) {
      // The chunk may have been deleted since it was retrieved; then it has no text to show.
      auto rec = runtime_->bank()->GetChunk(h.id);
      if (rec.ok()) c.text = std::move(rec->text);
    }
    out.chunks.push_back(std::move(c));
  }
  return out;
}

StatusOr<SummaryOutput> RuntimeEngine::Summarize(std::string_view name, std::string_view text,
                                                 std::optional<uint64_t> document_id,
                                                 int64_t max_tokens, const TextSink& on_text) {
  SummarizerOptions o = runtime_->config().summarize;
  o.max_tokens = max_tokens;
  std::string stored_text;
  if (document_id) {
    // The document is in the bank already: its text is the chunks' text in token order.
    std::vector<memory::ChunkInfo> chunks;
    for (const auto& info : runtime_->bank()->ListChunks()) {
      if (info.doc_id == *document_id) chunks.push_back(info);
    }
    if (chunks.empty()) {
      return NotFoundError("no document " + std::to_string(*document_id) + " in the bank");
    }
    std::sort(chunks.begin(), chunks.end(),
              [](const auto& a, const auto& b) { return a.position < b.position; });
    for (const auto& info : chunks) {
      ASSIGN_OR_RETURN(auto rec, runtime_->bank()->GetChunk(info.id));
      stored_text += rec.text;
    }
    o.ingest = false;
    o.doc_id = *document_id;
    text = stored_text;
  } else {
    o.ingest = true;
    o.doc_id = ReserveId();
  }
  StatusOr<SummaryResult> result = UnavailableError("not run");
  {
    auto lease = queue_.Acquire();
    if (!lease.ok()) {
      if (!document_id) FinishDocument(o.doc_id, false, "", 0).IgnoreError();
      return lease.status();
    }
    auto session = SessionFor(true, -1);
    result = session.ok() ? tools::Summarize(**session, runtime_->chat(), text, o, {}, on_text)
                          : StatusOr<SummaryResult>(session.status());
  }
  if (!document_id) {
    // A failed summary may still have stored the document's chunks; name it so it can be found
    // and deleted.
    bool stored = result.ok();
    for (const auto& info : runtime_->bank()->ListChunks()) stored |= info.doc_id == o.doc_id;
    const std::string doc_name =
        name.empty() ? "summarize-" + std::to_string(o.doc_id) : std::string(name);
    RETURN_IF_ERROR(
        FinishDocument(o.doc_id, stored, doc_name, result.ok() ? result->n_tokens : 0));
  }
  if (!result.ok()) return result.status();
  SummaryOutput out;
  out.summary = result->summary;
  out.document_id = o.doc_id;
  out.tokens = result->n_tokens;
  out.sections = result->n_sections;
  const auto ids = runtime_->tokenizer().Encode(out.summary, false, false);
  out.completion_tokens = static_cast<int64_t>(ids.size());
  return out;
}

StatusOr<EmbeddingOutput> RuntimeEngine::Embed(std::span<const std::string> texts) {
  EmbeddingOutput out;
  std::vector<std::vector<model::TokenId>> tokens(texts.size());
  std::vector<retriever::EmbedRequest> requests(texts.size());
  for (size_t i = 0; i < texts.size(); ++i) {
    tokens[i] = runtime_->tokenizer().Encode(texts[i], false, false);
    requests[i] = {texts[i], tokens[i]};
    out.prompt_tokens += static_cast<int64_t>(tokens[i].size());
  }
  ASSIGN_OR_RETURN(auto lease, queue_.Acquire());
  ASSIGN_OR_RETURN(std::vector<float> flat, runtime_->embedder()->Embed(requests));
  const int64_t dim = runtime_->embedder()->dim();
  if (dim <= 0 || flat.size() != texts.size() * static_cast<size_t>(dim)) {
    return InternalError("the embedder returned " + std::to_string(flat.size()) +
                         " values for " + std::to_string(texts.size()) + " texts");
  }
  for (size_t i = 0; i < texts.size(); ++i) {
    out.vectors.emplace_back(flat.begin() + static_cast<std::ptrdiff_t>(i * dim),
                             flat.begin() + static_cast<std::ptrdiff_t>((i + 1) * dim));
  }
  return out;
}

StatusOr<IngestOutput> RuntimeEngine::Ingest(std::string_view name, std::string_view text) {
  const uint64_t id = ReserveId();
  StatusOr<retriever::IngestStats> stats = UnavailableError("not run");
  {
    auto lease = queue_.Acquire();
    if (!lease.ok()) {
      FinishDocument(id, false, "", 0).IgnoreError();
      return lease.status();
    }
    // The memory-on session writes through the bank; its options give τ and the memory layer.
    auto session = SessionFor(true, -1);
    stats = session.ok() ? (*session)->IngestText(id, text)
                         : StatusOr<retriever::IngestStats>(session.status());
  }
  const std::string doc_name = name.empty() ? "document-" + std::to_string(id) : std::string(name);
  if (!stats.ok()) {
    // An ingest that failed part-way may have stored some windows: keep them findable by name.
    bool partial = false;
    for (const auto& info : runtime_->bank()->ListChunks()) partial |= info.doc_id == id;
    RETURN_IF_ERROR(FinishDocument(id, partial, doc_name + " (partial)", 0));
    return stats.status();
  }
  RETURN_IF_ERROR(FinishDocument(id, true, doc_name, stats->n_tokens));
  IngestOutput out;
  out.id = id;
  out.tokens = stats->n_tokens;
  out.chunks = stats->n_chunks;
  return out;
}

StatusOr<std::vector<DocumentInfo>> RuntimeEngine::ListDocuments() {
  std::map<uint64_t, int64_t> chunks;
  for (const auto& info : runtime_->bank()->ListChunks()) ++chunks[info.doc_id];
  std::lock_guard<std::mutex> lock(catalog_mu_);
  std::vector<DocumentInfo> out;
  for (const auto& [id, entry] : catalog_.docs()) {
    if (ingesting_.count(id)) continue;
    auto it = chunks.find(id);
    out.push_back({id, entry.name, entry.tokens, it == chunks.end() ? 0 : it->second});
  }
  return out;
}

Status RuntimeEngine::DeleteDocument(uint64_t id) {
  std::lock_guard<std::mutex> lock(catalog_mu_);
  if (ingesting_.count(id)) {
    return FailedPreconditionError("document " + std::to_string(id) +
                                   " is being ingested; delete it after its ingest returned");
  }
  const bool known = catalog_.docs().count(id) > 0;
  ASSIGN_OR_RETURN(const int64_t removed, runtime_->bank()->DeleteDocument(id));
  if (!known && removed == 0) {
    return NotFoundError("no document " + std::to_string(id));
  }
  catalog_.Erase(id);
  return catalog_.Save();
}

EngineStats RuntimeEngine::Stats() {
  EngineStats s;
  {
    std::lock_guard<std::mutex> lock(catalog_mu_);
    if (!closed_) {
      const memory::BankStats b = runtime_->bank()->Stats();
      s.bank_chunks = b.n_chunks;
      s.bank_documents = b.n_documents;
      s.bank_tokens = b.n_tokens;
      s.bank_bytes = b.stored_bytes;
    }
  }
  s.queue_waiting = queue_.waiting();
  s.queue_running = queue_.busy() ? 1 : 0;
  return s;
}

}  // namespace muninn::tools::server
