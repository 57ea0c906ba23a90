// libFuzzer harness for tokenizer.model files (SentencePiece ModelProto, run by libsentencepiece
// through muninn's adapter): any bytes must give a Status error or a tokenizer that passes
// ExerciseTokenizer. Seeds: a tiny BPE model with byte fallback, written field by field, and the
// trainer-made tests/data/tiny_spm.model.
#include <cstddef>
#include <cstdint>
#include <fstream>
#include <sstream>
#include <string_view>

#include "tokenizer_fuzz_common.h"

namespace {
constexpr std::string_view kText = "Hello world, the café 東京 123 <tool> hello <s> \xF0\x9F";
}  // namespace

extern "C" int LLVMFuzzerInitialize(int*, char***) {
  std::ifstream in(MUNINN_SOURCE_DIR "/tests/data/tiny_spm.model", std::ios::binary);
  std::stringstream trained;
  trained << in.rdbuf();
  muninn::fuzz::WriteSeedsIfAsked({{"tiny.model", muninn::fuzz::TinySentencePieceModelProto()},
                                   {"tiny_spm.model", trained.str()}});
  return 0;
}

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  auto t = muninn::fuzz::LoadSentencePieceModelBytes(
      std::string_view(reinterpret_cast<const char*>(data), size));
  if (t.ok()) muninn::fuzz::ExerciseTokenizer(**t, kText);
  return 0;
}
