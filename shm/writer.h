// shm/writer.h — the table's one writer. nearcached's loop thread is its only
// user; nothing here is thread-safe, by design (invariant 1).
//
// Memory: the data area is two circular logs, S3-FIFO's small queue (about
// 10%) and main queue. A set appends the item to a log; a full log frees its
// oldest bytes: dead items are skipped, live ones are evicted, moved from
// small to main, or re-inserted in main, by their access frequency, which
// the writer keeps in its own memory from its own lookups and the hits that
// reader processes report in their hit regions (hits.h, note_hits). Any size up to the limit fits once enough of the
// oldest bytes are freed, so a full, fragmented table keeps taking sets and
// never needs to be wiped. Expired items are also reclaimed by a sweep
// (expire_step) that the daemon runs from a timer, a slice at a time.
//
// Dropping the whole table (drop_all) is O(1): the header's epoch moves on,
// every bucket of the old epoch is empty to readers, and the writer resets a
// stale bucket lazily before it touches it; the logs reclaim the old items
// when their tails reach them.
//
// Time: expiries are absolute CLOCK_MONOTONIC milliseconds, 0 = never.
#pragma once

#include <cstdint>
#include <deque>
#include <functional>
#include <map>
#include <memory>
#include <string>
#include <string_view>
#include <unordered_map>
#include <vector>

#include "layout.h"

