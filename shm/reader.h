// shm/reader.h — lock-free, read-only lookups in the table from any process.
//
// A Reader maps the segment PROT_READ and serves get() with no system call
// and no lock: it walks the key's bucket chain, copies the item with relaxed
// word loads, and re-checks the bucket's version (seqlock). It depends only
// on the C++ standard library and POSIX, so the Python extension can link it.
//
// Outcomes: hit (value copied), miss (ask the daemon, unless authoritative()
// says the table is the whole truth: then it is a definite miss), busy (the
// writer kept changing the bucket; ask the daemon), unavailable (no segment,
// writer stopped or heartbeat stale; re-open later, use the socket
// meanwhile), too_small (hit, but the caller's buffer is too small; value_len
// says how much to provide), negative (a definite miss: the daemon cached that
// Redis has no such key), suspended (the daemon asks readers to serve nothing
// from the table for now: ask it).
//
// Hits, misses and busy lookups are recorded in the process's hit region
// (hits.h) when one is attached, and in this process's totals().
#pragma once

#include <atomic>
#include <cstddef>
#include <cstdint>
#include <string>

#include "layout.h"

namespace nearcache::shm {

class HitRegion;

enum class ReadStatus : uint8_t { hit, miss, busy, unavailable, too_small, negative, suspended };
const char* read_status_name(ReadStatus s);

struct ReadResult {
  ReadStatus status = ReadStatus::unavailable;
  uint8_t flags = 0;
  uint32_t value_len = 0;  // hit, too_small
  uint64_t expiry_ms = 0;  // hit: CLOCK_MONOTONIC ms, 0 = never
  uint32_t retries = 0;    // times the bucket changed under this read
};

struct ReaderOptions {
  bool posix_shm = false;   // `path` is a POSIX shared-memory name ("/name")
};

// Counts this process's reader lookups (all Reader objects together).
struct ReaderTotals {
  uint64_t hits = 0, misses = 0, busy = 0;
  uint64_t local_misses = 0;  // of misses, the definite ones the caller answered itself (note_local_miss)
};

class Reader {
 public:
  // Retries when the bucket changes under a read, before answering busy.
  static constexpr int kMaxRetries = 16;

  Reader() = default;
  ~Reader() { close(); }
  Reader(const Reader&) = delete;
  Reader& operator=(const Reader&) = delete;
  Reader(Reader&& o) noexcept { *this = static_cast<Reader&&>(o); }
  Reader& operator=(Reader&& o) noexcept;

  // Maps the segment and validates its header. Returns 0, or an errno value
  // with a one-line reason in *why: ENOENT (no segment), EACCES, EAGAIN (still
  // being created), EPROTONOSUPPORT (a layout this reader does not know: use
  // the socket alone), EINVAL (not a nearcache segment, or inconsistent).
  int open(const std::string& path, std::string* why, const ReaderOptions& opts = {});
  // Validates and reads a segment image the caller keeps mapped (tests and
  // fuzzing); nothing is unmapped by close(). Same return values.
  int attach(const void* base, size_t size, std::string* why);
  void close();
  bool is_open() const { return base_ != nullptr; }

  // Records this Reader's lookups into `region` (not owned; nullptr: none)
  // and stamps it with this segment's generation. Re-attach after open().
  void attach_hits(HitRegion* region);
  HitRegion* hits() const { return hits_; }
  // The caller answered a definite miss of this Reader's (a negative entry,
  // or a miss in an authoritative table) without asking the daemon: counted
  // apart in the hit region, so that STATUS counts the miss once.
  void note_local_miss();

  // Looks up `key`; on a hit copies the value into buf[0..cap).
  ReadResult get(const void* key, size_t key_len, void* buf, size_t cap);
  ReadResult get_at(const void* key, size_t key_len, void* buf, size_t cap, uint64_t now_ms);

  // The writer is running, its heartbeat is fresh, and the table is still
  // the generation this reader opened (not re-created in place).
  bool alive(uint64_t now_ms) const;
  // The segment says stopped, or its heartbeat is older than the grace period.
  bool stale(uint64_t now_ms) const { return base_ && !alive(now_ms); }

  uint64_t generation() const { return generation_; }
  uint32_t key_limit() const { return key_limit_; }
  uint32_t value_limit() const { return value_limit_; }
  uint32_t heartbeat_grace_ms() const { return grace_ms_; }
  uint32_t writer_pid() const { return writer_pid_; }
  uint64_t mapped_bytes() const { return size_; }
  // The daemon has no Redis tier: a miss in this table is a definite miss.
  bool authoritative() const { return base_ && (load_relaxed(&header_->flags) & kFlagAuthoritative); }
  // The daemon asks readers to serve nothing from the table (get answers suspended).
  bool suspended() const { return base_ && (load_relaxed(&header_->flags) & kFlagSuspended); }

  static ReaderTotals totals();

  // The geometry validated at open (private copies): what table_view.h walks.
  struct Geometry {
    const Header* header;
    const Bucket* buckets;
    uint32_t bucket_count;
    const unsigned char* data;
    uint64_t data_bytes;
    uint32_t value_limit;
  };
  Geometry geometry() const { return {header_, buckets_, bucket_count_, data_, data_bytes_, value_limit_}; }

 private:
  enum class Walk { found, absent, changed };
  int validate(const unsigned char* base, size_t size, std::string* why);
  Walk walk(const void* key, uint32_t klen, uint64_t hash, void* buf, size_t cap, uint64_t now,
            ReadResult* out, uint32_t* way_index);
  void note(ReadStatus s, uint32_t way_index);

  const unsigned char* base_ = nullptr;  // whole segment, PROT_READ
  size_t size_ = 0;
  bool owned_ = false;                   // base_ is our mapping
  const Header* header_ = nullptr;
  const Bucket* buckets_ = nullptr;
  const unsigned char* data_ = nullptr;
  uint64_t data_bytes_ = 0;
  uint32_t bucket_count_ = 0;
  uint32_t key_limit_ = 0, value_limit_ = 0, grace_ms_ = 0, writer_pid_ = 0;
  uint64_t generation_ = 0;
  uint64_t hash_key_[2] = {0, 0};

  HitRegion* hits_ = nullptr;  // this process's hit region, not owned; may be absent
};

}  // namespace nearcache::shm
