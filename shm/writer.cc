// shm/writer.cc — see writer.h for the design, layout.h for the format.
#include "writer.h"

#include <signal.h>
#include <sys/random.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <chrono>
#include <cstring>

#include "msgpack_int.h"
#include "segment_file.h"
#include "siphash.h"
#include "words.h"

namespace nearcache::shm {

namespace {

// Index sizing: buckets are planned three-quarters full at the expected item
// size. Two-choice placement keeps nearly every bucket below full until the
// table holds about a third more entries than that.
constexpr double kPlannedWays = 5.25;
// Re-insertions of hot main-queue items one allocation may do before it
// evicts regardless; bounds the work of one set.
constexpr int kMaxReinserts = 32;

uint64_t round_up(uint64_t v, uint64_t a) { return (v + a - 1) / a * a; }

uint64_t unix_ms() {
  using namespace std::chrono;
  return uint64_t(duration_cast<milliseconds>(system_clock::now().time_since_epoch()).count());
}

ObjectSpec segment_spec(const WriterOptions& o) { return {o.path, o.posix_shm, o.mode, o.group}; }
ObjectSpec hints_spec(const WriterOptions& o) { return {o.hints_path, o.posix_shm, o.hints_mode, o.group}; }

}  // namespace

const char* status_name(Status s) {
  switch (s) {
    case Status::ok: return "ok";
    case Status::not_found: return "not_found";
    case Status::exists: return "exists";
    case Status::key_too_long: return "key_too_long";
    case Status::value_too_large: return "value_too_large";
    case Status::not_integer: return "not_integer";
    case Status::out_of_range: return "out_of_range";
  }
  return "?";
}

// ---------------------------------------------------------------- creation

std::unique_ptr<Writer> Writer::create(const WriterOptions& opts, std::string* why) {
  std::unique_ptr<Writer> w(new Writer());
  if (w->init(opts, why) != 0) return nullptr;
  return w;
}

uint64_t Writer::max_item_bytes() const { return item_bytes(opts_.key_limit, opts_.value_limit); }

int Writer::init(const WriterOptions& in, std::string* why) {
  opts_ = in;
  if (opts_.hints_path.empty()) opts_.hints_path = opts_.path + ".hints";
  auto bad = [&](const std::string& m) {
    if (why) *why = m;
    return EINVAL;
  };
  if (opts_.path.empty()) return bad("segment path is empty");
  if (opts_.posix_shm && (opts_.path[0] != '/' || opts_.path.find('/', 1) != std::string::npos))
    return bad("a POSIX shared-memory name is one '/' followed by a name without '/': " + opts_.path);
  if (opts_.key_limit == 0 || opts_.key_limit > kMaxKeyLimit)
    return bad("key limit must be between 1 and " + std::to_string(kMaxKeyLimit));
  if (opts_.value_limit == 0 || opts_.value_limit > UINT32_MAX - 2 * kMaxKeyLimit)
    return bad("value limit must be between 1 and 4 GiB");
  if (opts_.expected_item_bytes < 32) return bad("expected item size must be at least 32 bytes");
  if (opts_.small_queue_percent < 1 || opts_.small_queue_percent > 50)
    return bad("small queue share must be between 1 and 50 percent");

  // Geometry: plan the index for the entries that fit when items are of the
  // expected size, then give the rest to the data area.
  const uint64_t seg = opts_.segment_bytes & ~uint64_t(4095);
  const uint64_t per_entry = opts_.expected_item_bytes + uint64_t(kBucketBytes / kPlannedWays) + 1;
  const uint64_t entries = seg > 2 * kHeaderBytes ? (seg - 2 * kHeaderBytes) / per_entry : 0;
  const uint64_t buckets = std::max<uint64_t>(2, uint64_t(entries / kPlannedWays) + 1);
  if (buckets > UINT32_MAX / 2) return bad("segment too large for the index");
  nbuckets_ = uint32_t(buckets);
  const uint64_t buckets_offset = kHeaderBytes;
  const uint64_t data_offset = round_up(buckets_offset + uint64_t(nbuckets_) * kBucketBytes, 4096);
  const uint64_t data_bytes = seg > data_offset ? (seg - data_offset) & ~uint64_t(kItemAlign - 1) : 0;
  if (data_bytes < 8 * max_item_bytes())
    return bad("segment of " + std::to_string(opts_.segment_bytes) + " bytes is too small for items of up to " +
               std::to_string(max_item_bytes()) + " bytes (key and value limits): it needs at least " +
               std::to_string(data_offset + 8 * max_item_bytes()) + " bytes");

  // One writer per segment: the lock is held for this Writer's lifetime.
  int rc = ObjectLock::acquire(segment_spec(opts_), &lock_, why);
  if (rc != 0) return rc;

  // The previous table, if any: its generation, and its readers must move on.
  uint64_t old_generation = 0;
  std::unique_ptr<MappedObject> old;
  if (open_object_rw(segment_spec(opts_), &old, nullptr) == 0 && old->size() >= kHeaderBytes) {
    auto* oh = reinterpret_cast<Header*>(old->data());
    if (load_relaxed(&oh->magic) == kMagic) old_generation = load_relaxed(&oh->generation);
    else old.reset();
  } else {
    old.reset();
  }

  const uint64_t hints_bytes = hints_total_bytes(nbuckets_);
  rc = create_object(hints_spec(opts_), hints_bytes, &hints_, why);
  if (rc != 0) return rc;
  rc = create_object(segment_spec(opts_), seg, &segment_, why);
  if (rc != 0) {
    remove_object(hints_spec(opts_));
    return rc;
  }

  const uint64_t generation = std::max(old_generation + 1, unix_ms());
  uint64_t key[2];
  if (getrandom(key, sizeof key, 0) != sizeof key) return bad("getrandom failed");

  auto* hh = reinterpret_cast<HintsHeader*>(hints_->data());
  hh->magic = kHintsMagic;
  hh->layout_version = kLayoutVersion;
  hh->counter_slots = kCounterSlots;
  hh->generation = generation;
  hh->counters_offset = kHintsCountersOffset;
  hh->freq_offset = kHintsFreqOffset;
  hh->freq_bytes = uint64_t(nbuckets_) * 8;
  hh->total_bytes = hints_bytes;
  slots_ = reinterpret_cast<ReaderCounters*>(hints_->data() + kHintsCountersOffset);
  freq_ = hints_->data() + kHintsFreqOffset;

  unsigned char* base = segment_->data();
  header_ = reinterpret_cast<Header*>(base);
  header_->magic = kMagic;
  header_->layout_version = kLayoutVersion;
  header_->header_bytes = kHeaderBytes;
  header_->segment_bytes = seg;
  header_->generation = generation;
  header_->hash_key[0] = key[0];
  header_->hash_key[1] = key[1];
  header_->buckets_offset = buckets_offset;
  header_->bucket_count = nbuckets_;
  header_->bucket_ways = kWaysPerBucket;
  header_->data_offset = data_offset;
  header_->data_bytes = data_bytes;
  header_->key_limit = opts_.key_limit;
  header_->value_limit = opts_.value_limit;
  header_->writer_pid = uint32_t(getpid());
  header_->heartbeat_grace_ms = opts_.heartbeat_grace_ms;
  header_->created_unix_ms = unix_ms();
  header_->hints_bytes = hints_bytes;
  buckets_ = reinterpret_cast<Bucket*>(base + buckets_offset);
  data_ = base + data_offset;

  const uint64_t small = round_up(data_bytes * opts_.small_queue_percent / 100, kItemAlign);
  small_.begin = small_.head = small_.tail = 0;
  small_.end = small;
  main_.begin = main_.head = main_.tail = small;
  main_.end = data_bytes;
  applied_.assign(nbuckets_, 0);
  const uint64_t planned = uint64_t(nbuckets_ * kPlannedWays);
  size_t sets = 16;
  while (sets * 2 < planned) sets *= 2;  // about 2 ghost entries per planned entry, 4 per set
  ghost_.assign(sets * 4, 0);
  st_.data_bytes = data_bytes;
  st_.index_bytes = uint64_t(nbuckets_) * kBucketBytes;
  st_.index_ways = uint64_t(nbuckets_) * kWaysPerBucket;
  st_.segment_bytes = seg;

  store_relaxed(&header_->heartbeat_ms, now_());
  store_release(&header_->state, uint32_t(SegmentState::running));

  if ((rc = publish_object(hints_spec(opts_), why)) != 0 || (rc = publish_object(segment_spec(opts_), why)) != 0) {
    remove_object(hints_spec(opts_));
    return rc;
  }
  if (old) store_release(&reinterpret_cast<Header*>(old->data())->state, uint32_t(SegmentState::stopped));
  return 0;
}

Writer::~Writer() { stop(); }

uint64_t Writer::generation() const { return header_->generation; }

void Writer::heartbeat() { store_relaxed(&header_->heartbeat_ms, now_()); }

void Writer::stop() {
  if (header_) store_release(&header_->state, uint32_t(SegmentState::stopped));
}

void Writer::remove() {
  remove_object(segment_spec(opts_));
  remove_object(hints_spec(opts_));
  lock_->remove();
}

// ---------------------------------------------------------------- index

uint64_t Writer::hash(std::string_view key) const { return key_hash(header_->hash_key, key.data(), key.size()); }

std::string_view Writer::item_key(const ItemHeader* ih) const {
  return {reinterpret_cast<const char*>(ih) + kItemHeaderBytes, meta_key_len(ih->meta)};
}

bool Writer::expired(const ItemHeader* ih, uint64_t now) const {
  return ih->expiry_ms != 0 && ih->expiry_ms <= now;
}

Writer::Loc Writer::find(std::string_view key, uint64_t h) const {
  const uint16_t tag = tag_of(h);
  const BucketPair pair = buckets_of(h, nbuckets_);
  for (const uint32_t idx : {pair.first, pair.second}) {
    const Bucket* b = bucket(idx);
    for (uint32_t w = 0; w < kWaysPerBucket; ++w) {
      const uint64_t way = b->way[w];
      if (way == 0 || way_tag(way) != tag) continue;
      if (item_key(item_at(way_unit(way) * kItemAlign)) == key) return {idx, w};
    }
  }
  return {0, kWaysPerBucket};
}

Writer::Loc Writer::find_unit(uint64_t h, uint64_t unit) const {
  const BucketPair pair = buckets_of(h, nbuckets_);
  for (const uint32_t idx : {pair.first, pair.second}) {
    const Bucket* b = bucket(idx);
    for (uint32_t w = 0; w < kWaysPerBucket; ++w)
      if (b->way[w] != 0 && way_unit(b->way[w]) == unit) return {idx, w};
  }
  return {0, kWaysPerBucket};
}

// Seqlock, writer side (Boehm's pattern): odd version, release fence, the
// changes (relaxed atomic stores), then the next even version with release.
void Writer::begin_write(Bucket* b) {
  store_relaxed(&b->version, b->version + 1);
  __atomic_thread_fence(__ATOMIC_RELEASE);
}

void Writer::end_write(Bucket* b) { store_release(&b->version, b->version + 1); }

// A way for a new key: an empty way in the emptier of its two buckets; when
// both are full, a way freed by moving an entry to its other bucket; failing
// that, the way of the least used entry of the two, which is evicted.
Writer::Loc Writer::free_way(uint64_t h) {
  const BucketPair pair = buckets_of(h, nbuckets_);
  Loc empty{0, kWaysPerBucket}, victim{0, kWaysPerBucket};
  uint32_t most_empty = 0;
  int victim_score = 1 << 30;
  const uint64_t now = now_();
  for (const uint32_t idx : {pair.first, pair.second}) {
    const Bucket* b = bucket(idx);
    uint32_t n_empty = 0;
    Loc first_empty{0, kWaysPerBucket};
    for (uint32_t w = 0; w < kWaysPerBucket; ++w) {
      if (b->way[w] == 0) {
        if (n_empty++ == 0) first_empty = {idx, w};
        continue;
      }
      const uint64_t off = way_unit(b->way[w]) * kItemAlign;
      // Prefer expired entries, then the small queue, then the least used.
      const int score =
          expired(item_at(off), now) ? -1 : (off < small_.end ? 0 : 4) + (freq_ ? load_relaxed(freq_ + idx * 8 + w) : 0);
      if (score < victim_score) victim_score = score, victim = {idx, w};
    }
    if (n_empty > most_empty) most_empty = n_empty, empty = first_empty;
  }
  if (empty.found()) return empty;
  // Both full: move one of their entries to its own other bucket if that has
  // room (one cuckoo step). The entry is published there before it leaves
  // here, so a reader finds it in one bucket or the other.
  for (const uint32_t idx : {pair.first, pair.second}) {
    Bucket* b = bucket(idx);
    for (uint32_t w = 0; w < kWaysPerBucket; ++w) {
      const uint64_t way = b->way[w];
      const BucketPair other = buckets_of(hash(item_key(item_at(way_unit(way) * kItemAlign))), nbuckets_);
      const uint32_t alt = other.first == idx ? other.second : other.first;
      Bucket* a = bucket(alt);
      for (uint32_t aw = 0; aw < kWaysPerBucket; ++aw) {
        if (a->way[aw] != 0) continue;
        begin_write(a);
        store_relaxed(&a->way[aw], way);
        end_write(a);
        begin_write(b);
        store_relaxed(&b->way[w], uint64_t{0});
        end_write(b);
        if (freq_) {
          store_relaxed(freq_ + uint64_t(alt) * 8 + aw, load_relaxed(freq_ + uint64_t(idx) * 8 + w));
          store_relaxed(freq_ + uint64_t(idx) * 8 + w, uint8_t{0});
        }
        st_.index_moves++;
        return {idx, w};
      }
    }
  }
  remove_at(victim, victim_score < 0 ? Why::expired : Why::evicted);
  if (victim_score >= 0) st_.index_evictions++;
  return victim;
}

void Writer::remove_at(const Loc& loc, Why why) {
  Bucket* b = bucket(loc.bucket);
  const uint64_t way = b->way[loc.way];
  ItemHeader* ih = item_at(way_unit(way) * kItemAlign);
  const uint64_t meta = ih->meta;
  begin_write(b);
  store_relaxed(&b->way[loc.way], uint64_t{0});
  end_write(b);
  // The item's bytes now belong to its log only; readers that still hold the
  // way will fail their version check. Marking it dead lets the log skip it.
  store_relaxed(&ih->meta, make_meta(meta_value_len(meta), meta_key_len(meta), meta_flags(meta), ItemState::dead));
  if (freq_) store_relaxed(freq_ + loc.bucket * 8 + loc.way, uint8_t{0});
  st_.entries--;
  st_.live_bytes -= meta_key_len(meta) + uint64_t(meta_value_len(meta));
  st_.item_bytes -= item_bytes(meta_key_len(meta), meta_value_len(meta));
  if (ih->expiry_ms != 0) with_expiry_--;
  switch (why) {
    case Why::expired: st_.expirations++; break;
    case Why::evicted: st_.evictions++; break;
    case Why::cleared: st_.cleared++; break;
    case Why::deleted:
    case Why::replaced: break;
  }
}

// ---------------------------------------------------------------- logs

void Writer::write_item(uint64_t off, std::string_view key, std::string_view value, uint8_t flags,
                        uint64_t expiry) {
  const uint64_t n = item_bytes(key.size(), value.size());
  scratch_.resize(n);
  ItemHeader ih{expiry, make_meta(uint32_t(value.size()), uint16_t(key.size()), flags, ItemState::live)};
  std::memcpy(scratch_.data(), &ih, sizeof ih);
  // An empty string_view may carry a null data(); memcpy must not see it.
  if (!key.empty()) std::memcpy(scratch_.data() + kItemHeaderBytes, key.data(), key.size());
  if (!value.empty()) std::memcpy(scratch_.data() + kItemHeaderBytes + key.size(), value.data(), value.size());
  copy_to_shared(data_, off, scratch_.data(), n);
}

// Places n bytes at the head if they fit without freeing anything; wraps the
// head (padding the end of the log) when only the start has room.
bool Writer::place(Ring& r, uint64_t n, uint64_t* off) {
  if (r.used == 0) r.head = r.tail = r.begin;
  if (r.used == r.size()) return false;
  if (r.head >= r.tail && r.end - r.head < n) {
    if (r.tail - r.begin < n) return false;
    const uint64_t gap = r.end - r.head;
    if (gap >= kItemHeaderBytes) {
      ItemHeader* ih = item_at(r.head);
      store_relaxed(&ih->meta, make_meta(0, 0, 0, ItemState::wrap));
    }
    r.used += gap;
    r.head = r.begin;
    st_.wraps++;
  }
  const uint64_t room = r.head < r.tail ? r.tail - r.head : r.end - r.head;
  if (room < n) return false;
  *off = r.head;
  r.head += n;
  r.used += n;
  if (r.head == r.end) {
    r.head = r.begin;
    st_.wraps++;
  }
  return true;
}

uint64_t Writer::alloc(Ring& r, uint64_t n) {
  int reinserts = 0;
  uint64_t off;
  while (!place(r, n, &off)) free_tail(r, &reinserts);
  return off;
}

// Frees the oldest bytes of a log: padding and dead items are dropped; a
// live item is reclaimed if expired, else handled by S3-FIFO: from the small
// queue it moves to main if it was read (or main still has room) and is
// evicted otherwise, its fingerprint going to the ghost queue; from the main
// queue it is re-inserted with one access less if it was read, else evicted.
void Writer::free_tail(Ring& r, int* reinserts) {
  auto advance = [&r](uint64_t n) {
    r.tail += n;
    r.used -= n;
    if (r.tail == r.end) r.tail = r.begin;
    if (r.used == 0) r.head = r.tail = r.begin;
  };
  const uint64_t gap = r.end - r.tail;
  if (gap < kItemHeaderBytes || meta_state(item_at(r.tail)->meta) == ItemState::wrap) {
    r.used -= gap;
    r.tail = r.begin;
    if (r.used == 0) r.head = r.begin;
    return;
  }
  const uint64_t off = r.tail;
  ItemHeader* ih = item_at(off);
  const uint64_t size = item_bytes(meta_key_len(ih->meta), meta_value_len(ih->meta));
  if (meta_state(ih->meta) != ItemState::live) return advance(size);

  const uint64_t h = hash(item_key(ih));
  Loc loc = find_unit(h, off / kItemAlign);
  if (!loc.found()) return advance(size);  // unreachable: a live item is always indexed
  if (expired(ih, now_())) {
    remove_at(loc, Why::expired);
    return advance(size);
  }
  const uint8_t f = freq_ ? load_relaxed(freq_ + loc.bucket * 8 + loc.way) : 0;
  auto relocate = [&](uint64_t to, const std::vector<unsigned char>& copy) {
    // Copied out first: `to` may overlap the old bytes, so the copy back is
    // written inside the bucket's odd version, like the way itself.
    Bucket* b = bucket(loc.bucket);
    begin_write(b);
    copy_to_shared(data_, to, copy.data(), size);
    store_relaxed(&b->way[loc.way], make_way(way_tag(b->way[loc.way]), to / kItemAlign));
    end_write(b);
  };

  if (&r == &small_) {
    if (f >= 1 || main_.used + size <= main_.size()) {
      // Main's own evictions below use scratch_, hence a second buffer.
      move_scratch_.assign(data_ + off, data_ + off + size);
      const uint64_t to = alloc(main_, size);
      loc = find_unit(h, off / kItemAlign);  // main's evictions may have moved it to another way
      relocate(to, move_scratch_);
      if (freq_) store_relaxed(freq_ + loc.bucket * 8 + loc.way, uint8_t{0});
      st_.moved_to_main++;
    } else {
      remove_at(loc, Why::evicted);
      ghost_put(h);
    }
    return advance(size);
  }

  if (f >= 1 && *reinserts < kMaxReinserts) {
    scratch_.assign(data_ + off, data_ + off + size);
    advance(size);
    uint64_t to;
    if (place(main_, size, &to)) {
      relocate(to, scratch_);
      if (freq_) store_relaxed(freq_ + loc.bucket * 8 + loc.way, uint8_t(f - 1));
      st_.reinserted++;
      ++*reinserts;
    } else {
      remove_at(loc, Why::evicted);
    }
    return;
  }
  remove_at(loc, Why::evicted);
  advance(size);
}

// ---------------------------------------------------------------- ghost queue

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

// ---------------------------------------------------------------- operations

Status Writer::store(std::string_view key, std::string_view value, uint8_t flags, uint64_t expiry, bool only_if_absent) {
  if (key.size() > opts_.key_limit) return Status::key_too_long;
  if (value.size() > opts_.value_limit) return Status::value_too_large;
  const uint64_t now = now_();
  const uint64_t h = hash(key);
  settle_key(h);
  Loc loc = find(key, h);
  if (loc.found() && expired(item_at(way_unit(bucket(loc.bucket)->way[loc.way]) * kItemAlign), now)) {
    remove_at(loc, Why::expired);
    loc = {0, kWaysPerBucket};
  }
  if (only_if_absent && loc.found()) return Status::exists;
  if (expiry != 0 && expiry <= now) {  // "expire at once": the key is gone
    if (loc.found()) remove_at(loc, Why::replaced);
    return Status::ok;
  }

  const uint64_t size = item_bytes(key.size(), value.size());
  Ring* ring = &small_;
  if (loc.found()) {
    ring = &ring_of(way_unit(bucket(loc.bucket)->way[loc.way]) * kItemAlign);
  } else if (ghost_take(h)) {
    ring = &main_;
    st_.ghost_hits++;
  }
  if (size > small_.size() / 4) ring = &main_;
  const uint64_t off = alloc(*ring, size);
  write_item(off, key, value, flags, expiry);

  loc = find(key, h);  // the allocation may have evicted or moved the old item
  if (!loc.found()) loc = free_way(h);
  Bucket* b = bucket(loc.bucket);
  const uint64_t old = b->way[loc.way];
  begin_write(b);
  store_relaxed(&b->way[loc.way], make_way(tag_of(h), off / kItemAlign));
  end_write(b);
  if (old != 0) {
    ItemHeader* oh = item_at(way_unit(old) * kItemAlign);
    const uint64_t m = oh->meta;
    store_relaxed(&oh->meta, make_meta(meta_value_len(m), meta_key_len(m), meta_flags(m), ItemState::dead));
    st_.entries--;
    st_.live_bytes -= meta_key_len(m) + uint64_t(meta_value_len(m));
    st_.item_bytes -= item_bytes(meta_key_len(m), meta_value_len(m));
    if (oh->expiry_ms != 0) with_expiry_--;
  }
  st_.entries++;
  st_.live_bytes += key.size() + value.size();
  st_.item_bytes += size;
  if (expiry != 0) with_expiry_++;
  return Status::ok;
}

Status Writer::set(std::string_view key, std::string_view value, uint8_t flags, uint64_t expiry_ms) {
  st_.sets++;
  return store(key, value, flags, expiry_ms, false);
}

Status Writer::add(std::string_view key, std::string_view value, uint8_t flags, uint64_t expiry_ms) {
  st_.adds++;
  return store(key, value, flags, expiry_ms, true);
}

Status Writer::del(std::string_view key) {
  if (key.size() > opts_.key_limit) return Status::key_too_long;
  st_.deletes++;
  const uint64_t h = hash(key);
  settle_key(h);
  Loc loc = find(key, h);
  if (!loc.found()) return Status::not_found;
  const bool was_expired = expired(item_at(way_unit(bucket(loc.bucket)->way[loc.way]) * kItemAlign), now_());
  remove_at(loc, was_expired ? Why::expired : Why::deleted);
  return was_expired ? Status::not_found : Status::ok;
}

Status Writer::touch(std::string_view key, uint64_t expiry_ms) {
  if (key.size() > opts_.key_limit) return Status::key_too_long;
  st_.touches++;
  const uint64_t now = now_();
  const uint64_t h = hash(key);
  settle_key(h);
  Loc loc = find(key, h);
  if (!loc.found()) return Status::not_found;
  Bucket* b = bucket(loc.bucket);
  ItemHeader* ih = item_at(way_unit(b->way[loc.way]) * kItemAlign);
  if (expired(ih, now)) {
    remove_at(loc, Why::expired);
    return Status::not_found;
  }
  if (expiry_ms != 0 && expiry_ms <= now) {
    remove_at(loc, Why::deleted);
    return Status::ok;
  }
  with_expiry_ += (expiry_ms != 0) - (ih->expiry_ms != 0);
  begin_write(b);
  store_relaxed(&ih->expiry_ms, expiry_ms);
  end_write(b);
  return Status::ok;
}

Status Writer::incr(std::string_view key, int64_t delta, int64_t* result) { return add_to_int(key, delta, result); }

Status Writer::decr(std::string_view key, int64_t delta, int64_t* result) {
  return add_to_int(key, -__int128(delta), result);  // -INT64_MIN fits in 128 bits
}

Status Writer::add_to_int(std::string_view key, __int128 delta, int64_t* result) {
  if (key.size() > opts_.key_limit) return Status::key_too_long;
  st_.incrs++;
  Item it;
  if (!lookup(key, &it, true)) return Status::not_found;
  __int128 v;
  if (!parse_msgpack_int(it.value, &v)) return Status::not_integer;
  v += delta;
  if (v < INT64_MIN || v > INT64_MAX) return Status::out_of_range;
  *result = int64_t(v);
  const std::string enc = encode_msgpack_int(int64_t(v));
  const std::string k(it.key);  // the views die with the store below
  return store(k, enc, it.flags, it.expiry_ms, false);
}

bool Writer::get(std::string_view key, Item* out) {
  st_.gets++;
  if (!lookup(key, out, true)) return false;
  st_.get_hits++;
  return true;
}

bool Writer::lookup(std::string_view key, Item* out, bool touch_freq) {
  if (key.size() > opts_.key_limit) return false;
  const uint64_t h = hash(key);
  settle_key(h);
  Loc loc = find(key, h);
  if (!loc.found()) return false;
  ItemHeader* ih = item_at(way_unit(bucket(loc.bucket)->way[loc.way]) * kItemAlign);
  if (expired(ih, now_())) {
    remove_at(loc, Why::expired);
    return false;
  }
  const uint64_t m = ih->meta;
  out->key = item_key(ih);
  out->value = {out->key.data() + out->key.size(), meta_value_len(m)};
  out->flags = meta_flags(m);
  out->expiry_ms = ih->expiry_ms;
  if (touch_freq && freq_) {
    uint8_t* f = freq_ + loc.bucket * 8 + loc.way;
    const uint8_t cur = load_relaxed(f);
    if (cur < kMaxFreq) store_relaxed(f, uint8_t(cur + 1));
  }
  return true;
}

bool Writer::contains(std::string_view key) {
  Item it;
  return lookup(key, &it, false);
}

// ---------------------------------------------------------------- clear

uint64_t Writer::clear_begin(std::string_view prefix) {
  const uint64_t id = ++clear_latest_;
  clears_.push_back({id, std::string(prefix)});
  clear_ids_[std::string(prefix)].push_back(id);
  clear_lengths_[prefix.size()]++;
  if (clears_.size() == 1) {
    pass_target_ = id;
    pass_cursor_ = 0;
  }
  st_.clears++;
  return id;
}

void Writer::settle(uint32_t idx) {
  const uint64_t seen = applied_[idx];
  if (seen >= clear_latest_) return;
  applied_[idx] = clear_latest_;
  if (clears_.size() <= 4 * clear_lengths_.size()) {
    for (Clear& c : clears_)
      if (c.id > seen) clear_bucket(idx, c);
    return;
  }
  // Many clears: each entry looks its key's prefixes up, one per distinct
  // prefix length, and goes to the first clear after `seen` that matches.
  const Bucket* b = bucket(idx);
  for (uint32_t w = 0; w < kWaysPerBucket; ++w) {
    if (b->way[w] == 0) continue;
    const std::string_view key = item_key(item_at(way_unit(b->way[w]) * kItemAlign));
    uint64_t first = 0;
    for (const auto& [len, n] : clear_lengths_) {
      if (len > key.size()) break;
      auto it = clear_ids_.find(key.substr(0, len));
      if (it == clear_ids_.end()) continue;
      auto j = std::upper_bound(it->second.begin(), it->second.end(), seen);
      if (j != it->second.end() && (first == 0 || *j < first)) first = *j;
    }
    if (first == 0) continue;
    remove_at({idx, w}, Why::cleared);
    clears_[first - clears_.front().id].removed++;
  }
}

void Writer::settle_key(uint64_t h) {
  const BucketPair pair = buckets_of(h, nbuckets_);
  settle(pair.first);
  settle(pair.second);
}

void Writer::clear_bucket(uint32_t idx, Clear& c) {
  const Bucket* b = bucket(idx);
  for (uint32_t w = 0; w < kWaysPerBucket; ++w) {
    if (b->way[w] == 0) continue;
    if (c.prefix.empty() || item_key(item_at(way_unit(b->way[w]) * kItemAlign)).starts_with(c.prefix)) {
      remove_at({idx, w}, Why::cleared);
      c.removed++;
    }
  }
}

bool Writer::clear_step(size_t max_buckets) {
  if (clears_.empty()) return true;
  for (size_t i = 0; i < max_buckets && pass_cursor_ < nbuckets_; ++i) settle(uint32_t(pass_cursor_++));
  if (pass_cursor_ < nbuckets_) return false;
  // Every bucket has caught up to at least pass_target_.
  clear_completed_ = pass_target_;
  while (!clears_.empty() && clears_.front().id <= clear_completed_) {
    const Clear& c = clears_.front();
    clear_results_[c.id] = c.removed;
    auto it = clear_ids_.find(c.prefix);
    it->second.erase(it->second.begin());  // the oldest of its prefix
    if (it->second.empty()) clear_ids_.erase(it);
    if (--clear_lengths_[c.prefix.size()] == 0) clear_lengths_.erase(c.prefix.size());
    clears_.pop_front();
  }
  if (!clears_.empty()) {
    pass_target_ = clear_latest_;
    pass_cursor_ = 0;
  }
  return clears_.empty();
}

uint64_t Writer::clear_take(uint64_t id) {
  auto it = clear_results_.find(id);
  if (it == clear_results_.end()) return 0;
  const uint64_t removed = it->second;
  clear_results_.erase(it);
  return removed;
}

// ---------------------------------------------------------------- maintenance

size_t Writer::expire_step(size_t max_buckets) {
  if (with_expiry_ == 0) return 0;
  const uint64_t now = now_();
  size_t reclaimed = 0;
  for (size_t i = 0; i < max_buckets; ++i) {
    const uint32_t idx = uint32_t(expire_cursor_);
    expire_cursor_ = (expire_cursor_ + 1) % nbuckets_;
    const Bucket* b = bucket(idx);
    for (uint32_t w = 0; w < kWaysPerBucket; ++w)
      if (b->way[w] != 0 && expired(item_at(way_unit(b->way[w]) * kItemAlign), now)) {
        remove_at({idx, w}, Why::expired);
        ++reclaimed;
      }
  }
  return reclaimed;
}

void Writer::reap_reader_slots() {
  if (!slots_) return;
  for (uint32_t i = 1; i < kCounterSlots; ++i) {
    ReaderCounters* c = &slots_[i];
    const uint32_t pid = load_relaxed(&c->pid);
    if (pid == 0 || kill(pid_t(pid), 0) == 0 || errno != ESRCH) continue;
    retired_hits_ += __atomic_exchange_n(&c->hits, 0, __ATOMIC_RELAXED);
    retired_misses_ += __atomic_exchange_n(&c->misses, 0, __ATOMIC_RELAXED);
    retired_busy_ += __atomic_exchange_n(&c->busy, 0, __ATOMIC_RELAXED);
    uint32_t expected = pid;
    __atomic_compare_exchange_n(&c->pid, &expected, 0u, false, __ATOMIC_RELAXED, __ATOMIC_RELAXED);
  }
}

WriterStats Writer::stats() const {
  WriterStats s = st_;
  s.small_used = small_.used;
  s.main_used = main_.used;
  s.reader_hits = retired_hits_;
  s.reader_misses = retired_misses_;
  s.reader_busy = retired_busy_;
  if (slots_) {
    for (uint32_t i = 0; i < kCounterSlots; ++i) {
      const ReaderCounters* c = &slots_[i];
      s.reader_hits += load_relaxed(&c->hits);
      s.reader_misses += load_relaxed(&c->misses);
      s.reader_busy += load_relaxed(&c->busy);
      if (i > 0 && load_relaxed(&c->pid) != 0) s.reader_processes++;
    }
  }
  return s;
}

void Writer::for_each(const std::function<void(const Item&)>& fn) {
  const uint64_t now = now_();
  for (uint32_t i = 0; i < nbuckets_; ++i) {
    const Bucket* b = bucket(i);
    for (uint32_t w = 0; w < kWaysPerBucket; ++w) {
      if (b->way[w] == 0) continue;
      const ItemHeader* ih = item_at(way_unit(b->way[w]) * kItemAlign);
      if (expired(ih, now)) continue;
      Item it;
      it.key = item_key(ih);
      it.value = {it.key.data() + it.key.size(), meta_value_len(ih->meta)};
      it.flags = meta_flags(ih->meta);
      it.expiry_ms = ih->expiry_ms;
      fn(it);
    }
  }
}

}  // namespace nearcache::shm
