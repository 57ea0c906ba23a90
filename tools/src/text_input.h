// Private to tools/: checks on text a user hands to ingest (CLI files and the server's document
// upload), so that an empty file or a binary one is an error rather than a 0-token document or
// a bank full of mojibake.
#pragma once

#include <string_view>

#include "muninn/core/status.h"

namespace muninn::tools {

// InvalidArgument, naming `what` (a file name, "field 'text'"), when `text` is empty, holds only
// whitespace, or (unless `binary_ok`) looks binary: a NUL byte, or more than 10% of its bytes in
// invalid UTF-8 sequences. `override_hint` says how to accept binary input anyway (e.g.
// "pass --binary-ok").
Status CheckTextInput(std::string_view text, std::string_view what, bool binary_ok,
                      std::string_view override_hint);

// Bytes of `text` that are not part of a valid UTF-8 sequence.
size_t CountInvalidUtf8Bytes(std::string_view text);

}  // namespace muninn::tools
