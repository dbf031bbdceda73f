// shm/table_view.h — read-only inspection of a mapped segment: the key at a
// way index (how the daemon maps the way indexes of hit rings back to keys)
// and every entry, one bucket at a time (how `nearcache memory` sizes key
// prefixes without asking the daemon for anything).
//
// It works on the geometry a Reader validated (reader.h), with the same
// discipline as Reader::get: relaxed word loads, every offset and length
// bounds-checked against that geometry, the bucket's version re-checked after
// the copy (seqlock). Corruption reads as an empty way, never a fault. Each
// bucket is read consistently; the table as a whole is not a snapshot (the
// writer goes on while a walk runs). C++ standard library and POSIX only.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "reader.h"

namespace nearcache::shm {

// One entry of a bucket. `key` points into the vector's owner's key arena
// (BucketEntries::keys) until the next read_bucket.
struct EntryInfo {
  uint32_t key_off, key_len;  // in BucketEntries::keys
  uint64_t item_bytes;        // what the entry takes in the data area (header, key, value, padding)
  uint32_t value_len;
  uint8_t flags;
  bool negative;              // a cached "Redis has no such key"
};

struct BucketEntries {
  std::vector<EntryInfo> entries;
  std::string keys;
  std::string_view key(const EntryInfo& e) const { return std::string_view(keys).substr(e.key_off, e.key_len); }
};

class TableView {
 public:
  // Retries of a bucket that changes under a read before giving up on it.
  static constexpr int kMaxRetries = 16;

  // `r` must be open (or attached) and outlive this view.
  explicit TableView(const Reader& r) : g_(r.geometry()) {}

  uint32_t bucket_count() const { return g_.bucket_count; }
  uint64_t way_index_limit() const { return uint64_t(g_.bucket_count) * 8; }

  // The key of the entry at way index `wi` (bucket * 8 + way), live at now_ms
  // (unexpired, not negative), into *key. False when the way is empty, out of
  // range, expired, corrupt, or changed under the read.
  bool key_at(uint32_t wi, uint64_t now_ms, std::string* key) const;

  // Replaces *out with the live entries of bucket `idx` at now_ms (negative
  // ones included, expired ones not). False when the bucket kept changing
  // (kMaxRetries) or idx is out of range; *out is then empty.
  bool read_bucket(uint32_t idx, uint64_t now_ms, BucketEntries* out) const;

 private:
  // The item a way points at, bounds-checked; false when it cannot be one.
  bool item_of(uint64_t way, uint64_t* off, uint64_t* meta, uint64_t* expiry) const;

  Reader::Geometry g_;
};

}  // namespace nearcache::shm
