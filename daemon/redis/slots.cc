// daemon/redis/slots.cc — see slots.h.
#include "redis/slots.h"

#include <array>

namespace nearcache::redis {

namespace {

std::array<uint16_t, 256> make_table() {
  std::array<uint16_t, 256> t{};
  for (uint32_t i = 0; i < 256; ++i) {
    uint16_t c = uint16_t(i << 8);
    for (int b = 0; b < 8; ++b) c = (c & 0x8000) ? uint16_t((c << 1) ^ 0x1021) : uint16_t(c << 1);
    t[i] = c;
  }
  return t;
}

std::string with_marker(std::string_view mark, std::string_view prefix) {
  std::string k(mark);
  k += prefix;
  return k;
}

}  // namespace

uint16_t crc16(std::string_view s) {
  static const std::array<uint16_t, 256> table = make_table();
  uint16_t c = 0;
  for (unsigned char b : s) c = uint16_t((c << 8) ^ table[((c >> 8) ^ b) & 0xff]);
  return c;
}

uint32_t key_slot(std::string_view k) {
  const size_t open = k.find('{');
  if (open != std::string_view::npos) {
    const size_t close = k.find('}', open + 1);
    if (close != std::string_view::npos && close > open + 1) k = k.substr(open + 1, close - open - 1);
  }
  return crc16(k) & (kSlots - 1);
}

const std::vector<std::string>& slot_tags() {
  static const std::vector<std::string> tags = [] {
    static constexpr char kAlphabet[] = "0123456789abcdefghijklmnopqrstuvwxyz";
    constexpr uint32_t n = sizeof kAlphabet - 1;
    std::vector<std::string> t(kSlots);
    uint32_t filled = 0;
    // Shortest first: every slot has a tag of at most 4 characters.
    for (int len = 1; len <= 4 && filled < kSlots; ++len) {
      uint32_t combos = 1;
      for (int i = 0; i < len; ++i) combos *= n;
      std::string s(size_t(len), '0');
      for (uint32_t c = 0; c < combos && filled < kSlots; ++c) {
        for (int i = len - 1, x = int(c); i >= 0; --i, x /= int(n)) s[size_t(i)] = kAlphabet[x % int(n)];
        std::string& slot = t[crc16(s) & (kSlots - 1)];
        if (slot.empty()) slot = s, filled++;
      }
    }
    return t;
  }();
  return tags;
}

std::string slot_counter_key(std::string_view prefix, uint32_t slot) {
  std::string k("\0ncslot{", 8);
  k += slot_tags()[slot];
  k += '}';
  k += prefix;
  return k;
}

namespace {
// "\0" + name + "{tag}" + rest: a key of this cache's own, in `slot`.
std::string tagged(std::string_view name, uint32_t slot, std::string_view rest) {
  std::string k(1, '\0');
  k += name;
  k += '{';
  k += slot_tags()[slot];
  k += '}';
  k += rest;
  return k;
}
}  // namespace

std::string clear_counter_key(std::string_view prefix, int home_slot) {
  if (home_slot >= 0) return tagged("ncclear", uint32_t(home_slot), prefix);
  return with_marker(std::string_view("\0ncclear\0", 9), prefix);
}

std::string flush_marker_key(std::string_view prefix, int home_slot) {
  if (home_slot >= 0) return tagged("ncepoch", uint32_t(home_slot), prefix);
  return with_marker(std::string_view("\0ncepoch\0", 9), prefix);
}

std::string tagged_lease_key(std::string_view redis_key) { return tagged("nclease", key_slot(redis_key), redis_key); }

std::string tagged_lock_key(std::string_view redis_key) { return tagged("nclock", key_slot(redis_key), redis_key); }

}  // namespace nearcache::redis
