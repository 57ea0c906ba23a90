// libFuzzer harness for CreateTokenizer on vocabulary data, structure-aware: the input picks one
// of the tiny valid vocabularies (byte-level BPE, SentencePiece, WordPiece) and then a list of
// edits to it — replaced / added tokens (duplicates, empty strings, byte-token look-alikes),
// token types and scores (out-of-range ones too), merges built from existing tokens or raw bytes,
// special ids (negative, past the end), model / pre-tokenizer names and flags — exactly the
// shape of what a GGUF file's tokenizer.ggml.* keys or a tokenizer.json can hold. What remains
// of the input is the text. A spec must give a Status error or a tokenizer that passes
// ExerciseTokenizer.
#include <fuzzer/FuzzedDataProvider.h>

#include <cstddef>
#include <cstdint>
#include <string>
#include <vector>

#include "tokenizer_fuzz_common.h"

namespace {

using namespace muninn;
using model::TokenId;
using model::VocabSpec;

constexpr size_t kMaxTokens = 2048;

std::string SomeToken(FuzzedDataProvider& in, const VocabSpec& spec) {
  switch (in.ConsumeIntegralInRange<int>(0, 5)) {
    case 0:
      return in.ConsumeRandomLengthString(16);
    case 1:
      return {};
    case 2: {
      char buf[8];
      std::snprintf(buf, sizeof(buf), "<0x%02X>", in.ConsumeIntegral<uint8_t>());
      return buf;
    }
    case 3:
      return in.PickValueInArray({"▁", "Ġ", "##", "[UNK]", "<unk>", "<s>", "</s>", "<|im_end|>",
                                  "[CLS]", "[SEP]", " ", "\xE2\x96", "##a", "a b"});
    default: {
      // Two existing tokens joined: a merge result.
      if (spec.tokens.empty()) return "x";
      const auto n = spec.tokens.size() - 1;
      return spec.tokens[in.ConsumeIntegralInRange<size_t>(0, n)] +
             spec.tokens[in.ConsumeIntegralInRange<size_t>(0, n)];
    }
  }
}

TokenId SomeId(FuzzedDataProvider& in, const VocabSpec& spec) {
  const auto n = static_cast<int64_t>(spec.tokens.size());
  switch (in.ConsumeIntegralInRange<int>(0, 3)) {
    case 0:
      return model::kNoToken;
    case 1:
      return in.ConsumeIntegral<TokenId>();
    default:
      return static_cast<TokenId>(in.ConsumeIntegralInRange<int64_t>(-1, n + 1));
  }
}

void Edit(FuzzedDataProvider& in, VocabSpec* spec) {
  const size_t n = spec->tokens.size();
  auto index = [&] { return n == 0 ? 0 : in.ConsumeIntegralInRange<size_t>(0, n - 1); };
  switch (in.ConsumeIntegralInRange<int>(0, 15)) {
    case 0:
      if (n > 0) spec->tokens[index()] = SomeToken(in, *spec);
      break;
    case 1:
      if (n < kMaxTokens) {
        spec->tokens.push_back(SomeToken(in, *spec));
        if (!spec->token_types.empty() && in.ConsumeBool()) {
          spec->token_types.push_back(in.ConsumeIntegralInRange<int32_t>(-1, 7));
        }
        if (!spec->scores.empty() && in.ConsumeBool()) {
          spec->scores.push_back(in.ConsumeFloatingPoint<float>());
        }
      }
      break;
    case 2:
      if (n > 0) spec->tokens.pop_back();
      break;
    case 3:
      if (!spec->token_types.empty()) {
        spec->token_types[in.ConsumeIntegralInRange<size_t>(0, spec->token_types.size() - 1)] =
            in.ConsumeIntegralInRange<int32_t>(-1, 7);
      } else {
        spec->token_types.assign(n, 1);
      }
      break;
    case 4:
      if (!spec->scores.empty()) {
        spec->scores[in.ConsumeIntegralInRange<size_t>(0, spec->scores.size() - 1)] =
            in.ConsumeFloatingPoint<float>();
      } else if (in.ConsumeBool()) {
        spec->scores.assign(n, 0.0f);
      }
      break;
    case 5: {
      std::string merge;
      if (in.ConsumeBool() && n > 0) {
        merge = spec->tokens[index()] + " " + spec->tokens[index()];
      } else {
        merge = in.ConsumeRandomLengthString(12);
      }
      if (spec->merges.size() < kMaxTokens) {
        spec->merges.insert(spec->merges.begin() + static_cast<int64_t>(in.ConsumeIntegralInRange<
                                                       size_t>(0, spec->merges.size())),
                            std::move(merge));
      }
      break;
    }
    case 6:
      if (!spec->merges.empty()) spec->merges.erase(spec->merges.begin());
      break;
    case 7:
      spec->bos_id = SomeId(in, *spec);
      break;
    case 8:
      spec->eos_id = SomeId(in, *spec);
      break;
    case 9:
      spec->unk_id = SomeId(in, *spec);
      break;
    case 10:
      (in.ConsumeBool() ? spec->cls_id : spec->sep_id) = SomeId(in, *spec);
      break;
    case 11:
      if (spec->extra_eog_ids.size() < 16) spec->extra_eog_ids.push_back(SomeId(in, *spec));
      break;
    case 12:
      spec->pre = in.PickValueInArray({"default", "gpt2", "smollm", "llama3", "llama-bpe",
                                       "qwen2", "none", "mystery"});
      break;
    case 13:
      spec->model = in.PickValueInArray({"gpt2", "llama", "bert", "rwkv"});
      break;
    case 14:
      switch (in.ConsumeIntegralInRange<int>(0, 5)) {
        case 0:
          spec->add_bos = in.ConsumeBool();
          break;
        case 1:
          spec->add_eos = in.ConsumeBool();
          break;
        case 2:
          spec->add_space_prefix = in.ConsumeBool();
          break;
        case 3:
          spec->ignore_merges = in.ConsumeBool();
          break;
        case 4:
          spec->lowercase = in.ConsumeBool();
          spec->strip_accents = in.ConsumeBool();
          break;
        default:
          spec->handle_chinese_chars = in.ConsumeBool();
          spec->clean_text = in.ConsumeBool();
          break;
      }
      break;
    default:
      if (in.ConsumeBool()) {
        spec->continuing_subword_prefix = in.ConsumeRandomLengthString(4);
      } else {
        spec->max_input_chars_per_word = in.ConsumeIntegralInRange<int32_t>(-1, 300);
      }
      break;
  }
}

}  // namespace

