#include "text_input.h"

#include <cstdint>
#include <string>

namespace muninn::tools {

size_t CountInvalidUtf8Bytes(std::string_view s) {
  size_t bad = 0;
  size_t i = 0;
  while (i < s.size()) {
    const auto c = static_cast<unsigned char>(s[i]);
    size_t n = 0;
    uint32_t cp = 0;
    if (c < 0x80) {
      ++i;
      continue;
    } else if ((c & 0xe0) == 0xc0) {
      n = 1;
      cp = c & 0x1f;
    } else if ((c & 0xf0) == 0xe0) {
      n = 2;
      cp = c & 0x0f;
    } else if ((c & 0xf8) == 0xf0) {
      n = 3;
      cp = c & 0x07;
    } else {
      ++bad;
      ++i;
      continue;
    }
    bool ok = i + n < s.size();  // the n continuation bytes are there
    for (size_t k = 1; ok && k <= n; ++k) {
      const auto d = static_cast<unsigned char>(s[i + k]);
      if ((d & 0xc0) != 0x80) ok = false;
      cp = (cp << 6) | (d & 0x3f);
    }
    // Overlong forms, surrogates and code points past U+10FFFF are invalid too.
    if (ok && ((n == 1 && cp < 0x80) || (n == 2 && cp < 0x800) || (n == 3 && cp < 0x10000) ||
               (cp >= 0xd800 && cp <= 0xdfff) || cp > 0x10ffff)) {
      ok = false;
    }
    if (ok) {
      i += n + 1;
    } else {
      ++bad;
      ++i;
    }
  }
  return bad;
}

Status CheckTextInput(std::string_view text, std::string_view what, bool binary_ok,
                      std::string_view override_hint) {
  const std::string name(what);
  if (text.find_first_not_of(" \t\r\n\f\v") == std::string_view::npos) {
    return InvalidArgumentError(name + (text.empty() ? " is empty" : " holds only whitespace") +
                                "; there is nothing to store");
  }
  if (binary_ok) return Status::Ok();
  if (const size_t nul = text.find('\0'); nul != std::string_view::npos) {
    return InvalidArgumentError(name + " looks binary (a NUL byte at offset " + std::to_string(nul) +
                                "); only text can be read. " + std::string(override_hint) +
                                " to store it anyway");
  }
  const size_t bad = CountInvalidUtf8Bytes(text);
  if (bad * 10 > text.size()) {
    return InvalidArgumentError(name + " looks binary (" + std::to_string(bad) + " of " +
                                std::to_string(text.size()) +
                                " bytes are not valid UTF-8); only text can be read. " +
                                std::string(override_hint) + " to store it anyway");
  }
  return Status::Ok();
}

}  // namespace muninn::tools
