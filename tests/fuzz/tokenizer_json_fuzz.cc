// libFuzzer harness for Hugging Face tokenizer files. The input is a tokenizer.json, optionally
// followed by a NUL byte and a tokenizer_config.json; an input that does not start with '{' is
// also loaded as a BERT folder's vocab.txt (through LoadHfTokenizer on a scratch folder). Every
// input must give a Status error or a tokenizer that passes ExerciseTokenizer: never a crash, an
// uncaught exception, an out-of-range id or invalid UTF-8 from the streaming decoder.
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <string>
#include <string_view>

#include "tokenizer_fuzz_common.h"

namespace {

using namespace muninn;

constexpr std::string_view kText =
    "Hello world, the café 東京 123 <|im_start|>user\n<tool> hello [CLS] a ab \xF0\x9F\x98 <s>";

std::string* scratch_dir = nullptr;

void Load(std::string_view json, std::string_view config) {
  auto t = model::ParseHfTokenizerJson(json, config);
  if (t.ok()) fuzz::ExerciseTokenizer(**t, kText);
}

}  // namespace

extern "C" int LLVMFuzzerInitialize(int*, char***) {
  fuzz::WriteSeedsIfAsked({
      {"bytelevel.json", fuzz::ByteLevelTokenizerJson()},
      {"bytelevel_config.json",
       fuzz::ByteLevelTokenizerJson() + std::string(1, '\0') + fuzz::TokenizerConfigJson()},
      {"llama3.json", fuzz::Llama3TokenizerJson()},
      {"spm_bpe.json", fuzz::SpmBpeTokenizerJson()},
      {"wordpiece.json", fuzz::WordPieceTokenizerJson()},
      {"vocab.txt", fuzz::WordPieceVocabTxt()},
  });
  std::string tmpl = (std::filesystem::temp_directory_path() / "muninn_fuzz_XXXXXX").string();
  fuzz::FuzzCheck(mkdtemp(tmpl.data()) != nullptr, "mkdtemp");
  scratch_dir = new std::string(tmpl);
  std::atexit([] {
    std::error_code ec;
    std::filesystem::remove_all(*scratch_dir, ec);
  });
  return 0;
}

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::string_view input(reinterpret_cast<const char*>(data), size);
  const size_t nul = input.find('\0');
  const std::string_view first = input.substr(0, nul);
  const std::string_view config = nul == std::string_view::npos ? std::string_view()
                                                                 : input.substr(nul + 1);
  Load(first, config);
  if (!first.empty() && first[0] != '{') {
    // A folder with only vocab.txt: LoadHfTokenizer's WordPiece path.
    const std::filesystem::path vocab = std::filesystem::path(*scratch_dir) / "vocab.txt";
    {
      std::ofstream out(vocab, std::ios::binary | std::ios::trunc);
      out.write(first.data(), static_cast<std::streamsize>(first.size()));
    }
    auto t = model::LoadHfTokenizer(*scratch_dir);
    if (t.ok()) fuzz::ExerciseTokenizer(**t, kText);
  }
  return 0;
}
