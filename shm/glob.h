// shm/glob.h — glob patterns over keys with the semantics of Redis's
// stringmatchlen (KEYS, SCAN MATCH): `*` any run, `?` any byte, `[abc]`,
// `[^a-z]` (ranges either way round, `\` escapes inside), `\x` a literal x;
// byte-wise and case-sensitive. Used by pattern CLEARs and visits (clear.cc)
// and by the daemon's SCAN, so a pattern means here what it means in Redis.
#pragma once

#include <cstddef>
#include <string_view>
#include <utility>

namespace nearcache::shm {

namespace glob_detail {

// [...] at pat[*p] == '[': whether c is in the class; *p moves past it.
inline bool in_class(std::string_view pat, size_t* p, unsigned char c) {
  const size_t n = pat.size();
  size_t i = *p + 1;
  const bool negate = i < n && pat[i] == '^';
  if (negate) ++i;
  bool match = false;
  while (true) {
    if (i >= n) break;  // unterminated: the class ends with the pattern, as in Redis
    if (pat[i] == '\\' && i + 1 < n) {
      match |= static_cast<unsigned char>(pat[i + 1]) == c;
      i += 2;
    } else if (pat[i] == ']') {
      ++i;
      break;
    } else if (i + 2 < n && pat[i + 1] == '-') {
      unsigned char lo = static_cast<unsigned char>(pat[i]), hi = static_cast<unsigned char>(pat[i + 2]);
      if (lo > hi) std::swap(lo, hi);
      match |= c >= lo && c <= hi;
      i += 3;
    } else {
      match |= static_cast<unsigned char>(pat[i]) == c;
      ++i;
    }
  }
  *p = i;
  return negate ? !match : match;
}

// One pattern element (not `*`) at pat[*p] against byte c; *p moves past it.
inline bool one(std::string_view pat, size_t* p, unsigned char c) {
  const char t = pat[*p];
  if (t == '?') return ++*p, true;
  if (t == '[') return in_class(pat, p, c);
  if (t == '\\' && *p + 1 < pat.size()) {
    *p += 2;
    return static_cast<unsigned char>(pat[*p - 1]) == c;
  }
  ++*p;
  return static_cast<unsigned char>(t) == c;
}

}  // namespace glob_detail

// Whether `s` matches `pat` (greedy with one backtracking point per `*`:
// linear in practice, and never recursive).
inline bool glob_match(std::string_view pat, std::string_view s) {
  const size_t n = pat.size(), npos = std::string_view::npos;
  size_t p = 0, k = 0, star_p = npos, star_k = 0;
  while (k < s.size()) {
    if (p < n && pat[p] == '*') {
      while (p < n && pat[p] == '*') ++p;
      if (p == n) return true;
      star_p = p, star_k = k;
      continue;
    }
    if (p < n) {
      size_t q = p;
      if (glob_detail::one(pat, &q, static_cast<unsigned char>(s[k]))) {
        p = q, ++k;
        continue;
      }
    }
    if (star_p == npos) return false;
    p = star_p, k = ++star_k;
  }
  while (p < n && pat[p] == '*') ++p;
  return p == n;
}

// The bytes every match starts with: the pattern up to its first `*?[\`.
inline std::string_view glob_prefix(std::string_view pat) {
  const size_t i = pat.find_first_of("*?[\\");
  return i == std::string_view::npos ? pat : pat.substr(0, i);
}

// Whether the pattern has no special byte (it then matches itself only).
inline bool glob_literal(std::string_view pat) { return glob_prefix(pat).size() == pat.size(); }

}  // namespace nearcache::shm
