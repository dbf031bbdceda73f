// shm/layout.h — the format of the shared-memory segment and its hints file.
//
// This header is the contract between the one writer (nearcached) and every
// reader (the Python extension, the CLI, tests). It depends on nothing but the
// C++ standard library and POSIX (clock.h). doc/segment.md describes the same
// format in prose; change both together and bump kLayoutVersion on any
// incompatible change.
//
// Segment (one file, or one POSIX shared-memory object), offsets from its start:
//
//   0              Header (kHeaderBytes)
//   buckets_offset Bucket[bucket_count], 64 bytes each
//   data_offset    data area: items, each 8-aligned: ItemHeader, key, value
//
// Hints file (separate, group-writable, never read for correctness):
//
//   0              HintsHeader
//   counters_offset ReaderCounters[counter_slots], 64 bytes each
//   freq_offset    8 bytes per bucket, one per way: access frequency 0..kMaxFreq
//
// Invariants (see doc/segment.md for the reasoning):
//  - One writer. Readers map the segment PROT_READ and never write it.
//  - A key lives in one of two buckets chosen by its hash (two-choice
//    hashing), and stays in that bucket and way until it is removed.
//  - Every word a reader and the writer may touch at once is accessed with
//    __atomic builtins: relaxed for data, acquire/release for bucket versions.
//  - A bucket's version is odd while the writer changes it, only ever grows,
//    and is bumped before any memory its ways referenced is reused.
//  - Every offset and length a reader takes from the segment is checked against
//    the geometry it validated at open; corruption yields a miss, never a fault.
#pragma once

#include <cstddef>
#include <cstdint>

#include "clock.h"  // monotonic_ms: the clock of expiries and heartbeats

namespace nearcache::shm {

inline constexpr uint64_t kMagic = 0x314D48535241454EULL;       // "NEARSHM1" little-endian
inline constexpr uint64_t kHintsMagic = 0x31544E485241454EULL;  // "NEARHNT1"
inline constexpr uint32_t kLayoutVersion = 1;
inline constexpr uint32_t kHeaderBytes = 4096;
inline constexpr uint32_t kWaysPerBucket = 7;
inline constexpr uint32_t kBucketBytes = 64;
inline constexpr uint32_t kItemAlign = 8;
inline constexpr uint32_t kItemHeaderBytes = 16;
inline constexpr uint32_t kMaxKeyLimit = 65535;        // key_len is 16 bits
inline constexpr uint8_t kMaxFreq = 3;                 // saturating access counter in hints

enum class SegmentState : uint32_t { initializing = 0, running = 1, stopped = 2 };

struct Header {
  // Written once before state becomes running; readers copy and validate them at open.
  uint64_t magic;
  uint32_t layout_version;
  uint32_t header_bytes;
  uint64_t segment_bytes;
  uint64_t generation;          // differs for every table the writer creates
  uint64_t hash_key[2];         // per-segment SipHash key (hash flooding)
  uint64_t buckets_offset;
  uint32_t bucket_count;
  uint32_t bucket_ways;         // kWaysPerBucket
  uint64_t data_offset;
  uint64_t data_bytes;          // multiple of kItemAlign
  uint32_t key_limit;
  uint32_t value_limit;
  uint32_t writer_pid;
  uint32_t heartbeat_grace_ms;  // a heartbeat older than this: the writer is gone
  uint64_t created_unix_ms;
  uint64_t hints_bytes;         // exact size of the matching hints file
  uint64_t reserved0[4];

