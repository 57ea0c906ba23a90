// libFuzzer harness for the tokenizer inside a GGUF file: GgufFile::Parse, then
// CreateTokenizerFromGguf (the tokenizer.ggml.* keys: byte-level BPE vocab + merges, SentencePiece
// scores + byte tokens, BERT WordPiece) and the chat template (tokenizer.chat_template ->
// ChatTemplate::FromJinja -> Render -> Encode). Any file must give a Status error or a working
// tokenizer; see ExerciseTokenizer for what "working" means. Seeds: three tiny GGUF vocabularies.
#include <cstddef>
#include <cstdint>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "muninn/model/chat_template.h"
#include "muninn/model/gguf_file.h"
#include "tokenizer_fuzz_common.h"

namespace {

using namespace muninn;

constexpr std::string_view kText =
    "Hello world, the café 東京 123 <|im_start|>user\n<tool> hello [CLS] a ab \xC3 <s>";

std::string AsString(const std::vector<uint8_t>& bytes) {
  return std::string(bytes.begin(), bytes.end());
}

}  // namespace

extern "C" int LLVMFuzzerInitialize(int*, char***) {
  fuzz::WriteSeedsIfAsked({
      {"bytelevel.gguf",
       AsString(fuzz::GgufWithVocab(fuzz::TinyByteLevelSpec(), fuzz::ChatMlTemplate()))},
      {"spm.gguf", AsString(fuzz::GgufWithVocab(fuzz::TinySpmSpec(), fuzz::Llama3Template()))},
      {"wordpiece.gguf", AsString(fuzz::GgufWithVocab(fuzz::TinyWordPieceSpec(), ""))},
  });
  return 0;
}

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  auto file = model::GgufFile::Parse(std::span<const uint8_t>(data, size), nullptr, "fuzz");
  if (!file.ok()) return 0;
  auto t = model::CreateTokenizerFromGguf(**file);
  if (!t.ok()) return 0;
  fuzz::ExerciseTokenizer(**t, kText);
  auto tmpl = model::ChatTemplate::FromJinja(model::GgufChatTemplate(**file));
  if (!tmpl.ok()) return 0;
  const model::ChatMessage messages[] = {{"user", "hello <|im_end|> world"},
                                         {"assistant", " the café "}};
  auto prompt = tmpl->Render(messages, /*add_generation_prompt=*/true);
  if (prompt.ok()) fuzz::ExerciseTokenizer(**t, *prompt, /*max_vocab_walk=*/0);
  return 0;
}
