#include "muninn/tools/summarizer.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <set>

#include "muninn/tools/evals.h"
#include "muninn/tools/summary_eval.h"
#include "retriever/tiny_stack.h"
#include "tests/tools/run_cli.h"
#include "tools/src/app_config.h"

namespace muninn::tools {
namespace {

using muninn::testing::ByteTokenizer;
using muninn::testing::InMemoryBank;
using muninn::testing::KeywordEmbedder;
using muninn::testing::TinyModel;

class SummarizerTest : public ::testing::Test {
 protected:
  void SetUp() override {
    backend_ = std::move(*CreateCpuBackend({}));
    model_ = TinyModel(backend_.get());
    tok_ = ByteTokenizer();
    bank_ = InMemoryBank(4);
    retriever::LongContextOptions o;
    o.memory_layer = 1;
    o.retrieval_layers = {1, 3};
    o.chunk_tokens = 32;
    o.top_k = 2;
    o.local_window = 512;
    session_ = std::move(*retriever::LongContextSession::Create(model_.get(), tok_.get(),
                                                                bank_.get(), &embedder_, o));
  }
  std::unique_ptr<Backend> backend_;
  std::unique_ptr<model::Model> model_;
  std::unique_ptr<model::Tokenizer> tok_;
  std::unique_ptr<memory::MemoryBank> bank_;
  KeywordEmbedder embedder_;
  std::unique_ptr<retriever::LongContextSession> session_;
};

// Eight chapters under headings, each with names of its own and a recurring cast.
std::string Book() {
  const char* people[] = {"Abram", "Sarai", "Lot", "Hagar", "Isaac", "Rebekah", "Esau", "Jacob"};
  std::string text;
  for (int c = 0; c < 8; ++c) {
    text += "\nBook " + std::to_string(c + 1) + "\n\n";
    text += "  1 And " + std::string(people[c]) +
            " went into the land of Canaan with Noah and his house.\n";
    text += "  2 Then the people of " + std::string(people[c]) +
            " dwelt there many days, and they were glad.\n";
    text += "  3 And it rained; and the rivers rose over the fields of the valley all that year.\n";
    text += "  4 So Noah spoke to " + std::string(people[c]) +
            ", and they built a city by the river.\n";
  }
  return text;
}

TEST_F(SummarizerTest, SectionsAreCutAtHeadingsAndEveryLinePointsIntoTheSource) {
  const std::string text = Book();
  SummarizerOptions o;
  o.section_tokens = static_cast<int64_t>(text.size()) / 8;  // one byte per token: 8 sections
  o.condense = false;
  o.merge_fanout = 3;
  o.brief_sentences = 4;
  std::vector<std::string> stages;
  std::string streamed;
  auto r = Summarize(
      *session_, model::ChatTemplate::Plain(), text, o,
      [&](std::string_view stage, int64_t done, int64_t total) {
        if (stages.empty() || stages.back() != stage) stages.emplace_back(stage);
        EXPECT_LE(done, total);
      },
      [&](std::string_view p) { streamed += p; });
  ASSERT_TRUE(r.ok()) << r.status();
  EXPECT_EQ(stages, (std::vector<std::string>{"select", "merge"}));
  EXPECT_EQ(streamed, r->summary);
  EXPECT_EQ(r->n_tokens, static_cast<int64_t>(text.size()));
  EXPECT_EQ(r->n_sentences, 32);
  ASSERT_EQ(r->n_sections, 8);
  // 8 sections -> 3 groups of <= 3 -> the root.
  ASSERT_EQ(r->levels.size(), 3u);
  EXPECT_EQ(r->levels[1].size(), 3u);
  EXPECT_EQ(r->levels[2].size(), 1u);
  EXPECT_EQ(r->levels[1][0].label, "Book 1\u20133");
  for (int64_t i = 0; i < r->n_sections; ++i) {
    const SummaryNode& n = r->sections()[static_cast<size_t>(i)];
    EXPECT_EQ(n.label, "Book " + std::to_string(i + 1));
    // Two picks each; the first section also opens with the document's opening sentence.
    EXPECT_EQ(n.lines.size(), i == 0 ? 3u : 2u);
  }
  EXPECT_EQ(r->sections().front().begin, 0);
  EXPECT_EQ(r->sections().back().end, static_cast<int64_t>(text.size()));
  for (const auto& level : r->levels) {
    for (const SummaryNode& n : level) {
      for (size_t k = 0; k < n.lines.size(); ++k) {
        const SummaryLine& l = n.lines[k];
        EXPECT_FALSE(l.condensed);
        EXPECT_GE(l.begin, n.begin);
        EXPECT_LE(l.end, n.end);
        if (k > 0) {
          EXPECT_LT(n.lines[k - 1].begin, l.begin);  // document order
        }
        // The line is the source sentence (white space collapsed, verse numbers dropped).
        const std::string src =
            text.substr(static_cast<size_t>(l.begin), static_cast<size_t>(l.end - l.begin));
        EXPECT_EQ(src.substr(0, 8), l.text.substr(0, 8));
      }
    }
  }
  // The root keeps the earliest line, one line from each third and each of its 3 children, then
  // the best ones up to 4; it opens where the document opens.
  EXPECT_EQ(r->root().lines.size(), 4u);
  EXPECT_EQ(r->root().lines.front().begin, r->sections().front().lines.front().begin);
  // Every name of every line is in the source, and each third is represented.
  const SummaryEval e = EvaluateSummary(text, SummaryProse(*r, SummaryStyle::kSections));
  EXPECT_EQ(e.name_precision, 1.0);
  EXPECT_TRUE(e.all_thirds);
  EXPECT_EQ(e.sentence_order, 1.0);

  const std::string sections = RenderSummary(*r, SummaryStyle::kSections);
  EXPECT_EQ(std::count(sections.begin(), sections.end(), '\n'), 8);
  EXPECT_EQ(sections.rfind("[Book 1] ", 0), 0u);
  const std::string outline = RenderSummary(*r, SummaryStyle::kOutline);
  EXPECT_EQ(outline.rfind("- Book 1\u20133: ", 0), 0u);
  EXPECT_NE(outline.find("\n  - Book 2: "), std::string::npos);
  const std::string brief = RenderSummary(*r, SummaryStyle::kBrief);
  EXPECT_EQ(std::count(brief.begin(), brief.end(), '\n'), 1);  // one paragraph
  SummaryStyle style;
  EXPECT_TRUE(ParseSummaryStyle("outline", &style));
  EXPECT_EQ(style, SummaryStyle::kOutline);
  EXPECT_FALSE(ParseSummaryStyle("poem", &style));
}

// The brief opens where the book opens, even with a sentence that names no one, and covers the
// book in order: each third, sentences and names in the source's order.
TEST_F(SummarizerTest, BriefOpensWithTheOpeningSentenceAndKeepsTheBookOrder) {
  const std::string opening = "In the beginning the waters covered all the earth and the sky.";
  const std::string text = opening + "\n" + Book();
  SummarizerOptions o;
  o.section_tokens = static_cast<int64_t>(text.size()) / 8;
  o.condense = false;
  auto r = Summarize(*session_, model::ChatTemplate::Plain(), text, o);
  ASSERT_TRUE(r.ok()) << r.status();
  EXPECT_EQ(r->sections().front().lines.front().begin, 0);
  EXPECT_EQ(r->sections().front().lines.front().text, opening);
  EXPECT_EQ(r->root().lines.front().text, opening);
  EXPECT_EQ(r->summary.rfind(opening, 0), 0u);
  const SummaryEval e = EvaluateSummary(text, SummaryProse(*r, SummaryStyle::kBrief));
  EXPECT_TRUE(e.all_thirds);
  EXPECT_DOUBLE_EQ(e.sentence_order, 1.0);
  EXPECT_GE(e.name_order, SummaryTargets().name_order);
  EXPECT_DOUBLE_EQ(e.name_precision, 1.0);
}

// The tiny model writes noise: every condensed line it proposes must be verified or dropped, so
// the summary's names stay the source's whatever the model does.
TEST_F(SummarizerTest, CondensingNeverLetsAnInventedNameThrough) {
  const std::string text = Book();
  SummarizerOptions o;
  o.section_tokens = static_cast<int64_t>(text.size()) / 4;
  o.condense_tokens = 6;
  auto r = Summarize(*session_, model::ChatTemplate::Plain(), text, o);
  ASSERT_TRUE(r.ok()) << r.status();
  int64_t lines = 0;
  for (const SummaryNode& n : r->sections()) lines += static_cast<int64_t>(n.lines.size());
  EXPECT_EQ(r->condensed_kept + r->condensed_rejected, lines);
  EXPECT_GT(r->generated_tokens, 0);
  EXPECT_LE(r->generated_tokens, lines * 6);
  EXPECT_EQ(EvaluateSummary(text, SummaryProse(*r, SummaryStyle::kSections)).name_precision, 1.0);
}

TEST(CondensationTest, OnlyTheSourceWithWordsOrWholeClausesLeftOutPasses) {
  const std::string src =
      "And Abraham prayed unto God: and God healed Abimelech, and his wife, and his maidservants; "
      "and they bare children.";
  EXPECT_TRUE(IsFaithfulCondensation(src, "Abraham prayed unto God: and God healed Abimelech."));
  // A whole clause left out, with clause marks on both sides.
  EXPECT_TRUE(IsFaithfulCondensation(src, "God healed Abimelech, and they bare children."));
  // "healed Abimelech, and his wife" must not become "healed his wife".
  EXPECT_FALSE(IsFaithfulCondensation(src, "Abraham prayed to God: and God healed his wife."));
  EXPECT_FALSE(IsFaithfulCondensation(src, "Abraham prayed unto God: and God healed Sarah."));
  EXPECT_FALSE(IsFaithfulCondensation(src, "Abraham prayed in 1999 and God healed Abimelech."));
  EXPECT_FALSE(IsFaithfulCondensation(src, "Abraham prayed unto God."));  // under 6 words
  EXPECT_FALSE(IsFaithfulCondensation(src, src));                         // not shorter
  EXPECT_FALSE(IsFaithfulCondensation(src, "God healed his wife and God healed his wife."));
  EXPECT_FALSE(IsFaithfulCondensation(src, "The king of the city went to war with many people."));
  // A word of the model's own bridging a whole-clause cut changes who the covenant is with.
  const std::string covenant =
      "In the same day the LORD made a covenant with Abram, saying, Unto thy seed have I given "
      "this "
      "land, from the river of Egypt unto the great river, the river Euphrates: The Kenites, and "
      "the "
      "Kenizzites, and the Kadmonites.";
  EXPECT_FALSE(IsFaithfulCondensation(covenant,
                                      "The LORD made a covenant with Abram, and the Kenites, and "
                                      "the Kenizzites, and the Kadmonites."));
  EXPECT_TRUE(IsFaithfulCondensation(covenant, "The LORD made a covenant with Abram."));
  // The dropped tail may follow a clause mark; after a comma only if the kept part's last clause
  // is more than a two-word aside (Genesis 41:51).
  const std::string manasseh =
      "And Joseph called the name of the firstborn Manasseh: For God, said he, hath made me "
      "forget all my toil, and all my father's house.";
  EXPECT_FALSE(IsFaithfulCondensation(
      manasseh, "Joseph called the name of the firstborn Manasseh: For God, said he."));
  EXPECT_TRUE(IsFaithfulCondensation(manasseh, "Joseph called the name of the firstborn Manasseh."));
  EXPECT_FALSE(IsFaithfulCondensation(manasseh,
                                      "Joseph called the name of the firstborn Manasseh: For God."));
}

TEST_F(SummarizerTest, EmptyBinaryOversizedAndWordlessDocumentsAreClearErrors) {
  SummarizerOptions o;
  o.condense = false;
  auto empty = Summarize(*session_, model::ChatTemplate::Plain(), " \n\t ", o);
  EXPECT_EQ(empty.status().code(), StatusCode::kInvalidArgument);
  EXPECT_NE(empty.status().message().find("empty"), std::string_view::npos);
  std::string junk;
  for (int i = 0; i < 300; ++i) junk += static_cast<char>((i * 37) & 0xff);
  auto binary = Summarize(*session_, model::ChatTemplate::Plain(), junk, o);
  EXPECT_EQ(binary.status().code(), StatusCode::kInvalidArgument);
  EXPECT_NE(binary.status().message().find("binary"), std::string_view::npos);
  o.max_input_bytes = 10;
  auto big =
      Summarize(*session_, model::ChatTemplate::Plain(), "A sentence of more than ten bytes.", o);
  EXPECT_EQ(big.status().code(), StatusCode::kInvalidArgument);
  EXPECT_NE(big.status().message().find("--max-bytes"), std::string_view::npos);
  o.max_input_bytes = kDefaultMaxDocumentBytes;
  auto wordless = Summarize(*session_, model::ChatTemplate::Plain(), "12 34 -- 56 !!", o);
  EXPECT_EQ(wordless.status().code(), StatusCode::kInvalidArgument);
  EXPECT_NE(wordless.status().message().find("no sentence"), std::string_view::npos);
}

// The server path: with ingest on, the document is also stored in the session's bank.
TEST_F(SummarizerTest, IngestStoresTheDocumentForTheServer) {
  const std::string text = Book();
  SummarizerOptions o;
  o.condense = false;
  o.ingest = true;
  auto r = Summarize(*session_, model::ChatTemplate::Plain(), text, o);
  ASSERT_TRUE(r.ok()) << r.status();
  EXPECT_EQ(bank_->Stats().n_tokens, static_cast<int64_t>(text.size()));
  // A short text still gets min_sections (4) sections.
  EXPECT_EQ(r->n_sections, 4);
}

// `muninn summarize` and `eval summary` check their input before loading any model, and `eval
// summary --summary-file` scores a given summary with no model at all.
TEST(SummarizeCliTest, InputErrorsAndScoringAGivenSummary) {
  const auto dir =
      std::filesystem::temp_directory_path() / ("muninn_sum_" + std::to_string(::getpid()));
  std::filesystem::create_directories(dir);
  const auto write = [&](const std::string& name, const std::string& body) {
    const auto p = (dir / name).string();
    std::ofstream(p, std::ios::binary) << body;
    return p;
  };
  std::string out;
  EXPECT_EQ(testing::RunCli({"summarize", write("empty.txt", "\n\n")}, &out), 2);
  EXPECT_EQ(testing::RunCli({"summarize", write("bin.txt", std::string("ab\0cd", 5))}, &out), 2);
  const std::string src =
      write("src.txt", "Abram went to Egypt. Sarai went with Abram. Lot stayed.\n");
  EXPECT_EQ(testing::RunCli({"summarize", src, "--max-bytes", "10"}, &out), 2);
  EXPECT_NE(testing::RunCli({"summarize", src, "--style", "poem"}, &out), 0);  // not a style
  const std::string sum = write("sum.txt", "Abram went to Egypt with Brigdeleph.");
  ASSERT_EQ(testing::RunCli({"eval", "summary", src, "--summary-file", sum, "--json"}, &out), 0);
  const nlohmann::json j = nlohmann::json::parse(out);
  ASSERT_EQ(j.size(), 1u);
  EXPECT_DOUBLE_EQ(j[0]["eval"]["name_precision"].get<double>(), 2.0 / 3.0);
  EXPECT_EQ(j[0]["eval"]["unsupported_names"], nlohmann::json::array({"Brigdeleph"}));
  EXPECT_EQ(j[0]["missed_targets"][0], "name_precision");
  EXPECT_EQ(testing::RunCli({"eval", "summary", src, src, "--summary-file", sum}, &out), 2);
  std::filesystem::remove_all(dir);
}

// RunPasskey on the tiny stack: one trial per (length, depth, trial) in order, each tagged with
// the length it was asked for (what the per-length tally groups by), the bank reset before each,
// and the key found in the retrieved chunks whenever the keyword embedder can see it.
TEST_F(SummarizerTest, PasskeyTrialsAreTaggedWithTheirRequestedLength) {
  PasskeyOptions o;
  o.lengths = {600, 900};
  o.depths = {0.0, 0.5};
  o.trials = 2;
  o.local_tokens = 128;
  int resets = 0;
  int seen = 0;
  auto r = RunPasskey(
      *session_, o,
      [&] {
        ++resets;
        std::set<memory::DocumentId> docs;
        for (const auto& c : bank_->ListChunks()) docs.insert(c.doc_id);
        for (auto d : docs) RETURN_IF_ERROR(bank_->DeleteDocument(d).status());
        return Status::Ok();
      },
      [&](const PasskeyTrial&) { ++seen; });
  ASSERT_TRUE(r.ok()) << r.status();
  ASSERT_EQ(r->size(), 8u);
  EXPECT_EQ(resets, 8);
  EXPECT_EQ(seen, 8);
  for (size_t i = 0; i < r->size(); ++i) {
    const PasskeyTrial& t = (*r)[i];
    EXPECT_EQ(t.requested_length, i < 4 ? 600 : 900) << i;
    EXPECT_NEAR(static_cast<double>(t.length), static_cast<double>(t.requested_length), 100.0);
    EXPECT_EQ(t.depth, (i / 2) % 2 == 0 ? 0.0 : 0.5) << i;
    EXPECT_EQ(t.key.size(), 5u);
    EXPECT_FALSE(t.key_in_window) << i;  // depth <= 0.5 of >= 600 tokens, window 128
    EXPECT_LE(t.retrieved_chunks, session_->options().top_k);
    EXPECT_EQ(ToJson(t)["requested_length"], t.requested_length);
  }
  PasskeyOptions bad = o;
  bad.lengths.clear();
  EXPECT_EQ(RunPasskey(*session_, bad, {}, {}).status().code(), StatusCode::kInvalidArgument);
}

TEST(PasskeyPromptTest, KeySitsAtTheRequestedDepth) {
  auto tok = ByteTokenizer();
  for (double depth : {0.0, 0.5, 1.0}) {
    auto p = BuildPasskeyPrompt(*tok, 3000, depth, 256, 42);
    ASSERT_TRUE(p.ok());
    const std::string all = p->prefix_text + p->window_text;
    EXPECT_EQ(p->key.size(), 5u);
    const size_t at = all.find("The pass key is " + p->key);
    ASSERT_NE(at, std::string::npos);
    EXPECT_NEAR(static_cast<double>(at) / static_cast<double>(all.size()), depth, 0.1);
    EXPECT_EQ(p->window_text.size(), 256u);  // one byte per token
    EXPECT_NE(p->window_text.find("What is the pass key?"), std::string::npos);
    EXPECT_NEAR(static_cast<double>(all.size()), 3000.0, 200.0);
  }
  // Different seeds give different keys.
  EXPECT_NE(BuildPasskeyPrompt(*tok, 1000, 0.5, 256, 1)->key,
            BuildPasskeyPrompt(*tok, 1000, 0.5, 256, 2)->key);
}

TEST(AppConfigTest, ParsesAndRejects) {
  const auto dir =
      std::filesystem::temp_directory_path() / ("muninn_cfg_" + std::to_string(::getpid()));
  std::filesystem::create_directories(dir);
  auto write = [&](const std::string& body) {
    const auto p = (dir / "c.json").string();
    std::ofstream(p) << body;
    return p;
  };
  auto ok = LoadAppConfig(write(R"({"model": "/m.gguf", "embedder": "hidden",
      "long_context": {"memory_layer": 3, "retrieval_layers": [3, 5], "chunk_tokens": 64,
                       "memory_position": "before_window", "kv_cache": "q8_0"},
      "bank": {"kv_dtype": "q8_0"}, "summarize": {"max_tokens": 10}})"));
  ASSERT_TRUE(ok.ok()) << ok.status();
  EXPECT_EQ(ok->model_path, "/m.gguf");
  EXPECT_EQ(ok->long_context.memory_layer, 3);
  EXPECT_EQ(ok->long_context.retrieval_layers, (std::vector<int32_t>{3, 5}));
  EXPECT_EQ(ok->long_context.memory_position, retriever::MemoryPosition::kBeforeWindow);
  EXPECT_EQ(ok->bank_kv_dtype, DType::kQ8_0);
  EXPECT_EQ(ok->long_context.kv_cache_dtype, DType::kQ8_0);
  auto f16_default = LoadAppConfig(write(R"({"model": "m", "long_context": {}})"));
  ASSERT_TRUE(f16_default.ok()) << f16_default.status();
  EXPECT_EQ(f16_default->long_context.kv_cache_dtype, DType::kF16);
  const auto bad_kv =
      LoadAppConfig(write(R"({"model": "m", "long_context": {"kv_cache": "q4_0"}})"));
  EXPECT_NE(bad_kv.status().message().find("'kv_cache' must be f16, f32 or q8_0"),
            std::string::npos)
      << bad_kv.status();
  EXPECT_EQ(ok->summarize.max_tokens, 10);
  EXPECT_FALSE(LoadAppConfig(write("[1, 2]")).ok());
  EXPECT_FALSE(LoadAppConfig(write(R"({"embedder": "hidden"})")).ok());  // no model
  EXPECT_FALSE(
      LoadAppConfig(write(R"({"model": "m", "long_context": {"chunk_tokens": "x"}})")).ok());
  EXPECT_FALSE(LoadAppConfig(write(R"({"model": "m", "bank": {"kv_dtype": "q4_K"}})")).ok());
  EXPECT_FALSE(
      LoadAppConfig(write(R"({"model": "m", "long_context": {"memory_position": "top"}})")).ok());
  EXPECT_EQ(LoadAppConfig((dir / "missing.json").string()).status().code(), StatusCode::kNotFound);
  std::filesystem::remove_all(dir);
}

}  // namespace
}  // namespace muninn::tools