namespace nearcache::shm {

class MappedObject;
class ObjectLock;

struct WriterOptions {
  std::string path;                      // segment file, or POSIX shm name ("/name") with posix_shm
  bool posix_shm = false;
  uint64_t segment_bytes = 64ull << 20;
  uint32_t key_limit = 1024;
  uint32_t value_limit = 1u << 20;
  uint32_t expected_item_bytes = 256;    // sizes the index: data bytes / this = entries to plan for
  unsigned mode = 0640;                  // segment: owner rw, group r
  int64_t group = -1;                    // gid of the segment; -1 keeps the creator's
  uint32_t heartbeat_grace_ms = 2000;
  uint32_t small_queue_percent = 10;
  // Adopt the table a previous writer left (same layout and geometry) instead
  // of starting empty (adopt.cc); false: a cold start (still in place).
  bool warm_restart = true;
  // The entries came from a Redis tier: an adopted entry may have missed
  // invalidations while no daemon ran. Entries whose write never reached
  // Redis (no kItemSynced) are dropped; the others are kept only when the
  // daemon holds a snapshot of the slot counters taken while this table
  // (this generation) was coherent, and the table then starts suspended
  // until the repair against it (doc/redis.md); else they are dropped too.
  bool redis_tier = false;
  uint64_t redis_snapshot_generation = 0;  // the table generation the daemon's snapshot belongs to; 0 = none
  // Readers keep serving the adopted entries until the repair (the daemon
  // bounds how long: daemon/redis/repair.h, seed); false: start suspended.
  bool redis_serve_adopted = false;
};

// Why adoption dropped an entry (StartReport::dropped).
enum class Drop : uint8_t {
  odd_bucket,     // its bucket's version was odd: a write was cut
  bad_way,        // the way points outside the data area or at an item that is not live
  bad_item,       // the item's lengths, tag or bucket do not match its key, or it overlaps another
  outside_ring,   // not inside its log's live range
  duplicate,      // a second way for the same key or item (a cut move)
  expired,
  cleared,        // a CLEAR in progress when the writer stopped
  unsynced,       // Redis tier: its write had not reached Redis
  unreconciled,   // Redis tier: it may have missed invalidations while no daemon ran
  too_large,      // copy: its key or value is longer than the new table's limits
  no_room,        // copy: the new table had no room left for it
  kCount
};
const char* drop_name(Drop d);

// How the writer started: adopted (warm) or a new table (cold), and why.
struct StartReport {
  bool warm = false;
  std::string reason;            // cold: why adoption was impossible or off; warm: "adopted"
  bool reused_in_place = false;  // cold: the old object was re-initialised in place (room for one segment)
  bool copied = false;           // cold, new object: the old table's entries were copied into it (copy.cc);
                                 // kept and dropped count them
  bool clean_shutdown = false;   // warm: the previous writer stopped cleanly (else it was killed)
  bool ring_rebuilt = false;     // warm: a log's persisted fields were unusable, rebuilt from the items
  uint64_t kept = 0;
  uint64_t dropped[size_t(Drop::kCount)] = {};
  uint64_t odd_buckets = 0;      // buckets found mid-write, their versions made even
  uint64_t filler_bytes = 0;     // dead space between kept items, marked so the logs can walk it
  uint64_t dropped_total() const;
  std::string summary() const;   // one log line
};

enum class Status : uint8_t {
  ok,
  not_found,        // no such key (or it expired)
  exists,           // add: the key is present
  key_too_long,     // longer than key_limit
  value_too_large,  // longer than value_limit
  not_integer,      // incr: the value is not a msgpack integer
  out_of_range,     // incr: the result does not fit in int64/uint64
};
const char* status_name(Status s);

// A live item; views point into the segment and stay valid until the next
// call that changes the table.
struct Item {
  std::string_view key;
  std::string_view value;
  uint8_t flags = 0;
  uint64_t expiry_ms = 0;
  bool negative = false;  // for_each(..., true) only: a negative entry (no value)
};

struct WriterStats {
  uint64_t entries = 0;
  uint64_t live_bytes = 0;        // key + value bytes of live items
  uint64_t item_bytes = 0;        // live items with their headers and padding
  uint64_t data_bytes = 0;        // capacity of the data area
  uint64_t index_bytes = 0;       // buckets
  uint64_t segment_bytes = 0;
  uint64_t small_used = 0, main_used = 0;  // log bytes not yet reclaimed (live, dead, padding)
  uint64_t sets = 0, adds = 0, deletes = 0, touches = 0, incrs = 0;
  uint64_t gets = 0, get_hits = 0;             // lookups served by the writer (the daemon's GET)
  uint64_t evictions = 0;                      // live items dropped to make room
  uint64_t index_evictions = 0;                // ... because their bucket chain was full
  uint64_t expirations = 0;                    // expired items reclaimed
  uint64_t moved_to_main = 0, reinserted = 0, ghost_hits = 0;
  uint64_t wraps = 0;                          // times a log's head wrapped: its memory is being reused
  uint64_t clears = 0, cleared = 0;
  uint64_t index_ways = 0;                     // entries the index can hold (7 per bucket)
  uint64_t index_moves = 0;                    // entries moved to their other bucket to make room
  uint64_t reader_hits = 0, reader_misses = 0, reader_busy = 0;  // reported by hit regions (note_reader_counts)
  uint64_t reader_local_misses = 0;  // of reader_misses, the definite ones readers answered themselves
  uint32_t reader_processes = 0;                                 // hit regions registered (set_reader_processes)
  uint64_t drops = 0;                          // whole-table drops (drop_all)
  uint64_t negatives = 0;                      // negative entries among `entries`
};

class Writer {
 public:
  // Adopts the table at opts.path when its layout and geometry match and
  // opts.warm_restart is on (adopt.cc: validated, same generation, readers
  // keep serving); else creates a new table (a new generation), in place when
  // an object of the same size exists (a restart needs room for one segment).
  // When the size changed and there is room for both objects, the old
  // table's entries are copied into the new one (copy.cc; warm_restart on).
  // Refuses when another writer holds the segment's lock, when the sizes are
  // inconsistent, or when the memory cannot be reserved: nullptr, *why set.
  static std::unique_ptr<Writer> create(const WriterOptions& opts, std::string* why);
  ~Writer();  // stop(); the objects stay until remove()
  const StartReport& start_report() const { return start_; }
  // Set when the configured name was squatted (another user's object or
  // lock): what was found and the name used instead (options().path).
  const std::string& name_notice() const { return name_notice_; }

  Status set(std::string_view key, std::string_view value, uint8_t flags, uint64_t expiry_ms);
  Status add(std::string_view key, std::string_view value, uint8_t flags, uint64_t expiry_ms);
  Status del(std::string_view key);
  Status touch(std::string_view key, uint64_t expiry_ms);
  // Adds (subtracts) `delta` to (from) a msgpack integer value, keeping its
  // flags and expiry; the result must fit in int64 (else out_of_range).
  Status incr(std::string_view key, int64_t delta, int64_t* result);
  Status decr(std::string_view key, int64_t delta, int64_t* result);
  // Looks a key up for the daemon and counts the access for eviction.
  // A negative entry is absent for every operation but set_negative and del.
  bool get(std::string_view key, Item* out);
  bool contains(std::string_view key);
  // The live entry of `key` holds a value Redis has (it was read from Redis):
  // adoption after a restart may keep it (kItemSynced). A later store clears it.
  void mark_synced(std::string_view key);
  // The same lookup without counting it as a read (TTL, HAS_KEY).
  bool peek(std::string_view key, Item* out) { return lookup(key, out, false); }
  // What names the item `key` holds now (its offset and its log's lap), 0
  // when it has none: a write-behind SET carries it, and its acknowledgement
  // marks the item synced only if the key still holds that same write, not a
  // newer local write that replaced it. A moved item (S3-FIFO reinsertion,
  // small to main) gets a new id; with a Redis tier the writer remembers the
  // moves of unsynced items (old id -> new id, the newest kMaxMoves), so an
  // acknowledgement carrying the old id still finds the write it names.
  uint64_t item_id(std::string_view key);
  // `key` still holds the write `id` named: that item, or the item it was
  // moved to (following remembered moves); false: gone, replaced, or moved
  // so long ago that the move was forgotten.
  bool holds(std::string_view key, uint64_t id);
  // mark_synced when holds(key, id); false otherwise (the item then stays
  // unsynced, the safe side: adoption drops it).
  bool mark_synced(std::string_view key, uint64_t id);
  static constexpr size_t kMaxMoves = 16384;
  // Caches "no such key" until expiry_ms (0 = never): readers answer
  // ReadStatus::negative. Replaced by any store, removed by del and clears.
  Status set_negative(std::string_view key, uint64_t expiry_ms);
  // The key has a live (unexpired) negative entry.
  bool negative(std::string_view key);

