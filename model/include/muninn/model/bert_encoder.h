// BertEncoder: a BERT sentence encoder (all-MiniLM-L6-v2 and other BertModel checkpoints) that
// turns texts into fixed-size embeddings, as sentence-transformers does: the retriever's text
// embedder (MemLong embeds every chunk's text and every query).
//
// Per text of T tokens ([CLS] ... [SEP], cut to max_tokens), buffers [T, ·] f32:
//   h  = LayerNorm(word[ids] + pos[0..T) + type[0]) · emb_ln        // embd
//   per layer (post-norm):
//     q = h·Wqᵀ + bq,  k = h·Wkᵀ + bk,  v = h·Wvᵀ + bv               // [T, n_head, hd]
//     a = Attention(q, k, v), bidirectional, scale 1/sqrt(hd)
//     h = LayerNorm(h + a·Woᵀ + bo) · attn_ln
//     h = LayerNorm(h + gelu(h·W1ᵀ + b1)·W2ᵀ + b2) · ffn_ln         // hidden
//   e  = mean over the T rows of h (or row 0 for CLS pooling), then e / |e|₂ when normalizing.
// A batch runs every matrix product once over the tokens of all its texts (rows concatenated,
// no padding); only attention and pooling run text by text, so texts never see each other.
// Token type ids are all 0 (single sentences). Weights stay in their checkpoint dtype (f32, f16,
// bf16 or a quantized type) for MatMul/GetRows; norm weights and biases are converted to f32 once.
//
// Thread-compatible: one Embed/Forward at a time per encoder (scratch buffers are reused); the
// weights are read-only.
#pragma once

#include <cstdint>
#include <functional>
#include <memory>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "muninn/core/backend.h"
#include "muninn/core/status.h"
#include "muninn/core/tensor.h"
#include "muninn/model/tokenizer.h"

namespace muninn::model {

enum class BertPooling : uint8_t {
  kMean,  // mean over every token of the text, [CLS] and [SEP] included (sentence-transformers)
  kCls,   // the [CLS] row
};

// The architecture, from config.json (+ the sentence-transformers files for the last three).
struct BertConfig {
  int32_t n_vocab = 0;       // vocab_size
  int32_t n_embd = 0;        // hidden_size
  int32_t n_layer = 0;       // num_hidden_layers
  int32_t n_head = 0;        // num_attention_heads (n_embd % n_head == 0)
  int32_t n_ff = 0;          // intermediate_size
  int32_t n_pos = 0;         // max_position_embeddings
  int32_t n_token_type = 0;  // type_vocab_size (>= 1: row 0 is used)
  float norm_eps = 1e-12f;   // layer_norm_eps
  GeluMode gelu = GeluMode::kErf;  // hidden_act "gelu" is the erf form
  int32_t max_tokens = 0;    // texts are cut to this many tokens; 0 = n_pos
  BertPooling pooling = BertPooling::kMean;
  bool normalize = true;     // L2-normalise the pooled vector
  int32_t head_dim() const { return n_head > 0 ? n_embd / n_head : 0; }
  Status Validate() const;
};

// Weights as the checkpoint names them (w: [n_out, n_in]; biases and norm weights [n]).
struct BertLayerWeights {
  Tensor wq, bq;             // attention.self.query     [n_embd, n_embd], [n_embd]
  Tensor wk, bk;             // attention.self.key
  Tensor wv, bv;             // attention.self.value
  Tensor wo, bo;             // attention.output.dense   [n_embd, n_embd], [n_embd]
  Tensor attn_ln_w, attn_ln_b;  // attention.output.LayerNorm [n_embd]
  Tensor w_up, b_up;         // intermediate.dense       [n_ff, n_embd], [n_ff]
  Tensor w_down, b_down;     // output.dense             [n_embd, n_ff], [n_embd]
  Tensor ffn_ln_w, ffn_ln_b;  // output.LayerNorm        [n_embd]
};

struct BertWeights {
  Tensor word_embd;        // [n_vocab, n_embd]       embeddings.word_embeddings
  Tensor pos_embd;         // [n_pos, n_embd]         embeddings.position_embeddings
  Tensor type_embd;        // [n_token_type, n_embd]  embeddings.token_type_embeddings
  Tensor emb_ln_w, emb_ln_b;  // [n_embd]             embeddings.LayerNorm
  std::vector<BertLayerWeights> layers;  // [n_layer]  encoder.layer.N
};

struct BertEncoderOptions {
  // Not owned; must outlive the encoder.
  Backend* backend = nullptr;
  // Cuts texts to at most this many tokens (including [CLS]/[SEP]); 0 keeps the model's own
  // limit (sentence_bert_config.json's max_seq_length, else max_position_embeddings). A value
  // above max_position_embeddings is an error.
  int32_t max_tokens = 0;
  // Embed() packs texts into batches of at most this many tokens (one text longer than this still
  // runs alone). Bounds the scratch memory: about (6·n_embd + n_ff)·4 bytes per token.
  int64_t max_batch_tokens = 4096;
  Status Validate() const;
};

// Called with named intermediates during Forward: "embd" (layer -1) and "hidden" (layer i, the
// output of encoder layer i), each [n_tokens, n_embd] f32 over the whole batch. `value` is only
// valid during the call.
using BertObserver =
    std::function<void(std::string_view name, int32_t layer, const Tensor& value)>;

class BertEncoder {
 public:
  // Loads a Hugging Face folder: config.json (model_type "bert", absolute positions),
  // model.safetensors (names with or without a "bert." prefix), tokenizer.json or vocab.txt, and
  // when present sentence_bert_config.json (max_seq_length), modules.json and the pooling
  // module's config.json (mean or CLS pooling; Normalize). Without modules.json: mean pooling
  // and L2 normalisation. Errors name the file, key or tensor that is wrong.
  static StatusOr<std::unique_ptr<BertEncoder>> Load(const std::string& dir,
                                                     const BertEncoderOptions& options);
  // From parts. Checks every weight's shape and dtype against `config` (InvalidArgument naming
  // the tensor) and converts norm weights and biases to f32. `tokenizer` may be null (then only
  // EmbedIds/Forward work).
  static StatusOr<std::unique_ptr<BertEncoder>> Create(const BertEncoderOptions& options,
                                                       const BertConfig& config,
                                                       BertWeights weights,
                                                       std::unique_ptr<Tokenizer> tokenizer);
  ~BertEncoder();
  BertEncoder(const BertEncoder&) = delete;
  BertEncoder& operator=(const BertEncoder&) = delete;

