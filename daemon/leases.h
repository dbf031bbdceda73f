// daemon/leases.h — stampede protection: at most one lease per missing key,
// with the other askers queued until a value, a new lease, or their timeout.
//
// Pure bookkeeping: no I/O, no replies. Callers act on the Events it returns
// (grant a lease to a waiter, answer TIMEOUT) and on the waiters it hands back
// when the key gets a value. Deadlines are kept in one ordered set so the
// daemon needs one timer for all of them. Times are CLOCK_MONOTONIC ms.
#pragma once

#include <cstdint>
#include <deque>
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
    enum Kind { granted, timeout } kind;
    uint64_t conn, req, token;
    std::string key;
  };

  Leases();

  // LEASE on a key without a value: the caller gets the lease (returns its
  // token) or joins the queue (returns 0; with wait_ms 0 it is not queued and
  // *timed_out is set).
  uint64_t acquire(std::string_view key, uint64_t conn, uint64_t req, uint64_t lease_ms, uint64_t wait_ms,
                   uint64_t now, bool* timed_out);
  // The key got a value: its lease ends and every waiter is handed back.
  bool take_waiters(std::string_view key, std::vector<Waiter>* out);
  // RELEASE: ends the lease when `token` is current; the longest waiter gets it.
  bool release(std::string_view key, uint64_t token, uint64_t now, std::vector<Event>* ev);
  // A connection closed: its leases end (handed over), its waits are dropped.
  void drop_conn(uint64_t conn, uint64_t now, std::vector<Event>* ev);
  // Every deadline up to `now`: expired leases are handed over, waits time out.
  void expire(uint64_t now, std::vector<Event>* ev);
  // Shutdown: removes every lease and hands back every waiter.
  void drain(std::vector<Waiter>* out);

  uint64_t next_deadline() const { return deadlines_.empty() ? UINT64_MAX : deadlines_.begin()->first; }
  bool empty() const { return leases_.empty(); }
  size_t active() const { return leases_.size(); }
  size_t waiting() const { return waiting_; }
  uint64_t granted_total() const { return granted_total_; }
  uint64_t timeouts_total() const { return timeouts_total_; }

 private:
  struct Lease {
    uint64_t token = 0, holder = 0, expires = 0;
    std::deque<Waiter> waiters;
  };
  using Map = std::unordered_map<std::string, Lease>;

  void grant(Map::iterator it, uint64_t conn, uint64_t lease_ms, uint64_t now);
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
  size_t waiting_ = 0;
  uint64_t granted_total_ = 0, timeouts_total_ = 0;
};

}  // namespace nearcache::daemon
