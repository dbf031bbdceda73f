// daemon/redis/write_behind.h — the write-behind queue: SET, DELETE, TOUCH
// and CLEAR are applied to the local table, acknowledged, and queued here for
// Redis.
//
// Order. Operations reach Redis in the order they were queued, minus the
// ones a later operation on the same key made useless (coalescing: the later
// one replaces the earlier and goes to the tail; SET then TOUCH becomes a SET
// with the new TTL). A CLEAR removes the queued operations on keys under its
// prefix and is a barrier: nothing queued after it is sent before its SCAN
// has finished, so a key written after a CLEAR survives it.
//
// Bound. max_entries operations and max_bytes (keys + values + 64 per
// operation). When full, a new operation is dropped (Enqueued::dropped) and
// counted; a write to a key that is already queued replaces the queued one
// with a DELETE instead, so an older value never reaches Redis after a newer
// one was acknowledged. CLEAR is never dropped. Drops are logged (at most
// every 10 s, with the count) and reported in stats(). The caller should
// drop its local copy of a dropped write's key so that this host does not
// keep serving a value the shared tier never got.
//
// Flushing. While the link is ready, operations are pipelined (at most
// `pipeline` unanswered). TTLs are absolute (CLOCK_MONOTONIC ms, as in the
// table) and become PX of the time left when sent; an expired SET is sent as
// a delete. Operations in flight when the link is lost go back to the front
// of the queue and are sent again on the next connection; an operation is
// forgotten only once Redis answered it.
//
// Refusals. An error answer (Redis at maxmemory with noeviction, READONLY
// replica, ...) is counted as failed and not retried: the write never reached
// Redis, so the refused SET or TOUCH calls on_refused(key) and the caller
// drops its local copy, as for a dropped write (a miss then reads what Redis
// has, the same on every host). The last refusal's cause is kept for STATUS;
// refusals are logged at warning level, at most every 10 s, with counts.
//
// Counters. Each SET, DELETE and TOUCH goes as MULTI, the write, INCR of its
// key's slot counter, EXEC; each CLEAR step bumps the clear counter in its
// script (slots.h): the repair after a gap in invalidations compares them.
// A SET's EXEC answered without error calls on_acked(key, item_id): the
// caller marks its local item as one Redis has (a warm restart keeps it).
//
// Lease fills. fill() queues the SET that ends a lease this host holds (the
// value its holder read from the database) as the `fill` script (scripts.h):
// it stores the value and bumps the slot counter only if the key's slot
// counter still holds `expected` (the counter when the lease was granted:
// the lease script's answer, or the last snapshot's for a lease decided on
// this host, repair.h), else stores nothing and answers "refused": another
// host wrote (or deleted) a key of the slot since, and the value read before
// that write must not replace it. A refused fill calls on_fill_refused(key,
// item_id) (the caller drops its copy if the key still holds that write)
// and is counted. A fill keeps its place in the key's order: it never
// replaces a queued write of its key (a refused fill must not take an earlier
// write with it) but may replace a queued fill (a later lease's base is not
// older), a later write replaces it (a TOUCH keeps it conditional). pending()
// does not answer a queued fill: a read of the key goes to Redis behind it
// (after()), so that a suspended table's host never serves a fill Redis may
// refuse (the staleness bound).
// redis_conditional_fills = false: plain SETs, as before.
//
// Read-your-writes. pending(key) says what this host last wrote to a key and
// Redis may not have yet; after(key, fn) runs fn once every queued write to
// the key is on the wire ahead of whatever fn sends (pipelining on one
// connection keeps the order), so a Redis-decided operation never overtakes
// the key's queued writes.
//
// Redis Cluster (a master's part, cfg.shard_home_slot >= 0): at most one
// operation per key is in flight, so a redirected one is never overtaken by a
// later write of its key. MOVED and ASK hand the operation to on_redirect
// (the cluster queues it on the right master's queue; ASK: sent there after
// ASKING); TRYAGAIN and CLUSTERDOWN put it back at its place with a backoff
// (10 ms doubled, at most kRetries times, then a refusal). holds(key) says
// whether an operation of the key is queued or in flight here (the cluster
// routes the key's later writes to this queue while it does).
#pragma once

#include <uv.h>

#include <cstdint>
#include <functional>
#include <list>
#include <string>
#include <string_view>
#include <unordered_map>

#include "redis/config.h"
#include "redis/link.h"
#include "redis/scripts.h"
#include "redis/slot_map.h"
#include "redis/util.h"

