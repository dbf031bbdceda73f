// shm/log.cc — the data area's two circular logs (S3-FIFO's small and main
// queues): writing an item, placing bytes at a log's head (wrapping with a
// padding marker), and freeing its tail until an allocation fits. What happens
// to a live item at the tail is the eviction policy's call (s3fifo.cc).
#include <cstring>

#include "words.h"
#include "writer_internal.h"

namespace nearcache::shm {

void Writer::write_item(uint64_t off, std::string_view key, std::string_view value, uint8_t flags,
                        uint64_t expiry, uint8_t bits) {
  const uint64_t n = item_bytes(key.size(), value.size());
  scratch_.resize(n);
  ItemHeader ih{expiry, make_meta(uint32_t(value.size()), uint16_t(key.size()), flags, ItemState::live, bits)};
  std::memcpy(scratch_.data(), &ih, sizeof ih);
  // An empty string_view may carry a null data(); memcpy must not see it.
  if (!key.empty()) std::memcpy(scratch_.data() + kItemHeaderBytes, key.data(), key.size());
  if (!value.empty()) std::memcpy(scratch_.data() + kItemHeaderBytes + key.size(), value.data(), value.size());
  copy_to_shared(data_, off, scratch_.data(), n);
}

// Places n bytes at the head if they fit without freeing anything; wraps the
// head (padding the end of the log) when only the start has room.
bool Writer::place(Ring& r, uint64_t n, uint64_t* off) {
  if (r.used == 0) rewind(r), r.tail = r.begin;
  if (r.used == r.size()) return false;
  if (r.head >= r.tail && r.end - r.head < n) {
    if (r.tail - r.begin < n) return false;
    const uint64_t gap = r.end - r.head;
    if (gap >= kItemHeaderBytes) {
      ItemHeader* ih = item_at(r.head);
      store_relaxed(&ih->meta, make_meta(0, 0, 0, ItemState::wrap));
    }
    r.used += gap;
    rewind(r);
    st_.wraps++;
  }
  const uint64_t room = r.head < r.tail ? r.tail - r.head : r.end - r.head;
  if (room < n) return false;
  *off = r.head;
  r.head += n;
  r.used += n;
  if (r.head == r.end) {
    rewind(r);
    st_.wraps++;
  }
  return true;
}

// The head goes back to the start of its log: a new lap, so that an offset
// names one item per lap (item_id).
void Writer::rewind(Ring& r) {
  if (r.head != r.begin) r.laps++;
  r.head = r.begin;
}

uint64_t Writer::alloc(Ring& r, uint64_t n) {
  int reinserts = 0;
  uint64_t off;
  while (!place(r, n, &off)) free_tail(r, &reinserts);
  persist_rings();
  return off;
}

// Frees the oldest bytes of a log: padding and dead items are dropped; a
// live item is reclaimed if expired, else handed to the eviction policy
// (s3fifo.cc), which evicts it, moves it to main or re-inserts it.
void Writer::free_tail(Ring& r, int* reinserts) {
  const uint64_t gap = r.end - r.tail;
  if (gap < kItemHeaderBytes || meta_state(item_at(r.tail)->meta) == ItemState::wrap) {
    r.used -= gap;
    r.tail = r.begin;
    if (r.used == 0) rewind(r);
    return;
  }
  const uint64_t off = r.tail;
  ItemHeader* ih = item_at(off);
  const uint64_t size = item_bytes(meta_key_len(ih->meta), meta_value_len(ih->meta));
  if (meta_state(ih->meta) != ItemState::live) return advance_tail(r, size);

  const uint64_t h = hash(item_key(ih));
  const Loc loc = find_unit(h, off / kItemAlign);
  if (!loc.found()) return advance_tail(r, size);  // its bucket was dropped (drop_all) and reset
  if (expired(ih, now_())) {
    remove_at(loc, Why::expired);
    return advance_tail(r, size);
  }
  evict_or_keep(r, loc, h, size, reinserts);
}

}  // namespace nearcache::shm
