// shm/siphash.h — keyed hash for the table's buckets.
//
// Keys come from requests, so the table hashes them with SipHash keyed by a
// random per-segment key (Header::hash_key): a crafted key set cannot be
// aimed at one bucket chain. SipHash-1-3 is the variant CPython and Rust use
// for the same purpose; siphash<2,4> exists for the reference test vectors.
#pragma once

#include <cstddef>
#include <cstdint>
#include <cstring>

namespace nearcache::shm {

template <int C, int D>
inline uint64_t siphash(uint64_t k0, uint64_t k1, const void* data, size_t len) {
  auto rotl = [](uint64_t x, int b) { return (x << b) | (x >> (64 - b)); };
  uint64_t v0 = 0x736f6d6570736575ULL ^ k0, v1 = 0x646f72616e646f6dULL ^ k1;
  uint64_t v2 = 0x6c7967656e657261ULL ^ k0, v3 = 0x7465646279746573ULL ^ k1;
  auto round = [&] {
    v0 += v1; v1 = rotl(v1, 13); v1 ^= v0; v0 = rotl(v0, 32);
    v2 += v3; v3 = rotl(v3, 16); v3 ^= v2;
    v0 += v3; v3 = rotl(v3, 21); v3 ^= v0;
    v2 += v1; v1 = rotl(v1, 17); v1 ^= v2; v2 = rotl(v2, 32);
  };
  const auto* p = static_cast<const unsigned char*>(data);
  const size_t whole = len & ~size_t(7);
  for (size_t i = 0; i < whole; i += 8) {
    uint64_t m;
    std::memcpy(&m, p + i, 8);  // little-endian host (x86_64, aarch64)
    v3 ^= m;
    for (int r = 0; r < C; ++r) round();
    v0 ^= m;
  }
  uint64_t b = uint64_t(len) << 56;
  for (size_t i = 0; i < (len & 7); ++i) b |= uint64_t(p[whole + i]) << (8 * i);
  v3 ^= b;
  for (int r = 0; r < C; ++r) round();
  v0 ^= b;
  v2 ^= 0xff;
  for (int r = 0; r < D; ++r) round();
  return v0 ^ v1 ^ v2 ^ v3;
}

inline uint64_t key_hash(const uint64_t key[2], const void* data, size_t len) {
  return siphash<1, 3>(key[0], key[1], data, len);
}

// The two buckets a key may live in: bits 0..31 and 16..47 of its hash,
// each scaled to [0, n) (Lemire's multiply-shift; n need not be a power of
// two); when they coincide the second is the next bucket. The tag is the top
// 16 bits. With n == 1 both are bucket 0.
struct BucketPair {
  uint32_t first, second;
};
inline BucketPair buckets_of(uint64_t h, uint32_t n) {
  const uint32_t a = uint32_t((uint64_t(uint32_t(h)) * n) >> 32);
  uint32_t b = uint32_t((uint64_t(uint32_t(h >> 16)) * n) >> 32);
  if (b == a) b = a + 1 == n ? 0 : a + 1;
  return {a, b};
}
inline uint16_t tag_of(uint64_t h) { return uint16_t(h >> 48); }

}  // namespace nearcache::shm