namespace nearcache::redis {

// refused: a lease fill with nothing to compare with (kFillRefuse), not queued.
enum class Enqueued { queued, coalesced, dropped, refused };

// `expected` of fill(): a counter value (>= 1), or one of these.
inline constexpr int64_t kFillMissing = -1;  // the slot counter did not exist (missing then missing = unchanged)
inline constexpr int64_t kFillPlain = -2;    // not conditional: a plain SET (a lease over a value too large to relay)
inline constexpr int64_t kFillRefuse = -3;   // no counter known (no snapshot yet): refused at once
enum class Pending { none, value, deleted, touched };

struct PendingValue {
  std::string_view value;  // valid until the queue changes
  uint8_t flags = 0;
  uint64_t expiry_ms = 0;  // absolute, 0 = none
};

struct QueueStats {
  uint64_t depth = 0;           // operations queued or in flight
  uint64_t bytes = 0;
  uint64_t in_flight = 0;       // sent, not yet answered
  uint64_t enqueued_total = 0;  // operations accepted (including coalesced ones)
  uint64_t coalesced_total = 0; // operations that replaced a queued one
  uint64_t flushed_total = 0;   // operations Redis acknowledged
  uint64_t dropped_total = 0;   // operations dropped because the queue was full
  uint64_t failed_total = 0;    // operations Redis answered with an error
  uint64_t requeued_total = 0;  // operations sent again after a lost connection
  uint64_t cleared_keys_total = 0;  // keys CLEAR removed from Redis
  uint64_t refused_dropped_total = 0;  // refused SET/TOUCH whose local copy was dropped (on_refused)
  std::string last_refusal;            // "SET of 'key': <Redis's error>", "" = none yet
  uint64_t last_refusal_unix_ms = 0;
  // Redis Cluster: operations answered MOVED / ASK (handed to another master's
  // queue) and TRYAGAIN / CLUSTERDOWN (retried after a backoff).
  uint64_t moved_total = 0, ask_total = 0, retried_total = 0;
  uint64_t fills_total = 0;          // lease fills sent as the conditional script
  uint64_t fills_refused_total = 0;  // ... that Redis (or the missing counter) refused
};

// An operation leaving one queue for another (Redis Cluster: redirections,
// a master that left the cluster, the switch to cluster mode).
// What a queued operation carries, whichever queue holds it.
struct OpData {
  std::string key;    // local key; the prefix for clear
  std::string value;  // set: the Redis value (value.h), already encoded
  uint64_t expiry = 0;
  uint64_t item = 0;    // set: the caller's item id (on_acked)
  bool asking = false;  // cluster: ASK, send ASKING first on the new master
  bool glob = false;    // clear: key is a glob pattern (DELETE_PATTERN)
  bool fill = false;    // set: a lease fill (the fill script), conditional on `expected`
  int64_t expected = 0;
};

struct HandedOp : OpData {
  enum Kind : uint8_t { set, del, touch, clear } kind = set;
};

class WriteBehind {
 public:
  // `prefix` is prepended to every key in Redis. The queue registers
  // listeners on `link` and removes them in its destructor.
  WriteBehind(uv_loop_t* loop, Link* link, Scripts* scripts, const Config& cfg);
  ~WriteBehind();
  WriteBehind(const WriteBehind&) = delete;
  WriteBehind& operator=(const WriteBehind&) = delete;

  // Expiries are absolute CLOCK_MONOTONIC ms; 0 = no expiry.
  // item_id: what the caller's table names the written item by (0: none),
  // handed back to on_acked when Redis acknowledges this SET.
  Enqueued set(std::string_view key, std::string_view value, uint8_t flags, uint64_t expiry_ms,
               uint64_t item_id = 0);
  // A lease fill (see Lease fills): kFillPlain is set(), kFillRefuse is refused.
  Enqueued fill(std::string_view key, std::string_view value, uint8_t flags, uint64_t expiry_ms, uint64_t item_id,
                int64_t expected);
  Enqueued del(std::string_view key);
  Enqueued touch(std::string_view key, uint64_t expiry_ms);
  // Removes every key under prefix + `prefix` from Redis ("" = this cache's whole prefix);
  // glob: `prefix` is a glob pattern (SCAN MATCH prefix + pattern: DELETE_PATTERN).
  Enqueued clear(std::string_view prefix, bool glob = false);

  // Called with the key of a SET or TOUCH that Redis refused (see Refusals).
  void set_on_refused(std::function<void(std::string_view key)> fn) { on_refused_ = std::move(fn); }
  // Called when Redis acknowledged a SET (its MULTI/EXEC with the slot
  // counter) that carried an item_id: the value reached Redis.
  void set_on_acked(std::function<void(std::string_view key, uint64_t item_id)> fn) { on_acked_ = std::move(fn); }
  // Called when a lease fill was refused (its counter moved): it never reached Redis.
  void set_on_fill_refused(std::function<void(std::string_view key, uint64_t item_id)> fn) {
    on_fill_refused_ = std::move(fn);
  }

