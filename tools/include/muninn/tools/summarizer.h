// Summarizer: summaries of documents of any length that a reader can check against the source.
//
// A 135M model does not write trustworthy prose about a book, but it copies well from what is in
// its window. So structure does the work and every line stays grounded in the text:
//   1. the document is checked (document_text.h) and cut into sentences with byte spans, and into
//      sections of about `section_tokens` tokens whose cuts snap to headings ("Genesis 12");
//   2. extract: in each section, sentences are scored by the names they carry (names.h; a name
//      weighs log(1 + its count in the document), double where the section introduces it; the
//      three heaviest names of a sentence count, so name lists do not win) and by
//      centrality (cosine to the section's centroid: MiniLM embeddings when an embedder is given,
//      word counts otherwise); `sentences_per_section` are picked with a redundancy penalty
//      (MMR) and kept in document order; long ones are cut at a clause boundary. The document's
//      opening sentence is always the first section's first line, on top of its picks (a
//      summary opens where the book does), and sections are read in order: a line whose names the
//      summary has not yet mentioned, but which the source introduced before names it already has,
//      loses `order_weight` times that discordant share of pairs (summary_eval.h name order), and
//      one that names top names the summary has not named yet gains up to `cover_weight`;
//   3. condense (optional): the model is asked to shorten each picked sentence, greedily, one
//      line. Its sentence is kept only when it is verified: every name and number in it occurs
//      in the sentence it condensed; it is that sentence with words left out (>= 90 % of its
//      words match the source's in order; at most one cut inside the kept part, and that cut a
//      whole clause: a clause mark right before and right after it and no word of the model's
//      own bridging it, so no clause is stitched to one it did not belong to); it has at least 6
//      words and fewer than the original; it does not repeat itself. Otherwise the extracted
//      sentence stands;
//   4. merge: consecutive nodes are grouped `merge_fanout` at a time, level by level, until one
//      remains; a group keeps `merge_keep` of its children's lines: its earliest line always (a
//      summary opens where its part opens), then one per child, chosen by score, by the weight of
//      names the lines already kept lack, and against redundancy; always in document order.
//      The root (the brief summary) chooses from every section's lines, up to `brief_sentences`
//      within `max_tokens`: the opening line, then greedily the line that best adds thirds of the
//      document represented, `cover_top_names` top names mentioned and name order.
// The result is a tree: sections at the bottom, the brief summary at the root. RenderSummary
// prints it as one paragraph, one line per section, or a nested outline.
// Thread-compatible (it drives one session).
#pragma once

#include <cstdint>
#include <functional>
#include <string>
#include <string_view>
#include <vector>

#include "muninn/core/status.h"
#include "muninn/model/chat_template.h"
#include "muninn/model/sampler.h"
#include "muninn/retriever/embedder.h"
#include "muninn/retriever/long_context_session.h"
#include "muninn/tools/document_text.h"

namespace muninn::tools {

struct SummarizerOptions {
  int64_t section_tokens = 4096;        // document tokens per section (cuts snap to headings)
  int64_t min_sections = 4;             // a short text still gets a beginning, middle and end
  int64_t sentences_per_section = 2;    // lines extracted per section
  int64_t merge_fanout = 4;             // children per merge group
  int64_t merge_keep = 2;               // lines a merge group keeps
  int64_t brief_sentences = 8;          // lines the root (the brief summary) keeps at most
  int64_t max_tokens = 384;             // token budget of the brief summary (>= one line)
  int64_t max_sentence_words = 40;      // extracted sentences are cut at a clause boundary
  int64_t candidates_per_section = 24;  // best-named sentences embedded per section
  // Score taken off a section line per unit of the name-order discordance it would add (step 2).
  double order_weight = 0.5;
  // Score added to a section line that names one (0.5) or two (1.0) of the `cover_top_names`
  // the summary has not named yet.
  double cover_weight = 0.3;
  int64_t cover_top_names = 20;  // the brief tries to name the document's this many top names
  bool condense = true;          // the model shortens picked lines (verified)
  int64_t condense_tokens = 48;  // generation budget per condensed line
  // Greedy: the model should copy, not invent. Stop rules: one line (newline ends it).
  model::SamplerOptions sampling = model::SamplerOptions::Greedy();
  int64_t max_input_bytes = kDefaultMaxDocumentBytes;
  // Not owned; null = word-count centrality. Used for sentence embeddings only.
  retriever::Embedder* embedder = nullptr;
  bool ingest = false;  // also store the document in the session's bank
  memory::DocumentId doc_id = 1;
  Status Validate() const;
};

// Stage names passed to progress: "ingest", "select", "condense", "merge".
using SummarizeProgress = std::function<void(std::string_view stage, int64_t done, int64_t total)>;

// One line of a summary and where it comes from.
struct SummaryLine {
  std::string text;
  int64_t begin = 0;  // byte span [begin, end) of the source sentence it comes from
  int64_t end = 0;
  bool condensed = false;  // text is the model's verified shortening of the span
  double score = 0.0;      // extraction score (higher = more salient)
};

// A node of the summary tree: a section (level 0) or a merge group.
struct SummaryNode {
  std::string label;  // "Genesis 1–4" from the headings inside, else "part i of n"
  int64_t begin = 0;  // byte span of the source it covers
  int64_t end = 0;
  std::vector<SummaryLine> lines;  // in document order
  std::vector<int64_t> children;   // indices into the level below (empty for sections)
};

struct SummaryResult {
  std::string summary;                           // the brief paragraph (the root's lines)
  std::vector<std::string> section_summaries;    // each section's lines joined
  std::vector<std::vector<SummaryNode>> levels;  // levels[0] = sections, back() = {root}
  int64_t n_tokens = 0;                          // document tokens
  int64_t n_bytes = 0;
  int64_t n_sections = 0;
  int64_t n_sentences = 0;         // sentences found in the document
  int64_t generated_tokens = 0;    // tokens the model generated (condensing)
  int64_t condensed_kept = 0;      // condensed lines that passed verification
  int64_t condensed_rejected = 0;  // ... that did not (the extracted sentence stands)
  const std::vector<SummaryNode>& sections() const { return levels.front(); }
  const SummaryNode& root() const { return levels.back().front(); }
};

// `on_text` receives the brief summary once it is complete. InvalidArgument for an empty,
// binary or oversized document, or one without a sentence.
StatusOr<SummaryResult> Summarize(retriever::LongContextSession& session,
                                  const model::ChatTemplate& chat, std::string_view text,
                                  const SummarizerOptions& options,
                                  const SummarizeProgress& progress = {},
                                  const retriever::TextCallback& on_text = {});

enum class SummaryStyle { kBrief, kSections, kOutline };
bool ParseSummaryStyle(std::string_view name, SummaryStyle* out);

// brief: the root's lines as one paragraph; sections: "[label] lines" per section; outline:
// nested "- label: lines" items from the level below the root down to the sections.
std::string RenderSummary(const SummaryResult& result, SummaryStyle style);

// Only the summary's own sentences (no labels), one node's lines per paragraph, as `muninn eval
// summary` measures them: the lines of the nodes `style` prints.
std::string SummaryProse(const SummaryResult& result, SummaryStyle style);

// Verification of a condensed line (step 3 above): true when `candidate` may replace `source`.
bool IsFaithfulCondensation(std::string_view source, std::string_view candidate);

}  // namespace muninn::tools
