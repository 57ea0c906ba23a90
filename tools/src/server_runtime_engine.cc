#include "server_runtime_engine.h"

#include <algorithm>
#include <chrono>
#include <filesystem>

#include "chat_generation.h"
#include "document_catalog.h"
#include "muninn/tools/summarizer.h"

namespace muninn::tools::server {
namespace {

std::string FinishReason(const std::string& stop_reason) {
  return stop_reason == "max_tokens" ? "length" : "stop";
}

// `stop` (may be null) ends the generation at the next token once set (RequestStop).
ChatTurnOptions TurnOptions(const GenerationParams& p, const std::atomic<bool>* stop) {
  ChatTurnOptions o;
  o.generate.max_tokens = p.max_tokens;
  if (stop != nullptr) o.generate.should_stop = [stop] { return stop->load(); };
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

RuntimeEngine::RuntimeEngine(std::unique_ptr<Runtime> runtime, const RuntimeEngineOptions& options)
    : runtime_(std::move(runtime)), options_(options), queue_(options.max_waiting) {}

StatusOr<std::unique_ptr<RuntimeEngine>> RuntimeEngine::Create(
    std::unique_ptr<Runtime> runtime, const RuntimeEngineOptions& options) {
  if (options.bank_dir.empty()) {
    return InvalidArgumentError("the server needs a bank directory (--bank DIR)");
  }
  if (options.max_waiting < 0) return InvalidArgumentError("max_waiting must be >= 0");
  if (options.ingest_slice_windows < 1) {
    return InvalidArgumentError("ingest_slice_windows must be >= 1");
  }
  if (runtime->bank() == nullptr) {
    return FailedPreconditionError("the runtime has no memory bank");
  }
  auto engine = std::unique_ptr<RuntimeEngine>(new RuntimeEngine(std::move(runtime), options));
  const AppConfig& config = engine->runtime_->config();
  engine->model_id_ = std::filesystem::path(config.model_path).stem().string();
  engine->embedding_model_id_ =
      config.embedder == "hidden"
          ? engine->model_id_ + "-hidden-states"
          : std::filesystem::path(config.embedder).filename().string();
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

StatusOr<ModelQueue::Lease> RuntimeEngine::AcquireModel() {
  if (stop_requested_.load()) return UnavailableError("the server is shutting down");
  ASSIGN_OR_RETURN(ModelQueue::Lease lease, queue_.Acquire());
  // A request that waited in the queue while the drain deadline passed does not start.
  if (stop_requested_.load()) return UnavailableError("the server is shutting down");
  return lease;
}

void RuntimeEngine::RequestStop() { stop_requested_.store(true); }

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

StatusOr<uint64_t> RuntimeEngine::ReserveId(const std::string& name) {
  std::lock_guard<std::mutex> lock(catalog_mu_);
  if (closed_) return UnavailableError("the server is shutting down");
  ASSIGN_OR_RETURN(const uint64_t id, runtime_->bank()->BeginDocument(name));
  ingesting_.insert(id);
  return id;
}

Status RuntimeEngine::FinishDocument(uint64_t id, bool complete, const std::string& name,
                                     int64_t tokens) {
  std::lock_guard<std::mutex> lock(catalog_mu_);
  ingesting_.erase(id);
  if (closed_) return Status::Ok();  // the record stays partial
  memory::MemoryBank* bank = runtime_->bank();
  if (complete) {
    return bank->PutDocument({id, name, tokens, memory::DocumentState::kComplete});
  }
  // A failed ingest keeps what it stored, listed as "NAME (partial)"; one that stored nothing
  // leaves nothing behind.
  ASSIGN_OR_RETURN(memory::DocumentRecord r, bank->GetDocument(id));
  if (r.n_chunks == 0) return bank->DeleteDocument(id).status();
  return bank->PutDocument({id, name, tokens, memory::DocumentState::kPartial});
}

StatusOr<GenerationOutput> RuntimeEngine::Chat(std::span<const model::ChatMessage> messages,
                                               const GenerationParams& params,
                                               const TextSink& on_text) {
  ASSIGN_OR_RETURN(auto lease, AcquireModel());
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
                                       TurnOptions(params, &stop_requested_), on_text));
  return ToOutput(r, start);
}

StatusOr<GenerationOutput> RuntimeEngine::Complete(std::string_view prompt,
                                                   const GenerationParams& params,
                                                   const TextSink& on_text) {
  ASSIGN_OR_RETURN(auto lease, AcquireModel());
  const auto start = Clock::now();
  ASSIGN_OR_RETURN(auto* session, SessionFor(params.use_memory, params.top_k_chunks));
  ASSIGN_OR_RETURN(auto r, RunCompletion(*session, prompt, TurnOptions(params, &stop_requested_), on_text));
  return ToOutput(r, start);
}

StatusOr<AskOutput> RuntimeEngine::Ask(std::string_view question, const GenerationParams& params,
                                       bool include_chunk_text, const TextSink& on_text) {
  ChatTurnResult r;
  Clock::time_point start;
  {
    ASSIGN_OR_RETURN(auto lease, AcquireModel());
    start = Clock::now();
    ASSIGN_OR_RETURN(auto* session, SessionFor(true, params.top_k_chunks));
    const model::ChatMessage msg{"user", std::string(question)};
    ASSIGN_OR_RETURN(r, RunChatTurn(*session, runtime_->chat(),
                                    std::span<const model::ChatMessage>(&msg, 1), question,
                                    TurnOptions(params, &stop_requested_), on_text));
  }
  AskOutput out;
  out.generation = ToOutput(r, start);
  std::lock_guard<std::mutex> lock(catalog_mu_);
  for (const memory::SearchHit& h : r.hits) {
    ChunkRef c;
    c.chunk_id = h.id;
    c.document_id = h.doc_id;
    c.document = DocumentName(*runtime_->bank(), h.doc_id);
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
    ASSIGN_OR_RETURN(o.doc_id, ReserveId(std::string(name)));
  }
  const std::string doc_name =
      name.empty() ? "summarize-" + std::to_string(o.doc_id) : std::string(name);
  StatusOr<SummaryResult> result = UnavailableError("not run");
  {
    auto lease = AcquireModel();
    if (!lease.ok()) {
      if (!document_id) FinishDocument(o.doc_id, false, doc_name, 0).IgnoreError();
      return lease.status();
    }
    auto session = SessionFor(true, -1);
    result = session.ok() ? tools::Summarize(**session, runtime_->chat(), text, o, {}, on_text)
                          : StatusOr<SummaryResult>(session.status());
  }
  if (!document_id) {
    // A failed summary may still have stored chunks: they stay listed as "NAME (partial)".
    RETURN_IF_ERROR(
        FinishDocument(o.doc_id, result.ok(), doc_name, result.ok() ? result->n_tokens : 0));
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
  ASSIGN_OR_RETURN(auto lease, AcquireModel());
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

StatusOr<retriever::IngestStats> RuntimeEngine::IngestInSlices(
    retriever::LongContextSession& session, uint64_t id, std::string_view text) {
  // Ingest is the one unbounded piece of model work: it runs in slices of whole groups of τ-token
  // windows (each window is processed on its own, so the chunks equal one IngestText call) and
  // stops between two slices once RequestStop was called. What was appended stays, partial.
  const std::vector<model::TokenId> ids =
      runtime_->tokenizer().Encode(text, /*add_special=*/false, /*parse_special=*/false);
  const int64_t n = static_cast<int64_t>(ids.size());
  const int64_t slice =
      std::max<int64_t>(1, session.options().chunk_tokens) * options_.ingest_slice_windows;
  retriever::IngestStats total;
  for (int64_t begin = 0; begin < n; begin += slice) {
    if (stop_requested_.load()) {
      return UnavailableError("the server is shutting down: the ingest stopped after " +
                              std::to_string(begin) + " of " + std::to_string(n) +
                              " tokens; what was stored is listed as a partial document");
    }
    const int64_t end = std::min(n, begin + slice);
    ASSIGN_OR_RETURN(retriever::IngestStats part,
                     session.IngestTokens(id, std::span<const model::TokenId>(ids).subspan(
                                                  static_cast<size_t>(begin),
                                                  static_cast<size_t>(end - begin)),
                                          begin));
    total.n_tokens += part.n_tokens;
    total.n_chunks += part.n_chunks;
    total.chunk_ids.insert(total.chunk_ids.end(), part.chunk_ids.begin(), part.chunk_ids.end());
    if (options_.on_ingest_slice) options_.on_ingest_slice(id, end);
  }
  return total;
}

StatusOr<IngestOutput> RuntimeEngine::Ingest(std::string_view name, std::string_view text) {
  ASSIGN_OR_RETURN(const uint64_t id, ReserveId(std::string(name)));
  StatusOr<retriever::IngestStats> stats = UnavailableError("not run");
  {
    auto lease = AcquireModel();
    if (!lease.ok()) {
      FinishDocument(id, false, std::string(name), 0).IgnoreError();
      return lease.status();
    }
    // The memory-on session writes through the bank; its options give τ and the memory layer.
    auto session = SessionFor(true, -1);
    stats = session.ok() ? IngestInSlices(**session, id, text)
                         : StatusOr<retriever::IngestStats>(session.status());
  }
  const std::string doc_name = name.empty() ? "document-" + std::to_string(id) : std::string(name);
  if (!stats.ok()) {
    RETURN_IF_ERROR(FinishDocument(id, false, doc_name, 0));
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
  std::lock_guard<std::mutex> lock(catalog_mu_);
  if (closed_) return UnavailableError("the server is shutting down");
  std::vector<DocumentInfo> out;
  for (const memory::DocumentRecord& r : runtime_->bank()->ListDocuments()) {
    if (ingesting_.count(r.id)) continue;
    out.push_back({r.id, DisplayName(r), r.tokens, r.n_chunks});
  }
  return out;
}

Status RuntimeEngine::DeleteDocument(uint64_t id) {
  std::lock_guard<std::mutex> lock(catalog_mu_);
  if (closed_) return UnavailableError("the server is shutting down");
  if (ingesting_.count(id)) {
    return FailedPreconditionError("document " + std::to_string(id) +
                                   " is being ingested; delete it after its ingest returned");
  }
  RETURN_IF_ERROR(runtime_->bank()->GetDocument(id).status());
  return runtime_->bank()->DeleteDocument(id).status();
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
