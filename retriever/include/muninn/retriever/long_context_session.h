// LongContextSession: a model reading, remembering and answering over text far longer than its
// window (MemLong, specs/memlong.md), on top of a MemoryBank and a Retriever.
//
// Write path (Ingest): the document is tokenized and cut into windows of τ = chunk_tokens tokens.
// Each window runs through the model independently (no local cache, §8) only as far as the memory
// layer m — its pre-RoPE K/V at layer m do not depend on retrieved memory, so no retrieval and no
// logits are needed — and is appended to the bank as one chunk (K/V, embedding of its own text,
// tokens, text, position). Memory use is O(τ) whatever the document length.
//
// Read path (Begin / Step / Generate): a prompt is the local window. Before it runs, the
// retriever embeds the query text, takes the top-k earlier chunks (the caller's filter keeps a
// window from retrieving itself or the future: read before write), sorts them chronologically and
// every retrieval layer attends jointly over [memory ; local] with one softmax. Memory keys sit at
// RoPE position 0 (kZero, MemLong's "Zero" mode) or, as an option to compare, at the positions
// just before the window (kBeforeWindow: memory token i of M at position i - M). Generation that
// fills the local window moves its oldest half into the bank (as chunks of the session's overflow
// document, embedded from exactly those tokens' text, specs/memlong.md D5), re-retrieves, and
// re-runs the kept half at positions from 0; a token is never in both memory and the window.
//
// kNN-LM mode (kModeKnnLm, knn_lm.h): ingest runs every chunk through the whole stack once (no
// logits) and stores each token's final normed hidden state (the output head's input) with the
// token that follows it (-1 after the last token of an ingest call). Before a window runs, the
// embedder picks knn.chunks chunks under the caller's filter and their states form the datastore;
// every position's next-token distribution becomes (1 − λ)·p_LM + λ·p_kNN over its knn.k nearest
// states by squared L2 (TokenLogProbs, and logits() after Begin/Step, as log-probabilities).
//
// Context memory (modes & kModeContext, specs/memory_modes.md §2): ingest stores every
// context layer's own pre-RoPE K/V per chunk (one pass up to the highest context layer), and
// Begin / TokenLogProbs / overflow give each context layer [sinks ; its chosen chunks] of its own
// K/V, placed as ContextMemoryOptions::position says (context_memory.h).
//
// On a device backend (e.g. CUDA) the memory read by the layers is copied there once per retrieval
// (model::MemoryPlacement: reused device buffers) and whatever the session reads back — captured
// K/V, final states, hidden states, logits — comes to the host through Backend::Transfer; on the
// CPU backend nothing is copied.
//
// Thread-compatible: one call at a time (the model, its cache and the embedder are stateful).
#pragma once

#include <cstdint>
#include <functional>
#include <memory>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "muninn/core/status.h"
#include "muninn/memory/memory_bank.h"
#include "muninn/model/kv_cache.h"
#include "muninn/model/memory_placement.h"
#include "muninn/model/model.h"
#include "muninn/model/sampler.h"
#include "muninn/model/tokenizer.h"
#include "muninn/retriever/embedder.h"
#include "muninn/retriever/knn_lm.h"
#include "muninn/retriever/retriever.h"

