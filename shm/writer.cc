// shm/writer.cc — the Writer's creation (geometry, the two objects, publishing
// a new generation), its lifecycle and stats, and the public operations
// (set/add/del/touch/incr/get) built on the index (index.cc), the logs
// (log.cc) and the eviction policy (s3fifo.cc). See writer.h for the design,
// layout.h for the format.
#include "writer.h"

#include <sys/random.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>

#include "clock.h"
#include "msgpack_int.h"
#include "segment_file.h"
#include "writer_internal.h"

namespace nearcache::shm {

namespace {

ObjectSpec segment_spec(const WriterOptions& o) { return {o.path, o.posix_shm, o.mode, o.group}; }

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
  Geometry g;
  g.segment_bytes = seg;
  g.bucket_count = uint32_t(buckets);
  g.buckets_offset = kHeaderBytes;
  g.data_offset = round_up(g.buckets_offset + uint64_t(g.bucket_count) * kBucketBytes, 4096);
  g.data_bytes = seg > g.data_offset ? (seg - g.data_offset) & ~uint64_t(kItemAlign - 1) : 0;
  if (g.data_bytes < 8 * max_item_bytes())
    return bad("segment of " + std::to_string(opts_.segment_bytes) + " bytes is too small for items of up to " +
               std::to_string(max_item_bytes()) + " bytes (key and value limits): it needs at least " +
               std::to_string(g.data_offset + 8 * max_item_bytes()) + " bytes");

  // One writer per segment: the lock is held for this Writer's lifetime.
  int rc = take_name(why);
  if (rc != 0) return rc;

  // The previous table, if any: adopted, or re-initialised in place when it
  // has our size and is ours (a restart needs room for one segment only).
  std::unique_ptr<MappedObject> old;
  if (open_object_rw(segment_spec(opts_), &old, nullptr) != 0) old.reset();
  const bool ours = old && old->uid() == uint32_t(geteuid()) && !(old->mode() & 002);
  if (old && old->size() == seg && ours) {
    segment_ = std::move(old);
    std::string cold;
    if (!opts_.warm_restart) {
      cold = "warm_restart is off";
    } else if (adoptable(g, &cold)) {
      adopt(g);
      return 0;
    }
    start_.reason = cold;
    return reuse_in_place(g, why);
  }
  if (!old) start_.reason = "no table to adopt";
  else if (!ours) start_.reason = "the old segment is not owned by this user (or is world-writable): not reused";
  else start_.reason = "segment size changed (" + std::to_string(old->size()) + " -> " + std::to_string(seg) + " bytes)";

