// shm/s3fifo.cc — the eviction policy, S3-FIFO (Yang et al., SOSP '23): a
// small FIFO queue (about 10% of the data area) that new keys enter, a main
// FIFO queue, and a ghost queue of fingerprints of keys evicted from small
// unread. Accesses are a 0..3 frequency per way in the writer's memory
// (its own lookups and the hits readers report in their hit regions). At a log's tail (log.cc hands each live item here): an item of small
// moves to main if it was read (or main still has room), else it is evicted
// and remembered in the ghost queue; an item of main is re-inserted with one
// access less if it was read, else evicted. A new key found in the ghost queue
// enters main directly.
#include <algorithm>

#include "words.h"
#include "writer_internal.h"

namespace nearcache::shm {

namespace {

// Re-insertions of hot main-queue items one allocation may do before it
// evicts regardless; bounds the work of one set.
constexpr int kMaxReinserts = 32;

}  // namespace

// The small/main split of the data area, and a ghost table sized to the index.
void Writer::init_queues(uint64_t data_bytes) {
  const uint64_t small = round_up(data_bytes * opts_.small_queue_percent / 100, kItemAlign);
  small_.begin = small_.head = small_.tail = 0;
  small_.end = small;
  main_.begin = main_.head = main_.tail = small;
  main_.end = data_bytes;
  const uint64_t planned = uint64_t(nbuckets_ * kPlannedWays);
  size_t sets = 16;
  while (sets * 2 < planned) sets *= 2;  // about 2 ghost entries per planned entry, 4 per set
  ghost_.assign(sets * 4, 0);
}

// The log a stored item goes to: a replaced key stays in its queue, a key the
// ghost queue remembers goes to main, any other to small; items too large for
// small (over a quarter of it) always go to main.
Writer::Ring& Writer::admit(const Loc& existing, uint64_t h, uint64_t size) {
  Ring* ring = &small_;
  if (existing.found()) {
    ring = &ring_of(way_unit(bucket(existing.bucket)->way[existing.way]) * kItemAlign);
  } else if (ghost_take(h)) {
    ring = &main_;
    st_.ghost_hits++;
  }
  if (size > small_.size() / 4) ring = &main_;
  return *ring;
}

// The live, unexpired item at r's tail (`size` bytes, indexed at `at`, key
// hash h): moved, re-inserted or evicted; r's tail moves past it.
void Writer::evict_or_keep(Ring& r, const Loc& at, uint64_t h, uint64_t size, int* reinserts) {
  const uint64_t off = r.tail;
  Loc loc = at;
  const uint8_t f = *freq(loc);
  // A move gives the item a new id: with a Redis tier an unsynced item's
  // move is remembered, so that its write-behind acknowledgement (which
  // carries the old id) still marks it synced (mark_synced).
  const uint64_t old_id =
      opts_.redis_tier && !(meta_bits(item_at(off)->meta) & kItemSynced) ? id_at(off) : 0;
  auto relocate = [&](uint64_t to, const std::vector<unsigned char>& copy) {
    // Copied out first: `to` may overlap the old bytes, so the copy back is
    // written inside the bucket's odd version, like the way itself.
    Bucket* b = bucket(loc.bucket);
    begin_write(b);
    copy_to_shared(data_, to, copy.data(), size);
    store_relaxed(&b->way[loc.way], make_way(way_tag(b->way[loc.way]), to / kItemAlign));
    end_write(b);
    if (old_id) note_move(old_id, id_at(to));
  };

  if (&r == &small_) {
    if (f >= 1 || main_.used + size <= main_.size()) {
      // Main's own evictions below use scratch_, hence a second buffer.
      move_scratch_.assign(data_ + off, data_ + off + size);
      const uint64_t to = alloc(main_, size);
      loc = find_unit(h, off / kItemAlign);  // main's evictions may have moved it to another way
      relocate(to, move_scratch_);
      *freq(loc) = 0;
      st_.moved_to_main++;
    } else {
      remove_at(loc, Why::evicted);
      ghost_put(h);
    }
    return advance_tail(r, size);
  }

  if (f >= 1 && *reinserts < kMaxReinserts) {
    scratch_.assign(data_ + off, data_ + off + size);
    advance_tail(r, size);
    uint64_t to;
    if (place(main_, size, &to)) {
      relocate(to, scratch_);
      *freq(loc) = uint8_t(f - 1);
      st_.reinserted++;
      ++*reinserts;
    } else {
      remove_at(loc, Why::evicted);
    }
    return;
  }
  remove_at(loc, Why::evicted);
  advance_tail(r, size);
}

// ---------------------------------------------------------------- ghost queue
// Fingerprints in a set-associative table of 4-entry sets; an entry counts
// while fewer than max(entries, 64) insertions have followed it.

bool Writer::ghost_take(uint64_t h) {
  const size_t sets = ghost_.size() / 4;
  const size_t s = (h >> 20) & (sets - 1);
  const uint32_t fp = uint32_t(h) | 1;
  const uint64_t capacity = std::max<uint64_t>(st_.entries, 64);
  for (size_t i = s * 4; i < s * 4 + 4; ++i) {
    const uint64_t e = ghost_[i];
    if (e != 0 && uint32_t(e >> 32) == fp) {
      ghost_[i] = 0;
      return uint32_t(uint32_t(ghost_clock_) - uint32_t(e)) <= capacity;
    }
  }
  return false;
}

void Writer::ghost_put(uint64_t h) {
  const size_t sets = ghost_.size() / 4;
  const size_t s = (h >> 20) & (sets - 1);
  const uint32_t fp = uint32_t(h) | 1;
  const uint32_t now = uint32_t(++ghost_clock_);
  size_t slot = s * 4;
  uint32_t oldest = 0;
  for (size_t i = s * 4; i < s * 4 + 4; ++i) {
    if (ghost_[i] == 0) {
      slot = i;
      break;
    }
    const uint32_t age = now - uint32_t(ghost_[i]);
    if (age > oldest) oldest = age, slot = i;
  }
  ghost_[slot] = (uint64_t(fp) << 32) | now;
}

}  // namespace nearcache::shm