namespace muninn::retriever {

class ContextMemory;  // context_memory.h

// Memory modes (specs/memory_modes.md): how retrieved chunks reach the model. A bit set: modes
// combine (e.g. re-read text for answers plus context memory for perplexity).
enum MemoryMode : uint32_t {
  kModeMemLong = 1u << 0,  // one memory layer's K/V read by the retrieval layers (MemLong; the
                           // upper layers must be trained to read it)
  kModeContext = 1u << 1,  // every context layer reads its own layer's K/V (InfLLM): sinks,
                           // constant distance, one softmax over [sinks ; memory ; local]
  kModeReread = 1u << 2,   // the retrieved chunks' text is put back in the prompt (RAG); the
                           // session retrieves (RetrieveExcerpts), callers build the prompt
  kModeKnnLm = 1u << 3,    // kNN-LM: next-token distribution mixed with the nearest stored states
};
inline constexpr uint32_t kAllMemoryModes = kModeMemLong | kModeContext | kModeReread | kModeKnnLm;
// "memlong+context", "none" for 0.
std::string MemoryModesName(uint32_t modes);
// Parses "reread", "context,knn", "reread+context", "none" (names: memlong, context, reread,
// knn). InvalidArgument naming the bad word.
Status ParseMemoryModes(std::string_view text, uint32_t* out);

// Where context-memory keys sit relative to the queries.
enum class ContextPosition : uint8_t {
  kConstant,    // every memory key at one distance (the local window length) from every query:
                // memory scores use the pre-RoPE query rotated at that one position (InfLLM)
  kContiguous,  // memory token i of M at position i - M, just before the window (exact when the
                // memory is the text right before the window)
  kZero,        // every memory key at RoPE position 0 (MemLong)
};
const char* ContextPositionName(ContextPosition p);
bool ParseContextPosition(std::string_view name, ContextPosition* out);

// How context memory picks its chunks.
enum class ChunkSelection : uint8_t {
  kEmbedder,            // the text embedder's top-k (the same chunks for every layer)
  kRepresentativeKeys,  // per layer: chunks whose representative keys score highest (InfLLM)
};
const char* ChunkSelectionName(ChunkSelection s);
bool ParseChunkSelection(std::string_view name, ChunkSelection* out);

struct ContextMemoryOptions {
  std::vector<int32_t> layers;      // layers that store and read their own K/V; empty = all
  int64_t sink_tokens = 128;        // the document's first tokens, always in memory
  ContextPosition position = ContextPosition::kConstant;
  ChunkSelection selection = ChunkSelection::kEmbedder;
  int64_t representative_keys = 4;  // per chunk and layer (kRepresentativeKeys)
  int64_t top_k = 8;                // chunks per window
  // Ingest runs each group of up to 8 chunks (8·τ tokens of one call) as one pass, so a chunk's
  // K/V see the group's earlier tokens (InfLLM encodes memory in context). false: every chunk
  // runs alone from position 0 (MemLong §8). Same cost either way.
  bool contextual_ingest = false;
  // The layers this resolves to for a model of n_layer layers (ascending).
  std::vector<int32_t> ResolvedLayers(int32_t n_layer) const;
};

// Where a text completion's prompt gets the excerpts: before all of it, or before its last line
// (the question that ends a long document), so the excerpt sits next to what asks for it. Chat
// prompts carry them in the system message, just before the user's question, either way.
enum class ExcerptPlacement : uint8_t { kStart, kBeforeLastLine };
const char* ExcerptPlacementName(ExcerptPlacement p);
bool ParseExcerptPlacement(std::string_view name, ExcerptPlacement* out);

struct RereadOptions {
  int64_t top_k = 4;            // chunks retrieved per question
  int64_t budget_tokens = 512;  // most excerpt tokens put in the prompt (best chunks first;
                                // never more than the local window)
  // How the chunks are found: embedder, BM25 words, or both in turn (retriever.h).
  RetrievalMethod retrieval = RetrievalMethod::kHybrid;
  // Answers read only the excerpts' sentences most like the question (excerpt_focus.h): those
  // whose similarity is within `focus_margin` of the best sentence's, each with `focus`
  // sentences on either side; focus -1 reads whole chunks. Perplexity always reads whole chunks.
  int64_t focus = 0;
  float focus_margin = 0.2f;
  ExcerptPlacement placement = ExcerptPlacement::kBeforeLastLine;
};

struct KnnLmOptions {
  int64_t k = 16;             // neighbours per position
  float lambda = 0.25f;       // weight of the kNN distribution
  float temperature = 1.0f;   // p_kNN ∝ exp(-distance / temperature)
  int64_t chunks = 32;        // chunks whose token states are searched (by the text embedder)
  // Ingest: up to this many tokens before each chunk (of the same ingest call) run first, so the
  // stored states see context as the queries' states do; 0 = each chunk alone (one forward for
  // K/V and states). > 0 costs a second forward per chunk when the bank also holds K/V.
  int64_t context_tokens = 0;
};

enum class MemoryPosition : uint8_t {
  kZero,          // every memory token at RoPE position 0 (MemLong default)
  kBeforeWindow,  // memory token i of M at position i - M, i.e. just before the window's first token
};
const char* MemoryPositionName(MemoryPosition p);
bool ParseMemoryPosition(std::string_view name, MemoryPosition* out);

struct LongContextOptions {
  // Which memory modes run (MemoryMode bits). use_memory = false turns them all off.
  uint32_t modes = kModeMemLong;
  // ---- MemLong mode ----
  int32_t memory_layer = 0;               // m: its pre-RoPE K/V are stored per chunk
  std::vector<int32_t> retrieval_layers;  // layers attending to [memory ; local]; all >= m
  int64_t chunk_tokens = 128;             // τ
  int64_t top_k = 8;                      // chunks retrieved per window
  int64_t local_window = 2048;            // positions in the local KV cache
  MemoryPosition memory_position = MemoryPosition::kZero;
  // ---- other modes ----
  ContextMemoryOptions context;
  RereadOptions reread;
  KnnLmOptions knn;
  bool use_memory = true;                 // false: a plain sliding window (for comparisons)
  DType kv_cache_dtype = DType::kF16;
  // Document id under which generation overflow is stored.
  memory::DocumentId overflow_doc_id = ~memory::DocumentId{0};
  // Checks ranges against the model's shape.
  Status Validate(const model::ModelConfig& config) const;
  bool has(MemoryMode m) const { return use_memory && (modes & m) != 0; }
  // Layers whose K/V the bank must hold for the modes (ascending; empty: none).
  std::vector<int32_t> KvLayers(const model::ModelConfig& config) const;
  // Width of the per-token states the bank must hold (n_embd with kNN-LM, else 0).
  int64_t StateDim(const model::ModelConfig& config) const;
};

// A retrieved chunk's text, for the re-read mode.
struct Excerpt {
  memory::SearchHit hit;
  std::string text;
  std::vector<model::TokenId> tokens;  // the chunk's tokens as stored
};

struct IngestStats {
  int64_t n_tokens = 0;
  int64_t n_chunks = 0;
  std::vector<memory::ChunkId> chunk_ids;
};

// Called after each stored window with (tokens done, tokens total).
using IngestProgress = std::function<void(int64_t done, int64_t total)>;

struct GenerateOptions {
  int64_t max_tokens = 256;
  std::vector<std::string> stop_strings;  // generation ends before any of these
  bool stop_at_eos = true;
  // Asked before each new token; when it returns true generation ends there with stop_reason
  // "cancelled" (the server's shutdown deadline). May be empty.
  std::function<bool()> should_stop;
};

struct GenerateResult {
  std::string text;
  std::vector<model::TokenId> tokens;
  std::string stop_reason;  // "eos", "stop_string", "max_tokens", "cancelled"
};

// Receives each complete piece of UTF-8 text as it is generated.
using TextCallback = std::function<void(std::string_view piece)>;

class LongContextSession {
 public:
  ~LongContextSession();
  // Nothing is owned; all must outlive the session. `bank` may be null only with
  // use_memory = false. The bank's K/V shape must match the model's memory layer.
  static StatusOr<std::unique_ptr<LongContextSession>> Create(model::Model* model,
                                                              const model::Tokenizer* tokenizer,
                                                              memory::MemoryBank* bank,
                                                              Embedder* embedder,
                                                              const LongContextOptions& options);

