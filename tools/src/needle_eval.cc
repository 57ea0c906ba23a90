#include "muninn/tools/needle_eval.h"

#include <algorithm>
#include <cctype>

#include "chat_generation.h"

namespace muninn::tools {
namespace {

uint64_t Mix(uint64_t& s) {
  uint64_t z = (s += 0x9e3779b97f4a7c15ull);
  z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
  z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
  return z ^ (z >> 31);
}

template <size_t N>
const char* Pick(const char* const (&list)[N], uint64_t& s) {
  return list[Mix(s) % N];
}

// Invented names and words: none occurs in the Bible texts used as haystacks.
constexpr const char* kNames[] = {"Tavish", "Marlowe", "Quillan", "Odessa", "Brennor", "Liesel",
                                  "Corwin", "Ysolde", "Fenwick", "Rowena", "Dashiell", "Maelis"};
constexpr const char* kBoats[] = {"Marigold", "Silverwind", "Starling", "Juniper", "Bluebell",
                                  "Thistledown", "Kestrel", "Moonwake"};
constexpr const char* kColours[] = {"turquoise", "crimson", "amber", "lavender", "emerald",
                                    "saffron", "indigo", "coral"};
constexpr const char* kTowns[] = {"Arlesford", "Brindlemoor", "Caskwell", "Dunmarsh", "Elderby",
                                  "Fallowmere", "Greywick", "Hollinsby"};
constexpr const char* kThings[] = {"lantern", "compass", "violin", "telescope", "kettle",
                                   "umbrella", "typewriter", "bicycle"};

std::string Lower(std::string s) {
  for (char& c : s) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
  return s;
}

}  // namespace

NeedleFact MakeNeedleFact(uint64_t seed) {
  uint64_t s = seed * 0x2545F4914F6CDD1Dull + 7;
  const std::string name = Pick(kNames, s);
  NeedleFact f;
  switch (Mix(s) % 4) {
    case 0: {
      f.answer = Pick(kBoats, s);
      f.sentence = name + "'s boat was named " + f.answer + ".";
      f.question = "What was the name of " + name + "'s boat?";
      break;
    }
    case 1: {
      f.answer = Pick(kColours, s);
      f.sentence = "The favourite colour of " + name + " was " + f.answer + ".";
      f.question = "What was the favourite colour of " + name + "?";
      break;
    }
    case 2: {
      f.answer = Pick(kTowns, s);
      f.sentence = name + " was born in the town of " + f.answer + ".";
      f.question = "In which town was " + name + " born?";
      break;
    }
    default: {
      f.answer = Pick(kThings, s);
      f.sentence = "The gift that " + name + " received was a " + f.answer + ".";
      f.question = "What was the gift that " + name + " received?";
      break;
    }
  }
  return f;
}

Status NeedleOptions::Validate() const {
  if (lengths.empty() || depths.empty()) return InvalidArgumentError("needle needs lengths and depths");
  for (int64_t l : lengths) {
    if (l < 64 || l > (int64_t{1} << 24)) return InvalidArgumentError("needle lengths must be in [64, 16M] tokens");
  }
  for (double d : depths) {
    if (!(d >= 0.0 && d <= 1.0)) return InvalidArgumentError("needle depths must be in [0, 1]");
  }
  if (trials < 1) return InvalidArgumentError("needle trials must be >= 1");
  if (fillers.empty()) return InvalidArgumentError("needle needs at least one filler text");
  if (max_tokens < 1) return InvalidArgumentError("needle max_tokens must be >= 1");
  if (ceiling_tokens < 16) return InvalidArgumentError("needle ceiling_tokens must be >= 16");
  return Status::Ok();
}

StatusOr<std::vector<NeedleTrial>> RunNeedle(retriever::LongContextSession& session,
                                             const model::ChatTemplate& chat,
                                             const NeedleOptions& options,
                                             const std::function<Status()>& reset_bank,
                                             const std::function<void(const NeedleTrial&)>& on_trial) {
  RETURN_IF_ERROR(options.Validate());
  const model::Tokenizer& tok = *session.tokenizer();
  std::vector<NeedleTrial> out;
  uint64_t seed = options.seed;
  const std::vector<int64_t> lengths =
      options.ceiling ? std::vector<int64_t>{options.ceiling_tokens} : options.lengths;
  for (const FillerText& filler : options.fillers) {
    for (int64_t length : lengths) {
      for (double depth : options.depths) {
        for (int64_t t = 0; t < options.trials; ++t, ++seed) {
          const NeedleFact fact = MakeNeedleFact(seed);
          // One haystack per (filler, length): the trials differ in the fact and its depth, and
          // chunks before the fact repeat across trials (an embedding cache can reuse them).
          ASSIGN_OR_RETURN(std::string hay,
                           HaystackText(tok, filler, length, options.seed * 1000003u + static_cast<uint64_t>(length)));
          const std::string doc = InsertAtDepth(hay, "\n" + fact.sentence + "\n", depth);
          NeedleTrial trial;
          trial.filler = filler.name;
          trial.requested_length = length;
          trial.length = static_cast<int64_t>(tok.Encode(doc, false, false).size());
          trial.depth = depth;
          trial.question = fact.question;
          trial.expected = fact.answer;
          trial.ceiling = options.ceiling;
          ChatTurnOptions turn;
          turn.generate.max_tokens = options.max_tokens;
          const model::ChatMessage msg{"user", fact.question};
          std::vector<model::ChatMessage> msgs{msg};
          if (options.ceiling) {
            // The passage in the prompt exactly as the re-read mode shows excerpts.
            retriever::Excerpt passage;
            passage.text = doc;
            msgs = WithExcerpts(std::span<const retriever::Excerpt>(&passage, 1), msgs);
            trial.fact_retrieved = true;
          } else {
            if (reset_bank) RETURN_IF_ERROR(reset_bank());
            if (session.options().use_memory) {
              RETURN_IF_ERROR(session.IngestText(/*doc_id=*/1, doc).status());
            }
          }
          ASSIGN_OR_RETURN(ChatTurnResult r, RunChatTurn(session, chat, msgs, fact.question, turn));
          trial.response = r.generation.text;
          trial.pass = Lower(r.generation.text).find(Lower(fact.answer)) != std::string::npos;
          for (const memory::SearchHit& h : r.hits) {
            if (session.bank() == nullptr) break;
            auto rec = session.bank()->GetChunk(h.id);
            if (rec.ok() && rec->text.find(fact.answer) != std::string::npos) trial.fact_retrieved = true;
          }
          if (on_trial) on_trial(trial);
          out.push_back(std::move(trial));
        }
      }
    }
  }
  return out;
}

nlohmann::json ToJson(const NeedleTrial& t) {
  return {{"filler", t.filler},          {"requested_length", t.requested_length},
          {"length", t.length},          {"depth", t.depth},
          {"question", t.question},      {"expected", t.expected},
          {"response", t.response},      {"pass", t.pass},
          {"fact_retrieved", t.fact_retrieved}, {"ceiling", t.ceiling}};
}

}  // namespace muninn::tools