  // Removes every entry at once, O(1) (the header's epoch moves on); returns
  // how many were live. Pending clears complete (nothing they could remove
  // is left) with the counts they had reached.
  uint64_t drop_all();
  uint32_t epoch() const { return epoch_; }

  // Header flags (kFlagAuthoritative, kFlagSuspended) readers act on.
  void set_authoritative(bool on) { set_flag(kFlagAuthoritative, on); }
  void set_suspended(bool on) { set_flag(kFlagSuspended, on); }
  uint32_t flags() const;

  // Hits reported by readers' hit regions: way indexes (bucket * 8 + way;
  // anything out of range is ignored) whose access frequency goes up by one,
  // saturating at kMaxFreq; the frequencies are the writer's own memory.
  void note_hits(const uint32_t* way_index, size_t n);
  void note_reader_counts(uint64_t hits, uint64_t misses, uint64_t busy, uint64_t local_misses = 0);
  void set_reader_processes(uint32_t n) { st_.reader_processes = n; }
  uint64_t way_index_limit() const { return uint64_t(nbuckets_) * 8; }

  // CLEAR: removes every entry present when clear_begin was called (all of
  // them, or those whose key starts with `prefix`). The work is done a slice
  // at a time by clear_step; a bucket touched by another call first catches up
  // with pending clears, so later writes are never lost and a cleared key is
  // never served by the writer. Returns the clear's id.
  uint64_t clear_begin(std::string_view prefix);
  // The same for the keys matching a glob pattern (glob.h: Redis's rules).
  uint64_t clear_begin_match(std::string_view pattern);
  // A visit: a clear that removes nothing but calls the visitor once with
  // each live entry matching `pattern` that is present now (wherever it
  // moves meanwhile), before anything changes it; entries stored later are
  // not visited. It joins the clears' pass (clear_step, clear_done,
  // clear_take: the count visited). The visitor must not change the table.
  uint64_t visit_begin(std::string_view pattern);
  void set_visitor(std::function<void(uint64_t visit, const Item&)> fn) { visitor_ = std::move(fn); }
  bool clear_step(size_t max_buckets);      // true when no clear is pending
  bool clear_done(uint64_t id) const { return id <= clear_completed_; }
  // Entries a completed clear removed; its record is kept until taken once.
  uint64_t clear_take(uint64_t id);

  // Reclaims expired items in the next `max_buckets` buckets; returns how many.
  size_t expire_step(size_t max_buckets);
  void heartbeat();
  // The writer's last act. With warm_restart the table stays `running` for
  // readers (they stop serving once the heartbeat is older than the grace, so
  // a quick restart keeps them hitting) and WriterState.clean_shutdown is set;
  // without it, state = stopped: readers stop serving at once.
  void stop();
  void remove();       // removes the names (segment, lock); mappings stay valid
  void remove_lock();  // removes the lock's name only (the segment stays for the next writer)

  // Every live entry; with negatives, negative entries too (Item::negative).
  void for_each(const std::function<void(const Item&)>& fn, bool negatives = false);
  WriterStats stats() const;

  uint64_t generation() const;
  uint32_t key_limit() const { return opts_.key_limit; }
  uint32_t value_limit() const { return opts_.value_limit; }
  const std::string& path() const { return opts_.path; }
  const WriterOptions& options() const { return opts_; }
  uint64_t max_item_bytes() const;
  uint32_t bucket_count() const { return nbuckets_; }
  // The writer's own mapping (for readers in the same process: tests).
  const void* segment_base() const { return header_; }
  uint64_t segment_bytes() const { return st_.segment_bytes; }
  // The segment object this writer mapped (its dev/ino: HELLO announces them).
  const MappedObject* segment_object() const { return segment_.get(); }

