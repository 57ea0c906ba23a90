// Private to tools/: the Engine behind `muninn serve` — a Runtime (model, embedder, memory bank,
// long-context sessions). Document ids and names live in the bank (MemoryBank::BeginDocument).
//
// Model work (generation, ingest, summaries, embeddings) takes turns through a bounded
// ModelQueue: the model, its sessions, the embedder and the backend they share are not
// thread-safe. The bank is: listing and deleting documents do not wait for the model, and a
// delete runs while an ask or an ingest of another document generates. Document ids come from the
// bank, which records a document as partial before its first chunk and as complete after the
// last; a document being ingested is not listed and cannot be deleted (FailedPrecondition) until
// its ingest returned.
//
// Thread-safe.
#pragma once

#include <atomic>
#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <set>
#include <string>
#include <utility>

#include "document_catalog.h"
#include "runtime.h"
#include "server_engine.h"
#include "server_queue.h"

namespace muninn::tools::server {

struct RuntimeEngineOptions {
  std::string bank_dir;         // the Runtime's bank directory
  int64_t max_waiting = 8;      // requests that may wait for the model
  size_t max_sessions = 8;      // cached sessions (one per retrieval setting in use)
  // Ingest runs in slices of this many τ-token windows and checks for RequestStop between two
  // (each window is processed on its own, so the stored chunks do not depend on this).
  int64_t ingest_slice_windows = 64;
  // Called after each ingested slice with (document id, tokens done); may be empty. Lets tests
  // stop an ingest at a known point.
  std::function<void(uint64_t, int64_t)> on_ingest_slice;
};

class RuntimeEngine final : public Engine {
 public:
  static StatusOr<std::unique_ptr<RuntimeEngine>> Create(std::unique_ptr<Runtime> runtime,
                                                         const RuntimeEngineOptions& options);
  // Closes the bank cleanly (after every request ended: the server is shut down first).
  ~RuntimeEngine() override;

  std::string model_id() const override { return model_id_; }
  std::string embedding_model_id() const override { return embedding_model_id_; }
  StatusOr<GenerationOutput> Chat(std::span<const model::ChatMessage> messages,
                                  const GenerationParams& params,
                                  const TextSink& on_text) override;
  StatusOr<GenerationOutput> Complete(std::string_view prompt, const GenerationParams& params,
                                      const TextSink& on_text) override;
  StatusOr<AskOutput> Ask(std::string_view question, const GenerationParams& params,
                          bool include_chunk_text, const TextSink& on_text) override;
  StatusOr<SummaryOutput> Summarize(std::string_view name, std::string_view text,
                                    std::optional<uint64_t> document_id, int64_t max_tokens,
                                    const TextSink& on_text) override;
  StatusOr<EmbeddingOutput> Embed(std::span<const std::string> texts) override;
  StatusOr<IngestOutput> Ingest(std::string_view name, std::string_view text) override;
  StatusOr<std::vector<DocumentInfo>> ListDocuments() override;
  Status DeleteDocument(uint64_t id) override;
  EngineStats Stats() override;
  void RequestStop() override;

  // Persists the index and counters and closes the bank; later bank calls fail. Idempotent.
  Status Close();

 private:
  RuntimeEngine(std::unique_ptr<Runtime> runtime, const RuntimeEngineOptions& options);
  // IngestText of `text` as document `id`, stopping between slices after RequestStop.
  StatusOr<retriever::IngestStats> IngestInSlices(retriever::LongContextSession& session,
                                                  uint64_t id, std::string_view text);
  // A queue lease for model work; Unavailable once RequestStop was called.
  StatusOr<ModelQueue::Lease> AcquireModel();
  // A session with memory on/off and the given top-k (-1: configured). Caller holds the lease.
  StatusOr<retriever::LongContextSession*> SessionFor(bool use_memory, int64_t top_k);
  // Records a new partial document in the bank and returns its id (released by FinishDocument).
  StatusOr<uint64_t> ReserveId(const std::string& name);
  // Marks the document complete under `name` (when `complete`), or leaves it partial when some of
  // its chunks are stored, or drops its record when none is; releases the reservation.
  Status FinishDocument(uint64_t id, bool complete, const std::string& name, int64_t tokens);

  std::unique_ptr<Runtime> runtime_;
  RuntimeEngineOptions options_;
  std::string model_id_;
  std::string embedding_model_id_;
  ModelQueue queue_;
  // Guarded by a queue lease.
  std::map<std::pair<bool, int64_t>, std::unique_ptr<retriever::LongContextSession>> sessions_;

  std::atomic<bool> stop_requested_{false};
  std::mutex catalog_mu_;
  std::set<uint64_t> ingesting_;
  bool closed_ = false;
};

}  // namespace muninn::tools::server
