// daemon/redis/atomics.h — ADD, INCR/DECR and leases decided in Redis, so
// that every host sharing it agrees (two hosts never both win an ADD or a
// lease, and increments are never lost).
//
//   ADD     SET prefix+key value NX PX ttl (EXISTS when the TTL is already
//           over: Django's add with timeout 0 stores nothing).
//   INCR    the `incr` script (scripts.h): the table's semantics exactly —
//           a missing key is NOT_FOUND and is not created, a value that is not
//           one msgpack integer is NOT_INTEGER, a result outside int64 is
//           OUT_OF_RANGE and changes nothing; the TTL and flags are kept.
//   LEASE   the `lease` script: the value if Redis has it; else a lease key
//           (kLeaseMark + prefix + key) holding this host's token with PX
//           lease_ms, taken with SET NX (answering the key's slot counter, which
//           the holder's fill is conditional on); else "held" with the time it has left.
//           wait_lease() polls with backoff (bounded by that time) and wakes
//           early on wake(key), which the tier calls for invalidations of the
//           key (another host stored its value).
//   RELEASE the `release` script: deletes the lease key if it holds our token.
//   REPLACE SET prefix+key value XX PX ttl (NOT_FOUND when Redis has no such
//           key; an expired TTL is DEL: Django's set with timeout 0).
//   PTTL    the key's remaining TTL in Redis (number: ms, -1 none, -2 missing),
//           not bounded by local_ttl_max_ms: what TTL answers.
//
// Every operation first lets the key's queued writes go ahead of it
// (WriteBehind::after). Each call returns false — and does not call back —
// when Redis is not reachable now (the caller applies redis_down); else its
// callback runs once, later, with the outcome or `unavailable` (timeout, lost
// connection, error reply).
#pragma once

#include <uv.h>

#include <cstdint>
#include <functional>
#include <string>
#include <string_view>
#include <unordered_map>

#include "redis/config.h"
#include "redis/link.h"
#include "redis/scripts.h"
#include "redis/write_behind.h"

namespace nearcache::redis {

// Lease keys live outside the value prefix (a value key never starts with a
// NUL byte: validate() refuses prefixes containing one), so they are never
// read as values and are not removed by CLEAR.
inline constexpr std::string_view kLeaseMark{"\0nclease\0", 9};
// Locks (ops LOCK, UNLOCK, LOCK_EXTEND, LOCK_QUERY) likewise: kLockMark + prefix + name.
inline constexpr std::string_view kLockMark{"\0nclock\0", 8};

// LOCK: SET NX PX; UNLOCK, LOCK_EXTEND: scripts that compare the token first;
// LOCK_QUERY: GET + PTTL.
enum class LockOp { acquire, release, extend, extend_replace, query };

struct AtomicResult {
  enum class Kind {
    ok,            // ADD stored; INCR done (number, value); RELEASE done
    exists,        // ADD: the key is present
    not_found,     // INCR: no such key; RELEASE: not our lease
    not_integer,   // INCR
    out_of_range,  // INCR
    value,         // LEASE: the key has a value (value, flags, expiry_ms)
    granted,       // LEASE: this host holds the lease
    held,          // LEASE: another host holds it (retry_ms: its time left)
    timeout,       // wait_lease: the wait ended without value or lease
    unavailable,   // Redis failed to answer (error says why)
  } kind = Kind::unavailable;
  int64_t number = 0;
  std::string value;       // INCR: the new value's bytes; LEASE: the value
  uint8_t flags = 0;
  uint64_t expiry_ms = 0;  // absolute CLOCK_MONOTONIC, bounded by local_ttl_max_ms; 0 = none
  uint64_t retry_ms = 0;
  // LEASE granted: what the holder's SET is conditional on (write_behind.h,
  // Lease fills): the key's slot counter at the grant, or kFillMissing/kFillPlain.
  int64_t fill_base = kFillPlain;
  std::string error;
};
using AtomicFn = std::function<void(const AtomicResult&)>;

struct AtomicStats {
  uint64_t adds_total = 0, replaces_total = 0, ttls_total = 0, incrs_total = 0, leases_total = 0, releases_total = 0;
  uint64_t lease_polls_total = 0, lease_waits = 0;
  uint64_t errors_total = 0;  // unavailable outcomes
};

class Atomics {
 public:
  Atomics(uv_loop_t* loop, Link* link, Scripts* scripts, WriteBehind* queue, const Config& cfg);
  ~Atomics();

  bool add(std::string_view key, std::string_view value, uint8_t flags, uint64_t expiry_ms, AtomicFn cb);
  // delta in [-2^63, 2^63] (DECR by INT64_MIN is +2^63).
  bool incr(std::string_view key, __int128 delta, AtomicFn cb);
  bool lease(std::string_view key, uint64_t token, uint64_t lease_ms, AtomicFn cb);
  bool release(std::string_view key, uint64_t token, AtomicFn cb);
  // ok or not_found (the key is absent in Redis).
  bool replace(std::string_view key, std::string_view value, uint8_t flags, uint64_t expiry_ms, AtomicFn cb);
  // ok with number = PTTL's answer.
  bool pttl(std::string_view key, AtomicFn cb);
  // acquire: ok / exists; release, extend: ok / not_found (not the holder's
  // token); query: ok (value = token, number = PTTL) / not_found. `ms` is
  // bounded by `max_ms` (extend: the TTL it leaves too).
  bool lock(LockOp op, std::string_view name, std::string_view token, uint64_t ms, uint64_t max_ms, AtomicFn cb);

  // Polls lease() until the value appears (value), the lease is ours
  // (granted) or `deadline_ms` (CLOCK_MONOTONIC) passes (timeout). Never
  // calls back before returning; returns the wait's id for cancel().
  uint64_t wait_lease(std::string_view key, uint64_t token, uint64_t lease_ms, uint64_t deadline_ms, AtomicFn cb);
  void cancel_wait(uint64_t id);  // cb is not called
  // An invalidation of `key`: its waiters poll now.
  void wake(std::string_view key);

  // "<host id>:<token>": what the lease key holds for a local token.
  std::string token_string(uint64_t token) const;
  std::string lease_key(std::string_view key) const;
  void close();  // cancels every wait (their callbacks are not called)

  AtomicStats stats() const;

 private:
  struct Wait;
  void poll(Wait* w);
  void finish_wait(Wait* w, const AtomicResult* r);
  uint64_t expiry_of(long long pttl) const;
  AtomicResult failed(const char* op, const Reply& r);
  bool run(std::string_view key, std::function<void()> send, std::shared_ptr<AtomicFn> done,
           uint64_t* started = nullptr);
  // SET NX / SET XX with the slot counter's bump (ADD, REPLACE).
  bool store_if(const char* cond, std::string_view key, std::string_view value, uint8_t flags, uint64_t expiry_ms,
                AtomicFn cb);

  uv_loop_t* loop_;
  Link* link_;
  Scripts* scripts_;
  WriteBehind* queue_;
  Config cfg_;
  std::string host_id_;
  std::unordered_map<uint64_t, Wait*> waits_;
  uint64_t next_wait_ = 1;
  AtomicStats st_;
};

}  // namespace nearcache::redis
