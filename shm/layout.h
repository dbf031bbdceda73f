// shm/layout.h — the format of the shared-memory segment (layout 2) and of a
// reader process's hit region.
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
// Hit region (one per reader process: a sealed memfd only that process maps
// and writes; the daemon reads it with pread, never maps it):
//
//   0              HitRegionHeader (64 bytes)
//   64             u32 ring[kHitRing]: way indexes (bucket * 8 + way) of recent hits
//
// Nothing writable is shared between processes: no reader writes anything
// another process maps.
// Invariants (see doc/segment.md for the reasoning):
//  - One writer. Readers map the segment PROT_READ and never write it.
//  - A key lives in one of two buckets chosen by its hash (two-choice
//    hashing), and stays in that bucket and way until it is removed.
//  - Every word a reader and the writer may touch at once is accessed with
//    __atomic builtins: relaxed for data, acquire/release for bucket versions.
//  - A bucket's version is odd while the writer changes it, only ever grows,
//    and is bumped before any memory its ways referenced is reused.
//  - A bucket whose epoch differs from the header's is empty (a whole-table
//    drop is one store of header.epoch); the writer resets such a bucket
//    (inside its seqlock) before it changes it or reuses its items' memory.
//  - Every offset and length a reader takes from the segment is checked against
//    the geometry it validated at open; corruption yields a miss, never a fault.
#pragma once

#include <cstddef>
#include <cstdint>

#include "clock.h"  // monotonic_ms: the clock of expiries and heartbeats

namespace nearcache::shm {

inline constexpr uint64_t kMagic = 0x314D48535241454EULL;       // "NEARSHM1" little-endian
inline constexpr uint64_t kHitMagic = 0x325449485241454EULL;    // "NEARHIT2"
inline constexpr uint32_t kLayoutVersion = 2;
inline constexpr uint32_t kHeaderBytes = 4096;
inline constexpr uint32_t kWaysPerBucket = 7;
inline constexpr uint32_t kBucketBytes = 64;
inline constexpr uint32_t kItemAlign = 8;
inline constexpr uint32_t kItemHeaderBytes = 16;
inline constexpr uint32_t kMaxKeyLimit = 65535;        // key_len is 16 bits
inline constexpr uint8_t kMaxFreq = 3;                 // saturating access counter (the writer's own)
inline constexpr uint32_t kWriterStateOffset = 2048;   // WriterState inside the header area

// Header.flags bits.
inline constexpr uint32_t kFlagAuthoritative = 1u << 0;  // no Redis tier: a miss here is a definite miss
inline constexpr uint32_t kFlagSuspended = 1u << 1;      // serve nothing from the table: ask the daemon

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
  uint64_t writer_state_offset; // kWriterStateOffset: the writer's persisted state (WriterState)
  uint64_t reserved0[4];

  // Written while running, always with atomics. One cache line: a lookup
  // reads state, heartbeat, epoch and flags with one miss at most.
  alignas(64) uint32_t state;   // SegmentState
  uint32_t flags;               // kFlagAuthoritative | kFlagSuspended
  uint64_t heartbeat_ms;        // CLOCK_MONOTONIC milliseconds
  uint32_t epoch;               // buckets of another epoch are empty (whole-table drop)
  uint32_t table_id;            // generation's low 32 bits, moved on by a table re-created in place:
                                // the per-lookup check stays within this line
};
static_assert(sizeof(Header) <= kWriterStateOffset);

// What adoption after a restart needs (the never-cold issue): written only by
// the writer, never read by clients. Ring fields are stored (relaxed) after
// the item or way they describe is in place, so that a crash leaves them
// behind the truth, never ahead. Adoption is not implemented yet; the writer
// keeps the ring fields current and clean_shutdown.
struct WriterRingState {
  uint64_t head, tail, used;  // data-area offsets and bytes, as Writer::Ring
};
struct WriterState {
  uint64_t magic;             // kMagic once the writer has initialised the block
  WriterRingState small, main;
  uint64_t clear_id;          // the CLEAR in progress (0: none)
  uint32_t clear_epoch;       // header.epoch when it began
  uint32_t clear_prefix_len;  // <= 1024
  uint64_t clear_cursor;      // buckets it has been applied to (0..bucket_count)
  uint64_t adopted_count;     // entries kept by the last adoption
  uint32_t clean_shutdown;    // 1: SIGTERM's last act; cleared at start
  uint32_t reserved;
  unsigned char clear_prefix[1024];
};
static_assert(kWriterStateOffset + sizeof(WriterState) <= kHeaderBytes);