  // Tests replace the clock to step through expiries.
  void set_clock(uint64_t (*now_ms)()) { now_ = now_ms; }

 private:
  Writer() = default;
  struct Ring {
    uint64_t begin = 0, end = 0;  // data-area offsets
    uint64_t head = 0, tail = 0, used = 0;
    uint64_t laps = 0;  // times the head went back to begin (writer memory only: item_id)
    uint64_t size() const { return end - begin; }
  };
  struct Loc {
    uint64_t bucket = 0;
    uint32_t way = 0;
    bool found() const { return way < kWaysPerBucket; }
  };
  struct Clear {
    uint64_t id = 0;
    std::string prefix;  // a glob clear's or visit's: its pattern's glob_prefix
    uint64_t removed = 0;
    std::string pattern;        // glob clears and visits
    bool glob = false, visit = false;
    bool special() const { return glob || visit; }
  };
  enum class Why { deleted, replaced, expired, evicted, cleared };
  struct Geometry {
    uint64_t segment_bytes, buckets_offset, data_offset, data_bytes;
    uint32_t bucket_count;
  };
  void set_flag(uint32_t bit, bool on);
  void persist_rings();
  void persist_clear(bool cursor_only);

  // writer.cc: a new table, in a new object or in place of an old one.
  void map_table(const Geometry& g);
  int format(const Geometry& g, uint64_t generation, uint32_t old_buckets, uint32_t epoch, std::string* why);
  int reuse_in_place(const Geometry& g, std::string* why);

  // copy.cc: a table of another size (segment_size changed) copied into this
  // new, unpublished one: the entries that validate, hottest first when not
  // all fit. False (nothing copied) when the old table cannot be read, *why set.
  bool copy_from(const MappedObject& old, std::string* why);

  // adopt.cc: adopting the table a previous writer left.
  bool adoptable(const Geometry& g, std::string* why) const;
  void adopt(const Geometry& g);
  struct Kept;
  bool keep_way(uint32_t idx, uint32_t w, std::string_view clear_prefix, bool clearing, Kept* out);
  void drop_way(uint32_t idx, uint32_t w, Drop why);
  void rebuild_ring(Ring& r, const WriterRingState& saved, std::vector<Kept>& items);

  // writer.cc: creation and the public operations.
  int init(const WriterOptions& opts, std::string* why);
  int take_name(std::string* why);  // locks opts_.path, or a fresh name when it is squatted
  Status store(std::string_view key, std::string_view value, uint8_t flags, uint64_t expiry, bool only_if_absent,
               uint8_t bits = 0);
  Status add_to_int(std::string_view key, __int128 delta, int64_t* result);
  bool lookup(std::string_view key, Item* out, bool touch_freq);

  // index.cc (the inline ones in writer_internal.h): buckets, two-choice placement.
  inline uint64_t hash(std::string_view key) const;
  Bucket* bucket(uint64_t i) const { return buckets_ + i; }
  ItemHeader* item_at(uint64_t off) const { return reinterpret_cast<ItemHeader*>(data_ + off); }
  inline ItemHeader* item_of(const Loc& l) const;
  inline std::string_view item_key(const ItemHeader* ih) const;
  inline bool expired(const ItemHeader* ih, uint64_t now) const;
  inline Loc find(std::string_view key, uint64_t h) const;
  inline Loc find_unit(uint64_t h, uint64_t unit);
  // A bucket of an older epoch is reset (its ways cleared, inside its
  // seqlock) before the writer reads or changes it: lazy reclaim after drop_all.
  inline void fresh(uint32_t idx);
  void reset_bucket(uint32_t idx);
  Loc free_way(uint64_t h);
  inline void begin_write(Bucket* b);
  inline void end_write(Bucket* b);
  void remove_at(const Loc& loc, Why why);
  inline void retire(ItemHeader* ih);
  // The way's access frequency (the writer's private array, 8 per bucket).
  uint8_t* freq(const Loc& l) { return freq_.data() + l.bucket * 8 + l.way; }