  // Redis Cluster (see the top): redirected operations, and the queue's side of routing.
  void set_on_redirect(std::function<void(HandedOp&&, const Redirect&)> fn) { on_redirect_ = std::move(fn); }
  bool holds(std::string_view key) const;
  // Queues an operation another queue handed over (at the tail, not bounded: it was accepted already).
  void adopt(HandedOp&& op);
  // Removes every queued operation (not those in flight), oldest first, into
  // `to`; waiting after() calls get false.
  void hand_over(const std::function<void(HandedOp&&)>& to);
  static constexpr int kRetries = 12;

  // What this host queued for `key` (a queued CLEAR covering the key counts as deleted).
  Pending pending(std::string_view key, PendingValue* out = nullptr) const;

  // Runs fn(true) once every write queued for `key` so far has been sent
  // (before returning, when nothing holds them back; later, when a CLEAR
  // ahead of them must finish first). Runs fn(false) — and fn must then not
  // use the link — when the link is not ready, goes down, or the writes are
  // not sent within the command timeout.
  void after(std::string_view key, std::function<void(bool ordered)> fn);

  // SIGTERM: keeps flushing until the queue is empty or `deadline_ms`
  // (CLOCK_MONOTONIC) passes, then calls done(operations left unsent).
  void drain(uint64_t deadline_ms, std::function<void(uint64_t left)> done);

  // Closes its timer; the queue may be destroyed once `closed` ran.
  void close(std::function<void()> closed);

  QueueStats stats() const;
  // The scripts of the data connection (the read-through runs one).
  Scripts* scripts() const { return scripts_; }

 private:
  struct Entry : OpData {
    enum Kind : uint8_t { set, del, touch, clear, call } kind;
    Entry(Kind k, std::string k2) : kind(k) { key = std::move(k2); }
    size_t bytes = 0;
    bool sealed = false;  // a call entry for this key follows: never coalesce into it
    std::function<void(bool)> fn;  // call
    uint64_t deadline = 0;         // call
    std::string cursor = "0";      // clear
    int retries = 0;               // clear; cluster: TRYAGAIN/CLUSTERDOWN retries
    uint64_t not_before = 0;       // cluster: retry time (uv_now)
  };
  using It = std::list<Entry>::iterator;
  struct KeyState {
    It latest;
    bool has_latest = false;  // latest: the newest queued op on the key (not in flight)
    uint32_t entries = 0;     // op entries of the key in fifo_ (not in flight)
    uint32_t calls = 0;       // call entries of the key in fifo_
  };

  // A SET's entry: the value encoded for Redis (value.h).
  Entry set_entry(std::string_view key, std::string_view value, uint8_t flags, uint64_t expiry_ms,
                  uint64_t item_id) const;
  Enqueued put(Entry e);
  void append(Entry&& e);
  void remove_queued(It it);
  void unindex(It it);
  void drop_call(It it);  // removes a call entry from fifo_ and calls_
  void requeue_front(size_t keep);
  void finish_clear(It it);
  bool covered(std::string_view key) const;
  void pump();
  void pump_cluster();
  void send_op(It it);
  void send_fill(It it, const std::string& k, const std::string& counter, const std::string& px);
  void answered(It it, const std::string& err, bool fill_refused = false);
  bool cluster_redirect(It it, const std::string& err);
  void clear_step(It it);
  void on_up();
  void on_down();
  void fail_calls();
  void check_drain();
  void arm_timer();
  static void on_timer(uv_timer_t* t);
  void note_drop(const Entry& e);
  void refused(const Entry& e, const std::string& why);
  std::string rkey(std::string_view key) const { return cfg_.prefix + std::string(key); }
  std::string clear_key_;  // slots.h: clear_counter_key

  uv_loop_t* loop_;
  Link* link_;
  Scripts* scripts_;
  Config cfg_;
  int up_id_, down_id_;
  std::list<Entry> fifo_, inflight_;
  std::unordered_map<std::string, KeyState> keys_;
  std::list<It> clears_, calls_;  // clear and call entries in fifo_, in order
  bool clear_running_ = false;
  bool pumping_ = false, pump_again_ = false;
  uint64_t depth_ = 0, bytes_ = 0;
  QueueStats st_;
  uv_timer_t timer_;
  uint64_t drain_deadline_ = 0;
  std::function<void(uint64_t)> drain_done_;
  std::function<void()> closed_;
  std::function<void(std::string_view)> on_refused_;
  std::function<void(HandedOp&&, const Redirect&)> on_redirect_;
  bool cluster_ = false;                             // a Redis Cluster master's part
  std::unordered_map<std::string, uint32_t> flying_;  // cluster: keys with an operation in flight
  uint64_t next_retry_ = 0;                           // cluster: earliest delayed retry (uv_now), 0 = none
  std::function<void(std::string_view, uint64_t)> on_acked_, on_fill_refused_;
  uint64_t refusals_logged_ = 0;  // st_.failed_total at the last refusal log line
  Throttle drop_log_, fail_log_;
};

}  // namespace nearcache::redis
