// daemon/cli/key_text.h — a key (or key prefix) as the CLI prints it on one
// line: UTF-8 text as it is; control bytes, backslashes and bytes that are
// not UTF-8 as \xNN. An empty prefix (a key with no separator) is "(none)".
#pragma once

#include <cstdio>
#include <string>
#include <string_view>

namespace nearcache::daemon {

inline std::string key_text(std::string_view k, bool is_prefix = false) {
  if (k.empty()) return is_prefix ? "(none)" : "";
  if (is_prefix && (k == "(other)")) return std::string(k);  // key_stats' overflow row
  std::string out;
  auto hex = [&](unsigned char c) {
    char b[5];
    snprintf(b, sizeof b, "\\x%02x", c);
    out += b;
  };
  for (size_t i = 0; i < k.size();) {
    const auto c = static_cast<unsigned char>(k[i]);
    if (c < 0x80) {
      if (c < 0x20 || c == 0x7f || c == '\\') hex(c);
      else out += char(c);
      ++i;
      continue;
    }
    // A well-formed UTF-8 sequence (no overlongs, no surrogates) is kept.
    const size_t n = c >= 0xf0 && c <= 0xf4 ? 4 : c >= 0xe0 && c < 0xf0 ? 3 : c >= 0xc2 && c < 0xe0 ? 2 : 0;
    bool ok = n > 0 && i + n <= k.size();
    for (size_t j = 1; ok && j < n; ++j) ok = (static_cast<unsigned char>(k[i + j]) & 0xc0) == 0x80;
    if (ok && n == 3) {
      const auto c1 = static_cast<unsigned char>(k[i + 1]);
      ok = !(c == 0xe0 && c1 < 0xa0) && !(c == 0xed && c1 >= 0xa0);
    }
    if (ok && n == 4) {
      const auto c1 = static_cast<unsigned char>(k[i + 1]);
      ok = !(c == 0xf0 && c1 < 0x90) && !(c == 0xf4 && c1 >= 0x90);
    }
    if (!ok) {
      hex(c);
      ++i;
      continue;
    }
    out.append(k.substr(i, n));
    i += n;
  }
  return out;
}

}  // namespace nearcache::daemon
