// Synthetic retrieval tasks for training memory reading (issue 12; specs/memory_modes.md §4: a
// dense signal, the loss on the answer tokens only). Each example is
//
//   memory: a stretch of filler text with one fact in it ("The pass key is 48213. Remember it.
//           48213 is the pass key.", "The secret number of Edith is 5172.", ...), memory_chunks
//           chunks of chunk_tokens tokens long, the fact at a random place (across the boundary
//           when there are two chunks)
//   local:  filler tokens (the end of some other stretch), a line break and the question
//           ("What is the pass key? The pass key is"), then the answer (" 48213."): the block a
//           model sees in its window, labels on the answer tokens only
//
// The local block never contains the fact: the answer can only come from memory. Templates,
// keys (3 to 7 digits), names, filler stretches and lengths are drawn from a counter-based
// generator seeded by (seed, example index), so the same options give the same examples.
// Thread-compatible value types.
#pragma once

#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include "muninn/core/status.h"
#include "muninn/model/tokenizer.h"

namespace muninn::model {

struct RecallTaskOptions {
  int64_t examples = 1000;
  uint64_t seed = 1;
  int64_t chunk_tokens = 128;     // τ of the memory the examples are read from
  double two_chunk_share = 0.2;   // examples whose fact straddles two chunks
  int64_t min_local_filler = 32;  // filler tokens before the question in the local block
  int64_t max_local_filler = 256;
  // The share of examples asking the standard passkey question (the rest use the other
  // templates: secret numbers of names, codes of objects, values of keys).
  double passkey_share = 0.5;
  Status Validate() const;
};

struct RecallExample {
  std::vector<TokenId> memory;  // memory_chunks · chunk_tokens tokens (the fact inside)
  int64_t memory_chunks = 1;
  std::string question;         // the question line (what a retriever is asked)
  std::string answer;           // the key, e.g. "48213"
  std::vector<TokenId> ids;     // local block: filler, "\n", question, answer tokens
  std::vector<TokenId> labels;  // next-token labels; kIgnoreLabel except on the answer
};

// `filler` is plain text (e.g. a book); it must tokenize to at least 4 · chunk_tokens tokens.
StatusOr<std::vector<RecallExample>> MakeRecallTasks(const Tokenizer& tokenizer,
                                                     std::string_view filler,
                                                     const RecallTaskOptions& options);

// Filler chunks (chunk_tokens tokens each, from `count` places of `filler` drawn from `seed`):
// the distractors a memory source mixes in with an example's gold chunk.
StatusOr<std::vector<std::vector<TokenId>>> MakeFillerChunks(const Tokenizer& tokenizer,
                                                             std::string_view filler,
                                                             int64_t chunk_tokens, int64_t count,
                                                             uint64_t seed);

}  // namespace muninn::model
