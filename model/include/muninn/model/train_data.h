// Training text cut into blocks (issue 12): documents from plain-text and JSONL files, tokenized,
// each document cut into blocks of up to `block` inputs that never cross a document boundary.
//
//  - `*.jsonl`: one document per non-empty line, {"text": "..."} (tokenized) or {"ids": [...]}
//    (already token ids, checked against the vocabulary).
//  - any other file: plain UTF-8 text, the whole file one document.
//
// A document of n tokens gives blocks of its token sequence: block j holds inputs
// tokens[j·B, j·B + len) and labels tokens[j·B + 1, j·B + len + 1) with len = min(B, n - 1 - j·B),
// so every token but the document's first is predicted exactly once and no label comes from
// another document. A document of fewer than 2 tokens gives no block. Labelled blocks
// (FromLabeledBlocks) carry their own labels instead. Blocks are in file order,
// then document order (MemLong reads a contiguous stream).
//
// Thread-compatible value type.
#pragma once

#include <cstdint>
#include <span>
#include <string>
#include <vector>

#include "muninn/core/status.h"
#include "muninn/model/tokenizer.h"

namespace muninn::model {

class TrainData {
 public:
  // InvalidArgument naming the file and line for unreadable JSON, a line without "text" or
  // "ids", an id outside [0, n_vocab), "text" without a tokenizer, or data with no block at all;
  // NotFound for a missing file. `tokenizer` may be null when every file holds ids.
  // add_bos: prepend the tokenizer's BOS (if it has one) to each tokenized document.
  static StatusOr<TrainData> Load(const std::vector<std::string>& paths, const Tokenizer* tokenizer,
                                  int32_t n_vocab, int64_t block, bool add_bos = false);
  // From token documents directly (tests, synthetic data).
  static StatusOr<TrainData> FromDocuments(const std::vector<std::vector<TokenId>>& docs,
                                           int32_t n_vocab, int64_t block);
  // Blocks with their own labels (synthetic tasks: the loss on the answer tokens only): block i
  // is ids[i] with labels[i] (same length; kIgnoreLabel = -100 skips a position). Each block is
  // its own document. InvalidArgument for length mismatches, empty blocks, ids or labels outside
  // the vocabulary, or a block with no supervised position.
  static StatusOr<TrainData> FromLabeledBlocks(const std::vector<std::vector<TokenId>>& ids,
                                               const std::vector<std::vector<TokenId>>& labels,
                                               int32_t n_vocab);

  int64_t n_blocks() const { return static_cast<int64_t>(blocks_.size()); }
  int64_t n_documents() const { return n_documents_; }
  // Inputs of block i (at most `block` tokens) and the labels (same length).
  std::span<const TokenId> ids(int64_t i) const;
  std::span<const TokenId> labels(int64_t i) const;
  // Supervised tokens over all blocks.
  int64_t n_tokens() const { return n_tokens_; }
  // The document block i comes from (0-based, in load order; a labelled block is its own) and the
  // token offset of ids(i)[0] inside it.
  int64_t document(int64_t i) const { return blocks_[static_cast<size_t>(i)].doc; }
  int64_t position(int64_t i) const {
    const Block& b = blocks_[static_cast<size_t>(i)];
    return b.start - b.doc_start;
  }
  // Up to n tokens of block i's document just before the block (fewer at the document's start).
  std::span<const TokenId> preceding(int64_t i, int64_t n) const;

 private:
  struct Block {
    int64_t start = 0;  // into tokens_
    int64_t len = 0;
    int64_t doc = 0;        // document index
    int64_t doc_start = 0;  // into tokens_: the document's first token
  };
  Status AddDocument(std::span<const TokenId> doc, int64_t block);
  std::vector<TokenId> tokens_;
  std::vector<TokenId> labels_;  // parallel to tokens_: the label of each input position
  std::vector<Block> blocks_;
  int64_t n_documents_ = 0;
  int64_t n_tokens_ = 0;
};

}  // namespace muninn::model
