// shm/msgpack_int.h — the one msgpack integer codec for INCR/DECR, shared by
// the table's writer and the Redis tier, so both read every integer encoding
// and write the smallest one, as msgpack writers do. Header only, std only.
#pragma once

#include <cstdint>
#include <string>
#include <string_view>

namespace nearcache::shm {

// True when `v` is exactly one msgpack integer object (any width, signed or not).
inline bool parse_msgpack_int(std::string_view v, __int128* out) {
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

inline std::string encode_msgpack_int(int64_t v) {
  auto with = [](unsigned char tag, uint64_t x, int bytes) {
    std::string s(1 + bytes, '\0');
    s[0] = char(tag);
    for (int i = 0; i < bytes; ++i) s[1 + i] = char(x >> (8 * (bytes - 1 - i)));
    return s;
  };
  if (v >= 0) {
    uint64_t u = uint64_t(v);
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

}  // namespace nearcache::shm
