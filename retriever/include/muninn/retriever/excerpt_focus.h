// Sentence focus for re-read excerpts: of the retrieved chunks' sentences, keeps those most like
// the question (by the text embedder), drops the rest, and drops chunks left with none.
//
// Why: retrieval finds the chunk holding the answer, but a 135M model reading four 128-token
// chunks of Bible prose answers from the wrong one, or from the filler around the right sentence
// (docs/QUALITY.md, "Excerpt focus"): with "The pass key is 72465." alone before the question
// it answers 72465; with three other verses beside it, or five words of verse before it, it
// answers "a key that is passed from one person". Chunks that follow each other in a document
// are joined first, so a sentence cut by a chunk boundary is one sentence again.
#pragma once

#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include "muninn/core/status.h"
#include "muninn/retriever/embedder.h"
#include "muninn/retriever/long_context_session.h"

namespace muninn::retriever {

// True when chunk `b` starts where chunk `a` ends in the same document.
bool Adjoins(const memory::SearchHit& a, const memory::SearchHit& b);

// Sorts excerpts into document order: document id, then position.
void SortInDocumentOrder(std::vector<Excerpt>* excerpts);

// Sentences of `text` in order, each with its trailing punctuation and without surrounding
// whitespace: a sentence ends at '.', '!' or '?' (closing quotes and brackets stay with it)
// followed by whitespace, and at a line break unless the next line starts with a lower-case
// letter (wrapped text; the break then reads as one space). "Mr.", "Mrs.", "Ms.", "Dr.", "St." and single
// capital initials ("J.") do not end a sentence. Empty lines give nothing.
std::vector<std::string> SplitSentences(std::string_view text);

// Excerpts (document order, as RetrieveExcerpts returns them) with contiguous chunks of one
// document joined into runs; then every sentence of every run is scored by the embedder's cosine
// with the question, and a run keeps the sentences scoring at least (best score over all runs −
// `margin`), each with `context` sentences on either side, joined by single spaces in their
// order. Runs that keep nothing are dropped; the rest stay in order. A run's hit keeps its first
// chunk's id, doc and position, n_tokens spans the whole run (so runs stay apart for
// FormatExcerpts), score is the best retrieval score of the run; tokens are `tok`'s encoding of
// the kept text. context < 0, or an empty question, returns the joined runs uncut; a run with no
// sentence at all is kept as it is.
StatusOr<std::vector<Excerpt>> FocusExcerpts(Embedder& embedder, const model::Tokenizer& tok,
                                             std::string_view question,
                                             std::vector<Excerpt> excerpts, int64_t context,
                                             double margin);

}  // namespace muninn::retriever
