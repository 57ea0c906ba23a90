#include "muninn/retriever/excerpt_focus.h"

#include <algorithm>
#include <array>
#include <cctype>

namespace muninn::retriever {
namespace {

bool IsSpace(char c) { return c == ' ' || c == '\t' || c == '\r' || c == '\n' || c == '\f' || c == '\v'; }

// Closing characters that stay with the sentence they end: ASCII quotes/brackets and the UTF-8
// right single/double quotation marks (U+2019, U+201D). Returns their byte length at `i`, 0 if none.
size_t ClosingAt(std::string_view s, size_t i) {
  const char c = s[i];
  if (c == '"' || c == '\'' || c == ')' || c == ']') return 1;
  if (i + 2 < s.size() && static_cast<unsigned char>(c) == 0xE2 &&
      static_cast<unsigned char>(s[i + 1]) == 0x80 &&
      (static_cast<unsigned char>(s[i + 2]) == 0x99 || static_cast<unsigned char>(s[i + 2]) == 0x9D)) {
    return 3;
  }
  return 0;
}

// True when the '.' at `dot` ends an abbreviation that does not end a sentence.
bool AbbreviationBefore(std::string_view s, size_t dot) {
  size_t b = dot;
  while (b > 0 && std::isalpha(static_cast<unsigned char>(s[b - 1]))) --b;
  const std::string_view word = s.substr(b, dot - b);
  if (word.size() == 1 && std::isupper(static_cast<unsigned char>(word[0]))) return true;
  static constexpr std::array<std::string_view, 5> kAbbrev = {"Mr", "Mrs", "Ms", "Dr", "St"};
  return std::find(kAbbrev.begin(), kAbbrev.end(), word) != kAbbrev.end();
}

// Appends `piece` without surrounding whitespace, its inner line breaks (and the indentation
// after them) read as one space; nothing for a blank piece.
void PushTrimmed(std::string_view piece, std::vector<std::string>* out) {
  size_t b = 0, e = piece.size();
  while (b < e && IsSpace(piece[b])) ++b;
  while (e > b && IsSpace(piece[e - 1])) --e;
  if (e == b) return;
  std::string s;
  s.reserve(e - b);
  for (size_t i = b; i < e; ++i) {
    if (piece[i] == '\n' || piece[i] == '\r') {
      while (!s.empty() && (s.back() == ' ' || s.back() == '\t')) s.pop_back();
      while (i + 1 < e && IsSpace(piece[i + 1])) ++i;
      s += ' ';
      continue;
    }
    s += piece[i];
  }
  out->push_back(std::move(s));
}

}  // namespace

bool Adjoins(const memory::SearchHit& a, const memory::SearchHit& b) {
  return a.doc_id == b.doc_id && a.position + a.n_tokens == b.position;
}

void SortInDocumentOrder(std::vector<Excerpt>* excerpts) {
  std::sort(excerpts->begin(), excerpts->end(), [](const Excerpt& a, const Excerpt& b) {
    return a.hit.doc_id != b.hit.doc_id ? a.hit.doc_id < b.hit.doc_id
                                        : a.hit.position < b.hit.position;
  });
}

std::vector<std::string> SplitSentences(std::string_view text) {
  std::vector<std::string> out;
  size_t start = 0;
  size_t i = 0;
  while (i < text.size()) {
    const char c = text[i];
    if (c == '\n') {
      // A line that starts with a lower-case letter continues the sentence (text wrapped at a
      // fixed width: "…when the flood of waters was upon the\nearth."); any other line break
      // ends one.
      size_t next = i + 1;
      while (next < text.size() && (text[next] == ' ' || text[next] == '\t')) ++next;
      if (next < text.size() && std::islower(static_cast<unsigned char>(text[next]))) {
        ++i;
        continue;
      }
      PushTrimmed(text.substr(start, i - start), &out);
      start = ++i;
      continue;
    }
    if (c == '.' || c == '!' || c == '?') {
      size_t end = i + 1;
      while (end < text.size() && (text[end] == '.' || text[end] == '!' || text[end] == '?')) ++end;
      for (size_t n; end < text.size() && (n = ClosingAt(text, end)) > 0;) end += n;
      const bool boundary = end == text.size() || IsSpace(text[end]);
      if (boundary && !(c == '.' && end == i + 1 && AbbreviationBefore(text, i))) {
        PushTrimmed(text.substr(start, end - start), &out);
        start = i = end;
        continue;
      }
      i = end;
      continue;
    }
    ++i;
  }
  PushTrimmed(text.substr(start), &out);
  return out;
}

StatusOr<std::vector<Excerpt>> FocusExcerpts(Embedder& embedder, const model::Tokenizer& tok,
                                             std::string_view question,
                                             std::vector<Excerpt> excerpts, int64_t context,
                                             double margin) {
  // Join chunks that follow each other in one document.
  std::vector<Excerpt> runs;
  for (Excerpt& e : excerpts) {
    if (!runs.empty()) {
      Excerpt& r = runs.back();
      if (Adjoins(r.hit, e.hit)) {
        r.text += e.text;
        r.tokens.insert(r.tokens.end(), e.tokens.begin(), e.tokens.end());
        r.hit.n_tokens += e.hit.n_tokens;
        r.hit.score = std::max(r.hit.score, e.hit.score);
        continue;
      }
    }
    runs.push_back(std::move(e));
  }
  if (context < 0 || question.empty() || runs.empty()) return runs;

  std::vector<std::vector<std::string>> sentences(runs.size());
  std::vector<std::string> texts{std::string(question)};
  for (size_t r = 0; r < runs.size(); ++r) {
    sentences[r] = SplitSentences(runs[r].text);
    texts.insert(texts.end(), sentences[r].begin(), sentences[r].end());
  }
  if (texts.size() == 1) return runs;
  std::vector<std::vector<model::TokenId>> ids(texts.size());
  std::vector<EmbedRequest> requests(texts.size());
  for (size_t i = 0; i < texts.size(); ++i) {
    ids[i] = tok.Encode(texts[i], /*add_special=*/false, /*parse_special=*/false);
    requests[i] = EmbedRequest{texts[i], ids[i]};
  }
  ASSIGN_OR_RETURN(std::vector<float> emb, embedder.Embed(requests));
  const size_t dim = static_cast<size_t>(embedder.dim());
  if (emb.size() != texts.size() * dim) {
    return InternalError("the embedder returned " + std::to_string(emb.size()) + " values for " +
                         std::to_string(texts.size()) + " texts of dim " + std::to_string(dim));
  }
  std::vector<double> score(texts.size(), 0.0);  // score[0]: the question itself, unused
  double best = -2.0;
  for (size_t i = 1; i < texts.size(); ++i) {
    double s = 0.0;
    for (size_t d = 0; d < dim; ++d) s += static_cast<double>(emb[d]) * emb[i * dim + d];
    score[i] = s;
    best = std::max(best, s);
  }
  const double bar = best - margin;
  const size_t c = static_cast<size_t>(context);
  std::vector<Excerpt> out;
  size_t row = 1;
  for (size_t r = 0; r < runs.size(); ++r) {
    const std::vector<std::string>& sent = sentences[r];
    if (sent.empty()) {
      out.push_back(std::move(runs[r]));
      continue;
    }
    std::vector<bool> keep(sent.size(), false);
    for (size_t j = 0; j < sent.size(); ++j) {
      if (score[row + j] < bar) continue;
      for (size_t k = j >= c ? j - c : 0; k <= std::min(sent.size() - 1, j + c); ++k) keep[k] = true;
    }
    row += sent.size();
    std::string kept;
    for (size_t j = 0; j < sent.size(); ++j) {
      if (!keep[j]) continue;
      if (!kept.empty()) kept += ' ';
      kept += sent[j];
    }
    if (kept.empty()) continue;
    runs[r].text = std::move(kept);
    runs[r].tokens = tok.Encode(runs[r].text, /*add_special=*/false, /*parse_special=*/false);
    out.push_back(std::move(runs[r]));
  }
  return out;
}

}  // namespace muninn::retriever