// A bucket: a seqlock version, the epoch it belongs to, and seven ways. A way is 0 (empty) or (tag << 48) | (unit + 1), where unit is
// the item's offset in the data area divided by kItemAlign and tag is the
// top 16 bits of the key's hash.
struct Bucket {
  uint32_t version;
  uint32_t epoch;   // != Header.epoch: the bucket is empty, whatever its ways say
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
//   bits 56..63 the state byte: bits 0..1 ItemState (writer-private),
//               bit 3 negative (readers: a definite miss, "Redis has no
//               such key"), bit 4 synced (writer-private); readers ignore the rest
struct ItemHeader {
  uint64_t expiry_ms;  // CLOCK_MONOTONIC milliseconds; 0 = never expires
  uint64_t meta;
};
static_assert(sizeof(ItemHeader) == kItemHeaderBytes);

enum class ItemState : uint8_t { dead = 0, live = 1, wrap = 2 };
inline constexpr uint8_t kItemNegative = 1u << 3;  // state byte: a cached "no such key"
inline constexpr uint8_t kItemSynced = 1u << 4;    // state byte: the write reached Redis (writer-private)

inline constexpr uint64_t make_meta(uint32_t vlen, uint16_t klen, uint8_t flags, ItemState s, uint8_t bits = 0) {
  return uint64_t(vlen) | (uint64_t(klen) << 32) | (uint64_t(flags) << 48) | (uint64_t(uint8_t(s) | bits) << 56);
}
inline constexpr uint32_t meta_value_len(uint64_t m) { return uint32_t(m); }
inline constexpr uint16_t meta_key_len(uint64_t m) { return uint16_t(m >> 32); }
inline constexpr uint8_t meta_flags(uint64_t m) { return uint8_t(m >> 48); }
inline constexpr ItemState meta_state(uint64_t m) { return ItemState(uint8_t(m >> 56) & 3); }
inline constexpr uint8_t meta_bits(uint64_t m) { return uint8_t(m >> 56) & uint8_t(~3u); }
inline constexpr bool meta_negative(uint64_t m) { return (m >> 56) & kItemNegative; }

inline constexpr uint64_t item_bytes(uint64_t klen, uint64_t vlen) {
  return (kItemHeaderBytes + klen + vlen + kItemAlign - 1) & ~uint64_t(kItemAlign - 1);
}

// Hit region: written by its owner process only (relaxed stores; its own
// threads may race, and a lost hint is harmless), read by the daemon with
// pread. Native-endian. A process can lie in it about its own hits only.
inline constexpr uint32_t kHitRegionVersion = 2;
inline constexpr uint32_t kHitRing = 4096;  // a power of two

struct HitRegionHeader {
  uint64_t magic;         // kHitMagic
  uint32_t version;       // kHitRegionVersion
  uint32_t ring_entries;  // kHitRing
  uint64_t generation;    // the segment generation the ring's way indexes refer to
  uint64_t hits;          // lookups that returned a value (monotonic)
  uint64_t misses;        // lookups that found nothing or a negative entry
  uint64_t busy;          // lookups that gave up on a changing bucket
  uint64_t head;          // ring entries ever written (monotonic)
  // Definite misses (nothing in an authoritative table, or a negative entry)
  // the process answered itself, without asking the daemon: a subset of
  // misses. Zero in a region of a client that predates it (it was reserved,
  // always zero), so no version bump: an old client reads as "none local".
  uint64_t local_misses;
};
static_assert(sizeof(HitRegionHeader) == 64);
inline constexpr uint64_t kHitRegionBytes = sizeof(HitRegionHeader) + uint64_t(kHitRing) * 4;

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
