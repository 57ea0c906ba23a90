// Regex-free implementations of the pre-tokenizer patterns byte-level BPE vocabularies use.
// Each flavour reproduces one regular expression exactly (documented in pretokenizer.cc), written
// out by hand over Unicode categories so that no regex engine is needed. Invalid UTF-8 bytes are
// treated as characters that are neither letters, numbers nor whitespace.
#pragma once

#include <string_view>
#include <vector>

#include "muninn/core/status.h"

namespace muninn::model::internal {

enum class PreTokenizerFlavor {
  kNone,    // the whole fragment is one word
  kGpt2,    // GPT-2 / ByteLevel(use_regex=true)
  kSmollm,  // every \p{N} alone, then GPT-2 (HF Digits(individual_digits) + ByteLevel)
  kLlama3,  // Llama-3 (numbers in groups of up to 3)
  kQwen2,   // Llama-3 pattern with single-digit numbers
};

// Maps a GGUF tokenizer.ggml.pre name; Unimplemented for names this build does not know.
StatusOr<PreTokenizerFlavor> PreTokenizerFromGgufName(std::string_view name);
// Recognises the regex of an HF Split pre-tokenizer; Unimplemented for other patterns.
StatusOr<PreTokenizerFlavor> PreTokenizerFromRegex(std::string_view pattern);

// The GGUF name PreTokenizerFromGgufName maps to `flavor`.
const char* PreTokenizerName(PreTokenizerFlavor flavor);

// Appends the words of `text` (views into it, tiling it exactly) to `words`.
void PreTokenize(PreTokenizerFlavor flavor, std::string_view text,
                 std::vector<std::string_view>* words);

}  // namespace muninn::model::internal
