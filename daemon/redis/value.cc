// daemon/redis/value.cc — see value.h.
#include "redis/value.h"

#include "redis/util.h"

namespace nearcache::redis {

namespace {

// Version 1's envelope: ext 8/16/32 of type 126, payload = flags + value,
// spanning the whole string.
bool decode_v1(std::string_view s, std::string_view* value, uint8_t* flags) {
  const auto* p = reinterpret_cast<const unsigned char*>(s.data());
  size_t hdr, n = 0;
  if (s.size() < 4) return false;
  if (p[0] == 0xc7) hdr = 2, n = p[1];
  else if (p[0] == 0xc8 && s.size() >= 5) hdr = 3, n = size_t(p[1]) << 8 | p[2];
  else if (p[0] == 0xc9 && s.size() >= 7) hdr = 5, n = size_t(p[1]) << 24 | size_t(p[2]) << 16 | size_t(p[3]) << 8 | p[4];
  else return false;
  if (int8_t(p[hdr]) != kEnvelopeExt || n < 1 || hdr + 1 + n != s.size()) return false;
  *flags = p[hdr + 1];
  *value = s.substr(hdr + 2);
  return true;
}

std::string encode_v1(std::string_view value, uint8_t flags) {
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

uint64_t be(const unsigned char* p, int n) {
  uint64_t x = 0;
  for (int i = 0; i < n; ++i) x = x << 8 | p[i];
  return x;
}

}  // namespace

bool is_one_msgpack(std::string_view s) {
  const auto* p = reinterpret_cast<const unsigned char*>(s.data());
  const size_t n = s.size();
  size_t i = 0;
  uint64_t left = 1;  // objects still to read; each takes at least one byte
  while (left > 0) {
    if (i >= n || left > n - i) return false;
    --left;
    const unsigned char t = p[i++];
    uint64_t skip = 0, items = 0;  // payload bytes; objects inside (arrays 1, maps 2 per entry)
    int len = 0;                   // bytes of the length field
    if (t <= 0x7f || t >= 0xe0 || t == 0xc0 || t == 0xc2 || t == 0xc3) {
    } else if (t <= 0x8f) items = uint64_t(t & 0x0f) * 2;
    else if (t <= 0x9f) items = t & 0x0f;
    else if (t <= 0xbf) skip = t & 0x1f;
    else if (t == 0xc1) return false;
    else if (t >= 0xc4 && t <= 0xc6) len = 1 << (t - 0xc4);               // bin 8/16/32
    else if (t >= 0xc7 && t <= 0xc9) len = 1 << (t - 0xc7), skip = 1;     // ext 8/16/32 (+ type)
    else if (t == 0xca) skip = 4;
    else if (t == 0xcb) skip = 8;
    else if (t >= 0xcc && t <= 0xd3) skip = uint64_t(1) << ((t - 0xcc) & 3);  // uint/int 8..64
    else if (t >= 0xd4 && t <= 0xd8) skip = 1 + (uint64_t(1) << (t - 0xd4));  // fixext 1..16 (+ type)
    else if (t >= 0xd9 && t <= 0xdb) len = 1 << (t - 0xd9);               // str 8/16/32
    else if (t == 0xdc || t == 0xdd) {                                     // array 16/32
      const int l = t == 0xdc ? 2 : 4;
      if (n - i < size_t(l)) return false;
      items = be(p + i, l), i += l;
    } else {                                                               // map 16/32
      const int l = t == 0xde ? 2 : 4;
      if (n - i < size_t(l)) return false;
      items = be(p + i, l) * 2, i += l;
    }
    if (len) {
      if (n - i < size_t(len)) return false;
      skip += be(p + i, len), i += len;
    }
    if (skip > n - i) return false;
    i += skip;
    left += items;
  }
  return i == n;
}

std::string encode_value(std::string_view value, uint8_t flags, uint64_t version) {
  if (version == 1) return encode_v1(value, flags);
  std::string_view v1v;
  uint8_t v1f;
  if (flags == 0 && is_one_msgpack(value) && !decode_v1(value, &v1v, &v1f)) return std::string(value);
  std::string s;
  s.reserve(kEnvelopeV2Header + value.size());
  s.append(kEnvelopeV2);
  s.push_back(char(flags));
  s.append(value);
  return s;
}

Stored decode_value(std::string_view s, std::string_view* value, uint8_t* flags) {
  if (s.size() >= kEnvelopeV2Header && s.starts_with(kEnvelopeV2)) {
    *flags = uint8_t(s[kEnvelopeV2.size()]);
    *value = s.substr(kEnvelopeV2Header);
    return Stored::v2;
  }
  if (decode_v1(s, value, flags)) return Stored::v1;
  *value = s;
  if (is_one_msgpack(s)) {
    *flags = 0;
    return Stored::bare;
  }
  *flags = kFlagForeign;
  return Stored::foreign;
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
