#include "muninn/model/recall_tasks.h"

#include <algorithm>
#include <array>

#include "muninn/core/cross_entropy.h"

namespace muninn::model {

namespace {

// SplitMix64: the examples' counter-based generator.
uint64_t Next(uint64_t& s) {
  uint64_t z = (s += 0x9e3779b97f4a7c15ull);
  z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
  z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
  return z ^ (z >> 31);
}
int64_t Uniform(uint64_t& s, int64_t lo, int64_t hi) {  // [lo, hi]
  return lo + static_cast<int64_t>(Next(s) % static_cast<uint64_t>(hi - lo + 1));
}
double Unit(uint64_t& s) { return static_cast<double>(Next(s) >> 11) * 0x1.0p-53; }

constexpr std::array<const char*, 24> kNames = {
    "Edith", "Marcus", "Ingrid", "Tobias", "Helena", "Rufus",  "Agnes",  "Felix",
    "Clara", "Jasper", "Mabel",  "Oscar",  "Greta",  "Silas",  "Ada",    "Hugo",
    "Nora",  "Elias",  "Vera",   "Milo",   "Ruth",   "Conrad", "Lydia",  "Otto"};
constexpr std::array<const char*, 16> kObjects = {
    "red door",  "old safe",   "north gate", "iron chest", "blue locker", "cellar",
    "library",   "tower room", "east vault", "boathouse",  "green box",   "workshop",
    "attic",     "stable",     "chapel",     "west wing"};
constexpr std::array<const char*, 16> kEntries = {
    "amber", "cedar", "falcon", "harbor", "juniper", "lantern", "meadow", "orchid",
    "pepper", "quartz", "raven", "saffron", "thistle", "umber", "willow", "zephyr"};

struct Fact {
  std::string sentence;
  std::string question;
};

Fact MakeFact(uint64_t& s, const std::string& key, bool passkey) {
  if (passkey) {
    return {"The pass key is " + key + ". Remember it. " + key + " is the pass key.",
            "What is the pass key? The pass key is"};
  }
  switch (Next(s) % 3) {
    case 0: {
      const std::string n = kNames[Next(s) % kNames.size()];
      return {"The secret number of " + n + " is " + key + ".",
              "What is the secret number of " + n + "? The secret number of " + n + " is"};
    }
    case 1: {
      const std::string o = kObjects[Next(s) % kObjects.size()];
      return {"The code for the " + o + " is " + key + ". Keep it safe.",
              "What is the code for the " + o + "? The code for the " + o + " is"};
    }
    default: {
      const std::string e = kEntries[Next(s) % kEntries.size()];
      return {"In the ledger, the entry " + e + " has the value " + key + ".",
              "In the ledger, what value does the entry " + e + " have? The entry " + e +
                  " has the value"};
    }
  }
}

// The first n tokens of `filler` from a line start drawn from s (wrapping around the text).
StatusOr<std::vector<TokenId>> FillerTokens(const Tokenizer& tok, std::string_view filler,
                                            int64_t n, uint64_t& s) {
  std::vector<TokenId> out;
  if (n <= 0) return out;
  size_t start = static_cast<size_t>(Next(s) % filler.size());
  const size_t nl = filler.find('\n', start);
  start = nl == std::string_view::npos ? 0 : nl + 1;
  size_t chars = static_cast<size_t>(n) * 6 + 64;
  for (int attempt = 0; attempt < 6; ++attempt, chars *= 2) {
    std::string stretch;
    stretch.reserve(chars);
    size_t at = start % filler.size();
    while (stretch.size() < chars) {
      const size_t take = std::min(chars - stretch.size(), filler.size() - at);
      stretch.append(filler.substr(at, take));
      at = (at + take) % filler.size();
    }
    out = tok.Encode(stretch, /*add_special=*/false, /*parse_special=*/false);
    if (static_cast<int64_t>(out.size()) >= n) {
      out.resize(static_cast<size_t>(n));
      return out;
    }
  }
  return InvalidArgumentError("the filler text does not tokenize to " + std::to_string(n) +
                              " tokens");
}

}  // namespace

Status RecallTaskOptions::Validate() const {
  if (examples < 1) return InvalidArgumentError("recall tasks: examples must be >= 1");
  if (chunk_tokens < 48 || chunk_tokens > 4096) {
    return InvalidArgumentError("recall tasks: chunk_tokens must be in [48, 4096]");
  }
  if (!(two_chunk_share >= 0.0 && two_chunk_share <= 1.0) ||
      !(passkey_share >= 0.0 && passkey_share <= 1.0)) {
    return InvalidArgumentError("recall tasks: shares must be in [0, 1]");
  }
  if (min_local_filler < 0 || max_local_filler < min_local_filler || max_local_filler > 1 << 16) {
    return InvalidArgumentError("recall tasks: need 0 <= min_local_filler <= max_local_filler");
  }
  return Status::Ok();
}

StatusOr<std::vector<RecallExample>> MakeRecallTasks(const Tokenizer& tok, std::string_view filler,
                                                     const RecallTaskOptions& o) {
  RETURN_IF_ERROR(o.Validate());
  if (filler.size() < 256) return InvalidArgumentError("recall tasks: the filler text is too short");
  std::vector<RecallExample> out;
  out.reserve(static_cast<size_t>(o.examples));
  const int64_t tau = o.chunk_tokens;
  for (int64_t i = 0; i < o.examples; ++i) {
    uint64_t s = o.seed * 0x632be59bd9b4e019ull + static_cast<uint64_t>(i) * 0x9e3779b97f4a7c15ull;
    Next(s);
    RecallExample ex;
    const int64_t digits = Unit(s) < 0.5 ? 5 : Uniform(s, 3, 7);
    std::string key = std::to_string(Uniform(s, 1, 9));
    for (int64_t d = 1; d < digits; ++d) key += static_cast<char>('0' + Next(s) % 10);
    const Fact fact = MakeFact(s, key, Unit(s) < o.passkey_share);
    ex.question = fact.question;
    ex.answer = key;
    // Memory: filler, the fact on a line of its own, filler; the fact inside one chunk or across
    // the boundary of two.
    const std::vector<TokenId> f =
        tok.Encode("\n" + fact.sentence + "\n", /*add_special=*/false, /*parse_special=*/false);
    const int64_t nf = static_cast<int64_t>(f.size());
    if (nf + 2 > tau) {
      return InvalidArgumentError("recall tasks: a fact takes " + std::to_string(nf) +
                                  " tokens, more than a chunk of " + std::to_string(tau));
    }
    ex.memory_chunks = Unit(s) < o.two_chunk_share ? 2 : 1;
    const int64_t total = ex.memory_chunks * tau;
    const int64_t at = ex.memory_chunks == 1 ? Uniform(s, 0, tau - nf)
                                             : Uniform(s, tau - nf + 1, tau - 1);
    ASSIGN_OR_RETURN(std::vector<TokenId> before, FillerTokens(tok, filler, at, s));
    ASSIGN_OR_RETURN(std::vector<TokenId> after, FillerTokens(tok, filler, total - at - nf, s));
    ex.memory = std::move(before);
    ex.memory.insert(ex.memory.end(), f.begin(), f.end());
    ex.memory.insert(ex.memory.end(), after.begin(), after.end());
    // Local block: filler, the question on its own line, the answer.
    ASSIGN_OR_RETURN(std::vector<TokenId> seq,
                     FillerTokens(tok, filler, Uniform(s, o.min_local_filler, o.max_local_filler), s));
    const std::vector<TokenId> q =
        tok.Encode("\n" + fact.question, /*add_special=*/false, /*parse_special=*/false);
    const std::vector<TokenId> a =
        tok.Encode(" " + key + ".", /*add_special=*/false, /*parse_special=*/false);
    seq.insert(seq.end(), q.begin(), q.end());
    const size_t answer_at = seq.size();
    seq.insert(seq.end(), a.begin(), a.end());
    ex.ids.assign(seq.begin(), seq.end() - 1);
    ex.labels.assign(ex.ids.size(), kIgnoreLabel);
    for (size_t t = answer_at; t < seq.size(); ++t) ex.labels[t - 1] = seq[t];
    out.push_back(std::move(ex));
  }
  return out;
}

StatusOr<std::vector<std::vector<TokenId>>> MakeFillerChunks(const Tokenizer& tok,
                                                             std::string_view filler,
                                                             int64_t chunk_tokens, int64_t count,
                                                             uint64_t seed) {
  if (chunk_tokens < 1 || count < 0) {
    return InvalidArgumentError("filler chunks: chunk_tokens must be >= 1 and count >= 0");
  }
  if (filler.size() < 256) return InvalidArgumentError("filler chunks: the filler text is too short");
  std::vector<std::vector<TokenId>> out;
  uint64_t s = seed ^ 0x5851f42d4c957f2dull;
  for (int64_t i = 0; i < count; ++i) {
    ASSIGN_OR_RETURN(std::vector<TokenId> c, FillerTokens(tok, filler, chunk_tokens, s));
    out.push_back(std::move(c));
  }
  return out;
}

}  // namespace muninn::model