  // log.cc: the two circular logs.
  Ring& ring_of(uint64_t off) { return off < small_.end ? small_ : main_; }
  uint64_t alloc(Ring& r, uint64_t n);
  bool place(Ring& r, uint64_t n, uint64_t* off);
  void free_tail(Ring& r, int* reinserts);
  static inline void advance_tail(Ring& r, uint64_t n);
  static void rewind(Ring& r);
  uint64_t id_of(uint64_t off, uint64_t lap) const;
  uint64_t id_at(uint64_t off) const;  // the id of the item now at off
  // s3fifo.cc moved the unsynced item `from` to `to` (ids): remembered for mark_synced.
  void note_move(uint64_t from, uint64_t to);
  Loc find_live(std::string_view key, uint64_t* off);
  void write_item(uint64_t off, std::string_view key, std::string_view value, uint8_t flags, uint64_t expiry,
                  uint8_t bits);

  // s3fifo.cc: the eviction policy.
  void init_queues(uint64_t data_bytes);
  Ring& admit(const Loc& existing, uint64_t h, uint64_t size);
  void evict_or_keep(Ring& r, const Loc& loc, uint64_t h, uint64_t size, int* reinserts);
  bool ghost_take(uint64_t h);
  void ghost_put(uint64_t h);

  // clear.cc: prefix CLEAR a slice at a time.
  inline void settle(uint32_t idx);
  inline void settle_key(uint64_t h);
  void catch_up(uint32_t idx);
  void clear_bucket(uint32_t idx, Clear& c);
  uint64_t add_clear(Clear c);
  bool clear_matches(const Clear& c, std::string_view key) const;
  // A visit's callback for the entry at ih (live ones only).
  void visit_item(Clear& c, const ItemHeader* ih);

  WriterOptions opts_;
  std::unique_ptr<ObjectLock> lock_;
  std::unique_ptr<MappedObject> segment_;
  Header* header_ = nullptr;
  WriterState* state_ = nullptr;  // inside the header area (kWriterStateOffset)
  Bucket* buckets_ = nullptr;
  unsigned char* data_ = nullptr;
  std::vector<uint8_t> freq_;     // access frequency per way, 8 per bucket (the 8th unused)
  uint32_t nbuckets_ = 0;
  uint32_t epoch_ = 0;            // header_->epoch
  Ring small_, main_;
  uint64_t (*now_)() = monotonic_ms;
  std::vector<unsigned char> scratch_, move_scratch_;

  // S3-FIFO ghost queue: fingerprints of keys evicted from the small queue
  // unread, in a small set-associative table; an entry is in the queue while
  // fewer than ghost_capacity_ insertions have followed it.
  std::vector<uint64_t> ghost_;  // (fingerprint << 32) | insertion clock, 4 per set
  uint64_t ghost_clock_ = 0, ghost_capacity_ = 0;

  // Clears: pending ones in id order; applied_[b] = last clear applied to bucket b.
  std::deque<Clear> clears_;
  std::vector<uint64_t> applied_;
  uint64_t clear_latest_ = 0, clear_completed_ = 0, pass_target_ = 0, pass_cursor_ = 0;
  std::unordered_map<uint64_t, uint64_t> clear_results_;  // id -> removed, until taken
  // The pending clears' ids by prefix (ascending), and their prefix lengths
  // with counts, so an entry finds the clears it matches in a few lookups.
  struct ViewHash {
    using is_transparent = void;
    size_t operator()(std::string_view v) const { return std::hash<std::string_view>{}(v); }
  };
  std::unordered_map<std::string, std::vector<uint64_t>, ViewHash, std::equal_to<>> clear_ids_;
  std::map<size_t, uint32_t> clear_lengths_;
  // Pending glob clears and visits (ascending ids): outside the prefix index.
  std::deque<uint64_t> special_ids_;
  std::function<void(uint64_t, const Item&)> visitor_;

  // Moves of unsynced items, old id -> new id, and the old ids oldest first
  // (at most kMaxMoves: beyond, the oldest are forgotten). Redis tier only.
  std::unordered_map<uint64_t, uint64_t> moves_;
  std::deque<uint64_t> move_order_;

  uint64_t expire_cursor_ = 0;
  uint64_t with_expiry_ = 0;  // live entries that have an expiry; the sweep skips work when 0
  WriterStats st_;
  StartReport start_;
  std::string name_notice_;
};

// TTL in milliseconds to an absolute expiry: ttl <= 0 is already expired
// (returns 1, a time long past), saturating instead of overflowing.
inline uint64_t expiry_from_ttl(int64_t ttl_ms, uint64_t now_ms) {
  if (ttl_ms <= 0) return 1;
  uint64_t t = uint64_t(ttl_ms);
  return t > UINT64_MAX - now_ms ? UINT64_MAX : now_ms + t;
}

}  // namespace nearcache::shm
