// daemon/engine/leases.h — stampede protection: at most one lease per missing key,
// with the other askers queued until a value, a new lease, or their timeout.
//
// Pure bookkeeping: no I/O, no replies. Callers act on the Events it returns
// (grant a lease to a waiter, answer TIMEOUT) and on the waiters it hands back
// when the key gets a value. Deadlines are kept in one ordered set so the
// daemon needs one timer for all of them. Times are CLOCK_MONOTONIC ms.
//
// With Redis, leases are decided there: a lease Redis granted to this host is
// recorded with hold() (token = the one Redis holds), other askers wait on
// Redis, not here. Such a lease ends like any other (a value, RELEASE, the
// holder's connection, lease_ms); an `ended` Event (or take_waiters'
// *redis_token) tells the caller to release it in Redis. Leases decided here
// while Redis is unreachable (acquire) work as without Redis.
//
// Fills: each lease records what its holder's SET is conditional on in
// Redis (redis/write_behind.h, Lease fills), an opaque number: hold()'s
// `fill` for a lease Redis granted, the fill source's answer for the key at
// the moment a lease is granted here (acquire, or handed to a waiter).
#pragma once

#include <cstdint>
#include <deque>
#include <functional>
#include <set>
#include <string>
#include <string_view>
#include <unordered_map>
#include <utility>
#include <vector>

namespace nearcache::daemon {

class Leases {
 public:
  struct Waiter {
    uint64_t conn, req, lease_ms, deadline, seq;
  };
  struct Event {
    // ended: a lease held in Redis ended without a value; release `token` there.
    enum Kind { granted, timeout, ended } kind;
    uint64_t conn, req, token;
    std::string key;
  };

  Leases();

  // LEASE on a key without a value: the caller gets the lease (returns its
  // token) or joins the queue (returns 0; with wait_ms 0 it is not queued and
  // *timed_out is set).
  uint64_t acquire(std::string_view key, uint64_t conn, uint64_t req, uint64_t lease_ms, uint64_t wait_ms,
                   uint64_t now, bool* timed_out);
  // The key got a value: its lease ends and every waiter is handed back;
  // *redis_token gets the lease's token when it was held in Redis (else 0).
  bool take_waiters(std::string_view key, std::vector<Waiter>* out, uint64_t* redis_token = nullptr);
  // Redis granted `conn` the lease on `key` with `token` (from next_token()).
  // False when the key got a lease here meanwhile (decided locally).
  bool hold(std::string_view key, uint64_t conn, uint64_t token, uint64_t lease_ms, uint64_t now, int64_t fill = 0);
  // What a lease granted here records as its fill (0 without a source).
  void set_fill_source(std::function<int64_t(std::string_view key)> fn) { fill_source_ = std::move(fn); }
  // True when `key` has a lease: *holder = its holder's connection, *fill = its fill.
  bool fill_of(std::string_view key, uint64_t* holder, int64_t* fill) const;
  // A fresh token to ask Redis for a lease with.
  uint64_t next_token() { return next_id_++; }
  // The key has a lease decided on this host (not one held in Redis).
  bool local_lease(std::string_view key) const;
  // RELEASE: ends the lease when `token` is current; the longest waiter gets it.
  bool release(std::string_view key, uint64_t token, uint64_t now, std::vector<Event>* ev);
  // A connection closed: its leases end (handed over), its waits are dropped.
  void drop_conn(uint64_t conn, uint64_t now, std::vector<Event>* ev);
  // Every deadline up to `now`: expired leases are handed over, waits time out.
  void expire(uint64_t now, std::vector<Event>* ev);
  // Shutdown: removes every lease and hands back every waiter (and the leases
  // held in Redis, as (key, token), to release there).
  void drain(std::vector<Waiter>* out, std::vector<std::pair<std::string, uint64_t>>* redis_held = nullptr);

  uint64_t next_deadline() const { return deadlines_.empty() ? UINT64_MAX : deadlines_.begin()->first; }
  bool empty() const { return leases_.empty(); }
  size_t active() const { return leases_.size(); }
  size_t waiting() const { return waiting_; }
  uint64_t granted_total() const { return granted_total_; }
  uint64_t timeouts_total() const { return timeouts_total_; }

 private:
  struct Lease {
    uint64_t token = 0, holder = 0, expires = 0;
    bool redis = false;  // the token is held in Redis
    int64_t fill = 0;    // what the holder's SET is conditional on (see Fills)
    std::deque<Waiter> waiters;
  };
  using Map = std::unordered_map<std::string, Lease>;

  void grant(Map::iterator it, uint64_t conn, uint64_t lease_ms, uint64_t now);
  // Makes `conn` the holder of `it` with `token`, expiring lease_ms from now.
  void record(Map::iterator it, uint64_t token, uint64_t conn, uint64_t lease_ms, uint64_t now, int64_t fill);
  // The lease of `it` ended without a value: the longest waiter gets it, or the entry goes.
  void hand_over(Map::iterator it, uint64_t now, std::vector<Event>* ev);
  void remove_waiter_deadline(const Waiter& w);
  void unref(uint64_t conn, const std::string& key);

  Map leases_;
  // (time, id) -> key; id is a lease token or a waiter's seq (one counter, so unique).
  std::set<std::pair<uint64_t, uint64_t>> deadlines_;
  std::unordered_map<uint64_t, std::string> deadline_keys_;
  // conn -> keys it holds or waits on (with counts), so drop_conn touches only those.
  std::unordered_map<uint64_t, std::unordered_map<std::string, uint32_t>> by_conn_;
  uint64_t next_id_;
  std::function<int64_t(std::string_view)> fill_source_;
  size_t waiting_ = 0;
  uint64_t granted_total_ = 0, timeouts_total_ = 0;
};

}  // namespace nearcache::daemon
