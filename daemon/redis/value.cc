// daemon/redis/value.cc — see value.h.
#include "redis/value.h"

#include "redis/util.h"

namespace nearcache::redis {

std::string encode_value(std::string_view value, uint8_t flags) {
  if (flags == 0) return std::string(value);
  const uint64_t n = value.size() + 1;  // payload: flags byte + value
  std::string s;
  s.reserve(n + 6);
  if (n <= 0xff) {
    s.push_back(char(0xc7));
    s.push_back(char(n));
  } else if (n <= 0xffff) {
    s.push_back(char(0xc8));
    s.push_back(char(n >> 8));
    s.push_back(char(n));
  } else {
    s.push_back(char(0xc9));
    for (int i = 3; i >= 0; --i) s.push_back(char(n >> (8 * i)));
  }
  s.push_back(char(kEnvelopeExt));
  s.push_back(char(flags));
  s.append(value);
  return s;
}

void decode_value(std::string_view s, std::string_view* value, uint8_t* flags) {
  *value = s;
  *flags = 0;
  const auto* p = reinterpret_cast<const unsigned char*>(s.data());
  size_t hdr, n = 0;
  if (s.size() < 4) return;
  if (p[0] == 0xc7) hdr = 2, n = p[1];
  else if (p[0] == 0xc8 && s.size() >= 5) hdr = 3, n = size_t(p[1]) << 8 | p[2];
  else if (p[0] == 0xc9 && s.size() >= 7) hdr = 5, n = size_t(p[1]) << 24 | size_t(p[2]) << 16 | size_t(p[3]) << 8 | p[4];
  else return;
  if (int8_t(p[hdr]) != kEnvelopeExt || n < 1 || hdr + 1 + n != s.size()) return;
  *flags = p[hdr + 1];
  *value = s.substr(hdr + 2);
}

bool parse_msgpack_int(std::string_view v, __int128* out) {
  const auto* p = reinterpret_cast<const unsigned char*>(v.data());
  const size_t n = v.size();
  if (n == 0) return false;
  auto be = [&](size_t bytes) {
    uint64_t x = 0;
    for (size_t i = 0; i < bytes; ++i) x = (x << 8) | p[1 + i];
    return x;
  };
  const unsigned char t = p[0];
  if (n == 1 && t <= 0x7f) return *out = t, true;
  if (n == 1 && t >= 0xe0) return *out = int8_t(t), true;
  switch (t) {
    case 0xcc: return n == 2 && (*out = be(1), true);
    case 0xcd: return n == 3 && (*out = be(2), true);
    case 0xce: return n == 5 && (*out = be(4), true);
    case 0xcf: return n == 9 && (*out = be(8), true);
    case 0xd0: return n == 2 && (*out = int8_t(be(1)), true);
    case 0xd1: return n == 3 && (*out = int16_t(be(2)), true);
    case 0xd2: return n == 5 && (*out = int32_t(be(4)), true);
    case 0xd3: return n == 9 && (*out = int64_t(be(8)), true);
    default: return false;
  }
}

std::string encode_msgpack_int(int64_t v) {
  auto with = [](unsigned char tag, uint64_t x, int bytes) {
    std::string s(1 + bytes, '\0');
    s[0] = char(tag);
    for (int i = 0; i < bytes; ++i) s[1 + i] = char(x >> (8 * (bytes - 1 - i)));
    return s;
  };
  if (v >= 0) {
    const uint64_t u = uint64_t(v);
    if (u <= 0x7f) return std::string(1, char(u));
    if (u <= 0xff) return with(0xcc, u, 1);
    if (u <= 0xffff) return with(0xcd, u, 2);
    if (u <= 0xffffffffu) return with(0xce, u, 4);
    return with(0xcf, u, 8);
  }
  if (v >= -32) return std::string(1, char(int8_t(v)));
  if (v >= -128) return with(0xd0, uint64_t(v), 1);
  if (v >= -32768) return with(0xd1, uint64_t(v), 2);
  if (v >= INT32_MIN) return with(0xd2, uint64_t(v), 4);
  return with(0xd3, uint64_t(v), 8);
}

std::string printable(std::string_view key) {
  std::string s;
  for (unsigned char c : key.substr(0, 80)) {
    if (c >= 0x20 && c < 0x7f && c != '\\') {
      s.push_back(char(c));
    } else {
      static const char* hex = "0123456789abcdef";
      s += "\\x";
      s.push_back(hex[c >> 4]);
      s.push_back(hex[c & 15]);
    }
  }
  if (key.size() > 80) s += "...";
  return s;
}

}  // namespace nearcache::redis