extern "C" int LLVMFuzzerInitialize(int*, char***) {
  // Without seeds libFuzzer starts from 1-byte inputs and grows them slowly; a few fixed
  // pseudo-random inputs of each vocabulary kind start it with edits and text to mutate.
  std::vector<std::pair<std::string, std::string>> seeds;
  uint32_t state = 12345;
  for (int kind = 0; kind < 3; ++kind) {
    for (size_t len : {64, 512, 2048}) {
      std::string bytes(1, static_cast<char>(kind));
      for (size_t i = 1; i < len; ++i) {
        state = state * 1664525u + 1013904223u;
        bytes.push_back(static_cast<char>(state >> 24));
      }
      bytes += "hello world the café 東京 123 <|im_end|>";
      seeds.emplace_back("seed_" + std::to_string(kind) + "_" + std::to_string(len), bytes);
    }
  }
  fuzz::WriteSeedsIfAsked(seeds);
  return 0;
}

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  FuzzedDataProvider in(data, size);
  static const VocabSpec* const kBase =
      new VocabSpec[3]{fuzz::TinyByteLevelSpec(), fuzz::TinySpmSpec(), fuzz::TinyWordPieceSpec()};
  VocabSpec spec = kBase[in.ConsumeIntegralInRange<int>(0, 2)];
  for (int edits = in.ConsumeIntegralInRange<int>(0, 24); edits > 0; --edits) Edit(in, &spec);
  const std::string text = in.ConsumeRemainingBytesAsString();
  auto t = model::CreateTokenizer(spec);
  if (!t.ok()) return 0;
  fuzz::ExerciseTokenizer(**t, text);
  return 0;
}