  // Written while running, always with atomics.
  alignas(64) uint32_t state;   // SegmentState
  uint32_t reserved1;
  uint64_t heartbeat_ms;        // CLOCK_MONOTONIC milliseconds
};
static_assert(sizeof(Header) <= kHeaderBytes);

// A bucket: a seqlock version and seven ways. A way is 0 (empty) or (tag << 48) | (unit + 1), where unit is
// the item's offset in the data area divided by kItemAlign and tag is the
// top 16 bits of the key's hash.
struct Bucket {
  uint32_t version;
  uint32_t reserved;
  uint64_t way[kWaysPerBucket];
};
static_assert(sizeof(Bucket) == kBucketBytes);

inline constexpr uint64_t kWayUnitMask = (uint64_t{1} << 48) - 1;
inline constexpr uint64_t make_way(uint64_t tag16, uint64_t unit) { return (tag16 << 48) | (unit + 1); }
inline constexpr uint64_t way_unit(uint64_t w) { return (w & kWayUnitMask) - 1; }
inline constexpr uint16_t way_tag(uint64_t w) { return uint16_t(w >> 48); }

// An item's first 16 bytes; key bytes follow, then value bytes, then padding
// to kItemAlign. `meta` packs what a reader needs into one atomic word:
//   bits  0..31 value length
//   bits 32..47 key length
//   bits 48..55 client flags (opaque to the table)
//   bits 56..63 writer-private state (ItemState); readers ignore it
struct ItemHeader {
  uint64_t expiry_ms;  // CLOCK_MONOTONIC milliseconds; 0 = never expires
  uint64_t meta;
};
static_assert(sizeof(ItemHeader) == kItemHeaderBytes);

enum class ItemState : uint8_t { dead = 0, live = 1, wrap = 2 };

inline constexpr uint64_t make_meta(uint32_t vlen, uint16_t klen, uint8_t flags, ItemState s) {
  return uint64_t(vlen) | (uint64_t(klen) << 32) | (uint64_t(flags) << 48) | (uint64_t(s) << 56);
}
inline constexpr uint32_t meta_value_len(uint64_t m) { return uint32_t(m); }
inline constexpr uint16_t meta_key_len(uint64_t m) { return uint16_t(m >> 32); }
inline constexpr uint8_t meta_flags(uint64_t m) { return uint8_t(m >> 48); }
inline constexpr ItemState meta_state(uint64_t m) { return ItemState(uint8_t(m >> 56)); }

inline constexpr uint64_t item_bytes(uint64_t klen, uint64_t vlen) {
  return (kItemHeaderBytes + klen + vlen + kItemAlign - 1) & ~uint64_t(kItemAlign - 1);
}

// Hints file. Readers bump freq bytes and their own counters; the writer
// reads them to choose evictions and to report hits served from memory.
// Nothing here changes what a reader returns.
struct HintsHeader {
  uint64_t magic;
  uint32_t layout_version;
  uint32_t counter_slots;     // slot 0 is shared by readers that found no free slot
  uint64_t generation;        // equals the segment's generation
  uint64_t counters_offset;
  uint64_t freq_offset;
  uint64_t freq_bytes;        // bucket_count * 8
  uint64_t total_bytes;
};

struct ReaderCounters {
  uint32_t pid;     // owner, claimed with compare-and-swap from 0; 0 = free
  uint32_t reserved;
  uint64_t hits;    // values returned from shared memory
  uint64_t misses;  // lookups that found nothing (the caller then asks the daemon)
  uint64_t busy;    // lookups that gave up on a changing bucket
  uint64_t reserved2[4];
};
static_assert(sizeof(ReaderCounters) == 64);

inline constexpr uint32_t kCounterSlots = 256;
inline constexpr uint64_t kHintsCountersOffset = 4096;
inline constexpr uint64_t kHintsFreqOffset = kHintsCountersOffset + uint64_t(kCounterSlots) * 64;

inline uint64_t hints_total_bytes(uint64_t total_buckets) { return kHintsFreqOffset + total_buckets * 8; }

// Relaxed/acquire/release accessors for words shared between processes.
// The builtins are what std::atomic_ref compiles to, and ThreadSanitizer
// understands them; they also work on const (PROT_READ) memory for loads.
inline uint64_t load_relaxed(const uint64_t* p) { return __atomic_load_n(p, __ATOMIC_RELAXED); }
inline uint32_t load_relaxed(const uint32_t* p) { return __atomic_load_n(p, __ATOMIC_RELAXED); }
inline uint8_t load_relaxed(const uint8_t* p) { return __atomic_load_n(p, __ATOMIC_RELAXED); }
inline uint32_t load_acquire(const uint32_t* p) { return __atomic_load_n(p, __ATOMIC_ACQUIRE); }
inline uint64_t load_acquire(const uint64_t* p) { return __atomic_load_n(p, __ATOMIC_ACQUIRE); }
inline void store_relaxed(uint64_t* p, uint64_t v) { __atomic_store_n(p, v, __ATOMIC_RELAXED); }
inline void store_relaxed(uint32_t* p, uint32_t v) { __atomic_store_n(p, v, __ATOMIC_RELAXED); }
inline void store_relaxed(uint8_t* p, uint8_t v) { __atomic_store_n(p, v, __ATOMIC_RELAXED); }
inline void store_release(uint32_t* p, uint32_t v) { __atomic_store_n(p, v, __ATOMIC_RELEASE); }
inline void store_release(uint64_t* p, uint64_t v) { __atomic_store_n(p, v, __ATOMIC_RELEASE); }

}  // namespace nearcache::shm
