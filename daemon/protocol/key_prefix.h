// daemon/protocol/key_prefix.h — what a "key prefix" is, for STATUS's
// traffic by prefix (engine/key_stats.h) and `nearcache memory --by-prefix`
// alike: the key up to and including its DEPTH-th separator (or its last one,
// when it has fewer); "" when it has none (shown as "(none)").
#pragma once

#include <cstdint>
#include <string_view>

namespace nearcache::daemon {

inline constexpr std::string_view kDefaultKeySeparators = ":";

// Every daemon lookup goes through here (key_stats): one separator, the
// usual case, is one memchr a level instead of a search of the separators
// for every character.
inline std::string_view key_prefix(std::string_view key, uint32_t depth,
                                   std::string_view separators = kDefaultKeySeparators) {
  size_t end = 0;
  if (separators.size() == 1) {
    for (; depth > 0; --depth) {
      const size_t i = key.find(separators[0], end);
      if (i == std::string_view::npos) break;
      end = i + 1;
    }
    return key.substr(0, end);
  }
  for (size_t i = 0; i < key.size() && depth > 0; ++i)
    if (separators.find(key[i]) != std::string_view::npos) end = i + 1, --depth;
  return key.substr(0, end);
}

}  // namespace nearcache::daemon
