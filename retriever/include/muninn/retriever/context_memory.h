// ContextMemory: own-layer context memory (InfLLM-style, specs/memory_modes.md §2) for a
// LongContextSession.
//
// Every context layer stores its own pre-RoPE K/V of each ingested chunk (one model pass per τ
// window captures all of them, up to the highest context layer) and reads back its own K/V: one
// softmax over [sinks ; retrieved chunks ; local window] (Backend::Attention with a memory block).
//
// Bank layout: a chunk's K (and V) is [n_layers · n_head_kv, T, head_dim], layer-major in the
// order of layers() (so the bank is opened with n_head_kv = n_layers · the model's n_head_kv).
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
// Selection (ContextSelection):
//  - kEmbedder: the text embedder's top-k chunks (same chunks for every layer).
//  - kRepresentativeKeys: per chunk and layer, R keys chosen at ingest — those that received the
//    most attention from the chunk's own later tokens (summed over heads). At read time a scout
//    pass runs the window without memory to get each layer's pre-RoPE queries; their mean per
//    head q̄_h (rotated at P in kConstant mode, as memory is scored) gives a chunk the score
//    (1/n_head) Σ_h max_r q̄_h · k_r, and each layer takes its own top-k. The representative keys
//    live in this object's RAM (the bank does not store them): chunks not ingested through it
//    cannot be selected this way (FailedPrecondition names the fix).
//
// Thread-compatible: one call at a time (it drives the model).
#pragma once

#include <cstdint>
#include <memory>
#include <span>
#include <string>
#include <string_view>
#include <unordered_map>
#include <vector>

#include "muninn/core/status.h"
#include "muninn/core/tensor.h"
#include "muninn/memory/memory_bank.h"
#include "muninn/model/memory_kv.h"
#include "muninn/model/model.h"
#include "muninn/retriever/embedder.h"

namespace muninn::retriever {

enum class ContextPosition : uint8_t { kConstant, kContiguous, kZero };
const char* ContextPositionName(ContextPosition p);
bool ParseContextPosition(std::string_view name, ContextPosition* out);

enum class ContextSelection : uint8_t { kEmbedder, kRepresentativeKeys };
const char* ContextSelectionName(ContextSelection s);
bool ParseContextSelection(std::string_view name, ContextSelection* out);

struct ContextMemoryOptions {
  std::vector<int32_t> layers;  // layers that store and read their own K/V; empty = all
  int64_t sink_tokens = 128;    // first tokens of each document, always in memory
  ContextPosition position = ContextPosition::kConstant;
  ContextSelection selection = ContextSelection::kEmbedder;
  int64_t representative_keys = 4;  // R per chunk and layer (kRepresentativeKeys)
  int64_t top_k = 8;                // chunks per layer, sinks not counted
  Status Validate(const model::ModelConfig& config) const;
};

class ContextMemory {
 public:
  // Nothing is owned. `local_window` is the session's window length (the constant distance).
  static StatusOr<std::unique_ptr<ContextMemory>> Create(model::Model* model,
                                                         memory::MemoryBank* bank,
                                                         Embedder* embedder,
                                                         const ContextMemoryOptions& options,
                                                         int64_t local_window);

  // The context layers, ascending (options.layers resolved: empty = all).
  const std::vector<int32_t>& layers() const { return layers_; }
  // K/V heads a chunk stores: layers().size() · n_head_kv.
  int64_t bank_heads() const;

  // One ingested τ window: its stacked K/V for the bank and its representative keys.
  struct Window {
    Tensor k;  // [n_layers · n_head_kv, T, head_dim] f32, pre-RoPE
    Tensor v;  // [n_layers · n_head_kv, T, head_dim] f32
    std::vector<float> representative;  // [n_layers, R, n_head_kv, head_dim] (kRepresentativeKeys)
  };
  // Runs `tokens` (one window, positions 0..T-1, no memory) up to the highest context layer.
  StatusOr<Window> Ingest(std::span<const model::TokenId> tokens);
  // Records a stored window (after the bank acknowledged it as chunk `id`).
  void Remember(memory::ChunkId id, memory::DocumentId doc_id, int64_t position, int64_t n_tokens,
                Window window);

  // Builds per-layer memory for a window of `window` tokens that will run at positions 0..:
  // selects chunks (by `query_text` or by representative keys of `window`), adds the sinks,
  // fetches K/V and positions them. `hits` receives the union of the chosen chunks
  // (chronological). An empty bank (or nothing passing the filter) gives empty memory.
  StatusOr<model::MemoryKV> Build(std::string_view query_text,
                                  std::span<const model::TokenId> window,
                                  const memory::SearchFilter& filter,
                                  std::vector<memory::SearchHit>* hits);

 private:
  ContextMemory(model::Model* model, memory::MemoryBank* bank, Embedder* embedder,
                const ContextMemoryOptions& options, int64_t local_window)
      : model_(model), bank_(bank), embedder_(embedder), options_(options),
        local_window_(local_window) {}
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
  std::vector<int32_t> layers_;
  std::unordered_map<memory::ChunkId, Entry> entries_;
};

}  // namespace muninn::retriever
