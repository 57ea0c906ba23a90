// ContextMemory: own-layer context memory (InfLLM-style, specs/memory_modes.md §2) for a
// LongContextSession.
//
// Every context layer stores its own pre-RoPE K/V of each ingested chunk (one model pass per τ
// window captures all of them, up to the highest context layer) and reads back its own K/V: one
// softmax over [sinks ; retrieved chunks ; local window] (Backend::Attention with a memory block).
//
// Bank layout (format 2): a chunk's K (and V) is [n_kv_layers · n_head_kv, T, head_dim],
// layer-major in the order of the bank's kv_layers (ascending), which include the context layers
// (and e.g. MemLong's memory layer when both modes run). Ingest fills every bank layer.
//
// Options: ContextMemoryOptions (long_context_session.h), checked by LongContextOptions::Validate.
//
// Positions (ContextPosition):
//  - kConstant: memory keys unrotated, scored with the queries rotated at one position P = the
//    local window length, so every memory key sits at distance P from every query (InfLLM).
//  - kContiguous: memory token i of M rotated to position i - M (just before the window at 0..).
//    With memory = exactly the previous window this equals full attention over both windows.
//  - kZero: memory keys at position 0, ordinary queries (MemLong).
//
// Sinks: the first sink_tokens tokens of each document in play (the filter's documents, or the
// selected chunks' documents when the filter names none) are always in memory, in every layer.
//
// Selection (ChunkSelection):
//  - kEmbedder: the text embedder's top-k chunks (same chunks for every layer).
//  - kRepresentativeKeys: per chunk and layer, R keys chosen at ingest — those that received the
//    most attention from the chunk's own later tokens (summed over heads). At read time a scout
//    pass runs the query without memory to get each layer's pre-RoPE queries; their mean per
//    head q̄_h (rotated at P in kConstant mode, as memory is scored) gives a chunk the score
//    (1/n_head) Σ_h max_r q̄_h · k_r, and each layer takes its own top-k. The scout pass runs
//    the query's tokens (for perplexity: the text before the scored window, so the scored
//    tokens never choose their own memory). The representative keys
//    live in this object's RAM (the bank does not store them): chunks not ingested through it
//    cannot be selected this way (FailedPrecondition names the fix).
//
// Thread-compatible: one call at a time (it drives the model).
#pragma once

#include <algorithm>
#include <cstdint>
#include <memory>
#include <span>
#include <string>
#include <string_view>
#include <unordered_map>
#include <utility>
#include <vector>

#include "muninn/core/status.h"
#include "muninn/core/tensor.h"
#include "muninn/memory/memory_bank.h"
#include "muninn/model/memory_kv.h"
#include "muninn/model/model.h"
#include "muninn/retriever/embedder.h"
#include "muninn/retriever/long_context_session.h"

namespace muninn::retriever {

// Captured per-layer K/V ([T, n_head_kv, head_dim] each) stacked for the bank:
// {k, v} [n_layers · n_head_kv, T, head_dim] f32, layer-major in the given order.
StatusOr<std::pair<Tensor, Tensor>> StackLayerKV(
    const std::vector<model::ForwardResult::CapturedKV>& captured);

class ContextMemory {
 public:
  // Nothing is owned. `bank_layers` are the layers each bank chunk holds (ascending; they must
  // include every context layer). `local_window` is the session's window length (the constant
  // distance).
  static StatusOr<std::unique_ptr<ContextMemory>> Create(model::Model* model,
                                                         memory::MemoryBank* bank,
                                                         Embedder* embedder,
                                                         const ContextMemoryOptions& options,
                                                         std::vector<int32_t> bank_layers,
                                                         int64_t local_window);

  // The context layers, ascending (options.layers resolved: empty = all).
  const std::vector<int32_t>& layers() const { return layers_; }

  // One ingested τ window: its stacked K/V for the bank and its representative keys.
  struct Window {
    Tensor k;  // [n_bank_layers · n_head_kv, T, head_dim] f32, pre-RoPE
    Tensor v;  // [n_bank_layers · n_head_kv, T, head_dim] f32
    std::vector<float> representative;  // [n_layers, R, n_head_kv, head_dim] (kRepresentativeKeys)
  };
  // Runs `tokens` (one window, positions 0..T-1, no memory) up to the highest bank layer.
  StatusOr<Window> Ingest(std::span<const model::TokenId> tokens);
  // Runs `tokens` as one pass and cuts it into chunks of `chunk_tokens` (the last may be
  // shorter): each chunk's K/V are computed in the context of the segment's earlier tokens
  // (ContextMemoryOptions::contextual_ingest), its representative keys within the chunk.
  StatusOr<std::vector<Window>> IngestSegment(std::span<const model::TokenId> tokens,
                                              int64_t chunk_tokens);
  // Records a stored window (after the bank acknowledged it as chunk `id`).
  void Remember(memory::ChunkId id, memory::DocumentId doc_id, int64_t position, int64_t n_tokens,
                Window window);

  // Builds per-layer memory for a window that will run at positions 0..: selects chunks for the
  // query (`query_text` and its tokens `query`: the embedder's request, and the scout pass of
  // representative-key selection), adds the sinks, fetches K/V and positions them. `hits`
  // receives the union of the chosen chunks (chronological). An empty bank (or nothing passing
  // the filter) gives empty memory.
  StatusOr<model::MemoryKV> Build(std::string_view query_text,
                                  std::span<const model::TokenId> query,
                                  const memory::SearchFilter& filter,
                                  std::vector<memory::SearchHit>* hits);

 private:
  ContextMemory(model::Model* model, memory::MemoryBank* bank, Embedder* embedder,
                const ContextMemoryOptions& options, int64_t local_window)
      : model_(model), bank_(bank), embedder_(embedder), options_(options),
        local_window_(local_window) {}
  // The sinks, capped at use by the local window (a window never holds more).
  int64_t sink_tokens() const { return std::min(options_.sink_tokens, local_window_); }
  struct Entry {
    memory::DocumentId doc_id = 0;
    int64_t position = 0;
    int64_t n_tokens = 0;
    std::vector<float> representative;  // [n_layers, R, n_head_kv, head_dim]
  };
  // Per context layer (index into layers_), the chosen chunk ids (top-k, unordered).
  StatusOr<std::vector<std::vector<memory::ChunkId>>> SelectByEmbedder(
      std::string_view query_text, std::span<const model::TokenId> window,
      const memory::SearchFilter& filter, const std::vector<memory::ChunkId>& sinks,
      std::vector<memory::SearchHit>* scored);
  StatusOr<std::vector<std::vector<memory::ChunkId>>> SelectByRepresentativeKeys(
      std::span<const model::TokenId> window, const memory::SearchFilter& filter,
      const std::vector<memory::ChunkId>& sinks);
  // [n_layers, n_head, head_dim] the mean pre-RoPE query of `window` per context layer and head.
  StatusOr<std::vector<float>> MeanQueries(std::span<const model::TokenId> window);

  model::Model* model_;
  memory::MemoryBank* bank_;
  Embedder* embedder_;
  ContextMemoryOptions options_;
  int64_t local_window_;
  std::vector<int32_t> layers_;       // context layers, ascending
  std::vector<int32_t> bank_layers_;  // layers a bank chunk holds, ascending
  std::vector<int64_t> bank_index_;   // per context layer: its index in bank_layers_
  std::unordered_map<memory::ChunkId, Entry> entries_;
};

}  // namespace muninn::retriever
