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

  rc = create_object(segment_spec(opts_), seg, &segment_, why);
  if (rc != 0) return rc;

  const uint64_t generation = std::max(old_generation + 1, unix_ms());
  uint64_t key[2];
  if (getrandom(key, sizeof key, 0) != sizeof key) return bad("getrandom failed");

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
  header_->writer_state_offset = kWriterStateOffset;
  state_ = reinterpret_cast<WriterState*>(base + kWriterStateOffset);
  state_->magic = kMagic;
  state_->clean_shutdown = 0;
  buckets_ = reinterpret_cast<Bucket*>(base + buckets_offset);
  data_ = base + data_offset;

  init_queues(data_bytes);
  persist_rings();
  applied_.assign(nbuckets_, 0);
  freq_.assign(uint64_t(nbuckets_) * 8, 0);
  st_.data_bytes = data_bytes;
  st_.index_bytes = uint64_t(nbuckets_) * kBucketBytes;
  st_.index_ways = uint64_t(nbuckets_) * kWaysPerBucket;
  st_.segment_bytes = seg;

  store_relaxed(&header_->heartbeat_ms, now_());
  store_release(&header_->state, uint32_t(SegmentState::running));

  if ((rc = publish_object(segment_spec(opts_), why)) != 0) return rc;
  if (old) store_release(&reinterpret_cast<Header*>(old->data())->state, uint32_t(SegmentState::stopped));
  return 0;
}

Writer::~Writer() { stop(); }

uint64_t Writer::generation() const { return header_->generation; }

void Writer::heartbeat() { store_relaxed(&header_->heartbeat_ms, now_()); }

void Writer::stop() {
  if (!header_) return;
  persist_rings();
  store_relaxed(&state_->clean_shutdown, 1u);
  store_release(&header_->state, uint32_t(SegmentState::stopped));
}

void Writer::remove() {
  remove_object(segment_spec(opts_));
  lock_->remove();
}

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
  clear_completed_ = clear_latest_;
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

void Writer::note_reader_counts(uint64_t hits, uint64_t misses, uint64_t busy) {
  st_.reader_hits += hits;
  st_.reader_misses += misses;
  st_.reader_busy += busy;
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
  if (old != 0) {
    ItemHeader* oh = item_at(way_unit(old) * kItemAlign);
    const uint64_t m = oh->meta;
    store_relaxed(&oh->meta, make_meta(meta_value_len(m), meta_key_len(m), meta_flags(m), ItemState::dead));
    st_.entries--;
    st_.negatives -= meta_negative(m);
    st_.live_bytes -= meta_key_len(m) + uint64_t(meta_value_len(m));
    st_.item_bytes -= item_bytes(meta_key_len(m), meta_value_len(m));
    if (oh->expiry_ms != 0) with_expiry_--;
  }
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