  // ---- write path ----
  StatusOr<IngestStats> IngestText(memory::DocumentId doc_id, std::string_view text,
                                   const IngestProgress& progress = {});
  // `tokens` start at token offset `first_position` of document `doc_id`.
  StatusOr<IngestStats> IngestTokens(memory::DocumentId doc_id,
                                     std::span<const model::TokenId> tokens,
                                     int64_t first_position, const IngestProgress& progress = {});

  // ---- read path ----
  // Starts a new local window holding `prompt`: retrieves memory for `query_text` under `filter`
  // (nothing when use_memory is off or the bank is empty) and runs the prompt. Afterwards
  // logits() is the next-token distribution. ResourceExhausted when the prompt does not fit the
  // local window.
  Status Begin(std::span<const model::TokenId> prompt, std::string_view query_text,
               const memory::SearchFilter& filter = {});
  // Appends one token to the window (overflowing into memory when full) and runs it.
  Status Step(model::TokenId id);
  // Samples up to max_tokens tokens after Begin, streaming text to `on_text`.
  StatusOr<GenerateResult> Generate(const GenerateOptions& options, model::Sampler& sampler,
                                    const TextCallback& on_text = {});

  // Re-read mode: the chunks for `query_text` under `filter` (reread.top_k by score, then as many
  // of the best as fit reread.budget_tokens), returned in document order (document id, then
  // position). Empty when the bank is empty or memory is off.
  StatusOr<std::vector<Excerpt>> RetrieveExcerpts(std::string_view query_text,
                                                  const memory::SearchFilter& filter = {});
  // Excerpts as an answer reads them: each joined with its neighbouring chunks in the bank (so a
  // sentence cut by a chunk boundary reads whole), then cut to the sentences most like `question`
  // by reread.focus and focus_margin, excerpts left with none dropped (excerpt_focus.h).
  // Unchanged when focus < 0, there are no excerpts, or the session has no retriever.
  StatusOr<std::vector<Excerpt>> FocusExcerpts(std::string_view question,
                                               std::vector<Excerpt> excerpts);

