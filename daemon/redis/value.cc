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