  int64_t dim() const { return config_.n_embd; }
  const BertConfig& config() const { return config_; }
  // The tokenizer, or null.
  const Tokenizer* tokenizer() const { return tokenizer_.get(); }

  // Token ids of `text` as the encoder runs them: [CLS] ... [SEP], special-token strings in the
  // text matched as such (as Hugging Face tokenizers do), cut to max_tokens keeping the final
  // [SEP]. FailedPrecondition without a tokenizer.
  StatusOr<std::vector<TokenId>> Tokenize(std::string_view text) const;

  // Embeddings of `texts`: [texts.size(), dim()] row-major. Empty input gives an empty vector.
  StatusOr<std::vector<float>> Embed(std::span<const std::string> texts);
  // Same from token ids (each sequence 1..max_tokens ids, used as given).
  StatusOr<std::vector<float>> EmbedIds(std::span<const std::vector<TokenId>> sequences);

  // The encoder stack over one batch: `sequences` concatenated, returns the final hidden states
  // [total tokens, n_embd] (a host tensor the caller owns). `observer` may be empty.
  StatusOr<Tensor> Forward(std::span<const std::vector<TokenId>> sequences,
                           const BertObserver& observer = {});

 private:
  struct Scratch;
  BertEncoder(const BertEncoderOptions& options, const BertConfig& config, BertWeights weights,
              std::unique_ptr<Tokenizer> tokenizer);
  Status CheckSequences(std::span<const std::vector<TokenId>> sequences) const;
  Status EnsureScratch(int64_t n_tokens);
  Status RunLayer(int32_t layer, std::span<const std::vector<TokenId>> sequences);
  // Forward without the final copy: the result may be a view of the scratch buffers.
  StatusOr<Tensor> RunStack(std::span<const std::vector<TokenId>> sequences,
                            const BertObserver& observer);
  // Pools the rows of `hidden` ([total, n_embd] host) per sequence into out[i·dim ...].
  void Pool(const Tensor& hidden, std::span<const std::vector<TokenId>> sequences,
            float* out) const;

  BertEncoderOptions options_;
  BertConfig config_;
  BertWeights weights_;
  Tensor type_row_;  // [n_embd] f32: token type 0's embedding
  std::unique_ptr<Tokenizer> tokenizer_;
  // How many special ids the tokenizer appends after the text (1 for [SEP]); truncation keeps
  // them.
  size_t n_special_suffix_ = 0;
  std::unique_ptr<Scratch> scratch_;
};

}  // namespace muninn::model
