// shm/words.h — copying bytes to and from memory another process may be
// writing, one relaxed 8-byte atomic access at a time.
//
// A seqlock reader's copy races with the writer by design. Plain memcpy would
// be a data race in the C++ memory model (and ThreadSanitizer would say so);
// relaxed atomic word accesses are not, and the bucket version re-check after
// an acquire fence tells the reader whether what it copied is consistent.
// `base` must be 8-aligned; callers have bounds-checked [off, off+len) and the
// area's size is a multiple of 8, so the rounded-out words are in bounds too.
#pragma once

#include <cstddef>
#include <cstdint>
#include <cstring>

#include "layout.h"

namespace nearcache::shm {

inline void copy_from_shared(void* dst, const unsigned char* base, uint64_t off, size_t len) {
  if (len == 0) return;
  const auto* w = reinterpret_cast<const uint64_t*>(base) + off / 8;
  auto* d = static_cast<unsigned char*>(dst);
  size_t skip = off % 8;
  if (skip) {
    uint64_t x = load_relaxed(w++);
    size_t n = len < 8 - skip ? len : 8 - skip;
    std::memcpy(d, reinterpret_cast<unsigned char*>(&x) + skip, n);
    d += n;
    len -= n;
  }
  for (; len >= 8; len -= 8, d += 8) {
    uint64_t x = load_relaxed(w++);
    std::memcpy(d, &x, 8);
  }
  if (len) {
    uint64_t x = load_relaxed(w);
    std::memcpy(d, &x, len);
  }
}

inline bool equal_shared(const unsigned char* base, uint64_t off, const void* src, size_t len) {
  if (len == 0) return true;
  const auto* w = reinterpret_cast<const uint64_t*>(base) + off / 8;
  const auto* s = static_cast<const unsigned char*>(src);
  size_t skip = off % 8;
  if (skip) {
    uint64_t x = load_relaxed(w++);
    size_t n = len < 8 - skip ? len : 8 - skip;
    if (std::memcmp(s, reinterpret_cast<unsigned char*>(&x) + skip, n) != 0) return false;
    s += n;
    len -= n;
  }
  for (; len >= 8; len -= 8, s += 8) {
    uint64_t x = load_relaxed(w++);
    if (std::memcmp(s, &x, 8) != 0) return false;
  }
  if (len) {
    uint64_t x = load_relaxed(w);
    if (std::memcmp(s, &x, len) != 0) return false;
  }
  return true;
}

// Writer side: `off` is 8-aligned; the tail of the last word is zero-filled
// (it is the item's own padding).
inline void copy_to_shared(unsigned char* base, uint64_t off, const void* src, size_t len) {
  auto* w = reinterpret_cast<uint64_t*>(base) + off / 8;
  const auto* s = static_cast<const unsigned char*>(src);
  for (; len >= 8; len -= 8, s += 8) {
    uint64_t x;
    std::memcpy(&x, s, 8);
    store_relaxed(w++, x);
  }
  if (len) {
    uint64_t x = 0;
    std::memcpy(&x, s, len);
    store_relaxed(w, x);
  }
}

}  // namespace nearcache::shm