  uint64_t old_generation = 0;
  if (old && old->size() >= kHeaderBytes) {
    auto* oh = reinterpret_cast<Header*>(old->data());
    if (load_relaxed(&oh->magic) == kMagic) old_generation = load_relaxed(&oh->generation);
  }
  // A table of another size: its entries are copied into the new one when
  // both fit at once (copy.cc); a start never fails for want of that room.
  const bool copy = old && ours && opts_.warm_restart;
  if (old && ours && !opts_.warm_restart) start_.reason += "; warm_restart is off";
  rc = create_object(segment_spec(opts_), seg, &segment_, why);
  if ((rc == ENOSPC || rc == ENOMEM) && old && ours) {
    // No room for both: the old object's name goes first (its readers keep
    // their mapping; its memory is freed when the last of them unmaps it).
    if (old->size() >= kHeaderBytes)
      store_release(&reinterpret_cast<Header*>(old->data())->state, uint32_t(SegmentState::stopped));
    old.reset();
    remove_object(segment_spec(opts_));
    start_.reason += "; the old segment was removed first to make room";
    if (copy) start_.reason += " (no room for both: its entries were not copied)";
    rc = create_object(segment_spec(opts_), seg, &segment_, why);
  }
  if (rc != 0) return rc;
  rc = format(g, std::max(old_generation + 1, unix_ms()), 0, 0, why);
  if (rc != 0) return rc;
  std::string not_copied;
  if (copy && old && !copy_from(*old, &not_copied)) start_.reason += "; its entries were not copied: " + not_copied;
  if ((rc = publish_object(segment_spec(opts_), why)) != 0) return rc;
  if (old && old->size() >= kHeaderBytes)
    store_release(&reinterpret_cast<Header*>(old->data())->state, uint32_t(SegmentState::stopped));
  return 0;
}

// Locks the segment's name, or, when another user holds the name or its lock
// (they can be created first in /dev/shm or any shared directory), a fresh
// name nobody can guess: a previous writer's fresh name of this user whose
// lock is free (so that a restart adopts its table and leaves nothing
// behind), else a new one. The name in use is opts_.path (HELLO announces it).
int Writer::take_name(std::string* why) {
  std::string squat;
  int rc = ObjectLock::acquire(segment_spec(opts_), &lock_, &squat);
  if (rc == 0 && !foreign_object(opts_.path, opts_.posix_shm, &squat)) return 0;
  if (rc != 0 && rc != EPERM) {
    if (why) *why = squat;
    return rc;
  }
  if (lock_) lock_->remove();  // ours, on a name we cannot use: leave nothing behind
  lock_.reset();
  const std::string wanted = opts_.path;
  std::vector<std::string> names = own_fallback_names(wanted, opts_.posix_shm);
  for (int i = 0; i < 4; ++i) names.push_back(fresh_object_name(wanted));
  for (const std::string& n : names) {
    opts_.path = n;
    std::string ignored;
    if (ObjectLock::acquire(segment_spec(opts_), &lock_, &ignored) != 0) continue;
    if (!foreign_object(n, opts_.posix_shm, &ignored)) {
      name_notice_ = squat + ": using " + n + " instead (clients learn it from HELLO); remove " + wanted +
                     " and its lock to return to the usual name";
      return 0;
    }
    lock_.reset();
  }
  opts_.path = wanted;
  if (why) *why = squat + ", and no fresh name could be taken";
  return EPERM;
}

// The writer's view of the table in segment_ (of geometry g), and its own
// memory for it: empty logs, frequencies and clear records.
void Writer::map_table(const Geometry& g) {
  unsigned char* base = segment_->data();
  header_ = reinterpret_cast<Header*>(base);
  state_ = reinterpret_cast<WriterState*>(base + kWriterStateOffset);
  buckets_ = reinterpret_cast<Bucket*>(base + g.buckets_offset);
  data_ = base + g.data_offset;
  nbuckets_ = g.bucket_count;
  init_queues(g.data_bytes);
  applied_.assign(nbuckets_, 0);
  freq_.assign(uint64_t(nbuckets_) * 8, 0);
  st_.data_bytes = g.data_bytes;
  st_.index_bytes = uint64_t(nbuckets_) * kBucketBytes;
  st_.index_ways = uint64_t(nbuckets_) * kWaysPerBucket;
  st_.segment_bytes = g.segment_bytes;
}

// Writes a new, empty table into segment_ (zero-filled, or an old table's
// memory: then the first old_buckets buckets keep growing their versions).
int Writer::format(const Geometry& g, uint64_t generation, uint32_t old_buckets, uint32_t epoch, std::string* why) {
  uint64_t key[2];
  if (getrandom(key, sizeof key, 0) != sizeof key) {
    if (why) *why = "getrandom failed";
    return EIO;
  }
  map_table(g);
  store_release(&header_->state, uint32_t(SegmentState::initializing));
  header_->magic = kMagic;
  header_->layout_version = kLayoutVersion;
  header_->header_bytes = kHeaderBytes;
  header_->segment_bytes = g.segment_bytes;
  store_relaxed(&header_->generation, generation);
  store_relaxed(&header_->table_id, uint32_t(generation));
  header_->hash_key[0] = key[0];
  header_->hash_key[1] = key[1];
  header_->buckets_offset = g.buckets_offset;
  header_->bucket_count = g.bucket_count;
  header_->bucket_ways = kWaysPerBucket;
  header_->data_offset = g.data_offset;
  header_->data_bytes = g.data_bytes;
  header_->key_limit = opts_.key_limit;
  header_->value_limit = opts_.value_limit;
  header_->writer_pid = uint32_t(getpid());
  header_->heartbeat_grace_ms = opts_.heartbeat_grace_ms;
  header_->created_unix_ms = unix_ms();
  header_->writer_state_offset = kWriterStateOffset;
  store_relaxed(&header_->flags, 0u);
  store_relaxed(&header_->epoch, epoch);
  epoch_ = epoch;
  if (old_buckets != 0 || epoch != 0) {
    for (uint32_t i = 0; i < nbuckets_; ++i) {
      Bucket* b = bucket(i);
      // A reader of the old table may hold this bucket: its version only grows.
      const uint32_t v = i < old_buckets ? (load_relaxed(&b->version) | 1u) + 1 : 0;
      for (uint32_t w = 0; w < kWaysPerBucket; ++w) store_relaxed(&b->way[w], uint64_t{0});
      store_relaxed(&b->epoch, epoch);
      store_release(&b->version, v);
    }
  }
  std::memset(state_, 0, sizeof *state_);
  state_->magic = kMagic;
  persist_rings();

  store_relaxed(&header_->heartbeat_ms, now_());
  store_release(&header_->state, uint32_t(SegmentState::running));
  return 0;
}

// A cold start over an old object of the same size: never truncated (readers
// map it), its bucket versions never reset. Old readers stop at once: the
// state says stopped, the generation and its table_id (compared on every lookup) move on,
// and every old bucket's version turns odd, so a lookup in flight retries
// and gives up (busy) instead of trusting what is rewritten under it.
int Writer::reuse_in_place(const Geometry& g, std::string* why) {
  auto* h = reinterpret_cast<Header*>(segment_->data());
  const bool readable = load_relaxed(&h->magic) == kMagic;
  const uint64_t old_generation = readable ? load_relaxed(&h->generation) : 0;
  uint32_t old_buckets = 0, old_epoch = 0;
  if (readable && load_relaxed(&h->layout_version) == kLayoutVersion && h->buckets_offset == kHeaderBytes &&
      uint64_t(h->bucket_count) * kBucketBytes <= g.segment_bytes - kHeaderBytes) {
    old_buckets = h->bucket_count;
    old_epoch = load_relaxed(&h->epoch);
  }
  const uint64_t generation = std::max(old_generation + 1, unix_ms());
  store_release(&h->state, uint32_t(SegmentState::stopped));
  store_relaxed(&h->generation, generation);
  store_relaxed(&h->table_id, uint32_t(generation));
  auto* ob = reinterpret_cast<Bucket*>(segment_->data() + kHeaderBytes);
  for (uint32_t i = 0; i < old_buckets; ++i) {
    const uint32_t v = load_relaxed(&ob[i].version);
    if (!(v & 1)) store_relaxed(&ob[i].version, v + 1);
  }
  __atomic_thread_fence(__ATOMIC_RELEASE);
  int rc = reserve_object(segment_spec(opts_), g.segment_bytes, why);
  if (rc != 0) return rc;
  start_.reused_in_place = true;
  return format(g, generation, old_buckets, old_epoch + 1, why);
}

Writer::~Writer() { stop(); }

uint64_t Writer::generation() const { return header_->generation; }

void Writer::heartbeat() { store_relaxed(&header_->heartbeat_ms, now_()); }

void Writer::stop() {
  if (!header_) return;
  persist_rings();
  persist_clear(false);
  store_relaxed(&state_->clean_shutdown, 1u);
  if (!opts_.warm_restart) store_release(&header_->state, uint32_t(SegmentState::stopped));
}

void Writer::remove() {
  store_release(&header_->state, uint32_t(SegmentState::stopped));  // nobody adopts it: readers stop at once
  remove_object(segment_spec(opts_));
  lock_->remove();
}

void Writer::remove_lock() { lock_->remove(); }

uint32_t Writer::flags() const { return load_relaxed(&header_->flags); }

void Writer::set_flag(uint32_t bit, bool on) {
  const uint32_t f = load_relaxed(&header_->flags);
  store_release(&header_->flags, on ? f | bit : f & ~bit);
}

// The rings' fields in WriterState, after the items and ways they describe are in place.
void Writer::persist_rings() {
  for (auto [r, p] : {std::pair{&small_, &state_->small}, std::pair{&main_, &state_->main}}) {
    store_relaxed(&p->head, r->head);
    store_relaxed(&p->tail, r->tail);
    store_relaxed(&p->used, r->used);
  }
}

// ---------------------------------------------------------------- whole-table drop

uint64_t Writer::drop_all() {
  const uint64_t removed = st_.entries;
  // Readers compare each bucket's epoch with this one; the writer resets a
  // stale bucket (seqlock) before reusing any memory its ways referenced.
  epoch_++;
  store_release(&header_->epoch, epoch_);
  st_.drops++;
  st_.cleared += removed;
  st_.entries = st_.live_bytes = st_.item_bytes = st_.negatives = 0;
  with_expiry_ = 0;
  // Pending clears are complete: nothing they could remove is left.
  for (const Clear& c : clears_) clear_results_[c.id] = c.removed;
  clears_.clear();
  clear_ids_.clear();
  clear_lengths_.clear();
  special_ids_.clear();
  clear_completed_ = clear_latest_;
  persist_clear(false);
  return removed;
}

// ---------------------------------------------------------------- hits reported by readers

void Writer::note_hits(const uint32_t* way_index, size_t n) {
  const uint64_t limit = way_index_limit();
  for (size_t i = 0; i < n; ++i) {
    const uint32_t x = way_index[i];
    if (x >= limit || x % 8 == kWaysPerBucket) continue;
    uint8_t& f = freq_[x];
    if (f < kMaxFreq) f++;
  }
}

void Writer::note_reader_counts(uint64_t hits, uint64_t misses, uint64_t busy, uint64_t local_misses) {
  st_.reader_hits += hits;
  st_.reader_misses += misses;
  st_.reader_busy += busy;
  st_.reader_local_misses += local_misses;
}

// ---------------------------------------------------------------- operations

Status Writer::store(std::string_view key, std::string_view value, uint8_t flags, uint64_t expiry, bool only_if_absent,
                     uint8_t bits) {
  if (key.size() > opts_.key_limit) return Status::key_too_long;
  if (value.size() > opts_.value_limit) return Status::value_too_large;
  const uint64_t now = now_();
  const uint64_t h = hash(key);
  settle_key(h);
  Loc loc = find(key, h);
  if (loc.found() && expired(item_of(loc), now)) {
    remove_at(loc, Why::expired);
    loc = {0, kWaysPerBucket};
  }
  if (only_if_absent && loc.found() && !meta_negative(item_of(loc)->meta)) return Status::exists;
  if (expiry != 0 && expiry <= now) {  // "expire at once": the key is gone
    if (loc.found()) remove_at(loc, Why::replaced);
    return Status::ok;
  }

  const uint64_t size = item_bytes(key.size(), value.size());
  const uint64_t off = alloc(admit(loc, h, size), size);
  write_item(off, key, value, flags, expiry, bits);

  loc = find(key, h);  // the allocation may have evicted or moved the old item
  if (!loc.found()) loc = free_way(h);
  Bucket* b = bucket(loc.bucket);
  const uint64_t old = b->way[loc.way];
  begin_write(b);
  store_relaxed(&b->way[loc.way], make_way(tag_of(h), off / kItemAlign));
  end_write(b);
  if (old != 0) retire(item_at(way_unit(old) * kItemAlign));
  st_.entries++;
  st_.negatives += (bits & kItemNegative) != 0;
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

Status Writer::set_negative(std::string_view key, uint64_t expiry_ms) {
  if (key.size() > opts_.key_limit) return Status::key_too_long;
  return store(key, {}, 0, expiry_ms, false, kItemNegative);
}

Status Writer::del(std::string_view key) {
  if (key.size() > opts_.key_limit) return Status::key_too_long;
  st_.deletes++;
  const uint64_t h = hash(key);
  settle_key(h);
  Loc loc = find(key, h);
  if (!loc.found()) return Status::not_found;
  const bool was_expired = expired(item_of(loc), now_());
  const bool negative = meta_negative(item_of(loc)->meta);
  remove_at(loc, was_expired ? Why::expired : Why::deleted);
  return was_expired || negative ? Status::not_found : Status::ok;
}

Status Writer::touch(std::string_view key, uint64_t expiry_ms) {
  if (key.size() > opts_.key_limit) return Status::key_too_long;
  st_.touches++;
  const uint64_t now = now_();
  const uint64_t h = hash(key);
  settle_key(h);
  Loc loc = find(key, h);
  if (!loc.found()) return Status::not_found;
  ItemHeader* ih = item_of(loc);
  if (expired(ih, now)) {
    remove_at(loc, Why::expired);
    return Status::not_found;
  }
  if (meta_negative(ih->meta)) return Status::not_found;
  if (expiry_ms != 0 && expiry_ms <= now) {
    remove_at(loc, Why::deleted);
    return Status::ok;
  }
  with_expiry_ += (expiry_ms != 0) - (ih->expiry_ms != 0);
  Bucket* b = bucket(loc.bucket);
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
  ItemHeader* ih = item_of(loc);
  if (expired(ih, now_())) {
    remove_at(loc, Why::expired);
    return false;
  }
  const uint64_t m = ih->meta;
  if (meta_negative(m)) return false;
  out->key = item_key(ih);
  out->value = {out->key.data() + out->key.size(), meta_value_len(m)};
  out->flags = meta_flags(m);
  out->expiry_ms = ih->expiry_ms;
  if (touch_freq) {
    uint8_t* f = freq(loc);
    if (*f < kMaxFreq) ++*f;
  }
  return true;
}

bool Writer::negative(std::string_view key) {
  if (key.size() > opts_.key_limit || st_.negatives == 0) return false;
  const uint64_t h = hash(key);
  settle_key(h);
  const Loc loc = find(key, h);
  if (!loc.found()) return false;
  const ItemHeader* ih = item_of(loc);
  return meta_negative(ih->meta) && !expired(ih, now_());
}

Writer::Loc Writer::find_live(std::string_view key, uint64_t* off) {
  if (key.size() > opts_.key_limit) return {0, kWaysPerBucket};
  const uint64_t h = hash(key);
  settle_key(h);
  const Loc loc = find(key, h);
  if (loc.found()) *off = way_unit(bucket(loc.bucket)->way[loc.way]) * kItemAlign;
  return loc;
}

void Writer::mark_synced(std::string_view key) {
  uint64_t off;
  const Loc loc = find_live(key, &off);
  if (!loc.found()) return;
  ItemHeader* ih = item_of(loc);
  // A bit readers ignore: no seqlock needed, only an atomic store.
  store_relaxed(&ih->meta, ih->meta | (uint64_t(kItemSynced) << 56));
}

// An item id: a set top bit (never 0), 18 bits of its log's lap, its unit.
// An offset holds one item per lap (the head only moves forward within one),
// so (lap, offset) names one write; 2^18 laps while a write is queued do not happen.
namespace {
constexpr uint64_t kLapBits = 18, kUnitBits = 45, kLapMask = (uint64_t{1} << kLapBits) - 1;
}

uint64_t Writer::id_of(uint64_t off, uint64_t lap) const {
  return (uint64_t{1} << 63) | ((lap & kLapMask) << kUnitBits) | (off / kItemAlign);
}

uint64_t Writer::id_at(uint64_t off) const {
  const Ring& r = off < small_.end ? small_ : main_;
  // An item written before its log's head last went back to begin sits at or
  // after the head; one written since, before it.
  return id_of(off, off < r.head ? r.laps : r.laps - 1);
}

uint64_t Writer::item_id(std::string_view key) {
  uint64_t off;
  const Loc loc = find_live(key, &off);
  return loc.found() ? id_at(off) : 0;
}

void Writer::note_move(uint64_t from, uint64_t to) {
  if (moves_.insert_or_assign(from, to).second) move_order_.push_back(from);
  while (move_order_.size() > kMaxMoves) {
    moves_.erase(move_order_.front());
    move_order_.pop_front();
  }
}

bool Writer::holds(std::string_view key, uint64_t id) {
  const uint64_t now = item_id(key);
  if (id == 0 || now == 0) return false;
  // The write `id` named, wherever the eviction policy moved it since (each
  // move is one step; a chain longer than the bound cannot be remembered).
  for (size_t steps = 0; id != now; ++steps) {
    const auto it = moves_.find(id);
    if (it == moves_.end() || steps == kMaxMoves) return false;  // replaced by a newer write, or forgotten
    id = it->second;
  }
  return true;
}

bool Writer::mark_synced(std::string_view key, uint64_t id) {
  if (!holds(key, id)) return false;
  mark_synced(key);
  return true;
}

bool Writer::contains(std::string_view key) {
  Item it;
  return lookup(key, &it, false);
}

// ---------------------------------------------------------------- stats

WriterStats Writer::stats() const {
  WriterStats s = st_;
  s.small_used = small_.used;
  s.main_used = main_.used;
  return s;
}

void Writer::for_each(const std::function<void(const Item&)>& fn, bool negatives) {
  const uint64_t now = now_();
  for (uint32_t i = 0; i < nbuckets_; ++i) {
    const Bucket* b = bucket(i);
    if (b->epoch != epoch_) continue;  // dropped (drop_all), not reset yet
    for (uint32_t w = 0; w < kWaysPerBucket; ++w) {
      if (b->way[w] == 0) continue;
      const ItemHeader* ih = item_at(way_unit(b->way[w]) * kItemAlign);
      if (expired(ih, now) || (meta_negative(ih->meta) && !negatives)) continue;
      Item it;
      it.negative = meta_negative(ih->meta);
      it.key = item_key(ih);
      it.value = {it.key.data() + it.key.size(), meta_value_len(ih->meta)};
      it.flags = meta_flags(ih->meta);
      it.expiry_ms = ih->expiry_ms;
      fn(it);
    }
  }
}

}  // namespace nearcache::shm
