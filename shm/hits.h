// shm/hits.h — hit regions: how reader processes report their hits without
// sharing a writable object with anyone.
//
// A reader process creates one HitRegion: a memfd of exactly kHitRegionBytes,
// sealed against shrinking and growing, mapped read-write by that process
// alone. Its Readers record hits into it (hit path: a few relaxed stores, no
// locked instruction). The process passes the fd to the daemon once per
// connection (op HITS, SCM_RIGHTS; doc/protocol.md). The daemon wraps it in a
// HitSource, which checks the fd and reads it with pread only: a hole reads
// as zeros, a hostile owner can neither crash nor stall the daemon, and can
// lie about nothing but its own hits. Depends only on the C++ standard
// library and Linux.
#pragma once

#include <cstddef>
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "layout.h"

namespace nearcache::shm {

// The owner's side: created, sized, sealed and mapped by the reader process.
class HitRegion {
 public:
  // Returns nullptr with *why set when memfd_create, sizing, sealing or mapping fails.
  static std::unique_ptr<HitRegion> create(std::string* why);
  ~HitRegion();
  HitRegion(const HitRegion&) = delete;
  HitRegion& operator=(const HitRegion&) = delete;

  // The memfd (close-on-exec), to send with HITS; owned by this object.
  int fd() const { return fd_; }
  // The segment generation the ring's way indexes refer to (Reader::open sets it).
  void set_generation(uint64_t g) { store_relaxed(&h_->generation, g); }

  // The hit path. Plain load + store, not an atomic add: a locked instruction
  // costs a memory round trip after a cache miss; only threads of this one
  // process can race here, and a lost count or hint is harmless.
  void hit(uint32_t way_index) {
    const uint64_t head = load_relaxed(&h_->head);
    store_relaxed(&ring_[head & (kHitRing - 1)], way_index);
    store_relaxed(&h_->head, head + 1);
    store_relaxed(&h_->hits, load_relaxed(&h_->hits) + 1);
  }
  void miss() { store_relaxed(&h_->misses, load_relaxed(&h_->misses) + 1); }
  void busy() { store_relaxed(&h_->busy, load_relaxed(&h_->busy) + 1); }
  // A definite miss this process answered without the daemon (after miss()).
  void local_miss() { store_relaxed(&h_->local_misses, load_relaxed(&h_->local_misses) + 1); }

  uint64_t hits() const { return load_relaxed(&h_->hits); }
  uint64_t misses() const { return load_relaxed(&h_->misses); }
  uint64_t busy_count() const { return load_relaxed(&h_->busy); }
  uint64_t local_misses() const { return load_relaxed(&h_->local_misses); }
  HitRegionHeader* header() const { return h_; }  // tests
  uint32_t* ring() const { return ring_; }        // tests

 private:
  HitRegion() = default;
  int fd_ = -1;
  HitRegionHeader* h_ = nullptr;
  uint32_t* ring_ = nullptr;
};

// Counter deltas a HitSource read since its previous poll.
struct HitDeltas {
  uint64_t hits = 0, misses = 0, busy = 0, local_misses = 0;
};

// The daemon's side: one registered region. Never maps the fd.
class HitSource {
 public:
  // Lookups per millisecond one process can plausibly do (far above what a
  // real one does): counter deltas are clamped to this times the time since
  // the previous poll (at least one millisecond).
  static constexpr uint64_t kMaxLookupsPerMs = 20000;

  // Checks `fd`: F_GET_SEALS works (a memfd) and has SHRINK and GROW, fstat
  // says a regular file of exactly kHitRegionBytes. Takes ownership of the fd
  // whatever the outcome (closes it on failure). Returns 0 or an errno value
  // (EINVAL, EPERM for missing seals) with a one-line reason.
  static int adopt(int fd, uint64_t now_ms, std::unique_ptr<HitSource>* out, std::string* why);
  ~HitSource();
  HitSource(const HitSource&) = delete;
  HitSource& operator=(const HitSource&) = delete;

  // Reads the region once (at most three preads; the baselines are the
  // region's counts when it was adopted): appends to `ways` the ring
  // entries written since the last poll (the newest kHitRing at most, only if
  // the region's generation is `generation`, only indexes below `max_index`),
  // and adds the counters' plausible growth to *d. A counter that went down
  // restarts its baseline. Returns false when the fd cannot be read (drop it).
  bool poll(uint64_t generation, uint64_t max_index, uint64_t now_ms, std::vector<uint32_t>* ways, HitDeltas* d);

  int fd() const { return fd_; }

 private:
  HitSource() = default;
  int fd_ = -1;
  uint64_t head_ = 0, hits_ = 0, misses_ = 0, busy_ = 0, local_misses_ = 0, last_ms_ = 0;
};

}  // namespace nearcache::shm
