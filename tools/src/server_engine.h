// Private to tools/: what the HTTP handlers ask of the model and the memory bank.
//
// The handlers (server_handlers.h) depend only on this interface, so they are tested with a fake
// engine and no model; RuntimeEngine (server_runtime_engine.h) is the real one over a Runtime.
//
// Thread safety: an Engine is called from many worker threads at once and must be thread-safe.
// Implementations serialise what is not (the model, its sessions and the embedder share one
// backend) and return Unavailable, without waiting, when too many requests already wait for the
// model (the HTTP layer turns that into 503 + Retry-After).
#pragma once

#include <cstdint>
#include <functional>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "muninn/core/status.h"
#include "muninn/model/chat_template.h"

namespace muninn::tools::server {

// Sampling and length of one generation; every field is range-checked by the handlers before it
// gets here (see server_validation.h for the ranges).
struct GenerationParams {
  int64_t max_tokens = 256;
  float temperature = 0.0f;  // 0 = greedy
  float top_p = 1.0f;
  int32_t top_k = 0;         // 0 = off
  float min_p = 0.0f;
  float repeat_penalty = 1.0f;
  uint64_t seed = 0;
  std::vector<std::string> stop;  // stop strings (the text ends before them)
  // Retrieval from the memory bank for this generation (chat/completions: off unless asked;
  // ask: on). top_k_chunks < 0 keeps the configured top-k.
  bool use_memory = false;
  int64_t top_k_chunks = -1;
  std::vector<uint64_t> document_ids;  // restrict retrieval to these documents (empty: all)
};

struct GenerationOutput {
  std::string text;
  int64_t prompt_tokens = 0;
  int64_t completion_tokens = 0;
  std::string finish_reason;  // OpenAI's: "stop" or "length"
  double model_seconds = 0.0; // time spent on the model, queue wait excluded (0 = unknown)
};

// A chunk of the bank that a generation attended to.
struct ChunkRef {
  uint64_t chunk_id = 0;
  uint64_t document_id = 0;
  std::string document;   // the document's name
  int64_t token_offset = 0;
  int64_t tokens = 0;
  float score = 0.0f;
  std::string text;       // only when asked for
};

struct AskOutput {
  GenerationOutput generation;
  std::vector<ChunkRef> chunks;  // chronological
};

struct DocumentInfo {
  uint64_t id = 0;
  std::string name;
  int64_t tokens = 0;
  int64_t chunks = 0;
};

struct IngestOutput {
  uint64_t id = 0;
  int64_t tokens = 0;
  int64_t chunks = 0;
};

struct SummaryOutput {
  std::string summary;
  uint64_t document_id = 0;
  int64_t tokens = 0;    // document tokens
  int64_t sections = 0;
  int64_t completion_tokens = 0;
};

struct EmbeddingOutput {
  std::vector<std::vector<float>> vectors;  // [n_texts][dim], L2-normalised
  int64_t prompt_tokens = 0;
};

struct EngineStats {
  int64_t bank_chunks = 0;
  int64_t bank_documents = 0;
  int64_t bank_tokens = 0;
  int64_t bank_bytes = 0;
  int64_t queue_waiting = 0;  // requests waiting for the model
  int64_t queue_running = 0;  // 0 or 1
};

// Receives generated text as it becomes certain (complete UTF-8, never part of a stop string).
using TextSink = std::function<void(std::string_view piece)>;

class Engine {
 public:
  virtual ~Engine() = default;

  // The model name /v1/models reports and responses echo.
  virtual std::string model_id() const = 0;
  virtual std::string embedding_model_id() const = 0;

  // ---- generation (serialised on the model) ----
  virtual StatusOr<GenerationOutput> Chat(std::span<const model::ChatMessage> messages,
                                          const GenerationParams& params,
                                          const TextSink& on_text) = 0;
  virtual StatusOr<GenerationOutput> Complete(std::string_view prompt,
                                              const GenerationParams& params,
                                              const TextSink& on_text) = 0;
  // Answers `question` from the bank: retrieval on, the chunks used come back.
  virtual StatusOr<AskOutput> Ask(std::string_view question, const GenerationParams& params,
                                  bool include_chunk_text, const TextSink& on_text) = 0;
  // Summarizes `text` (stored as a new document named `name`) or, when `document_id` is set, a
  // document already in the bank.
  virtual StatusOr<SummaryOutput> Summarize(std::string_view name, std::string_view text,
                                            std::optional<uint64_t> document_id,
                                            int64_t max_tokens, const TextSink& on_text) = 0;
  virtual StatusOr<EmbeddingOutput> Embed(std::span<const std::string> texts) = 0;

  // ---- memory bank ----
  // Stores a document; returns once its chunks are durable in the bank.
  virtual StatusOr<IngestOutput> Ingest(std::string_view name, std::string_view text) = 0;
  virtual StatusOr<std::vector<DocumentInfo>> ListDocuments() = 0;
  // NotFound for an unknown id; FailedPrecondition while the document is being ingested.
  virtual Status DeleteDocument(uint64_t id) = 0;

  virtual EngineStats Stats() = 0;

  // Shutdown past its drain deadline: model work in progress stops at its next safe point (an
  // ingest between two bank appends, leaving the document listed as "NAME (partial)"; a chat,
  // completion or ask before its next token), and new model work is refused with Unavailable.
  // A summary in progress runs to its end. Idempotent; may be called from any thread.
  virtual void RequestStop() = 0;
};

}  // namespace muninn::tools::server
