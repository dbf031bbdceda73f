// daemon/redis/read_through.h — a local miss asks Redis, once per key.
//
// Single flight: concurrent misses of one key share one read (the `get`
// script: STRLEN, GET, PTTL; see Size below); any number of local waiters
// get the result. The flight is the key's "in progress" mark: invalidate(key) (an
// invalidation from another host, or a local write) and invalidate_all()
// (coherence lost) make it stale, so its result is still handed to the
// waiters that asked before (it was Redis's value when they asked) but is
// never installed in the table; a later miss starts a new flight.
//
// Read-your-writes: a key this host wrote and has not flushed yet is answered
// from the write-behind queue (its newest value, or a miss after a queued
// delete or CLEAR) without asking Redis, and a GET is only sent once the key's
// queued writes are ahead of it on the wire (WriteBehind::after).
//
// Installing: set_install's function gets each installable hit once, before
// the waiters' callbacks (or before get() returns a queue hit); a hit is installable when no invalidation, local
// write or coherence loss happened between the GET being sent and its reply,
// and invalidations were being received when it was sent (coherent()).
// Expiries are Redis's remaining TTL, bounded by local_ttl_max_ms.
//
// Negative entries. A miss Redis answered itself ("no such key", not an
// oversize value nor a queued delete) is installable under exactly the same
// rule, and with negative_ttl_ms set it goes to the same function (kind miss,
// expiry now + negative_ttl_ms, bounded by local_ttl_max_ms): the table keeps
// a negative entry, so that a repeated miss asks nobody. The invalidations
// that drop a value drop it too.
//
// Size. The read is one script (scripts.h `get`: STRLEN, GET, PTTL, atomic)
// that returns no value longer than Config::relay_max_bytes (plus the
// envelope): a larger one, which another tool wrote under the prefix, is
// never sent, so the client library never buffers it. It is answered as a
// miss, never installed, counted (oversize_total) and logged (rate-limited).
// A value over Config::local_max_bytes (value_limit) but within the relay
// bound lives in Redis only (redis_large_values): it is a hit for the
// waiters, never installable (from Redis or from the queue), counted
// (large_total).
//
// Foreign values. A Redis value that is neither an envelope nor one msgpack
// object (value.h: written by another tool) is a hit with flags
// kFlagForeign and its exact bytes, installed like any other (so that the
// next read does not ask Redis again), counted (foreign_total) and logged
// (rate-limited). The client decides what it means.
#pragma once

#include <uv.h>

#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <string_view>
#include <unordered_map>
#include <vector>

#include "redis/config.h"
#include "redis/link.h"
#include "redis/write_behind.h"

namespace nearcache::redis {

struct Fetched {
  enum class Kind { hit, miss, unavailable } kind = Kind::miss;
  std::string value;       // hit: the entry's value (envelope removed)
  uint8_t flags = 0;
  uint64_t expiry_ms = 0;  // hit: absolute CLOCK_MONOTONIC ms, 0 = none
  bool installable = false;
  bool absent = false;     // miss: Redis answered that it has no such key (a negative entry may say so)
  bool queued = false;     // hit: this host's queued value, which Redis may not have yet
  std::string error;       // unavailable: why
};
using FetchFn = std::function<void(const Fetched&)>;

enum class Lookup {
  hit,          // *now holds this host's queued value (already installed): answer it
  miss,         // a queued delete or CLEAR: the key is absent; do not ask Redis
  unavailable,  // Redis is not reachable now: answer a miss without waiting
  pending,      // `done` runs once, later (never before get() returns)
};

struct ReadStats {
  uint64_t hits_total = 0;         // Redis had the key
  uint64_t misses_total = 0;       // Redis did not have it (or a queued delete said so)
  uint64_t queue_hits_total = 0;   // answered from the write-behind queue
  uint64_t errors_total = 0;       // flights that failed (timeout, lost connection, error reply)
  uint64_t unavailable_total = 0;  // misses answered at once because Redis was unreachable
  uint64_t gets_total = 0;         // GETs sent to Redis (flights)
  uint64_t joined_total = 0;       // misses that joined a flight in progress
  uint64_t stale_total = 0;        // hits (and misses) not installed: invalidated or written while in flight
  uint64_t negatives_total = 0;    // misses handed to install as negative entries
  uint64_t oversize_total = 0;     // values over relay_max_bytes, refused in Redis (answered as misses)
  uint64_t large_total = 0;        // hits over local_max_bytes: answered, not installed (Redis only)
  uint64_t foreign_total = 0;      // values nearcache did not write (value.h), answered with kFlagForeign
  uint64_t in_flight = 0;
};

class ReadThrough {
 public:
  ReadThrough(Link* link, WriteBehind* queue, const Config& cfg);

  void set_install(std::function<void(std::string_view key, const Fetched&)> fn) { install_ = std::move(fn); }
  // Whether invalidations are being received now (Invalidation::coherent).
  void set_coherent(std::function<bool()> fn) { coherent_ = std::move(fn); }

  Lookup get(std::string_view key, Fetched* now, FetchFn done);

  void invalidate(std::string_view key);
  void invalidate_all();

  ReadStats stats() const;

 private:
  struct Flight {
    std::string key;
    std::vector<FetchFn> waiters;
    bool stale = false, coherent = false, done = false;
    bool have_value = false;
    std::string stored;
  };
  void send(const std::shared_ptr<Flight>& f);
  void finish(const std::shared_ptr<Flight>& f, Fetched r);

  Link* link_;
  WriteBehind* queue_;
  Config cfg_;
  std::function<void(std::string_view, const Fetched&)> install_;
  std::function<bool()> coherent_;
  std::unordered_map<std::string, std::shared_ptr<Flight>> flights_;
  ReadStats st_;
  Throttle oversize_log_{10000};
  Throttle foreign_log_{10000};
};

}  // namespace nearcache::redis