  // Scores `window` as one local window (retrieving for `query_text` under `filter` first):
  // result[i] = log p(window[i + 1] | prefix, window[0..i], memory), i in [0, size - 1). `prefix`
  // (e.g. re-read excerpts) is run first and not scored; prefix + window must fit the local
  // window. The window is run in pieces so the logits held at once stay small. Leaves the window
  // in the session like Begin.
  StatusOr<std::vector<float>> TokenLogProbs(std::span<const model::TokenId> window,
                                             std::string_view query_text,
                                             const memory::SearchFilter& filter = {},
                                             std::span<const model::TokenId> prefix = {});

  // Last-position logits of the most recent Begin/Step ([n_vocab]).
  std::span<const float> logits() const { return logits_; }
  // Chunks the current window attends to (chronological). Its K/V are the host tensors the bank
  // gave (on a device backend, MemLong's before_window keys are rotated only in the device copy).
  const Retrieved& retrieved() const { return retrieved_; }
  // Tokens now in the local window.
  std::span<const model::TokenId> window_tokens() const { return cache_->tokens(); }
  const LongContextOptions& options() const { return options_; }
  model::Model* model() const { return model_; }
  const model::Tokenizer* tokenizer() const { return tokenizer_; }
  memory::MemoryBank* bank() const { return bank_; }
  // kNN-LM mode: the token states searched for the current window (empty otherwise).
  const KnnDatastore& knn_datastore() const { return knn_store_; }

 private:
  LongContextSession(model::Model* model, const model::Tokenizer* tokenizer,
                     memory::MemoryBank* bank, Embedder* embedder, const LongContextOptions& o);
  // Retrieve, then RetrieveContext for `window`, then memory_ onto the model's backend: what
  // every new window (Begin, TokenLogProbs, Overflow) does with filter_ and query_text_ set.
  Status PrepareMemory(std::span<const model::TokenId> window);
  // Retrieves for `query_text` and prepares memory_ (rotated for kBeforeWindow).
  Status Retrieve(std::string_view query_text, const memory::SearchFilter& filter);
  // Runs `ids` through the model on the current cache and memory; stores last logits.
  Status Run(std::span<const model::TokenId> ids);
  // Moves the oldest half of the window into the bank and re-runs the rest.
  Status Overflow();
  // ---- context memory (kModeContext) ----
  bool context_mode() const { return context_ != nullptr; }
  // Layers whose K/V each chunk of the bank holds, ascending.
  std::vector<int32_t> BankKvLayers() const;
  // Builds memory_ for a window of `window` tokens from context memory (after filter_ and
  // query_text_ are set).
  Status RetrieveContext(std::span<const model::TokenId> window);

  model::Model* model_;
  const model::Tokenizer* tokenizer_;
  memory::MemoryBank* bank_;
  Embedder* embedder_;
  LongContextOptions options_;
  std::unique_ptr<model::KvCache> cache_;
  std::unique_ptr<Retriever> retriever_;
  std::unique_ptr<ContextMemory> context_;  // kModeContext with use_memory
  Retrieved retrieved_;
  model::MemoryKV memory_;  // on the model's backend once PrepareMemory has run
  model::MemoryPlacement placement_;  // device copies of memory_ (unused on the CPU)
  memory::SearchFilter filter_;
  std::string query_text_;
  std::vector<float> logits_;
  int64_t overflow_position_ = 0;  // token offset of the next overflow chunk

  // ---- kNN-LM mode (knn_lm.h), kept apart from the K/V modes ----
  // Two-stage search: the text embedder picks knn.chunks chunks for the query under the filter
  // (so tokens still in the window are never their own neighbours), their token states become
  // knn_store_ — bounded RAM whatever the document length. Empty datastore when the mode is off.
  Status RetrieveKnn(std::string_view query_text, const memory::SearchFilter& filter);
  // Rewrites logits_ (the last position) into the mixed distribution, `state` [n_embd] its final
  // normed hidden state. No-op when the mode is off or the datastore is empty.
  Status MixKnnIntoLogits(std::span<const float> state);
  // log p of `next[i]` for rows i of `states` [n, n_embd], mixed in place into `logprobs` [n].
  Status MixKnnIntoLogProbs(std::span<const float> states, std::span<const model::TokenId> next,
                            std::span<float> logprobs);
  bool knn_on() const { return options_.has(kModeKnnLm) && !knn_store_.empty(); }
  KnnDatastore knn_store_;
};

}  // namespace muninn::retriever
